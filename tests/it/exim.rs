//! Exim: golden conformance over the public Exim corpora (tests/data/corpus, provenance in its
//! SOURCES.md) with a count per line class that must add up to every line, and syslog framing
//! with split lines. The real Exim lab (two private daemons on loopback) is in `exim_lab`.

use std::path::Path;

use serde_json::Value;

use crate::common::{corpus, stat, tlsledger};
use crate::corpus::golden;

/// Checks that every line of `file` is explained: our `#` comments and blank lines are the only
/// unparsed headers, no message is malformed, and every other line is in the `lines` of an
/// observation or counted as ignored, local, other program or orphan.
fn all_lines_explained(file: &str, observations: &[Value], stats: &[u8]) {
    let text = std::fs::read_to_string(corpus(file)).unwrap();
    let n_lines = text.lines().count() as u64;
    let n_comments = text.lines().filter(|l| l.starts_with('#') || l.trim().is_empty()).count() as u64;
    assert_eq!(stat(stats, "lines"), n_lines, "{file}");
    assert_eq!(stat(stats, "malformed message"), 0, "{file}");
    let in_observations: u64 = observations.iter().map(|o| o["lines"].as_u64().unwrap()).sum();
    let classes = [
        ("unparsed header", stat(stats, "unparsed header")),
        ("other programs", stat(stats, "other programs")),
        ("ignored (not TLS-relevant)", stat(stats, "ignored (not TLS-relevant)")),
        ("local deliveries", stat(stats, "local deliveries")),
        ("tlsproxy duplicates", stat(stats, "tlsproxy duplicates")),
        ("orphans", stat(stats, "orphans")),
        ("in observations", in_observations),
    ];
    let total: u64 = classes.iter().map(|(_, n)| n).sum();
    assert_eq!(total, n_lines, "{file}: line classes {classes:?} do not add up to {n_lines} lines");
    // Only our provenance comments (and a few upstream lines with no framing at all) are not
    // framed; for the test-suite files, exactly the comments.
    assert!(stat(stats, "unparsed header") >= n_comments, "{file}");
    for observation in observations {
        assert_eq!(observation["mta"], "exim", "{file}: {observation}");
    }
}

fn find(observations: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    observations.iter().filter(|o| pred(o)).collect()
}

#[test]
fn corpus_exim_testsuite_tls() {
    let file = "exim-testsuite-tls.log";
    let (got, stats) = golden("exim-testsuite-tls", &[&format!("tests/data/corpus/{file}")], b"");
    all_lines_explained(file, &got, &stats);
    let text = std::fs::read_to_string(corpus(file)).unwrap();
    let n_comments = text.lines().filter(|l| l.starts_with('#')).count() as u64;
    // One upstream line has no timestamp (a continuation of a multi-line message).
    assert!(stat(&stats, "unparsed header") <= n_comments + 1);
    assert_eq!(stat(&stats, "orphans"), 0);
    // Every class the suite exercises is there.
    for (direction, outcome, trust) in [
        ("outbound", "tls", Some("verified")),
        ("outbound", "tls", Some("trusted")),
        ("outbound", "tls", Some("untrusted")),
        ("inbound", "tls", Some("anonymous")),
        ("inbound", "tls", Some("trusted")),
        ("inbound", "handshake-failed", None),
        ("outbound", "handshake-failed", None),
        ("outbound", "cert-verify-failed", None),
        ("outbound", "tls-required-missing", None),
    ] {
        let hits = find(&got, |o| {
            o["direction"] == direction && o["outcome"] == outcome && trust.is_none_or(|t| o["tls"]["trust"] == t)
        });
        assert!(!hits.is_empty(), "no {direction} {outcome} {trust:?}");
    }
    // `X=TLS1.x:…` is normalised to the OpenSSL spelling; the suite's `xxx` bits are unknown.
    let tls = find(&got, |o| o["outcome"] == "tls" && o["tls"]["protocol"].is_string());
    assert!(tls.iter().all(|o| o["tls"]["protocol"] == "TLSv1.x"));
    for o in &tls {
        let normalised = o["tls"]["cipher"].as_str().unwrap().ends_with("nnn");
        assert_eq!(o["tls"]["bits"].is_null(), normalised, "{o}");
    }
    // `P=esmtps` without `X=` is TLS with unknown parameters.
    assert!(got.iter().any(|o| o["outcome"] == "tls" && o["tls"]["protocol"].is_null()));
    // `defer (-38) … did not offer TLS support` is a missing STARTTLS under a TLS requirement.
    let required = find(&got, |o| o["outcome"] == "tls-required-missing");
    assert!(required.iter().any(|o| o["failure"]["kind"] == "starttls-not-supported"), "{required:#?}");
    // A DANE failure joins the deferral of the same attempt.
    let dane = find(&got, |o| o["failure"]["kind"] == "tlsa-invalid");
    assert!(dane.iter().all(|o| o["lines"].as_u64() >= Some(2)), "{dane:#?}");
    // The plaintext retry after `delivering unencrypted` is not in this file (no TLS fields).
    assert!(got.iter().all(|o| o["after_tls_failure"] == false));
}

#[test]
fn corpus_exim_testsuite_delivery() {
    let file = "exim-testsuite-delivery.log";
    let (got, stats) = golden("exim-testsuite-delivery", &[&format!("tests/data/corpus/{file}")], b"");
    all_lines_explained(file, &got, &stats);
    // No line of this file carries TLS, and with `--tls-logging auto` an instance that never
    // logged `X=` cannot prove outbound plaintext; `P=esmtp` proves inbound plaintext.
    assert_eq!(stat(&stats, "tls"), 0);
    assert!(find(&got, |o| o["direction"] == "outbound").iter().all(|o| o["outcome"] == "unknown"));
    let inbound = find(&got, |o| o["direction"] == "inbound");
    assert!(inbound.iter().all(|o| o["outcome"] == "plaintext"), "{inbound:#?}");
    assert!(inbound.len() > 100);
    // Told that TLS logging is on, the delivered ones become plaintext.
    let output = tlsledger(
        &[
            "parse",
            "--reference-time",
            "2026-11-30T00:00:00Z",
            "--log-zone",
            "utc",
            "--tls-logging",
            "on",
            &format!("tests/data/corpus/{file}"),
        ],
        b"",
    );
    let on = crate::common::observations(&output.stdout);
    let delivered_out = find(&on, |o| o["direction"] == "outbound" && o["delivered"] == true);
    assert!(!delivered_out.is_empty());
    assert!(delivered_out.iter().all(|o| o["outcome"] == "plaintext"));
    // A deferral before the session got going (`Connection refused`, `SMTP timeout after initial
    // connection`) stays unknown even then.
    let timeouts = find(&on, |o| o["direction"] == "outbound" && o["delivered"] == false);
    assert!(timeouts.iter().any(|o| o["outcome"] == "unknown"));
}

#[test]
fn corpus_exim_real_world() {
    for (case, file) in [
        ("fail2ban-exim", "fail2ban-exim.log"),
        ("fail2ban-exim-spam", "fail2ban-exim-spam.log"),
        ("logstash-patterns-core-exim", "logstash-patterns-core-exim.log"),
    ] {
        let (got, stats) = golden(case, &[&format!("tests/data/corpus/{file}")], b"");
        all_lines_explained(file, &got, &stats);
        if case == "logstash-patterns-core-exim" {
            // Exim ≤ 4.92 wrote `X=TLSv1:AES256-SHA:256 CV=no`.
            let old = find(&got, |o| o["peer"]["ip"] == "208.42.54.2");
            assert_eq!(old.len(), 1);
            assert_eq!(old[0]["direction"], "inbound");
            assert_eq!(old[0]["outcome"], "tls");
            assert_eq!(old[0]["tls"]["protocol"], "TLSv1");
            assert_eq!(old[0]["tls"]["cipher"], "AES256-SHA");
            assert_eq!(old[0]["tls"]["bits"], 256);
            // Inbound `CV=no` without `DN=` cannot tell a failed client certificate from none.
            assert_eq!(old[0]["tls"]["trust"], "anonymous");
            assert_eq!(old[0]["peer"]["port"], 51792);
            assert_eq!(old[0]["queue_ids"][0], "1Ov4tU-0000Nz-Rm");
            // `P=esmtpa` without `X=`: authenticated, in plaintext.
            let plain = find(&got, |o| o["outcome"] == "plaintext");
            assert_eq!(plain.len(), 2, "{plain:#?}");
        }
    }
}

/// Exim through syslog: the repeated Exim timestamp, `[1/2]` pieces rejoined into one line,
/// IPv6, the 4.100 key-exchange group and a resumed session, the new message-id length.
#[test]
fn syslog_framing_and_split_lines() {
    let input = "\
Nov  3 13:35:12 mx1 exim[12345]: [1/2] 2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => bob@example.net R=dnslookup T=remote_smtp H=mx.exa
Nov  3 13:35:12 mx1 exim[777]: 2024-11-03 13:35:12 1tAbCe-000000003Xy-Zq1w <= alice@example.org H=mail.example.org (helo.example.org) [2001:db8::25]:40000 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256:X25519* SNI=mx1.example.net S=1234
Nov  3 13:35:13 mx1 exim[12345]: [2/2] mple.net [192.0.2.25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 2.0.0 Ok\"
Nov  3 13:35:14 mx1 exim4[12346]: 2024-11-03 13:35:14 1tAbCf-000000003Xy-Zq1w => carol@example.com R=dnslookup T=remote_smtp H=mx.example.com [192.0.2.26] C=\"250 ok\"
";
    let output = tlsledger(
        &[
            "parse",
            "--stats",
            "--reference-time",
            "2024-11-30T00:00:00Z",
            "--log-zone",
            "utc",
            "--tls-logging",
            "on",
            "-",
        ],
        input.as_bytes(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let got = crate::common::observations(&output.stdout);
    assert_eq!(got.len(), 3, "{got:#?}");
    let joined = find(&got, |o| o["peer"]["ip"] == "192.0.2.25");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["lines"], 2);
    assert_eq!(joined[0]["peer"]["hostname"], "mx.example.net");
    assert_eq!(joined[0]["peer"]["port"], 25);
    assert_eq!(joined[0]["tls"]["trust"], "verified");
    assert_eq!(joined[0]["domains"][0], "example.net");
    assert_eq!(joined[0]["reporter"], "mx1");
    assert_eq!(joined[0]["instance"], "exim");
    let inbound = find(&got, |o| o["direction"] == "inbound");
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["peer"]["ip"], "2001:db8::25");
    assert_eq!(inbound[0]["tls"]["key_exchange"], "X25519");
    assert_eq!(inbound[0]["tls"]["sni"], "mx1.example.net");
    assert_eq!(inbound[0]["tls"]["trust"], "anonymous");
    let plain = find(&got, |o| o["peer"]["ip"] == "192.0.2.26");
    assert_eq!(plain[0]["outcome"], "plaintext");
    assert_eq!(plain[0]["instance"], "exim4");
    assert_eq!(stat(&output.stderr, "orphans"), 0);
}

/// The same line gets the same event id on every run, and different lines different ones.
#[test]
fn event_ids_are_stable() {
    let args = [
        "parse",
        "--reference-time",
        "2026-11-30T00:00:00Z",
        "--log-zone",
        "utc",
        "tests/data/corpus/exim-testsuite-tls.log",
    ];
    let first = crate::common::observations(&tlsledger(&args, b"").stdout);
    let second = crate::common::observations(&tlsledger(&args, b"").stdout);
    let ids = |o: &[Value]| o.iter().map(|o| o["event_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second));
    let mut unique = ids(&first);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "duplicate event ids");
}

/// Hostile Exim input through the binary: mutated real lines, a 1 MB line, non-UTF-8 bytes,
/// split-line bombs and absurd piece numbers never crash it and every line is still counted.
#[test]
fn hostile_exim_lines_through_the_binary() {
    let real = [
        "2024-11-03 13:35:12.123 +0100 [4711] 1tAbCd-000000003Xy-Zq1w => bob@example.net R=dnslookup T=remote_smtp H=mx.example.net [192.0.2.25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256:X25519* CV=yes DN=\"CN=mx.example.net\" C=\"250 2.0.0 Ok\"",
        "2024-11-03 13:35:12 1Ov4tU-0000Nz-Rm <= a@b H=mail.example.org (helo) [2001:db8::25]:40000 I=[192.0.2.1]:25 P=esmtps X=TLSv1:AES256-SHA:256 CV=no S=1",
        "2024-11-03 13:35:12 1Ov4tU-0000Nz-Rm == a@b R=r T=t defer (-37) H=h [192.0.2.9]: TLS session: (SSL_connect): error",
        "2024-11-03 13:35:12 TLS error on connection from (helo) [192.0.2.7]:4000 (SSL_accept): error: x",
        "Nov  3 13:35:12 mx1 exim[1]: [1/2] 2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => b@x R=r T=t H=mx.exa",
        "Nov  3 13:35:12 mx1 exim[1]: [2/2] mple.net [192.0.2.25] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let alphabet = b"[]<>:=,()/ .-*0123456789abcHXCV\"\\\0\xff\r";
    let mut input: Vec<u8> = Vec::new();
    let mut n_lines = 0u64;
    let mut push = |line: &[u8], input: &mut Vec<u8>| {
        input.extend_from_slice(line);
        input.push(b'\n');
        n_lines += 1;
    };
    for _ in 0..5_000 {
        let mut bytes = real[(next() % real.len() as u64) as usize].as_bytes().to_vec();
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
        push(&bytes, &mut input);
    }
    let mut huge = b"2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => a@b H=h [192.0.2.1] X=".to_vec();
    huge.extend(std::iter::repeat_n(b'X', 1 << 20));
    push(&huge, &mut input);
    push(
        b"2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w <= a@\xff\xfe H=(\xff) [192.0.2.2] P=esmtps X=TLS1.2:A:1 S=1",
        &mut input,
    );
    for part in 1..=64u32 {
        push(format!("Nov  3 13:35:13 mx1 exim[2]: [{part}/65] {}", "y".repeat(2000)).as_bytes(), &mut input);
    }
    push(b"Nov  3 13:35:14 mx1 exim[3]: [1/65535] x", &mut input);
    push(b"Nov  3 13:35:14 mx1 exim[3]: [0/0] x", &mut input);
    push(b"Nov  3 13:35:14 mx1 exim[3]: [99999999999/1] x", &mut input);
    let output = tlsledger(
        &["parse", "--stats", "--reference-time", "2024-11-30T00:00:00Z", "--log-zone", "utc", "--max-open", "16"],
        &input,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stat(&output.stderr, "lines"), n_lines);
    assert_eq!(stat(&output.stderr, "oversized (skipped)"), 1);
    assert!(stat(&output.stderr, "non-utf8 (read lossily)") >= 1);
    let got = crate::common::observations(&output.stdout);
    let in_observations: u64 = got.iter().map(|o| o["lines"].as_u64().unwrap()).sum();
    let counted: u64 = [
        "unparsed header",
        "malformed message",
        "other programs",
        "ignored (not TLS-relevant)",
        "local deliveries",
        "tlsproxy duplicates",
        "orphans",
        "oversized (skipped)",
    ]
    .iter()
    .map(|label| stat(&output.stderr, label))
    .sum();
    assert_eq!(counted + in_observations, n_lines, "{stderr}");
    // The 64 pieces of a 65-piece line never completed: orphans, not an observation.
    assert!(stat(&output.stderr, "orphans") >= 64, "{stderr}");
    assert!(got.iter().any(|o| o["peer"]["ip"] == "192.0.2.2" && o["outcome"] == "tls"));
}

/// `tlsledger ingest --follow` on a growing Exim main log, killed with SIGKILL in the middle and
/// restarted, emits exactly the observations of one uninterrupted run: the Exim state's
/// low-water mark and open processes cover what is still open (`=>` lines waiting for `->`,
/// verification lines waiting for their delivery, plaintext-retry markers).
#[test]
fn ingest_follow_of_an_exim_log_survives_sigkill() {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("tlsledger-it-exim-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(corpus("exim-testsuite-tls.log")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let third = lines.len() / 3;
    let log = dir.join("mainlog");
    let append = |part: &[&str]| {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        for line in part {
            writeln!(file, "{line}").unwrap();
        }
    };
    let ingest = |args: &[&str], stdout: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tlsledger"))
            .arg("ingest")
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ids = |path: &Path| -> Vec<String> {
        crate::common::observations(&std::fs::read(path).unwrap())
            .iter()
            .map(|o| o["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let log_arg = log.to_str().unwrap();
    let common = ["--follow", log_arg, "--stdout", "--poll-ms", "20", "--log-zone", "utc"];

    append(&lines);
    let reference_out = dir.join("reference.jsonl");
    let reference_state = dir.join("reference-state");
    let run = ingest(
        &[&common[..], &["--state", reference_state.to_str().unwrap(), "--exit-at-end"]].concat(),
        &reference_out,
    );
    let output = run.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reference: BTreeSet<String> = ids(&reference_out).into_iter().collect();
    assert!(reference.len() > 700, "{} observations", reference.len());

    std::fs::remove_file(&log).unwrap();
    append(&lines[..third]);
    let state = dir.join("state");
    let first_out = dir.join("first.jsonl");
    let args = [&common[..], &["--state", state.to_str().unwrap()]].concat();
    let mut first = ingest(&[&args[..], &["--checkpoint-interval-ms", "50"]].concat(), &first_out);
    wait_for("a first checkpoint", &|| state.join("checkpoints.json").exists());
    append(&lines[third..2 * third]);
    let size = std::fs::metadata(&first_out).unwrap().len();
    wait_for("observations of the second part", &|| std::fs::metadata(&first_out).unwrap().len() > size);
    first.kill().unwrap();
    first.wait().unwrap();
    append(&lines[2 * third..]);
    let second_out = dir.join("second.jsonl");
    let second = ingest(&[&args[..], &["--exit-at-end"]].concat(), &second_out);
    let output = second.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let mut seen: BTreeSet<String> = BTreeSet::new();
    seen.extend(ids(&first_out));
    seen.extend(ids(&second_out));
    let lost: Vec<_> = reference.difference(&seen).take(5).collect();
    let fragments: Vec<_> = seen.difference(&reference).take(5).collect();
    assert!(lost.is_empty(), "lost observations, e.g. {lost:?}");
    assert!(fragments.is_empty(), "observations the uninterrupted run does not have, e.g. {fragments:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real Exim lab: two private Exim 4.96 daemons (Debian's `exim4-daemon-light`, unpacked by
/// tests/run.sh) on loopback with a private CA, and a listener that breaks STARTTLS.
pub(crate) mod lab {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    /// Ports 26201-26206 (no other test uses them); every endpoint has its own address.
    const SENDER: (&str, u16) = ("127.0.8.1", 26201);
    const VALID: (&str, u16) = ("127.0.8.2", 26202);
    const SELF_SIGNED: (&str, u16) = ("127.0.8.3", 26203);
    const NO_STARTTLS: (&str, u16) = ("127.0.8.4", 26204);
    const EXPIRED: (&str, u16) = ("127.0.8.5", 26205);
    const BROKEN: (&str, u16) = ("127.0.8.6", 26206);
    /// swaks connects from here, so the sender's inbound sessions have their own peer.
    const CLIENT: &str = "127.0.8.9";

    pub(crate) fn exim() -> PathBuf {
        let exim = crate::common::repo().join(".ci-work/pkgs/exim4-daemon-light/usr/sbin/exim4");
        assert!(
            exim.exists(),
            "{} missing: run tests/run.sh (tests/harness/install-deps.sh exim; tests/harness/unpack.sh exim4-daemon-light .ci-work/pkgs/exim4-daemon-light)",
            exim.display()
        );
        exim
    }

    pub(crate) fn run(program: &str, args: &[&str], cwd: &Path) {
        let output = Command::new(program).args(args).current_dir(cwd).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A private CA, a valid certificate for mx.ca.test, an expired one, and a self-signed one.
    fn make_ca(ca: &Path) {
        std::fs::create_dir_all(ca.join("newcerts")).unwrap();
        std::fs::write(ca.join("index.txt"), "").unwrap();
        std::fs::write(ca.join("serial"), "1000\n").unwrap();
        std::fs::write(
            ca.join("ca.cnf"),
            format!(
                "[ ca ]\ndefault_ca = lab_ca\n[ lab_ca ]\ndir = {}\ndatabase = $dir/index.txt\n\
                 new_certs_dir = $dir/newcerts\nserial = $dir/serial\ndefault_md = sha256\npolicy = policy_any\n\
                 unique_subject = no\ncopy_extensions = none\n[ policy_any ]\ncommonName = supplied\n\
                 [ server_ext ]\nbasicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n\
                 subjectAltName = DNS:mx.ca.test\n",
                ca.display()
            ),
        )
        .unwrap();
        let date = |offset: &str| {
            let out = Command::new("date").args(["-u", "-d", offset, "+%Y%m%d%H%M%SZ"]).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let (start, end) = (date("-2 years"), date("-1 year"));
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=tlsledger Exim lab CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            vec![
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "mx.key",
                "-out",
                "mx.csr",
                "-subj",
                "/CN=mx.ca.test",
            ],
            vec![
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-extensions",
                "server_ext",
                "-cert",
                "ca.crt",
                "-keyfile",
                "ca.key",
                "-in",
                "mx.csr",
                "-out",
                "mx.crt",
                "-days",
                "3650",
                "-notext",
            ],
            vec![
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "expired.key",
                "-out",
                "expired.csr",
                "-subj",
                "/CN=mx.ca.test",
            ],
            vec![
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-extensions",
                "server_ext",
                "-cert",
                "ca.crt",
                "-keyfile",
                "ca.key",
                "-in",
                "expired.csr",
                "-out",
                "expired.crt",
                "-notext",
                "-startdate",
                &start,
                "-enddate",
                &end,
            ],
            vec![
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "selfsigned.key",
                "-out",
                "selfsigned.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=mx.selfsigned.test",
            ],
        ];
        for args in steps {
            run("openssl", &args, ca);
        }
        // The delivery processes run as Debian-exim: keys readable by its group only.
        run("chgrp", &["Debian-exim", "mx.key", "expired.key", "selfsigned.key"], ca);
        run("chmod", &["0640", "mx.key", "expired.key", "selfsigned.key"], ca);
    }

    /// The common part of both configurations.
    pub(crate) fn main_section(name: &str, dir: &Path, exim: &Path, interfaces: &[(&str, u16)]) -> String {
        let interfaces: Vec<String> = interfaces.iter().map(|(addr, port)| format!("{addr}.{port}")).collect();
        format!(
            "primary_hostname = {name}\n\
             keep_environment =\n\
             exim_path = {exim}\n\
             spool_directory = {dir}/spool\n\
             log_file_path = {dir}/log/%slog\n\
             pid_file_path = {dir}/exim.pid\n\
             local_interfaces = <; {interfaces}\n\
             acl_smtp_rcpt = acl_rcpt\n",
            exim = exim.display(),
            dir = dir.display(),
            interfaces = interfaces.join(" ; ")
        )
    }

    /// The receiver: one daemon, one listener per case; the certificate and the STARTTLS offer
    /// depend on the port. Logs with `+pid +millisec` and a time zone, `DN=` and `SNI=`.
    fn receiver_config(dir: &Path, ca: &Path, exim: &Path) -> String {
        let cert = |ext: &str| {
            format!(
                "${{if eq{{$received_port}}{{{}}}{{{ca}/selfsigned.{ext}}}{{${{if eq{{$received_port}}{{{}}}{{{ca}/expired.{ext}}}{{{ca}/mx.{ext}}}}}}}}}",
                SELF_SIGNED.1,
                EXPIRED.1,
                ca = ca.display()
            )
        };
        format!(
            "{main}tls_certificate = {crt}\ntls_privatekey = {key}\n\
             tls_advertise_hosts = ${{if eq{{$received_port}}{{{plain}}}{{}}{{*}}}}\n\
             log_selector = +pid +millisec +tls_peerdn +tls_sni +incoming_port +outgoing_port\n\
             log_timezone = true\n\
             begin acl\nacl_rcpt:\n  accept\n\
             begin routers\nblackhole:\n  driver = redirect\n  data = :blackhole:\n",
            main = main_section("rx.lab.test", dir, exim, &[VALID, SELF_SIGNED, NO_STARTTLS, EXPIRED]),
            crt = cert("crt"),
            key = cert("key"),
            plain = NO_STARTTLS.1,
        )
    }

    /// The sender: accepts mail from swaks (STARTTLS) and routes each test domain to its case
    /// through its own smtp transport. Default log selectors plus `DN=` and the outgoing port.
    fn sender_config(dir: &Path, ca: &Path, exim: &Path) -> String {
        let ca = ca.display();
        let mut text = format!(
            "{main}tls_certificate = {ca}/mx.crt\ntls_privatekey = {ca}/mx.key\ntls_advertise_hosts = *\n\
             log_selector = +tls_peerdn +outgoing_port\n\
             begin acl\nacl_rcpt:\n  accept\nbegin routers\n",
            main = main_section("tx.lab.test", dir, exim, &[SENDER]),
        );
        let cases: [(&str, (&str, u16), &str); 6] = [
            // Verified against the CA, required; SNI sent.
            ("valid", VALID, "tls_verify_certificates = {ca}/ca.crt\n  tls_verify_hosts = *\n  tls_verify_cert_hostnames =\n  tls_sni = mx.ca.test\n  hosts_require_tls = *\n"),
            // Verification tried, failure tolerated: CV=no.
            ("selfsigned", SELF_SIGNED, "tls_verify_certificates = {ca}/ca.crt\n  tls_try_verify_hosts = *\n  tls_verify_cert_hostnames =\n"),
            ("plain", NO_STARTTLS, ""),
            ("required", NO_STARTTLS, "hosts_require_tls = *\n"),
            ("expired", EXPIRED, "tls_verify_certificates = {ca}/ca.crt\n  tls_verify_hosts = *\n  tls_verify_cert_hostnames =\n  hosts_require_tls = *\n"),
            ("broken", BROKEN, ""),
        ];
        for (name, (addr, _), _) in cases {
            text.push_str(&format!(
                "{name}:\n  driver = manualroute\n  domains = {name}.test\n  route_list = * {addr}\n  transport = t_{name}\n  self = send\n"
            ));
        }
        text.push_str("begin transports\n");
        for (name, (_, port), options) in cases {
            text.push_str(&format!(
                "t_{name}:\n  driver = smtp\n  port = {port}\n  interface = {}\n  allow_localhost\n  {}",
                SENDER.0,
                options.replace("{ca}", &ca.to_string())
            ));
        }
        // No retry rules: a deferral is final at once (bounced, `Completed`), so the queue empties.
        text
    }

    /// A running Exim daemon, stopped (by its pid) when dropped.
    pub(crate) struct Daemon {
        child: std::process::Child,
    }

    impl Daemon {
        pub(crate) fn start(exim: &Path, config: &Path, mainlog: &Path) -> Daemon {
            let child = Command::new(exim)
                .arg("-C")
                .arg(config)
                .arg("-bdf")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let daemon = Daemon { child };
            wait_for(mainlog, |log| log.contains("daemon started"), "daemon start");
            daemon
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Polls `path` until `done` holds for its text, for at most 60 s.
    pub(crate) fn wait_for(path: &Path, done: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} in {}:\n{text}", path.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A server that offers STARTTLS, answers `220` and then sends plain text instead of a TLS
    /// handshake; a session without STARTTLS (Exim's retry in clear) is accepted normally.
    fn broken_starttls(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        broken_starttls_at(BROKEN, stop)
    }

    /// [`broken_starttls`] on `listen`.
    pub(crate) fn broken_starttls_at(listen: (&str, u16), stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let listener = TcpListener::bind(listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve_broken(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    }

    fn serve_broken(mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        stream.write_all(b"220 broken.lab.test ESMTP\r\n")?;
        let mut in_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    stream.write_all(b"250 OK queued\r\n")?;
                }
                continue;
            }
            let command = line.trim_end().to_ascii_uppercase();
            if command.starts_with("EHLO") {
                stream.write_all(b"250-broken.lab.test\r\n250-STARTTLS\r\n250 HELP\r\n")?;
            } else if command == "STARTTLS" {
                stream.write_all(b"220 go ahead\r\nthis is not a TLS handshake\r\n")?;
                return Ok(());
            } else if command == "DATA" {
                in_data = true;
                stream.write_all(b"354 go ahead\r\n")?;
            } else if command == "QUIT" {
                return stream.write_all(b"221 bye\r\n");
            } else {
                stream.write_all(b"250 OK\r\n")?;
            }
        }
    }

    fn parse(mainlog: &Path) -> Vec<Value> {
        let output = crate::common::tlsledger(&["parse", "--stats", &mainlog.display().to_string()], b"");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(crate::common::stat(&output.stderr, "malformed message"), 0);
        crate::common::observations(&output.stdout)
    }

    fn one<'a>(observations: &'a [Value], ip: &str, direction: &str) -> &'a Value {
        let hits: Vec<&Value> =
            observations.iter().filter(|o| o["peer"]["ip"] == ip && o["direction"] == direction).collect();
        assert_eq!(hits.len(), 1, "{direction} {ip}: {hits:#?}");
        hits[0]
    }

    #[test]
    fn exim_sender_and_receiver_over_every_tls_case() {
        let exim = exim();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("exim-lab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (ca, tx, rx) = (dir.join("ca"), dir.join("tx"), dir.join("rx"));
        make_ca(&ca);
        for side in [&tx, &rx] {
            std::fs::create_dir_all(side.join("spool")).unwrap();
            std::fs::create_dir_all(side.join("log")).unwrap();
            // Exim writes its spool and logs as Debian-exim; the configuration stays root's.
            run("chown", &["-R", "Debian-exim:Debian-exim", "spool", "log"], side);
        }
        std::fs::write(tx.join("exim.conf"), sender_config(&tx, &ca, &exim)).unwrap();
        std::fs::write(rx.join("exim.conf"), receiver_config(&rx, &ca, &exim)).unwrap();
        let (tx_log, rx_log) = (tx.join("log/mainlog"), rx.join("log/mainlog"));
        let stop = Arc::new(AtomicBool::new(false));
        let broken = broken_starttls(stop.clone());
        let receiver = Daemon::start(&exim, &rx.join("exim.conf"), &rx_log);
        let sender = Daemon::start(&exim, &tx.join("exim.conf"), &tx_log);

        let domains = ["valid", "selfsigned", "plain", "required", "expired", "broken"];
        for domain in domains {
            let output = Command::new("swaks")
                .args(["--server", SENDER.0, "--port", &SENDER.1.to_string(), "--local-interface", CLIENT])
                .args(["--from", "alice@tx.lab.test", "--to", &format!("bob@{domain}.test"), "--tls"])
                .args(["--timeout", "30"])
                .output()
                .unwrap();
            assert!(output.status.success(), "swaks to {domain}: {}", String::from_utf8_lossy(&output.stdout));
        }
        // Every message ends with `Completed` (deliveries, and deferrals bounced at once).
        let log = wait_for(
            &tx_log,
            |log| {
                log.lines().filter(|l| l.contains(" <= alice@tx.lab.test ")).count() == domains.len()
                    && log.lines().filter(|l| l.contains(" <= alice@")).all(|arrival| {
                        let id = arrival.split(' ').nth(2).unwrap_or("-");
                        log.lines().any(|l| l.contains(&format!("{id} Completed")))
                    })
            },
            "every message completed",
        );
        wait_for(
            &rx_log,
            |log| log.matches(" <= alice@tx.lab.test ").count() == 3 && log.contains("TLS error on connection from"),
            "three arrivals and one rejected certificate at the receiver",
        );
        stop.store(true, Ordering::Relaxed);
        broken.join().unwrap();
        drop(sender);
        drop(receiver);

        // The sender's log: what it delivered.
        let out = parse(&tx_log);
        let valid = one(&out, VALID.0, "outbound");
        assert_eq!(valid["mta"], "exim");
        assert_eq!(valid["outcome"], "tls", "{valid}");
        assert_eq!(valid["tls"]["trust"], "trusted");
        assert_eq!(valid["tls"]["protocol"], "TLSv1.3");
        assert_eq!(valid["peer"]["port"], VALID.1);
        assert_eq!(valid["delivered"], true);
        assert_eq!(valid["domains"][0], "valid.test");
        let selfsigned = one(&out, SELF_SIGNED.0, "outbound");
        assert_eq!((&selfsigned["outcome"], &selfsigned["tls"]["trust"]), (&"tls".into(), &"untrusted".into()));
        assert!(selfsigned["tls"]["cipher"].as_str().unwrap().contains("ECDSA"), "{selfsigned}");
        let no_starttls: Vec<&Value> =
            out.iter().filter(|o| o["peer"]["ip"] == NO_STARTTLS.0 && o["direction"] == "outbound").collect();
        assert_eq!(no_starttls.len(), 2, "{no_starttls:#?}");
        let plain = no_starttls.iter().find(|o| o["domains"][0] == "plain.test").unwrap();
        assert_eq!((&plain["outcome"], &plain["delivered"]), (&"plaintext".into(), &true.into()), "{plain}");
        let required = no_starttls.iter().find(|o| o["outcome"] != "plaintext").unwrap();
        assert_eq!(required["outcome"], "tls-required-missing", "{required}");
        assert_eq!(required["failure"]["kind"], "starttls-not-supported");
        assert_eq!(required["delivered"], false);
        let expired = one(&out, EXPIRED.0, "outbound");
        assert_eq!(expired["outcome"], "cert-verify-failed", "{expired}");
        assert!(expired["failure"]["reason"].as_str().unwrap().contains("certificate verification failed"));
        let broken: Vec<&Value> =
            out.iter().filter(|o| o["peer"]["ip"] == BROKEN.0 && o["direction"] == "outbound").collect();
        assert_eq!(broken.len(), 2, "{broken:#?}");
        let failed = broken.iter().find(|o| o["outcome"] == "handshake-failed").expect("handshake-failed");
        let retry = broken.iter().find(|o| o["outcome"] == "plaintext").expect("plaintext retry");
        assert_eq!(failed["after_tls_failure"], false);
        assert_eq!((&retry["after_tls_failure"], &retry["delivered"]), (&true.into(), &true.into()), "{retry}");
        assert_ne!(failed["event_id"], retry["event_id"]);
        // What swaks sent it: six sessions with STARTTLS, the client sent no certificate.
        let inbound: Vec<&Value> = out.iter().filter(|o| o["direction"] == "inbound").collect();
        assert_eq!(inbound.len(), domains.len());
        assert!(inbound.iter().all(|o| o["peer"]["ip"] == CLIENT && o["outcome"] == "tls"));
        assert!(inbound.iter().all(|o| o["tls"]["trust"] == "anonymous"), "{inbound:#?}");
        // Every line of the log is accounted for (no malformed message, checked in `parse`).
        assert!(log.lines().count() >= out.len());

        // The receiver's log (`+pid +millisec`, time zone): what it received from the sender.
        let got = parse(&rx_log);
        let from_sender: Vec<&Value> = got.iter().filter(|o| o["peer"]["ip"] == SENDER.0).collect();
        assert_eq!(from_sender.len(), 4, "{got:#?}");
        assert!(from_sender.iter().all(|o| o["direction"] == "inbound"));
        let sni: Vec<&&Value> = from_sender.iter().filter(|o| o["tls"]["sni"] == "mx.ca.test").collect();
        assert_eq!(sni.len(), 1, "{from_sender:#?}");
        assert_eq!((&sni[0]["outcome"], &sni[0]["delivered"]), (&"tls".into(), &true.into()));
        assert_eq!(from_sender.iter().filter(|o| o["outcome"] == "tls").count(), 2);
        assert_eq!(from_sender.iter().filter(|o| o["outcome"] == "plaintext").count(), 1);
        // The sender rejected the expired certificate: a TLS 1.3 alert at the receiver's first read.
        let rejected: Vec<&&Value> = from_sender.iter().filter(|o| o["outcome"] == "handshake-failed").collect();
        assert_eq!(rejected.len(), 1, "{from_sender:#?}");
        assert!(rejected[0]["failure"]["reason"].as_str().unwrap().contains("Certificate is bad"));
        assert!(rejected[0]["peer"]["port"].is_u64());
        // Its pid is on every line, its time zone is UTC: the time matches the sender's.
        assert!(from_sender.iter().all(|o| o["reporter"] == "" && o["instance"] == "exim"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
