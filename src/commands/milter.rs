//! `tlsledger milter --listen inet:HOST:PORT|unix:PATH`: the milter daemon.
//!
//! Two threads: a tokio runtime runs [`crate::sources::milter::run`] (the MTA's connections),
//! and a writer thread owns everything that can be slow, reached through one bounded queue
//! ([`Request`]): it prints each session's Observation as a JSON line on stdout (`--stdout`),
//! folds it into the reputation state (`--state DIR`, saved every `--save-interval-secs` and at
//! shutdown), sends it to ClickHouse (`--clickhouse`), and answers the sessions' classification
//! requests from the state. The sessions never wait on the writer beyond a deadline, so a slow
//! disk or ClickHouse never holds mail; a full queue drops observations (counted on stderr).
//!
//! SIGINT or SIGTERM stops accepting connections, lets the open sessions close (recording them),
//! then the writer saves the state and flushes ClickHouse.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::clickhouse_args::{ClickhouseArgs, SinkArgs};
use super::explain::load_thresholds;
use super::parse::{SinkThread, StateWriter};
use crate::observation::{Observation, Source};
use crate::reputation::classify::{classify, Classification};
use crate::reputation::history::HostHistory;
use crate::reputation::store::EndpointKey;
use crate::reputation::thresholds::Thresholds;
use crate::sources::milter::{self, Bound, Counters, Listen, Outlet, Request, Settings};

/// Options of `tlsledger milter`.
#[derive(Debug, Clone, clap::Args)]
pub struct MilterArgs {
    /// Where to listen: inet:HOST:PORT (a loopback address: the milter has no allow-list) or
    /// unix:PATH. Port 0 picks a free port; the address is printed on stderr.
    #[arg(long, value_name = "SPEC")]
    pub listen: Listen,

    /// Print one Observation JSON object per SMTP session on stdout.
    #[arg(long)]
    pub stdout: bool,

    /// Observe only: add no X-TLSLedger header and delete none.
    #[arg(long)]
    pub no_header: bool,

    /// Most MTA connections at once (one per SMTP session); more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_connections: usize,

    /// Close an MTA connection that sends or takes no milter packet for this long.
    #[arg(long, value_name = "SECS", default_value_t = 7210)]
    pub connection_timeout_secs: u64,

    /// How long end of message waits for the sender's classification before writing
    /// `class=unknown`.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub classify_timeout_ms: u64,

    /// Requests queued for the writer thread at most; beyond, observations are dropped (counted).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub queue: usize,

    /// Also fold the observations into the reputation state kept in DIR, and classify senders
    /// from it for the header.
    #[arg(long, value_name = "DIR", help_heading = "Reputation")]
    pub state: Option<PathBuf>,

    /// Save the state this often (and at shutdown).
    #[arg(long, value_name = "SECS", default_value_t = 60, help_heading = "Reputation")]
    pub save_interval_secs: u64,

    /// Thresholds file (TOML); defaults as documented in the README.
    #[arg(long, value_name = "FILE", help_heading = "Reputation")]
    pub thresholds: Option<PathBuf>,

    /// Also load the observations into ClickHouse (tables from `tlsledger schema apply`).
    #[command(flatten)]
    pub clickhouse: ClickhouseArgs,

    /// Batching, retries and spool of the ClickHouse load.
    #[command(flatten, next_help_heading = "ClickHouse load")]
    pub sink: SinkArgs,
}

/// What the writer thread owns.
struct Writer {
    stdout: Option<io::BufWriter<io::Stdout>>,
    state: Option<StateWriter>,
    sink: Option<SinkThread>,
    thresholds: Thresholds,
    save_interval: Duration,
    observations: u64,
}

/// The classification of the sender of `observation`, with it counted on top of `stored`.
pub fn classify_session(
    stored: Option<HostHistory>,
    observation: &Observation,
    thresholds: &Thresholds,
) -> Classification {
    let mut history = stored.unwrap_or_default();
    history.observe(observation, true);
    let ip = observation.peer.ip.as_deref().unwrap_or("");
    classify(observation.direction, ip, &history, thresholds, observation.end_ts.timestamp())
}

impl Writer {
    fn run(mut self, requests: Receiver<Request>) -> Result<u64> {
        let mut next_save = Instant::now() + self.save_interval;
        loop {
            let wait = next_save.saturating_duration_since(Instant::now());
            match requests.recv_timeout(wait) {
                Ok(Request::Record(observation)) => self.record(*observation),
                Ok(Request::Classify { observation, reply }) => {
                    let stored = match &mut self.state {
                        Some(state) => {
                            let ip = observation.peer.ip.clone().unwrap_or_default();
                            let key = EndpointKey { direction: observation.direction, ip };
                            state.history(&key).unwrap_or_else(|error| {
                                eprintln!("tlsledger: milter: cannot read the history of {key}: {error:#}");
                                None
                            })
                        }
                        None => None,
                    };
                    let _ = reply.send(classify_session(stored, &observation, &self.thresholds));
                }
                Ok(Request::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.sync();
                    next_save = Instant::now() + self.save_interval;
                }
            }
        }
        let observations = self.observations;
        if let Some(state) = self.state {
            state.finish()?;
        }
        if let Some(sink) = self.sink {
            sink.finish()?;
        }
        Ok(observations)
    }

    fn record(&mut self, observation: Observation) {
        self.observations += 1;
        if let Some(out) = &mut self.stdout {
            let written = serde_json::to_writer(&mut *out, &observation)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            if let Err(error) = written {
                eprintln!("tlsledger: milter: stdout: {error}; no longer printing observations");
                self.stdout = None;
            }
        }
        if let Some(sink) = &mut self.sink {
            if let Err(error) = sink.send(observation.clone()) {
                eprintln!("tlsledger: milter: {error:#}; no longer loading ClickHouse");
                self.sink = None;
            }
        }
        if let Some(state) = &mut self.state {
            if let Err(error) = state.push(observation) {
                eprintln!("tlsledger: milter: cannot fold an observation into the state: {error:#}");
            }
        }
    }

    /// A checkpoint: failures are logged and retried at the next one, never fatal.
    fn sync(&mut self) {
        if let Some(state) = &mut self.state {
            if let Err(error) = state.sync() {
                eprintln!("tlsledger: milter: {error:#}");
            }
        }
        if let Some(sink) = &mut self.sink {
            if let Err(error) = sink.sync() {
                eprintln!("tlsledger: milter: {error:#}; no longer loading ClickHouse");
                self.sink = None;
            }
        }
    }
}

/// Runs the milter until SIGINT or SIGTERM.
pub fn run(args: &MilterArgs) -> Result<()> {
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let state = match &args.state {
        Some(dir) => Some(StateWriter::open(dir, false)?),
        None => None,
    };
    let sink = match args.clickhouse.config()? {
        Some(config) => Some(SinkThread::start(config, args.sink.config())?),
        None => None,
    };
    let writer = Writer {
        stdout: args.stdout.then(|| io::BufWriter::new(io::stdout())),
        state,
        sink,
        thresholds,
        save_interval: Duration::from_secs(args.save_interval_secs.max(1)),
        observations: 0,
    };
    let (sender, requests) = std::sync::mpsc::sync_channel(args.queue.max(1));
    let writer = std::thread::Builder::new().name("milter-writer".to_owned()).spawn(move || writer.run(requests))?;
    let counters = Arc::new(Counters::default());
    let outlet = Outlet::new(sender.clone(), Arc::clone(&counters));
    let settings = Settings {
        header: !args.no_header,
        max_connections: args.max_connections,
        connection_timeout: Duration::from_secs(args.connection_timeout_secs.max(1)),
        classify_deadline: Duration::from_millis(args.classify_timeout_ms),
        source: Arc::new(Source {
            kind: "milter".to_owned(),
            name: args.listen.to_string(),
            trust: "milter".to_owned(),
        }),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let served = runtime.block_on(async {
        let bound = Bound::bind(&args.listen).await?;
        eprintln!("tlsledger: milter listening on {}", bound.local());
        milter::run(bound, settings, outlet, crate::commands::serve::shutdown_signal()).await
    });
    drop(runtime);
    // The writer stops after what the sessions queued before they closed.
    let _ = sender.send(Request::Finish);
    let written = match writer.join() {
        Ok(result) => result.context("the milter's writer failed")?,
        Err(_) => anyhow::bail!("the milter's writer thread panicked"),
    };
    eprintln!(
        "tlsledger: milter stopped: {} session(s), {written} observation(s) written, {} dropped, {} error(s) answered with continue, {} classification timeout(s)",
        counters.sessions.load(Ordering::Relaxed),
        counters.dropped_observations.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.classify_timeouts.load(Ordering::Relaxed),
    );
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Direction;
    use crate::reputation::classify::Class;
    use crate::reputation::store::conformance::{observation, Kind, Peer};

    fn inbound(at: i64, kind: Kind) -> Observation {
        let peer = Peer { direction: Direction::Inbound, ip: Some("192.0.2.1"), hostname: None, domains: &[] };
        Observation { source: Arc::new(milter_source()), ..observation(&peer, at, kind, 0) }
    }

    fn milter_source() -> Source {
        Source { kind: "milter".into(), name: "inet:127.0.0.1:1".into(), trust: "milter".into() }
    }

    #[test]
    fn the_session_in_progress_counts_in_the_header_class() {
        let thresholds = Thresholds::default();
        let mut history = HostHistory::default();
        for day in 0..40 {
            history.observe(&inbound(day * 86_400, Kind::Valid), true);
        }
        let good = classify_session(Some(history.clone()), &inbound(40 * 86_400, Kind::Valid), &thresholds);
        // Inbound senders reach tls-unverified at best (classify.rs: valid only outbound).
        assert_eq!((good.class, good.downgrade.is_none()), (Class::TlsUnverified, true), "{:?}", good.evidence);
        // The same sender in plaintext now: flagged by this very session.
        let bad = classify_session(Some(history), &inbound(40 * 86_400, Kind::Plain), &thresholds);
        assert!(bad.downgrade.is_some(), "{bad:?}");
        // A sender without history is unknown, whatever this session did.
        let new = classify_session(None, &inbound(0, Kind::Plain), &thresholds);
        assert_eq!((new.class, new.downgrade.is_none()), (Class::Unknown, true));
    }
}
