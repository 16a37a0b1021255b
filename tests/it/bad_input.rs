//! Bad input never crashes and never loses count: truncated, 1 MB, non-UTF-8, NUL-containing
//! and hostile lines, through the parsers directly and through the binary.

use crate::common::{observations, stat, tlsledger};

const REAL_LINES: &[&str] = &[
    "Nov  3 13:35:12 mx1 postfix/smtp[12345]: Verified TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
    "2024-11-03T13:35:12.654321+00:00 mx1 postfix/smtp[12345]: 4XyZ1234ABC: to=<bob@example.net>, relay=mx.example.net[192.0.2.25]:25, delay=0.52, delays=0.01/0.01/0.3/0.2, tls=may, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F3A2)",
    "<22>1 2024-11-03T13:35:12.123456Z mx1.example.org postfix/smtpd 12345 - [a@1 b=\"c\\]\"] \u{feff}disconnect from unknown[2001:db8::1] ehlo=2 starttls=0/1 commands=2/3",
    "Nov 03 13:35:12 mx1 postfix/smtpd[1]: warning: TLS library problem: error:0A000418:SSL routines::tlsv1 alert unknown ca:../ssl/record/rec_layer_s3.c:1586:SSL alert number 48:",
    "Nov  3 13:35:12 mx1 postfix/error[9]: 2DC5552A34: to=<user@yahoo.com>, relay=none, delay=1, delays=1/0/0/0, dsn=4.7.4, status=deferred (delivery temporarily suspended: TLS is required, but was not offered by host mx.example[192.0.2.9])",
];

#[test]
fn every_prefix_of_real_lines_parses_without_panic() {
    for line in REAL_LINES {
        for cut in 0..=line.len() {
            if !line.is_char_boundary(cut) {
                continue;
            }
            let mut years = parsers::YearInference::new(2026, 11);
            let _ = parsers::parse_line(&line[..cut], &mut years);
            let _ = parsers::parse_line(&line[cut..], &mut years);
        }
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn mutated_lines_parse_without_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"[]<>:=,()/ .-0123456789abcdefTLSv\0\xff\xfe\r\t'\"\\";
    for _ in 0..20_000 {
        let base = REAL_LINES[(rng.next() % REAL_LINES.len() as u64) as usize].as_bytes();
        let mut bytes = base.to_vec();
        for _ in 0..(rng.next() % 6) {
            let at = (rng.next() % (bytes.len() as u64 + 1)) as usize;
            match rng.next() % 3 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[(rng.next() % alphabet.len() as u64) as usize]),
                _ if at < bytes.len() => bytes[at] = alphabet[(rng.next() % alphabet.len() as u64) as usize],
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut years = parsers::YearInference::new(2026, 11);
        let _ = parsers::parse_line(&text, &mut years);
    }
}

#[test]
fn hostile_lines_through_the_binary() {
    let mut input: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
    };
    push(REAL_LINES[0].as_bytes());
    // 1 MB line: skipped and counted, the next line still parses.
    push(&vec![b'A'; 1 << 20]);
    // Non-UTF-8 inside a real line: read lossily, still an observation.
    push(b"Nov  3 13:36:00 mx1 postfix/smtpd[2]: connect from bad\xff\xfehost[198.51.100.1]");
    push(
        b"Nov  3 13:36:01 mx1 postfix/smtpd[2]: disconnect from bad\xff\xfehost[198.51.100.1] ehlo=1 mail=1 quit=1 commands=3",
    );
    // NUL bytes and control characters.
    push(b"Nov  3 13:36:02 mx1 postfix/smtp[3]: Trusted TLS connection established to a\0b[192.0.2.7]:25: TLSv1.2 with cipher X (256/256 bits)");
    push(b"\0\0\0\0");
    push(b"\x1b[31mNov  3 13:36:03 mx1 postfix/smtp[3]: x");
    // Out-of-range numbers and unbalanced brackets.
    push(b"<99999>Nov  3 13:36:04 mx1 postfix/smtp[3]: x");
    push(b"Nov  3 13:36:05 mx1 postfix/smtp[99999999999999999999]: x");
    push(b"Nov  3 13:36:06 mx1 postfix/smtp[4]: Trusted TLS connection established to a[192.0.2.8]:99999999: TLSv1.2 with cipher X (99999999999/1 bits)");
    push(b"Nov  3 13:36:07 mx1 postfix/smtp[4]: ABCDE12345: to=<x@y>, relay=[[[[, delay=1, dsn=2.0.0, status=sent (");
    push(b"2024-02-30T00:00:00Z mx1 postfix/smtp[4]: x");
    push(b"9999-12-31T23:59:59.999999999999+23:59 mx1 postfix/smtp[4]: connect from a[1.2.3.4]");
    let n_lines = 13;
    // A truncated last line without a newline.
    input.extend_from_slice(&REAL_LINES[1].as_bytes()[..60]);

    let output = tlsledger(&["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stat(&output.stderr, "lines"), n_lines + 1);
    assert_eq!(stat(&output.stderr, "oversized (skipped)"), 1);
    assert_eq!(stat(&output.stderr, "non-utf8 (read lossily)"), 2);
    assert!(stat(&output.stderr, "malformed message") >= 2, "{stderr}");
    let got = observations(&output.stdout);
    assert!(got.iter().any(|o| o["peer"]["ip"] == "192.0.2.25" && o["tls"]["trust"] == "verified"));
    assert!(got.iter().any(|o| o["peer"]["ip"] == "198.51.100.1" && o["outcome"] == "plaintext"));
    assert!(got.iter().any(|o| o["peer"]["ip"] == "192.0.2.7" && o["peer"]["hostname"] == "a\u{0}b"));
}

#[test]
fn long_lines_within_the_limit_are_parsed() {
    let mut line = REAL_LINES[1].to_owned();
    line.push_str(&" padding".repeat(150_000));
    let output = tlsledger(&["parse", "--stats", "--max-line-bytes", "2000000"], line.as_bytes());
    assert!(output.status.success());
    assert_eq!(stat(&output.stderr, "oversized (skipped)"), 0);
    assert_eq!(observations(&output.stdout).len(), 1);
}

#[test]
fn forged_reporters_do_not_grow_the_process_table() {
    // Each session from another (forged) syslog host name: more names than the correlator
    // keeps, so unused ones are forgotten; every session is still an observation of its own.
    let hosts = 20_000;
    let mut input = String::new();
    for i in 0..hosts {
        input.push_str(&format!("Nov  3 13:36:00 forged{i} postfix/smtpd[9]: connect from h[198.51.100.9]\n"));
        input.push_str(&format!(
            "Nov  3 13:36:00 forged{i} postfix/smtpd[9]: disconnect from h[198.51.100.9] ehlo=1 quit=1 commands=2\n"
        ));
    }
    let output = tlsledger(&["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z"], input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stat(&output.stderr, "process names forgotten") > 0, "{}", String::from_utf8_lossy(&output.stderr));
    let got = observations(&output.stdout);
    assert_eq!(got.len(), hosts);
    assert!(got.iter().enumerate().all(|(i, o)| o["reporter"] == format!("forged{i}")));
}
