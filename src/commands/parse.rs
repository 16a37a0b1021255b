//! `tlsledger parse`: read log files (or stdin) and write one Observation JSON object per line.
//!
//! The whole pipeline of one process, synchronously: [`crate::sources::lines`] frames lines,
//! [`parsers::parse_line`] parses them, [`crate::correlate::Correlator`] joins them, and the
//! observations are written as JSON lines to stdout (or only counted with `--output none`).
//! Files are read in the order given, as one stream, so a session that spans a rotated file and
//! its successor is joined. Malformed lines are counted, never fatal; an unreadable file is an
//! error before any output is written.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::clickhouse_args::{ClickhouseArgs, SinkArgs};
use crate::clock::{year_month, LogClock, Zone};
use crate::correlate::{Config, Correlator, Counters, LineMeta, SourceId, TlsLogging};
use crate::observation::{Observation, Outcome, Source};
use crate::parallel::{self, Parsed};
use crate::reputation::indra::IndraStore;
use crate::reputation::store::{record, RecordCounts, ReputationStore};
use crate::sinks::clickhouse::{schema, ClickhouseConfig, ClickhouseSink, SinkConfig, SinkCounters, SinkInput};

/// What to write on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// One Observation JSON object per line.
    #[default]
    Json,
    /// Nothing (use with `--stats` to measure or to check a log).
    None,
}

/// Options of `tlsledger parse`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParseArgs {
    /// Log files to read, in order; `-` or none reads stdin. gzip-compressed input (logrotate's
    /// `mail.log.2.gz`) is read decompressed. Rotations of a log given with the log itself
    /// (`mail.log`, `mail.log.1`, `mail.log.2.gz`, or `maillog-20241130`) are read oldest first,
    /// whatever order they are given in (`/var/log/mail.log*` expands newest first); see
    /// --keep-order.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Read the files exactly in the order given, rotated ones included.
    #[arg(long)]
    pub keep_order: bool,

    /// Print counts of lines and observations (per outcome and direction) to stderr at the end.
    #[arg(long)]
    pub stats: bool,

    /// What to write on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Whether the MTA logs a TLS line for every TLS connection (Postfix smtp_tls_loglevel or smtpd_tls_loglevel >= 1).
    /// `on`: a connection without a TLS line is plaintext. `off`: it is unknown. `auto`: plaintext
    /// only for MTA instances that have logged TLS lines.
    #[arg(long, value_enum, default_value_t = TlsLogging::Auto)]
    pub tls_logging: TlsLogging,

    /// Zone of timestamps that carry none (RFC 3164, Postfix maillog_file): `local`, `utc` or `+HH:MM`.
    #[arg(long, default_value = "local", value_parser = clap::value_parser!(Zone))]
    pub log_zone: Zone,

    /// Reference time for logs without a year (RFC 3339, e.g. 2026-11-30T00:00:00Z).
    /// Default: each file's modification time; now for stdin.
    #[arg(long, value_name = "TIME")]
    pub reference_time: Option<DateTime<Utc>>,

    /// Lines longer than this are skipped and counted as oversized.
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub max_line_bytes: usize,

    /// Threads that parse lines (0: one fewer than the cores, at least 1 and at most 8). Joining
    /// lines into observations stays in order on one thread; reading and parsing run beside it.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    /// Most connections kept open at once while joining lines.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_open: usize,

    /// Emit a connection after this many seconds of log time without a new line.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub idle_timeout_secs: i64,

    /// Also load the observations into ClickHouse (tables from `tlsledger schema apply`).
    #[command(flatten)]
    pub clickhouse: ClickhouseArgs,

    /// Batching, retries and spool of the ClickHouse load.
    #[command(flatten, next_help_heading = "ClickHouse load")]
    pub sink: SinkArgs,

    /// Also fold the observations into the reputation state kept in DIR (an IndraDB graph saved
    /// atomically as DIR/graph.bin); read it with `tlsledger explain`.
    #[arg(long, value_name = "DIR", help_heading = "Reputation")]
    pub state: Option<PathBuf>,

    /// Treat these log files as trusted sources (root-owned MTA logs): their observations may
    /// promote hosts to a TLS class. By default plain log text is low-trust: it can flag, not promote.
    #[arg(long, help_heading = "Reputation")]
    pub trusted_files: bool,
}

/// Line-level counts that the correlator does not see.
#[derive(Debug, Default, Clone)]
pub struct LineCounters {
    /// Lines read.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Lines that were not valid UTF-8 (parsed after lossy conversion).
    pub non_utf8: u64,
    /// Lines longer than `--max-line-bytes`, skipped.
    pub oversized: u64,
    /// Lines without a known framing or with a bad header, by [`parsers::Error`].
    pub unparsed: Vec<(parsers::Error, u64)>,
    /// Lines whose header parsed but whose MTA message did not.
    pub malformed: u64,
}

impl LineCounters {
    fn unparsed(&mut self, error: parsers::Error) {
        match self.unparsed.iter_mut().find(|(e, _)| *e == error) {
            Some((_, n)) => *n += 1,
            None => self.unparsed.push((error, 1)),
        }
    }
}

/// Everything `parse` counted.
#[derive(Debug, Clone, Default)]
pub struct ParseSummary {
    /// Line-level counts.
    pub lines: LineCounters,
    /// Correlator counts.
    pub correlate: Counters,
    /// ClickHouse sink counts, when loading.
    pub sink: Option<SinkCounters>,
    /// Reputation state counts, with `--state`.
    pub state: Option<RecordCounts>,
}

/// Runs `parse`; returns the counters for the caller to print or check.
pub fn run(args: &ParseArgs) -> Result<ParseSummary> {
    let files = if args.keep_order { args.files.clone() } else { crate::sources::rotated::oldest_first(&args.files) };
    if files != args.files {
        let names: Vec<String> = files.iter().map(|path| path.display().to_string()).collect();
        eprintln!("tlsledger: reading rotated logs oldest first: {}", names.join(" "));
    }
    let inputs = open_inputs(&files)?;
    let mut sink = match args.clickhouse.config()? {
        Some(config) => Some(SinkThread::start(config, args.sink.config())?),
        None => None,
    };
    let mut state = match &args.state {
        Some(dir) => Some(StateWriter::open(dir, args.trusted_files)?),
        None => None,
    };
    let mut correlator = Correlator::new(Config {
        tls_logging: args.tls_logging,
        max_open: args.max_open.max(1),
        idle_timeout_secs: args.idle_timeout_secs.max(1),
    });
    let stdout = io::stdout();
    let mut writer = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut lines = LineCounters::default();
    // A percentage only when every input's size in text is known.
    let total = inputs.iter().map(|i| i.len).sum::<Option<u64>>().unwrap_or(0);
    let mut progress = Progress::new(total, sink.as_ref().map(|s| s.inserted.clone()));
    let mut out: Vec<Observation> = Vec::new();
    for input in inputs {
        let source = correlator.add_source(input.source.clone());
        let reference = args.reference_time.map(|t| t.timestamp_micros()).unwrap_or(input.mtime_micros);
        let mut stream = Stream::new(source, args.log_zone, reference);
        let name = input.source.name.clone();
        let workers = if args.threads == 0 { parallel::default_workers() } else { args.threads };
        parallel::parse_stream(input.reader, args.max_line_bytes, workers, |parsed| {
            for i in 0..parsed.len() {
                parallel::prefetch_ahead(parsed, i);
                let line = &mut parsed[i];
                stream.line(&mut correlator, &mut lines, line, &mut out);
                // Most lines complete nothing; an empty drain still costs its setup.
                if !out.is_empty() {
                    write_all(&mut writer, args.output, &mut out, sink.as_mut(), state.as_mut())?;
                }
            }
            progress.tick(&lines);
            Ok(())
        })
        .with_context(|| format!("reading {name}"))?;
    }
    correlator.finish(&mut out);
    write_all(&mut writer, args.output, &mut out, sink.as_mut(), state.as_mut())?;
    writer.flush()?;
    progress.done();
    let state = match state {
        Some(state) => Some(state.finish()?),
        None => None,
    };
    let sink = match sink {
        Some(sink) => Some(sink.finish()?),
        None => None,
    };
    Ok(ParseSummary { lines, correlate: correlator.counters().clone(), sink, state })
}

/// Folds observations into the reputation store in chunks, and saves it at the end.
pub(crate) struct StateWriter {
    store: IndraStore,
    pending: Vec<Observation>,
    trusted_files: bool,
    counts: RecordCounts,
}

impl StateWriter {
    /// Observations folded at a time.
    const CHUNK: usize = 10_000;

    pub(crate) fn open(dir: &std::path::Path, trusted_files: bool) -> Result<Self> {
        let store =
            IndraStore::open(dir).with_context(|| format!("cannot open the reputation state in {}", dir.display()))?;
        Ok(StateWriter { store, pending: Vec::new(), trusted_files, counts: RecordCounts::default() })
    }

    pub(crate) fn push(&mut self, observation: Observation) -> Result<()> {
        self.pending.push(observation);
        if self.pending.len() >= Self::CHUNK {
            self.fold()?;
        }
        Ok(())
    }

    fn fold(&mut self) -> Result<()> {
        let trusted_files = self.trusted_files;
        let counts = record(&mut self.store, &self.pending, |o| is_trusted_source(o, trusted_files))?;
        self.counts.add(&counts);
        self.pending.clear();
        Ok(())
    }

    /// The stored history of `key`, with what is pending folded in first (the milter classifies
    /// a sender with every session recorded so far).
    pub(crate) fn history(
        &mut self,
        key: &crate::reputation::store::EndpointKey,
    ) -> Result<Option<crate::reputation::history::HostHistory>> {
        if !self.pending.is_empty() {
            self.fold()?;
        }
        self.store.history(key)
    }

    /// Folds what is pending and saves the store (atomically): a checkpoint.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.sync_then(&mut || Ok(()))
    }

    /// [`StateWriter::sync`], calling `after_rename` as soon as the new state is in place
    /// ([`IndraStore::save_then`]).
    pub(crate) fn sync_then(&mut self, after_rename: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.fold()?;
        self.store.save_then(after_rename).context("cannot save the reputation state")
    }

    pub(crate) fn finish(mut self) -> Result<RecordCounts> {
        self.sync()?;
        Ok(self.counts)
    }
}

/// Sources that may promote a host: the milter and journald with trusted fields, and log files
/// when the operator says so (`--trusted-files`).
pub fn is_trusted_source(observation: &Observation, trusted_files: bool) -> bool {
    is_trusted_source_name(&observation.source.trust, trusted_files)
}

/// [`is_trusted_source`] by the source's trust name (`source.trust`).
pub fn is_trusted_source_name(trust: &str, trusted_files: bool) -> bool {
    match trust {
        "milter" | "journald-trusted" => true,
        "local" => trusted_files,
        _ => false,
    }
}

/// Observations per message to the sink thread.
const SINK_CHUNK: usize = 1024;

/// The ClickHouse sink on its own thread with a single-threaded tokio runtime, fed through a
/// bounded channel: when the sink is slow (or the spool full), `send` blocks and reading pauses.
pub(crate) struct SinkThread {
    sender: tokio::sync::mpsc::Sender<SinkInput>,
    /// Observations not yet handed to the sink thread: sent in chunks of [`SINK_CHUNK`].
    chunk: Vec<Observation>,
    inserted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: std::thread::JoinHandle<Result<SinkCounters>>,
    spool_dir: std::path::PathBuf,
}

impl SinkThread {
    pub(crate) fn start(config: ClickhouseConfig, sink_config: SinkConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let spool_dir = sink_config.spool_dir.clone();
        // Check what can be checked before reading: the table exists (when the server answers).
        let modern = runtime.block_on(async {
            let server = config.server_client(false);
            match schema::server_info(&server).await {
                Ok(info) => {
                    let exists: u8 = config
                        .client(false)
                        .query_raw("EXISTS TABLE observations")
                        .fetch_one()
                        .await
                        .context("cannot check the observations table")?;
                    if exists != 1 {
                        anyhow::bail!(
                            "table {}.observations does not exist at {}: run `tlsledger schema apply --clickhouse {}` first",
                            config.database,
                            config.display_url(),
                            config.display_url()
                        );
                    }
                    Ok(info.modern())
                }
                Err(error) => {
                    eprintln!(
                        "tlsledger: ClickHouse at {} does not answer ({error:#}); observations will be spooled to {}",
                        config.display_url(),
                        sink_config.spool_dir.display()
                    );
                    Ok(false)
                }
            }
        })?;
        let sink = ClickhouseSink::new(&config, modern, sink_config)?;
        let inserted = sink.inserted();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let handle = std::thread::Builder::new()
            .name("clickhouse-sink".to_owned())
            .spawn(move || Ok(runtime.block_on(sink.run(receiver))))?;
        Ok(SinkThread { sender, chunk: Vec::with_capacity(SINK_CHUNK), inserted, handle, spool_dir })
    }

    pub(crate) fn send(&mut self, observation: Observation) -> Result<()> {
        self.chunk.push(observation);
        if self.chunk.len() >= SINK_CHUNK {
            self.send_chunk()?;
        }
        Ok(())
    }

    fn send_chunk(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(SINK_CHUNK));
        self.sender
            .blocking_send(SinkInput::Rows(chunk))
            .map_err(|_| anyhow::anyhow!("the ClickHouse sink stopped unexpectedly"))
    }

    /// Rows acknowledged by ClickHouse so far.
    pub(crate) fn inserted(&self) -> u64 {
        self.inserted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Batches waiting in the spool folder.
    pub(crate) fn spooled_batches(&self) -> u64 {
        std::fs::read_dir(&self.spool_dir)
            .map(|entries| {
                entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("batch-")).count() as u64
            })
            .unwrap_or(0)
    }

    /// Hands over everything sent so far and waits until it is inserted or spooled.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.send_chunk()?;
        let (done, acked) = tokio::sync::oneshot::channel();
        self.sender
            .blocking_send(SinkInput::Flush(done))
            .map_err(|_| anyhow::anyhow!("the ClickHouse sink stopped unexpectedly"))?;
        acked.blocking_recv().map_err(|_| anyhow::anyhow!("the ClickHouse sink stopped unexpectedly"))
    }

    /// Closes the channel, waits for the last batches, and fails if rows remain spooled.
    pub(crate) fn finish(mut self) -> Result<SinkCounters> {
        self.send_chunk()?;
        drop(self.sender);
        let counters = match self.handle.join() {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("the ClickHouse sink thread panicked"),
        };
        if counters.batches_left_in_spool > 0 {
            anyhow::bail!(
                "{} batch(es) could not be sent to ClickHouse and are kept in {}; run again with the same --spool-dir when the server is back",
                counters.batches_left_in_spool,
                self.spool_dir.display()
            );
        }
        Ok(counters)
    }
}

/// Per-input state.
pub(crate) struct Stream {
    source: SourceId,
    years: parsers::YearInference,
    clock: LogClock,
    /// Log time of the previous line, used for lines without a timestamp.
    last_micros: i64,
    /// The previous line's timestamp text, for [`parsers::parse_record_cached`].
    headers: parsers::HeaderCache,
}

impl Stream {
    /// The state of one input whose yearless timestamps are near `reference` (µs since the epoch).
    pub(crate) fn new(source: SourceId, zone: Zone, reference: i64) -> Self {
        let (year, month) = year_month(zone, reference);
        Stream {
            source,
            years: parsers::YearInference::new(year, month),
            clock: LogClock::new(zone),
            last_micros: reference,
            headers: parsers::HeaderCache::default(),
        }
    }

    /// Parses `text` (one line without its newline) and feeds it to the correlator.
    pub(crate) fn text_line(
        &mut self,
        correlator: &mut Correlator,
        lines: &mut LineCounters,
        offset: u64,
        bytes: &[u8],
        out: &mut Vec<Observation>,
    ) {
        let len = bytes.len() as u64;
        let lossy_text;
        let (text, lossy) = match std::str::from_utf8(bytes) {
            Ok(text) => (text, false),
            Err(_) => {
                lossy_text = String::from_utf8_lossy(bytes);
                (&*lossy_text, true)
            }
        };
        let mut parsed =
            Parsed::Line { offset, len, lossy, record: parsers::parse_record_cached(text, &mut self.headers) };
        self.line(correlator, lines, &mut parsed, out);
    }

    pub(crate) fn line(
        &mut self,
        correlator: &mut Correlator,
        lines: &mut LineCounters,
        line: &mut Parsed<'_>,
        out: &mut Vec<Observation>,
    ) {
        lines.lines += 1;
        let (offset, record) = match line {
            Parsed::Line { offset, len, lossy, record } => {
                lines.bytes += *len + 1;
                lines.non_utf8 += u64::from(*lossy);
                match record {
                    Ok(record) => (*offset, record),
                    Err(error) => {
                        lines.unparsed(*error);
                        return;
                    }
                }
            }
            Parsed::Oversized { len, .. } => {
                lines.oversized += 1;
                lines.bytes += *len + 1;
                return;
            }
        };
        self.years.resolve(&mut record.header.timestamp);
        if let parsers::Body::Unparsed(_) = record.body {
            lines.malformed += 1;
        }
        if let Some(timestamp) = &record.header.timestamp {
            self.last_micros = self.clock.micros(timestamp);
        }
        let meta = LineMeta { source: self.source, offset, ts_micros: self.last_micros };
        correlator.push(record, meta, out);
    }
}

fn write_all(
    writer: &mut impl Write,
    format: OutputFormat,
    out: &mut Vec<Observation>,
    mut sink: Option<&mut SinkThread>,
    mut state: Option<&mut StateWriter>,
) -> Result<()> {
    if sink.is_none() && state.is_none() {
        // Nothing takes the observations: written where they are (moving each one out of the
        // vector copied most of a kilobyte per observation).
        if format == OutputFormat::Json {
            for observation in out.iter() {
                serde_json::to_writer(&mut *writer, observation)?;
                writer.write_all(b"\n")?;
            }
        }
        out.clear();
        return Ok(());
    }
    for observation in out.drain(..) {
        if format == OutputFormat::Json {
            serde_json::to_writer(&mut *writer, &observation)?;
            writer.write_all(b"\n")?;
        }
        match (sink.as_deref_mut(), state.as_deref_mut()) {
            (Some(sink), Some(state)) => {
                state.push(observation.clone())?;
                sink.send(observation)?;
            }
            (Some(sink), None) => sink.send(observation)?,
            (None, Some(state)) => state.push(observation)?,
            (None, None) => {}
        }
    }
    Ok(())
}

/// An opened input.
struct Input {
    source: Source,
    reader: Box<dyn Read + Send>,
    /// Bytes of text, when known (not for stdin and compressed files).
    len: Option<u64>,
    mtime_micros: i64,
}

/// Opens every input first, so an unreadable file fails before any output.
fn open_inputs(files: &[PathBuf]) -> Result<Vec<Input>> {
    let now = Utc::now().timestamp_micros();
    if files.is_empty() {
        return Ok(vec![stdin_input(now)?]);
    }
    let mut inputs = Vec::with_capacity(files.len());
    for path in files {
        if path.as_os_str() == "-" {
            inputs.push(stdin_input(now)?);
            continue;
        }
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let metadata = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
        if metadata.is_dir() {
            anyhow::bail!("{} is a directory", path.display());
        }
        let mtime_micros = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now, |d| i64::try_from(d.as_micros()).unwrap_or(now));
        let name = path.display().to_string();
        let (reader, compression) = crate::sources::compressed::open(Box::new(file), &name)
            .with_context(|| format!("cannot read {}", path.display()))?;
        inputs.push(Input {
            source: Source { kind: "file".to_owned(), name, trust: "local".to_owned() },
            reader,
            // The progress line compares bytes of text with this: unknown for a compressed file.
            len: compression.is_none().then_some(metadata.len()),
            mtime_micros,
        });
    }
    Ok(inputs)
}

fn stdin_input(now: i64) -> Result<Input> {
    // Blocks until stdin has given its first bytes (or ended): a writer sends whole lines.
    let (reader, _) = crate::sources::compressed::open(Box::new(io::stdin()), "stdin").context("cannot read stdin")?;
    Ok(Input {
        source: Source { kind: "stdin".to_owned(), name: "-".to_owned(), trust: "local".to_owned() },
        reader,
        len: None,
        mtime_micros: now,
    })
}

/// A progress line on stderr while reading, only when stderr is a terminal.
struct Progress {
    /// Rows acknowledged by ClickHouse, when loading.
    inserted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    enabled: bool,
    total_bytes: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total_bytes: u64, inserted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>) -> Self {
        let now = Instant::now();
        Progress { inserted, enabled: io::stderr().is_terminal(), total_bytes, started: now, last: now }
    }

    /// Called once per chunk of lines (a few thousand): redraws at most once a second.
    fn tick(&mut self, lines: &LineCounters) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let percent = if self.total_bytes > 0 {
            format!(" ({:.0}%)", 100.0 * lines.bytes as f64 / self.total_bytes as f64)
        } else {
            String::new()
        };
        let loaded = match &self.inserted {
            Some(n) => format!(", {} rows in ClickHouse", n.load(std::sync::atomic::Ordering::Relaxed)),
            None => String::new(),
        };
        eprint!(
            "\r{} lines, {:.0} MB{percent}, {:.0} lines/s{loaded}   ",
            lines.lines,
            lines.bytes as f64 / 1e6,
            lines.lines as f64 / secs
        );
    }

    fn done(&self) {
        if self.enabled && self.last != self.started {
            eprintln!();
        }
    }
}

/// The `--stats` report.
pub fn format_stats(summary: &ParseSummary) -> String {
    let (lines, counters) = (&summary.lines, &summary.correlate);
    let mut text = String::new();
    let mut row = |label: &str, value: u64| text.push_str(&format!("{label:<28}{value:>12}\n"));
    row("lines", lines.lines);
    row("  bytes", lines.bytes);
    row("  non-utf8 (read lossily)", lines.non_utf8);
    row("  oversized (skipped)", lines.oversized);
    let n_unparsed: u64 = lines.unparsed.iter().map(|(_, n)| n).sum();
    row("  unparsed header", n_unparsed);
    for (error, n) in &lines.unparsed {
        row(&format!("    {error}"), *n);
    }
    row("  malformed message", lines.malformed);
    row("  other programs", counters.other_program);
    row("  ignored (not TLS-relevant)", counters.ignored);
    row("  local deliveries", counters.local_deliveries);
    row("  tlsproxy duplicates", counters.tlsproxy_duplicates);
    row("  orphans", counters.orphans);
    row("observations", counters.observations());
    row("  outbound", counters.by_direction[0]);
    row("  inbound", counters.by_direction[1]);
    for (outcome, n) in Outcome::ALL.iter().zip(counters.by_outcome) {
        row(&format!("  {}", outcome.as_str()), n);
    }
    row("  emitted on idle timeout", counters.expired);
    row("  emitted early (max open)", counters.evicted);
    // Only on logs with more (reporter, instance) pairs than a site runs: forged lines, mostly.
    if counters.names_forgotten > 0 {
        row("process names forgotten", counters.names_forgotten);
    }
    if let Some(state) = &summary.state {
        row("reputation: observations", state.observations);
        row("  without an IP (skipped)", state.skipped);
        row("  endpoints updated", state.endpoints);
    }
    if let Some(sink) = &summary.sink {
        row("clickhouse rows inserted", sink.rows_inserted);
        row("  insert requests", sink.batches_inserted);
        row("  failed attempts", sink.insert_failures);
        row("  batches spooled", sink.batches_spooled);
        row("  batches replayed", sink.batches_replayed);
        row("  rows dead-lettered", sink.rows_dead_lettered);
    }
    text
}
