//! `tlsledger ingest`: the daemon. Follows mail logs, receives syslog, reads stdin, and keeps the
//! reputation state, ClickHouse and stdout current.
//!
//! ```text
//! follower thread ─┐                       ┌─► stdout (JSON lines)
//! syslog listeners ├─► Input channel ─► core ─► ClickHouse sink thread (batches, spool)
//! stdin thread    ─┤   (bounded)       (parse, ├─► reputation state (IndraDB snapshot)
//! milter sessions ─┤                   correlate, └─► checkpoint file
//! ticker, signals ─┘                   pair with the milter: ingest_milter.rs)
//! ```
//!
//! **Checkpoints** (files only): every `checkpoint_interval` the core makes a sync point: it
//! hands everything emitted so far to the ClickHouse sink and waits until it is inserted or
//! spooled, saves the reputation state, then writes `checkpoints.json` atomically. A file's
//! checkpoint offset is the first line that an open connection still needs (the correlator's low
//! water mark), so a restart after a crash (even `kill -9`) re-reads open connections whole;
//! the event ids of observations already emitted from the re-read range are saved with the
//! checkpoint and skipped after the restart. ClickHouse removes any remaining duplicate by event
//! id (at-least-once); stdout is at-least-once too.
//!
//! **Guarantees per source:** files at-least-once across restarts and rotation (see
//! [`crate::sources::follow`] for the copytruncate window); syslog best-effort
//! ([`crate::sources::syslog`]); stdin at-most-once (no position to resume from).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::Zone;
use crate::commands::clickhouse_args::{ClickhouseArgs, SinkArgs};
use crate::commands::ingest_metrics::{self, Published, Snapshot};
use crate::commands::ingest_milter::{self, IngestMilterArgs, MilterConfig, MilterCore, MilterTable};
use crate::commands::parse::{format_stats, LineCounters, ParseSummary, SinkThread, StateWriter, Stream};
use crate::correlate::milter_dedup::Release;
use crate::correlate::{Config, Correlator, SourceId, TlsLogging};
use crate::observation::{Observation, Source};
use crate::sinks::clickhouse::InsertTarget;
use crate::sources::follow::{FileEvent, FileKey, FollowConfig, Follower, Resume};
use crate::sources::journald::{self, JournalConfig, JournalEntry};
use crate::sources::milter::Request;
use crate::sources::syslog::{self, SyslogBatch, SyslogConfig, SyslogCounters};

/// Options of `tlsledger ingest`. Every option can also be set in the TOML file given with
/// `--config` (same names, with `_` for `-`); a flag given on the command line wins.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// TOML configuration file (see examples/ingest.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Follow this log file (a path or a glob; repeat for more). Rotation by rename and by
    /// copytruncate is handled; positions are checkpointed.
    #[arg(long, value_name = "PATH")]
    pub follow: Vec<String>,

    /// Receive syslog on UDP and TCP at this address (e.g. 127.0.0.1:5514).
    #[arg(long, value_name = "ADDR")]
    pub syslog_listen: Vec<SocketAddr>,

    /// Receive syslog on UDP only at this address.
    #[arg(long, value_name = "ADDR")]
    pub syslog_udp: Vec<SocketAddr>,

    /// Receive syslog on TCP only (RFC 6587 octet counting or LF framing) at this address.
    #[arg(long, value_name = "ADDR")]
    pub syslog_tcp: Vec<SocketAddr>,

    /// Receive syslog on a unix datagram socket created at PATH (as /dev/log; mode 0660).
    #[arg(long, value_name = "PATH")]
    pub syslog_unix: Vec<PathBuf>,

    /// Syslog senders allowed (address or CIDR; repeat). Default: loopback only.
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    pub syslog_allow: Vec<IpNet>,

    /// Longest syslog message accepted [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Most syslog TCP connections at once [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Read the systemd journal (`journalctl -o json --follow`), resumed from a checkpointed cursor.
    #[arg(long)]
    pub journal: bool,

    /// Read the journal files in DIR instead of the system journal (implies --journal).
    #[arg(long, value_name = "DIR")]
    pub journal_directory: Option<PathBuf>,

    /// Journal match passed to journalctl (FIELD=VALUE, e.g. _SYSTEMD_UNIT=postfix@-.service; repeat).
    #[arg(long, value_name = "FIELD=VALUE")]
    pub journal_match: Vec<String>,

    /// The journalctl program [default: journalctl].
    #[arg(long, value_name = "PATH")]
    pub journalctl: Option<PathBuf>,

    /// Also read log lines from stdin (at-most-once: nothing to resume from).
    #[arg(long)]
    pub stdin: bool,

    /// Print observations as JSON lines on stdout.
    #[arg(long)]
    pub stdout: bool,

    /// Reputation state directory (IndraDB snapshot) [default: /var/lib/tlsledger].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,

    /// Keep no reputation state (only ClickHouse and/or stdout).
    #[arg(long)]
    pub no_state: bool,

    /// Treat followed files as trusted sources (root-owned MTA logs): they may promote hosts.
    #[arg(long)]
    pub trusted_files: bool,

    /// Where `checkpoints.json` is kept [default: the state directory].
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,

    /// Milliseconds between sync points (flush sinks, save state, write checkpoints) [default: 5000].
    #[arg(long, value_name = "MS")]
    pub checkpoint_interval_ms: Option<u64>,

    /// Milliseconds between checks of followed files [default: 250].
    #[arg(long, value_name = "MS")]
    pub poll_ms: Option<u64>,

    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Peers allowed to read the metrics (address or CIDR; repeat). Default: loopback only.
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    pub metrics_allow: Vec<IpNet>,

    /// Keep feed files in DIR current (as `tlsledger feed --out DIR`), rewritten after a sync point
    /// at most every `--feed-interval-secs`.
    #[arg(long, value_name = "DIR")]
    pub feed_dir: Option<PathBuf>,

    /// Seconds between feed refreshes [default: 60].
    #[arg(long, value_name = "SECS")]
    pub feed_interval_secs: Option<u64>,

    /// Thresholds file for the feeds (see `tlsledger feed --thresholds`).
    #[arg(long, value_name = "FILE")]
    pub feed_thresholds: Option<PathBuf>,

    /// Exit when every followed file has been read to its end and stdin is closed (for batch
    /// runs and tests); without it, ingest runs until SIGTERM or SIGINT.
    #[arg(long)]
    pub exit_at_end: bool,

    /// Print the counters to stderr at exit.
    #[arg(long)]
    pub stats: bool,

    /// Format of the daemon's own log on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Whether the MTA logs a TLS line for every TLS connection (see `tlsledger parse --help`).
    #[arg(long, value_enum)]
    pub tls_logging: Option<TlsLogging>,

    /// Emit a connection after this many seconds without a new line of it; when the logs are
    /// quiet, wall-clock time counts as log time, so a quiet server's last connection is not
    /// held back [default: 300].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<i64>,

    /// Zone of timestamps that carry none: `local`, `utc` or `+HH:MM` [default: local].
    #[arg(long, value_parser = clap::value_parser!(Zone))]
    pub log_zone: Option<Zone>,

    /// Lines longer than this are skipped and counted [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,

    /// Also load the observations into ClickHouse.
    #[command(flatten)]
    pub clickhouse: ClickhouseArgs,

    /// Batching, retries and spool of the ClickHouse load.
    #[command(flatten, next_help_heading = "ClickHouse load")]
    pub sink: SinkArgs,

    /// The milter in this process (`[milter]` in the configuration file).
    #[command(flatten, next_help_heading = "Milter")]
    pub milter: IngestMilterArgs,
}

/// The configuration file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    follow: Option<Vec<String>>,
    syslog_listen: Option<Vec<SocketAddr>>,
    syslog_udp: Option<Vec<SocketAddr>>,
    syslog_tcp: Option<Vec<SocketAddr>>,
    syslog_unix: Option<Vec<PathBuf>>,
    syslog_allow: Option<Vec<String>>,
    max_message_bytes: Option<usize>,
    max_connections: Option<usize>,
    stdout: Option<bool>,
    state: Option<PathBuf>,
    no_state: Option<bool>,
    trusted_files: Option<bool>,
    checkpoint_dir: Option<PathBuf>,
    checkpoint_interval_ms: Option<u64>,
    poll_ms: Option<u64>,
    tls_logging: Option<String>,
    idle_timeout_secs: Option<i64>,
    log_zone: Option<String>,
    max_line_bytes: Option<usize>,
    clickhouse: Option<String>,
    database: Option<String>,
    spool_dir: Option<PathBuf>,
    cluster_insert: Option<String>,
    feed_dir: Option<PathBuf>,
    feed_interval_secs: Option<u64>,
    feed_thresholds: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    metrics_allow: Option<Vec<String>>,
    journal: Option<bool>,
    journal_directory: Option<PathBuf>,
    journal_match: Option<Vec<String>>,
    journalctl: Option<PathBuf>,
    milter: Option<MilterTable>,
}

/// Settings after merging the file and the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    follow: Vec<String>,
    syslog: SyslogConfig,
    stdin: bool,
    stdout: bool,
    state: Option<PathBuf>,
    trusted_files: bool,
    checkpoint_dir: Option<PathBuf>,
    checkpoint_interval: Duration,
    poll: Duration,
    exit_at_end: bool,
    tls_logging: TlsLogging,
    idle_timeout_secs: i64,
    log_zone: Zone,
    max_line_bytes: usize,
    clickhouse: ClickhouseArgs,
    sink: SinkArgs,
    feed_dir: Option<PathBuf>,
    feed_interval: Duration,
    feed_thresholds: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    metrics_allow: Vec<IpNet>,
    journal: Option<JournalConfig>,
    milter: Option<MilterConfig>,
}

impl Settings {
    /// The journal's name in checkpoints and event ids: its directory, or `system`.
    fn journal_name(&self) -> String {
        match self.journal.as_ref().and_then(|j| j.directory.as_ref()) {
            Some(directory) => directory.display().to_string(),
            None => "system".to_owned(),
        }
    }

    /// Merges `--config` (if any) under the flags.
    pub fn resolve(args: &IngestArgs) -> Result<Settings> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let pick_list = |flag: &Vec<SocketAddr>, file: &Option<Vec<SocketAddr>>| {
            if flag.is_empty() {
                file.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let listen = pick_list(&args.syslog_listen, &file.syslog_listen);
        let mut udp = pick_list(&args.syslog_udp, &file.syslog_udp);
        let mut tcp = pick_list(&args.syslog_tcp, &file.syslog_tcp);
        udp.extend(&listen);
        tcp.extend(&listen);
        let allow = if !args.syslog_allow.is_empty() {
            args.syslog_allow.clone()
        } else {
            match &file.syslog_allow {
                Some(list) => list
                    .iter()
                    .map(|text| parse_net(text).map_err(|e| anyhow::anyhow!("syslog_allow: {e}")))
                    .collect::<Result<Vec<_>>>()?,
                None => vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")],
            }
        };
        let loopback = || vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")];
        let metrics_allow = if !args.metrics_allow.is_empty() {
            args.metrics_allow.clone()
        } else {
            match &file.metrics_allow {
                Some(list) => list
                    .iter()
                    .map(|text| parse_net(text).map_err(|e| anyhow::anyhow!("metrics_allow: {e}")))
                    .collect::<Result<Vec<_>>>()?,
                None => loopback(),
            }
        };
        let tls_logging = match (&args.tls_logging, &file.tls_logging) {
            (Some(value), _) => *value,
            (None, Some(text)) => <TlsLogging as clap::ValueEnum>::from_str(text, true)
                .map_err(|_| anyhow::anyhow!("tls_logging must be auto, on or off, not {text:?}"))?,
            (None, None) => TlsLogging::Auto,
        };
        let log_zone = match (&args.log_zone, &file.log_zone) {
            (Some(zone), _) => *zone,
            (None, Some(text)) => text.parse::<Zone>().map_err(|e| anyhow::anyhow!("log_zone: {e}"))?,
            (None, None) => Zone::Local,
        };
        let no_state = args.no_state || file.no_state.unwrap_or(false);
        let state = if no_state {
            None
        } else {
            Some(args.state.clone().or(file.state.clone()).unwrap_or_else(|| PathBuf::from("/var/lib/tlsledger")))
        };
        let mut clickhouse = args.clickhouse.clone();
        if clickhouse.clickhouse.is_none() {
            clickhouse.clickhouse = file.clickhouse.clone();
            if let Some(database) = &file.database {
                clickhouse.database = database.clone();
            }
        }
        let mut sink = args.sink.clone();
        if let (None, Some(text)) = (&sink.cluster_insert, &file.cluster_insert) {
            let mode = <InsertTarget as clap::ValueEnum>::from_str(text, true).map_err(|_| {
                anyhow::anyhow!("cluster_insert must be distributed, distributed-async or local, not {text:?}")
            })?;
            sink.cluster_insert = Some(mode);
        }
        if let Some(spool_dir) = &file.spool_dir {
            if sink.spool_dir == Path::new("tlsledger-spool") {
                sink.spool_dir = spool_dir.clone();
            }
        }
        let settings = Settings {
            follow: if args.follow.is_empty() { file.follow.clone().unwrap_or_default() } else { args.follow.clone() },
            syslog: SyslogConfig {
                udp,
                tcp,
                unix: if args.syslog_unix.is_empty() {
                    file.syslog_unix.clone().unwrap_or_default()
                } else {
                    args.syslog_unix.clone()
                },
                allow,
                max_message_bytes: args.max_message_bytes.or(file.max_message_bytes).unwrap_or(64 * 1024),
                max_connections: args.max_connections.or(file.max_connections).unwrap_or(64),
            },
            stdin: args.stdin,
            stdout: args.stdout || file.stdout.unwrap_or(false),
            checkpoint_dir: args.checkpoint_dir.clone().or(file.checkpoint_dir.clone()).or_else(|| state.clone()),
            state,
            trusted_files: args.trusted_files || file.trusted_files.unwrap_or(false),
            checkpoint_interval: Duration::from_millis(
                args.checkpoint_interval_ms.or(file.checkpoint_interval_ms).unwrap_or(5000).max(10),
            ),
            poll: Duration::from_millis(args.poll_ms.or(file.poll_ms).unwrap_or(250).max(1)),
            exit_at_end: args.exit_at_end,
            tls_logging,
            idle_timeout_secs: args.idle_timeout_secs.or(file.idle_timeout_secs).unwrap_or(300).max(1),
            log_zone,
            max_line_bytes: args.max_line_bytes.or(file.max_line_bytes).unwrap_or(64 * 1024).max(1),
            clickhouse,
            sink,
            feed_dir: args.feed_dir.clone().or(file.feed_dir.clone()),
            feed_interval: Duration::from_secs(args.feed_interval_secs.or(file.feed_interval_secs).unwrap_or(60)),
            feed_thresholds: args.feed_thresholds.clone().or(file.feed_thresholds.clone()),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            metrics_allow,
            journal: {
                let directory = args.journal_directory.clone().or(file.journal_directory.clone());
                let wanted = args.journal || file.journal.unwrap_or(false) || directory.is_some();
                wanted.then(|| JournalConfig {
                    directory,
                    matches: if args.journal_match.is_empty() {
                        file.journal_match.clone().unwrap_or_default()
                    } else {
                        args.journal_match.clone()
                    },
                    cursor: None,
                    journalctl: args.journalctl.clone().or(file.journalctl.clone()),
                })
            },
            milter: MilterConfig::resolve(&args.milter, file.milter.as_ref())?,
        };
        if settings.feed_dir.is_some() && settings.state.is_none() {
            anyhow::bail!("--feed-dir needs the reputation state: drop --no-state");
        }
        if settings.follow.is_empty()
            && settings.syslog.udp.is_empty()
            && settings.syslog.tcp.is_empty()
            && settings.syslog.unix.is_empty()
            && !settings.stdin
            && settings.journal.is_none()
            && settings.milter.is_none()
        {
            anyhow::bail!(
                "nothing to read: give --follow PATH, --journal, --syslog-listen ADDR, --milter-listen SPEC or --stdin (or set them in --config)"
            );
        }
        if (!settings.follow.is_empty() || settings.journal.is_some()) && settings.checkpoint_dir.is_none() {
            anyhow::bail!(
                "following files or the journal needs a place for checkpoints: give --checkpoint-dir DIR (or a state directory)"
            );
        }
        Ok(settings)
    }
}

/// An address (`192.0.2.7`, `::1`) or a network (`192.0.2.0/24`).
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("not an address or CIDR network: {text:?}"))
}

/// What reaches the core.
#[derive(Debug)]
enum Input {
    File(FileEvent),
    Syslog(SyslogBatch),
    /// Lines from stdin starting at `offset`; `None` at its end.
    Stdin(Option<(u64, Vec<u8>)>),
    /// One entry of the systemd journal.
    Journal(JournalEntry),
    /// A request of the milter's sessions.
    Milter(Request),
    Tick,
    /// SIGHUP: read the configuration again.
    Reload,
    Shutdown(&'static str),
}

/// The on-disk checkpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoints {
    version: u32,
    files: Vec<FileCheckpoint>,
    /// The `--tls-logging auto` evidence: (reporter, instance, inbound) of the MTA instances seen
    /// logging TLS summaries, so that a restart does not forget that they do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tls_logging: Vec<(String, String, bool)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileCheckpoint {
    /// The path under which the generation was first read (its name in event ids, which stay
    /// the same when a restart finds it under a rotated name).
    path: PathBuf,
    fingerprint: String,
    offset: u64,
    /// Event ids emitted from lines at or after `offset`, with the read position at the time
    /// (they are skipped when the range is read again).
    emitted: Vec<(String, u64)>,
    /// The read position when the checkpoint was written: lines from `offset` up to here are
    /// read again after a restart, but only those of `open` processes are fed.
    #[serde(default)]
    replay_until: u64,
    /// (reporter, instance, pid, first offset) of each connection open at the checkpoint.
    #[serde(default)]
    open: Vec<(String, String, u32, u64)>,
    /// Journal sources: the cursor to resume at, and whether that entry is read again
    /// (`--cursor`) or not (`--after-cursor`).
    #[serde(default)]
    cursor: Option<(String, bool)>,
    /// A generation read to its end and closed (rotated away): kept so that a restart does not
    /// read it again when the patterns match its rotated name (the latest
    /// [`MAX_FINISHED_CHECKPOINTS`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    finished: bool,
}

/// Finished generations kept in `checkpoints.json`.
const MAX_FINISHED_CHECKPOINTS: usize = 256;

const CHECKPOINT_FILE: &str = "checkpoints.json";

impl Checkpoints {
    fn default_v1() -> Checkpoints {
        Checkpoints { version: 1, ..Checkpoints::default() }
    }

    fn load(dir: &Path) -> Result<Checkpoints> {
        let path = dir.join(CHECKPOINT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let checkpoints: Checkpoints = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is damaged; move it away to start over", path.display()))?;
                if checkpoints.version != 1 {
                    anyhow::bail!("{}: unknown version {}", path.display(), checkpoints.version);
                }
                Ok(checkpoints)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoints::default_v1()),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// (reporter, instance, pid) → offset of the first line of its open connection.
type OpenProcesses = HashMap<(String, String, u32), u64>;

/// One generation of a followed file, as the core sees it.
struct FileState {
    source: SourceId,
    arc: Arc<Source>,
    stream: Stream,
    /// The path it was opened under in this run (for the lag metric).
    path: PathBuf,
    /// The path it was first read under (checkpoint and event ids).
    name: PathBuf,
    fingerprint: u64,
    /// Offset after the last line handed to the correlator.
    read_end: u64,
    /// Emitted observations that a restart from the checkpoint could produce again.
    emitted: VecDeque<(String, u64)>,
    /// Event ids to skip (emitted before a restart).
    skip: HashSet<String>,
    /// After a restart: lines before `.0` are fed only when they belong to a connection that was
    /// open at the checkpoint (process → offset of its first line).
    replay: Option<(u64, OpenProcesses)>,
    closed: bool,
    /// Journal sources: the cursor of each position still needed for a checkpoint.
    cursors: std::collections::BTreeMap<u64, String>,
    /// Journal sources: positions below this were handled before the restart (the journal is
    /// resumed at the lowest checkpoint of its sources, so the others see older entries again).
    skip_below: u64,
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct IngestCounters {
    /// Observations skipped because they were emitted before a restart.
    pub replayed_skipped: u64,
    /// Lines read again after a restart that belong to connections already emitted.
    pub replay_lines_skipped: u64,
    /// Sync points completed.
    pub checkpoints: u64,
    /// Files that could not be read, by message.
    pub file_errors: u64,
    /// Feed refreshes written.
    pub feed_refreshes: u64,
    /// Feed refreshes refused (churn guard) or failed.
    pub feed_failures: u64,
    /// The pairing of milter and log sessions (with `--milter-listen`).
    pub milter: Option<crate::correlate::milter_dedup::DedupCounters>,
}

/// Runs the daemon until a signal (or, with `--exit-at-end`, the end of the input).
pub fn run(args: &IngestArgs) -> Result<()> {
    init_logging(args.log_format);
    let settings = Settings::resolve(args)?;
    let (summary, counters, syslog_counters) = run_with(&settings, args)?;
    if args.stats {
        eprint!("{}", format_stats(&summary));
        eprintln!("  checkpoints written          {:>10}", counters.checkpoints);
        eprintln!("  replayed observations skipped{:>10}", counters.replayed_skipped);
        eprintln!("  replayed lines skipped       {:>10}", counters.replay_lines_skipped);
        eprintln!("  file read errors             {:>10}", counters.file_errors);
        eprintln!("  feed refreshes               {:>10}", counters.feed_refreshes);
        eprintln!("  feed refreshes not published {:>10}", counters.feed_failures);
        if let Some(milter) = &counters.milter {
            eprintln!("  milter observations          {:>10}", milter.milter);
            eprintln!("  log duplicates of milter     {:>10}", milter.log_duplicates);
            eprintln!("  log kept (milter unknown)    {:>10}", milter.log_kept);
            eprintln!("  late milter duplicates       {:>10}", milter.late_milter_duplicates);
            eprintln!("  inbound log-only sessions    {:>10}", milter.log_unmatched);
        }
        if let Ok(peers) = syslog_counters.lock() {
            for (peer, c) in peers.iter() {
                eprintln!(
                    "  syslog {peer}: {} messages, {} oversized, {} dropped, {} refused, {} over the connection limit",
                    c.messages, c.oversized, c.dropped, c.refused, c.over_limit
                );
            }
        }
    }
    Ok(())
}

fn run_with(settings: &Settings, args: &IngestArgs) -> Result<(ParseSummary, IngestCounters, SyslogCounters)> {
    let checkpoints = match &settings.checkpoint_dir {
        Some(dir) => Checkpoints::load(dir)?,
        None => Checkpoints::default(),
    };
    let mut sink = match settings.clickhouse.config()? {
        Some(config) => Some(SinkThread::start(config, settings.sink.config())?),
        None => None,
    };
    let mut state = match &settings.state {
        Some(dir) => Some(StateWriter::open(dir, settings.trusted_files)?),
        None => None,
    };
    let (sender, mut inputs) = mpsc::channel::<Input>(256);
    let stop = Arc::new(AtomicBool::new(false));
    let syslog_counters = SyslogCounters::default();
    let published = Published::default();

    // The runtime of the listeners, the ticker and the signal handlers.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        if !settings.syslog.udp.is_empty() || !settings.syslog.tcp.is_empty() || !settings.syslog.unix.is_empty() {
            let (messages_tx, mut messages_rx) = mpsc::channel::<SyslogBatch>(1024);
            syslog::spawn(settings.syslog.clone(), messages_tx, syslog_counters.clone()).await?;
            let forward = sender.clone();
            tokio::spawn(async move {
                while let Some(message) = messages_rx.recv().await {
                    if forward.send(Input::Syslog(message)).await.is_err() {
                        return;
                    }
                }
            });
        }
        if let Some(config) = &settings.milter {
            let (forward, stop) = (sender.clone(), Arc::clone(&stop));
            let shutdown = async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            ingest_milter::spawn(config, move |r| forward.blocking_send(Input::Milter(r)).is_ok(), shutdown).await?;
        }
        if let Some(addr) = settings.metrics_listen {
            ingest_metrics::spawn(addr, settings.metrics_allow.clone(), published.clone(), syslog_counters.clone())
                .await?;
        }
        let ticks = sender.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(100));
            loop {
                interval.tick().await;
                if ticks.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        });
        let signals = sender.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => {
                        if signals.send(Input::Reload).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let _ = signals.send(Input::Shutdown(name)).await;
                return;
            }
        });
        anyhow::Ok(())
    })?;
    let runtime_thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new().name("ingest-io".to_owned()).spawn(move || {
            runtime.block_on(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })?
    };
    let follow_patterns: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
    let follower_thread = if settings.follow.is_empty() {
        None
    } else {
        let resume: Vec<Resume> = checkpoints
            .files
            .iter()
            .filter_map(|f| {
                Some(Resume { fingerprint: u64::from_str_radix(&f.fingerprint, 16).ok()?, offset: f.offset })
            })
            .collect();
        let follower = Follower::new(
            FollowConfig {
                patterns: settings.follow.clone(),
                poll: settings.poll,
                max_line_bytes: settings.max_line_bytes,
            },
            &resume,
        );
        let (events, stop, patterns) = (sender.clone(), Arc::clone(&stop), Arc::clone(&follow_patterns));
        Some(std::thread::Builder::new().name("follow".to_owned()).spawn(move || {
            follower.run(&mut |event| events.blocking_send(Input::File(event)).map_err(|_| ()), &stop, &patterns)
        })?)
    };
    let journal_child: Arc<std::sync::Mutex<Option<std::process::Child>>> = Arc::default();
    let journal_thread = match &settings.journal {
        Some(config) => {
            let mut config = config.clone();
            // Resume at the lowest checkpoint of the journal's sources (the others skip what
            // they had already handled).
            let prefix = format!("journal:{}#", settings.journal_name());
            config.cursor = checkpoints
                .files
                .iter()
                .filter(|f| f.path.to_string_lossy().starts_with(&prefix))
                .min_by_key(|f| f.offset)
                .and_then(|f| f.cursor.clone());
            let mut child = journald::spawn(&config)?;
            let stdout = child.stdout.take().context("journalctl has no output pipe")?;
            *journal_child.lock().map_err(|_| anyhow::anyhow!("poisoned lock"))? = Some(child);
            let entries = sender.clone();
            Some(std::thread::Builder::new().name("journal".to_owned()).spawn(move || {
                journald::read_entries(stdout, &mut |entry| {
                    entries.blocking_send(Input::Journal(entry)).map_err(|_| ())
                })
            })?)
        }
        None => None,
    };
    if settings.stdin {
        let lines = sender.clone();
        let max = settings.max_line_bytes;
        std::thread::Builder::new().name("stdin".to_owned()).spawn(move || {
            let _ = crate::sources::lines::for_each_line::<_, _, std::io::Error>(std::io::stdin(), max, |line| {
                if let crate::sources::lines::Line::Text { offset, bytes } = line {
                    lines
                        .blocking_send(Input::Stdin(Some((offset, bytes.to_vec()))))
                        .map_err(|_| std::io::Error::other("closed"))?;
                }
                Ok(())
            });
            let _ = lines.blocking_send(Input::Stdin(None));
        })?;
    }
    drop(sender);

    let mut core = Core::new(settings.clone(), args.clone(), checkpoints, published, follow_patterns)?;
    let result = core.run(&mut inputs, &mut sink, &mut state);
    stop.store(true, Ordering::Relaxed);
    drop(inputs);
    if let Some(thread) = follower_thread {
        let _ = thread.join();
    }
    if let Ok(mut child) = journal_child.lock() {
        if let Some(child) = child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if let Some(thread) = journal_thread {
        let _ = thread.join();
    }
    let _ = runtime_thread.join();
    result?;
    let summary = ParseSummary {
        lines: core.lines.clone(),
        correlate: core.correlator.counters().clone(),
        sink: match sink {
            Some(sink) => Some(sink.finish()?),
            None => None,
        },
        state: match state {
            Some(state) => Some(state.finish()?),
            None => None,
        },
    };
    Ok((summary, core.counters.clone(), syslog_counters))
}

/// The single-threaded heart: parse, correlate, route, checkpoint.
struct Core {
    settings: Settings,
    /// The command line, to read the configuration again on SIGHUP.
    args: IngestArgs,
    /// New follow patterns for the follower thread (SIGHUP).
    follow_patterns: Arc<std::sync::Mutex<Option<Vec<String>>>>,
    correlator: Correlator,
    lines: LineCounters,
    counters: IngestCounters,
    files: HashMap<FileKey, FileState>,
    /// Checkpoints of files not opened (yet) in this run, by fingerprint: kept as they are.
    pending: HashMap<u64, FileCheckpoint>,
    /// Generations read to their end, oldest first (at most [`MAX_FINISHED_CHECKPOINTS`]).
    finished: VecDeque<FileCheckpoint>,
    syslog_sources: HashMap<(&'static str, IpAddr), (Stream, u64)>,
    stdin: Option<Stream>,
    stdin_open: bool,
    started_micros: i64,
    out: Vec<Observation>,
    writer: BufWriter<std::io::Stdout>,
    last_sync: Instant,
    /// When the feed files were last written (`None`: not yet).
    last_feed: Option<Instant>,
    /// Where the counters are published for `/metrics`.
    published: Published,
    /// Journal sources by (sequence space, trusted).
    journal_keys: HashMap<(String, bool), FileKey>,
    /// The milter's side (`--milter-listen`).
    milter: Option<MilterCore>,
}

/// Keys of journal sources start here, far above the follower's.
const JOURNAL_KEYS: FileKey = 1 << 62;

impl Core {
    fn new(
        settings: Settings,
        args: IngestArgs,
        checkpoints: Checkpoints,
        published: Published,
        follow_patterns: Arc<std::sync::Mutex<Option<Vec<String>>>>,
    ) -> Result<Self> {
        let started_micros = chrono::Utc::now().timestamp_micros();
        let tls_logging = settings.tls_logging;
        let idle_timeout_secs = settings.idle_timeout_secs;
        let mut correlator = Correlator::new(Config { tls_logging, idle_timeout_secs, ..Config::default() });
        correlator.restore_tls_logging_evidence(&checkpoints.tls_logging);
        let (finished, live): (Vec<_>, Vec<_>) = checkpoints.files.into_iter().partition(|f| f.finished);
        let pending =
            live.into_iter().filter_map(|f| Some((u64::from_str_radix(&f.fingerprint, 16).ok()?, f))).collect();
        let milter = match &settings.milter {
            Some(config) => Some(MilterCore::new(config, settings.feed_thresholds.as_deref())?),
            None => None,
        };
        Ok(Core {
            milter,
            settings,
            correlator,
            lines: LineCounters::default(),
            counters: IngestCounters::default(),
            files: HashMap::new(),
            pending,
            finished: finished.into(),
            syslog_sources: HashMap::new(),
            stdin: None,
            stdin_open: args.stdin,
            started_micros,
            out: Vec::new(),
            writer: BufWriter::with_capacity(1 << 16, std::io::stdout()),
            last_sync: Instant::now(),
            last_feed: None,
            published,
            journal_keys: HashMap::new(),
            args,
            follow_patterns,
        })
    }

    fn run(
        &mut self,
        inputs: &mut mpsc::Receiver<Input>,
        sink: &mut Option<SinkThread>,
        state: &mut Option<StateWriter>,
    ) -> Result<()> {
        let mut idle_ticks = 0u32;
        // When the count of lines last moved: how long the logs have been quiet.
        let (mut seen_lines, mut lines_moved) = (self.lines.lines, Instant::now());
        while let Some(input) = inputs.blocking_recv() {
            match input {
                Input::File(event) => {
                    idle_ticks = 0;
                    self.file_event(event);
                }
                Input::Syslog(batch) => self.syslog_batch(batch),
                Input::Journal(entry) => {
                    idle_ticks = 0;
                    self.journal_entry(entry);
                }
                Input::Stdin(Some((offset, bytes))) => self.stdin_line(offset, &bytes),
                Input::Stdin(None) => self.stdin_open = false,
                Input::Milter(request) => {
                    if let Some(milter) = &mut self.milter {
                        milter.request(request, state, Instant::now());
                    }
                }
                Input::Tick => {
                    idle_ticks += 1;
                    if self.lines.lines != seen_lines {
                        (seen_lines, lines_moved) = (self.lines.lines, Instant::now());
                    }
                    let quiet = i64::try_from(lines_moved.elapsed().as_micros()).unwrap_or(i64::MAX);
                    self.correlator.idle_sweep(quiet, &mut self.out);
                    self.publish(sink);
                    if self.settings.exit_at_end
                        && !self.stdin_open
                        && idle_ticks as u128 * 100 >= 4 * self.settings.poll.as_millis().max(100)
                        && self.settings.syslog.udp.is_empty()
                        && self.settings.syslog.tcp.is_empty()
                        && self.settings.syslog.unix.is_empty()
                        && self.settings.milter.is_none()
                    {
                        // Every followed file was read to its end for several polls: finish.
                        self.correlator.finish(&mut self.out);
                        self.route(sink, state)?;
                        // The last sync point also refreshes the feeds, whatever the interval.
                        self.last_feed = None;
                        self.sync(sink, state, true)?;
                        return Ok(());
                    }
                }
                Input::Reload => self.reload(),
                Input::Shutdown(signal) => {
                    tracing::info!("{signal}: writing a last checkpoint and stopping");
                    if self.files.is_empty() && self.pending.is_empty() {
                        // Only sources without positions (syslog, stdin): nothing can replay a
                        // connection still open, so what is known of it is emitted now.
                        self.correlator.finish(&mut self.out);
                        self.route(sink, state)?;
                    }
                    self.last_feed = None;
                    self.sync(sink, state, true)?;
                    return Ok(());
                }
            }
            self.route(sink, state)?;
            if self.last_sync.elapsed() >= self.settings.checkpoint_interval {
                self.sync(sink, state, false)?;
            }
        }
        self.sync(sink, state, true)
    }

    fn file_event(&mut self, event: FileEvent) {
        match event {
            FileEvent::Opened { key, path, fingerprint, offset } => {
                let print = format!("{fingerprint:016x}");
                let checkpoint = match self.pending.remove(&fingerprint) {
                    Some(f) => Some(f),
                    None => self
                        .finished
                        .iter()
                        .position(|f| f.fingerprint == print)
                        .and_then(|idx| self.finished.remove(idx)),
                }
                .filter(|f| f.offset == offset);
                // Resumed under a rotated name: keep the name it was first read under.
                let first_path = checkpoint.as_ref().map_or_else(|| path.clone(), |f| f.path.clone());
                let source = Source {
                    kind: "file".to_owned(),
                    name: first_path.display().to_string(),
                    trust: "local".to_owned(),
                };
                let reference = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(self.started_micros, |d| d.as_micros() as i64);
                self.open_state(key, source, path, first_path, fingerprint, offset, reference, checkpoint);
            }
            FileEvent::Lines { key, offset, bytes } => {
                let Some(file) = self.files.get_mut(&key) else { return };
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &bytes) {
                    let line = &bytes[start..end];
                    let line_offset = offset + start as u64;
                    if let Some((until, open)) = &file.replay {
                        if line_offset < *until {
                            if !replay_wanted(open, line_offset, line) {
                                self.counters.replay_lines_skipped += 1;
                                start = end + 1;
                                continue;
                            }
                        } else {
                            file.replay = None;
                        }
                    }
                    file.stream.text_line(
                        &mut self.correlator,
                        &mut self.lines,
                        offset + start as u64,
                        line,
                        &mut self.out,
                    );
                    start = end + 1;
                }
                file.read_end = offset + bytes.len() as u64;
            }
            FileEvent::Oversized { key, next, .. } => {
                self.lines.lines += 1;
                self.lines.oversized += 1;
                if let Some(file) = self.files.get_mut(&key) {
                    file.read_end = next;
                }
            }
            FileEvent::Closed { key } => {
                if let Some(file) = self.files.get_mut(&key) {
                    file.closed = true;
                }
            }
            FileEvent::Error { path, message } => {
                self.counters.file_errors += 1;
                tracing::warn!(path = %path.display(), "cannot read the file: {message}");
            }
        }
    }

    /// Starts the state of a file generation (or journal source) read from `offset`, with the
    /// replay information of its checkpoint when the checkpoint is for that very position.
    #[allow(clippy::too_many_arguments)]
    fn open_state(
        &mut self,
        key: FileKey,
        source: Source,
        path: PathBuf,
        name: PathBuf,
        fingerprint: u64,
        offset: u64,
        reference: i64,
        checkpoint: Option<FileCheckpoint>,
    ) {
        let source_name = source.name.clone();
        let journal = source_name.starts_with("journal:");
        // A file generation's event ids depend on its content (the fingerprint), not on the name
        // it was found under: a generation first read as `mail.log` by a run that was killed
        // before its checkpoint is found as `mail.log.1` after a rotation, and the lines it
        // emits again must carry the same ids (ClickHouse collapses them with FINAL).
        let id_key =
            if journal { format!("{source_name}#{fingerprint:016x}") } else { format!("file#{fingerprint:016x}") };
        let id = self.correlator.add_source_keyed(source, &id_key);
        let arc = Arc::clone(self.correlator.source(id).expect("just added"));
        let skip_below = checkpoint.as_ref().filter(|_| journal).map_or(0, |f| f.offset);
        let (emitted, replay) = match checkpoint {
            Some(f) => {
                let open = f.open.into_iter().map(|(r, i, pid, first)| ((r, i, pid), first)).collect();
                (f.emitted.into_iter().collect(), Some((f.replay_until, open)))
            }
            None => (VecDeque::new(), None),
        };
        let skip = emitted.iter().map(|(id, _): &(String, u64)| id.clone()).collect();
        self.files.insert(
            key,
            FileState {
                source: id,
                arc,
                stream: Stream::new(id, self.settings.log_zone, reference),
                path,
                name,
                fingerprint,
                read_end: offset.max(skip_below),
                emitted,
                skip,
                replay,
                closed: false,
                cursors: Default::default(),
                skip_below,
            },
        );
    }

    /// One journal entry: its (sequence space, trust) is a source of its own, positioned by the
    /// journal's sequence number.
    fn journal_entry(&mut self, entry: JournalEntry) {
        let name = format!("journal:{}", self.settings.journal_name());
        let trust = if entry.trusted { "journald-trusted" } else { "journald" };
        let fingerprint = crate::observation::event_id_prefix(&format!("{name}\0{}\0{trust}", entry.seqnum_id));
        let next_key = JOURNAL_KEYS + self.journal_keys.len() as FileKey;
        let key = *self.journal_keys.entry((entry.seqnum_id.clone(), entry.trusted)).or_insert(next_key);
        if !self.files.contains_key(&key) {
            let source = Source { kind: "journald".to_owned(), name: name.clone(), trust: trust.to_owned() };
            let path = PathBuf::from(format!("{name}#{trust}"));
            // A journal source resumes at its own checkpoint whatever entry comes first.
            let checkpoint = self.pending.remove(&fingerprint);
            self.open_state(
                key,
                source,
                path.clone(),
                path,
                fingerprint,
                entry.seqnum,
                self.started_micros,
                checkpoint,
            );
        }
        let file = self.files.get_mut(&key).expect("opened");
        if entry.seqnum < file.skip_below {
            self.counters.replay_lines_skipped += 1;
            return;
        }
        file.cursors.insert(entry.seqnum, entry.cursor);
        let mut line = entry.line.into_bytes();
        line.push(b'\n');
        self.file_event(FileEvent::Lines { key, offset: entry.seqnum, bytes: line });
        // Positions are sequence numbers, not bytes: the next one is just after this entry.
        if let Some(file) = self.files.get_mut(&key) {
            file.read_end = entry.seqnum + 1;
        }
    }

    fn syslog_batch(&mut self, message: SyslogBatch) {
        let key = (message.transport, message.peer);
        if !self.syslog_sources.contains_key(&key) {
            let name = match message.transport {
                // Unix-socket senders have no address.
                "unix" => "syslog-unix".to_owned(),
                transport => format!("syslog-{transport}:{}", message.peer),
            };
            let source = Source { kind: "syslog".to_owned(), name: name.clone(), trust: "syslog".to_owned() };
            // Positions restart with the process: the run's start time keeps event ids unique.
            let id = self.correlator.add_source_keyed(source, &format!("{name}@{}", self.started_micros));
            let stream = Stream::new(id, self.settings.log_zone, chrono::Utc::now().timestamp_micros());
            self.syslog_sources.insert(key, (stream, 0));
        }
        let (stream, position) = self.syslog_sources.get_mut(&key).expect("inserted");
        for line in message.messages() {
            *position += 1;
            stream.text_line(&mut self.correlator, &mut self.lines, *position, line, &mut self.out);
        }
    }

    fn stdin_line(&mut self, offset: u64, bytes: &[u8]) {
        if self.stdin.is_none() {
            let name = "-".to_owned();
            let source = Source { kind: "stdin".to_owned(), name: name.clone(), trust: "local".to_owned() };
            let id = self.correlator.add_source_keyed(source, &format!("stdin@{}", self.started_micros));
            self.stdin = Some(Stream::new(id, self.settings.log_zone, chrono::Utc::now().timestamp_micros()));
        }
        let stream = self.stdin.as_mut().expect("set");
        stream.text_line(&mut self.correlator, &mut self.lines, offset, bytes, &mut self.out);
    }

    /// SIGHUP: reads the configuration file again and applies what can change while running
    /// (follow patterns, feed settings, checkpoint interval); a bad file keeps the old settings.
    fn reload(&mut self) {
        let new = match Settings::resolve(&self.args) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!("SIGHUP: configuration not reloaded ({error:#}); keeping the running one");
                return;
            }
        };
        if new.follow != self.settings.follow {
            if let Ok(mut slot) = self.follow_patterns.lock() {
                *slot = Some(new.follow.clone());
            }
        }
        let old = std::mem::replace(&mut self.settings, new);
        let restart_needed = old.syslog.udp != self.settings.syslog.udp
            || old.syslog.tcp != self.settings.syslog.tcp
            || old.syslog.unix != self.settings.syslog.unix
            || old.syslog.allow != self.settings.syslog.allow
            || old.state != self.settings.state
            || old.checkpoint_dir != self.settings.checkpoint_dir
            || old.clickhouse.clickhouse != self.settings.clickhouse.clickhouse
            || old.sink.cluster_insert != self.settings.sink.cluster_insert
            || old.metrics_listen != self.settings.metrics_listen
            || old.journal.as_ref().map(|j| &j.directory) != self.settings.journal.as_ref().map(|j| &j.directory)
            || old.follow.is_empty() != self.settings.follow.is_empty()
            || old.milter.as_ref().map(|m| &m.listen) != self.settings.milter.as_ref().map(|m| &m.listen);
        // What only a restart can change keeps its running value.
        self.settings.syslog = old.syslog;
        self.settings.state = old.state;
        self.settings.checkpoint_dir = old.checkpoint_dir;
        self.settings.clickhouse = old.clickhouse;
        self.settings.sink = old.sink;
        self.settings.metrics_listen = old.metrics_listen;
        self.settings.metrics_allow = old.metrics_allow;
        self.settings.journal = old.journal;
        self.settings.stdin = old.stdin;
        self.settings.trusted_files = old.trusted_files;
        self.settings.milter = old.milter;
        let follow = self.settings.follow.join(", ");
        if restart_needed {
            tracing::warn!(
                %follow,
                "SIGHUP: configuration reloaded; listener, state, checkpoint, ClickHouse, metrics or journal changes need a restart"
            );
        } else {
            tracing::info!(%follow, "SIGHUP: configuration reloaded");
        }
    }

    /// Publishes the counters for `/metrics`.
    fn publish(&self, sink: &Option<SinkThread>) {
        let mut snapshot = Snapshot::default();
        let c = &mut snapshot.counters;
        let correlate = self.correlator.counters();
        c.insert("lines_total", ("Lines read (files, syslog messages, stdin).", self.lines.lines));
        c.insert("bytes_total", ("Bytes of those lines.", self.lines.bytes));
        let unparsed: u64 = self.lines.unparsed.iter().map(|(_, n)| n).sum();
        c.insert("lines_unparsed_total", ("Lines without a recognisable syslog envelope.", unparsed));
        c.insert(
            "lines_malformed_total",
            ("MTA messages recognised but not following their grammar.", self.lines.malformed),
        );
        c.insert("lines_oversized_total", ("Lines longer than the limit, skipped.", self.lines.oversized));
        c.insert("records_total", ("Lines handed to the correlator.", correlate.records));
        c.insert("observations_total", ("Observations emitted.", correlate.observations()));
        c.insert(
            "checkpoints_total",
            ("Sync points completed (sinks durable, checkpoint written).", self.counters.checkpoints),
        );
        c.insert(
            "replayed_skipped_total",
            ("Observations not emitted again after a restart.", self.counters.replayed_skipped),
        );
        c.insert("file_errors_total", ("Failed reads of followed files.", self.counters.file_errors));
        c.insert("feed_refreshes_total", ("Feed refreshes written.", self.counters.feed_refreshes));
        c.insert("feed_failures_total", ("Feed refreshes refused or failed.", self.counters.feed_failures));
        if let Some(sink) = sink {
            c.insert("clickhouse_rows_inserted_total", ("Rows acknowledged by ClickHouse.", sink.inserted()));
            c.insert("clickhouse_spooled_batches", ("Batches waiting in the spool folder.", sink.spooled_batches()));
        }
        for file in self.files.values().filter(|f| !f.closed) {
            let size = std::fs::metadata(&file.path).map(|m| m.len()).unwrap_or(file.read_end);
            snapshot.file_lag.insert(file.path.display().to_string(), size.saturating_sub(file.read_end));
        }
        self.published.publish(snapshot);
    }

    /// Hands the new observations to every sink, skipping those emitted before a restart; with
    /// the milter, each inbound session once (`ingest_milter`).
    fn route(&mut self, sink: &mut Option<SinkThread>, state: &mut Option<StateWriter>) -> Result<()> {
        self.route_held(sink, state, Release::Due)
    }

    /// [`Core::route`], releasing what the milter pairing holds back as `scope` says: before a
    /// sync point every held log Observation ([`Release::Log`]), at the last one everything.
    fn route_held(
        &mut self,
        sink: &mut Option<SinkThread>,
        state: &mut Option<StateWriter>,
        scope: Release,
    ) -> Result<()> {
        let now = Instant::now();
        let mut ready = Vec::with_capacity(self.out.len());
        for observation in self.out.drain(..) {
            if let Some(file) = self.files.values_mut().find(|f| Arc::ptr_eq(&f.arc, &observation.source)) {
                if file.skip.remove(&observation.event_id) {
                    self.counters.replayed_skipped += 1;
                    continue;
                }
                file.emitted.push_back((observation.event_id.clone(), file.read_end));
            }
            match &mut self.milter {
                Some(milter) => milter.log(observation, now),
                None => ready.push(observation),
            }
        }
        if let Some(milter) = &mut self.milter {
            milter.drain(now, scope, &mut ready);
            self.counters.milter = Some(milter.counters().clone());
        }
        for observation in ready {
            if self.settings.stdout {
                serde_json::to_writer(&mut self.writer, &observation)?;
                self.writer.write_all(b"\n")?;
            }
            if let Some(sink) = sink.as_mut() {
                sink.send(observation.clone())?;
            }
            if let Some(state) = state.as_mut() {
                state.push(observation)?;
            }
        }
        Ok(())
    }

    /// A sync point: sinks durable first, then the checkpoint that relies on them.
    ///
    /// The checkpoint is computed and written (fsynced, under a temporary name) before the sinks
    /// are synced and the state saved, and renamed into place right after the state's own rename
    /// (before either folder is fsynced), so that only two renames separate the state from its
    /// checkpoint: a crash in between (microseconds) would count one interval twice in the state.
    /// `last`: the process stops after it, so nothing may stay held.
    fn sync(&mut self, sink: &mut Option<SinkThread>, state: &mut Option<StateWriter>, last: bool) -> Result<()> {
        // No line's Observation stays only in memory across a checkpoint.
        self.route_held(sink, state, if last { Release::All } else { Release::Log })?;
        self.last_sync = Instant::now();
        let prepared = match self.settings.checkpoint_dir.clone() {
            Some(dir) => Some((dir.clone(), self.prepare_checkpoint(&dir)?)),
            None => None,
        };
        self.writer.flush()?;
        if let Some(sink) = sink.as_mut() {
            sink.sync()?;
        }
        // The checkpoint takes its place right after the state's rename (a crash between the two
        // renames, microseconds apart, would count one interval twice in the state).
        let mut renamed = false;
        let mut commit = || -> Result<()> {
            if let Some((dir, next)) = &prepared {
                let path = dir.join(CHECKPOINT_FILE);
                std::fs::rename(next, &path).with_context(|| format!("cannot replace {}", path.display()))?;
                renamed = true;
            }
            Ok(())
        };
        match state.as_mut() {
            Some(state) => state.sync_then(&mut commit)?,
            None => commit()?,
        }
        if let Some((dir, _)) = &prepared {
            if let Ok(handle) = std::fs::File::open(dir) {
                // Makes the rename durable; failing here only weakens crash safety.
                let _ = handle.sync_all();
            }
        }
        if renamed {
            self.counters.checkpoints += 1;
        }
        self.refresh_feeds();
        Ok(())
    }

    /// Rewrites the feed files from the state just saved, when `--feed-dir` is set and the
    /// interval has passed. A refusal (churn guard) or error is reported, never fatal: the
    /// previous files stay in place.
    fn refresh_feeds(&mut self) {
        let (Some(dir), Some(state)) = (&self.settings.feed_dir, &self.settings.state) else { return };
        if self.last_feed.is_some_and(|at| at.elapsed() < self.settings.feed_interval) {
            return;
        }
        self.last_feed = Some(Instant::now());
        let mut argv: Vec<std::ffi::OsString> =
            vec!["feed".into(), "--state".into(), state.into(), "--out".into(), dir.into()];
        if let Some(thresholds) = &self.settings.feed_thresholds {
            argv.push("--thresholds".into());
            argv.push(thresholds.into());
        }
        #[derive(clap::Parser)]
        struct FeedCli {
            #[command(flatten)]
            args: crate::commands::feed::FeedArgs,
        }
        let result = <FeedCli as clap::Parser>::try_parse_from(argv)
            .map_err(anyhow::Error::from)
            .and_then(|cli| crate::commands::feed::run(&cli.args));
        match result {
            Ok(()) => self.counters.feed_refreshes += 1,
            Err(error) => {
                self.counters.feed_failures += 1;
                tracing::warn!(feed_dir = %dir.display(), "feed refresh not published: {error:#}");
            }
        }
    }

    /// Computes the checkpoint of every file and writes it durably to a temporary file.
    fn prepare_checkpoint(&mut self, dir: &Path) -> Result<PathBuf> {
        let mut files = Vec::new();
        let mut finished = Vec::new();
        for (key, file) in &mut self.files {
            let low_water = self.correlator.low_water(file.source);
            if file.closed && low_water.is_none() {
                finished.push(*key);
                self.finished.push_back(FileCheckpoint {
                    path: file.name.clone(),
                    fingerprint: format!("{:016x}", file.fingerprint),
                    offset: file.read_end,
                    emitted: Vec::new(),
                    replay_until: file.read_end,
                    open: Vec::new(),
                    cursor: None,
                    finished: true,
                });
                continue;
            }
            let offset = low_water.map_or(file.read_end, |low| low.min(file.read_end));
            while file.emitted.front().is_some_and(|(_, read_end)| *read_end <= offset) {
                file.emitted.pop_front();
            }
            // Still replaying: the earlier checkpoint's range is not fully re-read yet.
            let (replay_until, open) = match &file.replay {
                Some((until, open)) if offset < *until => {
                    (*until, open.iter().map(|((r, i, pid), first)| (r.clone(), i.clone(), *pid, *first)).collect())
                }
                _ => (file.read_end, self.correlator.open_processes(file.source)),
            };
            // Journal sources resume by cursor: the entry at `offset`, or just after the last one.
            let cursor = match file.cursors.range(offset..).next() {
                Some((_, cursor)) => Some((cursor.clone(), true)),
                None => file.cursors.range(..offset).next_back().map(|(_, cursor)| (cursor.clone(), false)),
            };
            if let Some(&keep_from) = file.cursors.range(..offset).next_back().map(|(seqnum, _)| seqnum) {
                // Keep the last cursor before `offset` (the after-cursor position), drop older ones.
                file.cursors = file.cursors.split_off(&keep_from);
            }
            files.push(FileCheckpoint {
                path: file.name.clone(),
                fingerprint: format!("{:016x}", file.fingerprint),
                offset,
                emitted: file.emitted.iter().cloned().collect(),
                replay_until,
                open,
                cursor,
                finished: false,
            });
        }
        for key in finished {
            self.files.remove(&key);
        }
        // Checkpoints of files not opened yet in this run are kept as they were.
        files.extend(self.pending.values().map(|f| FileCheckpoint {
            path: f.path.clone(),
            fingerprint: f.fingerprint.clone(),
            offset: f.offset,
            emitted: f.emitted.clone(),
            replay_until: f.replay_until,
            open: f.open.clone(),
            cursor: f.cursor.clone(),
            finished: false,
        }));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        // Then the finished generations, oldest first.
        while self.finished.len() > MAX_FINISHED_CHECKPOINTS {
            self.finished.pop_front();
        }
        files.extend(self.finished.iter().map(|f| FileCheckpoint {
            path: f.path.clone(),
            fingerprint: f.fingerprint.clone(),
            offset: f.offset,
            emitted: Vec::new(),
            replay_until: f.offset,
            open: Vec::new(),
            cursor: None,
            finished: true,
        }));
        let tls_logging = self.correlator.tls_logging_evidence();
        let body = serde_json::to_vec_pretty(&Checkpoints { version: 1, files, tls_logging })?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let next = dir.join(format!(".{CHECKPOINT_FILE}.next"));
        let mut handle = std::fs::File::create(&next).with_context(|| format!("cannot create {}", next.display()))?;
        handle.write_all(&body).with_context(|| format!("cannot write {}", next.display()))?;
        handle.sync_all().with_context(|| format!("cannot sync {}", next.display()))?;
        Ok(next)
    }
}

/// During a replay: true when `line` belongs to a connection that was open at the checkpoint
/// (its process is listed and the line is not older than the connection's first line).
fn replay_wanted(open: &OpenProcesses, offset: u64, line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let Ok(record) = parsers::parse_record(&text) else { return false };
    let header = &record.header;
    let key = (header.hostname.to_owned(), header.instance().to_owned(), header.procid.unwrap_or(0));
    open.get(&key).is_some_and(|first| *first <= offset)
}

/// The daemon's own log on stderr: `tracing` events, human-readable or one JSON object per line.
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-11-30T18:00:00Z  INFO message`.
    #[default]
    Human,
    /// One JSON object per line (`timestamp`, `level`, `fields`).
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IngestArgs,
    }

    fn settings(argv: &[&str]) -> Result<Settings> {
        let mut full = vec!["ingest"];
        full.extend_from_slice(argv);
        Settings::resolve(&Cli::try_parse_from(full).unwrap().args)
    }

    #[test]
    fn cluster_insert_from_the_file_or_the_flag() {
        let dir = std::env::temp_dir().join(format!("tlsledger-ingest-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ingest.toml");
        // The example's commented key, uncommented, is valid.
        let example = include_str!("../../examples/ingest.toml").replace("# cluster_insert = ", "cluster_insert = ");
        std::fs::write(&file, &example).unwrap();
        let s = settings(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(s.sink.cluster_insert, Some(InsertTarget::Distributed));
        assert_eq!(s.sink.config().target.table(), "observations");
        assert_eq!(s.sink.config().target.settings(), [("insert_distributed_sync", "1")]);
        let s = settings(&["--config", file.to_str().unwrap(), "--cluster-insert", "local"]).unwrap();
        assert_eq!(s.sink.config().target.table(), "observations_local");
        assert!(s.sink.config().target.settings().is_empty());
        std::fs::write(&file, "follow = [\"/var/log/mail.log\"]\ncluster_insert = \"random\"\n").unwrap();
        let error = settings(&["--config", file.to_str().unwrap()]).unwrap_err();
        assert!(format!("{error:#}").contains("cluster_insert must be"), "{error:#}");
        // Without it, the single-node table and no settings a server might not know.
        let s = settings(&["--follow", "/var/log/mail.log", "--state", dir.to_str().unwrap()]).unwrap();
        assert_eq!(s.sink.config().target, InsertTarget::Single);
        assert!(s.sink.config().target.settings().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let dir = std::env::temp_dir().join(format!("tlsledger-ingest-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ingest.toml");
        std::fs::write(&file, include_str!("../../examples/ingest.toml")).unwrap();
        let s = settings(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(s.follow, ["/var/log/mail.log"]);
        assert_eq!(s.state.as_deref(), Some(Path::new("/var/lib/tlsledger")));
        assert_eq!(s.syslog.tcp, ["127.0.0.1:5514".parse::<SocketAddr>().unwrap()]);
        assert!(syslog::allowed(&s.syslog.allow, "::1".parse().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_are_safe() {
        let dir = std::env::temp_dir().join(format!("tlsledger-ingest-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ingest.toml");
        std::fs::write(
            &file,
            "follow = [\"/var/log/mail.log\"]\nsyslog_listen = [\"127.0.0.1:5514\"]\nstate = \"/tmp/x\"\npoll_ms = 50\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let s = settings(&["--config", config]).unwrap();
        assert_eq!(s.follow, ["/var/log/mail.log"]);
        assert_eq!(s.syslog.udp.len(), 1);
        assert_eq!(s.syslog.tcp.len(), 1);
        assert_eq!(s.poll, Duration::from_millis(50));
        assert_eq!(s.checkpoint_dir.as_deref(), Some(Path::new("/tmp/x")));
        assert!(syslog::allowed(&s.syslog.allow, "127.0.0.1".parse().unwrap()));
        assert!(!syslog::allowed(&s.syslog.allow, "192.0.2.1".parse().unwrap()));
        let s = settings(&["--config", config, "--follow", "/other.log", "--poll-ms", "7"]).unwrap();
        assert_eq!(s.follow, ["/other.log"]);
        assert_eq!(s.poll, Duration::from_millis(7));
        // Unknown keys are errors, not silently ignored.
        std::fs::write(&file, "folow = [\"/var/log/mail.log\"]\n").unwrap();
        assert!(format!("{:#}", settings(&["--config", config]).unwrap_err()).contains("folow"));
        // Nothing to read is an error.
        assert!(settings(&[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
