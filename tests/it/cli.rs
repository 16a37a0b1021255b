//! The command line as a user meets it: help, errors, exit codes, stdin, `| head`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{observations, stat, tlsledger};

const TLS_LINE: &str = "Nov 30 10:00:00 mx postfix/smtp[100]: Trusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)";

#[test]
fn help_describes_parse() {
    let output = tlsledger(&["--help"], b"");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("parse"));
    let output = tlsledger(&["parse", "--help"], b"");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--stats", "--tls-logging", "--output", "--log-zone", "--reference-time", "--max-line-bytes"] {
        assert!(help.contains(flag), "parse --help lacks {flag}:\n{help}");
    }
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let output = tlsledger(&["parse", "/nonexistent/mail.log"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open /nonexistent/mail.log"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = tlsledger(&["parse", "src"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is a directory"));
}

#[test]
fn bad_arguments_are_rejected() {
    for args in [&["parse", "--tls-logging", "maybe"][..], &["parse", "--log-zone", "Mars/Base"], &["nosuchcommand"]] {
        let output = tlsledger(args, b"");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
}

#[test]
fn stdin_and_dash_are_read() {
    for args in [&["parse"][..], &["parse", "-"]] {
        let output = tlsledger(args, format!("{TLS_LINE}\n").as_bytes());
        assert!(output.status.success());
        let got = observations(&output.stdout);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["source"]["kind"], "stdin");
        assert_eq!(got[0]["tls"]["trust"], "trusted");
    }
}

#[test]
fn stats_count_outcomes_and_directions() {
    let input = format!(
        "{TLS_LINE}\n\
         Nov 30 10:00:01 mx postfix/smtpd[7]: connect from unknown[198.51.100.1]\n\
         Nov 30 10:00:02 mx postfix/smtpd[7]: disconnect from unknown[198.51.100.1] ehlo=1 quit=1 commands=2\n\
         not a log line\n"
    );
    let output = tlsledger(&["parse", "--stats", "--output", "none"], input.as_bytes());
    assert!(output.status.success());
    assert!(output.stdout.is_empty(), "--output none prints nothing");
    assert_eq!(stat(&output.stderr, "lines"), 4);
    assert_eq!(stat(&output.stderr, "not-syslog"), 1);
    assert_eq!(stat(&output.stderr, "observations"), 2);
    assert_eq!(stat(&output.stderr, "outbound"), 1);
    assert_eq!(stat(&output.stderr, "inbound"), 1);
    assert_eq!(stat(&output.stderr, "tls"), 1);
    assert_eq!(stat(&output.stderr, "plaintext"), 1);
}

#[test]
fn closed_stdout_exits_quietly() {
    let dir = std::env::temp_dir().join(format!("tlsledger-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("many.log");
    let mut text = String::new();
    for pid in 0..50_000 {
        text.push_str(&TLS_LINE.replace("[100]", &format!("[{pid}]")));
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(["parse", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    // The reader is dropped here, as `head -1` would close the pipe.
    let output = child.wait_with_output().unwrap();
    assert!(first.contains("\"outcome\":\"tls\""), "{first}");
    assert!(output.status.success(), "exit {:?}", output.status);
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
