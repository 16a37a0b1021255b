//! End to end against real Postfix: `tests/harness/postfix-lab.sh` starts two private Postfix
//! instances on loopback (sender `postfix-out` on 127.0.0.1, receiver `postfix-in` with one
//! listener per case, each on its own address from 127.0.0.2 up), swaks injects one message per
//! test domain, and `tlsledger parse` must report every connection the way the lab set it up:
//! verified, trusted and untrusted TLS, plaintext, TLS required but missing, an expired
//! certificate, and the inbound sessions on both sides. The same run then goes through the
//! reputation path (`parse --state`, `explain`): each receiver address is its own endpoint and
//! must get the class its sessions earn under the one-run thresholds of
//! `tests/data/lab-thresholds.toml`. A second lab (`postfix_lab_feeds_drive_postfix`) proves that
//! the generated Postfix feeds change what a real Postfix does: the discard map skips a broken
//! STARTTLS at once, and an opt-in `encrypt` entry defers mail whose STARTTLS was stripped.
//!
//! The test command installs Postfix and swaks with `tests/harness/install-deps.sh` before
//! `cargo test`; this test fails, never skips, when they are missing. It needs root, because
//! Postfix instances start as root. A guard stops the lab however the test ends; the lab folder
//! under `CARGO_TARGET_TMPDIR` is removed after a pass and kept after a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::{observations, repo, tlsledger};

/// A receiver listener: its address and port.
pub(crate) type Listener = (String, u64);

/// The lab script.
fn lab_script() -> PathBuf {
    repo().join("tests/harness/postfix-lab.sh")
}

/// Finds `name` on PATH or in the sbin folders, where Postfix installs its commands.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `postfix-lab.sh COMMAND DIR` with `LAB_PORT_BASE=port_base`.
pub(crate) fn run_lab(command: &str, dir: &Path, port_base: u16) -> Output {
    run_lab_with(command, dir, port_base, &[])
}

/// Runs `postfix-lab.sh COMMAND DIR ARGS…` with `LAB_PORT_BASE=port_base`.
fn run_lab_with(command: &str, dir: &Path, port_base: u16, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(lab_script())
        .arg(command)
        .arg(dir)
        .args(args)
        .env("LAB_PORT_BASE", port_base.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", lab_script().display()))
}

/// Panics with the script's output unless it succeeded.
pub(crate) fn check_lab(command: &str, output: &Output) {
    assert!(
        output.status.success(),
        "postfix-lab.sh {command} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// A running lab. Dropping it stops both Postfix instances; the folder is removed only when the
/// test did not panic, so that a failure leaves the logs for inspection.
pub(crate) struct Lab {
    pub(crate) dir: PathBuf,
    pub(crate) port_base: u16,
    env: HashMap<String, String>,
}

impl Lab {
    /// Starts a lab in a fresh folder named after `name`. Each test that runs a lab takes its own
    /// `slot` (0 and 1 here, 2 the end-to-end lab in tests/it/lab.rs, which also uses the three
    /// ports after the lab's seven), so that labs of one test run never share ports. The port base comes from
    /// `LAB_PORT_BASE` or from the process id; when its ports are taken, the next bases are tried.
    pub(crate) fn up(name: &str, slot: u16) -> Lab {
        for tool in ["postfix", "postconf", "postqueue", "swaks", "openssl"] {
            assert!(
                find_program(tool).is_some(),
                "`{tool}` is not installed: run tests/harness/install-deps.sh (as root) before cargo test"
            );
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("postfix-lab-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
        }
        // Bases from 20000 to 29990 stay below Linux's ephemeral port range; a lab takes seven
        // ports, and slots and attempts step by 10 and 20 so that they never overlap.
        let first_offset = match std::env::var("LAB_PORT_BASE") {
            Ok(value) => {
                let base: u16 = value.parse().unwrap_or_else(|_| panic!("LAB_PORT_BASE is not a port: {value:?}"));
                base.saturating_sub(20_000)
            }
            Err(_) => (std::process::id() % 500) as u16 * 20,
        };
        let base_of = |attempt: u16| 20_000 + (first_offset + slot * 10 + attempt * 20) % 10_000;
        let mut last_output = None;
        for attempt in 0..5u16 {
            let port_base = base_of(attempt);
            let output = run_lab("up", &dir, port_base);
            if output.status.success() {
                let env = read_lab_env(&dir.join("lab.env"));
                return Lab { dir, port_base, env };
            }
            let port_taken = String::from_utf8_lossy(&output.stderr).contains("is in use");
            last_output = Some(output);
            if !port_taken {
                break;
            }
        }
        // Nothing to stop when `up` failed, but a half-started instance must not outlive the test.
        let _ = run_lab("down", &dir, base_of(0));
        check_lab("up", &last_output.expect("at least one attempt"));
        unreachable!("check_lab panics on failure");
    }

    /// A variable of `DIR/lab.env`.
    pub(crate) fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} missing from {}/lab.env", self.dir.display()))
    }

    /// A port variable of `DIR/lab.env`.
    pub(crate) fn port(&self, name: &str) -> u64 {
        self.var(name).parse().unwrap_or_else(|_| panic!("{name} is not a port: {:?}", self.var(name)))
    }

    /// `postfix-lab.sh send-one DIR RCPT`: the queue id and the status of the message.
    pub(crate) fn send_one(&self, rcpt: &str) -> (String, String) {
        let output = run_lab_with("send-one", &self.dir, self.port_base, &[rcpt]);
        check_lab("send-one", &output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (queue_id, status) = stdout
            .lines()
            .last()
            .and_then(|line| line.split_once(' '))
            .unwrap_or_else(|| panic!("send-one {rcpt} printed no queue id and status: {stdout}"));
        (queue_id.to_owned(), status.to_owned())
    }

    /// `postfix-lab.sh reload DIR INSTANCE SETTINGS…`.
    pub(crate) fn reload(&self, instance: &str, settings: &[&str]) {
        let mut args = vec![instance];
        args.extend_from_slice(settings);
        check_lab("reload", &run_lab_with("reload", &self.dir, self.port_base, &args));
    }

    /// Receiver listener `name` (`CA`, `SELFSIGNED`, …): `RECEIVER_{name}_ADDR` and `_PORT`.
    pub(crate) fn receiver(&self, name: &str) -> Listener {
        (self.var(&format!("RECEIVER_{name}_ADDR")).to_owned(), self.port(&format!("RECEIVER_{name}_PORT")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let output = run_lab("down", &self.dir, self.port_base);
        if !output.status.success() {
            // Dropping during a panic must not panic again; the message goes to the test output.
            eprintln!("postfix-lab.sh down failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        if !std::thread::panicking() && output.status.success() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `KEY=VALUE` lines of a lab.env file.
fn read_lab_env(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// The observations `tlsledger parse --tls-logging on LOG` prints.
fn parse_log(log: &str) -> Vec<Value> {
    let output = tlsledger(&["parse", "--tls-logging", "on", log], b"");
    assert!(
        output.status.success(),
        "tlsledger parse {log} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    observations(&output.stdout)
}

/// The sender's queue id and recipient of every injected message (`DIR/send/queue_ids`).
fn injected(dir: &Path) -> Vec<(String, String)> {
    let path = dir.join("send/queue_ids");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(queue_id, rcpt)| (queue_id.to_owned(), rcpt.to_owned()))
        .collect()
}

/// The lines of `log` that contain `needle`, for failure messages.
fn lines_with(log: &str, needle: &str) -> String {
    log.lines().filter(|line| line.contains(needle)).collect::<Vec<_>>().join("\n")
}

/// The lines of `log` about message `queue_id`, plus every line of the processes that logged
/// its `status=` lines: Postfix's TLS lines carry no queue id, only the process's `[pid]`.
fn delivery_lines(log: &str, queue_id: &str) -> String {
    let with_id = format!(" {queue_id}: ");
    let processes: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&with_id) && line.contains(" status="))
        .filter_map(|line| line.split(&with_id).next()?.rsplit(' ').next())
        .collect();
    log.lines()
        .filter(|line| {
            line.contains(&with_id) || processes.iter().any(|process| line.contains(&format!(" {process} ")))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The receiver's queue id from the sender's `status=sent (250 2.0.0 Ok: queued as X)` line for
/// `queue_id`.
fn remote_queue_id(sender_log: &str, queue_id: &str) -> Option<String> {
    let prefix = format!(": {queue_id}: to=<");
    sender_log
        .lines()
        .filter(|line| line.contains(&prefix))
        .find_map(|line| line.split("queued as ").nth(1))
        .map(|rest| rest.trim_end_matches(')').trim().to_owned())
}

fn has_queue_id(observation: &Value, queue_id: &str) -> bool {
    observation["queue_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == queue_id))
}

/// `tlsledger explain IP --json` on `state` with the lab's thresholds, judged at `now`.
fn explain(state: &Path, ip: &str, now: &str) -> Value {
    let thresholds = repo().join("tests/data/lab-thresholds.toml");
    let args = [
        "explain",
        ip,
        "--state",
        state.to_str().expect("UTF-8 state path"),
        "--json",
        "--thresholds",
        thresholds.to_str().expect("UTF-8 thresholds path"),
        "--now",
        now,
    ];
    let output = tlsledger(&args, b"");
    assert!(
        output.status.success(),
        "tlsledger {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("explain {ip} printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn postfix_lab_outcomes() {
    let lab = Lab::up("outcomes", 0);
    check_lab("send", &run_lab("send", &lab.dir, lab.port_base));

    let sender_log_path = lab.var("SENDER_LOG").to_owned();
    let receiver_log_path = lab.var("RECEIVER_LOG").to_owned();
    let sender_log = std::fs::read_to_string(&sender_log_path).unwrap();
    let receiver_log = std::fs::read_to_string(&receiver_log_path).unwrap();

    // Both swaks and the sender's smtp client (smtp_bind_address) connect from the sender's
    // address; each receiver listener has an address of its own.
    let client_ip = lab.var("SENDER_SMTPD_ADDR").to_owned();
    let ca = lab.receiver("CA");
    let selfsigned = lab.receiver("SELFSIGNED");
    let plain = lab.receiver("PLAIN");
    let expired = lab.receiver("EXPIRED");
    let required = lab.receiver("REQUIRED");
    let receivers = [&ca, &selfsigned, &plain, &expired, &required];
    let mut receiver_ips: Vec<&str> = receivers.iter().map(|(ip, _)| ip.as_str()).collect();
    receiver_ips.push(&client_ip);
    receiver_ips.sort_unstable();
    receiver_ips.dedup();
    assert_eq!(receiver_ips.len(), 6, "every listener needs an address of its own: {:?}", lab.env);
    let relay = |(ip, _): &Listener| format!("{ip}[{ip}]");

    // First the lab itself: if Postfix did not log these lines, the parser is not to blame.
    for needle in [
        "postfix-out/policy/smtp[".to_owned(),
        format!("Verified TLS connection established to {}:{}:", relay(&ca), ca.1),
        format!("Trusted TLS connection established to {}:{}:", relay(&ca), ca.1),
        format!("Untrusted TLS connection established to {}:{}:", relay(&selfsigned), selfsigned.1),
        format!("Untrusted TLS connection established to {}:{}:", relay(&expired), expired.1),
        format!("Anonymous TLS connection established from unknown[{client_ip}]:"),
        format!("status=deferred (TLS is required, but was not offered by host {})", relay(&required)),
        "certificate has expired".to_owned(),
        "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7".to_owned(),
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5".to_owned(),
    ] {
        assert!(sender_log.contains(&needle), "the lab's sender log {sender_log_path} lacks {needle:?}");
    }
    for needle in [format!("Anonymous TLS connection established from unknown[{client_ip}]:"), "starttls=1".to_owned()]
    {
        assert!(receiver_log.contains(&needle), "the lab's receiver log {receiver_log_path} lacks {needle:?}");
    }

    let sender = parse_log(&sender_log_path);
    let receiver = parse_log(&receiver_log_path);
    for observation in sender.iter().chain(&receiver) {
        assert_eq!(observation["mta"], "postfix", "{observation}");
        let peer = observation["peer"]["ip"].as_str().unwrap_or_default();
        match observation["direction"].as_str() {
            Some("inbound") => assert_eq!(peer, client_ip, "an inbound peer that is not the client: {observation}"),
            Some("outbound") => assert!(
                receivers.iter().any(|(ip, _)| ip == peer),
                "an outbound peer that is not a receiver: {observation}"
            ),
            _ => panic!("an observation without a direction: {observation}"),
        }
    }
    assert!(sender.iter().all(|o| o["reporter"] == "out"), "sender reporter is not \"out\": {sender:#?}");
    assert!(receiver.iter().all(|o| o["reporter"] == "in"), "receiver reporter is not \"in\": {receiver:#?}");

    // Outbound, per injected message: the observation that carries its sender queue id.
    let messages = injected(&lab.dir);
    assert_eq!(messages.len(), 7, "expected 7 injected messages: {messages:?}");
    for (queue_id, rcpt) in &messages {
        let domain = rcpt.split_once('@').map(|(_, domain)| domain).unwrap_or_default();
        let context =
            format!("message {queue_id} to {rcpt}; its log lines:\n{}", delivery_lines(&sender_log, queue_id));
        let found: Vec<&Value> =
            sender.iter().filter(|o| o["direction"] == "outbound" && has_queue_id(o, queue_id)).collect();
        assert_eq!(found.len(), 1, "want one outbound observation for {context}\ngot: {found:#?}");
        let observation = found[0];
        let context = format!("{context}\nobservation: {observation:#}");
        assert!(
            observation["domains"].as_array().is_some_and(|d| d.iter().any(|x| x == domain)),
            "domains lack {domain}: {context}"
        );
        let (want_peer, want_outcome, want_trust, want_delivered) = match domain {
            "verified.test" => (&ca, "tls", Some("verified"), true),
            "trusted.test" => (&ca, "tls", Some("trusted"), true),
            "selfsigned.test" => (&selfsigned, "tls", Some("untrusted"), true),
            "plain.test" => (&plain, "plaintext", None, true),
            "required.test" => (&required, "tls-required-missing", None, false),
            "expired.test" => (&expired, "cert-verify-failed", Some("untrusted"), false),
            other => panic!("unexpected domain {other}: {context}"),
        };
        assert_eq!(observation["peer"]["ip"], want_peer.0.as_str(), "peer ip: {context}");
        assert_eq!(observation["peer"]["port"], want_peer.1, "peer port: {context}");
        assert_eq!(observation["outcome"], want_outcome, "outcome: {context}");
        assert_eq!(observation["delivered"], want_delivered, "delivered: {context}");
        match want_trust {
            Some(trust) => {
                assert_eq!(observation["tls"]["trust"], trust, "tls.trust: {context}");
                assert_eq!(observation["tls"]["protocol"], "TLSv1.3", "tls.protocol: {context}");
                assert!(observation["tls"]["cipher"].is_string(), "tls.cipher: {context}");
                assert_eq!(observation["tls"]["bits"], 256, "tls.bits: {context}");
                assert_eq!(observation["tls"]["reused"], false, "tls.reused: {context}");
            }
            None => assert!(observation["tls"].is_null(), "tls should be null: {context}"),
        }
        match domain {
            "required.test" => {
                assert!(observation["failure"].is_object(), "failure: {context}");
                let reason = observation["failure"]["reason"].as_str().unwrap_or_default();
                assert!(reason.contains("TLS is required, but was not offered"), "failure.reason: {context}");
            }
            "expired.test" => {
                assert_eq!(observation["failure"]["kind"], "certificate-expired", "failure.kind: {context}");
            }
            _ => assert!(observation["failure"].is_null(), "failure should be null: {context}"),
        }
    }
    let n_outbound = sender.iter().filter(|o| o["direction"] == "outbound").count();
    assert_eq!(n_outbound, messages.len(), "one outbound observation per message: {sender:#?}");

    // Inbound on the sender: swaks' sessions, six over STARTTLS and one in plaintext.
    let inbound: Vec<&Value> = sender.iter().filter(|o| o["direction"] == "inbound").collect();
    assert_eq!(inbound.len(), messages.len(), "one inbound observation per swaks session: {inbound:#?}");
    let plain_inject = &messages.iter().find(|(_, rcpt)| rcpt.starts_with("plain-inject@")).expect("plain inject").0;
    for observation in &inbound {
        if has_queue_id(observation, plain_inject) {
            assert_eq!(observation["outcome"], "plaintext", "the plaintext injection: {observation:#}");
            assert!(observation["tls"].is_null(), "the plaintext injection: {observation:#}");
        } else {
            assert_eq!(observation["outcome"], "tls", "a STARTTLS injection: {observation:#}");
            assert_eq!(observation["tls"]["trust"], "anonymous", "a STARTTLS injection: {observation:#}");
        }
        assert_eq!(observation["delivered"], true, "swaks' DATA succeeded: {observation:#}");
    }

    // The receiver: every connection of the sender arrives inbound. Five used STARTTLS (verified,
    // trusted twice, selfsigned, expired); plain.test came to the listener without STARTTLS and
    // sent its message in plaintext; required.test's client found no STARTTLS and quit after EHLO
    // (`ehlo=1 quit=1`): no mail transaction, so the counters do not call it plaintext.
    assert!(receiver.iter().all(|o| o["direction"] == "inbound"), "the receiver only receives: {receiver:#?}");
    let n_tls = receiver.iter().filter(|o| o["outcome"] == "tls" && o["tls"]["trust"] == "anonymous").count();
    let n_plain = receiver.iter().filter(|o| o["outcome"] == "plaintext").count();
    let n_unknown = receiver.iter().filter(|o| o["outcome"] == "unknown").count();
    assert_eq!(
        (n_tls, n_plain, n_unknown),
        (5, 1, 1),
        "receiver inbound (anonymous TLS, plaintext, unknown): {receiver:#?}"
    );
    let quit = receiver.iter().find(|o| o["outcome"] == "unknown").expect("the EHLO-only session");
    assert!(quit["queue_ids"].as_array().is_some_and(Vec::is_empty), "required.test sent nothing: {quit:#}");

    // Each accepted message is on the receiver under the queue id the sender logged for it.
    for (queue_id, rcpt) in &messages {
        let Some(remote) = remote_queue_id(&sender_log, queue_id) else { continue };
        let found: Vec<&Value> = receiver.iter().filter(|o| has_queue_id(o, &remote)).collect();
        assert_eq!(
            found.len(),
            1,
            "want one receiver observation for {remote} ({rcpt}); receiver lines:\n{}\ngot: {found:#?}",
            lines_with(&receiver_log, &remote)
        );
        let want = if rcpt.ends_with("@plain.test") { "plaintext" } else { "tls" };
        assert_eq!(found[0]["outcome"], want, "receiver side of {rcpt}: {:#}", found[0]);
    }

    // Reputation: the sender's log, vouched for with --trusted-files, folded into a fresh state
    // (kept with the lab folder after a failure), then every receiver address judged a minute
    // after the run. With one session on one day enough for a baseline, each address gets the
    // class of what it alone showed; that is why plain.test and required.test use different
    // listeners.
    let state = lab.dir.join("state");
    let output = tlsledger(
        &[
            "parse",
            "--output",
            "none",
            "--tls-logging",
            "on",
            "--trusted-files",
            "--state",
            state.to_str().expect("UTF-8 state path"),
            &sender_log_path,
        ],
        b"",
    );
    assert!(
        output.status.success(),
        "tlsledger parse --state {} {sender_log_path} failed ({}): {}",
        state.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let now = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // (listener, class, decisions by outcome). The expired and the required listeners have a
    // failed TLS attempt as their only, so their last, decision: not "TLS every time", and not
    // never-tls either, because TLS was attempted or required; src/reputation/classify.rs makes
    // that `unknown`.
    let cases = [
        (&ca, "historically-valid", json!([["tls", 3]])),
        (&selfsigned, "tls-unverified", json!([["tls", 1]])),
        (&plain, "never-tls", json!([["plaintext", 1]])),
        (&expired, "unknown", json!([["cert-verify-failed", 1]])),
        (&required, "unknown", json!([["tls-required-missing", 1]])),
    ];
    for ((ip, _), want_class, want_decisions) in cases {
        let report = explain(&state, ip, &now);
        let endpoints = report["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default();
        let [endpoint] = endpoints else {
            panic!("want only the outbound endpoint of {ip} (receivers never connect out): {report:#}")
        };
        let context = format!("explain {ip} --now {now}:\n{endpoint:#}");
        assert_eq!(endpoint["endpoint"], format!("outbound/{ip}"), "{context}");
        assert_eq!(endpoint["decisions"], want_decisions, "decisions: {context}");
        let classification = &endpoint["classification"];
        assert_eq!(classification["class"], want_class, "class: {context}");
        assert_eq!(classification["baseline"], want_class, "baseline: {context}");
        // No observation worse than its baseline, and no handshake failure: no flags.
        assert!(classification["downgrade"].is_null(), "downgrade: {context}");
        assert!(classification["broken_starttls"].is_null(), "broken_starttls: {context}");
        assert_eq!(classification["dormant"], false, "dormant: {context}");
    }
}

/// The lines of the delivery attempt that ended in the last `status=` line of `queue_id`: that
/// line and the lines its `smtp[pid]` logged since its previous status line (Postfix's TLS and
/// EHLO lines carry no queue id).
pub(crate) fn attempt_lines<'a>(log: &'a str, queue_id: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = log.lines().collect();
    let with_id = format!(" {queue_id}: to=<");
    let Some(end) = lines.iter().rposition(|l| l.contains(&with_id) && l.contains(" status=")) else {
        return Vec::new();
    };
    let Some(process) = lines[end].split(&format!(" {queue_id}: ")).next().and_then(|p| p.rsplit(' ').next()) else {
        return Vec::new();
    };
    let mut attempt = vec![lines[end]];
    for line in lines[..end].iter().rev() {
        if line.contains(&format!(" {process} ")) {
            if line.contains(" status=") {
                break;
            }
            attempt.push(line);
        }
    }
    attempt.reverse();
    attempt
}

/// Runs `tlsledger` and panics with its stderr unless it succeeds.
fn run_tlsledger(args: &[&str]) -> Output {
    let output = tlsledger(args, b"");
    assert!(
        output.status.success(),
        "tlsledger {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `tlsledger parse --state STATE LOG` (trusted file) then `tlsledger feed --state STATE --out OUT`
/// with `thresholds`, judged a minute from now, and `extra` feed options.
fn parse_and_feed(log: &str, state: &Path, out: &Path, thresholds: &Path, extra: &[&str]) {
    let state = state.to_str().expect("UTF-8 state path");
    run_tlsledger(&["parse", "--output", "none", "--tls-logging", "on", "--trusted-files", "--state", state, log]);
    let now = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut args = vec![
        "feed",
        "--state",
        state,
        "--out",
        out.to_str().expect("UTF-8 out path"),
        "--thresholds",
        thresholds.to_str().expect("UTF-8 thresholds path"),
        "--now",
        &now,
    ];
    args.extend_from_slice(extra);
    run_tlsledger(&args);
}

/// The entries (non-comment lines) of a feed file.
pub(crate) fn feed_entries(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

/// Issue 5: the feeds drive a real Postfix. A receiver whose STARTTLS handshake always fails gets
/// into the generated discard map, and with it the sender's next delivery there skips STARTTLS
/// and is delivered at once in plaintext, while the CA-signed receiver still gets TLS. With the
/// opt-in `encrypt` tier, the historically-valid receiver gets a policy entry under the key
/// Postfix looks up (`[127.0.0.2]:PORT`, from the transport map and the delivery lines); when its
/// STARTTLS is then stripped, mail to it is deferred instead of sent in clear, while mail to a
/// receiver without an entry still goes out.
#[test]
fn postfix_lab_feeds_drive_postfix() {
    let lab = Lab::up("feeds", 1);
    check_lab("send", &run_lab("send", &lab.dir, lab.port_base));
    let sender_log_path = lab.var("SENDER_LOG").to_owned();
    let sender_conf = lab.var("SENDER_CONF").to_owned();
    let ca = lab.receiver("CA");
    let broken = lab.receiver("BROKEN");
    let plain = lab.receiver("PLAIN");
    let log = || std::fs::read_to_string(&sender_log_path).unwrap();

    // The broken receiver: STARTTLS offered, the handshake fails, the fresh message is deferred.
    let (first, status) = lab.send_one("user@broken.test");
    let attempt = attempt_lines(&log(), &first).join("\n");
    assert_eq!(status, "deferred", "{attempt}");
    assert!(attempt.contains("Cannot start TLS: handshake failure"), "the lab's broken listener: {attempt}");

    // Its IP goes into the discard map, and nothing else does; the policy map stays empty.
    let lab_thresholds = repo().join("tests/data/lab-thresholds.toml");
    let (state, out) = (lab.dir.join("state"), lab.dir.join("feed"));
    parse_and_feed(&sender_log_path, &state, &out, &lab_thresholds, &[]);
    let discard = out.join("smtp_discard_ehlo.cidr");
    assert_eq!(feed_entries(&discard), [format!("{}/32\tstarttls", broken.0)], "{}", discard.display());
    assert_eq!(feed_entries(&out.join("tls_policy")), Vec::<String>::new(), "no enforcement without opt-in");

    // The sender reads the map; the next message to the broken receiver goes out at once, in clear.
    let discard_setting = format!("smtp_discard_ehlo_keyword_address_maps = cidr:{}", discard.display());
    lab.reload("postfix-out", &[&discard_setting]);
    let (second, status) = lab.send_one("second@broken.test");
    let attempt = attempt_lines(&log(), &second).join("\n");
    assert_eq!(status, "sent", "delivered on the first attempt: {attempt}");
    assert!(attempt.contains("discarding EHLO keywords: STARTTLS"), "{attempt}");
    assert!(!attempt.contains("TLS connection established"), "plaintext: {attempt}");
    assert!(attempt.contains(&format!("relay={0}[{0}]:{1}", broken.0, broken.1)), "{attempt}");
    // tlsledger sees that our own policy decided, not the peer.
    let seen = parse_log(&sender_log_path);
    let observation = seen
        .iter()
        .find(|o| o["direction"] == "outbound" && has_queue_id(o, &second))
        .expect("an outbound observation of the second message");
    assert_eq!(observation["local_policy"], "starttls-discarded", "{observation:#}");
    assert_eq!(observation["outcome"], "plaintext", "{observation:#}");
    // The CA-signed receiver still gets TLS.
    let (trusted, status) = lab.send_one("again@trusted.test");
    let attempt = attempt_lines(&log(), &trusted).join("\n");
    assert_eq!(status, "sent", "{attempt}");
    assert!(attempt.contains(&format!("Trusted TLS connection established to {0}[{0}]:{1}", ca.0, ca.1)), "{attempt}");
    assert!(!attempt.contains("discarding EHLO keywords"), "{attempt}");

    // Opt in to the encrypt tier. The version comes from the sender's own postconf, the keys from
    // its transport map and the delivery lines.
    let enforce = lab.dir.join("enforce-thresholds.toml");
    let base = std::fs::read_to_string(&lab_thresholds).unwrap();
    std::fs::write(
        &enforce,
        format!("{base}\n[enforcement]\npostfix_tier = \"encrypt\"\nprotected_domains = [\"dane.test\"]\n"),
    )
    .unwrap();
    let postconf = find_program("postconf").expect("postconf");
    let transport = format!("{sender_conf}/transport");
    let (state2, out2) = (lab.dir.join("state-enforce"), lab.dir.join("feed-enforce"));
    parse_and_feed(
        &sender_log_path,
        &state2,
        &out2,
        &enforce,
        &[
            "--postconf-path",
            postconf.to_str().expect("UTF-8 path"),
            "--postfix-config",
            &sender_conf,
            "--transport-map",
            &transport,
        ],
    );
    let version = lab.var("POSTFIX_VERSION");
    let (major, minor) = version.split_once('.').expect("a Postfix version");
    let minor: u32 = minor.split('.').next().unwrap().parse().unwrap();
    let floor = if (major.parse::<u32>().unwrap(), minor) >= (3, 6) {
        "protocols=>=TLSv1.2"
    } else {
        "protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1"
    };
    let policy = out2.join("tls_policy");
    // Only the CA-signed receiver earned historically-valid: the self-signed one is
    // tls-unverified, the plain one never-tls, the broken one flagged, the others unknown.
    assert_eq!(feed_entries(&policy), [format!("[{}]:{}\tencrypt {floor}", ca.0, ca.1)], "{}", policy.display());
    let postmap = find_program("postmap").expect("postmap");
    let looked_up = Command::new(&postmap)
        .args(["-c", &sender_conf, "-q", &format!("[{}]:{}", ca.0, ca.1), &format!("texthash:{}", policy.display())])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&looked_up.stdout).trim(), format!("encrypt {floor}"), "postmap -q");

    // The sender enforces it; then the receiver's STARTTLS disappears (same address and port).
    let policy_setting = format!("smtp_tls_policy_maps = texthash:{}", policy.display());
    lab.reload("postfix-out", &[&policy_setting]);
    let (before, status) = lab.send_one("before@trusted.test");
    assert_eq!(status, "sent", "TLS still offered: {}", attempt_lines(&log(), &before).join("\n"));
    let service = format!("{}:{}/inet/smtpd_tls_security_level=none", ca.0, ca.1);
    lab.reload("postfix-in", &[&service]);
    let (stripped, status) = lab.send_one("stripped@trusted.test");
    let attempt = attempt_lines(&log(), &stripped).join("\n");
    assert_eq!(status, "deferred", "not sent in clear: {attempt}");
    assert!(attempt.contains(&format!("TLS is required, but was not offered by host {0}[{0}]", ca.0)), "{attempt}");
    // A receiver without an entry is not held.
    let (clear, status) = lab.send_one("user@plain.test");
    let attempt = attempt_lines(&log(), &clear).join("\n");
    assert_eq!(status, "sent", "{attempt}");
    assert!(attempt.contains(&format!("relay={0}[{0}]:{1}", plain.0, plain.1)), "{attempt}");
}
