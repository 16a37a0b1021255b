//! The systemd journal as a source: `journalctl -o json --follow` as a child process, one JSON
//! object per entry, resumed from a checkpointed cursor.
//!
//! Each entry becomes one line in the RFC 3339 file framing (`TIME HOST IDENT[PID]: MESSAGE`) so
//! the same grammars parse it. Its position is the journal's own sequence number (`i=` of the
//! cursor), stable across restarts, within its sequence-number space (`s=`); the ingester treats
//! each space like a followed file, so checkpoints and replay work as for files.
//!
//! **Trust** comes from the fields journald itself sets (underscore fields, which a client cannot
//! forge), not from what the client claims: an entry is trusted when its `_COMM` (the process's
//! executable name) is the daemon its `SYSLOG_IDENTIFIER` names (`smtpd` for `postfix/smtpd`) or
//! a known MTA binary, or when `_UID` is 0. `logger -t postfix/smtpd` by a user gives
//! `_COMM=logger`: untrusted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// MTA executables whose entries are trusted whatever their identifier says.
const MTA_COMMANDS: &[&str] =
    &["exim", "exim4", "sendmail", "sm-mta", "smtpd", "smtp", "lmtp", "postscreen", "tlsproxy"];

/// One journal entry, reduced to what the ingester needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// `s=` of the cursor: the sequence-number space.
    pub seqnum_id: String,
    /// `i=` of the cursor: the entry's position in that space.
    pub seqnum: u64,
    /// The whole cursor, to resume from.
    pub cursor: String,
    /// The entry as a syslog line (RFC 3339 framing), without a newline.
    pub line: String,
    /// Set from journald's own fields (see the module docs).
    pub trusted: bool,
}

/// Where to read and where to start.
#[derive(Debug, Clone, Default)]
pub struct JournalConfig {
    /// `journalctl --directory` (default: the system journal).
    pub directory: Option<PathBuf>,
    /// `FIELD=VALUE` matches passed to journalctl (e.g. `_SYSTEMD_UNIT=postfix@-.service`).
    pub matches: Vec<String>,
    /// Resume at this cursor (inclusive when `inclusive`, else just after it).
    pub cursor: Option<(String, bool)>,
    /// The journalctl binary.
    pub journalctl: Option<PathBuf>,
}

/// Starts `journalctl` for `config`.
pub fn spawn(config: &JournalConfig) -> Result<Child> {
    let program = config.journalctl.clone().unwrap_or_else(|| PathBuf::from("journalctl"));
    let mut command = Command::new(&program);
    command.args(["-o", "json", "--no-pager", "--follow"]);
    if let Some(directory) = &config.directory {
        command.arg("--directory").arg(directory);
    }
    match &config.cursor {
        Some((cursor, true)) => command.arg(format!("--cursor={cursor}")),
        Some((cursor, false)) => command.arg(format!("--after-cursor={cursor}")),
        // From the beginning of what the journal keeps (nothing is skipped on a first start).
        None => command.arg("--no-tail"),
    };
    command.args(&config.matches);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    command.spawn().with_context(|| format!("cannot run {}", program.display()))
}

/// Reads journalctl's output until it ends or `send` fails; entries that are not JSON objects
/// with a cursor are counted in the returned number and skipped.
pub fn read_entries(stdout: impl std::io::Read, send: &mut dyn FnMut(JournalEntry) -> Result<(), ()>) -> u64 {
    let mut skipped = 0;
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        match entry(&line) {
            Some(entry) => {
                if send(entry).is_err() {
                    break;
                }
            }
            None => skipped += 1,
        }
    }
    skipped
}

/// One `journalctl -o json` line → an entry; `None` when it has no usable cursor.
pub fn entry(json: &[u8]) -> Option<JournalEntry> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let field = |name: &str| -> Option<String> {
        match value.get(name)? {
            serde_json::Value::String(text) => Some(text.clone()),
            // Binary fields come as arrays of bytes.
            serde_json::Value::Array(bytes) => {
                let bytes: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    };
    let cursor = field("__CURSOR")?;
    let (mut seqnum_id, mut seqnum) = (None, None);
    for part in cursor.split(';') {
        if let Some(id) = part.strip_prefix("s=") {
            seqnum_id = Some(id.to_owned());
        } else if let Some(number) = part.strip_prefix("i=") {
            seqnum = u64::from_str_radix(number, 16).ok();
        }
    }
    let micros: i64 = field("__REALTIME_TIMESTAMP").and_then(|t| t.parse().ok()).unwrap_or(0);
    let time = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    let identifier = field("SYSLOG_IDENTIFIER").or_else(|| field("_COMM")).unwrap_or_else(|| "-".to_owned());
    let pid = field("SYSLOG_PID").or_else(|| field("_PID"));
    let hostname = field("_HOSTNAME").unwrap_or_else(|| "localhost".to_owned());
    // One line per entry: a multi-line message keeps its first line (MTAs log one line each).
    let message = field("MESSAGE").unwrap_or_default();
    let message = message.lines().next().unwrap_or_default();
    let tag = match pid {
        Some(pid) => format!("{identifier}[{pid}]"),
        None => identifier.clone(),
    };
    let line = format!("{} {hostname} {tag}: {message}", time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"));
    let command = field("_COMM");
    let daemon = identifier.rsplit('/').next().unwrap_or_default();
    let trusted = field("_UID").as_deref() == Some("0")
        || command.as_deref().is_some_and(|comm| comm == daemon || MTA_COMMANDS.contains(&comm));
    Some(JournalEntry { seqnum_id: seqnum_id?, seqnum: seqnum?, cursor, line, trusted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_syslog_lines_with_trust_from_journald_fields() {
        let json = br#"{"__CURSOR":"s=abc;i=1f;b=x;m=1;t=2;x=3","__REALTIME_TIMESTAMP":"1796040000000000","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix/smtpd","SYSLOG_PID":"4242","_COMM":"smtpd","_UID":"107","MESSAGE":"connect from client.example[192.0.2.71]"}"#;
        let got = entry(json).unwrap();
        assert_eq!((got.seqnum_id.as_str(), got.seqnum), ("abc", 31));
        assert_eq!(
            got.line,
            "2026-11-30T12:00:00.000000+00:00 mx1 postfix/smtpd[4242]: connect from client.example[192.0.2.71]"
        );
        assert!(got.trusted);
        let record = parsers::parse_record(&got.line).unwrap();
        assert_eq!(record.header.appname, "postfix/smtpd");
        // The same line written by `logger` as a user: untrusted.
        let forged = br#"{"__CURSOR":"s=abc;i=20","__REALTIME_TIMESTAMP":"1796040000000000","SYSLOG_IDENTIFIER":"postfix/smtpd","_COMM":"logger","_UID":"1000","MESSAGE":[104,105]}"#;
        let got = entry(forged).unwrap();
        assert!(!got.trusted);
        assert!(got.line.ends_with("localhost postfix/smtpd: hi"), "{}", got.line);
        // No cursor, or not JSON: skipped.
        assert!(entry(br#"{"MESSAGE":"x"}"#).is_none());
        assert!(entry(b"not json").is_none());
    }
}
