//! logrotate's file names: `mail.log`, then `mail.log.1`, `mail.log.2.gz`, … (numbered, the
//! higher the older) or `mail.log-20241130[.gz]` (`dateext`, the later the newer).
//!
//! `tlsledger parse /var/log/mail.log*` gets them from the shell newest first (`mail.log`
//! sorts before `mail.log.1`), but a stream must be read oldest first for a session that spans
//! two files to be joined. [`oldest_first`] reorders the rotations of each log among the places
//! they hold in the argument list, when the log itself is given too; other files keep their
//! places.

use std::path::{Path, PathBuf};

/// Where a file stands among the rotations of its log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Age {
    /// `name.N` (sorted first, the highest N first: the oldest).
    Numbered(std::cmp::Reverse<u64>),
    /// `name-DATE` (`dateext`, digits only: sorted as text, the oldest first).
    Dated(String),
    /// `name` itself: the current log, the newest.
    Current,
}

/// The log a file is a rotation of (its directory and base name) and its age, from its name.
fn rotation(path: &Path) -> Option<((PathBuf, String), Age)> {
    let name = path.file_name()?.to_str()?;
    // `mail.log.1` and `./mail.log` are in the same folder.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = [".gz", ".xz", ".zst", ".bz2"].iter().find_map(|ext| name.strip_suffix(ext)).unwrap_or(name);
    let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if let Some((base, number)) = name.rsplit_once('.') {
        if !base.is_empty() && all_digits(number) && number.len() <= 6 {
            return Some(((dir, base.to_owned()), Age::Numbered(std::cmp::Reverse(number.parse().ok()?))));
        }
    }
    if let Some((base, date)) = name.rsplit_once('-') {
        if !base.is_empty() && all_digits(date) && (8..=14).contains(&date.len()) {
            return Some(((dir, base.to_owned()), Age::Dated(date.to_owned())));
        }
    }
    Some(((dir, name.to_owned()), Age::Current))
}

/// `files` with the rotations of each log put oldest first, in the places they held, when the
/// log itself (`mail.log`) is among them: that is what marks them as logrotate's names rather
/// than, say, chunks a user numbered in time order (`part.1 part.2`, left as given). Everything
/// else (other files, `-`) stays where it was. The order is stable: two names of the same age
/// keep their order.
pub fn oldest_first(files: &[PathBuf]) -> Vec<PathBuf> {
    let keys: Vec<_> = files.iter().map(|path| if path.as_os_str() == "-" { None } else { rotation(path) }).collect();
    let mut ordered = files.to_vec();
    let mut done = vec![false; files.len()];
    for first in 0..files.len() {
        let Some((log, _)) = &keys[first] else { continue };
        if done[first] {
            continue;
        }
        let places: Vec<usize> =
            (first..files.len()).filter(|&at| matches!(&keys[at], Some((other, _)) if other == log)).collect();
        for &at in &places {
            done[at] = true;
        }
        let has_current = places.iter().any(|&at| matches!(&keys[at], Some((_, Age::Current))));
        if places.len() < 2 || !has_current {
            continue;
        }
        let mut members: Vec<usize> = places.clone();
        members.sort_by_key(|&at| keys[at].as_ref().map(|(_, age)| age.clone()));
        for (&place, &member) in places.iter().zip(&members) {
            ordered[place] = files[member].clone();
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(names: &[&str]) -> Vec<String> {
        let files: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        oldest_first(&files).iter().map(|path| path.display().to_string()).collect()
    }

    #[test]
    fn numbered_rotations_come_oldest_first() {
        // What the shell makes of /var/log/mail.log*.
        let shell = ["/var/log/mail.log", "/var/log/mail.log.1", "/var/log/mail.log.10.gz", "/var/log/mail.log.2.gz"];
        assert_eq!(
            order(&shell),
            ["/var/log/mail.log.10.gz", "/var/log/mail.log.2.gz", "/var/log/mail.log.1", "/var/log/mail.log"]
        );
        // Already oldest first: unchanged.
        assert_eq!(order(&["mail.log.1", "mail.log"]), ["mail.log.1", "mail.log"]);
        // The current folder named and not.
        assert_eq!(order(&["./mail.log", "mail.log.1"]), ["mail.log.1", "./mail.log"]);
    }

    #[test]
    fn dated_rotations_come_oldest_first() {
        assert_eq!(
            order(&["maillog", "maillog-20241124.gz", "maillog-20241201", "maillog-20241117.xz"]),
            ["maillog-20241117.xz", "maillog-20241124.gz", "maillog-20241201", "maillog"]
        );
    }

    #[test]
    fn other_files_keep_their_places() {
        // Two logs interleaved, stdin, a lone rotated file, and the same base in another folder.
        assert_eq!(
            order(&["a/mail.log", "-", "b/mail.log", "a/mail.log.1", "other.log.3", "b/mail.log.1", "x"]),
            ["a/mail.log.1", "-", "b/mail.log.1", "a/mail.log", "other.log.3", "b/mail.log", "x"]
        );
        // Not rotation names: a version-like suffix with another base, a short date, no base.
        assert_eq!(
            order(&["mail.log", "mail.log-2024", ".1", "mail.log.x1"]),
            ["mail.log", "mail.log-2024", ".1", "mail.log.x1"]
        );
        // The same age twice (a copy being compressed): the given order.
        assert_eq!(order(&["m.log.1.gz", "m.log", "m.log.1"]), ["m.log.1.gz", "m.log.1", "m.log"]);
        // Without the log itself, numbered names are not taken for rotations.
        assert_eq!(
            order(&["part.1", "part.2", "maillog-2", "maillog-1"]),
            ["part.1", "part.2", "maillog-2", "maillog-1"]
        );
        assert_eq!(order(&["mail.log.1", "mail.log.2.gz"]), ["mail.log.1", "mail.log.2.gz"]);
        assert!(order(&[]).is_empty());
    }
}
