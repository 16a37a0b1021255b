//! The on-disk spool: batches the server could not take yet, kept in order across restarts.
//!
//! Each batch is one file `batch-<20-digit sequence>.jsonl` holding Observation JSON lines
//! (the documented format, so an operator can read or re-load it by hand). A batch is written
//! to a temporary name, fsynced and renamed, so a crash leaves either the whole batch or none of
//! it. Batches are replayed oldest first and deleted only after the server acknowledged them.
//! The spool is bounded by bytes: when full, the sink stops taking new observations (back-pressure)
//! instead of dropping any.
//!
//! Rows the server rejects as invalid go to `dead-letter.jsonl` in the same folder, one JSON
//! object per row: `{"error": "...", "observation": {...}}`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::observation::Observation;

/// A folder of spooled batches.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) the spool folder and finds the next sequence number.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create the spool folder {}", dir.display()))?;
        let mut spool = Spool { dir: dir.to_owned(), max_bytes, next_seq: 0 };
        spool.next_seq = spool.batches()?.last().map_or(0, |(seq, _)| seq + 1);
        Ok(spool)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Spooled batches, oldest first.
    pub fn batches(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut batches = Vec::new();
        for entry in fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(seq) = name.strip_prefix("batch-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
            if let Ok(seq) = seq.parse::<u64>() {
                batches.push((seq, entry.path()));
            }
        }
        batches.sort();
        Ok(batches)
    }

    /// Bytes held in spooled batches.
    pub fn bytes(&self) -> Result<u64> {
        let mut total = 0;
        for (_, path) in self.batches()? {
            total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    /// True when another batch of about `bytes` would exceed the bound.
    pub fn is_full(&self, bytes: u64) -> Result<bool> {
        Ok(self.bytes()? + bytes > self.max_bytes)
    }

    /// Writes a batch durably; returns its sequence number.
    pub fn push(&mut self, batch: &[Observation]) -> Result<u64> {
        let seq = self.next_seq;
        let path = self.dir.join(format!("batch-{seq:020}.jsonl"));
        let tmp = self.dir.join(format!(".batch-{seq:020}.tmp"));
        let mut text = Vec::with_capacity(batch.len() * 600);
        for observation in batch {
            serde_json::to_writer(&mut text, observation)?;
            text.push(b'\n');
        }
        write_durably(&tmp, &text)?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot rename {}", tmp.display()))?;
        sync_dir(&self.dir);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Reads a spooled batch. Lines that no longer parse (a damaged file) are returned as errors
    /// for the dead-letter file rather than dropped.
    pub fn read(&self, path: &Path) -> Result<(Vec<Observation>, Vec<String>)> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Observation>(&line) {
                Ok(observation) => good.push(observation),
                Err(_) => bad.push(line),
            }
        }
        Ok((good, bad))
    }

    /// Deletes an acknowledged batch.
    pub fn remove(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Appends rejected rows with the server's reason to `dead-letter.jsonl`.
    pub fn dead_letter(&self, rows: &[Observation], error: &str) -> Result<()> {
        let mut text = Vec::new();
        for observation in rows {
            serde_json::to_writer(&mut text, &serde_json::json!({ "error": error, "observation": observation }))?;
            text.push(b'\n');
        }
        self.dead_letter_raw(&text)
    }

    /// Appends already-formatted lines (damaged spool lines) to `dead-letter.jsonl`.
    pub fn dead_letter_lines(&self, lines: &[String], error: &str) -> Result<()> {
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, &serde_json::json!({ "error": error, "raw": line }))?;
            text.push(b'\n');
        }
        self.dead_letter_raw(&text)
    }

    fn dead_letter_raw(&self, text: &[u8]) -> Result<()> {
        let path = self.dir.join("dead-letter.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(text)?;
        file.sync_data()?;
        Ok(())
    }
}

fn write_durably(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(())
}

/// Makes a rename durable; a failure here only weakens crash safety, so it is not fatal.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}
