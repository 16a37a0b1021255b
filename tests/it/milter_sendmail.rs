//! The milter behind a real Sendmail: `tests/harness/sendmail-lab.sh milter-up` starts Debian's
//! Sendmail 8.17 (unpacked privately) on 127.0.8.10 with
//! `INPUT_MAIL_FILTER(`tlsledger', `S=inet:PORT@127.0.0.1, F=, T=C:10s;S:10s;R:10s;E:30s')` and
//! no `confMILTER_MACROS_*` (the README's minimal wiring), STARTTLS with a private CA (client
//! certificates asked for), syslog into a private rsyslogd, and local delivery of every message
//! into a file. The cf's default macro lists lack `v`, `{verify}` and `{alg_bits}`: `mta`, trust
//! and `alg_bits` right in the observations prove that Sendmail sent the lists the milter asked
//! for when it negotiated. swaks sends sessions over STARTTLS with TLS 1.3 and TLS 1.2, with a
//! CA-signed client certificate (Sendmail's `{verify}` is `OK`) and a self-signed one (`FAIL`),
//! in plaintext, and in plaintext with two forged `X-TLSLedger` headers; one hand-written
//! session carries two messages and one aborted with RSET, the second with a forged header. The
//! test checks each session's Observation against Sendmail's own log of the same session
//! (`STARTTLS=server` line: version, cipher, bits, verify; the `from=` line: the client's name)
//! and that every delivered message has exactly our one header.
//! Then the milter is killed with SIGKILL: `F=` empty means Sendmail goes on without the filter,
//! so the next session must still be accepted and delivered, without our header.
//!
//! Ports: the Sendmail lab owns 21700-21799 and its `up` takes odd ports 21701-21795 with the
//! next even one; this test's daemon listens on 127.0.8.10, an address no other test uses, on
//! 21797 (21798, 21799 when taken). The milter listens on a free port picked by the kernel
//! (`inet:127.0.0.1:0`). The test command installs swaks, rsyslog, m4 and Sendmail's libraries
//! and unpacks sendmail-bin and sendmail-cf; this test fails, never skips, without them. It needs
//! root (daemons, mount namespaces).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::repo;
use crate::milter::Milter;
use crate::milter_postfix::{by_queue_id, headers, is_running};

/// The lab script.
fn lab_script() -> PathBuf {
    repo().join("tests/harness/sendmail-lab.sh")
}

/// How long the test waits for mail, log lines and observations.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running Sendmail with our filter; stopped when dropped (its folder is kept after a failure).
struct Lab {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Lab {
    /// Starts the lab's milter daemon with the filter at `socket` (Sendmail's `S=` syntax). A
    /// port in use moves on to the next of 21797-21799.
    fn up(socket: &str) -> Lab {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sendmail-milter-{}", std::process::id()));
        let mut last = String::new();
        for port in 21_797..=21_799u16 {
            let _ = std::fs::remove_dir_all(&dir);
            let output = Command::new("bash")
                .arg(lab_script())
                .arg("milter-up")
                .arg(&dir)
                .env("SENDMAIL_LAB_PORT", port.to_string())
                .env("SENDMAIL_LAB_MILTER", socket)
                .output()
                .expect("run sendmail-lab.sh");
            if output.status.success() {
                let text = std::fs::read_to_string(dir.join("lab.env")).expect("lab.env");
                let env =
                    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                return Lab { dir, env };
            }
            last = format!(
                "{}{}\n--- maillog ---\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(dir.join("maillog")).unwrap_or_default()
            );
            let _ = Command::new("bash").arg(lab_script()).arg("down").arg(&dir).output();
            if !last.contains("is in use") {
                break;
            }
        }
        panic!("sendmail-lab.sh milter-up failed:\n{last}");
    }

    fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} missing from lab.env"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.var("MAILLOG")).unwrap_or_default()
    }

    /// One swaks session to the daemon with `extra` options and `Subject: subject`; returns the
    /// queue id of the accepted message.
    fn swaks(&self, subject: &str, extra: &[&str]) -> String {
        let output = Command::new("swaks")
            .args(["--server", self.var("MILTER_ADDR"), "--port", self.var("PORT"), "--timeout", "30"])
            .args(["--ehlo", "client.sendmail-lab.example", "--from", "sender@client.sendmail-lab.example"])
            .args(["--to", "inbox@milter.sendmail-lab.example", "--header", &format!("Subject: {subject}")])
            .args(extra)
            .output()
            .expect("swaks not found: run tests/harness/install-deps.sh sendmail");
        let transcript = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "swaks {subject} failed:\n{transcript}{}\n--- maillog ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        // `<~  250 2.0.0 6AUKoMe5029403 Message accepted for delivery`
        transcript
            .lines()
            .find(|l| l.contains(" Message accepted for delivery"))
            .and_then(|l| l.split(" Message accepted").next()?.split_whitespace().last())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no queue id in the swaks transcript of {subject}:\n{transcript}"))
    }

    /// One plaintext SMTP session written by hand: a message, a message aborted with RSET after
    /// RCPT, and a second message carrying a forged header; returns the two queue ids.
    fn several_messages(&self) -> Vec<String> {
        use std::io::{BufRead, BufReader, Write};
        let address = format!("{}:{}", self.var("MILTER_ADDR"), self.var("PORT"));
        let stream = std::net::TcpStream::connect(&address).expect("connect to sendmail");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut transcript = String::new();
        // Sends `command` (unless empty), reads the (multi-line) reply; panics unless its code
        // starts with `want`; returns its last line.
        let mut exchange = |command: &str, want: char| -> String {
            transcript.push_str(command);
            writer.write_all(command.as_bytes()).expect("write command");
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
        exchange("", '2');
        exchange("EHLO client.sendmail-lab.example\r\n", '2');
        let mut queue_ids = Vec::new();
        for (n, abort, extra) in
            [(1, false, ""), (0, true, ""), (2, false, "X-TLSLedger: class=historically-valid; forged=3\r\n")]
        {
            exchange("MAIL FROM:<sender@client.sendmail-lab.example>\r\n", '2');
            exchange("RCPT TO:<inbox@milter.sendmail-lab.example>\r\n", '2');
            if abort {
                exchange("RSET\r\n", '2');
                continue;
            }
            exchange("DATA\r\n", '3');
            let body = format!("Subject: multi-{n}\r\n{extra}\r\nMessage {n} of one session.\r\n.\r\n");
            // `250 2.0.0 6AUKoMe5029403 Message accepted for delivery`
            let line = exchange(&body, '2');
            let queue_id = line.split(" Message accepted").next().and_then(|l| l.split_whitespace().last());
            queue_ids.push(queue_id.unwrap_or_else(|| panic!("no queue id in {line:?}")).to_owned());
        }
        exchange("QUIT\r\n", '2');
        queue_ids
    }

    /// The delivered messages, waiting until there are `n`: Subject → the values of every
    /// `X-TLSLedger` header.
    fn delivered(&self, n: usize) -> HashMap<String, Vec<String>> {
        let new = Path::new(self.var("MAILDIR")).join("new");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let files: Vec<PathBuf> =
                std::fs::read_dir(&new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            if files.len() >= n {
                assert_eq!(files.len(), n, "more messages than sessions in {}", new.display());
                return files.iter().map(|f| headers(&std::fs::read_to_string(f).expect("message"))).collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages delivered after {DEADLINE:?}; log:\n{}",
                files.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log has a `stat=Sent` line for every one of `queue_ids`, and returns it.
    fn log_with_all_sent(&self, queue_ids: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            let sent = |q: &&str| log.lines().any(|l| l.contains(&format!(": {q}: to=")) && l.contains("stat=Sent"));
            if queue_ids.iter().all(sent) {
                return log;
            }
            assert!(Instant::now() < deadline, "not every message of {queue_ids:?} logged as sent:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// The `from=` line of `queue_id` and the pid of the session's process.
fn from_line<'a>(log: &'a str, queue_id: &str) -> (&'a str, &'a str) {
    let from = log
        .lines()
        .find(|l| l.contains(&format!(": {queue_id}: from=")))
        .unwrap_or_else(|| panic!("no from= line for {queue_id} in:\n{log}"));
    let pid = from.split("sm-mta-milter[").nth(1).and_then(|rest| rest.split(']').next()).expect("pid");
    (from, pid)
}

/// What Sendmail logged about the session of `queue_id`: the client's name from the `from=` line
/// (`relay=NAME [127.0.0.1]`) and the fields of the same process's `STARTTLS=server` line, if any.
fn logged_session(log: &str, queue_id: &str) -> (String, Option<HashMap<String, String>>) {
    let (from, pid) = from_line(log, queue_id);
    let relay = from.split("relay=").nth(1).and_then(|rest| rest.split(" [").next()).expect("relay=").to_owned();
    let starttls = format!("sm-mta-milter[{pid}]: STARTTLS=server, ");
    let fields = log.lines().find_map(|l| l.split(&starttls).nth(1)).map(|rest| {
        rest.split(", ").filter_map(|f| f.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    });
    (relay, fields)
}

#[test]
fn sendmail_input_mail_filter_sessions_header_and_kill() {
    let mut milter = Milter::start("inet:127.0.0.1:0", &[]);
    let lab = Lab::up(&milter.socket);
    let (cert, key) = (lab.var("CLIENT_CERT").to_owned(), lab.var("CLIENT_KEY").to_owned());
    let (selfsigned, selfsigned_key) = (lab.var("SELFSIGNED_CERT").to_owned(), lab.var("SELFSIGNED_KEY").to_owned());
    let sessions: [(&str, Vec<&str>); 6] = [
        ("tls13", vec!["--tls", "--tls-protocol", "tlsv1_3"]),
        ("tls12", vec!["--tls", "--tls-protocol", "tlsv1_2"]),
        ("client-cert", vec!["--tls", "--tls-cert", &cert, "--tls-key", &key]),
        ("selfsigned-cert", vec!["--tls", "--tls-cert", &selfsigned, "--tls-key", &selfsigned_key]),
        ("plain", vec![]),
        ("forged", vec!["--add-header", "X-TLSLedger: class=historically-valid; forged=1\nX-Tlsledger: forged=2"]),
    ];
    let queue_ids: HashMap<&str, String> =
        sessions.iter().map(|(subject, extra)| (*subject, lab.swaks(subject, extra))).collect();
    let multi = lab.several_messages();
    let n_sessions = sessions.len() + 1;
    let observations = milter.wait_observations(n_sessions);
    assert_eq!(observations.len(), n_sessions, "{observations:#?}");
    let ids: Vec<&str> = queue_ids.values().chain(&multi).map(String::as_str).collect();
    let log = lab.log_with_all_sent(&ids);

    for o in &observations {
        assert_eq!((o["direction"].as_str(), o["source"]["kind"].as_str()), (Some("inbound"), Some("milter")));
        assert_eq!((o["source"]["trust"].as_str(), o["mta"].as_str()), (Some("milter"), Some("sendmail")), "{o}");
        // `j` and `{daemon_name}` (DAEMON_OPTIONS Name=MTA) of the lab's daemon.
        assert_eq!(
            (o["reporter"].as_str(), o["instance"].as_str()),
            (Some("milter.sendmail-lab.example"), Some("MTA"))
        );
        assert_eq!((o["peer"]["ip"].as_str(), o["delivered"].as_bool()), (Some("127.0.0.1"), Some(true)), "{o}");
    }
    // Each observation is the session Sendmail logged under the same queue id.
    for (subject, queue_id) in &queue_ids {
        let o = by_queue_id(&observations, queue_id);
        assert_eq!(o["queue_ids"], serde_json::json!([queue_id]), "{subject}: {o}");
        let (relay, starttls) = logged_session(&log, queue_id);
        assert_eq!(o["peer"]["hostname"].as_str(), Some(relay.as_str()), "{subject}: {o}");
        match starttls {
            Some(fields) => {
                assert_eq!(o["outcome"], "tls", "{subject}: {o}");
                let tls = &o["tls"];
                assert_eq!(tls["protocol"].as_str(), Some(fields["version"].as_str()), "{subject}: {o}");
                assert_eq!(tls["cipher"].as_str(), Some(fields["cipher"].as_str()), "{subject}: {o}");
                // `bits=256/256`: {cipher_bits}/{alg_bits}.
                let bits: Vec<Option<u64>> = fields["bits"].split('/').map(|b| b.parse().ok()).collect();
                assert_eq!(vec![tls["bits"].as_u64(), tls["alg_bits"].as_u64()], bits, "{subject}: {o}");
                let trust = match fields["verify"].as_str() {
                    "OK" => "trusted",
                    "FAIL" => "untrusted",
                    "NO" => "anonymous",
                    other => panic!("{subject}: unexpected verify={other}"),
                };
                assert_eq!(tls["trust"], trust, "{subject}: {{verify}} is the logged verify=: {o}");
            }
            None => assert_eq!((o["outcome"].as_str(), o["tls"].is_null()), (Some("plaintext"), true), "{subject}"),
        }
    }
    // What the lab set up, independently of the log.
    let outcome = |subject: &str| -> (String, Value, Value) {
        let o = by_queue_id(&observations, &queue_ids[subject]);
        (o["outcome"].as_str().unwrap_or("").to_owned(), o["tls"]["protocol"].clone(), o["tls"]["trust"].clone())
    };
    assert_eq!(outcome("tls13"), ("tls".to_owned(), "TLSv1.3".into(), "anonymous".into()));
    assert_eq!(outcome("tls12"), ("tls".to_owned(), "TLSv1.2".into(), "anonymous".into()));
    assert_eq!(outcome("client-cert"), ("tls".to_owned(), "TLSv1.3".into(), "trusted".into()));
    assert_eq!(outcome("selfsigned-cert"), ("tls".to_owned(), "TLSv1.3".into(), "untrusted".into()));
    assert_eq!(outcome("plain"), ("plaintext".to_owned(), Value::Null, Value::Null));
    assert_eq!(outcome("forged"), ("plaintext".to_owned(), Value::Null, Value::Null));
    let tls12 = by_queue_id(&observations, &queue_ids["tls12"]);
    assert!(tls12["tls"]["cipher"].as_str().is_some_and(|c| c.starts_with("ECDHE-")), "{tls12}");
    let client_cert = by_queue_id(&observations, &queue_ids["client-cert"]);
    // Sendmail's {cert_subject} and {cert_issuer} are whole DNs (X509_NAME_oneline) in xtext:
    // the issuer arrives as `/CN=tlsledger+20sendmail+20lab+20CA` and is decoded.
    let cert = &client_cert["tls"]["cert"];
    assert_eq!(cert["subject"], "/CN=client.sendmail-lab.example", "{client_cert}");
    assert_eq!(cert["issuer"], "/CN=tlsledger sendmail lab CA", "{client_cert}");

    // Several messages (and an aborted one) in one session: one observation with every queue id
    // seen on the connection. Sendmail defines `i` at MAIL, so the aborted transaction's id is
    // one of them (Postfix opens its queue file later and never shows one); Sendmail logs that
    // id too, with a `from=` line of size 0 and no `to=` line.
    let several = by_queue_id(&observations, &multi[0]);
    let ids: Vec<&str> = several["queue_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!((ids.len(), ids.first(), ids.last()), (3, Some(&&*multi[0]), Some(&&*multi[1])), "{several}");
    let (aborted_from, _) = from_line(&log, ids[1]);
    assert!(aborted_from.contains(", size=0,"), "{aborted_from}");
    assert!(!log.contains(&format!(": {}: to=", ids[1])), "the aborted message was not delivered: {several}");
    assert_eq!((several["outcome"].as_str(), several["delivered"].as_bool()), (Some("plaintext"), Some(true)));
    let (relay, starttls) = logged_session(&log, &multi[1]);
    assert_eq!((several["peer"]["hostname"].as_str(), starttls), (Some(relay.as_str()), None), "{several}");

    let n_messages = sessions.len() + multi.len();
    let messages = lab.delivered(n_messages);
    for (subject, want) in [
        ("tls13", "tls=TLSv1.3; cipher=TLS_AES_"),
        ("tls12", "tls=TLSv1.2; cipher=ECDHE-"),
        ("client-cert", "tls=TLSv1.3; cipher=TLS_AES_"),
        ("selfsigned-cert", "tls=TLSv1.3; cipher=TLS_AES_"),
        ("plain", "tls=none"),
        ("forged", "tls=none"),
        ("multi-1", "tls=none"),
        ("multi-2", "tls=none"),
    ] {
        let values = messages.get(subject).unwrap_or_else(|| panic!("no message {subject} in {messages:#?}"));
        assert_eq!(values.len(), 1, "exactly our one header in {subject}: {values:?}");
        assert!(values[0].starts_with("class=unknown; flags=none;"), "{subject}: {values:?}");
        assert!(values[0].contains(want), "{subject}: {values:?} lacks {want}");
        assert!(!values[0].contains("forged"), "{subject}: a forged copy survived: {values:?}");
    }

    // The milter dies: with F= empty Sendmail goes on without it, and delivers without our header.
    let pid = milter.pid();
    let before_kill = milter.kill();
    assert_eq!(before_kill.len(), n_sessions, "nothing more was printed");
    assert!(!is_running(pid), "milter {pid} still runs");
    let after = lab.swaks("after-kill", &["--tls"]);
    let messages = lab.delivered(n_messages + 1);
    assert_eq!(messages["after-kill"], Vec::<String>::new(), "no header without the milter");
    let log = lab.log_with_all_sent(&[&after]);
    // Logged under the session's first envelope id, by the same process.
    let (_, pid) = from_line(&log, &after);
    let process = format!("sm-mta-milter[{pid}]: ");
    assert!(
        log.lines().any(|l| l.contains(&process)
            && l.contains(": Milter (tlsledger): error connecting to filter: Connection refused")),
        "Sendmail noticed the dead milter and went on:\n{log}"
    );
}
