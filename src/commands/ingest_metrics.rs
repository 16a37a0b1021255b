//! The ingest daemon's observability endpoint: Prometheus `/metrics` and `/healthz` over HTTP
//! (hyper), on a loopback address by default, for the peers of an allow-list only.
//!
//! The core thread publishes a [`Snapshot`] of its counters at every tick; the HTTP side only
//! renders the latest snapshot, so a scrape never blocks ingestion. `/healthz` answers 200 while
//! the core has published within [`STALE_AFTER`], else 503 (a stuck core, e.g. a sink that hangs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::sources::syslog::{allowed, SyslogCounters};

/// `/healthz` fails when the core has not published for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Most scrapes served at once.
const MAX_CONNECTIONS: usize = 16;

/// What the core publishes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Metric name (without prefix) → (help text, value); names ending in `_total` are counters,
    /// the others gauges.
    pub counters: BTreeMap<&'static str, (&'static str, u64)>,
    /// Per followed file: path → bytes not read yet.
    pub file_lag: BTreeMap<String, u64>,
    /// When it was taken.
    pub at: Option<Instant>,
}

/// The shared state between the core and the HTTP side.
#[derive(Debug, Default, Clone)]
pub struct Published {
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Published {
    /// Replaces the snapshot.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.at = Some(Instant::now());
        if let Ok(mut current) = self.snapshot.lock() {
            *current = snapshot;
        }
    }

    fn render(&self, syslog: &SyslogCounters) -> String {
        let snapshot = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
        let mut text = String::new();
        for (name, (help, value)) in &snapshot.counters {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(
                text,
                "# HELP tlsledger_{name} {help}\n# TYPE tlsledger_{name} {kind}\ntlsledger_{name} {value}"
            );
        }
        let _ = writeln!(
            text,
            "# HELP tlsledger_file_lag_bytes Bytes of a followed file not read yet.\n# TYPE tlsledger_file_lag_bytes gauge"
        );
        for (path, lag) in &snapshot.file_lag {
            let _ = writeln!(text, "tlsledger_file_lag_bytes{{path=\"{}\"}} {lag}", escape(path));
        }
        let peers = syslog.lock().map(|p| p.clone()).unwrap_or_default();
        let families: [(&str, &str, PeerValue); 6] = [
            ("syslog_messages_total", "Syslog messages accepted, per sender.", |c| c.messages),
            ("syslog_oversized_total", "Syslog messages longer than the limit, skipped.", |c| c.oversized),
            ("syslog_dropped_total", "Syslog datagrams dropped because the pipeline was full.", |c| c.dropped),
            ("syslog_refused_total", "Syslog datagrams or connections refused by the allow-list.", |c| c.refused),
            ("syslog_over_limit_total", "Syslog TCP connections refused: too many open.", |c| c.over_limit),
            ("syslog_framing_errors_total", "Syslog TCP connections closed on a framing error.", |c| c.framing_errors),
        ];
        for (name, help, value) in families {
            let _ = writeln!(text, "# HELP tlsledger_{name} {help}\n# TYPE tlsledger_{name} counter");
            for (peer, counters) in &peers {
                let _ = writeln!(text, "tlsledger_{name}{{peer=\"{peer}\"}} {}", value(counters));
            }
        }
        text
    }

    fn healthy(&self) -> bool {
        self.snapshot.lock().ok().and_then(|s| s.at).is_some_and(|at| at.elapsed() < STALE_AFTER)
    }
}

/// Reads one counter of a sender.
type PeerValue = fn(&crate::sources::syslog::PeerCounters) -> u64;

/// Label values escape backslash, quote and newline (Prometheus text format).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Binds `addr` and serves `/metrics` and `/healthz` on the current runtime.
pub async fn spawn(addr: SocketAddr, allow: Vec<IpNet>, published: Published, syslog: SyslogCounters) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            if !allowed(&allow, peer.ip()) {
                continue;
            }
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else { continue };
            let (published, syslog) = (published.clone(), syslog.clone());
            tokio::spawn(async move {
                crate::commands::serve::serve_http1(stream, move |request| {
                    match request.uri().path() {
                        "/metrics" => Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(published.render(&syslog)))),
                        "/healthz" if published.healthy() => Response::builder().body(Full::new(Bytes::from("ok\n"))),
                        "/healthz" => Response::builder()
                            .status(StatusCode::SERVICE_UNAVAILABLE)
                            .body(Full::new(Bytes::from("the ingest core has not reported recently\n"))),
                        _ => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from("not found\n"))),
                    }
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
                })
                .await;
                drop(permit);
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_and_health() {
        let published = Published::default();
        assert!(!published.healthy(), "nothing published yet");
        let mut snapshot = Snapshot::default();
        snapshot.counters.insert("lines_total", ("Lines read.", 42));
        snapshot.file_lag.insert("/var/log/ma\"il.log".to_owned(), 7);
        published.publish(snapshot);
        assert!(published.healthy());
        let syslog = SyslogCounters::default();
        syslog.lock().unwrap().entry("127.0.0.1".parse().unwrap()).or_default().messages = 3;
        let text = published.render(&syslog);
        assert!(text.contains("# TYPE tlsledger_lines_total counter\ntlsledger_lines_total 42\n"), "{text}");
        assert!(text.contains("tlsledger_file_lag_bytes{path=\"/var/log/ma\\\"il.log\"} 7\n"), "{text}");
        assert!(text.contains("tlsledger_syslog_messages_total{peer=\"127.0.0.1\"} 3\n"), "{text}");
    }
}
