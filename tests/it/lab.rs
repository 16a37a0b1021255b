//! The end-to-end lab (issue 9, point 4; tests/lab/README.md): the whole product on real MTAs.
//!
//! A private Postfix sender and receiver (tests/harness/postfix-lab.sh: a private CA, receivers
//! with a CA-signed, a self-signed and an expired certificate, without STARTTLS, and one whose
//! STARTTLS handshake always fails), a STARTTLS-stripping proxy written here (a thread on
//! loopback that relays to the CA-signed receiver and, after its first session, hides STARTTLS
//! from the EHLO answer and refuses the command with `502`), a receiver reconfigured to speak
//! TLS 1.0 only, and a private Exim sender (a STARTTLS that breaks after `220`, a wrong
//! certificate name). `tlsledger ingest` follows both senders' logs and runs the milter the
//! Postfix sender's smtpd calls for inbound sessions, loads ClickHouse 18.16 (slot 15), keeps the
//! reputation state with the shrunk thresholds of tests/data/lab-thresholds.toml and writes the
//! feeds. swaks injects inbound with and without STARTTLS and with a client certificate.
//!
//! Asserted: every endpoint's rows in ClickHouse (outcome, trust, protocol), its `explain` class
//! and flags, the feed entries, and three dashboards' numbers from `tlsledger report --format
//! json`. Waits poll for a condition with a deadline. The lab folder is kept after a failure.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clickhouse::Server;
use crate::common::{repo, tlsledger};
use crate::milter::Milter;
use crate::postfix_lab::{attempt_lines, feed_entries, Lab};

/// The ClickHouse slot of this test (tests/it/clickhouse.rs lists the others).
const CLICKHOUSE_SLOT: u16 = 15;
/// The Postfix lab slot (postfix_lab.rs uses 0 and 1).
const LAB_SLOT: u16 = 2;
/// The proxy's own loopback address; its port is the lab's base + 7 (a lab takes seven ports
/// and bases step by 10, so the next three belong to this lab too).
const PROXY_ADDR: &str = "127.0.0.8";
/// A relay (port: base + 7) to a Postfix receiver that only speaks TLS 1.0.
const TLS10_ADDR: &str = "127.0.0.9";
/// The Exim sender's address (port: base + 8).
const EXIM_ADDR: &str = "127.0.9.1";
/// The address swaks sends to Exim from.
const EXIM_CLIENT: &str = "127.0.9.9";
/// The listener whose STARTTLS breaks after `220` (port: base + 9).
const EXIM_BROKEN_ADDR: &str = "127.0.9.6";
/// A relay to the CA-signed receiver under another address (port: base + 8), where Exim checks
/// the certificate's name against that address: a wrong name.
const WRONG_NAME_ADDR: &str = "127.0.9.2";
/// How many sessions the proxy relays untouched before it strips STARTTLS.
const PROXY_CLEAN_SESSIONS: usize = 1;
/// How long any wait of this test may take.
const WAIT: Duration = Duration::from_secs(90);

/// A STARTTLS-stripping proxy: relays every session to `target`; from session
/// `clean_sessions + 1` on it removes STARTTLS from multi-line replies and answers `STARTTLS`
/// with `502` itself. Stopped (and its thread joined) when dropped.
struct StripProxy {
    stop: Arc<AtomicBool>,
    sessions: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StripProxy {
    fn start(listen: (&str, u16), target: (String, u16), clean_sessions: usize) -> StripProxy {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("proxy cannot bind {}:{}: {e}", listen.0, listen.1));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let sessions = Arc::new(AtomicUsize::new(0));
        let (stop_flag, counter) = (stop.clone(), sessions.clone());
        let thread = std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let target = target.clone();
                        // One thread per session; a relay error ends only that session.
                        std::thread::spawn(move || {
                            let _ = relay(client, (target.0.as_str(), target.1), n >= clean_sessions);
                        });
                    }
                    // A nonblocking accept with nothing pending: look at the stop flag again soon.
                    Err(_) => std::thread::park_timeout(Duration::from_millis(20)),
                }
            }
        });
        StripProxy { stop, sessions, thread: Some(thread) }
    }

    /// Sessions accepted so far.
    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

impl Drop for StripProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One proxied session. Untouched: bytes both ways. Stripping: the server's replies line by
/// line with STARTTLS lines removed from multi-line replies, the client's commands line by line
/// with `STARTTLS` answered `502` here.
fn relay(client: TcpStream, target: (&str, u16), strip: bool) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(target)?;
    for stream in [&client, &server] {
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    }
    let (client_read, server_write) = (client.try_clone()?, server.try_clone()?);
    let client_write = client.try_clone()?;
    let upstream = std::thread::spawn(move || {
        let result =
            if strip { commands(client_read, server_write, client_write) } else { copy(client_read, server_write) };
        result.ok();
    });
    let result = if strip { replies(server, client) } else { copy(server, client) };
    let _ = upstream.join();
    result
}

/// Copies `from` to `to` until end of stream, then half-closes `to`.
fn copy(mut from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return to.shutdown(Shutdown::Write);
        }
        to.write_all(&buf[..n])?;
    }
}

/// Client → server while stripping: `STARTTLS` is answered `502` here, everything else relayed.
fn commands(from: TcpStream, mut to: TcpStream, mut client: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return to.shutdown(Shutdown::Write);
        }
        if line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") {
            client.write_all(b"502 5.5.1 STARTTLS not available here\r\n")?;
        } else {
            to.write_all(&line)?;
        }
    }
}

/// Server → client while stripping: each reply is collected whole (lines `NNN-` up to `NNN `),
/// its STARTTLS lines dropped, and the last line kept or made final.
fn replies(from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(from);
    let mut reply: Vec<Vec<u8>> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return to.shutdown(Shutdown::Write);
        }
        let last = line.get(3) != Some(&b'-');
        let keyword = line.get(4..).map(<[u8]>::trim_ascii).unwrap_or_default();
        if !keyword.eq_ignore_ascii_case(b"STARTTLS") {
            reply.push(line.clone());
        } else if last {
            // The final line was STARTTLS: the line before it becomes the final one.
            if let Some(previous) = reply.last_mut() {
                if previous.len() > 3 {
                    previous[3] = b' ';
                }
            }
        }
        if last {
            for kept in reply.drain(..) {
                to.write_all(&kept)?;
            }
        }
    }
}

/// The Exim sender's configuration: accepts from swaks over STARTTLS (the lab CA's server
/// certificate) and routes `exim-valid.test` to the Postfix lab's CA-signed receiver (verified
/// against the lab CA, TLS required) and `exim-broken.test` to the listener whose STARTTLS
/// breaks after `220` (Exim retries in clear at once).
fn exim_sender_config(
    dir: &Path,
    exim: &Path,
    listen: (&str, u16),
    valid: (&str, u16),
    broken: (&str, u16),
    wrong_name: (&str, u16),
) -> String {
    let dir_text = dir.display();
    let mut text = format!(
        "{main}tls_certificate = {dir_text}/mx.crt\ntls_privatekey = {dir_text}/mx.key\ntls_advertise_hosts = *\n\
         log_selector = +tls_peerdn +outgoing_port\nlog_timezone = true\n\
         begin acl\nacl_rcpt:\n  accept\nbegin routers\n",
        main = crate::exim::lab::main_section("exim.lab.test", dir, exim, &[listen]),
    );
    let cases = [
        ("valid", valid, format!("tls_verify_certificates = {dir_text}/ca.crt\n  tls_verify_hosts = *\n  tls_verify_cert_hostnames =\n  hosts_require_tls = *\n")),
        ("broken", broken, String::new()),
        ("wrongname", wrong_name, format!("tls_verify_certificates = {dir_text}/ca.crt\n  tls_verify_hosts = *\n  hosts_require_tls = *\n")),
    ];
    for (name, (addr, _), _) in &cases {
        text.push_str(&format!(
            "{name}:\n  driver = manualroute\n  domains = exim-{name}.test\n  route_list = * {addr}\n  transport = t_{name}\n  self = send\n"
        ));
    }
    text.push_str("begin transports\n");
    for (name, (_, port), options) in &cases {
        text.push_str(&format!(
            "t_{name}:\n  driver = smtp\n  port = {port}\n  interface = {EXIM_ADDR}\n  allow_localhost\n  {options}"
        ));
    }
    text
}

/// Polls `done` every 50 ms until it holds, for at most [`WAIT`]; `what` names it on timeout,
/// with `context()` for the failure message.
fn wait_until(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{}", context());
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Runs `tlsledger ARGS`, panics with its stderr unless it succeeds, returns its stdout as JSON.
fn tlsledger_json(args: &[&str]) -> Value {
    let output = tlsledger(args, b"");
    assert!(
        output.status.success(),
        "tlsledger {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("tlsledger {} printed no JSON ({e})", args.join(" ")))
}

/// `swaks` to the sender's smtpd from 127.0.0.1 with `extra` options: its transcript.
fn swaks(lab: &Lab, rcpt: &str, extra: &[&str]) -> String {
    let output = Command::new("swaks")
        .args(["--server", lab.var("SENDER_SMTPD_ADDR"), "--port", lab.var("SENDER_SMTPD_PORT")])
        .args(["--timeout", "20", "--ehlo", "client.lab.test", "--from", "lab@out.lab.test", "--to", rcpt])
        .args(extra)
        .output()
        .expect("swaks (tests/harness/install-deps.sh postfix installs it)");
    let transcript = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "swaks to {rcpt} {extra:?} failed:\n{transcript}");
    transcript
}

/// A client certificate (`CN=client.lab.test`, clientAuth) signed by the lab's CA in `ca`:
/// the paths of the certificate and its key.
fn client_certificate(ca: &Path) -> (String, String) {
    let (crt, key, csr, ext) =
        (ca.join("client.crt"), ca.join("client.key"), ca.join("client.csr"), ca.join("client.ext"));
    std::fs::write(&ext, "basicConstraints = critical, CA:FALSE\nextendedKeyUsage = clientAuth\n").expect("client.ext");
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl").args(args).current_dir(ca).output().expect("openssl");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let p = |path: &Path| path.to_str().expect("UTF-8 path").to_owned();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=client.lab.test",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ]);
    (p(&crt), p(&key))
}

/// The queue id in a swaks transcript (`250 2.0.0 Ok: queued as X`).
fn queued_as(transcript: &str) -> String {
    transcript
        .lines()
        .find_map(|line| line.split("queued as ").nth(1))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no queue id in:\n{transcript}"))
}

/// One row of the `observations` table, as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    mta: String,
    direction: String,
    peer: String,
    outcome: String,
    trust: String,
    protocol: String,
    source: String,
}

/// Every row of `database.observations` (FINAL), sorted.
fn rows(server: &Server, database: &str) -> Vec<Row> {
    let text = server.query_in(
        database,
        "SELECT toString(mta), toString(direction), replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', ''), \
         toString(outcome), if(has_tls = 1, toString(tls_trust), ''), ifNull(tls_protocol, ''), source_kind \
         FROM observations FINAL FORMAT TSV",
    );
    let mut rows: Vec<Row> = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 7, "a row of seven columns: {line:?}");
            Row {
                mta: f[0].to_owned(),
                direction: f[1].to_owned(),
                peer: f[2].to_owned(),
                outcome: f[3].to_owned(),
                trust: f[4].to_owned(),
                protocol: f[5].to_owned(),
                source: f[6].to_owned(),
            }
        })
        .collect();
    rows.sort();
    rows
}

/// The outbound rows of `mta` to `peer`, as `(outcome, trust, protocol)`, sorted.
fn outbound_of(rows: &[Row], mta: &str, peer: &str) -> Vec<(String, String, String)> {
    rows.iter()
        .filter(|r| r.mta == mta && r.direction == "outbound" && r.peer == peer)
        .map(|r| (r.outcome.clone(), r.trust.clone(), r.protocol.clone()))
        .collect()
}

fn triple(outcome: &str, trust: &str, protocol: &str) -> (String, String, String) {
    (outcome.to_owned(), trust.to_owned(), protocol.to_owned())
}

/// The one endpoint `outbound/IP` of `tlsledger explain IP --json`.
fn explain_outbound(state: &Path, ip: &str, now: &str) -> Value {
    let thresholds = repo().join("tests/data/lab-thresholds.toml");
    let report = tlsledger_json(&[
        "explain",
        ip,
        "--state",
        state.to_str().expect("UTF-8 path"),
        "--json",
        "--thresholds",
        thresholds.to_str().expect("UTF-8 path"),
        "--now",
        now,
    ]);
    let endpoints = report["endpoints"].as_array().cloned().unwrap_or_default();
    endpoints
        .into_iter()
        .find(|e| e["endpoint"] == format!("outbound/{ip}"))
        .unwrap_or_else(|| panic!("no outbound/{ip} in explain {ip}: {report:#}"))
}

#[test]
fn lab_end_to_end() {
    let pid = std::process::id();
    let server = Server::started(CLICKHOUSE_SLOT);
    // A fresh database per run: 18.16 brings TRUNCATEd data back.
    let database = format!("lab_{pid}");
    server.apply_schema(&database);

    // The lab's folder is known before it exists (postfix_lab.rs names it); ingest waits for the
    // log file, and its milter must listen before the sender's smtpd is told about it.
    let lab_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("postfix-lab-e2e-{pid}"));
    let _ = std::fs::remove_dir_all(&lab_dir);
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-e2e-{pid}"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    let (state, feeds, spool) = (scratch.join("state"), scratch.join("feeds"), scratch.join("spool"));
    let sender_log = lab_dir.join("postfix-out/maillog");
    let exim_dir = scratch.join("exim");
    let exim_log = exim_dir.join("log/mainlog");
    let thresholds = repo().join("tests/data/lab-thresholds.toml");
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let (state_arg, feeds_arg, spool_arg, log_arg, thresholds_arg) =
        (path(&state), path(&feeds), path(&spool), path(&sender_log), path(&thresholds));
    let exim_log_arg = path(&exim_log);
    // The history the proxy's endpoint earned before today (a baseline is earned on days before
    // a bad episode, and the whole lab runs within one day): real lab lines dated yesterday.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let history = std::fs::read_to_string(repo().join("tests/lab/proxy-history.maillog")).expect("proxy history");
    let history: String = history
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("{}\n", line.replace("@DAY@", &yesterday)))
        .collect();
    crate::common::parse_into_state(&state, "-", history.as_bytes(), &[]);
    let ingest = Milter::spawn(
        &[
            "ingest",
            "--follow",
            &log_arg,
            "--follow",
            &exim_log_arg,
            "--milter-listen",
            "inet:127.0.0.1:0",
            "--stdout",
            "--stats",
            "--state",
            &state_arg,
            "--trusted-files",
            "--tls-logging",
            "on",
            "--poll-ms",
            "50",
            "--checkpoint-interval-ms",
            "500",
            "--clickhouse",
            &server.url,
            "--database",
            &database,
            "--spool-dir",
            &spool_arg,
            "--batch-period-ms",
            "200",
            "--feed-dir",
            &feeds_arg,
            "--feed-interval-secs",
            "1",
            "--feed-thresholds",
            &thresholds_arg,
        ],
        "milter listening on ",
    );
    let lab = Lab::up("e2e", LAB_SLOT);
    assert_eq!(lab.var("SENDER_LOG"), log_arg, "the lab's log is where ingest follows");

    let ca = lab.receiver("CA");
    let selfsigned = lab.receiver("SELFSIGNED");
    let plain = lab.receiver("PLAIN");
    let expired = lab.receiver("EXPIRED");
    let required = lab.receiver("REQUIRED");
    let broken = lab.receiver("BROKEN");
    let proxy_port = lab.port_base + 7;
    let proxy = StripProxy::start((PROXY_ADDR, proxy_port), (ca.0.clone(), ca.1 as u16), PROXY_CLEAN_SESSIONS);
    // Exim (unpacked privately by tests/run.sh) and its broken-after-220 receiver.
    let exim = crate::exim::lab::exim();
    let (exim_port, exim_broken_port) = (lab.port_base + 8, lab.port_base + 9);
    let stop_broken = Arc::new(AtomicBool::new(false));
    let exim_broken = crate::exim::lab::broken_starttls_at((EXIM_BROKEN_ADDR, exim_broken_port), stop_broken.clone());
    for sub in ["spool", "log"] {
        std::fs::create_dir_all(exim_dir.join(sub)).expect("Exim folders");
    }
    for file in ["ca.crt", "mx.crt", "mx.key"] {
        std::fs::copy(lab.dir.join("ca").join(file), exim_dir.join(file)).expect("Exim certificates");
    }
    // Exim writes its spool and logs as Debian-exim and reads the key as that group.
    crate::exim::lab::run("chown", &["-R", "Debian-exim:Debian-exim", "spool", "log"], &exim_dir);
    crate::exim::lab::run("chgrp", &["Debian-exim", "mx.key"], &exim_dir);
    crate::exim::lab::run("chmod", &["0640", "mx.key"], &exim_dir);
    let exim_conf = exim_dir.join("exim.conf");
    let config = exim_sender_config(
        &exim_dir,
        &exim,
        (EXIM_ADDR, exim_port),
        (&ca.0, ca.1 as u16),
        (EXIM_BROKEN_ADDR, exim_broken_port),
        (WRONG_NAME_ADDR, exim_port),
    );
    std::fs::write(&exim_conf, config).expect("exim.conf");
    let exim_daemon = crate::exim::lab::Daemon::start(&exim, &exim_conf, &exim_log);
    let wrong_name_relay = StripProxy::start((WRONG_NAME_ADDR, exim_port), (ca.0.clone(), ca.1 as u16), usize::MAX);

    // The sender's smtpd calls the milter inside ingest and asks clients for certificates; the
    // proxy gets a test domain of its own (texthash maps are read again by the reloaded daemons).
    let conf = PathBuf::from(lab.var("SENDER_CONF"));
    let mut transport = std::fs::read_to_string(conf.join("transport")).expect("transport map");
    transport.push_str(&format!("stripped.test smtp:[{PROXY_ADDR}]:{proxy_port}\n"));
    transport.push_str(&format!("tls10.test smtp:[{TLS10_ADDR}]:{proxy_port}\n"));
    // Postfix checks the wrong-name relay's certificate (mx.ca.test) against another name.
    transport.push_str(&format!("wrongname.test smtp-policy:[{WRONG_NAME_ADDR}]:{exim_port}\n"));
    std::fs::write(conf.join("transport"), transport).expect("transport map");
    let mut policy = std::fs::read_to_string(conf.join("tls_policy")).expect("TLS policy map");
    policy.push_str(&format!("[{WRONG_NAME_ADDR}]:{exim_port} secure match=mx.other.test\n"));
    std::fs::write(conf.join("tls_policy"), policy).expect("TLS policy map");
    let milters = format!("smtpd_milters={}", ingest.bound);
    let ca_file = format!("smtpd_tls_CAfile={}", lab.var("CA_CERT"));
    lab.reload("postfix-out", &[&milters, "milter_default_action=accept", "smtpd_tls_ask_ccert=yes", &ca_file]);

    // Outbound and inbound: postfix-lab.sh's own run (six domains, seven swaks sessions, one of
    // them in plaintext), then the broken receiver, then the proxy before and after it strips.
    crate::postfix_lab::check_lab("send", &crate::postfix_lab::run_lab("send", &lab.dir, lab.port_base));
    let log = || std::fs::read_to_string(&sender_log).unwrap_or_default();
    // Postfix falls back to plaintext after a failed handshake only for a message older than
    // minimal_backoff_time. Shortened only now, so that the messages `send` deferred keep their
    // five minutes and no reload brings them back.
    lab.reload("postfix-out", &["minimal_backoff_time=2s"]);
    let (broken_id, status) = lab.send_one("user@broken.test");
    assert_eq!(status, "deferred", "{}", attempt_lines(&log(), &broken_id).join("\n"));
    // Drive the retry: once the message is older than minimal_backoff_time, `postqueue -i`. The
    // wait is Postfix's own rule (the message's age), not a race: it starts after the arrival.
    let old_enough = Instant::now() + Duration::from_secs(3);
    while Instant::now() < old_enough {
        std::thread::park_timeout(old_enough.saturating_duration_since(Instant::now()));
    }
    let postqueue = Command::new("postqueue")
        .args(["-c", lab.var("SENDER_CONF"), "-i", &broken_id])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("postqueue");
    assert!(postqueue.status.success(), "postqueue -i: {}", String::from_utf8_lossy(&postqueue.stderr));
    let status_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains(&format!(" {broken_id}: to=<user@broken.test>")) && l.contains(" status="))
            .count()
    };
    wait_until("the retry to the broken receiver", || status_lines(&log()) >= 2, log);
    let retry = attempt_lines(&log(), &broken_id).join("\n");
    assert!(retry.contains("status=sent"), "the retry falls back to plaintext: {retry}");
    assert!(retry.contains(&format!("{broken_id}: Cannot start TLS: handshake failure")), "{retry}");
    assert!(!retry.contains("TLS connection established"), "{retry}");
    let (clean_id, status) = lab.send_one("first@stripped.test");
    let attempt = attempt_lines(&log(), &clean_id).join("\n");
    assert_eq!(status, "sent", "{attempt}");
    assert!(attempt.contains(&format!("TLS connection established to {PROXY_ADDR}[{PROXY_ADDR}]")), "{attempt}");
    let (stripped_id, status) = lab.send_one("second@stripped.test");
    let attempt = attempt_lines(&log(), &stripped_id).join("\n");
    assert_eq!(status, "sent", "the stripped session goes out in clear: {attempt}");
    assert!(!attempt.contains("TLS connection established"), "{attempt}");
    assert_eq!(proxy.sessions(), 2, "two sessions through the proxy");
    let (wrong_id, status) = lab.send_one("user@wrongname.test");
    let attempt = attempt_lines(&log(), &wrong_id).join("\n");
    assert_eq!(status, "deferred", "{attempt}");
    assert!(attempt.contains("num=62:hostname mismatch"), "{attempt}");
    // Inbound: one more plaintext session and one with a client certificate from the lab's CA.
    let (cert, key) = client_certificate(&lab.dir.join("ca"));
    let cert_id = queued_as(&swaks(&lab, "cert@trusted.test", &["--tls", "--tls-cert", &cert, "--tls-key", &key]));
    let plain_id = queued_as(&swaks(&lab, "clear@plain.test", &[]));
    let exim_rcpts = ["bob@exim-valid.test", "bob@exim-broken.test", "bob@exim-wrongname.test"];
    for rcpt in exim_rcpts {
        let output = Command::new("swaks")
            .args(["--server", EXIM_ADDR, "--port", &exim_port.to_string(), "--local-interface", EXIM_CLIENT])
            .args(["--from", "alice@exim.lab.test", "--to", rcpt, "--tls", "--timeout", "30"])
            .output()
            .expect("swaks");
        assert!(output.status.success(), "swaks to {rcpt}: {}", String::from_utf8_lossy(&output.stdout));
    }
    // Exim delivers at once; every message from swaks ends with `Completed` (the wrong name's
    // deferral is final at once: no retry rules).
    crate::exim::lab::wait_for(
        &exim_log,
        |log| {
            let arrivals: Vec<&str> = log.lines().filter(|l| l.contains(" <= alice@exim.lab.test ")).collect();
            arrivals.len() == exim_rcpts.len()
                && arrivals.iter().all(|arrival| {
                    // The message id is the word before `<=` (after the time and its zone).
                    let id = arrival.split(" <= ").next().and_then(|head| head.rsplit(' ').next()).unwrap_or("-");
                    log.contains(&format!("{id} Completed"))
                })
        },
        "every Exim message completed",
    );

    // TLS 1.0: the receiver without STARTTLS (used by `send` only) now offers it with TLS 1.0
    // alone, behind a relay of its own. Postfix 3.7 with OpenSSL 3.0 on Debian 12 negotiates it
    // with the default settings; at level `may` below TLS 1.3 both sides allow anonymous ciphers,
    // so the session is `AECDH-AES256-SHA` without a certificate (Postfix logs "Anonymous").
    let tls10_relay = StripProxy::start((TLS10_ADDR, proxy_port), (required.0.clone(), required.1 as u16), usize::MAX);
    let service = |param: &str| format!("{}:{}/inet/{param}", required.0, required.1);
    lab.reload("postfix-in", &[&service("smtpd_tls_security_level=may"), &service("smtpd_tls_protocols=<=TLSv1")]);
    let (tls10_id, status) = lab.send_one("old@tls10.test");
    let attempt = attempt_lines(&log(), &tls10_id).join("\n");
    assert_eq!(status, "sent", "{attempt}");
    assert!(attempt.contains(&format!("TLS connection established to {TLS10_ADDR}[{TLS10_ADDR}]")), "{attempt}");
    assert!(attempt.contains(": TLSv1 with cipher "), "TLS 1.0 negotiated: {attempt}");

    // send: 7 outbound + 7 inbound; send-one ×5: 5 + 5 and the broken receiver's retry: a failed
    // handshake and the delivery in clear; the two swaks: 2 outbound + 2 inbound.
    // Exim: 4 outbound (valid; broken: the failed handshake and the retry in clear; wrong name)
    // + 3 inbound.
    let (want_outbound, want_inbound) = (20usize, 17usize);
    let count = |direction: &str| rows(&server, &database).iter().filter(|r| r.direction == direction).count();
    // Live: every inbound session ends with its disconnect, so all of them reach ClickHouse; the
    // broken receiver's failed handshake ends its connection, so it reaches the feeds.
    wait_until(
        "every inbound session in ClickHouse",
        || count("inbound") >= want_inbound,
        || format!("{:#?}\n--- sender log ---\n{}", rows(&server, &database), log()),
    );
    let discard = feeds.join("smtp_discard_ehlo.cidr");
    let broken_entry = format!("{}/32\tstarttls", broken.0);
    wait_until(
        "the broken receiver in the discard map",
        || std::fs::read_to_string(&discard).is_ok_and(|t| t.contains(&broken_entry)),
        || std::fs::read_to_string(&discard).unwrap_or_default(),
    );
    let (live, stderr) = ingest.stop_with("inbound log-only sessions");
    let stat = |label: &str| crate::common::stat(stderr.as_bytes(), label);
    // The milter sees Postfix's 14 inbound sessions; Exim's three are the log's alone.
    assert_eq!(stat("milter observations"), 14, "{stderr}");
    assert_eq!(stat("log duplicates of milter"), 14, "{stderr}");
    // An outbound connection ends when its smtp process logs its next connection, or after five
    // minutes of log time: the last one of each process is still open here, and the checkpoint
    // keeps it for replay. A batch run over the same checkpoint finishes the file, as a restart
    // of the daemon would.
    let batch = tlsledger(
        &[
            "ingest",
            "--follow",
            &log_arg,
            "--follow",
            &exim_log_arg,
            "--exit-at-end",
            "--stdout",
            "--state",
            &state_arg,
            "--trusted-files",
            "--tls-logging",
            "on",
            "--poll-ms",
            "50",
            "--clickhouse",
            &server.url,
            "--database",
            &database,
            "--spool-dir",
            &spool_arg,
            "--feed-dir",
            &feeds_arg,
            "--feed-thresholds",
            &thresholds_arg,
        ],
        b"",
    );
    assert!(batch.status.success(), "ingest --exit-at-end: {}", String::from_utf8_lossy(&batch.stderr));
    let finished = crate::common::observations(&batch.stdout);
    assert!(finished.iter().all(|o| o["direction"] == "outbound"), "only held outbound connections: {finished:#?}");
    let rows = rows(&server, &database);
    let context = format!("rows: {rows:#?}\nstderr:\n{stderr}");
    assert_eq!(live.len() + finished.len(), want_outbound + want_inbound, "one observation per session: {context}");
    assert_eq!(rows.len(), want_outbound + want_inbound, "ClickHouse has each once: {context}");

    // Outbound, per receiver.
    let tls13 = |trust: &str| triple("tls", trust, "TLSv1.3");
    assert_eq!(outbound_of(&rows, "postfix", TLS10_ADDR), [triple("tls", "anonymous", "TLSv1")], "{context}");
    // send: verified, trusted, and the plain injection (to trusted.test); the client-cert swaks.
    assert_eq!(
        outbound_of(&rows, "postfix", &ca.0),
        [tls13("trusted"), tls13("trusted"), tls13("trusted"), tls13("verified")],
        "{context}"
    );
    assert_eq!(outbound_of(&rows, "postfix", &selfsigned.0), [tls13("untrusted")], "{context}");
    assert_eq!(
        outbound_of(&rows, "postfix", &plain.0),
        [triple("plaintext", "", ""), triple("plaintext", "", "")],
        "{context}"
    );
    assert_eq!(
        outbound_of(&rows, "postfix", &expired.0),
        [triple("cert-verify-failed", "untrusted", "TLSv1.3")],
        "{context}"
    );
    assert_eq!(outbound_of(&rows, "postfix", &required.0), [triple("tls-required-missing", "", "")], "{context}");
    assert_eq!(
        outbound_of(&rows, "postfix", &broken.0),
        [triple("handshake-failed", "", ""), triple("handshake-failed", "", ""), triple("plaintext", "", "")],
        "{context}"
    );
    assert_eq!(outbound_of(&rows, "postfix", PROXY_ADDR), [triple("plaintext", "", ""), tls13("trusted")], "{context}");
    // Exim: verified against the lab CA (Exim's `CV=yes` is `trusted`); the broken listener's
    // failed handshake and Exim's immediate retry in clear.
    assert_eq!(outbound_of(&rows, "exim", &ca.0), [tls13("trusted")], "{context}");
    assert_eq!(
        outbound_of(&rows, "exim", EXIM_BROKEN_ADDR),
        [triple("handshake-failed", "", ""), triple("plaintext", "", "")],
        "{context}"
    );
    let exim_peers: Vec<&str> =
        rows.iter().filter(|r| r.mta == "exim" && r.direction == "outbound").map(|r| r.peer.as_str()).collect();
    assert_eq!(outbound_of(&rows, "exim", WRONG_NAME_ADDR), [triple("cert-verify-failed", "", "")], "{context}");
    assert_eq!(exim_peers.len(), 4, "{context}");
    // Postfix checks the same certificate against `mx.other.test`: a hostname mismatch.
    assert_eq!(
        outbound_of(&rows, "postfix", WRONG_NAME_ADDR),
        [triple("cert-verify-failed", "untrusted", "TLSv1.3")],
        "{context}"
    );
    let kind = server.query_in(
        &database,
        &format!(
            "SELECT ifNull(failure_kind, '') FROM observations FINAL \
             WHERE mta = 'postfix' AND peer_ip = IPv6StringToNum('::ffff:{WRONG_NAME_ADDR}') FORMAT TSV"
        ),
    );
    assert_eq!(kind, "certificate-host-mismatch\n", "{context}");
    // Exim 4.96 logs only `TLS session: (certificate verification failed)` for the wrong name.
    let kind = server.query_in(
        &database,
        &format!("SELECT ifNull(failure_kind, '') FROM observations FINAL WHERE mta = 'exim' AND peer_ip = IPv6StringToNum('::ffff:{WRONG_NAME_ADDR}') FORMAT TSV"),
    );
    assert_eq!(kind, "validation-failure\n", "{context}");

    // Inbound to Exim: swaks' two STARTTLS sessions, from the log.
    let exim_inbound: Vec<&Row> = rows.iter().filter(|r| r.mta == "exim" && r.direction == "inbound").collect();
    assert_eq!(exim_inbound.len(), 3, "{context}");
    assert!(
        exim_inbound.iter().all(|r| r.peer == EXIM_CLIENT
            && (r.outcome.as_str(), r.trust.as_str(), r.source.as_str()) == ("tls", "anonymous", "file")),
        "{context}"
    );
    // Inbound to Postfix: every session from 127.0.0.1, seen by the milter and the log, kept once.
    let inbound: Vec<&Row> = rows.iter().filter(|r| r.mta == "postfix" && r.direction == "inbound").collect();
    assert!(inbound.iter().all(|r| r.peer == "127.0.0.1"), "{context}");
    let mut inbound_outcomes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &inbound {
        // The milter's macros carry no trust for an anonymous client: `none`, unless the log's
        // twin came first and completed it (`anonymous`); which one comes first is a race.
        let trust = if r.trust == "anonymous" { "none".to_owned() } else { r.trust.clone() };
        *inbound_outcomes.entry((r.outcome.clone(), trust)).or_default() += 1;
    }
    // The milter's observation of each session is kept: trust `none` (or `anonymous`, see above)
    // for anonymous clients, `trusted` for the one with a certificate of the lab's CA.
    let want_inbound_outcomes: BTreeMap<(String, String), usize> = [
        (("plaintext".to_owned(), String::new()), 2),
        (("tls".to_owned(), "none".to_owned()), 11),
        (("tls".to_owned(), "trusted".to_owned()), 1),
    ]
    .into();
    assert_eq!(inbound_outcomes, want_inbound_outcomes, "{context}");
    assert!(inbound.iter().all(|r| r.source == "milter"), "{context}");
    // The swaks sessions by their queue ids: the client certificate reached the observation.
    let by_queue_id = |queue_id: &str| {
        server.query_in(
            &database,
            &format!(
                "SELECT source_kind, toString(outcome), ifNull(cert_subject, ''), ifNull(cert_issuer, '') \
                 FROM observations FINAL WHERE direction = 'inbound' AND has(queue_ids, '{queue_id}') FORMAT TSV"
            ),
        )
    };
    assert_eq!(by_queue_id(&cert_id), "milter\ttls\tclient.lab.test\ttlsledger lab CA\n", "{context}");
    assert_eq!(by_queue_id(&plain_id), "milter\tplaintext\t\t\n", "{context}");

    // Reputation, judged a minute from now with the lab's thresholds.
    let now = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let class = |ip: &str| {
        let endpoint = explain_outbound(&state, ip, &now);
        let c = &endpoint["classification"];
        (
            c["class"].as_str().unwrap_or_default().to_owned(),
            !c["downgrade"].is_null(),
            !c["broken_starttls"].is_null(),
            endpoint.to_string(),
        )
    };
    let (c, downgrade, broken_flag, e) = class(&ca.0);
    assert_eq!((c.as_str(), downgrade, broken_flag), ("historically-valid", false, false), "{e}");
    let (c, _, _, e) = class(&selfsigned.0);
    assert_eq!(c, "tls-unverified", "{e}");
    let (c, downgrade, broken_flag, e) = class(&plain.0);
    assert_eq!((c.as_str(), downgrade, broken_flag), ("never-tls", false, false), "{e}");
    let (c, _, _, e) = class(&required.0);
    assert_eq!(c, "unknown", "{e}");
    let (_, downgrade, broken_flag, e) = class(&broken.0);
    assert_eq!((downgrade, broken_flag), (false, true), "broken-starttls: {e}");
    let (_, downgrade, broken_flag, e) = class(EXIM_BROKEN_ADDR);
    assert_eq!((downgrade, broken_flag), (false, true), "broken-starttls after 220: {e}");
    let (_, downgrade, broken_flag, e) = class(PROXY_ADDR);
    assert_eq!((downgrade, broken_flag), (true, false), "downgrade-suspect behind the stripping proxy: {e}");

    // Feeds: the broken receiver in Postfix's discard map and Exim's avoid list; the canonical
    // JSON feed carries the classes and both flags (rspamd's downgrade map is for inbound senders).
    let want = [broken_entry.clone(), format!("{EXIM_BROKEN_ADDR}/32\tstarttls")];
    assert_eq!(feed_entries(&discard), want, "{}", discard.display());
    let want = [broken.0.clone(), EXIM_BROKEN_ADDR.to_owned()];
    assert_eq!(feed_entries(&feeds.join("avoid_tls.list")), want, "avoid_tls.list");
    assert_eq!(feed_entries(&feeds.join("tls_policy")), Vec::<String>::new(), "no enforcement without opt-in");
    let feed_path = feeds.join("tlsledger-feed.json");
    let feed: Value = serde_json::from_str(&std::fs::read_to_string(&feed_path).expect("JSON feed")).expect("JSON");
    let entry = |ip: &str| {
        feed["endpoints"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["direction"] == "outbound" && e["ip"] == ip))
            .cloned()
            .unwrap_or_else(|| panic!("no outbound {ip} in {}", feed_path.display()))
    };
    let stripped = entry(PROXY_ADDR);
    assert_eq!(stripped["class"], "historically-valid", "{stripped:#}");
    assert_eq!(stripped["downgrade_suspect"]["severity"], "high", "{stripped:#}");
    assert_eq!(stripped["downgrade_suspect"]["reason"], "plaintext where TLS was the rule", "{stripped:#}");
    let flagged = entry(&broken.0);
    assert_eq!((&flagged["broken_starttls"]["failures"], &flagged["broken_starttls"]["level"]), (&2.into(), &1.into()));
    for (ip, class) in [(&ca.0, "historically-valid"), (&selfsigned.0, "tls-unverified"), (&plain.0, "never-tls")] {
        let e = entry(ip);
        assert_eq!(e["class"], class, "{e:#}");
        assert!(e["downgrade_suspect"].is_null() && e["broken_starttls"].is_null(), "{e:#}");
    }

    // A dashboard's numbers: the broken-STARTTLS hosts and the verification mix from ClickHouse.
    let report = tlsledger_json(&[
        "report",
        "--clickhouse",
        &server.url,
        "--database",
        &database,
        "--format",
        "json",
        "--since",
        "1d",
        "--now",
        &now,
        "--dashboard",
        "broken_starttls",
        "--dashboard",
        "inbound_tls_share",
        "--dashboard",
        "weakest_peers",
    ]);
    let dashboard = |name: &str| {
        report["dashboards"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["name"] == name))
            .and_then(|d| d["rows"].as_array())
            .cloned()
            .unwrap_or_else(|| panic!("no dashboard {name} in {report:#}"))
    };
    // The weakest peers: the TLS 1.0 receiver first; the CA-signed one with both MTAs' sessions.
    let weakest = dashboard("weakest_peers");
    let first = weakest.first().unwrap_or_else(|| panic!("no weakest peers: {report:#}"));
    assert_eq!((&first["direction"], &first["peer"]), (&"outbound".into(), &TLS10_ADDR.into()), "{weakest:#?}");
    assert_eq!((&first["weakest_protocol"], &first["connections"]), (&"TLSv1".into(), &1.into()), "{weakest:#?}");
    let ca_row = weakest.iter().find(|r| r["direction"] == "outbound" && r["peer"] == ca.0.as_str());
    assert_eq!(ca_row.map(|r| &r["connections"]), Some(&5.into()), "4 from Postfix, 1 from Exim: {weakest:#?}");
    let broken_rows = dashboard("broken_starttls");
    let mut hosts: Vec<(String, u64, u64)> = broken_rows
        .iter()
        .filter(|row| row["direction"] == "outbound")
        .map(|row| {
            let n = |c: &str| row[c].as_u64().unwrap_or(u64::MAX);
            (row["peer"].as_str().unwrap_or_default().to_owned(), n("failures"), n("tls_successes"))
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, [(broken.0.clone(), 2, 0), (EXIM_BROKEN_ADDR.to_owned(), 1, 0)], "{broken_rows:#?}");
    assert_eq!(broken_rows.len(), 2, "{broken_rows:#?}");
    // Inbound sessions by hour (the run may straddle an hour): 17 decided, 15 over TLS.
    let share = dashboard("inbound_tls_share");
    let sum = |column: &str| share.iter().map(|r| r[column].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!((sum("sessions"), sum("tls_sessions"), sum("unknown_sessions")), (17, 15, 0), "{share:#?}");
    if let [one] = share.as_slice() {
        assert_eq!(one["share"].as_f64(), Some(0.8824), "{one:#}");
    }

    drop(exim_daemon);
    drop(wrong_name_relay);
    drop(tls10_relay);
    stop_broken.store(true, Ordering::Relaxed);
    exim_broken.join().expect("broken listener thread");
    drop(proxy);
    drop(lab);
    let _ = std::fs::remove_dir_all(&scratch);
}
