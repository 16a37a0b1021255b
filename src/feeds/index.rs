//! Indexed maps built with the MTA's own tool after a feed file was replaced: Postfix `postmap`
//! for `tls_policy` (`hash:`, `btree:`, `lmdb:`, `cdb:`) and Sendmail `makemap` for
//! `access.tlsledger` (`hash`, `btree`, `cdb`). The cidr maps and Exim's lists need none.
//!
//! The tool writes a temporary database beside the file (`.NAME.index` + the type's suffix), which
//! is then renamed over `NAME` + suffix: a reader sees the previous database or the new one, never
//! a half-written one (research/FEEDS.md §1.1.4: "a failed in-place overwrite leaves no usable
//! database"). When the tool is missing or fails, the temporary files are removed, the previous
//! database stays, and the error names the tool, the file and what the tool said; the text feed
//! file itself is already in place.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A Postfix indexed map type that `postmap` builds (`postconf -m` lists those compiled in;
/// Debian's base package has `hash` and `btree`, `lmdb` and `cdb` need `postfix-lmdb`/`postfix-cdb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PostmapType {
    /// Berkeley DB hash, `NAME.db`.
    Hash,
    /// Berkeley DB btree, `NAME.db`.
    Btree,
    /// LMDB, `NAME.lmdb`.
    Lmdb,
    /// CDB, `NAME.cdb`.
    Cdb,
}

impl PostmapType {
    /// The type as Postfix writes it in `TYPE:FILE`.
    pub fn as_str(self) -> &'static str {
        match self {
            PostmapType::Hash => "hash",
            PostmapType::Btree => "btree",
            PostmapType::Lmdb => "lmdb",
            PostmapType::Cdb => "cdb",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            PostmapType::Hash | PostmapType::Btree => ".db",
            PostmapType::Lmdb => ".lmdb",
            PostmapType::Cdb => ".cdb",
        }
    }
}

/// A Sendmail map type that `makemap` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MakemapType {
    /// Berkeley DB hash, `NAME.db` (what `FEATURE(\`access_db')` uses by default).
    Hash,
    /// Berkeley DB btree, `NAME.db`.
    Btree,
    /// CDB, `NAME.cdb`.
    Cdb,
}

impl MakemapType {
    /// The type as `makemap` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MakemapType::Hash => "hash",
            MakemapType::Btree => "btree",
            MakemapType::Cdb => "cdb",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            MakemapType::Hash | MakemapType::Btree => ".db",
            MakemapType::Cdb => ".cdb",
        }
    }
}

/// The temporary base name of `dir/name`'s index.
fn temporary(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.index"))
}

/// Removes every file the tool may have left for `temporary` (the source copy, the database,
/// lock files).
fn remove_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.index");
    if let Ok(read) = std::fs::read_dir(dir) {
        for it in read.flatten() {
            if it.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(it.path());
            }
        }
    }
}

/// Runs `command`; an error when it cannot start or exits non-zero, with what it said.
fn run(mut command: Command, tool: &Path, name: &str) -> Result<()> {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {} to index {name}", tool.display()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said.trim();
        bail!("{} failed to index {name} ({}): {said}", tool.display(), output.status);
    }
    Ok(())
}

/// Moves the built `.NAME.index<suffix>` over `NAME<suffix>` and syncs the folder.
fn publish(dir: &Path, name: &str, suffix: &str) -> Result<()> {
    let built = PathBuf::from(format!("{}{suffix}", temporary(dir, name).display()));
    let target = dir.join(format!("{name}{suffix}"));
    std::fs::rename(&built, &target)
        .with_context(|| format!("cannot replace {} with {}", target.display(), built.display()))?;
    if let Ok(handle) = File::open(dir) {
        // Makes the rename durable; failing here only weakens crash safety.
        let _ = handle.sync_all();
    }
    Ok(())
}

/// `postmap [-c CONFIG] TYPE:dir/.NAME.index` on a copy of `dir/NAME`, then the database is
/// renamed to `dir/NAME` + suffix (what `TYPE:dir/NAME` in main.cf reads).
pub fn postmap(postmap: &Path, config: Option<&Path>, kind: PostmapType, dir: &Path, name: &str) -> Result<()> {
    let source = temporary(dir, name);
    remove_temporaries(dir, name);
    let res = (|| {
        std::fs::copy(dir.join(name), &source)
            .with_context(|| format!("cannot copy {} for postmap", dir.join(name).display()))?;
        let mut command = Command::new(postmap);
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        command.arg(format!("{}:{}", kind.as_str(), source.display())).stdin(Stdio::null());
        run(command, postmap, name)?;
        publish(dir, name, kind.suffix())
    })();
    remove_temporaries(dir, name);
    res
}

/// `makemap [-C SENDMAIL_CF] TYPE dir/.NAME.index < dir/NAME`, then the database is renamed to
/// `dir/NAME` + suffix.
pub fn makemap(makemap: &Path, sendmail_cf: Option<&Path>, kind: MakemapType, dir: &Path, name: &str) -> Result<()> {
    remove_temporaries(dir, name);
    let res = (|| {
        let input = File::open(dir.join(name)).with_context(|| format!("cannot open {}", dir.join(name).display()))?;
        let mut command = Command::new(makemap);
        if let Some(cf) = sendmail_cf {
            command.arg("-C").arg(cf);
        }
        command.arg(kind.as_str()).arg(temporary(dir, name)).stdin(input);
        run(command, makemap, name)?;
        publish(dir, name, kind.suffix())
    })();
    remove_temporaries(dir, name);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_an_error_that_leaves_the_file_and_no_temporaries() {
        let dir = std::env::temp_dir().join(format!("tlsledger-index-{}", std::process::id()));
        crate::feeds::write_atomically(&dir, "tls_policy", b"# empty\n").unwrap();
        let missing = dir.join("no-such-postmap");
        let err = postmap(&missing, None, PostmapType::Hash, &dir, "tls_policy").unwrap_err();
        assert!(format!("{err:#}").contains("cannot run") && format!("{err:#}").contains("no-such-postmap"), "{err:#}");
        let err = makemap(&missing, None, MakemapType::Hash, &dir, "tls_policy").unwrap_err();
        assert!(format!("{err:#}").contains("no-such-postmap"), "{err:#}");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tls_policy"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
