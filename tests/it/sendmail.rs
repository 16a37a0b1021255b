//! Sendmail end to end: golden conformance over the Sendmail corpora in tests/data/sendmail
//! (SOURCES.md there gives provenance and licences), and a real Sendmail lab.
//!
//! The golden cases use the mechanism of `corpus.rs` (regenerate with `UPDATE_GOLDEN=1`). Each
//! also proves "zero unexplained lines": no malformed message, and the only unparsed lines are
//! our `#` provenance comments and blank lines.
//!
//! The lab (`tests/harness/sendmail-lab.sh`) runs Debian's Sendmail 8.17 twice, unpacked
//! privately, on 127.0.8.x with a private CA, logging through syslog into a private rsyslogd.
//! swaks sends five messages to the relay daemon (STARTTLS without a client certificate, with a
//! CA-signed one and with a self-signed one, plaintext, and one with forty recipients), which
//! relays them to the final daemon over TLS, to a scripted receiver that offers no STARTTLS, to
//! one with a self-signed certificate (`verify=FAIL`) and to one whose STARTTLS handshake fails.
//! `tlsledger parse` must report every one of the twelve connections the way the lab set it up.
//! The test fails, never skips, when a part is missing; the test command installs and unpacks
//! them first. It needs root (daemons, mount namespaces).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{observations, repo, stat, tlsledger};
use crate::corpus::{find, golden};

/// Checks "zero unexplained lines" for a golden case read from `file`.
fn assert_all_lines_explained(file: &str, stats: &[u8]) {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let n_comments = text.lines().filter(|line| line.starts_with('#') || line.trim().is_empty()).count() as u64;
    // `Jun 17 14:37:39 <mail.notice> robin sm-mta[2794]: …`: a priority column the syslog parser
    // does not know (an envelope framing, not the Sendmail grammar); counted as missing-tag.
    let n_priority_column =
        text.lines().filter(|line| line.split_whitespace().nth(3).is_some_and(|w| w.starts_with("<mail."))).count()
            as u64;
    assert_eq!(stat(stats, "malformed message"), 0, "{file}");
    assert_eq!(
        stat(stats, "unparsed header"),
        n_comments + n_priority_column,
        "{file}: only comment lines (and the known priority-column framing) may be unparsed"
    );
}

fn sendmail_case(case: &str, file: &str) -> (Vec<Value>, Vec<u8>) {
    let (got, stats) = golden(case, &[file], b"");
    assert_all_lines_explained(file, &stats);
    for observation in &got {
        assert_eq!(observation["mta"], "sendmail", "{observation}");
    }
    (got, stats)
}

/// One observation of `direction` with peer `ip`, of the instance `instance`.
fn one<'a>(got: &'a [Value], ip: &str, direction: &str, instance: &str) -> &'a Value {
    let found: Vec<&Value> = find(got, ip, direction).into_iter().filter(|o| o["instance"] == instance).collect();
    assert_eq!(found.len(), 1, "{instance} {direction} {ip}: {found:#?}");
    found[0]
}

#[test]
fn corpus_sendmail_formats_examples() {
    let (got, _) = sendmail_case("sendmail-formats-examples", "tests/data/sendmail/formats-examples.log");
    let summary = |ip: &str, direction: &str| {
        let o = find(&got, ip, direction);
        assert!(!o.is_empty(), "no {direction} observation of {ip}");
        let o = o[0];
        (o["outcome"].as_str().unwrap().to_owned(), o["tls"]["trust"].as_str().map(str::to_owned))
    };
    let tls = |trust: &str| ("tls".to_owned(), Some(trust.to_owned()));
    // Every verify= value of a STARTTLS line maps to its trust class.
    assert_eq!(summary("192.0.2.25", "outbound"), tls("trusted"));
    assert_eq!(summary("198.51.100.10", "outbound"), tls("untrusted"));
    assert_eq!(summary("2001:db8::25", "outbound"), tls("verified"));
    assert_eq!(summary("192.0.2.50", "inbound"), tls("anonymous"));
    assert_eq!(summary("198.51.100.60", "inbound"), tls("trusted"));
    // The connection cache: one STARTTLS line, two messages, one observation.
    let cached = find(&got, "192.0.2.25", "outbound");
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0]["queue_ids"].as_array().unwrap().len(), 2);
    assert_eq!(cached[0]["lines"], 3);
    assert_eq!(cached[0]["tls"]["protocol"], "TLSv1.3");
    assert_eq!(cached[0]["tls"]["bits"], 256);
    // A failed handshake and Sendmail's retry without STARTTLS: two observations.
    let broken = find(&got, "203.0.113.5", "outbound");
    let outcomes: Vec<(&str, bool)> =
        broken.iter().map(|o| (o["outcome"].as_str().unwrap(), o["after_tls_failure"].as_bool().unwrap())).collect();
    assert_eq!(outcomes, [("handshake-failed", false), ("plaintext", true)]);
    // tls_server / tls_client rejects by their {verify} value.
    assert_eq!(summary("198.51.100.20", "outbound").0, "cert-verify-failed");
    assert_eq!(summary("198.51.100.30", "outbound").0, "tls-required-missing");
    assert_eq!(summary("198.51.100.70", "inbound").0, "tls-required-missing");
    // DANE in DNS but no STARTTLS: TLS was mandatory (FORMATS.md §4.2).
    assert_eq!(summary("203.0.113.7", "outbound").0, "tls-required-missing");
    // Plaintext is claimed outbound only because the instance logs STARTTLS=client lines, and
    // inbound only from proto=ESMTP; a session that never issued MAIL proves nothing.
    assert_eq!(summary("203.0.113.8", "outbound").0, "plaintext");
    assert_eq!(summary("203.0.113.91", "inbound").0, "plaintext");
    assert_eq!(summary("203.0.113.92", "inbound").0, "unknown");
    assert_eq!(summary("203.0.113.90", "inbound").0, "handshake-failed");
    assert_eq!(summary("203.0.113.93", "inbound").0, "handshake-failed");
    // LogLevel 12 certificate details become verification errors of the TLS session.
    let selfsigned = find(&got, "192.0.2.77", "outbound");
    assert_eq!(selfsigned[0]["tls"]["verify_errors"][0], "self-signed certificate");
    // The QID[1]/QID[2] pieces are joined: proto=ESMTPS and the relay come from the second.
    let bulk = find(&got, "192.0.2.88", "inbound");
    assert_eq!(bulk.len(), 1);
    assert_eq!(bulk[0]["queue_ids"][0], "5AUB08aa003008");
    assert_eq!(bulk[0]["lines"], 2);
    // The MSP (`sendmail`) and the MTA (`sm-mta`) both log the loopback hop.
    assert_eq!(one(&got, "127.0.0.1", "outbound", "sendmail")["tls"]["trust"], "untrusted");
    assert_eq!(one(&got, "127.0.0.1", "inbound", "sm-mta")["tls"]["trust"], "anonymous");
    // No observation for a connection that never happened or a local delivery.
    assert!(got.iter().all(|o| o["peer"]["ip"] != Value::Null), "{got:#?}");
}

#[test]
fn corpus_sendmail_fail2ban() {
    let (got, stats) = sendmail_case("sendmail-fail2ban-reject", "tests/data/sendmail/fail2ban-sendmail-reject.log");
    // Rejects and sessions without mail tell nothing about TLS, except the two from= lines with
    // proto=ESMTP of one session (pid 26254), which prove plaintext.
    let plaintext: Vec<&str> =
        got.iter().filter(|o| o["outcome"] == "plaintext").filter_map(|o| o["peer"]["ip"].as_str()).collect();
    assert_eq!(plaintext, ["95.32.23.163"], "{got:#?}");
    assert_eq!(find(&got, "95.32.23.163", "inbound")[0]["queue_ids"].as_array().unwrap().len(), 2);
    assert!(got
        .iter()
        .all(|o| o["direction"] == "inbound" && ["plaintext", "unknown"].contains(&o["outcome"].as_str().unwrap())));
    // The IPv6 literal `[IPv6:2001:DB8::1]` is canonicalised.
    assert_eq!(find(&got, "2001:db8::1", "inbound").len(), 1);
    assert!(stat(&stats, "ignored (not TLS-relevant)") > 0);
    let (got, _) = sendmail_case("sendmail-fail2ban-auth", "tests/data/sendmail/fail2ban-sendmail-auth.log");
    assert!(got.is_empty(), "AUTH failures carry no TLS facts: {got:#?}");
}

#[test]
fn corpus_sendmail_lab_capture() {
    let (got, _) = sendmail_case("sendmail-lab-8.17.1.9", "tests/data/sendmail/lab-8.17.1.9.maillog");
    check_lab_observations(&got);
}

/// What the lab's five messages must produce (see the module doc).
fn check_lab_observations(got: &[Value]) {
    let summary = |o: &Value| {
        (
            o["outcome"].as_str().unwrap_or("").to_owned(),
            o["tls"]["trust"].as_str().unwrap_or("-").to_owned(),
            o["delivered"].clone(),
        )
    };
    let row =
        |outcome: &str, trust: &str, delivered: bool| (outcome.to_owned(), trust.to_owned(), Value::Bool(delivered));
    // Outbound from the relay: two TLS connections to the final daemon (the CA-signed
    // certificate verifies: OK), plaintext to the receiver without STARTTLS, and the failed
    // handshake (tls_server rejects SOFTWARE, so the message is deferred, not sent in clear).
    let to_final: Vec<_> = find(got, "127.0.8.2", "outbound").into_iter().map(summary).collect();
    assert_eq!(to_final, [row("tls", "trusted", true), row("tls", "trusted", true)], "{got:#?}");
    assert_eq!(summary(one(got, "127.0.8.4", "outbound", "sm-mta-relay")), row("plaintext", "-", true));
    // The receiver with a self-signed certificate: TLS, verify=FAIL.
    assert_eq!(summary(one(got, "127.0.8.5", "outbound", "sm-mta-relay")), row("tls", "untrusted", true));
    let broken = one(got, "127.0.8.3", "outbound", "sm-mta-relay");
    assert_eq!(summary(broken), row("handshake-failed", "-", false));
    let reason = broken["failure"]["reason"].as_str().unwrap();
    assert!(reason.contains("connect failed") && reason.contains("TLS handshake failed"), "{reason}");
    // The forty-recipient message: one connection, its to= lines (Sendmail splits the recipient
    // list itself, `[more]`) joined to the STARTTLS line.
    let split = find(got, "127.0.8.2", "outbound").into_iter().max_by_key(|o| o["lines"].as_u64()).unwrap();
    assert!(split["lines"].as_u64().unwrap() >= 3, "{split}");
    // Inbound at the relay, all from swaks on 127.0.0.1: TLS without a client certificate
    // (twice), TLS with the CA-signed client certificate, TLS with a self-signed one (FAIL), and
    // plaintext (proto=ESMTP).
    let mut at_relay: Vec<_> = find(got, "127.0.0.1", "inbound").into_iter().map(summary).collect();
    at_relay.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        at_relay,
        [
            row("plaintext", "-", true),
            row("tls", "anonymous", true),
            row("tls", "anonymous", true),
            row("tls", "trusted", true),
            row("tls", "untrusted", true)
        ]
    );
    // Inbound at the final daemon from the relay, which presents its client certificate.
    let at_final: Vec<_> = find(got, "127.0.8.1", "inbound").into_iter().map(summary).collect();
    assert_eq!(at_final, [row("tls", "trusted", true), row("tls", "trusted", true)]);
    for o in got {
        assert_eq!(o["mta"], "sendmail");
        if o["outcome"] == "tls" {
            assert!(["TLSv1.2", "TLSv1.3"].contains(&o["tls"]["protocol"].as_str().unwrap()), "{o}");
            assert!(o["tls"]["bits"].as_u64().unwrap() >= 128, "{o}");
        }
    }
    assert_eq!(got.len(), 12, "{got:#?}");
}

/// Runs `sendmail-lab.sh COMMAND DIR`.
fn run_lab(command: &str, dir: &Path, port: u16) -> Output {
    Command::new("bash")
        .arg(repo().join("tests/harness/sendmail-lab.sh"))
        .arg(command)
        .arg(dir)
        .env("SENDMAIL_LAB_PORT", port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sendmail-lab.sh: {e}"))
}

fn check_lab(command: &str, dir: &Path, output: &Output) {
    assert!(
        output.status.success(),
        "sendmail-lab.sh {command} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- maillog ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(dir.join("maillog")).unwrap_or_default(),
    );
}

/// A running lab; dropping it stops everything. The folder is removed after a pass only.
struct Lab {
    dir: PathBuf,
    port: u16,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let output = run_lab("down", &self.dir, self.port);
        if !output.status.success() {
            // Dropping during a panic must not panic again.
            eprintln!("sendmail-lab.sh down failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        if !std::thread::panicking() && output.status.success() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn sendmail_lab_real_daemons() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sendmail-lab-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Ports 21700-21799 belong to this lab (relay on an odd offset, receivers on the next port).
    let port = 21_700 + (std::process::id() % 48) as u16 * 2 + 1;
    let lab = Lab { dir: dir.clone(), port };
    check_lab("up", &dir, &run_lab("up", &dir, port));
    check_lab("send", &dir, &run_lab("send", &dir, port));
    let log = dir.join("maillog");
    let output = tlsledger(&["parse", "--stats", log.to_str().unwrap()], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stat(&output.stderr, "malformed message"), 0);
    assert_eq!(stat(&output.stderr, "unparsed header"), 0);
    let got = observations(&output.stdout);
    let context = std::fs::read_to_string(&log).unwrap_or_default();
    let result = std::panic::catch_unwind(|| check_lab_observations(&got));
    if result.is_err() {
        panic!("the lab's observations are wrong; its log:\n{context}");
    }
    drop(lab);
}

/// Real Sendmail lines (from the lab capture and the corpora) for the bad-input tests.
const REAL_LINES: &[&str] = &[
    "Nov 30 19:41:02 sendmail-lab sm-mta-relay[23064]: STARTTLS=client, relay=[127.0.8.2], version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
    "Nov 30 19:41:02 sendmail-lab sm-mta-relay[23057]: 6AUJf2T0023057: from=<sender@client.sendmail-lab.example>, size=245, class=0, nrcpts=1, msgid=<20261130194102.023048@vm>, proto=ESMTPS, daemon=MTA, relay=localhost [127.0.0.1]",
    "Nov 30 19:41:03 sendmail-lab sm-mta-relay[23168]: STARTTLS=client, error: connect failed=-1, reason=wrong version number, SSL_error=1, errno=0, retry=-1",
    "Nov 30 19:41:03 sendmail-lab sm-mta-relay[23168]: ruleset=tls_server, arg1=SOFTWARE, relay=[127.0.8.3], reject=454 4.7.0 TLS handshake failed.",
    "Nov 30 19:41:03 sendmail-lab sm-mta-relay[23168]: 6AUJf2oR023120: to=<carol@[127.0.8.3]>, delay=00:00:00, xdelay=00:00:00, mailer=esmtp, pri=30247, relay=[127.0.8.3] [127.0.8.3], dsn=4.7.0, stat=Deferred: 454 4.7.0 TLS handshake failed.",
    "Mar 29 22:51:46 server sm-mta[50438]: 06QDQnNf050438: example.com [IPv6:2001:DB8::1] did not issue MAIL/EXPN/VRFY/ETRN during connection to IPv6",
    "Nov 30 11:07:01 mx1 sm-mta[3008]: 5AUB08aa003008[1]: from=<list-bounces@bulk.example.org>, size=52344, class=-60, nrcpts=1, ...",
];

#[test]
fn sendmail_bad_input_every_prefix_and_mutations() {
    for line in REAL_LINES {
        for cut in (0..=line.len()).filter(|cut| line.is_char_boundary(*cut)) {
            let mut years = parsers::YearInference::new(2026, 11);
            let _ = parsers::parse_line(&line[..cut], &mut years);
            let _ = parsers::parse_line(&line[cut..], &mut years);
        }
    }
    // Mutations (xorshift64*, fixed seed so failures reproduce), through the whole binary: the
    // correlator must take whatever the grammar lets through.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let alphabet = b"[]<>:=,()/ .-0123456789STARTLS\0\xff\xfe\r\t'\"\\";
    let mut input = Vec::new();
    for _ in 0..20_000 {
        let mut bytes = REAL_LINES[(next() % REAL_LINES.len() as u64) as usize].as_bytes().to_vec();
        for _ in 0..(next() % 6) {
            let at = (next() % (bytes.len() as u64 + 1)) as usize;
            let byte = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut years = parsers::YearInference::new(2026, 11);
        let _ = parsers::parse_line(&text, &mut years);
        bytes.retain(|b| *b != b'\n');
        input.extend_from_slice(&bytes);
        input.push(b'\n');
    }
    let output = tlsledger(&["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(stat(&output.stderr, "lines"), 20_000);
}

#[test]
fn sendmail_hostile_lines_through_the_binary() {
    let mut input: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
    };
    push(REAL_LINES[0].as_bytes());
    // A 1 MB STARTTLS line: skipped and counted.
    let mut huge = b"Nov 30 19:41:02 lab sm-mta[7]: STARTTLS=client, relay=".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    push(&huge);
    // Non-UTF-8 in a relay name: read lossily, still joined to its to= line.
    push(b"Nov 30 19:41:03 lab sm-mta[8]: STARTTLS=server, relay=bad\xff\xfehost [198.51.100.1], version=TLSv1.3, verify=NO, cipher=X, bits=256/256");
    push(b"Nov 30 19:41:03 lab sm-mta[8]: 6AUJf2T0000008: from=<a@b>, size=1, nrcpts=1, proto=ESMTPS, daemon=MTA, relay=bad\xff\xfehost [198.51.100.1]");
    // Truncated, unbalanced and out-of-range fields.
    push(b"Nov 30 19:41:04 lab sm-mta[9]: STARTTLS=client, relay=x, version=TLSv1.3, verify=ok!, cipher=X, bits=99999999999/-1");
    push(b"Nov 30 19:41:04 lab sm-mta[9]: ruleset=tls_server, relay=[[[, reject=");
    push(b"Nov 30 19:41:04 lab sm-mta[9]: AAAAAAAA[99999999999]: to=<x>, stat=Sent ...");
    push(b"Nov 30 19:41:04 lab sm-mta[9]: AAAAAAAA: to=<x>, relay=] [ (may be forged), stat=Sent");
    push(b"Nov 30 19:41:04 lab sm-mta[9]: AAAAAAAA: from=<\0>, proto=\0, relay=\0 [\0]");
    push(b"Nov 30 19:41:04 lab sm-mta[9]: STARTTLS=client, relay=mx., version=TLSv1.3, verify=OK, cipher=X");
    let output = tlsledger(&["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(stat(&output.stderr, "lines"), 10);
    assert_eq!(stat(&output.stderr, "oversized (skipped)"), 1);
    assert_eq!(stat(&output.stderr, "non-utf8 (read lossily)"), 2);
    // `verify=ok!` and a ruleset without arg1 are malformed, not guessed at.
    assert_eq!(stat(&output.stderr, "malformed message"), 2, "{stderr}");
    let got = observations(&output.stdout);
    let bad = got.iter().find(|o| o["peer"]["ip"] == "198.51.100.1").unwrap_or_else(|| panic!("{got:#?}"));
    assert_eq!((bad["outcome"].as_str(), bad["lines"].as_u64()), (Some("tls"), Some(2)));
    assert_eq!(bad["peer"]["hostname"], "bad\u{fffd}\u{fffd}host");
}
