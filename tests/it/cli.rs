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
         Nov 30 10:00:02 mx postfix/smtpd[7]: disconnect from unknown[198.51.100.1] ehlo=1 mail=1 quit=1 commands=3\n\
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

/// The observations of `stdout` without the fields that name the input (`event_id` hashes the
/// source name), for comparing one log read under two names.
fn without_source(stdout: &[u8]) -> Vec<serde_json::Value> {
    let mut got = observations(stdout);
    for observation in &mut got {
        let object = observation.as_object_mut().unwrap();
        object.remove("event_id");
        object.remove("source");
    }
    got
}

/// A rotated log compressed by logrotate (`gzip`, the real tool) reads as the plain log:
/// on its own, in a multi-member file (`cat a.gz b.gz`), among plain files and on stdin. Other
/// formats (`xz`) and a damaged gzip file are clear errors.
#[test]
fn gzip_compressed_logs_are_read_like_plain_ones() {
    let dir = std::env::temp_dir().join(format!("tlsledger-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = crate::common::corpus("exim-testsuite-tls.log");
    let plain = dir.join("mail.log.1");
    std::fs::copy(&source, &plain).unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let output = tlsledger(args, stdin);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    };
    let want = run(&["parse", "--stats", plain.to_str().unwrap()], b"");
    assert!(observations(&want.stdout).len() > 10);

    let compress = |tool: &str, path: &std::path::Path| {
        let status = Command::new(tool).args(["-k", "-f", path.to_str().unwrap()]).status().unwrap();
        assert!(status.success(), "{tool}");
    };
    compress("gzip", &plain);
    let gz = dir.join("mail.log.1.gz");
    let got = run(&["parse", "--stats", gz.to_str().unwrap()], b"");
    assert_eq!(without_source(&got.stdout), without_source(&want.stdout));
    assert_eq!(stat(&got.stderr, "lines"), stat(&want.stderr, "lines"));
    assert_eq!(stat(&got.stderr, "observations"), stat(&want.stderr, "observations"));

    // Two members: the log cut in two at a line end, each half gzipped, the files joined.
    let text = std::fs::read(&plain).unwrap();
    let cut = text[..text.len() / 2].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::write(&first, &text[..cut]).unwrap();
    std::fs::write(&second, &text[cut..]).unwrap();
    compress("gzip", &first);
    compress("gzip", &second);
    let mut joined = std::fs::read(dir.join("first.gz")).unwrap();
    joined.extend(std::fs::read(dir.join("second.gz")).unwrap());
    let two = dir.join("two.gz");
    std::fs::write(&two, &joined).unwrap();
    let got = run(&["parse", two.to_str().unwrap()], b"");
    assert_eq!(without_source(&got.stdout), without_source(&want.stdout));

    // Among plain files, and on stdin.
    let mixed = run(&["parse", "--stats", plain.to_str().unwrap(), gz.to_str().unwrap()], b"");
    assert_eq!(stat(&mixed.stderr, "lines"), 2 * stat(&want.stderr, "lines"));
    let got = run(&["parse", "-"], &std::fs::read(&gz).unwrap());
    assert_eq!(without_source(&got.stdout), without_source(&want.stdout));

    // Damaged: cut short, and xz (not read directly). Errors name the file, exit 2.
    let short = dir.join("short.gz");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() / 2]).unwrap();
    compress("xz", &plain);
    for (path, says) in [(short, "short.gz"), (dir.join("mail.log.1.xz"), "is xz-compressed")] {
        let output = tlsledger(&["parse", path.to_str().unwrap()], b"");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tlsledger parse /var/log/mail.log*`: the shell gives the rotations newest first, and a
/// session that spans two of them is still joined (read oldest first); `--keep-order` reads
/// them as given, and the session falls apart.
#[test]
fn rotated_logs_given_newest_first_are_read_oldest_first() {
    let dir = std::env::temp_dir().join(format!("tlsledger-rotated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let session = [
        "Nov 30 10:00:00 mx postfix/smtpd[7]: connect from a.example[192.0.2.1]",
        "Nov 30 10:00:01 mx postfix/smtpd[7]: Anonymous TLS connection established from a.example[192.0.2.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        "Nov 30 10:00:02 mx postfix/smtpd[7]: disconnect from a.example[192.0.2.1] ehlo=2 starttls=1 quit=1 commands=4",
    ];
    // The rotation happened in the middle of the session; the rotated file is gzipped.
    let (old, new) = (dir.join("mail.log.1"), dir.join("mail.log"));
    std::fs::write(&old, format!("{}\n{}\n", session[0], session[1])).unwrap();
    std::fs::write(&new, format!("{}\n", session[2])).unwrap();
    let status = Command::new("gzip").arg(&old).status().unwrap();
    assert!(status.success());
    let old = dir.join("mail.log.1.gz");
    let newest_first = [new.to_str().unwrap(), old.to_str().unwrap()];

    let args = |extra: &[&'static str]| {
        let mut args = vec!["parse", "--reference-time", "2026-12-01T00:00:00Z"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&newest_first);
        args
    };
    let output = tlsledger(&args(&[]), b"");
    assert!(output.status.success());
    let got = observations(&output.stdout);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["lines"], 3);
    assert_eq!(got[0]["outcome"], "tls");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reading rotated logs oldest first"), "{stderr}");

    let output = tlsledger(&args(&["--keep-order"]), b"");
    assert!(output.status.success());
    let got = observations(&output.stdout);
    assert!(got.iter().all(|o| o["lines"] != 3), "{got:#?}");
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
