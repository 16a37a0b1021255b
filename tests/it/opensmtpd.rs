//! OpenSMTPD: golden conformance over tests/data/opensmtpd (see its SOURCES.md), the mixed-MTA
//! stream, and the real daemon (Debian 12's 6.8.0p2, unpacked privately) logging through a
//! `/dev/log` socket that `tlsledger ingest --syslog-unix` reads.
//!
//! Golden files live in tests/data/opensmtpd/golden; regenerate them after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test it opensmtpd` and review the diff.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{corpus_lines, observations, repo, stat, tlsledger};

/// Fixed clock and zone so the output does not depend on the machine.
const ARGS: &[&str] = &["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z", "--log-zone", "utc"];

/// Runs `tlsledger parse` over `stdin` and checks stdout and the `--stats` report against
/// tests/data/opensmtpd/golden/<case>.{jsonl,stats}; returns (observations, stderr).
fn golden(case: &str, stdin: &[u8]) -> (Vec<Value>, Vec<u8>) {
    let output = tlsledger(ARGS, stdin);
    assert!(output.status.success(), "{case}: {}", String::from_utf8_lossy(&output.stderr));
    let dir = repo().join("tests/data/opensmtpd/golden");
    let jsonl = dir.join(format!("{case}.jsonl"));
    let stats = dir.join(format!("{case}.stats"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&jsonl, &output.stdout).unwrap();
        std::fs::write(&stats, &output.stderr).unwrap();
    }
    let want_jsonl =
        std::fs::read(&jsonl).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", jsonl.display()));
    let want_stats =
        std::fs::read(&stats).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", stats.display()));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&want_jsonl),
        "{case}: output differs from {} (UPDATE_GOLDEN=1 if intended)",
        jsonl.display()
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&want_stats), "{case}: stats differ");
    (observations(&output.stdout), output.stderr)
}

/// The lines of a data file without `#` comments, joined as one input.
fn data(name: &str) -> Vec<u8> {
    let mut text = corpus_lines(&repo().join("tests/data/opensmtpd").join(name)).join("\n");
    text.push('\n');
    text.into_bytes()
}

/// Every line is accounted for: no header or grammar failure, no line of an unknown program.
fn assert_all_explained(case: &str, stats: &[u8]) {
    for counter in ["unparsed header", "malformed message", "other programs"] {
        assert_eq!(stat(stats, counter), 0, "{case}: {counter}\n{}", String::from_utf8_lossy(stats));
    }
}

/// `(direction, outcome, trust, failure kind)` of the observations of `ip`, in output order.
fn outcomes<'a>(got: &'a [Value], ip: &str) -> Vec<(&'a str, &'a str, Option<&'a str>, Option<&'a str>)> {
    got.iter()
        .filter(|o| o["peer"]["ip"] == ip)
        .map(|o| {
            (
                o["direction"].as_str().unwrap_or(""),
                o["outcome"].as_str().unwrap_or(""),
                o["tls"]["trust"].as_str(),
                o["failure"]["kind"].as_str(),
            )
        })
        .collect()
}

#[test]
fn opensmtpd_format_catalogue_golden() {
    let (got, stats) = golden("formats", &data("formats.log"));
    assert_all_explained("formats", &stats);
    assert_eq!(stat(&stats, "orphans"), 0);
    assert!(got.iter().all(|o| o["mta"] == "opensmtpd" && o["instance"] == "smtpd"), "{got:#?}");
    // One fact per historic format and per verdict (FORMATS.md §5).
    let want = [
        ("192.0.2.10", ("inbound", "tls", Some("untrusted"), None)),
        ("2001:db8::25", ("inbound", "tls", Some("anonymous"), None)),
        ("192.0.2.11", ("inbound", "handshake-failed", None, Some("validation-failure"))),
        ("192.0.2.12", ("inbound", "plaintext", None, None)),
        ("198.51.100.25", ("outbound", "tls", Some("untrusted"), None)),
        ("198.51.100.26", ("outbound", "tls", Some("verified"), None)),
        ("198.51.100.27", ("outbound", "tls", Some("anonymous"), None)),
        ("198.51.100.28", ("outbound", "tls-required-missing", None, Some("starttls-not-supported"))),
        ("198.51.100.29", ("outbound", "handshake-failed", None, Some("validation-failure"))),
        ("198.51.100.30", ("outbound", "handshake-failed", None, Some("validation-failure"))),
        ("198.51.100.31", ("outbound", "cert-verify-failed", Some("untrusted"), Some("certificate-host-mismatch"))),
        ("192.0.2.13", ("inbound", "tls", Some("trusted"), None)),
        ("192.0.2.14", ("inbound", "cert-verify-failed", Some("untrusted"), Some("validation-failure"))),
        ("192.0.2.16", ("inbound", "handshake-failed", None, Some("certificate-not-trusted"))),
    ];
    for (ip, outcome) in want {
        assert_eq!(outcomes(&got, ip), [outcome], "{ip}");
    }
    // 6.0 outbound and 5.x lines have no peer in the TLS line: TLS facts without an address.
    let anonymous_peer: Vec<_> = got.iter().filter(|o| o["peer"]["ip"].is_null()).collect();
    assert_eq!(anonymous_peer.len(), 3, "{anonymous_peer:#?}");
    assert!(anonymous_peer.iter().all(|o| o["outcome"] == "tls" && o["tls"]["protocol"] == "TLSv1.2"));
}

#[test]
fn opensmtpd_lab_capture_golden() {
    let (got, stats) = golden("lab-6.8.0p2", &data("lab-6.8.0p2.log"));
    assert_all_explained("lab-6.8.0p2", &stats);
    // Two `mta delivery` lines of session 0000000000000000 (no connection: the route was
    // disabled after a failure) are the only orphans.
    assert_eq!(stat(&stats, "orphans"), 2);
    check_lab_outbound(&got);
}

/// The outbound verdicts of the lab's routes (tests/harness/opensmtpd-lab.sh), by receiver.
fn check_lab_outbound(got: &[Value]) {
    let out = |ip: &str| -> Vec<(&str, Option<&str>, Option<&str>)> {
        outcomes(got, ip).into_iter().filter(|o| o.0 == "outbound").map(|(_, a, b, c)| (a, b, c)).collect()
    };
    // mx.ca.test: verified (smtp+tls), trusted (smtp://), plaintext by policy (smtp+notls).
    let mut ca = out("127.0.0.2");
    ca.sort();
    assert_eq!(
        ca,
        [("plaintext", None, Some("local-policy")), ("tls", Some("trusted"), None), ("tls", Some("verified"), None),]
    );
    assert_eq!(out("127.0.0.3"), [("tls", Some("untrusted"), None)]);
    assert_eq!(out("127.0.0.4"), [("starttls-not-offered", None, Some("starttls-not-supported"))]);
    assert_eq!(out("127.0.0.5"), [("cert-verify-failed", Some("untrusted"), Some("validation-failure"))]);
    assert_eq!(out("127.0.0.6"), [("tls-required-missing", None, Some("starttls-not-supported"))]);
    assert_eq!(out("127.0.0.7"), [("handshake-failed", None, Some("validation-failure")), ("plaintext", None, None)]);
    let retry = got.iter().find(|o| o["peer"]["ip"] == "127.0.0.7" && o["outcome"] == "plaintext").unwrap();
    assert_eq!((&retry["after_tls_failure"], &retry["delivered"]), (&Value::Bool(true), &Value::Bool(true)));
    let verified = got.iter().find(|o| o["tls"]["trust"] == "verified").unwrap();
    assert_eq!(verified["domains"], serde_json::json!(["verified.test"]));
    assert_eq!(verified["peer"]["hostname"], "mx.ca.test");
    assert_eq!(verified["tls"]["protocol"], "TLSv1.3");
}

// ---------------------------------------------------------------------------------------------
// Mixed input (issue 8, point 5): one stream holding several MTAs.

/// The inputs of the mixed stream: (the `mta` of their observations, data file). Adding an MTA
/// is one line here.
const MIXED_INPUTS: &[(&str, &str)] = &[
    ("postfix", "tests/data/corpus/kumina-postfix_exporter.log"),
    ("postfix", "tests/data/opensmtpd/lab-postfix-in.log"),
    ("opensmtpd", "tests/data/opensmtpd/lab-6.8.0p2.log"),
    ("opensmtpd", "tests/data/opensmtpd/formats.log"),
    ("sendmail", "tests/data/sendmail/lab-8.17.1.9.maillog"),
    ("exim", "tests/data/corpus/exim-testsuite-tls.log"),
    ("exim", "tests/data/corpus/fail2ban-exim.log"),
];

/// Each input's lines, re-framed as RFC 5424 with one shared clock (1 ms per line of the merged
/// stream, so no gap comes near the idle timeout): the same text in the mixed run and in the
/// run of each input alone. Lines without a parsable envelope (the test-suite corpora hold
/// some) belong to no MTA and are left out.
fn mixed_inputs() -> Vec<Vec<String>> {
    let mut inputs: Vec<Vec<String>> = MIXED_INPUTS
        .iter()
        .map(|(_, path)| {
            let lines = corpus_lines(&repo().join(path));
            lines.into_iter().filter(|l| parsers::syslog::parse_syslog(l).is_ok()).collect()
        })
        .collect();
    // Round-robin order first, so every line has its place on the shared clock.
    let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let mut tick = 0u64;
    for idx in 0..longest {
        for lines in &mut inputs {
            if let Some(line) = lines.get_mut(idx) {
                *line = reframe(line, tick);
                tick += 1;
            }
        }
    }
    inputs
}

/// `line` as RFC 5424 at 2026-11-30T12:00:00Z plus `tick` milliseconds.
fn reframe(line: &str, tick: u64) -> String {
    let Ok(parsed) = parsers::syslog::parse_syslog(line) else { return line.to_owned() };
    let header = parsed.header;
    let (secs, millis) = (tick / 1000, tick % 1000);
    let ts = format!("2026-11-30T12:{:02}:{:02}.{millis:03}000Z", (secs / 60) % 60, secs % 60);
    let host = if header.hostname.is_empty() { "-" } else { header.hostname };
    let pid = header.procid.map_or("-".to_owned(), |pid| pid.to_string());
    format!("<22>1 {ts} {host} {} {pid} - - {}", header.appname, parsed.message)
}

/// Observations of one run, without the offset-based `event_id`, sorted.
fn canonical(stdout: &[u8], mta: &str) -> Vec<String> {
    let mut got: Vec<String> = observations(stdout)
        .into_iter()
        .filter(|o| o["mta"] == mta)
        .map(|mut o| {
            o.as_object_mut().unwrap().remove("event_id");
            o.to_string()
        })
        .collect();
    got.sort();
    got
}

#[test]
fn mixed_stream_gives_each_mta_the_observations_of_its_lines_alone() {
    let inputs = mixed_inputs();
    let mut mixed = String::new();
    let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let mut switches = 0;
    let mut last_input = usize::MAX;
    for idx in 0..longest {
        for (input_idx, lines) in inputs.iter().enumerate() {
            if let Some(line) = lines.get(idx) {
                mixed.push_str(line);
                mixed.push('\n');
                switches += usize::from(last_input != input_idx);
                last_input = input_idx;
            }
        }
    }
    assert!(switches > 50, "the inputs are not interleaved ({switches} switches)");
    let mixed_run = tlsledger(ARGS, mixed.as_bytes());
    assert!(mixed_run.status.success(), "{}", String::from_utf8_lossy(&mixed_run.stderr));
    assert_all_explained("mixed", &mixed_run.stderr);
    let mut mtas: Vec<&str> = MIXED_INPUTS.iter().map(|(mta, _)| *mta).collect();
    mtas.dedup();
    for mta in mtas {
        let mut alone = String::new();
        for (lines, _) in inputs.iter().zip(MIXED_INPUTS).filter(|(_, (m, _))| *m == mta) {
            for line in lines {
                alone.push_str(line);
                alone.push('\n');
            }
        }
        // Lines of one MTA keep their relative order and clock in both runs; only their
        // neighbours differ. Inputs of the same MTA are concatenated when alone (their clocks
        // interleave, but nothing of one input joins with another: different reporters/ids).
        let alone_run = tlsledger(ARGS, alone.as_bytes());
        assert!(alone_run.status.success());
        let want = canonical(&alone_run.stdout, mta);
        let got = canonical(&mixed_run.stdout, mta);
        assert!(!want.is_empty(), "{mta}: no observations alone");
        assert_eq!(got, want, "{mta}: the mixed stream changed its observations");
    }
    let all = observations(&mixed_run.stdout).len() as u64;
    assert_eq!(stat(&mixed_run.stderr, "observations"), all);
}

// ---------------------------------------------------------------------------------------------
// The real daemon.

/// Bases from 12000 to 12980 in steps of 20 (OpenSMTPD on base+0..3, its Postfix receivers on
/// base+10..16): below the ephemeral range and apart from the other harnesses' ports (the milter
/// tests 13000-14999, rspamd 15000-15990, ingest 16514-20013, the Postfix lab 20000-29999,
/// ClickHouse 30000-32767).
fn port_base(attempt: u16) -> u16 {
    12_000 + ((std::process::id() as u16 % 50 + attempt * 7) % 50) * 20
}

/// A child process stopped with SIGTERM (then SIGKILL after a deadline) when dropped, so a
/// failing assertion does not leave smtpd or the ingest daemon running.
struct Stopped(Option<Child>);

impl Stopped {
    fn stop(&mut self) -> Option<Output> {
        let mut child = self.0.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().ok();
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().ok()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a harness script with `LAB_PORT_BASE`.
fn harness(script: &str, args: &[&str], base: u16) -> Output {
    Command::new("bash")
        .arg(repo().join("tests/harness").join(script))
        .args(args)
        .env("LAB_PORT_BASE", base.to_string())
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

fn wait_for(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// The Postfix receivers of tests/harness/postfix-lab.sh, taken down when dropped.
struct PostfixLab {
    dir: PathBuf,
    base: u16,
}

impl Drop for PostfixLab {
    fn drop(&mut self) {
        let _ = harness("postfix-lab.sh", &["down", self.dir.to_str().unwrap()], self.base);
    }
}

/// True when /proc/net/tcp has a listening socket on `addr:port` (IPv4).
fn listening(addr: &str, port: u16) -> bool {
    let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else { return false };
    // The kernel prints the address as the hex of its in-memory (network order) u32.
    let want = format!("{:08X}:{port:04X}", u32::from_le_bytes(ip.octets()));
    std::fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&want.as_str()) && fields.get(3) == Some(&"0A")
    })
}

fn swaks(server: &str, to: &str, extra: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--silent", "2", "--server", server, "--from", "al@b.test", "--to", to, "--timeout", "20"])
        .args(extra)
        .output()
        .expect("swaks (tests/harness/install-deps.sh postfix)")
}

#[test]
fn opensmtpd_real_daemon_logs_through_dev_log_into_ingest() {
    let dir = std::env::temp_dir().join(format!("tlsledger-it-opensmtpd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pkg = repo().join(".ci-work/pkgs/opensmtpd");
    let unpacked = harness("unpack.sh", &["opensmtpd", pkg.to_str().unwrap()], 0);
    assert!(unpacked.status.success(), "unpack.sh opensmtpd: {}", String::from_utf8_lossy(&unpacked.stderr));
    assert!(
        Command::new("id").arg("opensmtpq").output().unwrap().status.success(),
        "user opensmtpq missing: run tests/harness/install-deps.sh opensmtpd"
    );

    // The Postfix receivers, on the first free base.
    let pf_dir = dir.join("pf");
    let (base, postfix_lab) = (0..5)
        .find_map(|attempt| {
            let base = port_base(attempt);
            let up = harness("postfix-lab.sh", &["up", pf_dir.to_str().unwrap()], base + 10);
            let lab = PostfixLab { dir: pf_dir.clone(), base: base + 10 };
            if up.status.success() {
                Some((base, lab))
            } else {
                eprintln!("postfix-lab.sh up at {}: {}", base + 10, String::from_utf8_lossy(&up.stderr));
                None
            }
        })
        .expect("no free port base for the Postfix receivers");
    let lab = dir.to_str().unwrap();
    let up = harness("opensmtpd-lab.sh", &["up", lab, pf_dir.join("lab.env").to_str().unwrap()], base);
    assert!(up.status.success(), "opensmtpd-lab.sh up: {}", String::from_utf8_lossy(&up.stderr));

    // tlsledger reads the socket that smtpd sees as /dev/log.
    let socket = dir.join("log.sock");
    let out = dir.join("out.jsonl");
    let mut ingest = Stopped(Some(
        Command::new(env!("CARGO_BIN_EXE_tlsledger"))
            .args(["ingest", "--no-state", "--stdout", "--stats", "--syslog-unix"])
            .arg(&socket)
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tlsledger ingest"),
    ));
    wait_for("the syslog socket", 30, || {
        std::fs::symlink_metadata(&socket).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    });
    let run = |name: &str| {
        Stopped(Some(
            Command::new("bash")
                .arg(repo().join("tests/harness/opensmtpd-lab.sh"))
                .args(["run", lab, name, socket.to_str().unwrap()])
                .env("LAB_PORT_BASE", base.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("opensmtpd-lab.sh run"),
        ))
    };
    let mut rx = run("rx");
    let mut tx = run("tx");
    let (rx_addr, tx_addr) = ("127.0.0.41", "127.0.0.42");
    for (addr, port) in [(rx_addr, base), (rx_addr, base + 1), (rx_addr, base + 2), (tx_addr, base + 3)] {
        // Not a test connection: that would be one more session in the log.
        wait_for(&format!("smtpd on {addr}:{port}"), 30, || listening(addr, port));
    }
    let read = || observations(&std::fs::read(&out).unwrap_or_default());
    let opensmtpd = |got: &[Value], direction: &str| {
        got.iter().filter(|o| o["mta"] == "opensmtpd" && o["direction"] == direction).count()
    };

    // Inbound to rx: plaintext with a message, STARTTLS and smtps (both fail on this build, see
    // opensmtpd-lab.sh), and a client that leaves after EHLO.
    assert!(swaks(&format!("{rx_addr}:{}", base + 2), "bob@a.test", &[]).status.success());
    assert!(!swaks(&format!("{rx_addr}:{base}"), "bob@a.test", &["-tls"]).status.success());
    assert!(!swaks(&format!("{rx_addr}:{}", base + 1), "bob@a.test", &["--tls-on-connect"]).status.success());
    assert!(swaks(&format!("{rx_addr}:{base}"), "bob@a.test", &["--quit-after", "EHLO"]).status.success());
    wait_for("the four inbound sessions of rx", 60, || opensmtpd(&read(), "inbound") >= 4);

    // Outbound: one message per route of tx; each one is also a plaintext inbound session of tx.
    let domains = ["verified", "trusted", "selfsigned", "plain", "notls", "required", "expired", "broken"];
    for domain in domains {
        let sent = swaks(&format!("{tx_addr}:{}", base + 3), &format!("bob@{domain}.test"), &[]);
        assert!(sent.status.success(), "{domain}: {}", String::from_utf8_lossy(&sent.stdout));
    }
    // Nine outbound sessions (broken.test is a failed handshake and a plaintext retry). Sessions
    // end at `mta disconnected`, logged after smtpd's idle time on the connection (~10 s).
    wait_for("the outbound sessions of tx", 120, || opensmtpd(&read(), "outbound") >= 9);
    wait_for("the inbound sessions of tx", 60, || opensmtpd(&read(), "inbound") >= 4 + domains.len());

    let tx_stop = tx.stop().expect("tx");
    let rx_stop = rx.stop().expect("rx");
    let ingest_stop = ingest.stop().expect("ingest");
    assert!(ingest_stop.status.success(), "{}", String::from_utf8_lossy(&ingest_stop.stderr));
    let got = read();
    let stderr = String::from_utf8_lossy(&ingest_stop.stderr);
    assert!(stderr.contains("malformed message                    0"), "{stderr}");

    check_lab_outbound(&got);
    for o in got.iter().filter(|o| o["mta"] == "opensmtpd") {
        assert_eq!(o["source"]["kind"], "syslog", "{o}");
        assert_eq!(o["instance"], "smtpd", "{o}");
    }
    let inbound: Vec<_> = got.iter().filter(|o| o["mta"] == "opensmtpd" && o["direction"] == "inbound").collect();
    let count = |outcome: &str| inbound.iter().filter(|o| o["outcome"] == outcome).count();
    assert_eq!(count("handshake-failed"), 2, "{inbound:#?}\nrx: {}", String::from_utf8_lossy(&rx_stop.stderr));
    assert_eq!(count("plaintext"), 1 + domains.len(), "{inbound:#?}\ntx: {}", String::from_utf8_lossy(&tx_stop.stderr));
    assert_eq!(count("unknown"), 1, "{inbound:#?}");
    let failed = inbound.iter().find(|o| o["outcome"] == "handshake-failed").unwrap();
    assert!(failed["failure"]["reason"].as_str().unwrap().contains("SSL routines"), "{failed}");

    // Cross-check with the other end: the Postfix receivers saw the TLS that OpenSMTPD reported.
    let maillog = std::fs::read(pf_dir.join("postfix-in/maillog")).unwrap();
    let postfix = observations(&tlsledger(&["parse", "--log-zone", "utc"], &maillog).stdout);
    let tls_params = |o: &Value| (o["tls"]["protocol"].clone(), o["tls"]["cipher"].clone());
    let theirs: Vec<_> = postfix.iter().filter(|o| o["outcome"] == "tls").map(tls_params).collect();
    let ours: Vec<_> =
        got.iter().filter(|o| o["mta"] == "opensmtpd" && o["outcome"] == "tls").map(tls_params).collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    for params in &ours {
        assert!(theirs.contains(params), "{params:?} not seen by Postfix: {theirs:?}");
    }
    // `postfix-lab.sh down` needs the lab's folder: stop the receivers before removing it.
    drop(postfix_lab);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Bad input: truncated, mutated, oversized, non-UTF-8 and hostile OpenSMTPD lines.

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
fn opensmtpd_mutated_and_truncated_lines_never_panic() {
    let lines: Vec<String> = ["lab-6.8.0p2.log", "formats.log"]
        .iter()
        .flat_map(|name| corpus_lines(&repo().join("tests/data/opensmtpd").join(name)))
        .collect();
    // Every prefix and suffix of every line.
    for line in &lines {
        for cut in (0..=line.len()).filter(|&cut| line.is_char_boundary(cut)) {
            let mut years = parsers::YearInference::new(2026, 11);
            let _ = parsers::parse_line(&line[..cut], &mut years);
            let _ = parsers::parse_line(&line[cut..], &mut years);
        }
    }
    // Random edits with the grammar's own punctuation, NUL and invalid bytes.
    let mut rng = Rng(0x0bad_5eed_0f5e_5510);
    let alphabet = b"\"=:<>()[] /.-+0123456789abcdef\0\xff\xfe\r\t'\\";
    let mut n_malformed = 0;
    for _ in 0..50_000 {
        let mut bytes = lines[(rng.next() % lines.len() as u64) as usize].as_bytes().to_vec();
        for _ in 0..(1 + rng.next() % 6) {
            let at = (rng.next() % (bytes.len() as u64 + 1)) as usize;
            let byte = alphabet[(rng.next() % alphabet.len() as u64) as usize];
            match rng.next() % 4 {
                0 if at < bytes.len() => bytes.truncate(at),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 if at < bytes.len() => bytes[at] = byte,
                _ => bytes.insert(at, byte),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut years = parsers::YearInference::new(2026, 11);
        if let Ok(record) = parsers::parse_line(&text, &mut years) {
            n_malformed += usize::from(record.body == parsers::Body::Unparsed(parsers::Error::Malformed));
        }
    }
    // The edits reach the grammar's error paths, not just the envelope's.
    assert!(n_malformed > 100, "{n_malformed}");
}

#[test]
fn opensmtpd_oversized_non_utf8_and_hostile_lines_through_the_binary() {
    let mut input: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
    };
    let p = "Nov 30 10:00:00 mx1 smtpd[7]: ";
    push(format!("{p}00000000000000a1 smtp connected address=192.0.2.50 host=ok.example").as_bytes());
    // A replacement character in the cipher, and invalid bytes after a message line (read
    // lossily): the session still joins.
    push(format!("{p}00000000000000a1 smtp tls ciphers=TLSv1.3:TLS_\u{fffd}AES:256").as_bytes());
    let mut bad = format!("{p}00000000000000a1 smtp message msgid=1 size=1 nrcpt=1 proto=ESMTP ").into_bytes();
    bad.extend_from_slice(b"\xff\xfe");
    push(&bad);
    push(format!("{p}00000000000000a1 smtp disconnected reason=quit").as_bytes());
    // Oversized: skipped and counted.
    push(format!("{p}00000000000000a2 smtp connected address=192.0.2.51 host={}", "x".repeat(3_000_000)).as_bytes());
    // Hostile: unterminated quotes, keys without values, NUL, a forged second line in a value.
    push(format!("{p}00000000000000a3 mta connecting address=\"smtp://\" host=\"").as_bytes());
    push(format!("{p}00000000000000a3 mta tls ciphers=").as_bytes());
    push(format!("{p}00000000000000a3 mta delivery evpid= to= relay=\" result=\"Ok stat=\"").as_bytes());
    push(format!("{p}00000000000000a4 smtp connected address=192.0.2.52 host=a\0b").as_bytes());
    push(format!("{p}00000000000000a4 smtp disconnected reason=\"x\\\" Nov 30 10:00:00 mx1 smtpd[7]: y").as_bytes());
    push(format!("{p}smtp-in: Started TLS on session zzzz: version=").as_bytes());
    let output = tlsledger(&["parse", "--stats", "--max-line-bytes", "1000000"], &input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stat(&output.stderr, "lines"), 11);
    assert_eq!(stat(&output.stderr, "oversized (skipped)"), 1);
    assert_eq!(stat(&output.stderr, "non-utf8 (read lossily)"), 1);
    assert_eq!(stat(&output.stderr, "malformed message"), 3, "{stderr}");
    let got = observations(&output.stdout);
    let ok = got.iter().find(|o| o["peer"]["ip"] == "192.0.2.50").expect("the session with lossy bytes");
    assert_eq!((&ok["outcome"], &ok["lines"]), (&Value::from("tls"), &Value::from(4)));
    let nul = got.iter().find(|o| o["peer"]["ip"] == "192.0.2.52").expect("the session with a NUL");
    assert_eq!(nul["peer"]["hostname"], "a\u{0}b");
}
