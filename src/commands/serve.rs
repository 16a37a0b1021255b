//! `tlsledger serve`: the read-only HTTP API over the reputation state and the feed files.
//!
//! Wire contract (HTTP/1.1, GET or HEAD only, JSON unless noted):
//! - `GET /healthz` → `ok` (text);
//! - `GET /v1/feed.json` → the canonical feed file written by `tlsledger feed` (404 until one exists);
//! - `GET /v1/endpoints/{ip}` and `GET /v1/domains/{domain}` → the `explain --json` report;
//! - `GET /metrics` → Prometheus text: endpoints by class, flags, state size.
//!
//! It never sits in the mail path: MTAs read the feed files; this is for dashboards and other
//! hosts. It binds 127.0.0.1 by default, answers only peers on the allow-list (loopback by
//! default), optionally requires `Authorization: Bearer <token>` (token read from a file), limits
//! concurrent connections, and times out slow request headers. The state is reloaded when
//! `graph.bin` changes.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::explain::{explain, load_thresholds};
use crate::reputation::classify::classify;
use crate::reputation::indra::{IndraStore, GRAPH_FILE};
use crate::reputation::store::ReputationStore;
use crate::reputation::thresholds::Thresholds;

/// Options of `tlsledger serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port, printed on stderr).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8025")]
    pub listen: SocketAddr,

    /// The reputation state folder written by `tlsledger parse --state DIR`.
    #[arg(long, value_name = "DIR", default_value = "tlsledger-state")]
    pub state: PathBuf,

    /// The folder `tlsledger feed --out` writes to.
    #[arg(long, value_name = "DIR")]
    pub feed_dir: Option<PathBuf>,

    /// Thresholds file (TOML).
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,

    /// Peers allowed to connect, as IP or IP/prefix (repeatable). Default: loopback only.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,

    /// File whose first line is a bearer token every request must carry.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Most connections served at once; more wait.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections: usize,
}

/// A network and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().with_context(|| format!("invalid address in {text:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().with_context(|| format!("invalid prefix in {text:?}"))?,
            None => max,
        };
        if prefix > max {
            bail!("prefix /{prefix} too long in {text:?}");
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// True when `ip` is inside the network (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Shared state of the server.
struct App {
    state_dir: PathBuf,
    feed_dir: Option<PathBuf>,
    thresholds: Thresholds,
    token: Option<String>,
    /// The loaded store and the mtime of the file it came from.
    store: Mutex<Option<(SystemTime, Arc<IndraStore>)>>,
}

impl App {
    /// The store, reloaded when `graph.bin` changed.
    fn store(&self) -> Result<Option<Arc<IndraStore>>> {
        let path = self.state_dir.join(GRAPH_FILE);
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else { return Ok(None) };
        let mut cached = self.store.lock().map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
        if let Some((at, store)) = cached.as_ref() {
            if *at == modified {
                return Ok(Some(Arc::clone(store)));
            }
        }
        let store = Arc::new(IndraStore::open(&self.state_dir)?);
        *cached = Some((modified, Arc::clone(&store)));
        Ok(Some(store))
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        if let Some(token) = &self.token {
            let given = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if given != Some(format!("Bearer {token}").as_str()) {
                return text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            }
        }
        let path = request.uri().path();
        let result = match path {
            "/healthz" => Ok(text(StatusCode::OK, "ok\n")),
            "/v1/feed.json" => self.feed(),
            "/metrics" => self.metrics(),
            _ => match path.strip_prefix("/v1/endpoints/").or_else(|| path.strip_prefix("/v1/domains/")) {
                Some(target) if !target.is_empty() && !target.contains('/') => self.explain(target),
                _ => Ok(text(StatusCode::NOT_FOUND, "not found\n")),
            },
        };
        result.unwrap_or_else(|error| text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error:#}\n")))
    }

    fn feed(&self) -> Result<Response<Full<Bytes>>> {
        let Some(dir) = &self.feed_dir else { return Ok(text(StatusCode::NOT_FOUND, "no --feed-dir\n")) };
        match std::fs::read(dir.join("tlsledger-feed.json")) {
            Ok(body) => Ok(json(StatusCode::OK, body)),
            Err(_) => Ok(text(StatusCode::NOT_FOUND, "no feed yet: run tlsledger feed\n")),
        }
    }

    fn explain(&self, target: &str) -> Result<Response<Full<Bytes>>> {
        let Some(store) = self.store()? else { return Ok(text(StatusCode::NOT_FOUND, "no reputation state\n")) };
        let now = chrono::Utc::now().timestamp();
        let report = explain(store.as_ref(), target, &self.thresholds, now)?;
        let status = if report.endpoints.is_empty() { StatusCode::NOT_FOUND } else { StatusCode::OK };
        Ok(json(status, serde_json::to_vec_pretty(&report)?))
    }

    fn metrics(&self) -> Result<Response<Full<Bytes>>> {
        let mut body = String::from("# HELP tlsledger_endpoints Endpoints in the reputation state by class.\n# TYPE tlsledger_endpoints gauge\n");
        let mut by_class = std::collections::BTreeMap::new();
        let (mut broken, mut downgrade) = (0u64, 0u64);
        if let Some(store) = self.store()? {
            let now = chrono::Utc::now().timestamp();
            store.for_each_endpoint(&mut |key, history| {
                let c = classify(key.direction, &key.ip, history, &self.thresholds, now);
                *by_class.entry(c.class.as_str()).or_insert(0u64) += 1;
                broken += u64::from(c.broken_starttls.is_some());
                downgrade += u64::from(c.downgrade.is_some());
                Ok(())
            })?;
        }
        for (class, n) in &by_class {
            body.push_str(&format!("tlsledger_endpoints{{class=\"{class}\"}} {n}\n"));
        }
        body.push_str("# HELP tlsledger_flagged Endpoints with a flag.\n# TYPE tlsledger_flagged gauge\n");
        body.push_str(&format!("tlsledger_flagged{{flag=\"broken-starttls\"}} {broken}\n"));
        body.push_str(&format!("tlsledger_flagged{{flag=\"downgrade-suspect\"}} {downgrade}\n"));
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response\n")))
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    let allow: Vec<Cidr> = if args.allow.is_empty() {
        vec!["127.0.0.0/8".parse()?, "::1/128".parse()?]
    } else {
        args.allow.iter().map(|a| a.parse()).collect::<Result<_>>()?
    };
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let token = text.lines().next().unwrap_or_default().trim().to_owned();
            if token.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            Some(token)
        }
        None => None,
    };
    let app = Arc::new(App {
        state_dir: args.state.clone(),
        feed_dir: args.feed_dir.clone(),
        thresholds: load_thresholds(args.thresholds.as_deref())?,
        token,
        store: Mutex::new(None),
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!("tlsledger: serving on http://{}", listener.local_addr()?);
        let limit = Arc::new(Semaphore::new(args.max_connections.max(1)));
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            // Acquire a permit before accepting, so at most `max_connections` are served.
            let permit = tokio::select! {
                permit = Arc::clone(&limit).acquire_owned() => permit?,
                _ = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        eprintln!("tlsledger: accept failed: {error}");
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            if !allow.iter().any(|cidr| cidr.contains(peer.ip())) {
                drop(stream);
                continue;
            }
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                serve_http1(stream, move |request| app.respond(request)).await;
                drop(permit);
            });
        }
        eprintln!("tlsledger: stopped serving");
        anyhow::Ok(())
    })
}

/// Serves one HTTP/1.1 connection with `respond` (10 s to send the request headers).
pub(crate) async fn serve_http1(
    stream: tokio::net::TcpStream,
    respond: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
) {
    let respond = Arc::new(respond);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .await;
}

/// Resolves at SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let loopback: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(loopback.contains("127.1.2.3".parse().unwrap()));
        assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!("192.0.2.1/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.9".parse().unwrap()));
    }
}
