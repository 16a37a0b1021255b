//! The rspamd feed against a real rspamd: Debian's `rspamd` 3.4 with the stock configuration plus
//! the multimap rules an operator writes for tlsledger's maps (tests/harness/rspamd.sh, one private
//! instance on 127.0.0.1, stopped when the test ends). Checks that `tlsledger_downgrade.map`'s
//! `IP weight` lines (IPv4 and IPv6) scale TLSLEDGER_DOWNGRADE_SUSPECT's score (3.0 × weight), that
//! `tlsledger_hist_tls.map` sets TLSLEDGER_HIST_TLS, that other senders get neither, and that the
//! shipped composite scores plaintext from a historically-TLS sender. The rules are the sample
//! files operators copy (examples/rspamd/local.d/), so the test proves them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::repo;

/// A running private rspamd; stopped on drop. The folder is removed only when the test did not
/// panic, so that a failure leaves the configuration and the logs (DIR/log) for inspection.
struct Server {
    dir: PathBuf,
    /// The normal worker's port; the controller is on `base + 1` (rspamd.sh uses base..base+4).
    base: u16,
}

impl Server {
    /// Starts rspamd on `dir` (whose maps/ the caller has written). The port base comes from the
    /// process id (15000-15990 in steps of 10, below the kernel's ephemeral range and the other labs); when its ports are taken, the next bases are tried.
    fn start(dir: PathBuf) -> Server {
        for tool in ["rspamd", "rspamc", "curl"] {
            assert!(
                find_program(tool).is_some(),
                "`{tool}` is not installed: run `tests/harness/rspamd.sh install` (as root; tests/run.sh does) \
                 before cargo test"
            );
        }
        let slot = std::process::id() % 100;
        let mut last = None;
        for attempt in 0..5 {
            let base = 15_000 + ((slot + attempt) % 100) as u16 * 10;
            let output = rspamd_sh("start", &dir, base);
            if output.status.success() {
                return Server { dir, base };
            }
            // Nothing to stop when start failed: rspamd.sh kills what it started.
            let taken = String::from_utf8_lossy(&output.stderr).contains("already in use");
            last = Some(output);
            if !taken {
                break;
            }
        }
        let output = last.expect("at least one attempt");
        panic!(
            "cannot start rspamd (tests/harness/rspamd.sh start {}):\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `rspamc --ip IP symbols` on `message`: the JSON reply (`-j`) and the plain text reply.
    fn scan(&self, ip: &str, message: &[u8]) -> (Value, String) {
        let json = self.rspamc(&["-j", "--ip", ip, "symbols"], message);
        let reply: Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("rspamc -j gave no JSON ({e}):\n{json}"));
        assert_eq!(reply["is_skipped"], Value::Bool(false), "rspamd skipped the message:\n{json}");
        (reply, self.rspamc(&["--ip", ip, "symbols"], message))
    }

    /// `rspamc -h 127.0.0.1:BASE ARGS < message`; panics with its output on failure.
    fn rspamc(&self, args: &[&str], message: &[u8]) -> String {
        let mut child = Command::new("rspamc")
            .args(["-h", &format!("127.0.0.1:{}", self.base), "-t", "20"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rspamc (run `tests/harness/rspamd.sh install`)");
        child.stdin.take().expect("stdin").write_all(message).expect("write the message to rspamc");
        let output = child.wait_with_output().expect("wait for rspamc");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rspamc {args:?} failed ({}):\n{stdout}{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log_hint()
        );
        stdout
    }

    fn log_hint(&self) -> String {
        format!("\n(rspamd's log: {})", self.dir.join("log/rspamd.log").display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let output = rspamd_sh("stop", &self.dir, self.base);
        if !output.status.success() {
            // Dropping during a panic must not panic again; the message goes to the test output.
            eprintln!("rspamd.sh stop failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        if !std::thread::panicking() && output.status.success() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `tests/harness/rspamd.sh ACTION DIR` with `RSPAMD_PORT_BASE=base`.
fn rspamd_sh(action: &str, dir: &Path, base: u16) -> Output {
    Command::new("bash")
        .arg(repo().join("tests/harness/rspamd.sh"))
        .arg(action)
        .arg(dir)
        .env("RSPAMD_PORT_BASE", base.to_string())
        // The compiled hyperscan databases (public suffixes, regexp rules): 15-30 s to build on two
        // cores, about 1 s to load; kept between test runs.
        .env("RSPAMD_HS_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("rspamd-hs-cache"))
        .output()
        .expect("run tests/harness/rspamd.sh")
}

/// `name` on PATH or in the usual system folders.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The score rspamd gave `symbol`, `None` when the symbol is not in the reply.
fn symbol_score(reply: &Value, symbol: &str) -> Option<f64> {
    let entry = reply["symbols"].get(symbol)?;
    Some(entry["score"].as_f64().unwrap_or_else(|| panic!("{symbol} has no numeric score: {entry}")))
}

/// Asserts that `symbol` scored `want` (rspamd prints scores to 6 digits: 0.9 comes back 0.899999).
fn assert_score(reply: &Value, text: &str, symbol: &str, want: f64) {
    let got = symbol_score(reply, symbol).unwrap_or_else(|| panic!("no {symbol} in the reply:\n{text}"));
    assert!((got - want).abs() < 1e-3, "{symbol} scored {got}, not {want:.2}:\n{text}");
    // The configured score stays 3.0 / 0.0: the map's weight is a per-entry multiplier.
    let metric = reply["symbols"][symbol]["metric_score"].as_f64();
    let configured = if symbol == DOWNGRADE { 3.0 } else { 0.0 };
    assert_eq!(metric, Some(configured), "{symbol}'s metric score:\n{text}");
    let line = format!("Symbol: {symbol} ({want:.2})");
    assert!(text.contains(&line), "rspamc's text output lacks `{line}`:\n{text}");
}

const DOWNGRADE: &str = "TLSLEDGER_DOWNGRADE_SUSPECT";
const HIST_TLS: &str = "TLSLEDGER_HIST_TLS";

/// A small RFC 5322 message.
const MESSAGE: &[u8] = b"From: Alice Example <alice@example.org>\r\n\
To: Bob Example <bob@example.net>\r\n\
Subject: tlsledger rspamd feed test\r\n\
Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n\
Message-ID: <tlsledger-rspamd-feed-test@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
this message checks the multimap rules that read tlsledger's rspamd maps.\r\n\
\r\n\
Alice\r\n";

#[test]
fn rspamd_multimap_scales_the_downgrade_score_by_the_map_weight() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rspamd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    // What `tlsledger feed` writes (src/feeds/rspamd.rs): comment lines, then `IP weight` with
    // 1.0 high / 0.6 medium / 0.3 low, and one IP a line for the historically-TLS senders.
    std::fs::write(
        dir.join("maps/tlsledger_downgrade.map"),
        "# tlsledger downgrade-suspect (inbound) -- IP weight (symbol score x weight)\n\
         # generated 2026-11-30T12:00:00Z  expires 2026-12-02T12:00:00Z\n\
         198.51.100.7 1.0\n\
         2001:db8:66::10 0.6\n\
         203.0.113.9 0.3\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("maps/tlsledger_hist_tls.map"),
        "# tlsledger historically-TLS inbound sender IPs\n\
         # generated 2026-11-30T12:00:00Z  expires 2026-12-02T12:00:00Z\n\
         198.51.100.7\n",
    )
    .unwrap();
    let server = Server::start(dir);

    // The scanner answers /ping before it is guaranteed to have read the file maps: poll until
    // the high-severity sender is seen, then check the exact scores.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (reply, text) = loop {
        let (reply, text) = server.scan("198.51.100.7", MESSAGE);
        if symbol_score(&reply, DOWNGRADE).is_some() {
            break (reply, text);
        }
        assert!(
            Instant::now() < deadline,
            "rspamd never reported {DOWNGRADE} for 198.51.100.7 (map not loaded?):\n{text}{}",
            server.log_hint()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_score(&reply, &text, DOWNGRADE, 3.0 * 1.0);
    assert_score(&reply, &text, HIST_TLS, 0.0);

    let (reply, text) = server.scan("2001:db8:66::10", MESSAGE);
    assert_score(&reply, &text, DOWNGRADE, 3.0 * 0.6);

    let (reply, text) = server.scan("203.0.113.9", MESSAGE);
    assert_score(&reply, &text, DOWNGRADE, 3.0 * 0.3);
    assert_eq!(symbol_score(&reply, HIST_TLS), None, "203.0.113.9 is not in the hist map:\n{text}");

    let (reply, text) = server.scan("192.0.2.200", MESSAGE);
    assert_eq!(symbol_score(&reply, DOWNGRADE), None, "192.0.2.200 is in no map:\n{text}");
    assert_eq!(symbol_score(&reply, HIST_TLS), None, "192.0.2.200 is in no map:\n{text}");
    assert!(!text.contains("TLSLEDGER_"), "{text}");

    // The shipped composite (examples/rspamd/local.d/composites.conf): a historically-TLS sender
    // whose last Received hop had no TLS scores 2.0; the same sender over TLS does not.
    let received = |with: &str| {
        let mut message = format!(
            "Received: from client.example (client.example [198.51.100.7])\r\n\tby mx.lab.example (Postfix) \
             with {with} id 4ABCDE12345\r\n\tfor <bob@example.net>; Mon, 30 Nov 2026 12:00:00 +0000\r\n"
        )
        .into_bytes();
        message.extend_from_slice(MESSAGE);
        message
    };
    let (reply, text) = server.scan("198.51.100.7", &received("ESMTP"));
    assert!(symbol_score(&reply, "RCVD_NO_TLS_LAST").is_some(), "rspamd's own symbol:\n{text}");
    let composite = symbol_score(&reply, PLAINTEXT_FROM_TLS_SENDER);
    assert!(composite.is_some_and(|s| (s - 2.0).abs() < 1e-3), "{PLAINTEXT_FROM_TLS_SENDER}:\n{text}");
    let (reply, text) = server.scan("198.51.100.7", &received("ESMTPS"));
    // One hop, with TLS: rspamd says RCVD_TLS_ALL (RCVD_TLS_LAST is for a TLS last hop after others).
    assert!(symbol_score(&reply, "RCVD_TLS_ALL").is_some(), "rspamd's own symbol:\n{text}");
    assert_eq!(symbol_score(&reply, PLAINTEXT_FROM_TLS_SENDER), None, "over TLS:\n{text}");
    let (reply, text) = server.scan("192.0.2.200", &received("ESMTP"));
    assert_eq!(symbol_score(&reply, PLAINTEXT_FROM_TLS_SENDER), None, "no TLS history:\n{text}");
}

/// The composite of examples/rspamd/local.d/composites.conf.
const PLAINTEXT_FROM_TLS_SENDER: &str = "TLSLEDGER_PLAINTEXT_FROM_TLS_SENDER";
