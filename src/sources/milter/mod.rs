//! The milter source: inbound SMTP sessions live from the MTA over the milter protocol
//! (Sendmail's libmilter protocol, spoken by Postfix and Sendmail), through `indymilter`.
//!
//! [`run`] accepts MTA connections on a [`Listen`] address until the shutdown future completes.
//! Each session (`callbacks.rs`, thin) fills a [`session::Session`] (the logic), and at its close
//! hands one inbound Observation to an [`Outlet`]: a bounded channel to the thread that writes
//! stdout, the reputation state and ClickHouse (`commands/milter.rs`). At end of message the
//! session asks that thread for the sender's classification, with a deadline, to build the
//! `X-TLSLedger` header.
//!
//! Wire contract with the MTA: we ask for the stages connect, HELO, MAIL, header (only with the
//! header on), end of message, abort and close, with "no reply" for the first four when the MTA
//! offers it; the macros of `session::*_MACROS` when the MTA lets a milter choose them; and the
//! actions add header and change header (to delete forged copies), only those the MTA offers.
//!
//! **Invariant:** the milter never stops mail. Every callback answers through
//! `callbacks::answer`, the one place that maps an internal error to `continue`; a full channel
//! drops the observation (counted) instead of waiting; a slow classification gives up at its
//! deadline and the header says `class=unknown`; a listener error is retried, never fatal.
//! indymilter bounds a packet to 1 MiB and closes only that connection on a malformed one.

pub mod callbacks;
pub mod session;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use indymilter::Listener;

use crate::observation::{Observation, Source};
use crate::reputation::classify::Classification;

/// Where the milter listens: `inet:HOST:PORT` or `unix:PATH` (Postfix's `smtpd_milters` syntax,
/// with the port after the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (use a loopback one: the milter has no allow-list).
    Inet(SocketAddr),
    /// A UNIX-domain socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Listen> {
        if let Some(address) = text.strip_prefix("inet:") {
            let address = address.trim_start_matches('[').replace("]:", ":");
            let parsed = match address.parse() {
                Ok(parsed) => parsed,
                Err(_) => match address.rsplit_once(':') {
                    Some((host, port)) if host.contains(':') => format!("[{host}]:{port}").parse()?,
                    _ => bail!("inet:HOST:PORT needs an IP address and a port, e.g. inet:127.0.0.1:10025"),
                },
            };
            Ok(Listen::Inet(parsed))
        } else if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                bail!("unix:PATH needs a path");
            }
            Ok(Listen::Unix(PathBuf::from(path)))
        } else {
            bail!("expected inet:HOST:PORT or unix:PATH, got {text:?}")
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Inet(address) => write!(f, "inet:{address}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A request from the sessions to the writer thread.
#[derive(Debug)]
pub enum Request {
    /// A finished session's Observation.
    Record(Box<Observation>),
    /// Classify the sender of a session in progress, counting this session (its provisional
    /// Observation) in its history.
    Classify {
        /// The session so far.
        observation: Box<Observation>,
        /// Where the answer goes; the writer drops it when it cannot answer.
        reply: tokio::sync::oneshot::Sender<Classification>,
    },
    /// Stop after what is queued (sent once the milter has shut down).
    Finish,
}

/// Counters of what the milter could not do; it goes on in every case.
#[derive(Debug, Default)]
pub struct Counters {
    /// Observations dropped because the writer's queue was full or gone.
    pub dropped_observations: AtomicU64,
    /// Classifications not answered in time (header written with `class=unknown`).
    pub classify_timeouts: AtomicU64,
    /// Callback errors answered with `continue`.
    pub errors: AtomicU64,
    /// Sessions closed.
    pub sessions: AtomicU64,
}

/// The sessions' way to the writer thread: a bounded queue that never blocks a session.
#[derive(Debug, Clone)]
pub struct Outlet {
    sender: SyncSender<Request>,
    counters: Arc<Counters>,
}

impl Outlet {
    /// An outlet over the writer's queue.
    pub fn new(sender: SyncSender<Request>, counters: Arc<Counters>) -> Outlet {
        Outlet { sender, counters }
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Queues an Observation; drops and counts it when the queue is full.
    pub fn record(&self, observation: Observation) {
        match self.sender.try_send(Request::Record(Box::new(observation))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.counters.dropped_observations.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    eprintln!("tlsledger: milter: the writer's queue is full; {dropped} observation(s) dropped so far");
                }
            }
        }
    }

    /// The classification of the sender with `observation` counted, or `None` when the writer
    /// does not answer within `deadline`.
    pub async fn classify(&self, observation: Observation, deadline: Duration) -> Option<Classification> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request::Classify { observation: Box::new(observation), reply };
        let answered = match self.sender.try_send(request) {
            Ok(()) => tokio::time::timeout(deadline, answer).await.ok().and_then(Result::ok),
            Err(_) => None,
        };
        if answered.is_none() {
            self.counters.classify_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        answered
    }
}

/// Settings of the milter.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Add the `X-TLSLedger` header (and delete forged copies); off: observe only.
    pub header: bool,
    /// Most MTA connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A milter packet must be read or written within this time, or the connection is closed.
    pub connection_timeout: Duration,
    /// How long end of message waits for the sender's classification.
    pub classify_deadline: Duration,
    /// The `source` of every Observation.
    pub source: Arc<Source>,
}

/// A listener that survives accept errors (out of file descriptors, a connection reset before
/// accept): indymilter stops the whole milter on one, so they are logged and retried after a
/// short pause instead.
struct Resilient<L> {
    inner: L,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<L: Listener> Listener for Resilient<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        loop {
            if let Some(pause) = &mut self.pause {
                match pause.as_mut().poll(cx) {
                    Poll::Ready(()) => self.pause = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.inner.poll_accept(cx) {
                Poll::Ready(Err(error)) => {
                    eprintln!("tlsledger: milter: accept failed ({error}); retrying");
                    self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
                other => return other,
            }
        }
    }
}

/// A TCP listener whose connections have Nagle's algorithm off (`TCP_NODELAY`).
///
/// At end of message the milter writes its modifications and then its reply as separate small
/// packets; with Nagle on, the reply waits for the MTA to acknowledge the first packet, which a
/// delayed ACK holds back for up to 40 ms: measured with `bench/milter-load.sh`, that was 40 ms
/// added to every message and a quarter of the no-op milter's throughput.
struct NoDelay(tokio::net::TcpListener);

impl Listener for NoDelay {
    type Io = tokio::net::TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            // Only latency depends on it: a failure leaves the connection usable.
            let _ = stream.set_nodelay(true);
            stream
        })
    }
}

/// A bound listener (bind before announcing readiness, so port 0 works in tests).
pub enum Bound {
    /// TCP.
    Inet(tokio::net::TcpListener),
    /// UNIX-domain socket, removed again when the milter stops.
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Bound {
    /// Binds `listen`. A UNIX socket left over by an earlier run is replaced; any other file in
    /// the way is an error.
    pub async fn bind(listen: &Listen) -> Result<Bound> {
        match listen {
            Listen::Inet(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                Ok(Bound::Inet(listener))
            }
            Listen::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        bail!("{} exists and is not a socket", path.display());
                    }
                    std::fs::remove_file(path)
                        .with_context(|| format!("cannot remove the old socket {}", path.display()))?;
                }
                let listener =
                    tokio::net::UnixListener::bind(path).with_context(|| format!("cannot listen on {listen}"))?;
                Ok(Bound::Unix(listener, path.clone()))
            }
        }
    }

    /// The address actually bound (`inet:127.0.0.1:PORT` after binding port 0).
    pub fn local(&self) -> String {
        match self {
            Bound::Inet(listener) => {
                listener.local_addr().map_or_else(|_| "inet:?".to_owned(), |a| format!("inet:{a}"))
            }
            Bound::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Runs the milter on `bound` until `shutdown` completes; then waits for the open sessions to
/// close (each still hands over its Observation).
pub async fn run(bound: Bound, settings: Settings, outlet: Outlet, shutdown: impl Future) -> Result<()> {
    let config = indymilter::Config {
        max_connections: settings.max_connections.max(1),
        connection_timeout: settings.connection_timeout,
        ..indymilter::Config::default()
    };
    let callbacks = callbacks::callbacks(Arc::new(settings), outlet);
    match bound {
        Bound::Inet(listener) => {
            let listener = Resilient { inner: NoDelay(listener), pause: None };
            indymilter::run(listener, callbacks, config, shutdown).await?;
        }
        Bound::Unix(listener, path) => {
            let listener = Resilient { inner: listener, pause: None };
            let res = indymilter::run(listener, callbacks, config, shutdown).await;
            let _ = std::fs::remove_file(&path);
            res?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!("inet:127.0.0.1:10025".parse::<Listen>().unwrap(), Listen::Inet("127.0.0.1:10025".parse().unwrap()));
        assert_eq!("inet:[::1]:10025".parse::<Listen>().unwrap(), Listen::Inet("[::1]:10025".parse().unwrap()));
        assert_eq!("inet:::1:10025".parse::<Listen>().unwrap(), Listen::Inet("[::1]:10025".parse().unwrap()));
        assert_eq!("unix:/run/t.sock".parse::<Listen>().unwrap(), Listen::Unix("/run/t.sock".into()));
        for bad in ["inet:localhost:25", "inet:127.0.0.1", "unix:", "127.0.0.1:25", "10025@127.0.0.1"] {
            assert!(bad.parse::<Listen>().is_err(), "{bad}");
        }
        assert_eq!(Listen::Inet("127.0.0.1:9".parse().unwrap()).to_string(), "inet:127.0.0.1:9");
    }
}
