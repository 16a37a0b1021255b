//! The milter inside `tlsledger ingest` (`--milter-listen`, or the `[milter]` table of the
//! configuration file): one process holds one reputation state, so the milter's Observations
//! go through the same sinks as the log's (stdout, ClickHouse, the state) and its header is
//! classified from that state.
//!
//! ```text
//! MTA ─► milter sessions (ingest's tokio runtime) ─► Outlet (bounded) ─► forward thread
//!        ─► core Input::Milter ─► MilterCore: Record → MilterDedup → route; Classify → answer
//! ```
//!
//! The sessions are the standalone milter's (`sources::milter`, same callbacks, same fail-open
//! rules): a full queue drops an Observation (counted), a slow core makes the header say
//! `class=unknown`; mail is never held. The core pairs each milter Observation with the log's
//! Observation of the same session ([`MilterDedup`], rule in its documentation) so that a session
//! counts once, and the milter's (higher trust) is the one kept.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::explain::load_thresholds;
use super::milter::classify_session;
use super::parse::StateWriter;
use crate::correlate::milter_dedup::{DedupConfig, DedupCounters, MilterDedup, Release};
use crate::observation::{Observation, Source};
use crate::reputation::store::EndpointKey;
use crate::reputation::thresholds::Thresholds;
use crate::sources::milter::{self, Bound, Counters, Listen, Outlet, Request, Settings};

/// The milter options of `tlsledger ingest`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IngestMilterArgs {
    /// Also run the milter here (inet:HOST:PORT on loopback, or unix:PATH): its sessions go
    /// through the same sinks as the logs', each session counted once.
    #[arg(long, value_name = "SPEC")]
    pub milter_listen: Option<Listen>,

    /// The milter observes only: no X-TLSLedger header added or deleted.
    #[arg(long)]
    pub milter_no_header: bool,
}

/// The `[milter]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilterTable {
    /// `inet:HOST:PORT` or `unix:PATH`.
    listen: Option<String>,
    /// Add the `X-TLSLedger` header (default true).
    header: Option<bool>,
    /// Most MTA connections at once (default 100).
    max_connections: Option<usize>,
    /// Close an MTA connection idle this long (default 7210).
    connection_timeout_secs: Option<u64>,
    /// How long end of message waits for the sender's class (default 200).
    classify_timeout_ms: Option<u64>,
    /// Requests queued for the core at most (default 10000).
    queue: Option<usize>,
    /// Largest start-time difference of one session in the log and at the milter (default 60).
    dedup_window_secs: Option<u64>,
    /// How long a log inbound Observation waits for its milter twin (default 2000).
    dedup_grace_ms: Option<u64>,
}

/// The resolved milter settings of `ingest`.
#[derive(Debug, Clone)]
pub struct MilterConfig {
    /// Where the milter listens.
    pub listen: Listen,
    header: bool,
    max_connections: usize,
    connection_timeout: Duration,
    classify_deadline: Duration,
    queue: usize,
    /// The pairing of log and milter sessions.
    pub dedup: DedupConfig,
}

impl MilterConfig {
    /// The flags over the `[milter]` table; `None` when neither names a listen address.
    pub fn resolve(args: &IngestMilterArgs, table: Option<&MilterTable>) -> Result<Option<MilterConfig>> {
        let table = table.cloned().unwrap_or_default();
        let listen = match (&args.milter_listen, &table.listen) {
            (Some(listen), _) => listen.clone(),
            (None, Some(text)) => text.parse().context("[milter] listen")?,
            (None, None) => return Ok(None),
        };
        let defaults = DedupConfig::default();
        Ok(Some(MilterConfig {
            listen,
            header: !args.milter_no_header && table.header.unwrap_or(true),
            max_connections: table.max_connections.unwrap_or(100).max(1),
            connection_timeout: Duration::from_secs(table.connection_timeout_secs.unwrap_or(7210).max(1)),
            classify_deadline: Duration::from_millis(table.classify_timeout_ms.unwrap_or(200)),
            queue: table.queue.unwrap_or(10_000).max(1),
            dedup: DedupConfig {
                window: table.dedup_window_secs.map_or(defaults.window, Duration::from_secs),
                grace: table.dedup_grace_ms.map_or(defaults.grace, Duration::from_millis),
                ..defaults
            },
        }))
    }
}

/// Binds the milter's listener and starts it on the current tokio runtime (call it inside the
/// runtime); the sessions' requests reach `forward` from a thread of its own, which stops when
/// `forward` returns false. The milter stops accepting when `shutdown` completes.
pub async fn spawn(
    config: &MilterConfig,
    mut forward: impl FnMut(Request) -> bool + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Arc<Counters>> {
    let bound = Bound::bind(&config.listen).await?;
    let local = bound.local();
    let (sender, requests) = std::sync::mpsc::sync_channel(config.queue);
    let counters = Arc::new(Counters::default());
    let outlet = Outlet::new(sender, Arc::clone(&counters));
    let settings = Settings {
        header: config.header,
        max_connections: config.max_connections,
        connection_timeout: config.connection_timeout,
        classify_deadline: config.classify_deadline,
        source: Arc::new(Source {
            kind: "milter".to_owned(),
            name: config.listen.to_string(),
            trust: "milter".to_owned(),
        }),
    };
    std::thread::Builder::new().name("milter-forward".to_owned()).spawn(move || {
        for request in requests {
            if !forward(request) {
                return;
            }
        }
    })?;
    tokio::spawn(async move {
        if let Err(error) = milter::run(bound, settings, outlet, shutdown).await {
            tracing::error!("the milter stopped: {error:#}");
        }
    });
    tracing::info!("milter listening on {local}");
    Ok(counters)
}

/// The core's side of the milter: pairing with the log, and classification from the state.
#[derive(Debug)]
pub struct MilterCore {
    dedup: MilterDedup,
    thresholds: Thresholds,
    /// Observations ready for the sinks.
    ready: Vec<Observation>,
}

impl MilterCore {
    /// The core side for `config`, classifying with the thresholds file (if any).
    pub fn new(config: &MilterConfig, thresholds: Option<&std::path::Path>) -> Result<MilterCore> {
        Ok(MilterCore {
            dedup: MilterDedup::new(config.dedup),
            thresholds: load_thresholds(thresholds)?,
            ready: Vec::new(),
        })
    }

    /// A request of the sessions: a finished session is paired, a classification answered
    /// (a session waits at most its deadline; an answer too late is dropped by the oneshot).
    pub(crate) fn request(&mut self, request: Request, state: &mut Option<StateWriter>, now: Instant) {
        match request {
            Request::Record(observation) => self.dedup.milter(*observation, now, &mut self.ready),
            Request::Classify { observation, reply } => {
                let stored = match state {
                    Some(state) => {
                        let ip = observation.peer.ip.clone().unwrap_or_default();
                        let key = EndpointKey { direction: observation.direction, ip };
                        state.history(&key).unwrap_or_else(|error| {
                            tracing::warn!(%key, "milter: cannot read the history: {error:#}");
                            None
                        })
                    }
                    None => None,
                };
                let _ = reply.send(classify_session(stored, &observation, &self.thresholds));
            }
            Request::Finish => {}
        }
    }

    /// An Observation from the logs: ready now, dropped as the milter's twin, or held.
    pub fn log(&mut self, observation: Observation, now: Instant) {
        self.dedup.log(observation, now, &mut self.ready);
    }

    /// Moves what is ready into `out`: milter Observations, and held ones released by `scope`
    /// (see [`Release`]).
    pub fn drain(&mut self, now: Instant, scope: Release, out: &mut Vec<Observation>) {
        self.dedup.release(now, scope, &mut self.ready);
        out.append(&mut self.ready);
    }

    /// What the pairing did.
    pub fn counters(&self) -> &DedupCounters {
        self.dedup.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_the_table() {
        let table: MilterTable =
            toml::from_str("listen = \"inet:127.0.0.1:10025\"\nheader = false\ndedup_window_secs = 5\n").unwrap();
        let config = MilterConfig::resolve(&IngestMilterArgs::default(), Some(&table)).unwrap().unwrap();
        assert_eq!(config.listen, "inet:127.0.0.1:10025".parse().unwrap());
        assert!(!config.header);
        assert_eq!(config.dedup.window, Duration::from_secs(5));
        let args =
            IngestMilterArgs { milter_listen: Some("unix:/run/m.sock".parse().unwrap()), milter_no_header: false };
        let config = MilterConfig::resolve(&args, Some(&table)).unwrap().unwrap();
        assert_eq!(config.listen, Listen::Unix("/run/m.sock".into()));
        assert!(MilterConfig::resolve(&IngestMilterArgs::default(), None).unwrap().is_none());
        assert!(toml::from_str::<MilterTable>("lisen = \"inet:127.0.0.1:1\"").is_err());
        let bad: MilterTable = toml::from_str("listen = \"10025@localhost\"").unwrap();
        assert!(MilterConfig::resolve(&IngestMilterArgs::default(), Some(&bad)).is_err());
    }

    #[test]
    fn the_example_milter_table_is_valid() {
        // examples/ingest.toml carries the table commented out: every line after `# [milter]`.
        let example = include_str!("../../examples/ingest.toml");
        let (_, section) = example.split_once("# [milter]\n").expect("a [milter] section in the example");
        let table: String = section.lines().map(|l| l.trim_start_matches("# ")).collect::<Vec<_>>().join("\n");
        let table: MilterTable = toml::from_str(&table).unwrap();
        let config = MilterConfig::resolve(&IngestMilterArgs::default(), Some(&table)).unwrap().unwrap();
        assert_eq!(config.listen, "inet:127.0.0.1:10025".parse().unwrap());
        assert_eq!((config.dedup.window, config.dedup.grace), (Duration::from_secs(60), Duration::from_secs(2)));
        assert_eq!((config.max_connections, config.queue, config.header), (100, 10_000, true));
    }
}
