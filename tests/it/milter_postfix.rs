//! The milter behind a real Postfix smtpd: `tests/harness/postfix-milter.sh` starts a private
//! Postfix on 127.0.0.1 (STARTTLS with a private CA, client certificates asked for, delivery into
//! a Maildir) whose `smtpd_milters` is our milter, with `milter_default_action = accept`. swaks
//! sends sessions over STARTTLS with TLS 1.3 and TLS 1.2, in plaintext, with a client
//! certificate, and with forged `X-TLSLedger` headers, and one hand-written session carries two
//! messages and an aborted one (RSET); the test checks each session's Observation
//! (against Postfix's own log of the same session) and the header in each delivered message.
//! Then the milter is killed with SIGKILL and the next session must still be accepted and
//! delivered, without our header.
//!
//! `ingest_with_milter_counts_each_session_once` runs the same lab under `tlsledger ingest
//! --follow MAILLOG --milter-listen`: the log and the milter both see every session, and each
//! must be counted once (stdout, the reputation state and ClickHouse), with the milter's
//! Observation kept, except where the milter could only say `unknown` (no MAIL: a session that
//! quit after EHLO, a failed TLS 1.0 handshake) and the log knows better.
//!
//! Ports (no other test uses 13000-14999): smtpd on 127.0.0.1 in 13000-13999, the ClickHouse
//! 18.16 server of the ingest test in 14000-14999, the milter on a free port picked by the
//! kernel (`inet:127.0.0.1:0`). The test command installs Postfix and
//! swaks (`tests/harness/install-deps.sh postfix`); these tests fail, never skip, without them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::repo;
use crate::milter::Milter;

/// The lab script.
fn lab_script() -> PathBuf {
    repo().join("tests/harness/postfix-milter.sh")
}

/// A running Postfix with our milter; stopped when dropped (its folder is kept after a failure).
struct Lab {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Lab {
    /// Starts the lab for `milter` (Postfix `smtpd_milters` syntax) in a fresh folder. Each test
    /// takes its own `slot`; a port in use moves on to the next candidate.
    fn up(name: &str, slot: u16, milter: &str) -> Lab {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("postfix-milter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = (std::process::id() % 250) as u16 * 4 + slot;
        let mut last = String::new();
        for attempt in 0..6u16 {
            let port = 13_000 + (first + attempt * 401) % 1000;
            let output = Command::new("bash")
                .arg(lab_script())
                .arg("up")
                .arg(&dir)
                .env("MILTER_SMTPD_PORT", port.to_string())
                .env("MILTER_SPEC", milter)
                .output()
                .expect("run postfix-milter.sh");
            if output.status.success() {
                let text = std::fs::read_to_string(dir.join("milter.env")).expect("milter.env");
                let env = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return Lab { dir, env };
            }
            last = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            if !last.contains("is in use") {
                break;
            }
        }
        let _ = Command::new("bash").arg(lab_script()).arg("down").arg(&dir).output();
        panic!("postfix-milter.sh up failed:\n{last}");
    }

    fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} missing from milter.env"))
    }

    /// One swaks session to the lab's smtpd with `extra` options and `Subject: subject`; returns
    /// the queue id of the accepted message.
    fn swaks(&self, subject: &str, extra: &[&str]) -> String {
        let output = Command::new("swaks")
            .args(["--server", self.var("SMTPD_ADDR"), "--port", self.var("SMTPD_PORT"), "--timeout", "30"])
            .args(["--ehlo", "client.milter.test", "--from", "sender@client.milter.test", "--to", "inbox@milter.test"])
            .args(["--header", &format!("Subject: {subject}")])
            .args(extra)
            .output()
            .expect("swaks not found: run tests/harness/install-deps.sh postfix");
        let transcript = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "swaks {subject} failed:\n{transcript}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        transcript
            .lines()
            .find_map(|l| l.split("250 2.0.0 Ok: queued as ").nth(1))
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|| panic!("no queue id in the swaks transcript of {subject}:\n{transcript}"))
    }

    /// One plaintext SMTP session written by hand: a message, a message aborted with RSET after
    /// RCPT, and a second message carrying a forged header; returns the two queue ids.
    fn several_messages(&self) -> Vec<String> {
        use std::io::{BufRead, BufReader, Write};
        let address = format!("{}:{}", self.var("SMTPD_ADDR"), self.var("SMTPD_PORT"));
        let stream = std::net::TcpStream::connect(&address).expect("connect to smtpd");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut transcript = String::new();
        // Reads one (multi-line) reply; panics unless its code starts with `want`.
        let mut reply = |want: char, transcript: &mut String| -> String {
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read reply");
                transcript.push_str(&line);
                assert!(line.starts_with(want), "unexpected reply {line:?}; transcript:\n{transcript}");
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line;
                }
            }
        };
        let mut send = |text: &str, transcript: &mut String| {
            transcript.push_str(text);
            writer.write_all(text.as_bytes()).expect("write command");
        };
        reply('2', &mut transcript);
        send("EHLO client.milter.test\r\n", &mut transcript);
        reply('2', &mut transcript);
        let mut queue_ids = Vec::new();
        for (n, abort, extra) in
            [(1, false, ""), (0, true, ""), (2, false, "X-TLSLedger: class=historically-valid; forged=3\r\n")]
        {
            send("MAIL FROM:<sender@client.milter.test>\r\n", &mut transcript);
            reply('2', &mut transcript);
            send("RCPT TO:<inbox@milter.test>\r\n", &mut transcript);
            reply('2', &mut transcript);
            if abort {
                send("RSET\r\n", &mut transcript);
                reply('2', &mut transcript);
                continue;
            }
            send("DATA\r\n", &mut transcript);
            reply('3', &mut transcript);
            send(&format!("Subject: multi-{n}\r\n{extra}\r\nMessage {n} of one session.\r\n.\r\n"), &mut transcript);
            let line = reply('2', &mut transcript);
            let queue_id = line.split("queued as ").nth(1).map(|id| id.trim().to_owned());
            queue_ids.push(queue_id.unwrap_or_else(|| panic!("no queue id in {line:?}")));
        }
        send("QUIT\r\n", &mut transcript);
        reply('2', &mut transcript);
        queue_ids
    }

    /// The delivered messages, waiting (at most 60 s) until there are `n`: (Subject, the values
    /// of every `X-TLSLedger` header).
    fn delivered(&self, n: usize) -> HashMap<String, Vec<String>> {
        let new = Path::new(self.var("MAILDIR")).join("new");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let files: Vec<PathBuf> =
                std::fs::read_dir(&new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            if files.len() >= n {
                assert_eq!(files.len(), n, "more messages than sessions in {}", new.display());
                return files.iter().map(|f| headers(&std::fs::read_to_string(f).expect("message"))).collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages delivered after 60 s; log:\n{}",
                files.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.var("MAILLOG")).unwrap_or_default()
    }

    /// Waits (at most 60 s) until Postfix has logged `n` smtpd disconnects.
    fn wait_disconnects(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().lines().filter(|l| l.contains("/smtpd[") && l.contains(": disconnect from ")).count() < n {
            assert!(Instant::now() < deadline, "fewer than {n} disconnects after 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client port Postfix logged for message `queue_id` (`QUEUEID: client=unknown[127.0.0.1]:PORT`).
    fn client_port(&self, queue_id: &str) -> u64 {
        let log = self.log();
        let prefix = format!(": {queue_id}: client=");
        log.lines()
            .find_map(|l| l.split(&prefix).nth(1))
            .and_then(|rest| rest.rsplit(':').next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no client line for {queue_id} in:\n{log}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(lab_script()).arg("down").arg(&self.dir).output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// (Subject, values of `X-TLSLedger`) of a message (unfolded header lines).
pub(crate) fn headers(message: &str) -> (String, Vec<String>) {
    let head = message.split("\n\n").next().unwrap_or("");
    let mut subject = String::new();
    let mut ours = Vec::new();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("subject") {
                subject = value.trim().to_owned();
            } else if name.eq_ignore_ascii_case("x-tlsledger") {
                ours.push(value.trim().to_owned());
            }
        }
    }
    (subject, ours)
}

/// The one observation that names `queue_id`.
pub(crate) fn by_queue_id<'a>(observations: &'a [Value], queue_id: &str) -> &'a Value {
    let found: Vec<&Value> = observations
        .iter()
        .filter(|o| o["queue_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == queue_id)))
        .collect();
    assert_eq!(found.len(), 1, "one observation with {queue_id} expected in {observations:#?}");
    found[0]
}

#[test]
fn postfix_smtpd_milter_sessions_header_and_kill() {
    let mut milter = Milter::start("inet:127.0.0.1:0", &[]);
    let lab = Lab::up("standalone", 0, &milter.bound);
    let cert = lab.var("CLIENT_CERT").to_owned();
    let key = lab.var("CLIENT_KEY").to_owned();
    let sessions: [(&str, Vec<&str>); 5] = [
        ("tls13", vec!["--tls", "--tls-protocol", "tlsv1_3"]),
        ("tls12", vec!["--tls", "--tls-protocol", "tlsv1_2"]),
        ("plain", vec![]),
        ("client-cert", vec!["--tls", "--tls-cert", &cert, "--tls-key", &key]),
        ("forged", vec!["--add-header", "X-TLSLedger: class=historically-valid; forged=1\nX-Tlsledger: forged=2"]),
    ];
    let queue_ids: HashMap<&str, String> =
        sessions.iter().map(|(subject, extra)| (*subject, lab.swaks(subject, extra))).collect();
    let multi = lab.several_messages();
    let n_sessions = sessions.len() + 1;

    let observations = milter.wait_observations(n_sessions);
    assert_eq!(observations.len(), n_sessions, "{observations:#?}");
    for o in &observations {
        assert_eq!((o["direction"].as_str(), o["source"]["kind"].as_str()), (Some("inbound"), Some("milter")));
        assert_eq!((o["source"]["trust"].as_str(), o["mta"].as_str()), (Some("milter"), Some("postfix")));
        assert_eq!((o["reporter"].as_str(), o["delivered"].as_bool()), (Some("mx.milter.test"), Some(true)));
        assert_eq!(o["peer"]["ip"], "127.0.0.1");
    }
    let tls13 = by_queue_id(&observations, &queue_ids["tls13"]);
    assert_eq!((tls13["outcome"].as_str(), tls13["tls"]["protocol"].as_str()), (Some("tls"), Some("TLSv1.3")));
    assert_eq!(tls13["tls"]["trust"], Value::Null, "no client certificate: Postfix cannot tell");
    let tls12 = by_queue_id(&observations, &queue_ids["tls12"]);
    assert_eq!((tls12["outcome"].as_str(), tls12["tls"]["protocol"].as_str()), (Some("tls"), Some("TLSv1.2")));
    assert!(tls12["tls"]["cipher"].as_str().is_some_and(|c| c.starts_with("ECDHE-")), "{tls12}");
    let plain = by_queue_id(&observations, &queue_ids["plain"]);
    assert_eq!((plain["outcome"].as_str(), plain["tls"].is_null()), (Some("plaintext"), true));
    let cert = by_queue_id(&observations, &queue_ids["client-cert"]);
    assert_eq!((cert["outcome"].as_str(), cert["tls"]["trust"].as_str()), (Some("tls"), Some("trusted")));
    let forged = by_queue_id(&observations, &queue_ids["forged"]);
    assert_eq!(forged["outcome"], "plaintext");
    // Several messages (and an aborted one) in one session: one observation with both queue ids.
    let several = by_queue_id(&observations, &multi[0]);
    assert_eq!(several["queue_ids"], serde_json::json!(multi), "{several}");
    assert_eq!((several["outcome"].as_str(), several["delivered"].as_bool()), (Some("plaintext"), Some(true)));
    // The milter's session is the one Postfix logged: same client port.
    for (subject, queue_id) in &queue_ids {
        let o = by_queue_id(&observations, queue_id);
        assert_eq!(o["peer"]["port"].as_u64(), Some(lab.client_port(queue_id)), "{subject}");
    }

    let messages = lab.delivered(sessions.len() + multi.len());
    let header = |subject: &str| -> &Vec<String> {
        messages.get(subject).unwrap_or_else(|| panic!("no message {subject} in {messages:#?}"))
    };
    for (subject, want) in [
        ("tls13", "tls=TLSv1.3; cipher=TLS_AES_"),
        ("tls12", "tls=TLSv1.2; cipher=ECDHE-"),
        ("plain", "tls=none"),
        ("client-cert", "tls=TLSv1.3"),
        ("forged", "tls=none"),
        ("multi-1", "tls=none"),
        ("multi-2", "tls=none"),
    ] {
        let values = header(subject);
        assert_eq!(values.len(), 1, "exactly our one header in {subject}: {values:?}");
        assert!(values[0].starts_with("class=unknown; flags=none;"), "{subject}: {values:?}");
        assert!(values[0].contains(want), "{subject}: {values:?} lacks {want}");
        assert!(!values[0].contains("forged"), "{subject}: a forged copy survived: {values:?}");
    }

    // The milter dies mid-run: Postfix still accepts and delivers, without our header.
    let pid = milter.pid();
    let before_kill = milter.kill();
    assert_eq!(before_kill.len(), n_sessions, "nothing more was printed");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || !is_running(pid), "milter {pid} still runs");
    lab.swaks("after-kill", &["--tls"]);
    let messages = lab.delivered(sessions.len() + multi.len() + 1);
    assert_eq!(messages["after-kill"], Vec::<String>::new(), "no header without the milter");
    assert!(
        lab.log()
            .contains(&format!("warning: connect to Milter service {}: Connection refused", lab.var("MILTER_SPEC"))),
        "Postfix noticed the dead milter and went on:\n{}",
        lab.log()
    );
}

/// True when `pid` is a live process (not a zombie).
pub(crate) fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A private ClickHouse server (tests/harness/clickhouse.sh) on 127.0.0.1:14000-14999; stopped
/// when dropped.
struct ClickHouse {
    dir: PathBuf,
    port: u16,
}

impl ClickHouse {
    fn start(name: &str) -> ClickHouse {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("clickhouse-milter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("ClickHouse folder");
        let port = 14_000 + (std::process::id() % 250) as u16 * 4;
        let server = ClickHouse { dir, port };
        let output = server.script("start");
        assert!(output.status.success(), "cannot start ClickHouse:\n{}", String::from_utf8_lossy(&output.stderr));
        server
    }

    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(repo().join("tests/harness/clickhouse.sh"))
            .arg(action)
            .arg(&self.dir)
            .env("CH_HTTP_PORT", self.port.to_string())
            .env("CH_TCP_PORT", (self.port + 1).to_string())
            .env("CH_INTERSERVER_PORT", (self.port + 2).to_string())
            .output()
            .expect("run tests/harness/clickhouse.sh (tests/harness/install-deps.sh clickhouse installs it)")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `sql` over HTTP.
    fn query(&self, sql: &str) -> String {
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", sql, &format!("{}/", self.url())])
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "query failed: {sql}\n{body}");
        body
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.script("stop");
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The offset of `log` in `checkpoints.json` of `dir` (0 when not checkpointed yet).
fn checkpointed_offset(dir: &Path, log: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(dir.join("checkpoints.json")) else { return 0 };
    let Ok(checkpoints) = serde_json::from_str::<Value>(&text) else { return 0 };
    checkpoints["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["path"] == log))
        .and_then(|f| f["offset"].as_u64())
        .unwrap_or(0)
}

#[test]
fn ingest_with_milter_counts_each_session_once() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ingest-milter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    let state = scratch.join("state");
    // The lab's log path is known before the lab exists; the follower waits for the file.
    let lab_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("postfix-milter-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&lab_dir);
    let maillog = lab_dir.join("postfix-milter/maillog");
    let (maillog_arg, state_arg) = (maillog.to_str().expect("UTF-8"), state.to_str().expect("UTF-8"));
    let clickhouse = ClickHouse::start("ingest");
    let url = clickhouse.url();
    let database = format!("milter_ingest_{}", std::process::id());
    let output = crate::common::tlsledger(&["schema", "apply", "--clickhouse", &url, "--database", &database], b"");
    assert!(output.status.success(), "schema apply: {}", String::from_utf8_lossy(&output.stderr));
    let spool = scratch.join("spool");
    let args = [
        "ingest",
        "--follow",
        maillog_arg,
        "--milter-listen",
        "inet:127.0.0.1:0",
        "--stdout",
        "--stats",
        "--state",
        state_arg,
        "--tls-logging",
        "on",
        "--poll-ms",
        "50",
        // A sync point releases the log observations still waiting for their milter twin: at
        // 1 s the milter's would have to come a second after the log's to lose (it comes first).
        // An `unknown` milter observation keeps its whole grace (2 s) across sync points.
        "--checkpoint-interval-ms",
        "1000",
        "--clickhouse",
        &url,
        "--database",
        &database,
        "--spool-dir",
        spool.to_str().expect("UTF-8"),
    ];
    let ingest = Milter::spawn(&args, "milter listening on ");
    let lab = Lab::up("ingest", 1, &ingest.bound);
    let cert = lab.var("CLIENT_CERT").to_owned();
    let key = lab.var("CLIENT_KEY").to_owned();
    let sessions: [(&str, Vec<&str>); 5] = [
        ("tls13", vec!["--tls", "--tls-protocol", "tlsv1_3"]),
        ("tls12", vec!["--tls", "--tls-protocol", "tlsv1_2"]),
        ("plain", vec![]),
        ("client-cert", vec!["--tls", "--tls-cert", &cert, "--tls-key", &key]),
        ("forged", vec!["--add-header", "X-TLSLedger: class=historically-valid; forged=1"]),
    ];
    let queue_ids: Vec<String> = sessions.iter().map(|(subject, extra)| lab.swaks(subject, extra)).collect();
    // Two sessions without a message (no queue id), paired by the client port alone, and both
    // `unknown` to the milter (no MAIL): one quits after EHLO in plaintext, one fails its TLS 1.0
    // handshake (OpenSSL 3 refuses TLS 1.0's signature algorithms; swaks exits 29). The log
    // knows the failed handshake, so that observation is the log's; the EHLO-only session is
    // `unknown` to the log too (no mail transaction: nothing went in the clear that a downgrade
    // could expose), so the milter's is kept.
    let swaks = |extra: &[&str]| {
        Command::new("swaks")
            .args(["--server", lab.var("SMTPD_ADDR"), "--port", lab.var("SMTPD_PORT"), "--quit-after", "EHLO"])
            .args(["--ehlo", "client.milter.test", "--to", "inbox@milter.test"])
            .args(extra)
            .output()
            .expect("swaks")
    };
    let ehlo_only = swaks(&[]);
    assert!(ehlo_only.status.success(), "{}", String::from_utf8_lossy(&ehlo_only.stdout));
    let tls10 = swaks(&["--tls", "--tls-protocol", "tlsv1"]);
    let transcript = format!("{}{}", String::from_utf8_lossy(&tls10.stdout), String::from_utf8_lossy(&tls10.stderr));
    assert!(transcript.contains("TLS startup failed"), "the TLS 1.0 handshake should fail:\n{transcript}");
    let n_sessions = sessions.len() + 2;

    // Every session is in the log and every message delivered; then wait until ingest has read
    // the whole log (its checkpoint reaches the end: no connection is open any more).
    lab.wait_disconnects(n_sessions);
    let messages = lab.delivered(sessions.len());
    for (subject, _) in &sessions {
        assert_eq!(messages[*subject].len(), 1, "{subject}: one X-TLSLedger header: {messages:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = lab.log();
        let all_removed = queue_ids.iter().all(|q| log.contains(&format!(": {q}: removed")));
        if all_removed && checkpointed_offset(&state, maillog_arg) == log.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not read the whole log within 60 s:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (observations, stderr) = ingest.stop_with("inbound log-only sessions");
    assert_eq!(observations.len(), n_sessions, "one observation per session:\n{observations:#?}\n{stderr}");
    assert!(observations.iter().all(|o| o["direction"] == "inbound"), "{observations:#?}");
    for queue_id in &queue_ids {
        let o = by_queue_id(&observations, queue_id);
        assert_eq!(o["source"]["kind"], "milter", "the milter's observation is kept: {o}");
        assert_eq!(o["peer"]["port"].as_u64(), Some(lab.client_port(queue_id)));
    }
    let mut from_log: Vec<&str> = observations
        .iter()
        .filter(|o| o["source"]["kind"] == "file")
        .map(|o| o["outcome"].as_str().expect("outcome"))
        .collect();
    from_log.sort_unstable();
    assert_eq!(from_log, ["handshake-failed"], "the log's kept where the milter said unknown");
    let stat = |label: &str| crate::common::stat(stderr.as_bytes(), label);
    assert_eq!(stat("milter observations"), n_sessions as u64, "{stderr}");
    // The messages' sessions and the EHLO-only one (both `unknown`: the milter's is kept).
    assert_eq!(stat("log duplicates of milter"), sessions.len() as u64 + 1, "{stderr}");
    assert_eq!(stat("log kept (milter unknown)"), 1, "{stderr}");
    assert_eq!((stat("late milter duplicates"), stat("inbound log-only sessions")), (0, 0), "{stderr}");

    // ClickHouse has one row per session.
    let rows = clickhouse.query(&format!(
        "SELECT count(), uniqExact(event_id), countIf(source_kind = 'milter') FROM {database}.observations FORMAT TSV"
    ));
    // The milter's rows: the messages' sessions and the EHLO-only one.
    let want = format!("{n_sessions}\t{n_sessions}\t{}", sessions.len() + 1);
    assert_eq!(rows.trim(), want, "rows, distinct event ids, milter rows");

    // The reputation state counted each session once too.
    let output = crate::common::tlsledger(&["explain", "127.0.0.1", "--state", state_arg, "--json"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("explain JSON");
    let inbound = report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["endpoint"] == "inbound/127.0.0.1"))
        .unwrap_or_else(|| panic!("no inbound/127.0.0.1 in {report:#}"));
    // `decisions`: [[outcome, count], ...].
    let decisions: HashMap<String, u64> = inbound["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|pair| (pair[0].as_str().expect("outcome").to_owned(), pair[1].as_u64().expect("count")))
        .collect();
    assert_eq!((decisions.get("tls"), decisions.get("plaintext")), (Some(&3), Some(&2)), "{inbound:#}");
    // The EHLO-only session is `unknown`: no decision.
    assert_eq!(decisions.get("unknown"), None, "{inbound:#}");
    assert_eq!(decisions.get("handshake-failed"), Some(&1), "{inbound:#}");
    assert_eq!(decisions.values().sum::<u64>(), n_sessions as u64 - 1, "{inbound:#}");
    assert_eq!(inbound["recent"].as_array().map(Vec::len), Some(n_sessions), "{inbound:#}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&scratch);
}
