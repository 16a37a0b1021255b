//! File follow: tails files (paths or globs) across rotation, on a thread of its own.
//!
//! Each file *generation* (one file's bytes from its first line on) is identified by a content
//! fingerprint, a hash of its first line (at most [`FINGERPRINT_BYTES`]), not by its inode alone:
//! inodes are reused, and a checkpoint must not resume a new file at an old file's offset. A
//! generation is read only once its first line is complete, so its fingerprint never changes.
//!
//! Rotation is detected by polling (every `poll` interval, like Filebeat and Vector):
//! - **rename + create**: the path now names another inode. The old generation is kept open and
//!   read to its end until it has been quiet for [`DRAIN_POLLS`] polls (the MTA may still write a
//!   few lines before it reopens its log), then closed; the new file is read from offset 0.
//! - **copytruncate**: the same inode got shorter than the read position (or starts with other
//!   content). When the patterns also match the copy (`mail.log*`), the generation goes on in the
//!   copy from its read position, so nothing is lost; otherwise what was written between the last
//!   read and the truncation is in the copy and cannot be read here (every tailer has this window,
//!   see research/PIPELINE.md). The new generation is read from 0.
//!
//! A generation is read once per run whatever names it takes: a path whose fingerprint belongs to
//! a generation being read, or whose file (fingerprint and inode) was drained in this run (the
//! last [`MAX_FINISHED`]), is a rotated name or a copy of it and is not opened again. A current generation whose path
//! vanished is drained like a renamed one.
//!
//! On start, a path whose current fingerprint matches a checkpoint resumes at the checkpoint's
//! offset (from 0 if the file is now shorter); any other file is read from its beginning.
//! Checkpoints therefore list finished generations too (the ingest core keeps the latest), so
//! that rotated files matched by the patterns are not read again after a restart.
//!
//! **Invariants:** lines are sent whole, in order, with their stream offsets; a line longer than
//! `max_line_bytes` is never buffered (it is reported as oversized and skipped to its newline);
//! the channel is bounded, so a slow consumer pauses reading (back-pressure, nothing dropped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes of the first line that make a fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;

/// Polls without new data after which a rotated-away generation is closed.
pub const DRAIN_POLLS: u32 = 3;

/// Finished generations remembered by fingerprint (rotated names are not read again).
pub const MAX_FINISHED: usize = 4096;

/// Bytes read per call.
const READ_BYTES: usize = 256 * 1024;

/// A generation of a followed file, unique within one run.
pub type FileKey = u64;

/// What the follower reports, in order per generation.
#[derive(Debug)]
pub enum FileEvent {
    /// A generation starts being read at `offset` (0, or a checkpoint's offset).
    Opened {
        /// The generation.
        key: FileKey,
        /// The path it had when it was opened.
        path: PathBuf,
        /// Its content fingerprint.
        fingerprint: u64,
        /// Where reading starts.
        offset: u64,
    },
    /// Whole lines (each ending in `\n`) starting at stream offset `offset`.
    Lines {
        /// The generation.
        key: FileKey,
        /// Offset of `bytes[0]` in the file.
        offset: u64,
        /// The lines, newlines included.
        bytes: Vec<u8>,
    },
    /// A line longer than the limit, skipped.
    Oversized {
        /// The generation.
        key: FileKey,
        /// Offset of the line.
        offset: u64,
        /// Its length (without the newline).
        len: u64,
        /// Offset just after its newline.
        next: u64,
    },
    /// The generation is finished (rotated away and drained, or truncated); no more events for it.
    Closed {
        /// The generation.
        key: FileKey,
    },
    /// A file could not be read (permissions, vanished); it is retried at the next poll.
    Error {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Where a checkpoint says a generation was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The generation's fingerprint.
    pub fingerprint: u64,
    /// The offset to resume at.
    pub offset: u64,
}

/// Settings of the follower.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Paths or glob patterns.
    pub patterns: Vec<String>,
    /// How often files are checked for new data and rotation.
    pub poll: Duration,
    /// Lines longer than this are skipped.
    pub max_line_bytes: usize,
}

/// One open generation.
struct Generation {
    key: FileKey,
    fingerprint: u64,
    file: File,
    inode: (u64, u64),
    /// Read position: the offset after the last byte read.
    read: u64,
    /// Bytes read that do not end in a newline yet, starting at `read - partial.len()`.
    partial: Vec<u8>,
    /// While skipping an oversized line: its offset and the bytes seen so far.
    skipping: Option<(u64, u64)>,
    /// Consecutive polls without new data (for draining rotated generations).
    quiet: u32,
}

/// The follower's state across polls.
pub struct Follower {
    config: FollowConfig,
    /// Current generation per path.
    current: HashMap<PathBuf, Generation>,
    /// Rotated-away generations still being read to their end.
    draining: Vec<Generation>,
    /// Checkpoint positions by fingerprint, used once at the first open of a matching file.
    resume: HashMap<u64, u64>,
    /// Generations drained to their end in this run (fingerprint and the inode last read),
    /// oldest first (at most [`MAX_FINISHED`]).
    finished: VecDeque<(u64, (u64, u64))>,
    /// The same, for lookups.
    finished_set: HashSet<(u64, (u64, u64))>,
    next_key: FileKey,
}

impl Follower {
    /// A follower that resumes generations found in `resume`.
    pub fn new(config: FollowConfig, resume: &[Resume]) -> Self {
        Follower {
            config,
            current: HashMap::new(),
            draining: Vec::new(),
            resume: resume.iter().map(|r| (r.fingerprint, r.offset)).collect(),
            finished: VecDeque::new(),
            finished_set: HashSet::new(),
            next_key: 1,
        }
    }

    /// Polls until `send` fails (the receiver hung up) or `stop` is set. `send` blocks when the
    /// consumer is slow.
    /// A new set of patterns (SIGHUP) can be handed over through `patterns`; it takes effect at
    /// the next poll.
    pub fn run(
        mut self,
        send: &mut dyn FnMut(FileEvent) -> Result<(), ()>,
        stop: &std::sync::atomic::AtomicBool,
        patterns: &std::sync::Mutex<Option<Vec<String>>>,
    ) {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(new) = patterns.lock().ok().and_then(|mut slot| slot.take()) {
                self.config.patterns = new;
            }
            if self.poll(send).is_err() {
                return;
            }
            std::thread::sleep(self.config.poll);
        }
    }

    /// One round: find files, detect rotation, read new data. `Err` when the receiver is gone
    /// (it has nothing to say: the consumer hung up).
    #[allow(clippy::result_unit_err)]
    pub fn poll(&mut self, send: &mut dyn FnMut(FileEvent) -> Result<(), ()>) -> Result<(), ()> {
        let paths = self.paths();
        // A current path that is gone (deleted, or renamed with nothing in its place yet).
        let gone: Vec<PathBuf> = self.current.keys().filter(|p| !paths.contains(p) || !p.exists()).cloned().collect();
        for path in gone {
            let generation = self.current.remove(&path).expect("present");
            self.draining.push(generation);
        }
        for path in &paths {
            let metadata = match std::fs::metadata(path) {
                Ok(metadata) => metadata,
                Err(_) => continue,
            };
            let inode = (metadata.dev(), metadata.ino());
            let rotated = match self.current.get(path) {
                Some(generation) if generation.inode != inode => true,
                Some(generation) if metadata.len() < generation.read || changed_head(path, generation.fingerprint) => {
                    // copytruncate: the same file got shorter, or starts with other content.
                    let mut generation = self.current.remove(path).expect("present");
                    match find_copy(&paths, path, &generation) {
                        Some((file, inode)) => {
                            // The rest of the generation is in its copy: drain it from there.
                            generation.file = file;
                            generation.inode = inode;
                            generation.quiet = 0;
                            self.draining.push(generation);
                        }
                        // No copy to go on in: the same inode now holds the next generation.
                        None => send(FileEvent::Closed { key: generation.key })?,
                    }
                    false
                }
                _ => false,
            };
            if rotated {
                let mut generation = self.current.remove(path).expect("present");
                if truncated(&mut generation) {
                    // Renamed after a copytruncate that was not seen (two rotations between
                    // polls): the open file holds a newer generation now, the rest is in a copy.
                    match find_copy(&paths, path, &generation) {
                        Some((file, inode)) => {
                            generation.file = file;
                            generation.inode = inode;
                            generation.quiet = 0;
                            self.draining.push(generation);
                        }
                        // No copy to go on in: the same inode now holds the next generation.
                        None => send(FileEvent::Closed { key: generation.key })?,
                    }
                } else {
                    self.draining.push(generation);
                }
            }
            if !self.current.contains_key(path) {
                match self.open(path, inode) {
                    Ok(Some((generation, fingerprint))) => {
                        send(FileEvent::Opened {
                            key: generation.key,
                            path: path.clone(),
                            fingerprint,
                            offset: generation.read,
                        })?;
                        self.current.insert(path.clone(), generation);
                    }
                    Ok(None) => continue,
                    Err(error) => {
                        send(FileEvent::Error { path: path.clone(), message: error.to_string() })?;
                        continue;
                    }
                }
            }
            let generation = self.current.get_mut(path).expect("inserted");
            if let Err(error) = read_new(generation, self.config.max_line_bytes, send) {
                match error {
                    ReadError::HungUp => return Err(()),
                    ReadError::Io(error) => send(FileEvent::Error { path: path.clone(), message: error.to_string() })?,
                }
            }
        }
        let mut still_draining = Vec::new();
        for mut generation in std::mem::take(&mut self.draining) {
            let before = generation.read;
            match read_new(&mut generation, self.config.max_line_bytes, send) {
                Err(ReadError::HungUp) => return Err(()),
                Err(ReadError::Io(_)) => generation.quiet = DRAIN_POLLS,
                Ok(()) if generation.read == before => generation.quiet += 1,
                Ok(()) => generation.quiet = 0,
            }
            if generation.quiet >= DRAIN_POLLS {
                send(FileEvent::Closed { key: generation.key })?;
                self.remember_finished(generation.fingerprint, generation.inode);
            } else {
                still_draining.push(generation);
            }
        }
        self.draining = still_draining;
        Ok(())
    }

    fn remember_finished(&mut self, fingerprint: u64, inode: (u64, u64)) {
        if self.finished_set.insert((fingerprint, inode)) {
            self.finished.push_back((fingerprint, inode));
            if self.finished.len() > MAX_FINISHED {
                let oldest = self.finished.pop_front().expect("not empty");
                self.finished_set.remove(&oldest);
            }
        }
    }

    /// True when `fingerprint` is a generation being read (under another name, or draining; a
    /// copy has another inode) or the file `inode` is one drained in this run (a rotated name).
    fn known(&self, fingerprint: u64, inode: (u64, u64)) -> bool {
        self.finished_set.contains(&(fingerprint, inode))
            || self.current.values().any(|g| g.fingerprint == fingerprint)
            || self.draining.iter().any(|g| g.fingerprint == fingerprint)
    }

    /// The files the patterns name now, in a stable order.
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for pattern in &self.config.patterns {
            match glob::glob(pattern) {
                Ok(found) if pattern.contains(['*', '?', '[']) => {
                    paths.extend(found.filter_map(Result::ok).filter(|p| p.is_file()));
                }
                _ => paths.push(PathBuf::from(pattern)),
            }
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Opens a new generation once its first line is complete; `None` until then, and for a
    /// rotated name or a copy of a generation known in this run.
    fn open(&mut self, path: &Path, inode: (u64, u64)) -> std::io::Result<Option<(Generation, u64)>> {
        let mut file = File::open(path)?;
        if is_compressed(&mut file)? {
            // A compressed rotated log (`mail.log.2.gz`): its lines were read while it was plain.
            return Ok(None);
        }
        let Some(fingerprint) = fingerprint(&mut file)? else { return Ok(None) };
        if self.known(fingerprint, inode) {
            return Ok(None);
        }
        let len = file.metadata()?.len();
        let offset = match self.resume.remove(&fingerprint) {
            Some(offset) if offset <= len => offset,
            _ => 0,
        };
        file.seek(SeekFrom::Start(offset))?;
        let key = self.next_key;
        self.next_key += 1;
        let generation =
            Generation { key, fingerprint, file, inode, read: offset, partial: Vec::new(), skipping: None, quiet: 0 };
        Ok(Some((generation, fingerprint)))
    }
}

/// After `generation` was truncated at `path`: another of `paths` that starts with the same
/// first line and holds at least what was read (the copy that copytruncate made), opened at the
/// read position.
fn find_copy(paths: &[PathBuf], path: &Path, generation: &Generation) -> Option<(File, (u64, u64))> {
    for other in paths.iter().filter(|p| p.as_path() != path) {
        let Ok(mut file) = File::open(other) else { continue };
        let Ok(metadata) = file.metadata() else { continue };
        let inode = (metadata.dev(), metadata.ino());
        if inode == generation.inode || metadata.len() < generation.read {
            continue;
        }
        if fingerprint(&mut file).ok().flatten() == Some(generation.fingerprint)
            && file.seek(SeekFrom::Start(generation.read)).is_ok()
        {
            return Some((file, inode));
        }
    }
    None
}

/// True when the generation's open file got shorter than the read position or no longer starts
/// with its first line. The read position is kept.
fn truncated(generation: &mut Generation) -> bool {
    let len = generation.file.metadata().map_or(0, |m| m.len());
    let head = fingerprint(&mut generation.file);
    let restored = generation.file.seek(SeekFrom::Start(generation.read));
    len < generation.read || restored.is_err() || !matches!(head, Ok(Some(print)) if print == generation.fingerprint)
}

/// True when the file at `path` no longer starts with the generation's first line (truncated
/// and rewritten past the old read position between two polls).
fn changed_head(path: &Path, fingerprint: u64) -> bool {
    match File::open(path).and_then(|mut file| self::fingerprint(&mut file)) {
        Ok(Some(now)) => now != fingerprint,
        // Shorter than a first line: truncated.
        Ok(None) => true,
        Err(_) => false,
    }
}

/// True when `file` starts with a compression format's magic number (see
/// [`super::compressed`]): logrotate's compressed generations are never followed.
fn is_compressed(file: &mut File) -> std::io::Result<bool> {
    let mut head = [0u8; super::compressed::MAGIC_BYTES];
    let filled = read_head(file, &mut head)?;
    Ok(super::compressed::detect(&head[..filled]).is_some())
}

/// Fills `head` from the start of `file` (less only at its end); returns how much was read.
fn read_head(file: &mut File, head: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(0))?;
    super::compressed::fill(file, head)
}

/// The fingerprint of a file: FNV-1a of its first line (at most [`FINGERPRINT_BYTES`]), or
/// `None` while the file has neither a complete first line nor that many bytes.
pub fn fingerprint(file: &mut File) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; FINGERPRINT_BYTES];
    let filled = read_head(file, &mut head)?;
    let end = match memchr::memchr(b'\n', &head[..filled]) {
        Some(newline) => newline + 1,
        None if filled == FINGERPRINT_BYTES => filled,
        None => return Ok(None),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in &head[..end] {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(Some(hash))
}

enum ReadError {
    Io(std::io::Error),
    HungUp,
}

/// Reads what was appended since the last call and sends its whole lines.
fn read_new(
    generation: &mut Generation,
    max_line_bytes: usize,
    send: &mut dyn FnMut(FileEvent) -> Result<(), ()>,
) -> Result<(), ReadError> {
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match generation.file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadError::Io(error)),
        };
        generation.quiet = 0;
        let start_of_read = generation.read;
        generation.read += n as u64;
        let mut data = &buf[..n];
        let mut data_offset = start_of_read;
        if let Some((offset, len)) = generation.skipping {
            match memchr::memchr(b'\n', data) {
                Some(idx) => {
                    let next = data_offset + idx as u64 + 1;
                    send(FileEvent::Oversized { key: generation.key, offset, len: len + idx as u64, next })
                        .map_err(|_| ReadError::HungUp)?;
                    generation.skipping = None;
                    data = &data[idx + 1..];
                    data_offset = next;
                }
                None => {
                    generation.skipping = Some((offset, len + n as u64));
                    continue;
                }
            }
        }
        let Some(last_newline) = memchr::memrchr(b'\n', data) else {
            generation.partial.extend_from_slice(data);
            check_partial(generation, max_line_bytes);
            continue;
        };
        let (complete, rest) = data.split_at(last_newline + 1);
        let lines_offset = data_offset - generation.partial.len() as u64;
        let mut bytes = std::mem::take(&mut generation.partial);
        bytes.extend_from_slice(complete);
        generation.partial.extend_from_slice(rest);
        check_partial(generation, max_line_bytes);
        send(FileEvent::Lines { key: generation.key, offset: lines_offset, bytes }).map_err(|_| ReadError::HungUp)?;
    }
}

/// A partial line past the limit is dropped and the rest of it skipped up to its newline.
fn check_partial(generation: &mut Generation, max_line_bytes: usize) {
    if generation.partial.len() > max_line_bytes {
        let offset = generation.read - generation.partial.len() as u64;
        generation.skipping = Some((offset, generation.partial.len() as u64));
        generation.partial = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Collects events of one poll.
    fn poll(follower: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        follower
            .poll(&mut |event| {
                got.push(describe(event));
                Ok(())
            })
            .unwrap();
        got
    }

    fn describe(event: FileEvent) -> String {
        {
            match event {
                FileEvent::Opened { key, offset, .. } => format!("open {key} @{offset}"),
                FileEvent::Lines { key, offset, bytes } => {
                    format!("lines {key} @{offset} {}", String::from_utf8_lossy(&bytes).replace('\n', "|"))
                }
                FileEvent::Oversized { key, offset, len, next } => format!("oversized {key} @{offset} {len} ->{next}"),
                FileEvent::Closed { key } => format!("closed {key}"),
                FileEvent::Error { message, .. } => format!("error {message}"),
            }
        }
    }

    fn follower(dir: &Path, resume: &[Resume]) -> Follower {
        let config = FollowConfig {
            patterns: vec![dir.join("*.log").display().to_string()],
            poll: Duration::from_millis(1),
            max_line_bytes: 20,
        };
        Follower::new(config, resume)
    }

    /// Following `mail.log*` in `dir`: the log and its rotated names.
    fn rotated_names(dir: &Path) -> FollowConfig {
        FollowConfig {
            patterns: vec![dir.join("mail.log*").display().to_string()],
            poll: Duration::from_millis(1),
            max_line_bytes: 100,
        }
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_partial_lines_oversized_rotation_and_truncation() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        let mut f = follower(&dir, &[]);
        append(&log, "first");
        let got = poll(&mut f);
        assert!(got.is_empty(), "no complete first line: not opened yet");
        append(&log, " line\nsec");
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 first line|"]);
        append(&log, "ond\n");
        append(&log, &"x".repeat(30));
        assert_eq!(poll(&mut f), ["lines 1 @11 second|"]);
        append(&log, "xx\nafter\n");
        assert_eq!(poll(&mut f), ["oversized 1 @18 32 ->51", "lines 1 @51 after|"]);
        // Rename + create: the old generation is drained, then closed.
        std::fs::rename(&log, dir.join("mail.log.1")).unwrap();
        append(&dir.join("mail.log.1"), "late\n");
        append(&log, "new file\n");
        assert_eq!(poll(&mut f), ["open 2 @0", "lines 2 @0 new file|", "lines 1 @57 late|"]);
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 1"]);
        // copytruncate.
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "tr\n");
        assert_eq!(poll(&mut f), ["closed 2", "open 3 @0", "lines 3 @0 tr|"]);
        // Truncated and rewritten past the read position between two polls: the head changed.
        std::fs::write(&log, "other head\nand more text here\n").unwrap();
        assert_eq!(poll(&mut f), ["closed 3", "open 4 @0", "lines 4 @0 other head|and more text here|"]);
    }

    #[test]
    fn deleted_files_and_dropped_patterns_are_drained_then_closed() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        append(&log, "one\n");
        let mut f = follower(&dir, &[]);
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 one|"]);
        std::fs::remove_file(&log).unwrap();
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 1"]);
        let other = dir.join("other.txt");
        append(&other, "two\n");
        f.config.patterns = vec![other.display().to_string()];
        assert_eq!(poll(&mut f), ["open 2 @0", "lines 2 @0 two|"]);
        f.config.patterns = vec![];
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 2"]);
    }

    #[test]
    fn a_checkpoint_resumes_only_the_same_content() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        append(&log, "one\ntwo\nthree\n");
        let mut file = File::open(&log).unwrap();
        let print = fingerprint(&mut file).unwrap().unwrap();
        assert_eq!(
            poll(&mut follower(&dir, &[Resume { fingerprint: print, offset: 4 }])),
            ["open 1 @4", "lines 1 @4 two|three|"]
        );
        // Another file at the same path: from the beginning.
        assert_eq!(
            poll(&mut follower(&dir, &[Resume { fingerprint: print ^ 1, offset: 4 }])),
            ["open 1 @0", "lines 1 @0 one|two|three|"]
        );
        // An offset past the end (the file was replaced by a shorter one with the same head).
        assert_eq!(
            poll(&mut follower(&dir, &[Resume { fingerprint: print, offset: 999 }])),
            ["open 1 @0", "lines 1 @0 one|two|three|"]
        );
    }

    /// Rotated names in the patterns (`mail.log*`): a renamed generation is drained, never read
    /// again under its new name; a copytruncate copy carries the generation on from its read
    /// position (nothing lost in the window); a vanished path is drained; a restart resumes a
    /// finished generation at its end.
    #[test]
    fn rotated_names_and_copies_are_read_once() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        let rotated = dir.join("mail.log.1");
        let mut f = Follower::new(rotated_names(&dir), &[]);
        append(&log, "a\nb\n");
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 a|b|"]);
        // Rename + create, with a late line in the old file.
        std::fs::rename(&log, &rotated).unwrap();
        append(&rotated, "late\n");
        append(&log, "c\n");
        assert_eq!(poll(&mut f), ["open 2 @0", "lines 2 @0 c|", "lines 1 @4 late|"]);
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS + 2 {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 1"], "mail.log.1 is not opened again");
        // copytruncate: a line is written after the last read and before the copy.
        append(&log, "d\n");
        std::fs::rename(&rotated, dir.join("mail.log.2")).unwrap();
        std::fs::copy(&log, &rotated).unwrap();
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "e\n");
        assert_eq!(poll(&mut f), ["open 3 @0", "lines 3 @0 e|", "lines 2 @2 d|"]);
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS + 2 {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 2"]);
        // The current file vanishes (no create): drained and closed.
        std::fs::remove_file(&log).unwrap();
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS + 2 {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 3"]);
        // A restart whose checkpoint lists the finished generations at their ends.
        let print = |path: &Path| fingerprint(&mut File::open(path).unwrap()).unwrap().unwrap();
        let resume = [
            Resume { fingerprint: print(&dir.join("mail.log.2")), offset: 9 },
            Resume { fingerprint: print(&rotated), offset: 4 },
        ];
        let mut f = Follower::new(rotated_names(&dir), &resume);
        assert_eq!(poll(&mut f), ["open 1 @4", "open 2 @9"]);
    }

    /// logrotate's `compress`: rotated generations are gzipped (`mail.log.1.gz`). A compressed
    /// file is never opened, whether it was there at the start or appears after a rotation (the
    /// generation it holds was read while plain; its open file is drained after the unlink).
    #[test]
    fn compressed_rotated_logs_are_not_followed() {
        use std::io::Write;
        let dir = tempdir();
        let log = dir.join("mail.log");
        let gzip = |text: &str| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(text.as_bytes()).unwrap();
            encoder.finish().unwrap()
        };
        std::fs::write(dir.join("mail.log.2.gz"), gzip("old\nlines\n")).unwrap();
        // Other formats by their magic numbers (xz, zstd, bzip2).
        std::fs::write(dir.join("mail.log.3.xz"), b"\xfd7zXZ\x00\x00\x04rest\n").unwrap();
        std::fs::write(dir.join("mail.log.4.zst"), b"\x28\xb5\x2f\xfd\x00\x58rest\n").unwrap();
        std::fs::write(dir.join("mail.log.5.bz2"), b"BZh91AY&SYrest\n").unwrap();
        let mut f = Follower::new(rotated_names(&dir), &[]);
        append(&log, "a\n");
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 a|"]);
        // Rotation with compression, between two polls: rename, a late line, gzip, unlink.
        std::fs::rename(&log, dir.join("mail.log.1")).unwrap();
        append(&dir.join("mail.log.1"), "late\n");
        std::fs::write(dir.join("mail.log.1.gz"), gzip("a\nlate\n")).unwrap();
        std::fs::remove_file(dir.join("mail.log.1")).unwrap();
        append(&log, "b\n");
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS + 2 {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["open 2 @0", "lines 2 @0 b|", "lines 1 @2 late|", "closed 1"]);
    }

    /// A copytruncate and then a rename between two polls: the open file was truncated and holds
    /// the next generation, so the rest of the old one is read from its copy, and the next
    /// generation from its beginning under its rotated name.
    #[test]
    fn copytruncate_then_rename_between_polls() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        let mut f = Follower::new(rotated_names(&dir), &[]);
        append(&log, "a1\n");
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 a1|"]);
        append(&log, "a2\n");
        std::fs::copy(&log, dir.join("mail.log.1")).unwrap();
        std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
        append(&log, "b1 longer\n");
        std::fs::rename(dir.join("mail.log.1"), dir.join("mail.log.2")).unwrap();
        std::fs::rename(&log, dir.join("mail.log.1")).unwrap();
        append(&log, "c1\n");
        assert_eq!(
            poll(&mut f),
            ["open 2 @0", "lines 2 @0 c1|", "open 3 @0", "lines 3 @0 b1 longer|", "lines 1 @3 a2|"]
        );
    }

    /// A new file that starts with the same line as a drained one is another generation: only
    /// the drained file itself (its inode) is a rotated name.
    #[test]
    fn a_new_file_with_a_known_first_line_is_read() {
        let dir = tempdir();
        let log = dir.join("mail.log");
        let config = FollowConfig {
            patterns: vec![log.display().to_string()],
            poll: Duration::from_millis(1),
            max_line_bytes: 100,
        };
        let mut f = Follower::new(config, &[]);
        append(&log, "same\n1\n");
        assert_eq!(poll(&mut f), ["open 1 @0", "lines 1 @0 same|1|"]);
        std::fs::rename(&log, dir.join("elsewhere")).unwrap();
        let mut got = Vec::new();
        for _ in 0..DRAIN_POLLS + 1 {
            got.extend(poll(&mut f));
        }
        assert_eq!(got, ["closed 1"]);
        append(&log, "same\n2\n");
        assert_eq!(poll(&mut f), ["open 2 @0", "lines 2 @0 same|2|"]);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tlsledger-follow-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
