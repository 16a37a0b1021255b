//! The ClickHouse store against a real server: Debian's `clickhouse-server` 18.16, one private
//! instance per test on its own 127.0.0.1 ports (tests/harness/clickhouse.sh), stopped when the
//! test ends. Covers schema apply/status, the Row struct against `system.columns`, the
//! round trip of every Observation field, the spool when the server is unreachable, a server
//! killed in the middle of a load, and rejected rows going to the dead-letter file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tlsledger::observation::Observation;
use tlsledger::sinks::clickhouse::row::{ObservationRow, COLUMNS};
use tlsledger::sinks::clickhouse::ClickhouseConfig;

use crate::common::{observations, repo, stat, tlsledger};

/// A private server; stopped on drop.
/// The first of the three ports of server slot `index` of this test process (see [`Server::new`]).
pub(crate) fn slot_port(index: u16) -> u16 {
    assert!(index < 20, "server index {index}: 20 slots of 3 ports per test process");
    30_000 + (std::process::id() % 40) as u16 * 60 + index * 3
}

pub(crate) struct Server {
    pub(crate) dir: PathBuf,
    pub(crate) url: String,
    pub(crate) ports: [u16; 3],
}

impl Server {
    /// A stopped server's folder and ports for test number `index` (0–19, each test its own:
    /// tests run in parallel): 30000-32399, below the kernel's ephemeral range (32768-60999),
    /// where client sockets could take them first, and above the Postfix lab's 20000-29999.
    /// Indexes in use: 0–7 here (3 unreachable at first, then started), 8 the ingest outage
    /// test, 9 the ingest rotation oracle (tests/it/ingest.rs), 10–11 the report tests
    /// (tests/it/report.rs), 12–13 and the first port of 14 (ZooKeeper) the cluster tests
    /// (tests/it/cluster.rs), 15 the end-to-end lab (tests/it/lab.rs).
    pub(crate) fn new(index: u16) -> Server {
        let pid = std::process::id();
        let base = slot_port(index);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("clickhouse-{pid}-{index}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Server { url: format!("http://127.0.0.1:{base}"), dir, ports: [base, base + 1, base + 2] }
    }

    /// `new` and `start`.
    pub(crate) fn started(index: u16) -> Server {
        let server = Server::new(index);
        server.start();
        server
    }

    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(repo().join("tests/harness/clickhouse.sh"))
            .arg(action)
            .arg(&self.dir)
            .env("CH_HTTP_PORT", self.ports[0].to_string())
            .env("CH_TCP_PORT", self.ports[1].to_string())
            .env("CH_INTERSERVER_PORT", self.ports[2].to_string())
            .output()
            .expect("run tests/harness/clickhouse.sh (run tests/run.sh, which installs ClickHouse)")
    }

    pub(crate) fn start(&self) {
        let output = self.script("start");
        assert!(
            output.status.success(),
            "cannot start ClickHouse (is clickhouse-server installed? tests/run.sh installs it):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub(crate) fn kill(&self) {
        assert!(self.script("kill").status.success());
    }

    /// Runs `sql` over HTTP; panics with the server's message on error.
    pub(crate) fn query(&self, sql: &str) -> String {
        self.query_in("default", sql)
    }

    /// Runs `sql` in `database`.
    pub(crate) fn query_in(&self, database: &str, sql: &str) -> String {
        let url = format!("{}/?database={database}", self.url);
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", sql, &url])
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "query failed: {sql}\n{body}{}", String::from_utf8_lossy(&output.stderr));
        body
    }

    pub(crate) fn apply_schema(&self, database: &str) -> std::process::Output {
        let output = tlsledger(&["schema", "apply", "--clickhouse", &self.url, "--database", database], b"");
        assert!(output.status.success(), "schema apply: {}", String::from_utf8_lossy(&output.stderr));
        output
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.script("stop");
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh spool folder for one test.
fn spool_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("spool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn spooled_batches(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("batch-")).count())
        .unwrap_or(0)
}

/// Input files with every kind of observation we have: real lab logs and corpora.
const INPUTS: &[&str] = &[
    "examples/postfix-out.maillog",
    "examples/postfix-in.maillog",
    "tests/data/corpus/kumina-postfix_exporter.log",
    "tests/data/corpus/synthetic-framings.txt",
    "tests/data/corpus/fail2ban-postfix.log",
    "tests/data/postfix/tls-loglevel2-out.maillog",
];

const PARSE: &[&str] = &["parse", "--reference-time", "2026-11-30T00:00:00Z", "--log-zone", "utc"];

#[test]
fn clickhouse_schema_apply_is_idempotent_and_refuses_changed_files() {
    let server = Server::started(0);
    let first = server.apply_schema("tlsledger");
    let first_text = String::from_utf8_lossy(&first.stderr);
    assert!(first_text.contains("applied schema/portable/0001_observations.sql"), "{first_text}");
    assert!(first_text.contains("4 file(s) applied"), "{first_text}");
    let tables = server.query("SELECT name FROM system.tables WHERE database = 'tlsledger' ORDER BY name");
    assert_eq!(
        tables,
        "endpoint_daily\nendpoint_daily_mv\nendpoint_history\nendpoint_history_mv\nobservations\nschema_migrations\n"
    );

    let second = server.apply_schema("tlsledger");
    assert!(String::from_utf8_lossy(&second.stderr).contains("is up to date"));
    assert_eq!(server.query("SELECT count() FROM tlsledger.schema_migrations"), "4\n");

    let status = tlsledger(&["schema", "status", "--clickhouse", &server.url], b"");
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(status_text.contains("server 18.16"), "{status_text}");
    assert!(status_text.contains("0001_modern_storage.sql          not for this server"), "{status_text}");

    // A recorded file whose text changed is refused.
    server.query("DROP TABLE tlsledger.schema_migrations");
    server.query(
        "CREATE TABLE tlsledger.schema_migrations (set String, name String, checksum String, applied_at DateTime('UTC')) \
         ENGINE = MergeTree ORDER BY (set, name)",
    );
    server.query(
        "INSERT INTO tlsledger.schema_migrations VALUES ('portable', '0001_observations.sql', 'not-the-checksum', now())",
    );
    let refused = tlsledger(&["schema", "apply", "--clickhouse", &server.url], b"");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("changed after it was applied"));
    let status = tlsledger(&["schema", "status", "--clickhouse", &server.url], b"");
    assert_eq!(status.status.code(), Some(2));
}

#[test]
fn clickhouse_row_struct_matches_system_columns() {
    let server = Server::started(1);
    server.apply_schema("tlsledger");
    let columns =
        server.query("SELECT name FROM system.columns WHERE database = 'tlsledger' AND table = 'observations'");
    let columns: Vec<&str> = columns.lines().collect();
    assert_eq!(columns, COLUMNS, "ObservationRow and the observations table differ");
}

#[test]
fn clickhouse_every_observation_field_round_trips() {
    let server = Server::started(2);
    server.apply_schema("tlsledger");
    let spool = spool_dir("round-trip");
    let mut args: Vec<&str> = PARSE.to_vec();
    args.extend(["--stats", "--clickhouse", &server.url, "--spool-dir", spool.to_str().unwrap()]);
    args.extend(INPUTS);
    let output = tlsledger(&args, b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let parsed = observations(&output.stdout);
    assert!(parsed.len() > 40);
    assert_eq!(stat(&output.stderr, "clickhouse rows inserted"), parsed.len() as u64);

    let config = ClickhouseConfig::new(&server.url, Some("tlsledger"), None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The row type borrows its text, so rows are read one at a time and turned into owned
    // Observations at once.
    let stored: BTreeMap<String, serde_json::Value> = runtime.block_on(async {
        let mut cursor = config
            .client(false)
            .query("SELECT ?fields FROM observations FINAL")
            .fetch::<ObservationRow<'_>>()
            .expect("query");
        let (mut stored, mut n_rows) = (BTreeMap::new(), 0);
        while let Some(row) = cursor.next().await.expect("row") {
            let observation: Observation = row.into_observation().expect("valid codes");
            stored.insert(observation.event_id.clone(), serde_json::to_value(&observation).unwrap());
            n_rows += 1;
        }
        assert_eq!(n_rows, parsed.len(), "rows");
        stored
    });
    assert_eq!(stored.len(), parsed.len());
    for want in &parsed {
        let id = want["event_id"].as_str().unwrap();
        assert_eq!(stored.get(id), Some(want), "observation {id} changed in ClickHouse");
    }
    // The rollup saw every row once.
    let rollup = server.query("SELECT sum(n) FROM (SELECT uniqExactMerge(observations) AS n FROM tlsledger.endpoint_daily GROUP BY peer_ip, direction, day)");
    assert_eq!(rollup.trim(), parsed.len().to_string());
}

#[test]
fn clickhouse_unreachable_server_spools_and_replays() {
    let server = Server::new(3);
    let spool = spool_dir("unreachable");
    let mut args: Vec<&str> = PARSE.to_vec();
    args.extend(["--stats", "--clickhouse", &server.url, "--spool-dir", spool.to_str().unwrap()]);
    args.extend(["--retry-attempts", "1", "--batch-rows", "10"]);
    args.extend(INPUTS);
    let output = tlsledger(&args, b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("could not be sent to ClickHouse and are kept in"), "{stderr}");
    let n_parsed = observations(&output.stdout).len();
    assert!(spooled_batches(&spool) > 1, "nothing spooled");

    server.start();
    server.apply_schema("tlsledger");
    let replay = tlsledger(
        &[
            "parse",
            "--stats",
            "--output",
            "none",
            "--clickhouse",
            &server.url,
            "--spool-dir",
            spool.to_str().unwrap(),
            "/dev/null",
        ],
        b"",
    );
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(spooled_batches(&spool), 0);
    assert!(stat(&replay.stderr, "batches replayed") > 1);
    let counts = server.query("SELECT count(), uniqExact(event_id) FROM tlsledger.observations FINAL");
    assert_eq!(counts, format!("{n_parsed}\t{n_parsed}\n"));
}

#[test]
fn clickhouse_server_killed_during_a_load_loses_nothing() {
    let server = Server::started(4);
    server.apply_schema("tlsledger");
    let (first_half, second_half, expected) = lab_log_halves(200);
    assert!(expected > 1000);

    let spool = spool_dir("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(["parse", "--output", "none", "--stats", "--clickhouse", &server.url, "--spool-dir"])
        .arg(&spool)
        .args(["--batch-rows", "50", "--batch-period-ms", "50", "--retry-attempts", "20", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first_half.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // Wait until the loader has written some rows, then crash the server mid-load.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let count: u64 = server.query("SELECT count() FROM tlsledger.observations").trim().parse().unwrap();
        if count > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the loader never inserted anything");
        std::thread::yield_now();
    }
    server.kill();
    stdin.write_all(second_half.as_bytes()).unwrap();
    server.start();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stat(&output.stderr, "observations"), expected);
    let counts = server.query("SELECT count(), uniqExact(event_id) FROM tlsledger.observations FINAL");
    assert_eq!(counts, format!("{expected}\t{expected}\n"), "loader said:\n{stderr}");
}

/// Enough distinct sessions to span many batches: the real lab log repeated `rounds` times under
/// new pids, split in two halves, and the number of observations `parse` finds in the whole.
fn lab_log_halves(rounds: u32) -> (String, String, u64) {
    let lab = std::fs::read_to_string(repo().join("examples/postfix-out.maillog")).unwrap();
    let mut first_half = String::new();
    let mut second_half = String::new();
    for round in 0..rounds {
        let half = if round < rounds / 2 { &mut first_half } else { &mut second_half };
        for line in lab.lines() {
            half.push_str(&with_pid_offset(line, round * 100_000));
            half.push('\n');
        }
    }
    let whole = format!("{first_half}{second_half}");
    let output = tlsledger(&["parse", "--output", "none", "--stats", "-"], whole.as_bytes());
    (first_half, second_half, stat(&output.stderr, "observations"))
}

/// `line` with the pid in its syslog tag (`name[pid]: `) raised by `offset`.
fn with_pid_offset(line: &str, offset: u32) -> String {
    let Some(end) = line.find("]: ") else { return line.to_owned() };
    let Some(start) = line[..end].rfind('[') else { return line.to_owned() };
    let Ok(pid) = line[start + 1..end].parse::<u32>() else { return line.to_owned() };
    format!("{}[{}{}", &line[..start], pid + offset, &line[end..])
}

#[test]
fn clickhouse_rejected_rows_go_to_the_dead_letter_file() {
    let server = Server::started(5);
    // A table whose peer_hostname is FixedString(8): every row with a hostname is misaligned in
    // RowBinary (the server answers with an error about the bytes it misread), rows without one
    // are fine.
    let ddl = include_str!("../../schema/portable/0001_observations.sql")
        .replace("peer_hostname Nullable(String)", "peer_hostname Nullable(FixedString(8))");
    server.query("CREATE DATABASE IF NOT EXISTS broken");
    let statement: String = ddl.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    server.query(
        &statement
            .trim()
            .trim_end_matches(';')
            .replace("CREATE TABLE IF NOT EXISTS observations", "CREATE TABLE broken.observations"),
    );
    let cert_columns: String = include_str!("../../schema/portable/0004_observation_cert.sql")
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    server.query(
        cert_columns
            .trim()
            .trim_end_matches(';')
            .replace("ALTER TABLE observations", "ALTER TABLE broken.observations")
            .as_str(),
    );
    let spool = spool_dir("dead-letter");
    let output = tlsledger(
        &[
            "parse",
            "--stats",
            "--clickhouse",
            &server.url,
            "--database",
            "broken",
            "--spool-dir",
            spool.to_str().unwrap(),
            "examples/postfix-out.maillog",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let parsed = observations(&output.stdout);
    let with_hostname = parsed.iter().filter(|o| !o["peer"]["hostname"].is_null()).count();
    let without_hostname = parsed.len() - with_hostname;
    assert!(with_hostname > 0 && without_hostname > 0);
    assert_eq!(stat(&output.stderr, "rows dead-lettered"), with_hostname as u64);
    assert_eq!(server.query("SELECT count() FROM broken.observations").trim(), without_hostname.to_string());
    let dead = std::fs::read_to_string(spool.join("dead-letter.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), with_hostname);
    for line in dead.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        // Usually 33 CANNOT_READ_ALL_DATA or 32 ATTEMPT_TO_READ_AFTER_EOF, but a misaligned row
        // makes the server report whatever its bytes look like: any server code will do.
        let code = tlsledger::sinks::clickhouse::retry::error_code(entry["error"].as_str().unwrap());
        assert!(code.is_some(), "{entry}");
        assert!(!entry["observation"]["peer"]["hostname"].is_null());
    }
    assert!(stderr.contains("rejected a row"), "{stderr}");
}

#[test]
fn clickhouse_sample_rows_and_rollup_on_the_oldest_engine() {
    // tests/run.sh runs the same file on ClickHouse 26 (chdb); here it runs on 18.16.
    let server = Server::started(6);
    let output = tlsledger(&["schema", "apply", "--clickhouse", &server.url, "--database", "sample"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sql = std::fs::read_to_string(repo().join("tests/data/clickhouse/sample.sql")).unwrap();
    let results: Vec<String> = tlsledger::sinks::clickhouse::schema::statements(&sql)
        .iter()
        .map(|statement| server.query_in("sample", statement))
        .collect();
    assert_eq!(results[1], "3\t3\n", "FINAL must collapse the resent row");
    assert_eq!(
        results[2],
        "2001:db8::7\tinbound\t1\t0\t0\t0\t2026-11-30 12:00:00\t2026-11-30 12:00:00\tplaintext\t[]\n\
         ::ffff:192.0.2.25\toutbound\t2\t1\t1\t1\t2026-11-30 10:00:00\t2026-11-30 11:00:00\thandshake-failed\t['example.net']\n"
    );
    // Day 20787 = 2026-11-30. The handshake failure is a decision but not a certificate failure.
    assert_eq!(
        results[3],
        "2001:db8::7\tinbound\t20787\t0\t1\t0\t0\t1\t0\t0\t0\t0\t[]\t[]\n\
         ::ffff:192.0.2.25\toutbound\t20787\t1\t0\t1\t1\t2\t0\t5\t5\t256\t['mx.example.net']\t['example.net']\n"
    );
}

#[test]
fn clickhouse_rebuild_gives_the_same_classes_as_streaming() {
    let server = Server::started(7);
    server.apply_schema("tlsledger");
    let streamed = spool_dir("state-streamed");
    let rebuilt = spool_dir("state-rebuilt");
    let spool = spool_dir("rebuild");
    let log = crate::reputation::multi_day_log(0..10, true);
    let output = tlsledger(
        &[
            "parse",
            "--output",
            "none",
            "--tls-logging",
            "on",
            "--trusted-files",
            "--state",
            streamed.to_str().unwrap(),
            "--clickhouse",
            &server.url,
            "--spool-dir",
            spool.to_str().unwrap(),
            "-",
        ],
        log.as_bytes(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Real Postfix lines with peer certificates (TLS log level 2): the certificates too must
    // come back the same from ClickHouse.
    let certificates = repo().join("tests/data/postfix/tls-loglevel2-out.maillog");
    let output = tlsledger(
        &[
            "parse",
            "--output",
            "none",
            "--tls-logging",
            "on",
            "--trusted-files",
            "--state",
            streamed.to_str().unwrap(),
            "--clickhouse",
            &server.url,
            "--spool-dir",
            spool.to_str().unwrap(),
            "--reference-time",
            "2026-11-30T23:00:00Z",
            certificates.to_str().unwrap(),
        ],
        b"",
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rebuild = tlsledger(
        &[
            "reputation",
            "rebuild",
            "--from-clickhouse",
            &server.url,
            "--state",
            rebuilt.to_str().unwrap(),
            "--trusted-files",
        ],
        b"",
    );
    assert!(rebuild.status.success(), "{}", String::from_utf8_lossy(&rebuild.stderr));
    for target in
        ["192.0.2.10", "192.0.2.20", "192.0.2.30", "valid.example", "mx.selfsigned.example", "127.0.0.2", "127.0.0.3"]
    {
        let explain = |state: &Path| {
            let output = tlsledger(
                &["explain", target, "--state", state.to_str().unwrap(), "--json", "--now", "2026-11-11T10:00:00Z"],
                b"",
            );
            assert!(output.status.success(), "{target}: {}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        };
        let (a, b) = (explain(&streamed), explain(&rebuilt));
        assert_eq!(a, b, "{target}: the rebuild differs from the streamed state");
        assert!(!a["endpoints"].as_array().unwrap().is_empty(), "{target}");
        if target.starts_with("127.") {
            let outbound =
                a["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == format!("outbound/{target}"));
            let certificates = outbound.map_or(0, |e| e["certificates"].as_array().unwrap().len());
            assert!(certificates > 0, "{target}: no certificate in {a:#}");
        }
    }
    // Nothing was inserted since: an incremental run refreshes no endpoint and changes nothing.
    let incremental = tlsledger(
        &[
            "reputation",
            "rebuild",
            "--from-clickhouse",
            &server.url,
            "--state",
            rebuilt.to_str().unwrap(),
            "--trusted-files",
            "--incremental",
            "--overlap-secs",
            "0",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&incremental.stderr);
    assert!(incremental.status.success(), "{stderr}");
    assert!(stderr.contains("refreshed 0 of 9 endpoints"), "{stderr}");
    let explain = |state: &Path| {
        let output = tlsledger(
            &["explain", "192.0.2.10", "--state", state.to_str().unwrap(), "--json", "--now", "2026-11-11T10:00:00Z"],
            b"",
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    assert_eq!(explain(&streamed), explain(&rebuilt));
}

#[test]
fn clickhouse_outage_under_ingest_loses_nothing_across_a_restart() {
    let server = Server::started(8);
    server.apply_schema("tlsledger");
    let (first_half, second_half, expected) = lab_log_halves(120);
    assert!(expected > 500);
    let work = spool_dir("ingest-outage-work");
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join("mail.log");
    std::fs::write(&log, &first_half).unwrap();
    let spool = spool_dir("ingest-outage");
    let checkpoints = work.join("checkpoints");
    let ingest = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tlsledger"))
            .args(["ingest", "--follow", log.to_str().unwrap(), "--no-state", "--clickhouse", &server.url])
            .args(["--checkpoint-dir", checkpoints.to_str().unwrap(), "--spool-dir", spool.to_str().unwrap()])
            .args(["--batch-rows", "50", "--batch-period-ms", "50", "--retry-attempts", "1"])
            .args(["--poll-ms", "20", "--checkpoint-interval-ms", "100"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
    };
    let rows = || -> u64 { server.query("SELECT count() FROM tlsledger.observations").trim().parse().unwrap() };

    // The daemon loads the first half; the server is down for 30 s while the second half keeps
    // arriving (a thirtieth every second) and is spooled; the server comes back and the daemon
    // replays the spool on its own.
    let daemon = ingest(&[]);
    wait("the first rows", &|| rows() > 0);
    server.kill();
    let down_at = std::time::Instant::now();
    let lines: Vec<&str> = second_half.split_inclusive('\n').collect();
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for (second, part) in lines.chunks(lines.len().div_ceil(30)).enumerate() {
        // The writer's clock, not a wait for a condition: the outage lasts 30 s by design.
        let due = down_at + std::time::Duration::from_secs(second as u64);
        while std::time::Instant::now() < due {
            std::thread::park_timeout(due - std::time::Instant::now());
        }
        writer.write_all(part.concat().as_bytes()).unwrap();
    }
    let back_at = down_at + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < back_at {
        std::thread::park_timeout(back_at - std::time::Instant::now());
    }
    assert!(spooled_batches(&spool) > 0, "the outage spooled nothing");
    server.start();
    wait("the spool to drain", &|| spooled_batches(&spool) == 0 && rows() > 0);
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let output = daemon.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // A second run finishes the file from the checkpoint (connections still open are replayed).
    let output = ingest(&["--exit-at-end"]).wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let counts = server.query("SELECT count(), uniqExact(event_id) FROM tlsledger.observations FINAL");
    assert_eq!(counts, format!("{expected}\t{expected}\n"));
}
