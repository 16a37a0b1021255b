//! `tlsledger ingest` against real files and real syslog senders: a followed log that keeps
//! growing while the ingester is killed with SIGKILL and restarted loses no observation and
//! emits no fragment; util-linux `logger` over TCP (RFC 6587 octet counting) and UDP reaches the
//! listener and becomes observations.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{observations, repo};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tlsledger-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn event_ids(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    observations(&bytes).iter().map(|o| o["event_id"].as_str().unwrap().to_owned()).collect()
}

/// Waits (polling, with a deadline) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn ingest(args: &[&str], stdout: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .arg("ingest")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tlsledger ingest")
}

/// Sum of the decision counts of every endpoint in the canonical feed of a state directory.
fn decisions(state: &Path, out: &Path) -> u64 {
    let status = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(["feed", "--force", "--state"])
        .arg(state)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
    let feed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tlsledger-feed.json")).unwrap()).unwrap();
    feed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["evidence"]["decisions"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>())
        .sum()
}

#[test]
fn ingest_follow_survives_sigkill_without_loss_or_fragments() {
    let dir = temp_dir("ingest-kill");
    let all = dir.join("all.log");
    let status = Command::new("python3")
        .arg(repo().join("bench/gen-postfix-log.py"))
        .args(["--size-mb", "3", "--seed", "7", "--out"])
        .arg(&all)
        .status()
        .expect("python3");
    assert!(status.success());
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let third = lines.len() / 3;
    let log = dir.join("mail.log");
    let append = |part: &[&str]| {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        for line in part {
            writeln!(file, "{line}").unwrap();
        }
    };
    let log_arg = log.to_str().unwrap();

    // Reference: the whole file in one uninterrupted run.
    append(&lines);
    let reference_out = dir.join("reference.jsonl");
    let reference_state = dir.join("reference-state");
    let mut run = ingest(
        &[
            "--follow",
            log_arg,
            "--state",
            reference_state.to_str().unwrap(),
            "--stdout",
            "--exit-at-end",
            "--poll-ms",
            "20",
        ],
        &reference_out,
    );
    assert!(run.wait().unwrap().success());
    let reference: BTreeSet<String> = event_ids(&reference_out).into_iter().collect();
    assert!(reference.len() > 1000, "{} observations", reference.len());

    // The same file growing in three steps, with a SIGKILL in the middle.
    std::fs::remove_file(&log).unwrap();
    append(&lines[..third]);
    let state = dir.join("state");
    let first_out = dir.join("first.jsonl");
    let args = ["--follow", log_arg, "--state", state.to_str().unwrap(), "--stdout", "--poll-ms", "20"];
    let mut first = ingest(&[&args[..], &["--checkpoint-interval-ms", "50"]].concat(), &first_out);
    wait_for("a first checkpoint", || state.join("checkpoints.json").exists());
    append(&lines[third..2 * third]);
    let size = std::fs::metadata(&first_out).unwrap().len();
    wait_for("observations of the second part", || std::fs::metadata(&first_out).unwrap().len() > size);
    first.kill().unwrap();
    first.wait().unwrap();
    append(&lines[2 * third..]);
    let second_out = dir.join("second.jsonl");
    let feed_dir = dir.join("live-feed");
    let second = ingest(
        &[&args[..], &["--exit-at-end", "--stats", "--feed-dir", feed_dir.to_str().unwrap()]].concat(),
        &second_out,
    );
    let output = second.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let mut seen: BTreeSet<String> = BTreeSet::new();
    seen.extend(event_ids(&first_out));
    seen.extend(event_ids(&second_out));
    let lost: Vec<_> = reference.difference(&seen).take(5).collect();
    let fragments: Vec<_> = seen.difference(&reference).take(5).collect();
    assert!(lost.is_empty(), "lost observations, e.g. {lost:?}");
    assert!(fragments.is_empty(), "observations the uninterrupted run does not have, e.g. {fragments:?}");
    // The reputation state counted every observation once.
    assert_eq!(decisions(&state, &dir.join("feed")), decisions(&reference_state, &dir.join("reference-feed")));
    // The daemon kept its own feed files current: the same endpoints as `tlsledger feed`.
    let endpoints = |dir: &Path| {
        let feed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("tlsledger-feed.json")).unwrap()).unwrap();
        feed["endpoints"].as_array().unwrap().len()
    };
    assert_eq!(endpoints(&feed_dir), endpoints(&dir.join("feed")));
    assert!(feed_dir.join("smtp_discard_ehlo.cidr").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ingest_receives_syslog_from_logger_over_tcp_and_udp() {
    let dir = temp_dir("ingest-syslog");
    let out = dir.join("out.jsonl");
    // High loopback ports below the ephemeral range, distinct from the other harnesses.
    let (tcp, udp) = (16_514 + std::process::id() % 400, 16_914 + std::process::id() % 400);
    let tcp_addr = format!("127.0.0.1:{tcp}");
    let udp_addr = format!("127.0.0.1:{udp}");
    let metrics_addr = format!("127.0.0.1:{}", 18_114 + std::process::id() % 400);
    let daemon = ingest(
        &[
            "--syslog-tcp",
            &tcp_addr,
            "--syslog-udp",
            &udp_addr,
            "--no-state",
            "--stdout",
            "--stats",
            "--metrics-listen",
            &metrics_addr,
        ],
        &out,
    );
    wait_for("the TCP listener", || std::net::TcpStream::connect(&tcp_addr).is_ok());
    let session = |ip: &str, transport: &str, port: u16| {
        for message in [
            format!("connect from client.example[{ip}]"),
            format!("Anonymous TLS connection established from client.example[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
            format!("disconnect from client.example[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7"),
        ] {
            let mut logger = Command::new("logger");
            logger.args(["-n", "127.0.0.1", "-P", &port.to_string(), "-t", "postfix/smtpd", "--id=4242"]);
            if transport == "tcp" {
                logger.args(["--tcp", "--octet-count"]);
            } else {
                logger.arg("--udp");
            }
            assert!(logger.arg(&message).status().expect("logger").success());
        }
    };
    session("192.0.2.71", "tcp", tcp as u16);
    wait_for("the TCP session's observation", || std::fs::read_to_string(&out).unwrap().contains("192.0.2.71"));
    session("192.0.2.72", "udp", udp as u16);
    wait_for("the UDP session's observation", || std::fs::read_to_string(&out).unwrap().contains("192.0.2.72"));
    // Prometheus metrics and health, over plain HTTP.
    let get = |path: &str| -> String {
        let mut stream = std::net::TcpStream::connect(&metrics_addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        response
    };
    wait_for("both observations in /metrics", || get("/metrics").contains("\ntlsledger_observations_total 2\n"));
    let metrics = get("/metrics");
    assert!(metrics.contains("# TYPE tlsledger_lines_total counter\ntlsledger_lines_total 6\n"), "{metrics}");
    assert!(metrics.contains("tlsledger_syslog_messages_total{peer=\"127.0.0.1\"} 6\n"), "{metrics}");
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/nothing").starts_with("HTTP/1.1 404"));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let found = observations(&std::fs::read(&out).unwrap());
    for (ip, kind) in [("192.0.2.71", "syslog"), ("192.0.2.72", "syslog")] {
        let o = found.iter().find(|o| o["peer"]["ip"] == ip).unwrap_or_else(|| panic!("no observation of {ip}"));
        assert_eq!(o["direction"], "inbound");
        assert_eq!(o["outcome"], "tls");
        assert_eq!(o["tls"]["protocol"], "TLSv1.3");
        assert_eq!(o["source"]["kind"], kind);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("syslog 127.0.0.1: 6 messages"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ingest_refuses_and_counts_syslog_senders_outside_the_allow_list() {
    let dir = temp_dir("ingest-refused");
    let out = dir.join("out.jsonl");
    let (tcp, udp) = (17_314 + std::process::id() % 400, 17_714 + std::process::id() % 400);
    let tcp_addr = format!("127.0.0.1:{tcp}");
    let udp_addr = format!("127.0.0.1:{udp}");
    // Only a documentation network may send: loopback is refused.
    let daemon = ingest(
        &[
            "--syslog-tcp",
            &tcp_addr,
            "--syslog-udp",
            &udp_addr,
            "--syslog-allow",
            "192.0.2.0/24",
            "--no-state",
            "--stdout",
            "--stats",
        ],
        &out,
    );
    wait_for("the TCP listener", || std::net::TcpStream::connect(&tcp_addr).is_ok());
    // A sender of our own: the listener closes the connection without reading, which the
    // sender sees as end of stream (or a reset) once the refusal has been counted.
    let mut sender = std::net::TcpStream::connect(&tcp_addr).unwrap();
    let _ = sender.write_all(b"39 <22>Nov  3 13:35:12 mx1 postfix/smtpd[1]: x");
    let mut buf = [0u8; 16];
    let closed = matches!(std::io::Read::read(&mut sender, &mut buf), Ok(0) | Err(_));
    assert!(closed, "a refused connection is closed");
    // A datagram too (its refusal is counted asynchronously; not asserted).
    let _ = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &udp.to_string(), "--udp", "-t", "postfix/smtpd", "connect from x[192.0.2.81]"])
        .status();
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(std::fs::read_to_string(&out).unwrap().is_empty(), "nothing from a refused sender is used");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|l| l.contains("syslog 127.0.0.1:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(": 0 messages"), "{line}");
    let refused: u64 = line.split(", ").find_map(|part| part.strip_suffix(" refused")?.parse().ok()).unwrap();
    assert!(refused >= 2, "the readiness probe and the sender are refused: {line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ingest_sighup_reloads_the_follow_patterns() {
    let dir = temp_dir("ingest-sighup");
    let (first, second) = (dir.join("first.log"), dir.join("second.log"));
    let session = |ip: &str| {
        format!(
            "2026-11-30T12:00:00.000000+00:00 mx1 postfix/smtpd[77]: connect from c.example[{ip}]\n\
             2026-11-30T12:00:01.000000+00:00 mx1 postfix/smtpd[77]: disconnect from c.example[{ip}] ehlo=1 quit=1 commands=2\n"
        )
    };
    std::fs::write(&first, session("192.0.2.61")).unwrap();
    std::fs::write(&second, session("192.0.2.62")).unwrap();
    let config = dir.join("ingest.toml");
    let write_config = |files: &[&Path]| {
        let list: Vec<String> = files.iter().map(|f| format!("{:?}", f.display().to_string())).collect();
        std::fs::write(&config, format!("follow = [{}]\npoll_ms = 20\n", list.join(", "))).unwrap();
    };
    write_config(&[&first]);
    let out = dir.join("out.jsonl");
    let checkpoints = dir.join("checkpoints");
    let daemon = ingest(
        &[
            "--config",
            config.to_str().unwrap(),
            "--no-state",
            "--stdout",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
        ],
        &out,
    );
    let seen = |ip: &str| std::fs::read_to_string(&out).unwrap().contains(ip);
    wait_for("the first file's session", || seen("192.0.2.61"));
    assert!(!seen("192.0.2.62"), "the second file is not followed yet");
    write_config(&[&first, &second]);
    Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status().unwrap();
    wait_for("the second file's session after SIGHUP", || seen("192.0.2.62"));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SIGHUP: configuration reloaded"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
