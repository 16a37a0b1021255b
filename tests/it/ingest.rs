//! `tlsledger ingest` against real files and real syslog senders: a followed log that keeps
//! growing while the ingester is killed with SIGKILL and restarted loses no observation and
//! emits no fragment; util-linux `logger` over TCP (RFC 6587 octet counting) and UDP reaches the
//! listener and becomes observations; so does what a private rsyslogd forwards over TCP and UDP;
//! a log rotated by logrotate (rename and copytruncate) while the ingester is killed counts each
//! numbered session once.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
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
    let unix_socket = dir.join("log.sock");
    let daemon = Reaped(Some(ingest(
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
            "--syslog-unix",
            unix_socket.to_str().unwrap(),
        ],
        &out,
    )));
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
    // A unix datagram socket, as /dev/log (logger -u).
    for message in [
        "connect from client.example[192.0.2.73]",
        "disconnect from client.example[192.0.2.73] ehlo=1 quit=1 commands=2",
    ] {
        let status = Command::new("logger")
            .args(["-u", unix_socket.to_str().unwrap(), "-t", "postfix/smtpd", "--id=4343", message])
            .status()
            .expect("logger");
        assert!(status.success());
    }
    wait_for("the unix socket session's observation", || std::fs::read_to_string(&out).unwrap().contains("192.0.2.73"));
    // Prometheus metrics and health, over plain HTTP.
    let get = |path: &str| -> String {
        let mut stream = std::net::TcpStream::connect(&metrics_addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        response
    };
    wait_for("the observations in /metrics", || get("/metrics").contains("\ntlsledger_observations_total 3\n"));
    let metrics = get("/metrics");
    assert!(metrics.contains("# TYPE tlsledger_lines_total counter\ntlsledger_lines_total 8\n"), "{metrics}");
    assert!(metrics.contains("tlsledger_syslog_messages_total{peer=\"::\"} 2\n"), "{metrics}");
    assert!(metrics.contains("tlsledger_syslog_messages_total{peer=\"127.0.0.1\"} 6\n"), "{metrics}");
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/nothing").starts_with("HTTP/1.1 404"));
    // A session still open at SIGTERM: syslog has no position to replay it from, so what is
    // known of it is emitted at shutdown instead of being lost.
    let status = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &tcp.to_string(), "-t", "postfix/smtpd", "--id=4444", "--tcp", "--octet-count"])
        .arg("connect from open.example[192.0.2.74]")
        .status()
        .expect("logger");
    assert!(status.success());
    wait_for("the open session's line", || get("/metrics").contains("\ntlsledger_lines_total 9\n"));
    assert!(!std::fs::read_to_string(&out).unwrap().contains("192.0.2.74"), "still open before SIGTERM");
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.take().wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let found = observations(&std::fs::read(&out).unwrap());
    let open = found.iter().find(|o| o["peer"]["ip"] == "192.0.2.74").expect("the open session, emitted at SIGTERM");
    assert_eq!(open["direction"], "inbound");
    for (ip, kind) in [("192.0.2.71", "syslog"), ("192.0.2.72", "syslog")] {
        let o = found.iter().find(|o| o["peer"]["ip"] == ip).unwrap_or_else(|| panic!("no observation of {ip}"));
        assert_eq!(o["direction"], "inbound");
        assert_eq!(o["outcome"], "tls");
        assert_eq!(o["tls"]["protocol"], "TLSv1.3");
        assert_eq!(o["source"]["kind"], kind);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("syslog 127.0.0.1: 7 messages"), "{stderr}");
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
    let daemon = Reaped(Some(ingest(
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
            "--log-format",
            "json",
        ],
        &out,
    )));
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
    let output = daemon.take().wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(std::fs::read_to_string(&out).unwrap().is_empty(), "nothing from a refused sender is used");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The daemon's own log is JSON with --log-format json.
    let event = stderr.lines().find(|l| l.contains("SIGTERM")).unwrap_or_else(|| panic!("{stderr}"));
    let event: serde_json::Value = serde_json::from_str(event).unwrap_or_else(|e| panic!("{e}: {event}"));
    assert_eq!(event["level"], "INFO");
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
    let daemon = Reaped(Some(ingest(
        &[
            "--config",
            config.to_str().unwrap(),
            "--no-state",
            "--stdout",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
        ],
        &out,
    )));
    let seen = |ip: &str| std::fs::read_to_string(&out).unwrap().contains(ip);
    wait_for("the first file's session", || seen("192.0.2.61"));
    assert!(!seen("192.0.2.62"), "the second file is not followed yet");
    write_config(&[&first, &second]);
    Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status().unwrap();
    wait_for("the second file's session after SIGHUP", || seen("192.0.2.62"));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.take().wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SIGHUP: configuration reloaded"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private rsyslogd (`-n`, its own configuration, pid file and work directory; no imuxsock or
/// imklog), killed and reaped when dropped, so a failing test never leaves it running.
struct Rsyslogd {
    child: std::process::Child,
}

impl Rsyslogd {
    /// Starts rsyslogd with `rules` (RainerScript) in `dir`.
    fn start(dir: &Path, rules: &str) -> Rsyslogd {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let config = dir.join("rsyslog.conf");
        std::fs::write(&config, format!("global(workDirectory=\"{}\")\n{rules}", work.display())).unwrap();
        let check = Command::new("rsyslogd").args(["-N1", "-f"]).arg(&config).output().expect("rsyslogd");
        assert!(check.status.success(), "rsyslog.conf: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        Rsyslogd { child }
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed and reaped when dropped (a failing test leaves no daemon behind).
struct Reaped(Option<std::process::Child>);

impl Reaped {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("not taken")
    }

    fn take(mut self) -> std::process::Child {
        self.0.take().expect("not taken")
    }

    fn id(&self) -> u32 {
        self.0.as_ref().expect("not taken").id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// rsyslog receives `logger` messages on two imtcp inputs, each bound to a ruleset that forwards
/// with omfwd: one over TCP with RFC 6587 octet counting (RFC 5424 format), the other over UDP
/// (the traditional forward format). Each Postfix smtpd session becomes one observation.
/// (The sessions differ per transport: the correlator joins the lines of one reporting host's
/// process whatever source they came from, so the same session twice would be one connection.)
#[test]
fn ingest_receives_syslog_forwarded_by_rsyslog_over_tcp_and_udp() {
    let dir = temp_dir("ingest-rsyslog");
    let out = dir.join("out.jsonl");
    // Ports of this test only (19_0xx–19_5xx), below the ephemeral range.
    let offset = std::process::id() % 180;
    let (to_tcp, to_udp) = (19_014 + offset, 19_614 + offset);
    let (tcp, udp) = (19_214 + offset, 19_414 + offset);
    let tcp_addr = format!("127.0.0.1:{tcp}");
    let daemon = Reaped(Some(ingest(
        &["--syslog-tcp", &tcp_addr, "--syslog-udp", &format!("127.0.0.1:{udp}"), "--no-state", "--stdout", "--stats"],
        &out,
    )));
    wait_for("tlsledger's TCP listener", || std::net::TcpStream::connect(&tcp_addr).is_ok());
    let rsyslogd = Rsyslogd::start(
        &dir,
        &format!(
            // Without permitSlashInProgramName rsyslog's APP-NAME of `postfix/smtpd[5000]:` is
            // `postfix`, and the forwarded RFC 5424 message no longer says which daemon logged it.
            "global(parser.permitSlashInProgramName=\"on\")\n\
             module(load=\"imtcp\")\n\
             ruleset(name=\"to_tcp\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{tcp}\" \
             protocol=\"tcp\" TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n\
             ruleset(name=\"to_udp\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{udp}\" \
             protocol=\"udp\") }}\n\
             input(type=\"imtcp\" port=\"{to_tcp}\" address=\"127.0.0.1\" ruleset=\"to_tcp\")\n\
             input(type=\"imtcp\" port=\"{to_udp}\" address=\"127.0.0.1\" ruleset=\"to_udp\")\n"
        ),
    );
    for port in [to_tcp, to_udp] {
        let addr = format!("127.0.0.1:{port}");
        wait_for("rsyslog's imtcp listeners", || std::net::TcpStream::connect(&addr).is_ok());
    }
    let sessions = [("192.0.2.91", to_tcp), ("192.0.2.92", to_tcp), ("192.0.2.93", to_udp), ("192.0.2.94", to_udp)];
    for (idx, (ip, rsyslog_port)) in sessions.iter().enumerate() {
        for message in [
            format!("connect from client.example[{ip}]"),
            format!("Anonymous TLS connection established from client.example[{ip}]: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"),
            format!("disconnect from client.example[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7"),
        ] {
            // RFC 3164, as Postfix logs through /dev/log. (FIXME: an RFC 5424 input forwarded in
            // rsyslog's traditional format has a tag without its colon, `postfix/smtpd[5000] connect
            // from …`, which the parser reports as `missing-tag`.)
            let status = Command::new("logger")
                .args(["-n", "127.0.0.1", "-P", &rsyslog_port.to_string(), "--tcp", "--octet-count", "--rfc3164"])
                .args(["-t", "postfix/smtpd", &format!("--id={}", 5000 + idx)])
                .arg(&message)
                .status()
                .expect("logger");
            assert!(status.success());
        }
    }
    let count = |transport: &str| {
        let text = std::fs::read_to_string(&out).unwrap();
        let name = format!("syslog-{transport}:127.0.0.1");
        text.lines().filter(|line| line.contains(&name)).count()
    };
    wait_for("an observation per session over TCP and over UDP", || count("tcp") == 2 && count("udp") == 2);
    drop(rsyslogd);
    let mut daemon = daemon.take();
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let status = daemon.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let found = observations(&std::fs::read(&out).unwrap());
    assert_eq!(found.len(), 4, "{found:?}");
    for (ip, port) in sessions {
        let transport = if port == to_tcp { "tcp" } else { "udp" };
        {
            let o = found
                .iter()
                .find(|o| o["peer"]["ip"] == ip && o["source"]["name"] == format!("syslog-{transport}:127.0.0.1"))
                .unwrap_or_else(|| panic!("no observation of {ip} over {transport}: {found:?}"));
            assert_eq!(o["lines"], 3, "{o}");
            assert_eq!(o["direction"], "inbound");
            assert_eq!(o["outcome"], "tls");
            assert_eq!(o["tls"]["protocol"], "TLSv1.2");
            assert_eq!(o["source"]["kind"], "syslog");
        }
    }
    assert!(stderr.contains("syslog 127.0.0.1: 12 messages"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The observations of a stdout file written by a run that may have been killed: a last line
/// cut short by SIGKILL is left out (the restart emits that observation again).
fn observations_of_killed_run(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    observations(complete.as_bytes())
}

/// Decision counts per (direction, IP) in the canonical feed of a state directory.
fn decisions_by_endpoint(state: &Path, out: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    decisions(state, out);
    let feed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tlsledger-feed.json")).unwrap()).unwrap();
    let endpoints = feed["endpoints"].as_array().unwrap();
    endpoints
        .iter()
        .map(|e| (format!("{} {}", e["direction"], e["ip"].as_str().unwrap()), e["evidence"]["decisions"].clone()))
        .collect()
}

/// A small deterministic generator (xorshift64*) for the kill points; the seed is in every
/// failure message.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Sequence oracle: a writer appends numbered Postfix smtpd sessions (session `n` is
/// `c{n}.example[10.x.y.z]` with pid 10000+n: connect, TLS, disconnect, three sessions
/// interleaved) to `mail.log`, Debian's logrotate rotates it (`-f`, private state file) in both
/// modes, `create` (rename) and `copytruncate`, and the ingester (following `mail.log*`) is
/// killed with SIGKILL at random points and restarted.
///
/// What it proves: every session number comes out on stdout at least once (at-least-once across
/// kills and rotations), every one is in ClickHouse exactly once (`FINAL`), no observation is a
/// fragment (every one is a whole TLS session), and the
/// reputation state counts every session exactly once, the same counts per endpoint as one
/// uninterrupted run over all the lines, whatever the follower saw of the rotations (renames,
/// truncations, a truncation and a rename between two polls, rotations while it was dead).
///
/// What it does not prove: the writer pauses while logrotate runs and every batch of sessions is
/// complete before a rotation, so a connection split across two generations (which the
/// correlator sees as two sources) and lines lost by copytruncate itself (written between its
/// copy and its truncation, in neither file) are outside this test; so are lines written to a
/// copytruncated file when the copy is not matched by the follow patterns (the documented window).
#[test]
fn ingest_follow_counts_each_line_once_across_logrotate_and_sigkill() {
    let dir = temp_dir("ingest-rotate");
    let seed = std::env::var("TLSLEDGER_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let mut random = Random(seed);
    let log = dir.join("mail.log");
    let reference_log = dir.join("reference.log");
    let logrotate_state = dir.join("logrotate.state");
    for mode in ["create", "copytruncate"] {
        std::fs::write(
            dir.join(format!("logrotate-{mode}.conf")),
            format!("{} {{\n    {mode}\n    rotate 100\n    missingok\n    nocompress\n}}\n", log.display()),
        )
        .unwrap();
    }
    let rotate = |mode: &str| {
        let output = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&logrotate_state)
            .arg(dir.join(format!("logrotate-{mode}.conf")))
            .output()
            .expect("logrotate");
        assert!(output.status.success(), "logrotate: {}", String::from_utf8_lossy(&output.stderr));
    };
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let session_lines = |n: u64, part: usize| {
        let at = (start + chrono::Duration::milliseconds(n as i64)).format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
        let (host, ip) = (format!("c{n}.example"), format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255));
        let message = match part {
            0 => format!("connect from {host}[{ip}]"),
            1 => format!("Anonymous TLS connection established from {host}[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"),
            _ => format!("disconnect from {host}[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7"),
        };
        format!("{at} mx1 postfix/smtpd[{}]: {message}\n", 10_000 + n)
    };
    // Sessions [first, end) with three open at a time, all closed at the end of the batch.
    let batch = |first: u64, end: u64| {
        let mut text = String::new();
        for i in first..end + 2 {
            if i < end {
                text.push_str(&session_lines(i, 0));
            }
            if i > first && i - 1 < end {
                text.push_str(&session_lines(i - 1, 1));
            }
            if i >= first + 2 {
                text.push_str(&session_lines(i - 2, 2));
            }
        }
        text
    };
    let append = |path: &Path, text: &str| {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    };
    let state = dir.join("state");
    let pattern = format!("{}*", log.display());
    let clickhouse = crate::clickhouse::Server::started(9);
    clickhouse.apply_schema("rotation");
    let spool = dir.join("spool");
    let start_ingester = |run: usize, exit_at_end: bool| {
        let mut args = vec![
            "--follow".to_owned(),
            pattern.clone(),
            "--state".to_owned(),
            state.display().to_string(),
            "--clickhouse".to_owned(),
            clickhouse.url.clone(),
            "--database".to_owned(),
            "rotation".to_owned(),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
            "--stdout".to_owned(),
            "--poll-ms".to_owned(),
            "20".to_owned(),
            "--checkpoint-interval-ms".to_owned(),
            "40".to_owned(),
        ];
        if exit_at_end {
            args.push("--exit-at-end".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ingest(&args, &dir.join(format!("run-{run}.jsonl")))
    };
    let checkpoint_stamp = || std::fs::metadata(state.join("checkpoints.json")).and_then(|m| m.modified()).ok();
    let out_len = |run: usize| std::fs::metadata(dir.join(format!("run-{run}.jsonl"))).map_or(0, |m| m.len());

    let (rounds, per_batch) = (24u64, 120u64);
    let mut run = 0;
    let mut daemon = Reaped(Some(start_ingester(run, false)));
    let (mut kills, mut renames, mut copytruncates) = (0, 0, 0);
    for round in 0..rounds {
        let text = batch(round * per_batch + 1, (round + 1) * per_batch + 1);
        append(&log, &text);
        append(&reference_log, &text);
        // Both modes, several times each, at random rounds (at least twice each).
        let choice = match round {
            2 | 14 => 0,
            9 | 19 => 1,
            _ => random.below(3),
        };
        match choice {
            0 if round + 1 < rounds => {
                rotate("create");
                renames += 1;
            }
            1 if round + 1 < rounds => {
                rotate("copytruncate");
                copytruncates += 1;
            }
            _ => {}
        }
        if random.below(3) == 0 || round == 4 || round == 13 {
            // A random point: at once, after some output of this run, or after a new checkpoint
            // (each sync point renames a fresh file into place).
            match random.below(3) {
                0 => {}
                1 => wait_for("output before a kill", || out_len(run) > 0),
                _ => {
                    let before = checkpoint_stamp();
                    wait_for("a checkpoint before a kill", || {
                        checkpoint_stamp().is_some() && checkpoint_stamp() != before
                    });
                }
            }
            daemon.child().kill().unwrap();
            daemon.child().wait().unwrap();
            kills += 1;
            run += 1;
            daemon = Reaped(Some(start_ingester(run, false)));
        }
    }
    assert!(
        renames >= 2 && copytruncates >= 2 && kills >= 2,
        "seed {seed}: the schedule has {renames} renames, {copytruncates} copytruncates, {kills} kills"
    );
    // The last run reads to the end and exits.
    daemon.child().kill().unwrap();
    daemon.child().wait().unwrap();
    drop(daemon);
    run += 1;
    let output = start_ingester(run, true).wait_with_output().unwrap();
    assert!(output.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&output.stderr));
    let rotated = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("mail.log."))
        .count();
    assert_eq!(rotated, renames + copytruncates, "logrotate kept every rotated file");

    // Reference: one uninterrupted run over all the lines.
    let reference_state = dir.join("reference-state");
    let reference_out = dir.join("reference.jsonl");
    let reference = ingest(
        &[
            "--follow",
            reference_log.to_str().unwrap(),
            "--state",
            reference_state.to_str().unwrap(),
            "--stdout",
            "--exit-at-end",
            "--poll-ms",
            "20",
        ],
        &reference_out,
    );
    assert!(reference.wait_with_output().unwrap().status.success());
    let n_sessions = rounds * per_batch;
    assert_eq!(event_ids(&reference_out).len() as u64, n_sessions);

    let mut seen = BTreeSet::new();
    for idx in 0..=run {
        for o in observations_of_killed_run(&dir.join(format!("run-{idx}.jsonl"))) {
            assert_eq!(o["outcome"], "tls", "seed {seed}: a fragment: {o}");
            let host = o["peer"]["hostname"].as_str().unwrap_or_else(|| panic!("seed {seed}: no host: {o}"));
            let n: u64 = host.strip_prefix('c').and_then(|h| h.strip_suffix(".example")).unwrap().parse().unwrap();
            seen.insert(n);
        }
    }
    let missing: Vec<u64> = (1..=n_sessions).filter(|n| !seen.contains(n)).take(10).collect();
    assert!(missing.is_empty(), "seed {seed}: sessions never emitted, e.g. {missing:?}");
    assert_eq!(seen.len() as u64, n_sessions, "seed {seed}: numbers that were never written");
    let got = decisions_by_endpoint(&state, &dir.join("feed"));
    let want = decisions_by_endpoint(&reference_state, &dir.join("reference-feed"));
    assert_eq!(want.len() as u64, n_sessions);
    let differ: Vec<_> =
        want.iter().filter(|(k, v)| got.get(*k) != Some(v)).map(|(k, v)| (k, v, got.get(k))).take(5).collect();
    assert!(differ.is_empty(), "seed {seed}: reputation counts (reference, got) differ, e.g. {differ:?}");
    assert_eq!(got.len(), want.len(), "seed {seed}");
    assert!(want.values().all(|d| d.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>() == 1));
    // ClickHouse: every session exactly once (observations emitted again after a kill carry the
    // same event id, which `FINAL` collapses).
    let counts = clickhouse.query(
        "SELECT count(), uniqExact(event_id), uniqExact(peer_hostname), countIf(outcome != 'tls') \
         FROM rotation.observations FINAL",
    );
    assert_eq!(counts, format!("{n_sessions}\t{n_sessions}\t{n_sessions}\t0\n"), "seed {seed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tls-logging auto` (the default) calls a connection without a TLS line plaintext only for an
/// instance seen logging TLS summaries. That evidence is kept with the checkpoint: after a restart
/// the first plaintext delivery is still plaintext, as in one uninterrupted run.
#[test]
fn ingest_keeps_the_tls_logging_evidence_across_a_restart() {
    let dir = temp_dir("ingest-tls-evidence");
    let log = dir.join("mail.log");
    let tls = "2026-11-20T08:00:00+00:00 mx postfix/smtp[100]: Trusted TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
               2026-11-20T08:00:01+00:00 mx postfix/smtp[100]: 3F1A2B3C4D: to=<u@a.example>, relay=mx.a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n";
    let plain = "2026-11-20T08:05:00+00:00 mx postfix/smtp[101]: 3F1A2B3C4E: to=<u@b.example>, relay=mx.b.example[192.0.2.2]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n";
    let outcomes = |out: &Path| -> Vec<(String, String)> {
        observations(&std::fs::read(out).unwrap())
            .iter()
            .map(|o| (o["peer"]["ip"].as_str().unwrap_or("").to_owned(), o["outcome"].as_str().unwrap().to_owned()))
            .collect()
    };
    let run = |name: &str, state: &Path| -> PathBuf {
        let out = dir.join(name);
        let args = ["--follow", log.to_str().unwrap(), "--state", state.to_str().unwrap(), "--stdout", "--exit-at-end"];
        let output = ingest(&args, &out).wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        out
    };

    // One run over both lines: the instance logs TLS, so the second delivery is plaintext.
    std::fs::write(&log, format!("{tls}{plain}")).unwrap();
    let reference = outcomes(&run("reference.jsonl", &dir.join("reference-state")));
    assert_eq!(reference, [("192.0.2.1".into(), "tls".into()), ("192.0.2.2".into(), "plaintext".into())]);

    // The same lines in two runs: the second run sees only the plaintext delivery.
    std::fs::write(&log, tls).unwrap();
    let state = dir.join("state");
    assert_eq!(outcomes(&run("first.jsonl", &state)), [("192.0.2.1".to_owned(), "tls".to_owned())]);
    let checkpoints = std::fs::read_to_string(state.join("checkpoints.json")).unwrap();
    assert!(checkpoints.contains("\"tls_logging\""), "{checkpoints}");
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(plain.as_bytes()).unwrap();
    drop(file);
    assert_eq!(outcomes(&run("second.jsonl", &state)), [("192.0.2.2".to_owned(), "plaintext".to_owned())]);
}

/// A quiet server's last connection is not held back: with no new line, wall-clock time counts as
/// log time, so the connection is emitted after `--idle-timeout-secs` although the log says
/// nothing more (a Postfix `smtp` process may reuse a connection, so a delivery alone does not
/// end it).
#[test]
fn ingest_emits_a_quiet_logs_last_connection_after_the_idle_timeout() {
    let dir = temp_dir("ingest-idle");
    let log = dir.join("mail.log");
    std::fs::write(
        &log,
        "2026-11-20T08:00:00+00:00 mx postfix/smtp[100]: Trusted TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
         2026-11-20T08:00:01+00:00 mx postfix/smtp[100]: 3F1A2B3C4D: to=<u@a.example>, relay=mx.a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n",
    )
    .unwrap();
    let out = dir.join("out.jsonl");
    let state = dir.join("state");
    let args = [
        "--follow",
        log.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--stdout",
        "--poll-ms",
        "50",
        "--idle-timeout-secs",
        "2",
    ];
    let daemon = Reaped(Some(ingest(&args, &out)));
    wait_for("the quiet connection's observation", || {
        std::fs::read_to_string(&out).unwrap_or_default().contains("192.0.2.1")
    });
    let found = observations(&std::fs::read(&out).unwrap());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0]["outcome"].as_str(), found[0]["delivered"].as_bool()), (Some("tls"), Some(true)));
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
