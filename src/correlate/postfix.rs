//! Postfix join rules: `smtp[pid]` connections (outbound) and `smtpd[pid]` sessions (inbound).
//!
//! Outbound (research/FORMATS.md §2.4): the TLS summary line has no queue id and belongs to the
//! delivery lines that follow from the same `smtp[pid]` for the same `host[addr]:port`. A
//! connection ends when the pid names another peer, starts a new TLS or handshake, logs a
//! delivery of a new message without `conn_use` ≥ 2 (a fresh connection), or goes idle. A TLS
//! policy failure in a delivery's reason ends it for everything but the other recipients of that
//! message (Postfix's `smtp_bulk_fail` logs one line per recipient, in one burst); at a server
//! that is not the last MX the failure is one `QID: <reason>` line instead, and the next MX is
//! tried. Certificate-verification lines can come before or after the summary, so they join by
//! peer, not by adjacency. After a failed handshake at level `may` Postfix retries in plaintext:
//! the failed attempt and the plaintext delivery (sent, or answered by the server) become two
//! observations.
//!
//! Inbound: one observation per `connect from` … `disconnect from` window of an `smtpd[pid]`.
//! The disconnect counters (Postfix ≥ 3.0) prove TLS (`starttls=1`), a failed STARTTLS
//! (`starttls=0/1`) or, once the client began a mail transaction (`mail=`), plaintext, even
//! without TLS logging; not for wrapper-mode (implicit TLS) instances, which have no STARTTLS.
//!
//! `tlsproxy` repeats handshakes that `smtp`/`smtpd` also log: its lines are counted, never
//! turned into observations. postscreen never delivers mail and is ignored.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parsers::postfix::{
    Counters as CommandCounters, Daemon, Delivery, Event, PeerCertificate, Relay, Status, TlsConnection, TrustClass,
};
use parsers::Peer;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{Config, Counters, LineMeta, Names, ProcessKey, SourceId, TlsLogging};
use crate::observation::{
    event_id, event_id_at, Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, Source, TlsInfo, Trust,
};

/// Most `TLS library problem` reasons kept for one handshake.
const MAX_REASONS: usize = 8;
/// How far a `TLS library problem` line may be from the `SSL_connect error` it explains.
const PENDING_REASON_MICROS: i64 = 5_000_000;
/// How far apart the lines of one `smtp_bulk_fail` burst (one per recipient) may be.
const BULK_FAIL_MICROS: i64 = 2_000_000;
/// Most queue ids and domains kept for one connection.
const MAX_ITEMS: usize = 64;

/// Everything a handler needs besides the per-process state.
pub struct Ctx<'c> {
    pub(super) config: &'c Config,
    pub(super) sources: &'c [Arc<Source>],
    /// [`crate::observation::event_id_prefix`] of each source.
    pub(super) id_prefixes: &'c [u64],
    pub(super) names: &'c Names,
    pub(super) counters: &'c mut Counters,
    pub(super) meta: LineMeta,
    pub(super) out: &'c mut Vec<Observation>,
}

impl Ctx<'_> {
    /// The source of a connection first seen at `offset` of `source`, and its event id: the
    /// one rule every MTA's observations are identified by.
    pub(super) fn source_and_event_id(&self, source: Option<SourceId>, offset: u64) -> (Arc<Source>, String) {
        let found = source.and_then(|id| self.sources.get(id.0 as usize)).cloned().unwrap_or_else(|| {
            Arc::new(Source { kind: "unknown".to_owned(), name: String::new(), trust: "none".to_owned() })
        });
        let id = match source.and_then(|id| self.id_prefixes.get(id.0 as usize)) {
            Some(prefix) => event_id_at(*prefix, offset),
            None => event_id(&found.name, offset),
        };
        (found, id)
    }

    /// Whether a line's silence about TLS means plaintext: with `--tls-logging auto`, only once
    /// `seen` (the MTA's own evidence that it logs TLS for this process and side). The one rule
    /// behind every MTA's `plaintext` claims.
    pub(super) fn tls_logged(&self, seen: bool) -> bool {
        match self.config.tls_logging {
            TlsLogging::On => true,
            TlsLogging::Off => false,
            TlsLogging::Auto => seen,
        }
    }
}

/// Open connections and sessions of every Postfix process.
#[derive(Debug, Default)]
pub struct State {
    clients: FxHashMap<ProcessKey, Client>,
    servers: FxHashMap<ProcessKey, Session>,
    /// Instances (interned reporter+instance) that logged a TLS summary, per side.
    tls_logging_seen: FxHashSet<(u32, bool)>,
    /// Processes whose connection a TLS failure ended, for the sweep to emit once the burst is
    /// over (a process may since have moved on: the sweep checks).
    ended: Vec<ProcessKey>,
}

/// Per `smtp[pid]` state.
#[derive(Debug, Default)]
struct Client {
    conn: Option<Box<Connection>>,
    /// `discarding EHLO keywords: STARTTLS` was logged and no delivery followed yet.
    pending_policy: Option<&'static str>,
    /// `TLS library problem` lines logged before their connection was known.
    pending_reasons: Vec<String>,
    /// Offset of the first line behind `pending_policy` / `pending_reasons`, so a reader that
    /// restarts at [`State::low_water`] reads it again.
    pending_offset: Option<u64>,
    /// When the last of `pending_reasons` was logged: OpenSSL's lines and Postfix's
    /// `SSL_connect error` come together (within [`PENDING_REASON_MICROS`]), so older ones
    /// belong to no later handshake.
    pending_reasons_micros: i64,
    last_micros: i64,
}

/// What is known so far about one connection (either direction).
#[derive(Debug, Default)]
struct Connection {
    peer: PeerInfo,
    /// The address as logged, for joining (may not be an IP), when it is not `peer.ip` itself
    /// (an IPv4 address nearly always is: one allocation less per connection).
    addr: Option<String>,
    first_micros: i64,
    last_micros: i64,
    source: Option<SourceId>,
    offset: u64,
    /// The earliest line this connection's state depends on (its first line, or an earlier
    /// pending line of its process): where a restarted reader must start to rebuild it.
    needs_from: u64,
    lines: u32,
    tls: Option<TlsInfo>,
    /// Handshake failure detail (`SSL_connect error … : -1`, `lost connection after STARTTLS`).
    handshake: Option<String>,
    reasons: Vec<String>,
    /// `certificate verification failed` reasons.
    verify_errors: Vec<String>,
    /// The peer certificate line (TLS log level 2), until the TLS summary takes it.
    cert: Option<Cert>,
    /// `Server certificate not verified/trusted`: the policy rejected the certificate.
    rejected: Option<String>,
    /// `TLS is required, but …`: (kind, reason).
    required_missing: Option<(&'static str, String)>,
    /// Inbound `Must issue a STARTTLS command first`.
    starttls_demanded: Option<String>,
    /// Inbound `abort: TLS from …` (client certificate required and missing/untrusted).
    tls_abort: Option<String>,
    /// Inbound `Refusing STARTTLS request`.
    refused: Option<String>,
    queue_ids: Vec<String>,
    domains: Vec<String>,
    deliveries: u32,
    delivered: Option<bool>,
    /// The last non-success reason of a delivery (for failures without a TLS line).
    no_tls_reason: Option<String>,
    tls_feature: Option<String>,
    conn_use: Option<u32>,
    local_policy: Option<&'static str>,
    after_tls_failure: bool,
    replayed: bool,
    /// A TLS policy failure in a delivery's reason ended the connection: only the other
    /// recipients of that message (one line each, same reason, same burst) still join it.
    ended: bool,
    counters: Option<CommandCounters>,
    /// Inbound: the `connect from` line was seen, so the whole session is in the log.
    saw_start: bool,
}

/// Per `smtpd[pid]` state.
#[derive(Debug, Default)]
struct Session {
    conn: Box<Connection>,
    pending_reasons: Vec<String>,
}

impl Session {
    /// A session around `conn` (not `..Session::default()`, which would allocate a default
    /// connection only to drop it).
    fn new(conn: Box<Connection>) -> Self {
        Session { conn, pending_reasons: Vec::new() }
    }
}

impl State {
    /// The instances (interned names) known to log TLS summaries, and on which side (`true`:
    /// server, inbound): the evidence [`TlsLogging::Auto`] decides by.
    pub fn tls_logging_seen(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.tls_logging_seen.iter().copied()
    }

    /// Restores evidence from [`State::tls_logging_seen`] of an earlier run.
    pub fn restore_tls_logging_seen(&mut self, name: u32, inbound: bool) {
        super::note_evidence(&mut self.tls_logging_seen, (name, inbound));
    }

    /// Connections and sessions currently open.
    pub fn open(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Adds the interned names this state refers to.
    pub fn names_in_use(&self, names: &mut FxHashSet<u32>) {
        names.extend(self.clients.keys().chain(self.servers.keys()).map(|key| key.name));
        names.extend(self.tls_logging_seen.iter().map(|(name, _)| *name));
    }

    /// The offset of the earliest line of `source` that an open connection still needs: a
    /// reader that restarts from here loses nothing that is still open.
    pub fn low_water(&self, source: SourceId) -> Option<u64> {
        self.open_processes(source).into_iter().map(|(_, offset)| offset).min()
    }

    /// The processes with an open connection from `source`, with the offset of its first line.
    ///
    /// A client process counts from its earliest pending line (a `TLS library problem` or a
    /// discarded EHLO keyword logged before the connection it belongs to); pending lines belong
    /// to the source of the process's connection, or to `source` when it has none.
    pub fn open_processes(&self, source: SourceId) -> Vec<(ProcessKey, u64)> {
        let clients = self.clients.iter().filter_map(|(key, client)| {
            let ours = client.conn.as_deref().is_none_or(|conn| conn.source == Some(source));
            let conn = client.conn.as_deref().filter(|conn| conn.source == Some(source)).map(|conn| conn.needs_from);
            let pending = client.pending_offset.filter(|_| ours);
            let offset = match (conn, pending) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }?;
            Some((*key, offset))
        });
        let servers = self
            .servers
            .iter()
            .filter(|(_, session)| session.conn.source == Some(source))
            .map(|(key, session)| (*key, session.conn.needs_from));
        clients.chain(servers).collect()
    }

    /// Handles one event of daemon `service` from `process`.
    pub fn push(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, daemon: Daemon, event: &Event<'_>) {
        match daemon {
            Daemon::Smtp | Daemon::Lmtp => self.client_event(ctx, process, event),
            Daemon::Smtpd => self.server_event(ctx, process, event),
            Daemon::Error | Daemon::Discard => self.error_event(ctx, process, event),
            Daemon::Local => match event {
                Event::Delivery(_) => ctx.counters.local_deliveries += 1,
                _ => ctx.counters.ignored += 1,
            },
            Daemon::Tlsproxy => match event {
                Event::Ignored => ctx.counters.ignored += 1,
                _ => ctx.counters.tlsproxy_duplicates += 1,
            },
            Daemon::Postscreen | Daemon::Other => ctx.counters.ignored += 1,
        }
    }

    /// Emits every open connection.
    pub fn flush_all(&mut self, ctx: &mut Ctx<'_>) {
        let mut clients: Vec<_> = self.clients.drain().collect();
        clients.sort_by_key(|(_, client)| client.conn.as_ref().map_or(i64::MAX, |c| c.first_micros));
        for (process, mut client) in clients {
            if let Some(conn) = client.conn.take() {
                self.emit(ctx, process, Direction::Outbound, conn);
            }
        }
        let mut sessions: Vec<_> = self.servers.drain().collect();
        sessions.sort_by_key(|(_, session)| session.conn.first_micros);
        for (process, session) in sessions {
            self.emit(ctx, process, Direction::Inbound, session.conn);
        }
    }

    /// Emits connections idle since before `cutoff_micros`, and the oldest ones while more than
    /// `max_open` are open.
    pub fn sweep(&mut self, ctx: &mut Ctx<'_>, cutoff_micros: i64) {
        // Emitted in the order the connections began (then by their first line), not in the
        // hash table's order, so that the output does not depend on how names were interned.
        let mut idle_clients: Vec<(i64, u64, ProcessKey)> = self
            .clients
            .iter()
            .filter(|(_, c)| c.last_micros < cutoff_micros)
            .map(|(k, c)| {
                (
                    c.conn.as_ref().map_or(c.last_micros, |c| c.first_micros),
                    c.conn.as_ref().map_or(0, |c| c.needs_from),
                    *k,
                )
            })
            .collect();
        idle_clients.sort_unstable_by_key(|(first, from, k)| (*first, *from, k.name, k.pid));
        for (_, _, process) in idle_clients {
            if let Some(mut client) = self.clients.remove(&process) {
                if let Some(conn) = client.conn.take() {
                    ctx.counters.expired += 1;
                    self.emit(ctx, process, Direction::Outbound, conn);
                }
            }
        }
        // A connection a TLS failure ended takes no line once its burst is over: out with it
        // now rather than at the idle timeout (the process itself stays, with what it has pending).
        let burst_over = ctx.meta.ts_micros.saturating_sub(BULK_FAIL_MICROS);
        let mut ended = Vec::new();
        for process in std::mem::take(&mut self.ended) {
            match self.clients.get(&process).and_then(|c| c.conn.as_ref()) {
                Some(conn) if conn.ended && conn.last_micros < burst_over => {
                    ended.push((conn.first_micros, conn.needs_from, process));
                }
                Some(conn) if conn.ended => self.ended.push(process),
                _ => {}
            }
        }
        ended.sort_unstable_by_key(|(first, from, k)| (*first, *from, k.name, k.pid));
        ended.dedup_by_key(|(_, _, k)| *k);
        for (_, _, process) in ended {
            if let Some(conn) = self.clients.get_mut(&process).and_then(|client| client.conn.take()) {
                self.emit(ctx, process, Direction::Outbound, conn);
            }
        }
        let mut idle_sessions: Vec<(i64, u64, ProcessKey)> = self
            .servers
            .iter()
            .filter(|(_, s)| s.conn.last_micros < cutoff_micros)
            .map(|(k, s)| (s.conn.first_micros, s.conn.needs_from, *k))
            .collect();
        idle_sessions.sort_unstable_by_key(|(first, from, k)| (*first, *from, k.name, k.pid));
        for (_, _, process) in idle_sessions {
            if let Some(session) = self.servers.remove(&process) {
                ctx.counters.expired += 1;
                self.emit(ctx, process, Direction::Inbound, session.conn);
            }
        }
        let max_open = ctx.config.max_open;
        if self.open() > max_open {
            // Evict a tenth at a time so a full table does not cost a scan per line.
            let target = max_open - max_open / 10;
            let mut by_age: Vec<(i64, bool, ProcessKey)> = self
                .clients
                .iter()
                .map(|(k, c)| (c.last_micros, false, *k))
                .chain(self.servers.iter().map(|(k, s)| (s.conn.last_micros, true, *k)))
                .collect();
            by_age.sort_unstable_by_key(|(last, _, _)| *last);
            let n_evict = by_age.len().saturating_sub(target);
            for (_, inbound, process) in by_age.into_iter().take(n_evict) {
                ctx.counters.evicted += 1;
                if inbound {
                    if let Some(session) = self.servers.remove(&process) {
                        self.emit(ctx, process, Direction::Inbound, session.conn);
                    }
                } else if let Some(conn) = self.clients.remove(&process).and_then(|mut c| c.conn.take()) {
                    self.emit(ctx, process, Direction::Outbound, conn);
                }
            }
        }
    }

    fn client_event(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        let now = ctx.meta.ts_micros;
        match event {
            Event::TlsConnection(tls) => {
                super::note_evidence(&mut self.tls_logging_seen, (process.name, false));
                let conn = self.client_conn_for(ctx, process, &tls.peer, |c| c.tls.is_none() && c.deliveries == 0);
                let mut info = tls_info(tls, std::mem::take(&mut conn.verify_errors));
                info.cert = conn.cert.take();
                conn.tls = Some(info);
            }
            Event::PeerCertificate(cert) => {
                let conn = match &cert.peer {
                    Some(peer) => {
                        Some(self.client_conn_for(ctx, process, peer, |c| c.tls.is_none() && c.deliveries == 0))
                    }
                    // The Postfix 2.x form names no peer: the connection the process has open.
                    None => self.clients.get_mut(&process).and_then(|c| c.conn.as_deref_mut()),
                };
                match conn {
                    Some(conn) => set_cert(conn, cert),
                    None => ctx.counters.orphans += 1,
                }
            }
            Event::HandshakeError { peer, detail, .. } => {
                let client = self.clients.entry(process).or_default();
                let mut reasons = std::mem::take(&mut client.pending_reasons);
                if now - client.pending_reasons_micros > PENDING_REASON_MICROS {
                    // Left over from an earlier connection (a TLS close after a delivery).
                    reasons.clear();
                }
                let pending_offset = client.pending_offset;
                if client.pending_policy.is_none() {
                    client.pending_offset = None;
                }
                let conn = self.client_conn_for(ctx, process, peer, |c| {
                    c.tls.is_none() && c.handshake.is_none() && c.deliveries == 0
                });
                conn.handshake = Some(format!("SSL_connect error: {detail}"));
                if !reasons.is_empty() {
                    conn.needs_from = conn.needs_from.min(pending_offset.unwrap_or(conn.needs_from));
                }
                conn.reasons.extend(reasons);
            }
            Event::TlsLibraryProblem { reason, .. } => {
                let client = self.clients.entry(process).or_default();
                client.last_micros = now;
                match client.conn.as_mut() {
                    // OpenSSL's reasons follow Postfix's `SSL_connect error` line at once.
                    Some(conn)
                        if conn.handshake.is_some()
                            && conn.deliveries == 0
                            && now - conn.last_micros <= PENDING_REASON_MICROS =>
                    {
                        touch(conn, now);
                        push_bounded(&mut conn.reasons, reason, MAX_REASONS);
                    }
                    _ => {
                        client.pending_offset.get_or_insert(ctx.meta.offset);
                        client.pending_reasons_micros = now;
                        push_bounded(&mut client.pending_reasons, reason, MAX_REASONS)
                    }
                }
            }
            Event::CertVerifyFailed { peer, reason } => {
                let conn = self.client_conn_for(ctx, process, peer, |c| c.deliveries == 0);
                match conn.tls.as_mut() {
                    Some(tls) => push_bounded(&mut tls.verify_errors, reason, MAX_REASONS),
                    None => push_bounded(&mut conn.verify_errors, reason, MAX_REASONS),
                }
            }
            Event::UntrustedSessionReuse { peer } => {
                let conn = self.client_conn_for(ctx, process, peer, |c| c.deliveries == 0);
                push_bounded(&mut conn.verify_errors, "re-using session with untrusted peer credential", MAX_REASONS);
            }
            Event::CertificateRejected { queue_id, reason } => {
                self.host_skipped(ctx, process, queue_id, TlsFailureInReason::Rejected, reason);
            }
            Event::HostSkipped { queue_id, reason } => match tls_failure_in_reason(reason) {
                Some((kind, reason)) => self.host_skipped(ctx, process, queue_id, kind, reason),
                None => ctx.counters.ignored += 1,
            },
            Event::DiscardedEhloKeywords { starttls: true, .. } | Event::HostOfferedStarttls { .. } => {
                let policy = if matches!(event, Event::HostOfferedStarttls { .. }) {
                    "tls-level-none"
                } else {
                    "starttls-discarded"
                };
                let client = self.clients.entry(process).or_default();
                client.last_micros = now;
                if let Some(conn) = client.conn.take() {
                    self.emit(ctx, process, Direction::Outbound, conn);
                }
                let client = self.clients.entry(process).or_default();
                client.pending_policy = Some(policy);
                client.pending_offset.get_or_insert(ctx.meta.offset);
            }
            Event::Delivery(delivery) => self.client_delivery(ctx, process, delivery),
            _ => ctx.counters.ignored += 1,
        }
    }

    /// `QID: <reason>`: Postfix gave up on the server it just tried (not the last MX) for a TLS
    /// reason, and tries the next one: the connection to it ends with that verdict.
    fn host_skipped(
        &mut self,
        ctx: &mut Ctx<'_>,
        process: ProcessKey,
        queue_id: &str,
        kind: TlsFailureInReason,
        reason: &str,
    ) {
        let now = ctx.meta.ts_micros;
        let conn = match kind {
            // `TLS is required, but was not offered by host h[a]` (no TLS line came before it)
            // and `… but host h[a] refused to start TLS: …` name the server.
            TlsFailureInReason::Required(_) => match peer_in_reason(reason) {
                Some(peer) => {
                    self.client_conn_for(ctx, process, &peer, |c| {
                        c.tls.is_none() && c.handshake.is_none() && c.deliveries == 0 && !c.ended
                    });
                    self.clients.get_mut(&process).and_then(|client| client.conn.take())
                }
                None => None,
            },
            // The connection just logged: its TLS summary, or its `SSL_connect error`.
            TlsFailureInReason::Rejected | TlsFailureInReason::Handshake => {
                let client = self.clients.entry(process).or_default();
                client.last_micros = now;
                let fits = client.conn.as_ref().is_some_and(|c| {
                    c.deliveries == 0
                        && !c.ended
                        && match kind {
                            TlsFailureInReason::Handshake => c.handshake.is_some() && c.tls.is_none(),
                            _ => true,
                        }
                });
                if !fits {
                    if let Some(old) = client.conn.take() {
                        emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, old);
                    }
                }
                let client = self.clients.entry(process).or_default();
                let mut conn = client.conn.take();
                if let Some(conn) = conn.as_mut() {
                    touch(conn, now);
                }
                conn
            }
        };
        let Some(mut conn) = conn else {
            ctx.counters.orphans += 1;
            return;
        };
        push_bounded(&mut conn.queue_ids, queue_id, MAX_ITEMS);
        conn.delivered.get_or_insert(false);
        match kind {
            TlsFailureInReason::Rejected => conn.rejected = Some(reason.to_owned()),
            TlsFailureInReason::Required(kind) => conn.required_missing = Some((kind, reason.to_owned())),
            TlsFailureInReason::Handshake => {
                conn.handshake.get_or_insert_with(|| reason.to_owned());
            }
        }
        self.emit(ctx, process, Direction::Outbound, conn);
    }

    /// The open connection of `process` to `peer` if `joinable` says the new line belongs to
    /// it; otherwise the open one is emitted and a new one started.
    fn client_conn_for(
        &mut self,
        ctx: &mut Ctx<'_>,
        process: ProcessKey,
        peer: &Peer<'_>,
        joinable: impl Fn(&Connection) -> bool,
    ) -> &mut Connection {
        let now = ctx.meta.ts_micros;
        let client = self.clients.entry(process).or_default();
        client.last_micros = now;
        let keep = client.conn.as_ref().is_some_and(|c| same_peer(c, peer) && joinable(c));
        if keep {
            let conn = client.conn.get_or_insert_with(|| Connection::new(peer, &ctx.meta));
            touch(conn, now);
            return conn;
        }
        if let Some(old) = client.conn.take() {
            emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, old);
        }
        client.conn.insert(Connection::new(peer, &ctx.meta))
    }

    fn client_delivery(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, delivery: &Delivery<'_>) {
        let now = ctx.meta.ts_micros;
        let peer = match delivery.relay {
            Relay::Peer(peer) if !peer.is_unix_socket() => peer,
            Relay::None => return self.error_event(ctx, process, &Event::Delivery(*delivery)),
            _ => {
                ctx.counters.local_deliveries += 1;
                return;
            }
        };
        let seen = &self.tls_logging_seen;
        let client = self.clients.entry(process).or_default();
        client.last_micros = now;
        let pending_policy = client.pending_policy.take();
        let pending_offset = client.pending_offset;
        if pending_policy.is_some() && client.pending_reasons.is_empty() {
            client.pending_offset = None;
        }
        let mut fallback = false;
        let join = match client.conn.as_ref() {
            Some(conn) if same_peer(conn, &peer) => {
                let new_message = !conn.queue_ids.iter().any(|q| q == delivery.queue_id);
                let fresh_connection = conn.deliveries > 0 && new_message && delivery.conn_use.unwrap_or(1) <= 1;
                if conn.ended {
                    // Another recipient of the message the TLS failure ended the connection for.
                    !new_message
                        && delivery.status != Status::Sent
                        && conn.no_tls_reason.as_deref() == Some(delivery.reason)
                        && now - conn.last_micros <= BULK_FAIL_MICROS
                } else if conn.handshake.is_some()
                    && conn.tls.is_none()
                    && conn.deliveries == 0
                    && (delivery.status == Status::Sent || delivery.reason.contains(" said: "))
                {
                    // Level `may` retried in plaintext after the failed handshake: the message
                    // was sent, or the server answered a command (only the retry got that far).
                    fallback = true;
                    false
                } else {
                    !fresh_connection && pending_policy.is_none()
                }
            }
            _ => false,
        };
        let conn = if join {
            let conn = client.conn.get_or_insert_with(|| Connection::new(&peer, &ctx.meta));
            touch(conn, now);
            conn
        } else {
            // A plaintext retry takes its `after_tls_failure` from the failed connection: a
            // restarted reader must see that one again to rebuild it.
            let mut inherited_from = None;
            if let Some(mut old) = client.conn.take() {
                if fallback {
                    old.delivered.get_or_insert(false);
                    inherited_from = Some(old.needs_from);
                }
                emit(seen, ctx, process, Direction::Outbound, old);
            }
            let mut conn = Connection::new(&peer, &ctx.meta);
            conn.after_tls_failure = fallback;
            if let Some(from) = inherited_from {
                conn.needs_from = conn.needs_from.min(from);
            }
            if pending_policy.is_some() {
                conn.needs_from = conn.needs_from.min(pending_offset.unwrap_or(conn.needs_from));
                // The `discarding EHLO keywords` / `Host offered STARTTLS` line is one of its lines.
                conn.lines += 1;
            }
            conn.local_policy = pending_policy;
            client.conn.insert(conn)
        };
        add_delivery(conn, delivery);
        if let Some((kind, reason)) = tls_failure_in_reason(delivery.reason) {
            match kind {
                TlsFailureInReason::Handshake => {
                    conn.handshake.get_or_insert_with(|| reason.to_owned());
                }
                TlsFailureInReason::Rejected => conn.rejected = Some(reason.to_owned()),
                TlsFailureInReason::Required(kind) => conn.required_missing = Some((kind, reason.to_owned())),
            }
            // A TLS policy failure ends the connection; Postfix logs one line per recipient
            // (`smtp_bulk_fail`), and the others join it (it is emitted by the process's next
            // line, or by the first sweep after the burst: at most 10 s of log time later).
            if !conn.ended {
                conn.ended = true;
                self.ended.push(process);
            }
        }
    }

    /// `postfix/error` (and `relay=none` lines): no connection was made; only a repeated TLS
    /// verdict (`delivery temporarily suspended: TLS is required, but was not offered by host …`)
    /// is worth an observation.
    fn error_event(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        let Event::Delivery(delivery) = event else {
            ctx.counters.ignored += 1;
            return;
        };
        let Some((TlsFailureInReason::Required(kind), reason)) = tls_failure_in_reason(delivery.reason) else {
            ctx.counters.local_deliveries += 1;
            return;
        };
        let Some(peer) = peer_in_reason(reason) else {
            ctx.counters.orphans += 1;
            return;
        };
        let mut conn = Connection::new(&peer, &ctx.meta);
        conn.replayed = true;
        add_delivery(&mut conn, delivery);
        conn.required_missing = Some((kind, reason.to_owned()));
        self.emit(ctx, process, Direction::Outbound, conn);
    }

    fn server_event(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        let now = ctx.meta.ts_micros;
        match event {
            Event::Connect { peer } => {
                if let Some(old) = self.servers.remove(&process) {
                    self.emit(ctx, process, Direction::Inbound, old.conn);
                }
                let mut conn = Connection::new(peer, &ctx.meta);
                conn.saw_start = true;
                self.servers.insert(process, Session::new(conn));
            }
            Event::Disconnect { peer, counters } => {
                let mut session = self.take_session(ctx, process, peer);
                session.conn.counters = Some(*counters);
                self.emit(ctx, process, Direction::Inbound, session.conn);
            }
            Event::TlsConnection(tls) => {
                super::note_evidence(&mut self.tls_logging_seen, (process.name, true));
                let session = self.session_for(ctx, process, &tls.peer);
                // `client certificate verification failed …` comes before the summary.
                let mut info = tls_info(tls, std::mem::take(&mut session.conn.verify_errors));
                info.cert = session.conn.cert.take();
                session.conn.tls = Some(info);
            }
            Event::PeerCertificate(cert) => match &cert.peer {
                Some(peer) => set_cert(&mut self.session_for(ctx, process, peer).conn, cert),
                None => match self.servers.get_mut(&process) {
                    Some(session) => set_cert(&mut session.conn, cert),
                    None => ctx.counters.orphans += 1,
                },
            },
            Event::HandshakeError { peer, detail, .. } => {
                let session = self.session_for(ctx, process, peer);
                session.conn.handshake = Some(format!("SSL_accept error: {detail}"));
                let reasons = std::mem::take(&mut session.pending_reasons);
                session.conn.reasons.extend(reasons);
            }
            Event::TlsLibraryProblem { reason, .. } => match self.servers.get_mut(&process) {
                Some(session) => {
                    touch(&mut session.conn, now);
                    if session.conn.handshake.is_some() {
                        push_bounded(&mut session.conn.reasons, reason, MAX_REASONS);
                    } else {
                        push_bounded(&mut session.pending_reasons, reason, MAX_REASONS);
                    }
                }
                None => ctx.counters.orphans += 1,
            },
            Event::LostConnection { what, after, peer } => {
                let session = self.session_for(ctx, process, peer);
                let on_tls_start = *after == "STARTTLS" || (*after == "CONNECT" && session.conn.handshake.is_some());
                if on_tls_start && session.conn.tls.is_none() && session.conn.handshake.is_none() {
                    session.conn.handshake = Some(format!("{what} after {after}"));
                    let reasons = std::mem::take(&mut session.pending_reasons);
                    session.conn.reasons.extend(reasons);
                }
            }
            Event::Client { queue_id, peer } => {
                let session = self.session_for(ctx, process, peer);
                push_bounded(&mut session.conn.queue_ids, queue_id, MAX_ITEMS);
            }
            Event::Reject { peer, reason, starttls_required: true } => {
                let session = self.session_for(ctx, process, peer);
                session.conn.starttls_demanded.get_or_insert_with(|| (*reason).to_owned());
            }
            Event::TlsAbort { peer, reason } => {
                let session = self.session_for(ctx, process, peer);
                session.conn.tls_abort = Some((*reason).to_owned());
            }
            Event::StarttlsRefused { peer, reason } => {
                let session = self.session_for(ctx, process, peer);
                session.conn.refused = Some((*reason).to_owned());
            }
            Event::CertVerifyFailed { peer, reason } => {
                let conn = &mut self.session_for(ctx, process, peer).conn;
                match conn.tls.as_mut() {
                    Some(tls) => push_bounded(&mut tls.verify_errors, reason, MAX_REASONS),
                    None => push_bounded(&mut conn.verify_errors, reason, MAX_REASONS),
                }
            }
            _ => ctx.counters.ignored += 1,
        }
    }

    /// The open session of `process`, or a new one when the log started mid-session or the
    /// line names another client (the `disconnect` was lost).
    fn session_for(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, peer: &Peer<'_>) -> &mut Session {
        let now = ctx.meta.ts_micros;
        let matches = self.servers.get(&process).is_some_and(|s| same_peer(&s.conn, peer));
        if !matches {
            if let Some(old) = self.servers.remove(&process) {
                self.emit(ctx, process, Direction::Inbound, old.conn);
            }
            self.servers.insert(process, Session::new(Connection::new(peer, &ctx.meta)));
        }
        let session = self.servers.entry(process).or_default();
        if matches {
            touch(&mut session.conn, now);
        }
        session
    }

    /// The session of `process` with `peer`, taken out of the open ones, this line counted
    /// (a new session starts with it).
    fn take_session(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, peer: &Peer<'_>) -> Session {
        match self.servers.remove(&process) {
            Some(mut session) if same_peer(&session.conn, peer) => {
                touch(&mut session.conn, ctx.meta.ts_micros);
                session
            }
            other => {
                if let Some(old) = other {
                    self.emit(ctx, process, Direction::Inbound, old.conn);
                }
                Session::new(Connection::new(peer, &ctx.meta))
            }
        }
    }

    fn emit(&self, ctx: &mut Ctx<'_>, process: ProcessKey, direction: Direction, conn: Box<Connection>) {
        emit(&self.tls_logging_seen, ctx, process, direction, conn);
    }
}

/// Turns a finished connection into an [`Observation`] in `ctx.out`.
fn emit(
    tls_logging_seen: &FxHashSet<(u32, bool)>,
    ctx: &mut Ctx<'_>,
    process: ProcessKey,
    direction: Direction,
    mut conn: Box<Connection>,
) {
    // Fields are taken out of the box one by one: moving the whole connection out first copied
    // it (most of a kilobyte) once more per observation (callgrind).
    let conn = &mut *conn;
    let tls_logged = ctx.tls_logged(tls_logging_seen.contains(&(process.name, direction == Direction::Inbound)));
    let (reporter, instance) = ctx.names.get(process.name);
    let (source, event_id) = ctx.source_and_event_id(conn.source, conn.offset);
    let (outcome, failure, tls) = match direction {
        Direction::Outbound => outbound_verdict(conn, tls_logged),
        Direction::Inbound => inbound_verdict(conn, tls_logged, wrapper_mode(&instance)),
    };
    let delivered = match direction {
        Direction::Outbound => conn.delivered,
        Direction::Inbound => inbound_delivered(conn),
    };
    ctx.out.push(Observation {
        ts: micros_to_datetime(conn.first_micros),
        end_ts: micros_to_datetime(conn.last_micros),
        mta: Mta::Postfix,
        reporter,
        instance,
        direction,
        peer: std::mem::take(&mut conn.peer),
        domains: std::mem::take(&mut conn.domains),
        queue_ids: std::mem::take(&mut conn.queue_ids),
        outcome,
        tls,
        failure,
        delivered,
        tls_feature: conn.tls_feature.take(),
        conn_use: conn.conn_use,
        local_policy: conn.local_policy.map(str::to_owned),
        after_tls_failure: conn.after_tls_failure,
        replayed: conn.replayed,
        source,
        lines: conn.lines,
        event_id,
    });
}

impl Connection {
    /// Boxed: the struct is large and moves through maps and options.
    fn new(peer: &Peer<'_>, meta: &LineMeta) -> Box<Connection> {
        // Filled in place: `Box::new(Connection { .., ..default() })` built the connection on
        // the stack and copied it into the box.
        let mut conn = Box::<Connection>::default();
        conn.peer = peer_info(peer);
        if conn.peer.ip.as_deref() != Some(peer.addr) {
            conn.addr = Some(peer.addr.to_owned());
        }
        conn.first_micros = meta.ts_micros;
        conn.last_micros = meta.ts_micros;
        conn.source = Some(meta.source);
        conn.offset = meta.offset;
        conn.needs_from = meta.offset;
        conn.lines = 1;
        conn
    }
}

/// Records one more line of a connection.
fn touch(conn: &mut Connection, now: i64) {
    conn.lines += 1;
    conn.last_micros = conn.last_micros.max(now);
}

/// Same address, and the same port when both lines logged one.
fn same_peer(conn: &Connection, peer: &Peer<'_>) -> bool {
    conn.addr.as_deref().or(conn.peer.ip.as_deref()) == Some(peer.addr)
        && match (conn.peer.port, peer.port) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// The server a `TLS is required, but …` reason names (`… by host h[a]`, `… but host h[a] refused …`).
fn peer_in_reason(reason: &str) -> Option<Peer<'_>> {
    let at = reason.find(" host ")?;
    parsers::peer::peer(&reason[at + " host ".len()..]).ok().map(|(_, peer)| peer)
}

fn peer_info(peer: &Peer<'_>) -> PeerInfo {
    let hostname = match peer.hostname {
        "" | "unknown" => None,
        name => Some(name.to_owned()),
    };
    let addr = peer.addr.strip_prefix("IPv6:").unwrap_or(peer.addr);
    PeerInfo { hostname, ip: super::canonical_ip(addr), port: peer.port }
}

fn tls_info(tls: &TlsConnection<'_>, verify_errors: Vec<String>) -> TlsInfo {
    TlsInfo {
        trust: Some(match tls.class {
            TrustClass::Anonymous => Trust::Anonymous,
            TrustClass::Untrusted => Trust::Untrusted,
            TrustClass::Trusted => Trust::Trusted,
            TrustClass::Verified => Trust::Verified,
        }),
        protocol: Some(tls.protocol.to_owned()),
        cipher: Some(tls.cipher.to_owned()),
        bits: Some(tls.bits),
        alg_bits: Some(tls.alg_bits),
        reused: tls.reused,
        sni: tls.sni.map(str::to_owned),
        key_exchange: tls.key_exchange.map(str::to_owned),
        verify_errors,
        cert: None,
    }
}

/// Keeps a peer certificate line on its connection: on the TLS details when the summary came
/// first, else until it comes.
fn set_cert(conn: &mut Connection, cert: &PeerCertificate<'_>) {
    let cert = Cert {
        subject: cert.subject_cn.map(str::to_owned),
        issuer: cert.issuer_cn.map(str::to_owned),
        fingerprint: cert.fingerprint.map(str::to_owned),
        pkey_fingerprint: cert.pkey_fingerprint.map(str::to_owned),
    };
    match conn.tls.as_mut() {
        Some(tls) => tls.cert = Some(cert),
        None => conn.cert = Some(cert),
    }
}

fn push_bounded(items: &mut Vec<String>, item: &str, max: usize) {
    if items.len() < max && !items.iter().any(|have| have == item) {
        items.push(item.to_owned());
    }
}

fn add_delivery(conn: &mut Connection, delivery: &Delivery<'_>) {
    conn.deliveries += 1;
    push_bounded(&mut conn.queue_ids, delivery.queue_id, MAX_ITEMS);
    if let Some((_, domain)) = delivery.to.rsplit_once('@') {
        if !domain.is_empty()
            && conn.domains.len() < MAX_ITEMS
            && !conn.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
        {
            conn.domains.push(domain.to_ascii_lowercase());
        }
    }
    let sent = delivery.status == Status::Sent;
    // An address-verification probe (`deliverable`, `undeliverable`) delivers no message.
    if !matches!(delivery.status, Status::Deliverable | Status::Undeliverable) {
        conn.delivered = Some(conn.delivered.unwrap_or(false) || sent);
    }
    if !sent {
        conn.no_tls_reason = Some(delivery.reason.to_owned());
    }
    if let Some(feature) = delivery.tls {
        conn.tls_feature = Some(feature.to_owned());
    }
    if let Some(conn_use) = delivery.conn_use {
        conn.conn_use = Some(conn.conn_use.map_or(conn_use, |have| have.max(conn_use)));
    }
}

/// A TLS verdict written into a delivery's status reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailureInReason {
    /// `Cannot start TLS: handshake failure`.
    Handshake,
    /// `Server certificate not verified` / `not trusted`, REQUIRETLS `no matching server certificate`.
    Rejected,
    /// `TLS is required, but …`, with the failure kind.
    Required(&'static str),
}

fn tls_failure_in_reason(reason: &str) -> Option<(TlsFailureInReason, &str)> {
    // Only reasons that mention TLS are worth the searches below (most say `250 2.0.0 Ok`): one
    // pass over the reason for the first byte of `TLS` or `certificate` (two substring searches
    // cost twice as much, on every delivery line).
    let bytes = reason.as_bytes();
    let mentions_tls = memchr::memchr2_iter(b'T', b'c', bytes)
        .any(|at| bytes[at..].starts_with(b"TLS") || bytes[at..].starts_with(b"certificate"));
    if !mentions_tls {
        return None;
    }
    let kind = if reason.contains("Cannot start TLS: handshake failure") {
        TlsFailureInReason::Handshake
    } else if reason.contains("Server certificate not verified")
        || reason.contains("Server certificate not trusted")
        || reason.contains("server certificate was found")
    {
        TlsFailureInReason::Rejected
    } else if reason.contains("TLS is required, but was not offered")
        || reason.contains("TLS service was not offered")
        || reason.contains("refused to start TLS")
    {
        TlsFailureInReason::Required("starttls-not-supported")
    } else if reason.contains("TLS is required, but our TLS engine is unavailable")
        || reason.contains("TLS is required, but unavailable")
    {
        TlsFailureInReason::Required("local-tls-unavailable")
    } else {
        return None;
    };
    Some((kind, reason))
}

/// RFC 8460 result type for a certificate verification error text.
fn cert_failure_kind(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("expired") {
        "certificate-expired"
    } else if reason.contains("hostname") || reason.contains("name mismatch") || reason.contains("no match") {
        "certificate-host-mismatch"
    } else if reason.contains("untrusted")
        || reason.contains("self-signed")
        || reason.contains("self signed")
        || reason.contains("not trusted")
        || reason.contains("unknown ca")
        || reason.contains("local issuer")
        || reason.contains("certificate verify failed")
    {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// Outcome of a connection we made.
fn outbound_verdict(conn: &mut Connection, tls_logged: bool) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    if let Some(reason) = &conn.rejected {
        let detail = conn.verify_errors.first().or_else(|| conn.tls.as_ref().and_then(|t| t.verify_errors.first()));
        let kind = match (detail, conn.tls.as_ref().and_then(|t| t.trust)) {
            (Some(detail), _) => cert_failure_kind(detail),
            // Chain trusted but not "Verified": the name did not match.
            (None, Some(Trust::Trusted)) => "certificate-host-mismatch",
            (None, Some(Trust::Untrusted)) => "certificate-not-trusted",
            _ => "validation-failure",
        };
        let reason = match detail {
            Some(detail) => format!("{reason}: {detail}"),
            None => reason.clone(),
        };
        return (Outcome::CertVerifyFailed, Some(Failure { kind: kind.to_owned(), reason }), conn.tls.take());
    }
    if let Some((kind, reason)) = &conn.required_missing {
        let failure = Failure { kind: (*kind).to_owned(), reason: reason.clone() };
        return (Outcome::TlsRequiredMissing, Some(failure), None);
    }
    if let Some(detail) = &conn.handshake {
        return (Outcome::HandshakeFailed, Some(handshake_failure(detail, &conn.reasons, &conn.verify_errors)), None);
    }
    if let Some(tls) = conn.tls.take() {
        return (Outcome::Tls, None, Some(tls));
    }
    if let Some(policy) = conn.local_policy {
        let reason = match policy {
            "starttls-discarded" => "STARTTLS discarded by smtp_discard_ehlo_keyword_address_maps",
            _ => "peer offered STARTTLS, TLS disabled by local policy",
        };
        let failure = Failure { kind: "local-policy".to_owned(), reason: reason.to_owned() };
        return (Outcome::Plaintext, Some(failure), None);
    }
    if conn.after_tls_failure {
        // Postfix retries only in plaintext after a failed handshake (`RETRY_AS_PLAINTEXT`).
        return (Outcome::Plaintext, None, None);
    }
    if let Some(feature) = conn.tls_feature.as_deref() {
        if let Some(verdict) = tls_feature_verdict(feature) {
            return verdict;
        }
    }
    if let Some(reason) = &conn.no_tls_reason {
        // The session ended before TLS could have been negotiated.
        if conn.delivered != Some(true)
            && (reason.contains("initial server greeting")
                || reason.contains("EHLO")
                || reason.contains("HELO")
                || reason.starts_with("connect to"))
        {
            return (Outcome::Unknown, None, None);
        }
    }
    if conn.deliveries == 0 {
        // Only certificate lines, no summary and no delivery: TLS was attempted, nothing more is known.
        let failure = conn
            .verify_errors
            .first()
            .map(|reason| Failure { kind: cert_failure_kind(reason).to_owned(), reason: reason.clone() });
        return (Outcome::Unknown, failure, None);
    }
    if tls_logged {
        (Outcome::Plaintext, None, None)
    } else {
        (Outcome::Unknown, None, None)
    }
}

/// Postfix ≥ 3.11 `tls=level[:downgrade][?](/…)*`; `None` when it does not decide.
fn tls_feature_verdict(feature: &str) -> Option<(Outcome, Option<Failure>, Option<TlsInfo>)> {
    let main = feature.split('/').next().unwrap_or(feature);
    if main.ends_with('?') {
        // Undecided: the connection failed before TLS was settled.
        return Some((Outcome::Unknown, None, None));
    }
    let (level, downgrade) = main.split_once(':').map_or((main, None), |(l, d)| (l, Some(d)));
    match (level, downgrade) {
        (_, Some("none")) => {
            let failure = Failure {
                kind: "starttls-not-supported".to_owned(),
                reason: format!("tls={feature}: STARTTLS not offered, sent in plaintext"),
            };
            Some((Outcome::StarttlsNotOffered, Some(failure), None))
        }
        ("none", None) => {
            let failure = Failure { kind: "local-policy".to_owned(), reason: format!("tls={feature}") };
            Some((Outcome::Plaintext, Some(failure), None))
        }
        _ => Some((Outcome::Tls, None, Some(TlsInfo { trust: None, ..TlsInfo::default() }))),
    }
}

fn handshake_failure(detail: &str, reasons: &[String], verify_errors: &[String]) -> Failure {
    let kind = reasons
        .iter()
        .chain(verify_errors)
        .map(|reason| cert_failure_kind(reason))
        .find(|kind| *kind != "validation-failure")
        .unwrap_or("validation-failure");
    let mut reason = detail.to_owned();
    for extra in reasons.iter().chain(verify_errors) {
        reason.push_str("; ");
        reason.push_str(extra);
    }
    Failure { kind: kind.to_owned(), reason }
}

/// Whether an smtpd instance is, by its conventional name, a wrapper-mode (implicit TLS, port 465)
/// service: `syslog_name=postfix/smtps` (Debian's `master.cf`) or `postfix/submissions` (Postfix
/// ≥ 3.5). Its sessions have TLS before SMTP, so no STARTTLS and no `starttls=` counter: the
/// counters cannot prove plaintext there.
fn wrapper_mode(instance: &str) -> bool {
    matches!(instance.rsplit('/').next(), Some("smtps" | "submissions" | "ssmtp"))
}

/// Outcome of a session a client made to us.
fn inbound_verdict(
    conn: &mut Connection,
    tls_logged: bool,
    wrapper_mode: bool,
) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    let counters = conn.counters.unwrap_or_default();
    if let Some(reason) = &conn.tls_abort {
        let kind = cert_failure_kind(reason);
        let failure = Failure { kind: kind.to_owned(), reason: reason.clone() };
        return (Outcome::CertVerifyFailed, Some(failure), conn.tls.take());
    }
    if let Some(tls) = conn.tls.take() {
        return (Outcome::Tls, None, Some(tls));
    }
    if let Some(reason) = &conn.refused {
        let failure = Failure { kind: "local-policy".to_owned(), reason: reason.clone() };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    // `starttls=1` counts a completed handshake (a failed one leaves `starttls=0/1`): a `lost
    // connection after STARTTLS` beside it only says that the client hung up after the handshake
    // (TLS probes do), so it is checked first.
    if let Some((ok, _)) = counters.starttls {
        if ok > 0 {
            return (Outcome::Tls, None, Some(TlsInfo::default()));
        }
    }
    if let Some(detail) = &conn.handshake {
        return (Outcome::HandshakeFailed, Some(handshake_failure(detail, &conn.reasons, &conn.verify_errors)), None);
    }
    if let Some((ok, total)) = counters.starttls {
        if total > 0 {
            let failure = Failure {
                kind: "validation-failure".to_owned(),
                reason: format!("STARTTLS failed (starttls={ok}/{total})"),
            };
            return (Outcome::HandshakeFailed, Some(failure), None);
        }
    }
    if let Some(reason) = &conn.starttls_demanded {
        let failure = Failure { kind: "starttls-not-supported".to_owned(), reason: reason.clone() };
        return (Outcome::TlsRequiredMissing, Some(failure), None);
    }
    if wrapper_mode {
        // TLS came before SMTP: neither the counters nor a missing TLS line say plaintext.
        return (Outcome::Unknown, None, None);
    }
    if counters.present {
        // The counters list every command: no `starttls=` means the client never tried. It is
        // plaintext once the client began a mail transaction (`mail=`, accepted or not); a
        // session that ended before `MAIL` (a probe, a scanner, a dropped connection) sent
        // nothing a downgrade could expose: `unknown`, as FORMATS.md §2.3 reads the counters.
        return match counters.mail {
            Some((_, total)) if total > 0 => (Outcome::Plaintext, None, None),
            _ => (Outcome::Unknown, None, None),
        };
    }
    // Without counters (Postfix < 3.0), a session is plaintext only if TLS lines are logged
    // and we saw all of it.
    if tls_logged && conn.saw_start {
        return (Outcome::Plaintext, None, None);
    }
    (Outcome::Unknown, None, None)
}

fn inbound_delivered(conn: &Connection) -> Option<bool> {
    let counters = conn.counters?;
    match counters.data {
        Some((ok, _)) if ok > 0 => Some(true),
        Some((_, total)) if total > 0 => Some(false),
        _ => None,
    }
}

fn micros_to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::Correlator;

    /// Runs `lines` (RFC 3164, year 2026, UTC) through a correlator.
    fn run_with(lines: &[&str], config: Config) -> (Vec<Observation>, Counters) {
        let mut correlator = Correlator::new(config);
        let source = correlator.add_source(Source {
            kind: "file".to_owned(),
            name: "test.log".to_owned(),
            trust: "local".to_owned(),
        });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let mut out = Vec::new();
        let mut offset = 0;
        for line in lines {
            let record = parsers::parse_line(line, &mut years).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(!matches!(record.body, parsers::Body::Unparsed(_)), "unparsed: {line}");
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset, ts_micros }, &mut out);
            offset += line.len() as u64 + 1;
        }
        correlator.finish(&mut out);
        (out, correlator.counters().clone())
    }

    fn run(lines: &[&str], tls_logging: TlsLogging) -> Vec<Observation> {
        run_with(lines, Config { tls_logging, ..Config::default() }).0
    }

    fn summary(observation: &Observation) -> (Direction, Option<&str>, Outcome, Option<Trust>, Option<&str>) {
        (
            observation.direction,
            observation.peer.ip.as_deref(),
            observation.outcome,
            observation.tls.as_ref().and_then(|t| t.trust),
            observation.failure.as_ref().map(|f| f.kind.as_str()),
        )
    }

    const TLS_A: &str = "Nov 30 10:00:00 mx postfix/smtp[100]: Trusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256";

    /// After each line, the correlator's low-water mark for the source (`None`: nothing open).
    fn low_waters(lines: &[&str]) -> Vec<Option<u64>> {
        let mut correlator = Correlator::new(Config::default());
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let (mut out, mut offset, mut marks) = (Vec::new(), 0, Vec::new());
        for line in lines {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset, ts_micros }, &mut out);
            marks.push(correlator.low_water(source));
            offset += 100;
        }
        marks
    }

    #[test]
    fn forged_reporters_are_forgotten_and_names_in_use_are_kept() {
        // A flood of short inbound sessions, each from a new (forged) reporter, over a quarter of
        // an hour of log time, after one real TLS delivery (emitted on idle timeout during the
        // flood); then a delivery without a TLS line by the same instance, which is `plaintext`
        // only if the instance's TLS-logging evidence kept its name.
        let forged = 2 * crate::correlate::NAMES_LIMIT;
        let mut lines = vec![
            TLS_A.to_owned(),
            "Nov 30 10:00:00 mx postfix/smtp[100]: AAAAA11111: to=<u@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)".to_owned(),
        ];
        for i in 0..forged {
            let second = 1 + i / 40;
            let time = format!("10:{:02}:{:02}", second / 60, second % 60);
            lines.push(format!("Nov 30 {time} forged{i} postfix/smtpd[9]: connect from h[198.51.100.9]"));
            lines.push(format!(
                "Nov 30 {time} forged{i} postfix/smtpd[9]: disconnect from h[198.51.100.9] ehlo=1 quit=1 commands=2"
            ));
        }
        lines.push("Nov 30 10:15:00 mx postfix/smtp[101]: BBBBB22222: to=<u@c.example>, relay=c.example[192.0.2.3]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)".to_owned());

        let mut correlator = Correlator::new(Config::default());
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let (mut out, mut most_names) = (Vec::new(), 0);
        for (offset, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: offset as u64, ts_micros }, &mut out);
            most_names = most_names.max(correlator.names().len());
        }
        correlator.finish(&mut out);

        assert!(most_names <= crate::correlate::NAMES_LIMIT + 1, "{most_names} names held at once");
        assert!(correlator.counters().names_forgotten >= crate::correlate::NAMES_LIMIT as u64);
        assert_eq!(out.len(), forged + 2);
        let inbound: Vec<&Observation> = out.iter().filter(|o| o.direction == Direction::Inbound).collect();
        assert_eq!(inbound.len(), forged);
        // Every forged session kept its own reporter, before and after names were forgotten.
        for (i, observation) in inbound.iter().enumerate() {
            assert_eq!(&*observation.reporter, format!("forged{i}"));
        }
        let outbound: Vec<_> = out
            .iter()
            .filter(|o| o.direction == Direction::Outbound)
            .map(|o| (&*o.reporter, o.peer.ip.as_deref(), o.outcome, o.delivered))
            .collect();
        assert_eq!(
            outbound,
            [
                ("mx", Some("192.0.2.1"), Outcome::Tls, Some(true)),
                ("mx", Some("192.0.2.3"), Outcome::Plaintext, Some(true))
            ]
        );
    }

    #[test]
    fn the_low_water_mark_covers_the_lines_a_connection_depends_on() {
        let marks = low_waters(&[
            // A TLS library problem logged before its connection: pending, needed from 0.
            "Nov 30 10:00:00 mx postfix/smtp[7]: warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1584:SSL alert number 40:",
            "Nov 30 10:00:01 mx postfix/smtp[7]: SSL_connect error to a.example[192.0.2.1]:25: -1",
            // The plaintext retry inherits `after_tls_failure` from the failed connection.
            "Nov 30 10:00:02 mx postfix/smtp[7]: AAAAA11111: to=<u@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            // A new connection of the same process that depends on nothing earlier.
            "Nov 30 10:00:03 mx postfix/smtp[7]: Trusted TLS connection established to b.example[192.0.2.2]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
        ]);
        assert_eq!(marks, [Some(0), Some(0), Some(0), Some(300)]);
    }

    #[test]
    fn tls_line_joins_following_deliveries_of_the_pid() {
        let got = run(
            &[
                TLS_A,
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u2@b.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
                "Nov 30 10:00:02 mx postfix/smtp[100]: BBBBB22222: to=<u3@a.example>, relay=a.example[192.0.2.1]:25, conn_use=2, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            ],
            TlsLogging::On,
        );
        assert_eq!(got.len(), 1, "{got:#?}");
        let obs = &got[0];
        assert_eq!(summary(obs), (Direction::Outbound, Some("192.0.2.1"), Outcome::Tls, Some(Trust::Trusted), None));
        assert_eq!(obs.queue_ids, ["AAAAA11111", "BBBBB22222"]);
        assert_eq!(obs.domains, ["a.example", "b.example"]);
        assert_eq!((obs.delivered, obs.conn_use, obs.lines), (Some(true), Some(2), 4));
        let tls = obs.tls.as_ref().unwrap();
        assert_eq!(
            (tls.protocol.as_deref(), tls.bits, tls.key_exchange.as_deref()),
            (Some("TLSv1.3"), Some(256), Some("X25519"))
        );
        assert_eq!(obs.event_id, crate::observation::event_id("test.log", 0));
    }

    #[test]
    fn interleaved_processes_do_not_mix() {
        let got = run(
            &[
                TLS_A,
                "Nov 30 10:00:00 mx postfix/smtp[200]: Verified TLS connection established to b.example[2001:db8::2]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
                "Nov 30 10:00:01 mx postfix/smtp[200]: CCCCC33333: to=<x@b.example>, relay=b.example[2001:db8::2]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<x@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.0.0, status=deferred (host a.example[192.0.2.1] said: 451 later)",
            ],
            TlsLogging::On,
        );
        assert_eq!(got.len(), 2);
        let by_ip = |ip: &str| got.iter().find(|o| o.peer.ip.as_deref() == Some(ip)).unwrap();
        assert_eq!(by_ip("192.0.2.1").tls.as_ref().unwrap().trust, Some(Trust::Trusted));
        assert_eq!(by_ip("192.0.2.1").delivered, Some(false));
        assert_eq!(by_ip("2001:db8::2").tls.as_ref().unwrap().trust, Some(Trust::Verified));
        assert_eq!(by_ip("2001:db8::2").queue_ids, ["CCCCC33333"]);
    }

    const PLAIN_DELIVERY: &str = "Nov 30 10:05:00 mx postfix/smtp[100]: DDDDD44444: to=<x@c.example>, relay=c.example[192.0.2.3]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)";

    #[test]
    fn plaintext_only_when_tls_logging_is_known() {
        assert_eq!(run(&[PLAIN_DELIVERY], TlsLogging::On)[0].outcome, Outcome::Plaintext);
        assert_eq!(run(&[PLAIN_DELIVERY], TlsLogging::Off)[0].outcome, Outcome::Unknown);
        assert_eq!(run(&[PLAIN_DELIVERY], TlsLogging::Auto)[0].outcome, Outcome::Unknown, "no TLS line seen yet");
        let got = run(&[TLS_A, PLAIN_DELIVERY], TlsLogging::Auto);
        assert_eq!(got.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Tls, Outcome::Plaintext]);
        // A TLS line of another instance does not prove logging for this one.
        let other = PLAIN_DELIVERY.replace("postfix/smtp", "postfix-out/smtp");
        let got = run(&[TLS_A, &other], TlsLogging::Auto);
        assert_eq!(got[1].outcome, Outcome::Unknown);
    }

    #[test]
    fn new_message_without_conn_use_is_a_new_connection() {
        let got = run(
            &[
                TLS_A,
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
                "Nov 30 10:01:00 mx postfix/smtp[100]: BBBBB22222: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            ],
            TlsLogging::On,
        );
        assert_eq!(got.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Tls, Outcome::Plaintext]);
    }

    #[test]
    fn handshake_failure_then_plaintext_retry() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: SSL_connect error to a.example[192.0.2.1]:25: -1",
                "Nov 30 10:00:00 mx postfix/smtp[100]: warning: TLS library problem: error:0A000086:SSL routines::certificate verify failed:../ssl/statem/statem_clnt.c:1889:",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            ],
            TlsLogging::Off,
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            summary(&got[0]),
            (Direction::Outbound, Some("192.0.2.1"), Outcome::HandshakeFailed, None, Some("certificate-not-trusted"))
        );
        assert_eq!(got[0].delivered, Some(false));
        assert!(got[0].failure.as_ref().unwrap().reason.contains("certificate verify failed"));
        assert_eq!(
            (got[1].outcome, got[1].after_tls_failure, got[1].delivered),
            (Outcome::Plaintext, true, Some(true))
        );
    }

    #[test]
    fn handshake_failure_deferred() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: SSL_connect error to a.example[192.0.2.1]:25: lost connection",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)",
            ],
            TlsLogging::On,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(
            summary(&got[0]),
            (Direction::Outbound, Some("192.0.2.1"), Outcome::HandshakeFailed, None, Some("validation-failure"))
        );
        assert_eq!((got[0].delivered, got[0].queue_ids.len()), (Some(false), 1));
    }

    #[test]
    fn certificate_rejections() {
        let untrusted = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: Untrusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:00 mx postfix/smtp[100]: AAAAA11111: Server certificate not verified",
                TLS_A.replace("a.example[192.0.2.1]", "b.example[192.0.2.2]").as_str(),
            ],
            TlsLogging::On,
        );
        assert_eq!(untrusted.len(), 2);
        assert_eq!(
            summary(&untrusted[0]),
            (
                Direction::Outbound,
                Some("192.0.2.1"),
                Outcome::CertVerifyFailed,
                Some(Trust::Untrusted),
                Some("certificate-not-trusted")
            )
        );
        assert_eq!(untrusted[1].outcome, Outcome::Tls);

        let mismatch = run(
            &[
                TLS_A,
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Server certificate not verified)",
            ],
            TlsLogging::On,
        );
        assert_eq!(summary(&mismatch[0]).4, Some("certificate-host-mismatch"));

        let expired = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: server certificate verification failed for a.example[192.0.2.1]:25: certificate has expired",
                "Nov 30 10:00:00 mx postfix/smtp[100]: Untrusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Server certificate not verified)",
            ],
            TlsLogging::On,
        );
        assert_eq!(expired.len(), 1);
        assert_eq!(summary(&expired[0]).4, Some("certificate-expired"));

        // At level `may` a verification error is information: TLS went on and mail was delivered.
        let informational = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: certificate verification failed for a.example[192.0.2.1]:25: self-signed certificate",
                "Nov 30 10:00:00 mx postfix/smtp[100]: Untrusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            ],
            TlsLogging::On,
        );
        assert_eq!(informational.len(), 1);
        assert_eq!(informational[0].outcome, Outcome::Tls);
        assert_eq!(informational[0].tls.as_ref().unwrap().verify_errors, ["self-signed certificate"]);
    }

    #[test]
    fn tls_required_missing_and_replayed_verdict() {
        let got = run(
            &[
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host a.example[192.0.2.1])",
                "Nov 30 10:00:02 mx postfix/error[300]: BBBBB22222: to=<u2@a.example>, relay=none, delay=1, delays=0/0/0/0, dsn=4.7.4, status=deferred (delivery temporarily suspended: TLS is required, but was not offered by host a.example[192.0.2.1])",
            ],
            TlsLogging::Off,
        );
        assert_eq!(got.len(), 2);
        for obs in &got {
            assert_eq!(
                summary(obs),
                (
                    Direction::Outbound,
                    Some("192.0.2.1"),
                    Outcome::TlsRequiredMissing,
                    None,
                    Some("starttls-not-supported")
                )
            );
        }
        // The failed connection waits for the other recipients of its message (emitted at the
        // end here), so the replayed verdict may come first.
        let replayed: Vec<_> = got.iter().map(|o| (o.replayed, o.peer.port)).collect();
        assert!(replayed.contains(&(false, Some(25))) && replayed.contains(&(true, None)), "{replayed:?}");
    }

    #[test]
    fn tls_feature_field_decides_without_tls_logging() {
        let line = |feature: &str| {
            format!("Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, tls={feature}, dsn=2.0.0, status=sent (250 ok)")
        };
        let outcome = |feature: &str| run(&[&line(feature)], TlsLogging::Off)[0].outcome;
        assert_eq!(outcome("may:none"), Outcome::StarttlsNotOffered);
        assert_eq!(outcome("none"), Outcome::Plaintext);
        assert_eq!(outcome("may"), Outcome::Tls);
        assert_eq!(outcome("dane:halfdane"), Outcome::Tls);
        assert_eq!(outcome("may?"), Outcome::Unknown);
    }

    #[test]
    fn discarded_starttls_is_local_policy() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[100]: discarding EHLO keywords: STARTTLS",
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
            ],
            TlsLogging::Off,
        );
        assert_eq!(
            summary(&got[0]),
            (Direction::Outbound, Some("192.0.2.1"), Outcome::Plaintext, None, Some("local-policy"))
        );
        assert_eq!(got[0].local_policy.as_deref(), Some("starttls-discarded"));
        assert_eq!(got[0].lines, 2, "the discarding line is one of the connection's lines");
    }

    #[test]
    fn inbound_sessions() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtpd[500]: connect from client.example[198.51.100.7]",
                "Nov 30 10:00:00 mx postfix/smtpd[500]: Anonymous TLS connection established from client.example[198.51.100.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:01 mx postfix/smtpd[501]: connect from unknown[198.51.100.8]",
                "Nov 30 10:00:01 mx postfix/smtpd[500]: EEEEE55555: client=client.example[198.51.100.7]",
                "Nov 30 10:00:01 mx postfix/smtpd[501]: disconnect from unknown[198.51.100.8] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
                "Nov 30 10:00:02 mx postfix/smtpd[500]: disconnect from client.example[198.51.100.7] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
                "Nov 30 10:00:03 mx postfix/smtpd[502]: connect from unknown[198.51.100.9]",
                "Nov 30 10:00:03 mx postfix/smtpd[502]: SSL_accept error from unknown[198.51.100.9]: -1",
                "Nov 30 10:00:03 mx postfix/smtpd[502]: warning: TLS library problem: error:0A000076:SSL routines::no suitable signature algorithm:../ssl/t1_lib.c:3330:",
                "Nov 30 10:00:03 mx postfix/smtpd[502]: lost connection after STARTTLS from unknown[198.51.100.9]",
                "Nov 30 10:00:03 mx postfix/smtpd[502]: disconnect from unknown[198.51.100.9] ehlo=1 starttls=0/1 commands=1/2",
                "Nov 30 10:00:04 mx postfix/smtpd[503]: connect from unknown[198.51.100.10]",
                "Nov 30 10:00:04 mx postfix/smtpd[503]: NOQUEUE: reject: RCPT from unknown[198.51.100.10]: 530 5.7.0 Must issue a STARTTLS command first; from=<a@b> to=<c@d> proto=ESMTP helo=<x>",
                "Nov 30 10:00:04 mx postfix/smtpd[503]: disconnect from unknown[198.51.100.10] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
                "Nov 30 10:00:05 mx postfix/smtpd[504]: connect from unknown[198.51.100.11]",
                "Nov 30 10:00:05 mx postfix/smtpd[504]: disconnect from unknown[198.51.100.11] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
            ],
            TlsLogging::Off,
        );
        let by_ip = |ip: &str| {
            got.iter().find(|o| o.peer.ip.as_deref() == Some(ip)).unwrap_or_else(|| panic!("{ip}: {got:#?}"))
        };
        let tls = by_ip("198.51.100.7");
        assert_eq!(
            summary(tls),
            (Direction::Inbound, Some("198.51.100.7"), Outcome::Tls, Some(Trust::Anonymous), None)
        );
        assert_eq!(
            (tls.queue_ids.as_slice(), tls.delivered, tls.lines),
            (["EEEEE55555".to_owned()].as_slice(), Some(true), 4)
        );
        assert_eq!(by_ip("198.51.100.8").outcome, Outcome::Plaintext, "counters without starttls prove plaintext");
        let failed = by_ip("198.51.100.9");
        assert_eq!(failed.outcome, Outcome::HandshakeFailed);
        assert!(failed.failure.as_ref().unwrap().reason.contains("no suitable signature algorithm"));
        assert_eq!(by_ip("198.51.100.10").outcome, Outcome::TlsRequiredMissing);
        let unlogged = by_ip("198.51.100.11");
        assert_eq!((unlogged.outcome, unlogged.tls.as_ref().unwrap().trust), (Outcome::Tls, None));
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn inbound_counters_prove_plaintext_only_for_a_mail_transaction() {
        let lines = [
            // A TLS probe: the handshake completed (`starttls=1`), then the client hung up.
            "Nov 30 10:00:00 mx postfix/smtpd[600]: connect from scanner.example[192.0.2.90]",
            "Nov 30 10:00:00 mx postfix/smtpd[600]: lost connection after STARTTLS from scanner.example[192.0.2.90]",
            "Nov 30 10:00:00 mx postfix/smtpd[600]: disconnect from scanner.example[192.0.2.90] ehlo=1 starttls=1 commands=2",
            // The same words with a failed handshake.
            "Nov 30 10:00:01 mx postfix/smtpd[601]: connect from unknown[192.0.2.91]",
            "Nov 30 10:00:01 mx postfix/smtpd[601]: lost connection after STARTTLS from unknown[192.0.2.91]",
            "Nov 30 10:00:01 mx postfix/smtpd[601]: disconnect from unknown[192.0.2.91] ehlo=1 starttls=0/1 commands=1/2",
            // Sessions that ended before MAIL: before EHLO, after EHLO, after a failed AUTH.
            "Nov 30 10:00:02 mx postfix/smtpd[602]: connect from unknown[203.0.113.9]",
            "Nov 30 10:00:02 mx postfix/smtpd[602]: lost connection after CONNECT from unknown[203.0.113.9]",
            "Nov 30 10:00:02 mx postfix/smtpd[602]: disconnect from unknown[203.0.113.9] commands=0/0",
            "Nov 30 10:00:03 mx postfix/smtpd[603]: connect from unknown[203.0.113.10]",
            "Nov 30 10:00:03 mx postfix/smtpd[603]: disconnect from unknown[203.0.113.10] ehlo=1 commands=1",
            "Nov 30 10:00:04 mx postfix/smtpd[604]: connect from unknown[203.0.113.11]",
            "Nov 30 10:00:04 mx postfix/smtpd[604]: disconnect from unknown[203.0.113.11] ehlo=1 auth=0/1 quit=1 commands=2/3",
            // A rejected MAIL FROM is a mail transaction in the clear.
            "Nov 30 10:00:05 mx postfix/smtpd[605]: connect from unknown[203.0.113.12]",
            "Nov 30 10:00:05 mx postfix/smtpd[605]: disconnect from unknown[203.0.113.12] ehlo=1 mail=0/1 quit=1 commands=2/3",
            // Implicit TLS (wrapper mode): no STARTTLS and no counter for it.
            "Nov 30 10:00:06 mx postfix/smtps/smtpd[606]: connect from laptop.example[198.51.100.7]",
            "Nov 30 10:00:06 mx postfix/smtps/smtpd[606]: 1D0668039: client=laptop.example[198.51.100.7], sasl_method=PLAIN, sasl_username=alice",
            "Nov 30 10:00:06 mx postfix/smtps/smtpd[606]: disconnect from laptop.example[198.51.100.7] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
            "Nov 30 10:00:07 mx postfix/submissions/smtpd[607]: connect from laptop.example[198.51.100.8]",
            "Nov 30 10:00:07 mx postfix/submissions/smtpd[607]: disconnect from laptop.example[198.51.100.8] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
            // The same session on the submission port (STARTTLS expected): plaintext.
            "Nov 30 10:00:08 mx postfix/submission/smtpd[608]: connect from laptop.example[198.51.100.9]",
            "Nov 30 10:00:08 mx postfix/submission/smtpd[608]: disconnect from laptop.example[198.51.100.9] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
        ];
        for tls_logging in [TlsLogging::Off, TlsLogging::On, TlsLogging::Auto] {
            let got = run(&lines, tls_logging);
            let outcome = |ip: &str| {
                got.iter()
                    .find(|o| o.peer.ip.as_deref() == Some(ip))
                    .unwrap_or_else(|| panic!("{ip}: {got:#?}"))
                    .outcome
            };
            let expected = [
                ("192.0.2.90", Outcome::Tls),
                ("192.0.2.91", Outcome::HandshakeFailed),
                ("203.0.113.9", Outcome::Unknown),
                ("203.0.113.10", Outcome::Unknown),
                ("203.0.113.11", Outcome::Unknown),
                ("203.0.113.12", Outcome::Plaintext),
                ("198.51.100.7", Outcome::Unknown),
                ("198.51.100.8", Outcome::Unknown),
                ("198.51.100.9", Outcome::Plaintext),
            ];
            for (ip, want) in expected {
                assert_eq!(outcome(ip), want, "{ip} with {tls_logging:?}");
            }
            assert_eq!(got.len(), expected.len());
            let probe = got.iter().find(|o| o.peer.ip.as_deref() == Some("192.0.2.90")).unwrap();
            assert_eq!((probe.failure.as_ref(), probe.tls.as_ref().and_then(|t| t.trust)), (None, None));
        }
    }

    #[test]
    fn a_message_failed_for_tls_is_one_observation_for_all_its_recipients() {
        let deferred = |time: &str, pid: u32, qid: &str, rcpt: &str, host: &str, ip: &str, reason: &str| {
            format!(
                "Nov 30 {time} mx postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay={host}[{ip}]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=4.7.5, status=deferred ({reason})"
            )
        };
        let lines = [
            "Nov 30 10:00:00 mx postfix/smtp[300]: Trusted TLS connection established to mx.h.example[192.0.2.55]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)".to_owned(),
            deferred("10:00:00", 300, "5EE668039", "bob@h.example", "mx.h.example", "192.0.2.55", "Server certificate not verified"),
            deferred("10:00:00", 300, "5EE668039", "carol@h.example", "mx.h.example", "192.0.2.55", "Server certificate not verified"),
            deferred("10:00:01", 301, "1AA668039", "bob@nt.example", "mx.nt.example", "192.0.2.60", "TLS is required, but was not offered by host mx.nt.example[192.0.2.60]"),
            deferred("10:00:01", 301, "1AA668039", "carol@nt2.example", "mx.nt.example", "192.0.2.60", "TLS is required, but was not offered by host mx.nt.example[192.0.2.60]"),
            "Nov 30 10:00:02 mx postfix/smtp[302]: SSL_connect error to mx.bad.example[192.0.2.40]:25: -1".to_owned(),
            "Nov 30 10:00:02 mx postfix/smtp[302]: warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1590:SSL alert number 40:".to_owned(),
            deferred("10:00:02", 302, "7EE668039", "bob@bad.example", "mx.bad.example", "192.0.2.40", "Cannot start TLS: handshake failure"),
            deferred("10:00:02", 302, "7EE668039", "carol@bad.example", "mx.bad.example", "192.0.2.40", "Cannot start TLS: handshake failure"),
            // The same message and the same verdict from the same process ten minutes later: the
            // next queue run, a new connection.
            deferred("10:10:01", 301, "1AA668039", "bob@nt.example", "mx.nt.example", "192.0.2.60", "TLS is required, but was not offered by host mx.nt.example[192.0.2.60]"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let got = run(&refs, TlsLogging::Off);
        let mut seen: Vec<_> = got
            .iter()
            .map(|o| {
                (
                    o.peer.ip.clone().unwrap_or_default(),
                    o.outcome,
                    o.failure.as_ref().map(|f| f.kind.clone()).unwrap_or_default(),
                    o.queue_ids.clone(),
                    o.domains.clone(),
                    o.delivered,
                    o.lines,
                )
            })
            .collect();
        seen.sort_by_key(|o| (o.0.clone(), o.6));
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                (
                    "192.0.2.40".to_owned(),
                    Outcome::HandshakeFailed,
                    "validation-failure".to_owned(),
                    strings(&["7EE668039"]),
                    strings(&["bad.example"]),
                    Some(false),
                    4
                ),
                (
                    "192.0.2.55".to_owned(),
                    Outcome::CertVerifyFailed,
                    "certificate-host-mismatch".to_owned(),
                    strings(&["5EE668039"]),
                    strings(&["h.example"]),
                    Some(false),
                    3
                ),
                (
                    "192.0.2.60".to_owned(),
                    Outcome::TlsRequiredMissing,
                    "starttls-not-supported".to_owned(),
                    strings(&["1AA668039"]),
                    strings(&["nt.example"]),
                    Some(false),
                    1
                ),
                (
                    "192.0.2.60".to_owned(),
                    Outcome::TlsRequiredMissing,
                    "starttls-not-supported".to_owned(),
                    strings(&["1AA668039"]),
                    strings(&["nt.example", "nt2.example"]),
                    Some(false),
                    2
                ),
            ]
        );
        let handshake = got.iter().find(|o| o.outcome == Outcome::HandshakeFailed).unwrap();
        assert!(handshake.failure.as_ref().unwrap().reason.contains("sslv3 alert handshake failure"));
    }

    #[test]
    fn a_failed_connection_is_emitted_once_its_burst_is_over() {
        let mut correlator = Correlator::new(Config::default());
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let mut out = Vec::new();
        let lines = [
            "Nov 30 10:00:00 mx postfix/smtp[300]: 1AA668039: to=<bob@nt.example>, relay=mx.nt.example[192.0.2.60]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx.nt.example[192.0.2.60])",
            "Nov 30 10:00:01 mx postfix/smtpd[301]: connect from unknown[198.51.100.9]",
            // Twenty seconds later, a line of another process: the log-time sweep runs.
            "Nov 30 10:00:21 mx postfix/smtpd[302]: connect from unknown[198.51.100.10]",
        ];
        let mut emitted = Vec::new();
        for (offset, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: offset as u64 * 300, ts_micros }, &mut out);
            emitted.push(out.len());
        }
        assert_eq!(emitted, [0, 0, 1], "{out:#?}");
        assert_eq!(out[0].outcome, Outcome::TlsRequiredMissing);
        assert_eq!(correlator.counters().expired, 0, "not an idle timeout");
    }

    #[test]
    fn an_address_verification_probe_delivers_nothing() {
        let got = run(
            &[
                TLS_A,
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
            ],
            TlsLogging::Off,
        );
        assert_eq!((got[0].outcome, got[0].delivered), (Outcome::Tls, None));
    }

    #[test]
    fn a_server_skipped_for_the_next_mx_is_an_observation() {
        // `smtp_bulk_fail` at a server that is not the last MX: `QID: <reason>`, then the next MX.
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[400]: 1AA668039: TLS is required, but was not offered by host mx1.nt.example[192.0.2.60]",
                "Nov 30 10:00:00 mx postfix/smtp[400]: Trusted TLS connection established to mx2.nt.example[192.0.2.61]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:01 mx postfix/smtp[400]: 1AA668039: to=<bob@nt.example>, relay=mx2.nt.example[192.0.2.61]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                "Nov 30 10:00:02 mx postfix/smtp[401]: SSL_connect error to mx1.bad.example[192.0.2.40]:25: -1",
                "Nov 30 10:00:02 mx postfix/smtp[401]: warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1590:SSL alert number 40:",
                "Nov 30 10:00:02 mx postfix/smtp[401]: 7EE668039: Cannot start TLS: handshake failure",
                "Nov 30 10:00:02 mx postfix/smtp[401]: Trusted TLS connection established to mx2.bad.example[192.0.2.41]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:03 mx postfix/smtp[401]: 7EE668039: to=<bob@bad.example>, relay=mx2.bad.example[192.0.2.41]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                // Other soft errors and the PIX note are not TLS verdicts.
                "Nov 30 10:00:04 mx postfix/smtp[402]: 2BB668039: lost connection with mx1.x.example[192.0.2.70] while receiving the initial server greeting",
                "Nov 30 10:00:04 mx postfix/smtp[402]: 2BB668039: enabling PIX workarounds: disable_esmtp delay_dot_crlf for mx2.x.example[192.0.2.71]:25",
            ],
            TlsLogging::Off,
        );
        let by_ip = |ip: &str| {
            got.iter().find(|o| o.peer.ip.as_deref() == Some(ip)).unwrap_or_else(|| panic!("{ip}: {got:#?}"))
        };
        let skipped = by_ip("192.0.2.60");
        assert_eq!(
            (skipped.outcome, skipped.queue_ids.as_slice(), skipped.delivered),
            (Outcome::TlsRequiredMissing, ["1AA668039".to_owned()].as_slice(), Some(false))
        );
        let failed = by_ip("192.0.2.40");
        assert_eq!(
            (failed.outcome, failed.queue_ids.as_slice(), failed.delivered, failed.lines),
            (Outcome::HandshakeFailed, ["7EE668039".to_owned()].as_slice(), Some(false), 3)
        );
        assert!(failed.failure.as_ref().unwrap().reason.contains("sslv3 alert handshake failure"));
        assert_eq!((by_ip("192.0.2.61").outcome, by_ip("192.0.2.41").outcome), (Outcome::Tls, Outcome::Tls));
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn a_plaintext_retry_the_server_answers_is_its_own_observation() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtp[500]: SSL_connect error to mx.bad.example[192.0.2.40]:25: -1",
                "Nov 30 10:00:00 mx postfix/smtp[500]: 7EE668039: to=<bob@bad.example>, relay=mx.bad.example[192.0.2.40]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=4.7.1, status=deferred (host mx.bad.example[192.0.2.40] said: 450 4.7.1 <bob@bad.example>: Recipient address rejected: Greylisted (in reply to RCPT TO command))",
            ],
            TlsLogging::Off,
        );
        let outcomes: Vec<_> = got.iter().map(|o| (o.outcome, o.after_tls_failure, o.delivered)).collect();
        assert_eq!(outcomes, [(Outcome::HandshakeFailed, false, Some(false)), (Outcome::Plaintext, true, Some(false))]);
        assert_eq!(got[1].queue_ids, ["7EE668039".to_owned()]);
    }

    #[test]
    fn a_library_problem_of_an_earlier_connection_is_no_later_handshakes_reason() {
        let got = run(
            &[
                TLS_A,
                "Nov 30 10:00:00 mx postfix/smtp[100]: 7EE668039: to=<bob@a.example>, relay=a.example[192.0.2.1]:25, delay=0.6, delays=0.1/0/0.3/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                "Nov 30 10:00:00 mx postfix/smtp[100]: warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:317:",
                "Nov 30 10:02:00 mx postfix/smtp[100]: SSL_connect error to b.example[192.0.2.26]:25: lost connection",
                // Logged just before its handshake error, it is that handshake's reason.
                "Nov 30 10:03:00 mx postfix/smtp[100]: warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1590:SSL alert number 40:",
                "Nov 30 10:03:01 mx postfix/smtp[100]: SSL_connect error to c.example[192.0.2.27]:25: -1",
            ],
            TlsLogging::Off,
        );
        let reason = |ip: &str| {
            let obs = got.iter().find(|o| o.peer.ip.as_deref() == Some(ip)).unwrap_or_else(|| panic!("{ip}: {got:#?}"));
            obs.failure.as_ref().map(|f| f.reason.clone()).unwrap_or_default()
        };
        assert_eq!(reason("192.0.2.26"), "SSL_connect error: lost connection");
        assert_eq!(reason("192.0.2.27"), "SSL_connect error: -1; sslv3 alert handshake failure");
    }

    #[test]
    fn inbound_client_certificate_errors_are_kept_on_the_tls_details() {
        let got = run(
            &[
                "Nov 30 10:00:00 mx postfix/smtpd[700]: connect from client.example[198.51.100.7]",
                "Nov 30 10:00:00 mx postfix/smtpd[700]: client certificate verification failed for client.example[198.51.100.7]: untrusted issuer /CN=Private CA",
                "Nov 30 10:00:00 mx postfix/smtpd[700]: Untrusted TLS connection established from client.example[198.51.100.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                "Nov 30 10:00:00 mx postfix/smtpd[700]: client certificate verification failed for client.example[198.51.100.7]: certificate has expired",
                "Nov 30 10:00:01 mx postfix/smtpd[700]: disconnect from client.example[198.51.100.7] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7",
            ],
            TlsLogging::Auto,
        );
        assert_eq!(got.len(), 1);
        let tls = got[0].tls.as_ref().unwrap();
        assert_eq!((got[0].outcome, tls.trust), (Outcome::Tls, Some(Trust::Untrusted)));
        assert_eq!(tls.verify_errors, ["untrusted issuer /CN=Private CA", "certificate has expired"]);
    }

    #[test]
    fn tlsproxy_lines_are_not_observations() {
        let (got, counters) = run_with(
            &[
                "Nov 30 10:00:00 mx postfix/tlsproxy[700]: CONNECT to [192.0.2.1]:25",
                "Nov 30 10:00:00 mx postfix/tlsproxy[700]: Trusted TLS connection established to a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                TLS_A,
            ],
            Config::default(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(counters.tlsproxy_duplicates, 1);
    }

    #[test]
    fn reused_tls_connection() {
        let got = run(
            &["Nov 30 10:00:00 mx postfix/smtp[100]: Verified TLS connection reused to a.example[192.0.2.1]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"],
            TlsLogging::On,
        );
        assert!(got[0].tls.as_ref().unwrap().reused);
    }

    #[test]
    fn idle_connections_are_emitted_and_counted() {
        let (got, counters) = run_with(
            &[
                TLS_A,
                "Nov 30 10:00:01 mx postfix/smtp[100]: AAAAA11111: to=<u1@a.example>, relay=a.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)",
                "Nov 30 10:20:00 mx postfix/qmgr[9]: AAAAA11111: removed",
            ],
            Config::default(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(counters.expired, 1);
    }

    #[test]
    fn a_sweep_emits_idle_connections_in_the_order_they_began() {
        // Forty sessions and forty deliveries of two instances, begun one second apart, with
        // pids in scrambled order; a line twenty minutes later expires them all at once.
        let mut lines: Vec<String> = Vec::new();
        for n in 0..40u32 {
            let pid = (n * 7919) % 1000 + 100;
            let instance = if n % 3 == 0 { "postfix-out" } else { "postfix" };
            lines.push(format!(
                "Nov 30 10:{:02}:{:02} mx {instance}/smtpd[{pid}]: connect from unknown[198.51.100.{n}]",
                n / 60,
                n % 60
            ));
            lines.push(format!(
                "Nov 30 10:{:02}:{:02} mx {instance}/smtp[{}]: Trusted TLS connection established to a.example[192.0.2.{n}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
                n / 60,
                n % 60,
                pid + 5000
            ));
        }
        lines.push("Nov 30 10:30:00 mx postfix/qmgr[9]: AAAAA11111: removed".to_owned());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (got, counters) = run_with(&refs, Config::default());
        // The qmgr line is counted as ignored (it skips the name lookup, not the counters).
        assert_eq!((got.len(), counters.expired, counters.ignored), (80, 80, 1));
        // Outbound ones first (the sweep takes clients, then sessions), each group by start.
        for group in [&got[..40], &got[40..]] {
            let starts: Vec<_> = group.iter().map(|o| o.ts).collect();
            let mut sorted = starts.clone();
            sorted.sort();
            assert_eq!(starts, sorted);
        }
        assert!(got[..40].iter().all(|o| o.direction == Direction::Outbound));
    }

    #[test]
    fn open_connections_are_bounded() {
        let lines: Vec<String> = (0..50)
            .map(|pid| {
                format!("Nov 30 10:00:{:02} mx postfix/smtpd[{pid}]: connect from unknown[198.51.100.{pid}]", pid % 60)
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut correlator = Correlator::new(Config { max_open: 10, ..Config::default() });
        let source = correlator.add_source(Source { kind: "file".into(), name: "t".into(), trust: "local".into() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut out = Vec::new();
        for line in &refs {
            let record = parsers::parse_line(line, &mut years).unwrap();
            correlator.push(&record, LineMeta { source, offset: 0, ts_micros: 0 }, &mut out);
            assert!(correlator.open() <= 11, "open: {}", correlator.open());
        }
        correlator.finish(&mut out);
        assert_eq!(out.len(), 50, "nothing is lost by eviction");
        assert!(correlator.counters().evicted > 0);
    }

    #[test]
    fn an_observation_counts_each_of_its_lines_once() {
        // Each inbound line alone (a lone `disconnect` was counted twice), and whole sessions.
        let connect = "Nov 30 10:00:00 mx postfix/smtpd[7]: connect from a.example[192.0.2.1]";
        let tls = "Nov 30 10:00:01 mx postfix/smtpd[7]: Anonymous TLS connection established from a.example[192.0.2.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)";
        let lost = "Nov 30 10:00:02 mx postfix/smtpd[7]: lost connection after STARTTLS from a.example[192.0.2.1]";
        let disconnect =
            "Nov 30 10:00:03 mx postfix/smtpd[7]: disconnect from a.example[192.0.2.1] ehlo=2 starttls=1 quit=1 commands=4";
        for (lines, want) in [
            (&[disconnect][..], 1),
            (&[connect][..], 1),
            (&[tls][..], 1),
            (&[lost][..], 1),
            (&[connect, disconnect][..], 2),
            (&[tls, disconnect][..], 2),
            (&[connect, tls, disconnect][..], 3),
            (&[connect, tls, lost, disconnect][..], 4),
        ] {
            let got = run(lines, TlsLogging::On);
            assert_eq!(got.len(), 1, "{lines:?}");
            assert_eq!(got[0].lines, want, "{lines:?}");
        }
    }
}
