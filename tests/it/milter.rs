//! `tlsledger milter` against `miltertest` (Debian's package, from OpenDKIM), which plays the MTA
//! side of the milter protocol from the Lua scenarios in `tests/data/milter/`: STARTTLS after a
//! first EHLO, several messages per session, forged `X-TLSLedger` copies deleted, plaintext,
//! Sendmail's `{verify}`, an aborted message and a connection cut in mid-transaction, and
//! `--no-header`. Malformed packets are written by hand to show that only that connection closes.
//! Each run's observations (stdout, `--stdout`) are checked session by session.
//!
//! The test command installs miltertest with `tests/harness/install-deps.sh milter`; these tests
//! fail, never skip, when it is missing. The milter listens on `inet:127.0.0.1:0` (a free port,
//! read back from its stderr) or on a UNIX socket in a private folder, so no fixed port is used.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{observations, repo};

/// A running milter (or `tlsledger ingest` with its milter); killed if the test panics before
/// stopping it.
pub(crate) struct Milter {
    child: Option<Child>,
    /// The stderr lines so far (a reader thread sends them).
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// The stdout lines so far (a reader thread sends them), so that observations can be waited
    /// for while the process runs.
    stdout: mpsc::Receiver<String>,
    stdout_seen: Vec<String>,
    /// The address miltertest connects to (`inet:PORT@127.0.0.1` or `unix:PATH`).
    pub(crate) socket: String,
    /// The address as bound (`inet:127.0.0.1:PORT`: Postfix's `smtpd_milters` syntax).
    pub(crate) bound: String,
}

/// Sends the lines of `pipe` to a channel from a thread of their own.
fn line_reader(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    lines
}

impl Milter {
    /// Starts `tlsledger milter --stdout --listen LISTEN EXTRA…` and waits for its listening line.
    pub(crate) fn start(listen: &str, extra: &[&str]) -> Milter {
        let mut args = vec!["milter", "--stdout", "--listen", listen];
        args.extend_from_slice(extra);
        Milter::spawn(&args, "tlsledger: milter listening on ")
    }

    /// Starts `tlsledger ARGS…` and waits for the stderr line `ready` (followed by the milter's
    /// bound address).
    pub(crate) fn spawn(args: &[&str], ready: &str) -> Milter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tlsledger");
        let stderr = line_reader(child.stderr.take().expect("stderr"));
        let stdout = line_reader(child.stdout.take().expect("stdout"));
        let mut milter = Milter {
            child: Some(child),
            stderr,
            stderr_seen: Vec::new(),
            stdout,
            stdout_seen: Vec::new(),
            socket: String::new(),
            bound: String::new(),
        };
        let line = milter.wait_for_stderr(ready);
        let bound = line[line.find(ready).unwrap_or(0) + ready.len()..].trim().to_owned();
        milter.bound = bound.clone();
        milter.socket = match bound.strip_prefix("inet:") {
            Some(address) => {
                let (host, port) = address.rsplit_once(':').expect("host:port");
                format!("inet:{port}@{host}")
            }
            None => bound,
        };
        milter
    }

    /// Waits (at most 30 s) for a stderr line containing `prefix`.
    pub(crate) fn wait_for_stderr(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.stderr_seen.iter().find(|l| l.contains(prefix)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => {
                    panic!("no stderr line {prefix:?} within 30 s; stderr so far:\n{}", self.stderr_seen.join("\n"))
                }
            }
        }
    }

    /// Runs one scenario (the prelude, then `tests/data/milter/NAME.lua`) with miltertest.
    fn scenario(&self, name: &str, scratch: &Path) {
        let data = repo().join("tests/data/milter");
        let mut script = std::fs::read_to_string(data.join("prelude.lua")).expect("prelude.lua");
        script.push_str(&std::fs::read_to_string(data.join(format!("{name}.lua"))).expect("scenario"));
        let path = scratch.join(format!("{name}.lua"));
        std::fs::write(&path, script).expect("write scenario");
        let output = Command::new("miltertest")
            .arg("-s")
            .arg(&path)
            .env("MILTER_SOCKET", &self.socket)
            .output()
            .expect("miltertest not found: run tests/harness/install-deps.sh milter");
        assert!(
            output.status.success(),
            "scenario {name} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The observations printed so far, waiting up to 60 s until there are at least `n`.
    pub(crate) fn wait_observations(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.stdout_seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.stdout_seen.push(line),
                Err(_) => panic!(
                    "{} of {n} observations within 60 s:\n{}\nstderr:\n{}",
                    self.stdout_seen.len(),
                    self.stdout_seen.join("\n"),
                    self.stderr_seen.join("\n")
                ),
            }
        }
        observations(self.stdout_seen.join("\n").as_bytes())
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and the observations printed before.
    pub(crate) fn kill(mut self) -> Vec<Value> {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        self.stdout_seen.extend(self.stdout.iter());
        observations(self.stdout_seen.join("\n").as_bytes())
    }

    /// SIGTERM, then the observations it printed and its stderr once it has printed `last`.
    pub(crate) fn stop_with(mut self, last: &str) -> (Vec<Value>, String) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill");
        assert!(status.success());
        let exit = child.wait().expect("wait");
        self.stdout_seen.extend(self.stdout.iter());
        self.wait_for_stderr(last);
        assert!(exit.success(), "{last} exited with {exit}; stderr:\n{}", self.stderr_seen.join("\n"));
        (observations(self.stdout_seen.join("\n").as_bytes()), self.stderr_seen.join("\n"))
    }

    /// SIGTERM, then the observations it printed and its stderr.
    fn stop(self) -> (Vec<Value>, String) {
        self.stop_with("tlsledger: milter stopped: ")
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh folder for one test's scripts and sockets.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("milter-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The observation of the session from `ip`.
fn session<'a>(observations: &'a [Value], ip: &str) -> &'a Value {
    let matching: Vec<&Value> = observations.iter().filter(|o| o["peer"]["ip"] == ip).collect();
    assert_eq!(matching.len(), 1, "one observation for {ip} expected in {observations:#?}");
    matching[0]
}

/// Writes `packet` on a new milter connection and returns whether the milter closed it (EOF)
/// within 10 s.
fn closed_after(address: &str, packet: &[u8]) -> bool {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the milter");
    stream.write_all(packet).expect("write packet");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn miltertest_scenarios_header_and_observations() {
    let dir = scratch("scenarios");
    let milter = Milter::start("inet:127.0.0.1:0", &[]);
    for name in ["header", "plaintext", "sendmail", "aborted"] {
        milter.scenario(name, &dir);
    }
    // Malformed packets close only their own connection: an unknown command, and a length
    // beyond indymilter's 1 MiB bound. The milter then still serves a whole session.
    let address = milter.socket.trim_start_matches("inet:");
    let (port, host) = address.split_once('@').expect("port@host");
    let address = format!("{host}:{port}");
    assert!(closed_after(&address, b"\x00\x00\x00\x05Zjunk"), "unknown command did not close the connection");
    assert!(closed_after(&address, b"\xff\xff\xff\xffO"), "an oversized packet did not close the connection");
    milter.scenario("plaintext", &dir);

    let (observations, stderr) = milter.stop();
    assert_eq!(observations.len(), 5, "one observation per session:\n{observations:#?}\n{stderr}");
    let mut ids: Vec<&str> = observations.iter().map(|o| o["event_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "event ids are unique");
    for o in &observations {
        assert_eq!((o["direction"].as_str(), o["source"]["kind"].as_str()), (Some("inbound"), Some("milter")));
        assert_eq!(o["source"]["trust"], "milter");
    }

    let tls = session(&observations, "192.0.2.7");
    assert_eq!(tls["outcome"], "tls");
    assert_eq!(tls["tls"]["protocol"], "TLSv1.3");
    assert_eq!(tls["tls"]["cipher"], "TLS_AES_256_GCM_SHA384");
    assert_eq!(tls["tls"]["bits"], 256);
    assert_eq!(tls["tls"]["trust"], Value::Null, "Postfix without {{cert_subject}}: trust unknown");
    assert_eq!(tls["queue_ids"], serde_json::json!(["4ABC1", "4ABC2"]));
    assert_eq!(tls["delivered"], true);
    assert_eq!((tls["reporter"].as_str(), tls["instance"].as_str()), (Some("mx.example.net"), Some("smtpd")));
    assert_eq!(tls["peer"]["hostname"], "client.example.org");
    assert_eq!(tls["mta"], "postfix");

    // The plaintext scenario ran twice: two sessions from the same address.
    let plain: Vec<&Value> = observations.iter().filter(|o| o["peer"]["ip"] == "192.0.2.8").collect();
    assert_eq!(plain.len(), 2);
    for o in plain {
        assert_eq!((o["outcome"].as_str(), o["tls"].is_null()), (Some("plaintext"), true));
        assert_eq!(o["peer"]["hostname"], Value::Null, "Postfix's `unknown` is no host name");
    }

    let sendmail = session(&observations, "192.0.2.9");
    assert_eq!((sendmail["mta"].as_str(), sendmail["outcome"].as_str()), (Some("sendmail"), Some("tls")));
    assert_eq!(sendmail["tls"]["trust"], "trusted");
    assert_eq!(sendmail["tls"]["alg_bits"], 256);
    assert_eq!(sendmail["peer"]["hostname"], Value::Null);

    let aborted = session(&observations, "192.0.2.10");
    assert_eq!(aborted["outcome"], "plaintext");
    assert_eq!(aborted["delivered"], true, "one of its messages reached end of message");
    assert!(stderr.contains("5 session(s), 5 observation(s) written, 0 dropped"), "{stderr}");
}

#[test]
fn miltertest_no_header_only_observes() {
    let dir = scratch("no-header");
    let socket = dir.join("milter.sock");
    let milter = Milter::start(&format!("unix:{}", socket.display()), &["--no-header"]);
    milter.scenario("no_header", &dir);
    let (observations, stderr) = milter.stop();
    assert_eq!(observations.len(), 1, "{stderr}");
    let o = session(&observations, "192.0.2.11");
    assert_eq!(
        (o["outcome"].as_str(), o["source"]["name"].as_str()),
        (Some("plaintext"), Some(&*format!("unix:{}", socket.display())))
    );
    assert!(!socket.exists(), "the socket is removed at shutdown");
}
