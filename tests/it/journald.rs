//! `tlsledger ingest --journal-directory` against real journal files: Debian's
//! `systemd-journal-remote` writes them from journal export format (no running journald needed)
//! and the real `journalctl` reads them. Trust comes from journald's own fields, and a second run
//! resumes at the checkpointed cursor.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{observations, repo};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Appends entries (export format) to `dir/remote.journal` with the real systemd-journal-remote.
fn write_entries(dir: &Path, entries: &[(u64, &str, &str, &str)]) {
    let mut export = String::new();
    for (seconds, comm, uid, message) in entries {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _HOSTNAME=mx1\nSYSLOG_IDENTIFIER=postfix/smtpd\nSYSLOG_PID=4242\n_COMM={comm}\n_UID={uid}\n\
             _TRANSPORT=syslog\nMESSAGE={message}\n\n",
            seconds * 1_000_000,
            seconds * 1_000
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote (tests/run.sh installs it)");
    child.stdin.take().unwrap().write_all(export.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn session(
    ip: &str,
    start: u64,
    comm: &'static str,
    uid: &'static str,
) -> Vec<(u64, &'static str, &'static str, String)> {
    vec![
        (start, comm, uid, format!("connect from client.example[{ip}]")),
        (
            start + 1,
            comm,
            uid,
            format!("Anonymous TLS connection established from client.example[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
        ),
        (start + 2, comm, uid, format!("disconnect from client.example[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7")),
    ]
}

fn append(dir: &Path, sessions: &[Vec<(u64, &'static str, &'static str, String)>]) {
    let entries: Vec<(u64, &str, &str, &str)> =
        sessions.iter().flatten().map(|(t, comm, uid, message)| (*t, *comm, *uid, message.as_str())).collect();
    write_entries(dir, &entries);
}

fn ingest(dir: &Path, checkpoints: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(["ingest", "--journal-directory"])
        .arg(dir)
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .args(["--no-state", "--stdout", "--exit-at-end", "--poll-ms", "50"])
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    observations(&output.stdout)
}

#[test]
fn journald_entries_become_observations_with_trust_and_resume_at_the_cursor() {
    let dir = std::env::temp_dir().join(format!("tlsledger-it-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let journal = dir.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let checkpoints = dir.join("checkpoints");
    // A session logged by Postfix's smtpd itself, and one forged with logger by a user.
    append(
        &journal,
        &[session("192.0.2.91", 1_796_040_000, "smtpd", "107"), session("192.0.2.92", 1_796_040_010, "logger", "1000")],
    );
    let first = ingest(&journal, &checkpoints);
    let trust_of = |found: &[serde_json::Value], ip: &str| -> String {
        let o =
            found.iter().find(|o| o["peer"]["ip"] == ip).unwrap_or_else(|| panic!("no observation of {ip}: {found:?}"));
        assert_eq!(o["outcome"], "tls");
        assert_eq!(o["tls"]["protocol"], "TLSv1.3");
        assert_eq!(o["source"]["kind"], "journald");
        o["source"]["trust"].as_str().unwrap().to_owned()
    };
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(trust_of(&first, "192.0.2.91"), "journald-trusted");
    assert_eq!(trust_of(&first, "192.0.2.92"), "journald", "a forged identifier is not trusted");

    // New entries: the second run reads only them.
    append(&journal, &[session("192.0.2.93", 1_796_040_020, "smtpd", "107")]);
    let second = ingest(&journal, &checkpoints);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(trust_of(&second, "192.0.2.93"), "journald-trusted");
    let _ = std::fs::remove_dir_all(&dir);
}
