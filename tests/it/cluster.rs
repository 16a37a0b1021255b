//! Scale-out on a real ClickHouse cluster (issue 10): a private ZooKeeper (Debian's `zookeeper`)
//! and two Debian `clickhouse-server` 18.16 instances on loopback as two shards of cluster
//! `fleet` (tests/harness/cluster.sh), the cluster schema applied `ON CLUSTER`, two real
//! `tlsledger ingest --follow` daemons on two MTA logs writing through the Distributed table,
//! one shard killed while both keep ingesting, and `tlsledger reputation rebuild` (full and
//! incremental) compared with the single-node path: one `tlsledger ingest` with the embedded
//! state over both logs.
//!
//! A second test makes the same two servers two replicas of one shard: replication, a replica
//! killed and catching up, and a resend through the other replica collapsing by `event_id`.
//!
//! Ports: the servers use the clickhouse.rs scheme with indexes 12 and 13; ZooKeeper takes the
//! first port of index 14's slot (no test uses that index). Both tests use them, so they take
//! turns ([`PORTS`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clickhouse::{spooled_batches, Server};
use crate::common::{repo, tlsledger};

const CLUSTER: &str = "fleet";
const DATABASE: &str = "fleet";

/// Held by each test of this file while it runs: they use the same ports.
static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The ZooKeeper port of this test process.
fn zookeeper_port() -> u16 {
    crate::clickhouse::slot_port(14)
}

/// A private ZooKeeper; stopped on drop.
struct ZooKeeper {
    dir: PathBuf,
    port: u16,
}

impl ZooKeeper {
    fn started(dir: PathBuf, port: u16) -> ZooKeeper {
        let zookeeper = ZooKeeper { dir, port };
        let output = zookeeper.script("zk-start", &zookeeper.dir);
        assert!(
            output.status.success(),
            "cannot start ZooKeeper (tests/run.sh installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        zookeeper
    }

    fn script(&self, action: &str, dir: &Path) -> std::process::Output {
        Command::new("bash")
            .arg(repo().join("tests/harness/cluster.sh"))
            .arg(action)
            .arg(dir)
            .env("ZK_PORT", self.port.to_string())
            .env("CLUSTER", CLUSTER)
            .output()
            .expect("run tests/harness/cluster.sh")
    }

    /// Makes `server` a member of the cluster: shard `shard` of `shards` (native TCP ports).
    fn configure(&self, server: &Server, shards: &str, shard: &str) {
        let output = Command::new("bash")
            .arg(repo().join("tests/harness/cluster.sh"))
            .arg("configure")
            .arg(&server.dir)
            .env("ZK_PORT", self.port.to_string())
            .env("CLUSTER", CLUSTER)
            .env("SHARDS", shards)
            .env("SHARD", shard)
            .env("REPLICA", format!("r{}", server.ports[1]))
            .output()
            .expect("run tests/harness/cluster.sh");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.script("zk-stop", &self.dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh folder for test `name`.
fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The endpoints of the synthetic fleet: 30 addresses, a third each verified TLS, unverified TLS
/// and plaintext. MTA 1 talks to the first 20, MTA 2 to the last 20: the middle ten are seen by
/// both, so their histories exist only as the union of two logs.
fn endpoint(i: u32) -> (String, String, Option<&'static str>) {
    let ip = format!("192.0.2.{}", 10 + i);
    let host = format!("mx{i}.d{i}.example");
    let class = match i % 3 {
        0 => Some("Trusted"),
        1 => Some("Untrusted"),
        _ => None,
    };
    (ip, host, class)
}

/// One day of deliveries of `mta` (`mta1` or `mta2`) to each of its endpoints; `downgrade`
/// sends plaintext to the verified ones instead. `pid` numbers the smtp processes.
fn fleet_day(mta: &str, day: u32, downgrade: bool, pid: &mut u32) -> String {
    let range = if mta == "mta1" { 0..20 } else { 10..30 };
    let date = format!("2026-11-{:02}", day + 1);
    let minute = if mta == "mta1" { 0 } else { 30 };
    let mut log = String::new();
    for i in range {
        let (ip, host, class) = endpoint(i);
        let domain = host.split_once('.').map(|(_, domain)| domain.to_owned()).unwrap_or_default();
        *pid += 1;
        let pid = *pid;
        let class = if downgrade && class == Some("Trusted") { None } else { class };
        if let Some(class) = class {
            log.push_str(&format!(
                "{date}T10:{minute:02}:00+00:00 {mta} postfix/smtp[{pid}]: {class} TLS connection established to {host}[{ip}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
            ));
        }
        log.push_str(&format!(
            "{date}T10:{minute:02}:01+00:00 {mta} postfix/smtp[{pid}]: A{pid:09X}: to=<u@{domain}>, relay={host}[{ip}]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
        ));
    }
    log
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// Polls `done` until it holds; fails after two minutes.
fn wait_for(what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The common options of every ingest run here.
const INGEST: &[&str] = &["ingest", "--tls-logging", "on", "--log-zone", "utc", "--trusted-files", "--poll-ms", "20"];

/// `tlsledger ingest` following `log` into the cluster through `server`.
fn ingester(log: &Path, work: &Path, server: &Server, extra: &[&str]) -> Child {
    ingester_into(DATABASE, log, work, server, extra)
}

/// [`ingester`] into `database`.
fn ingester_into(database: &str, log: &Path, work: &Path, server: &Server, extra: &[&str]) -> Child {
    let name = log.file_stem().unwrap().to_string_lossy().into_owned();
    Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(INGEST)
        .arg("--follow")
        .arg(log)
        .args(["--no-state", "--clickhouse", &server.url, "--database", database])
        .arg("--checkpoint-dir")
        .arg(work.join(format!("checkpoints-{name}")))
        .arg("--spool-dir")
        .arg(work.join(format!("spool-{name}")))
        .args(["--batch-rows", "20", "--batch-period-ms", "50", "--retry-attempts", "1"])
        .args(["--checkpoint-interval-ms", "100"])
        .args(if extra.contains(&"--cluster-insert") { &[][..] } else { &["--cluster-insert", "distributed"][..] })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tlsledger ingest")
}

fn finish(child: Child, what: &str) {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
}

fn terminate(child: Child, what: &str) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    finish(child, what);
}

/// The single-node path: one ingester with the embedded state over both logs (same paths, so
/// the same event ids); returns the ids of the observations it emitted in this run.
fn reference(logs: &[&Path], work: &Path) -> Vec<String> {
    let mut args: Vec<String> = INGEST.iter().map(|s| s.to_string()).collect();
    for log in logs {
        args.extend(["--follow".to_owned(), log.display().to_string()]);
    }
    args.extend(["--state".to_owned(), work.join("reference").display().to_string()]);
    args.extend(["--exit-at-end".to_owned(), "--stdout".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = tlsledger(&args, b"");
    assert!(output.status.success(), "reference ingest: {}", String::from_utf8_lossy(&output.stderr));
    crate::common::observations(&output.stdout).iter().map(|o| o["event_id"].as_str().unwrap().to_owned()).collect()
}

/// `explain --json` of `target` in `state`, judged at a fixed time.
fn explain(state: &Path, target: &str) -> serde_json::Value {
    let output = tlsledger(
        &["explain", target, "--state", state.to_str().unwrap(), "--json", "--now", "2026-11-12T10:00:00Z"],
        b"",
    );
    assert!(output.status.success(), "explain {target}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every endpoint of `range`, its host name and domain judged the same in both states.
fn assert_same_reputation(rebuilt: &Path, reference: &Path, range: std::ops::Range<u32>) {
    let mut classes = BTreeSet::new();
    for i in range {
        let (ip, host, _) = endpoint(i);
        let domain = host.split_once('.').map(|(_, domain)| domain.to_owned()).unwrap_or_default();
        for target in [ip, host, domain] {
            let (a, b) = (explain(rebuilt, &target), explain(reference, &target));
            assert_eq!(a, b, "{target}: the cluster rebuild differs from the single-node state");
            for endpoint in a["endpoints"].as_array().into_iter().flatten() {
                classes.insert(endpoint["classification"]["class"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    // The comparison covers more than one class.
    assert!(classes.len() >= 3, "{classes:?}");
}

fn rebuild(server: &Server, state: &Path, extra: &[&str]) -> String {
    rebuild_from(DATABASE, server, state, extra)
}

fn rebuild_from(database: &str, server: &Server, state: &Path, extra: &[&str]) -> String {
    let mut args = vec!["reputation", "rebuild", "--from-clickhouse", &server.url, "--database", database];
    args.extend(["--state", state.to_str().unwrap(), "--trusted-files"]);
    args.extend(extra);
    let output = tlsledger(&args, b"");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "rebuild: {stderr}");
    stderr
}

#[test]
fn cluster_two_shards_store_each_observation_once_and_rebuild_the_fleet_reputation() {
    let _turn = PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let work = work_dir("shards");
    // Declared first, dropped last: the servers stop before their ZooKeeper.
    let zookeeper = ZooKeeper::started(work.join("zookeeper"), zookeeper_port());
    let (one, two) = (Server::new(12), Server::new(13));
    let shards = format!("{} {}", one.ports[1], two.ports[1]);
    zookeeper.configure(&one, &shards, "01");
    zookeeper.configure(&two, &shards, "02");
    one.start();
    two.start();

    let output =
        tlsledger(&["schema", "apply", "--clickhouse", &one.url, "--database", DATABASE, "--cluster", CLUSTER], b"");
    assert!(output.status.success(), "schema apply --cluster: {}", String::from_utf8_lossy(&output.stderr));
    for server in [&one, &two] {
        let tables = server.query(&format!(
            "SELECT name, engine FROM system.tables WHERE database = '{DATABASE}' AND name LIKE 'observations%' ORDER BY name"
        ));
        assert_eq!(tables, "observations\tDistributed\nobservations_local\tReplicatedReplacingMergeTree\n");
    }
    let status =
        tlsledger(&["schema", "status", "--clickhouse", &one.url, "--database", DATABASE, "--cluster", CLUSTER], b"");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("cluster   0003_endpoint_history.sql        applied"), "{status}");
    assert!(status.contains("portable  0001_observations.sql            single-node schema only"), "{status}");
    // The single-node schema is refused on a database that holds the cluster one.
    let refused = tlsledger(&["schema", "apply", "--clickhouse", &one.url, "--database", DATABASE], b"");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds the cluster schema"));
    // Applying it again through the other server changes nothing and fails nothing.
    let again =
        tlsledger(&["schema", "apply", "--clickhouse", &two.url, "--database", DATABASE, "--cluster", CLUSTER], b"");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));

    // Two MTAs, two logs, two ingesters, each talking to its own server.
    let (log1, log2) = (work.join("mta1.log"), work.join("mta2.log"));
    let (mut pid1, mut pid2) = (1000, 50_000);
    for day in 0..5 {
        append(&log1, &fleet_day("mta1", day, false, &mut pid1));
        append(&log2, &fleet_day("mta2", day, false, &mut pid2));
    }
    let daemon1 = ingester(&log1, &work, &one, &[]);
    let daemon2 = ingester(&log2, &work, &two, &[]);
    let local_rows = |server: &Server| -> u64 {
        server.query(&format!("SELECT count() FROM {DATABASE}.observations_local")).trim().parse().unwrap()
    };
    wait_for("rows on both shards", &|| local_rows(&one) > 0 && local_rows(&two) > 0);

    // Shard 2 dies; both ingesters keep reading new lines. Through the Distributed table with
    // insert_distributed_sync, a batch with rows for shard 2 fails on either server, so both
    // ingesters spool.
    two.kill();
    for day in 5..10 {
        append(&log1, &fleet_day("mta1", day, false, &mut pid1));
        append(&log2, &fleet_day("mta2", day, false, &mut pid2));
    }
    let (spool1, spool2) = (work.join("spool-mta1"), work.join("spool-mta2"));
    wait_for("both ingesters to spool", &|| spooled_batches(&spool1) > 0 && spooled_batches(&spool2) > 0);
    two.start();
    wait_for("both spools to drain", &|| spooled_batches(&spool1) == 0 && spooled_batches(&spool2) == 0);
    terminate(daemon1, "ingester 1");
    terminate(daemon2, "ingester 2");
    // The connections still open at the stop are replayed from the checkpoints.
    finish(ingester(&log1, &work, &one, &["--exit-at-end"]), "ingester 1, second run");
    finish(ingester(&log2, &work, &two, &["--exit-at-end"]), "ingester 2, second run");

    // Every observation of the single-node run is stored once, and nothing else is.
    let want: BTreeSet<String> = reference(&[&log1, &log2], &work).into_iter().collect();
    assert_eq!(want.len(), 400);
    // 18.16 answers FINAL on a Distributed table only when the sorting key and version columns
    // are read ("Cannot find column direction in source stream" otherwise).
    let ids = one.query(&format!(
        "SELECT event_id, peer_ip, direction, ts, ingest_ver FROM {DATABASE}.observations FINAL ORDER BY event_id"
    ));
    let got: Vec<&str> = ids.lines().map(|line| line.split('\t').next().unwrap_or_default()).collect();
    assert_eq!(got.len(), want.len(), "observations stored more or less than once");
    assert_eq!(got.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), want);
    // Both shards hold part of the fleet, each endpoint on one shard only.
    let (rows1, rows2) = (local_rows(&one), local_rows(&two));
    assert!(rows1 > 0 && rows2 > 0, "{rows1} {rows2}");
    let endpoints = |server: &Server| -> BTreeSet<String> {
        let text = server
            .query(&format!("SELECT DISTINCT IPv6NumToString(peer_ip) FROM {DATABASE}.observations_local ORDER BY 1"));
        text.lines().map(str::to_owned).collect()
    };
    let (on_one, on_two) = (endpoints(&one), endpoints(&two));
    assert_eq!(on_one.len() + on_two.len(), 30);
    assert!(on_one.is_disjoint(&on_two), "an endpoint's history is split across shards");

    // One reputation from the whole fleet equals the single-node one on the union of the logs.
    let rebuilt = work.join("rebuilt");
    let first = rebuild(&two, &rebuilt, &[]);
    assert!(first.contains(": 30 endpoints"), "{first}");
    assert_same_reputation(&rebuilt, &work.join("reference"), 0..30);

    // A day later MTA 1 sends plaintext to its verified peers; the incremental refresh reads
    // only the endpoints with new rows and reaches the same state as the single node.
    append(&log1, &fleet_day("mta1", 10, true, &mut pid1));
    finish(ingester(&log1, &work, &one, &["--exit-at-end"]), "ingester 1, third run");
    let new = reference(&[&log1, &log2], &work);
    assert_eq!(new.len(), 20);
    // (The same server as the first rebuild: rebuild.json names the URL and database it read.)
    let refreshed = rebuild(&two, &rebuilt, &["--incremental", "--overlap-secs", "0"]);
    assert!(refreshed.contains("refreshed 20 of 30 endpoints"), "{refreshed}");
    assert_same_reputation(&rebuilt, &work.join("reference"), 0..30);
    let downgraded = explain(&rebuilt, "192.0.2.10");
    assert_eq!(downgraded["endpoints"][0]["classification"]["downgrade"]["severity"], "high", "{downgraded:#}");

    // `--cluster-insert local`: each ingester writes to its own server's shard, so the endpoints
    // both MTAs talk to have rows on both shards; the rebuild merges the shards' partial states
    // and still equals the single-node state.
    let spread = "fleet_local";
    let output =
        tlsledger(&["schema", "apply", "--clickhouse", &one.url, "--database", spread, "--cluster", CLUSTER], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (log, server, name) in [(&log1, &one, "local-1"), (&log2, &two, "local-2")] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let extra = ["--exit-at-end", "--cluster-insert", "local"];
        finish(ingester_into(spread, log, &dir, server, &extra), name);
    }
    let endpoints_in = |server: &Server| -> BTreeSet<String> {
        let text = server.query(&format!("SELECT DISTINCT IPv6NumToString(peer_ip) FROM {spread}.observations_local"));
        text.lines().map(str::to_owned).collect()
    };
    assert_eq!(
        endpoints_in(&one).intersection(&endpoints_in(&two)).count(),
        10,
        "the shared endpoints span both shards"
    );
    let spread_state = work.join("rebuilt-local");
    let stderr = rebuild_from(spread, &one, &spread_state, &[]);
    assert!(stderr.contains(": 30 endpoints"), "{stderr}");
    assert_same_reputation(&spread_state, &work.join("reference"), 0..30);

    drop((one, two));
    drop(zookeeper);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn cluster_two_replicas_of_one_shard_replicate_catch_up_and_deduplicate() {
    let _turn = PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let work = work_dir("replicas");
    let zookeeper = ZooKeeper::started(work.join("zookeeper"), zookeeper_port());
    let (one, two) = (Server::new(12), Server::new(13));
    let replicas = format!("{},{}", one.ports[1], two.ports[1]);
    zookeeper.configure(&one, &replicas, "01");
    zookeeper.configure(&two, &replicas, "01");
    one.start();
    two.start();
    let database = "replicas";
    let output =
        tlsledger(&["schema", "apply", "--clickhouse", &one.url, "--database", database, "--cluster", CLUSTER], b"");
    assert!(output.status.success(), "schema apply --cluster: {}", String::from_utf8_lossy(&output.stderr));

    let log = work.join("mta1.log");
    let mut pid = 1000;
    for day in 0..5 {
        append(&log, &fleet_day("mta1", day, false, &mut pid));
    }
    let local_rows = |server: &Server| -> u64 {
        server.query(&format!("SELECT count() FROM {database}.observations_local")).trim().parse().unwrap()
    };
    let distinct = |server: &Server| -> u64 {
        let sql = format!("SELECT count() FROM (SELECT event_id FROM {database}.observations_local FINAL)");
        server.query(&sql).trim().parse().unwrap()
    };
    finish(ingester_into(database, &log, &work, &one, &["--exit-at-end"]), "ingester, first run");
    wait_for("the second replica to copy the rows", &|| local_rows(&two) == 100);
    assert_eq!(local_rows(&one), 100);

    // One replica dies: the shard still takes inserts, and the replica catches up when it is back.
    two.kill();
    for day in 5..10 {
        append(&log, &fleet_day("mta1", day, false, &mut pid));
    }
    finish(ingester_into(database, &log, &work, &one, &["--exit-at-end"]), "ingester, second run");
    assert_eq!(distinct(&one), 200);
    two.start();
    wait_for("the restarted replica to catch up", &|| distinct(&two) == 200);

    // The same observations sent again through the other replica (a fresh checkpoint folder
    // reads the log from the start; same path and first line, so the same event ids) collapse:
    // replicas of one shard de-duplicate by event_id like a single node.
    let again = work.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let resend =
        ingester_into(database, &log, &again, &two, &["--exit-at-end", "--stats", "--cluster-insert", "local"]);
    let output = resend.wait_with_output().unwrap();
    assert!(output.status.success(), "resend: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(crate::common::stat(&output.stderr, "clickhouse rows inserted"), 200);
    let queue = |server: &Server| -> u64 {
        let sql = format!("SELECT count() FROM system.replication_queue WHERE database = '{database}'");
        server.query(&sql).trim().parse().unwrap()
    };
    wait_for("the replicas to converge", &|| {
        queue(&one) == 0 && queue(&two) == 0 && local_rows(&one) == local_rows(&two) && local_rows(&one) >= 200
    });
    assert_eq!((distinct(&one), distinct(&two)), (200, 200));

    // The rebuild through either replica equals the single-node state.
    let want = reference(&[&log], &work);
    assert_eq!(want.len(), 200);
    for (server, name) in [(&one, "one"), (&two, "two")] {
        let rebuilt = work.join(format!("rebuilt-{name}"));
        let stderr = rebuild_from(database, server, &rebuilt, &[]);
        assert!(stderr.contains(": 20 endpoints"), "{stderr}");
        assert_same_reputation(&rebuilt, &work.join("reference"), 0..20);
    }

    drop((one, two));
    drop(zookeeper);
    let _ = std::fs::remove_dir_all(&work);
}
