//! Exim join rules: one observation per delivery connection (outbound) and per arrival,
//! `no MAIL` session or failed handshake (inbound).
//!
//! Exim writes the TLS facts of a connection on the delivery line itself (research/FORMATS.md
//! §3), so little joining is needed:
//!
//! - Outbound, per process (`[pid]` or the syslog pid; 0 when not logged) and remote address:
//!   `[ip] SSL verify error: …` and `DANE attempt failed; …` lines of a message wait for the
//!   delivery line to that address and join it; a `=>` line is joined by the `->` lines, `**`
//!   and `==` lines of the same message to the same address, and by a later message sent down
//!   the same connection (`H=host [ip]*`). `defer (-37)` (handshake failed), `defer (-38)` (TLS
//!   required) and `TLS session: …: delivering unencrypted to H=…` end their connection at once;
//!   after the latter, the next delivery to that address is the plaintext retry
//!   (`after_tls_failure`).
//! - Inbound: each `<=` line with a remote `H=` is one observation (`P=esmtps`/`X=` prove TLS,
//!   `P=esmtp` proves plaintext), as is each `no MAIL in SMTP connection from …` and each
//!   `TLS error on connection from …` (a failed handshake, including a fatal alert at the first
//!   `(recv)`, which is how a TLS 1.3 client's rejection of our certificate shows; other
//!   `(recv)`/`(send)` errors after the handshake are counted as ignored). Several messages over one inbound connection give one
//!   observation each: without `+pid` the lines cannot be told apart by connection.
//! - `[n/m]` pieces of a line that syslog split are rejoined per process before parsing.
//!
//! Outbound plaintext is claimed only when TLS logging is known (the `tls_cipher` selector:
//! an `X=` field seen from the instance, or `--tls-logging on`), the session got past EHLO, and
//! a line that would carry `X=` joined the connection (`=>`, `->`, `**`; `deferral_log` never
//! writes it, so `==` lines alone prove nothing).
//!
//! **Invariant:** every Exim record is counted once: in the `lines` of an observation, or as
//! ignored, a local delivery or an orphan (the conformance test adds them up).

use chrono::{DateTime, Utc};
use parsers::exim::{CertVerified, Cipher, Delivery, Event, Flag, Host};
use rustc_hash::{FxHashMap, FxHashSet};

use super::postfix::Ctx;
use super::{LineMeta, ProcessKey, SourceId};
use crate::observation::{Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, TlsInfo, Trust};

/// Most verification errors, queue ids and domains kept for one connection.
const MAX_ITEMS: usize = 16;
/// Most pieces of one split line, and most bytes of the rejoined text.
const MAX_PIECES: u16 = 64;
const MAX_JOINED_BYTES: usize = 64 * 1024;

/// Open Exim connections and split lines.
#[derive(Debug, Default)]
pub struct State {
    /// Outbound connections by process and remote address.
    clients: FxHashMap<(ProcessKey, String), Box<Connection>>,
    /// Split lines being rejoined, by process.
    splits: FxHashMap<ProcessKey, Split>,
    /// Instances (interned reporter+instance) that logged an `X=` field.
    tls_logging_seen: FxHashSet<u32>,
}

/// The pieces of one split line so far.
#[derive(Debug)]
struct Split {
    text: String,
    next: u16,
    total: u16,
    meta: LineMeta,
    last_micros: i64,
}

/// What is known about one connection.
#[derive(Debug, Default)]
struct Connection {
    peer: PeerInfo,
    first_micros: i64,
    last_micros: i64,
    source: Option<SourceId>,
    offset: u64,
    /// The earliest line this connection depends on: its first line, or the `delivering
    /// unencrypted` line a plaintext retry inherits `after_tls_failure` from.
    needs_from: u64,
    lines: u32,
    tls: Option<TlsInfo>,
    verify_errors: Vec<String>,
    /// `DANE attempt failed; …`.
    dane_failed: Option<String>,
    /// The handshake failed (`defer (-37)`, `TLS session: …: delivering unencrypted`, `TLS error
    /// on connection …`).
    handshake: Option<String>,
    /// `defer (-38)`: (kind, reason).
    required_missing: Option<(&'static str, String)>,
    queue_ids: Vec<String>,
    domains: Vec<String>,
    deliveries: u32,
    delivered: Option<bool>,
    /// The error of the last failed delivery line without `X=`, when the session got past EHLO
    /// (so STARTTLS could have been used).
    past_ehlo: bool,
    /// A failed delivery line whose session ended before TLS could be negotiated.
    before_tls: bool,
    /// A `=>`, `->` or `**` line joined: those carry `X=` when the connection used TLS
    /// (`delivery_log`, `failure_log`); `==` lines never do (`deferral_log`), so deferrals
    /// alone cannot prove plaintext.
    tls_fields_possible: bool,
    continued: bool,
    after_tls_failure: bool,
    /// Inbound: `P=` proved the protocol (`esmtp` plaintext, `esmtps` TLS).
    protocol_plain: Option<bool>,
}

impl State {
    /// Connections (and split lines) currently open.
    pub fn open(&self) -> usize {
        self.clients.len() + self.splits.len()
    }

    /// Adds the interned names this state refers to.
    pub fn names_in_use(&self, names: &mut FxHashSet<u32>) {
        names.extend(self.clients.keys().map(|(key, _)| key.name));
        names.extend(self.splits.keys().map(|key| key.name));
        names.extend(self.tls_logging_seen.iter().copied());
    }

    /// The offset of the earliest line of `source` that an open connection still needs.
    pub fn low_water(&self, source: SourceId) -> Option<u64> {
        self.open_processes(source).into_iter().map(|(_, offset)| offset).min()
    }

    /// The processes with an open connection (or split line) from `source`, with the offset of
    /// its first line.
    pub fn open_processes(&self, source: SourceId) -> Vec<(ProcessKey, u64)> {
        let clients = self
            .clients
            .iter()
            .filter(|(_, conn)| conn.source == Some(source))
            .map(|((process, _), conn)| (*process, conn.needs_from));
        let splits = self
            .splits
            .iter()
            .filter(|(_, split)| split.meta.source == source)
            .map(|(process, split)| (*process, split.meta.offset));
        let mut open: Vec<(ProcessKey, u64)> = Vec::new();
        for (process, offset) in clients.chain(splits) {
            match open.iter_mut().find(|(have, _)| *have == process) {
                Some((_, have)) => *have = (*have).min(offset),
                None => open.push((process, offset)),
            }
        }
        open
    }

    /// Handles one event of `process`.
    pub fn push(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        match event {
            Event::Split { part, total, text } => self.split(ctx, process, *part, *total, text),
            _ => self.event(ctx, process, event, 1),
        }
    }

    /// Emits every open connection; incomplete split lines are counted as orphans.
    pub fn flush_all(&mut self, ctx: &mut Ctx<'_>) {
        let processes: Vec<ProcessKey> = self.splits.keys().copied().collect();
        for process in processes {
            self.flush_split(ctx, process);
        }
        let mut clients: Vec<_> = self.clients.drain().collect();
        clients.sort_by_key(|(_, conn)| conn.first_micros);
        for ((process, _), conn) in clients {
            emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, conn);
        }
    }

    /// Emits connections idle since before `cutoff_micros`, and the oldest ones while more than
    /// `max_open` are open.
    pub fn sweep(&mut self, ctx: &mut Ctx<'_>, cutoff_micros: i64) {
        let idle_splits: Vec<ProcessKey> =
            self.splits.iter().filter(|(_, s)| s.last_micros < cutoff_micros).map(|(k, _)| *k).collect();
        for process in idle_splits {
            ctx.counters.expired += 1;
            self.flush_split(ctx, process);
        }
        let idle: Vec<(ProcessKey, String)> =
            self.clients.iter().filter(|(_, c)| c.last_micros < cutoff_micros).map(|(k, _)| k.clone()).collect();
        for key in idle {
            if let Some(conn) = self.clients.remove(&key) {
                if conn.lines > 0 {
                    ctx.counters.expired += 1;
                }
                emit(&self.tls_logging_seen, ctx, key.0, Direction::Outbound, conn);
            }
        }
        let max_open = ctx.config.max_open;
        if self.open() > max_open {
            let target = max_open - max_open / 10;
            let mut by_age: Vec<(i64, (ProcessKey, String))> =
                self.clients.iter().map(|(k, c)| (c.last_micros, k.clone())).collect();
            by_age.sort_unstable_by_key(|(last, _)| *last);
            let n_evict = self.open().saturating_sub(target).min(by_age.len());
            for (_, key) in by_age.into_iter().take(n_evict) {
                if let Some(conn) = self.clients.remove(&key) {
                    ctx.counters.evicted += 1;
                    emit(&self.tls_logging_seen, ctx, key.0, Direction::Outbound, conn);
                }
            }
            if self.splits.len() > max_open {
                let processes: Vec<ProcessKey> = self.splits.keys().copied().collect();
                for process in processes {
                    ctx.counters.evicted += 1;
                    self.flush_split(ctx, process);
                }
            }
        }
    }

    /// One piece of a split line: kept until the last one, then the whole line is parsed.
    fn split(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, part: u16, total: u16, text: &str) {
        let continues = self.splits.get(&process).is_some_and(|s| s.next == part && s.total == total);
        if !continues {
            // A new line starts (or a piece was lost): what was kept is incomplete.
            if self.splits.contains_key(&process) {
                self.flush_split(ctx, process);
            }
            if part != 1 || total > MAX_PIECES {
                ctx.counters.orphans += 1;
                return;
            }
            let split = Split { text: String::new(), next: 1, total, meta: ctx.meta, last_micros: ctx.meta.ts_micros };
            self.splits.insert(process, split);
        }
        let Some(split) = self.splits.get_mut(&process) else { return };
        if split.text.len() + text.len() <= MAX_JOINED_BYTES {
            split.text.push_str(text);
        }
        split.next = part.saturating_add(1);
        split.last_micros = ctx.meta.ts_micros;
        if part == total {
            self.flush_split(ctx, process);
        }
    }

    /// Parses the pieces of `process` as one line of as many lines once all arrived; an
    /// incomplete line (a piece lost, the log ended, idle) is counted as orphans.
    fn flush_split(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey) {
        let Some(split) = self.splits.remove(&process) else { return };
        let n_pieces = u32::from(split.next.saturating_sub(1)).max(1);
        if split.next <= split.total {
            // Pieces are missing: the text is cut at an arbitrary byte and cannot be trusted.
            ctx.counters.orphans += u64::from(n_pieces);
            return;
        }
        let line_meta = ctx.meta;
        ctx.meta = split.meta;
        match parsers::exim::parse_message(&split.text) {
            // A piece that itself looks like a split marker is not split again.
            Ok(Event::Split { .. }) | Err(_) => ctx.counters.orphans += u64::from(n_pieces),
            Ok(event) => self.event(ctx, process, &event, n_pieces),
        }
        ctx.meta = line_meta;
    }

    /// Handles a whole (possibly rejoined, `n_lines` long) message.
    fn event(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>, n_lines: u32) {
        match event {
            Event::Delivery(delivery) => self.delivery(ctx, process, delivery, n_lines),
            Event::TlsErrorFrom { host, stage, detail } => {
                if matches!(*stage, "recv" | "send" | "SSL_read" | "SSL_write") && !detail.contains("alert") {
                    // An I/O error after the handshake (`The TLS connection was non-properly
                    // terminated.`): the arrival line, if any, tells the TLS.
                    ctx.counters.ignored += u64::from(n_lines);
                    return;
                }
                // A fatal alert at the first read: with TLS 1.3 the client rejects the
                // server's certificate after the server's side of the handshake completed
                // (`(recv): A TLS fatal alert has been received: Certificate is bad`).
                let mut conn = Connection::new(host, &ctx.meta, n_lines);
                conn.handshake = Some(stage_detail("TLS error on connection", stage, detail));
                emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, conn);
            }
            Event::TlsErrorTo { host, stage, detail } => {
                // Left open: before 4.93 Exim goes on with `TLS session failure: delivering
                // unencrypted to …` or a `defer (-37)` for the same attempt, which join it.
                let conn = self.client_conn(ctx, process, host, n_lines, |c| c.lines > 0 && c.deliveries == 0);
                conn.handshake = Some(stage_detail("TLS error on connection", stage, detail));
            }
            Event::TlsFallback { message_id, host, detail, .. } => {
                let conn = self.client_conn(ctx, process, host, n_lines, |c| {
                    pending_for(c, *message_id) || handshake_error_only(c)
                });
                // The `TLS error on connection to …` line before it, if any, said more.
                conn.handshake.get_or_insert_with(|| format!("TLS session: {detail}"));
                if let Some(id) = message_id {
                    push_bounded(&mut conn.queue_ids, id);
                }
                conn.delivered.get_or_insert(false);
                self.emit_client(ctx, process, host.addr);
                // The retry in clear is the next delivery to this address: mark it (no line yet).
                let mut retry = Connection::new(host, &ctx.meta, 0);
                retry.after_tls_failure = true;
                if let Some(id) = message_id {
                    push_bounded(&mut retry.queue_ids, id);
                }
                self.clients.insert((process, host.addr.to_owned()), retry);
            }
            Event::DaneFailed { message_id: Some(id), host, detail } => {
                let conn = self.client_conn(ctx, process, host, n_lines, |c| pending_for(c, Some(id)));
                conn.dane_failed = Some((*detail).to_owned());
                push_bounded(&mut conn.queue_ids, id);
            }
            Event::VerifyError { message_id: Some(id), addr, detail } => {
                let host = Host { addr, ..Host::default() };
                let conn = self.client_conn(ctx, process, &host, n_lines, |c| pending_for(c, Some(id)));
                push_bounded(&mut conn.verify_errors, detail);
                push_bounded(&mut conn.queue_ids, id);
            }
            Event::NoMail { host, cipher, cert_verified, .. } => {
                let mut conn = Connection::new(host, &ctx.meta, n_lines);
                if let Some(cipher) = cipher {
                    super::note_evidence(&mut self.tls_logging_seen, process.name);
                    // No `DN=` here: `CV=no` cannot tell a failed certificate from none.
                    let cert_verified = cert_verified.filter(|cv| *cv != CertVerified::No);
                    conn.tls = Some(tls_info(cipher, cert_verified, Direction::Inbound, None));
                }
                // Without `X=` the session is `unknown`: it began no mail transaction, so nothing
                // went in the clear that a downgrade could expose (as for Postfix's counters),
                // and `C=…STARTTLS…` proves no failure either: a failed handshake ends the
                // session without this line, so STARTTLS here succeeded (`-tls_cipher`) or got a
                // 454, whose own `TLS error on connection from …` line is the observation.
                emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, conn);
            }
            // Verification errors and DANE failures without a message id cannot be told apart
            // from a server's client-certificate checks or a callout: not attributable.
            _ => ctx.counters.ignored += u64::from(n_lines),
        }
    }

    fn delivery(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, delivery: &Delivery<'_>, n_lines: u32) {
        let Some(host) = delivery.host.filter(|host| !host.addr.is_empty()) else {
            match delivery.flag {
                Flag::Failed | Flag::Deferred | Flag::Suppressed => ctx.counters.ignored += u64::from(n_lines),
                _ => ctx.counters.local_deliveries += u64::from(n_lines),
            }
            return;
        };
        if delivery.cipher.is_some() {
            super::note_evidence(&mut self.tls_logging_seen, process.name);
        }
        if delivery.flag == Flag::Arrival {
            return self.arrival(ctx, process, delivery, &host, n_lines);
        }
        if delivery.flag == Flag::Suppressed {
            ctx.counters.ignored += u64::from(n_lines);
            return;
        }
        let message_id = delivery.message_id.unwrap_or("");
        let now = ctx.meta.ts_micros;
        if host.continued {
            self.adopt_continued(process, host.addr);
        }
        let conn = self.client_conn(ctx, process, &host, n_lines, |conn| {
            let same_message = conn.queue_ids.iter().any(|q| q == message_id);
            if conn.lines == 0 {
                // The plaintext retry marker waits for a delivery of its own message.
                return same_message && delivery.cipher.is_none() && !matches!(delivery.errno, Some(-37 | -38));
            }
            (conn.deliveries == 0 && (same_message || conn.queue_ids.is_empty()))
                || host.continued
                || (same_message && delivery.flag != Flag::Delivered)
                // The deferred recipients of a transaction may be logged before its delivered
                // ones (`==` lines, then `=>`), in the same second.
                || (same_message
                    && !conn.tls_fields_possible
                    && conn.handshake.is_none()
                    && conn.required_missing.is_none()
                    && now - conn.last_micros <= 1_000_000)
        });
        conn.deliveries += 1;
        if delivery.flag != Flag::Deferred {
            conn.tls_fields_possible = true;
        }
        if !message_id.is_empty() {
            push_bounded(&mut conn.queue_ids, message_id);
        }
        if host.continued {
            conn.continued = true;
        }
        if let Some(cipher) = &delivery.cipher {
            let mut tls = tls_info(cipher, delivery.cert_verified, Direction::Outbound, None);
            tls.cert = peer_cert(delivery.peer_dn);
            // A later line of the connection (`->`, `**`, a message down it) keeps what the
            // earlier ones brought: the verification errors and the certificate.
            let earlier = conn.tls.take();
            let mut errors = earlier.as_ref().map(|t| t.verify_errors.clone()).unwrap_or_default();
            for error in std::mem::take(&mut conn.verify_errors) {
                if errors.len() < MAX_ITEMS && !errors.contains(&error) {
                    errors.push(error);
                }
            }
            tls.verify_errors = errors;
            if tls.cert.is_none() {
                tls.cert = earlier.and_then(|t| t.cert);
            }
            tls.reused = conn.continued;
            conn.tls = Some(tls);
        }
        let sent = matches!(delivery.flag, Flag::Delivered | Flag::Additional | Flag::Cutthrough);
        conn.delivered = Some(conn.delivered.unwrap_or(false) || sent);
        if sent {
            if let Some((_, domain)) = delivery.address.rsplit_once('@') {
                let domain = domain.trim_end_matches('>').to_ascii_lowercase();
                if !domain.is_empty() && conn.domains.len() < MAX_ITEMS && !conn.domains.contains(&domain) {
                    conn.domains.push(domain);
                }
            }
        }
        let error = delivery.error.unwrap_or("");
        let ends = match delivery.errno {
            Some(-37) => {
                conn.handshake.get_or_insert_with(|| error.to_owned());
                true
            }
            Some(-38) => {
                let kind =
                    if error.contains("did not offer TLS") { "starttls-not-supported" } else { "validation-failure" };
                conn.required_missing = Some((kind, error.to_owned()));
                true
            }
            _ => false,
        };
        if !sent && delivery.cipher.is_none() && !ends {
            if session_got_past_ehlo(error) {
                conn.past_ehlo = true;
            } else {
                conn.before_tls = true;
            }
        }
        if ends {
            self.emit_client(ctx, process, host.addr);
        }
    }

    /// A `<=` line from a remote host.
    fn arrival(
        &mut self,
        ctx: &mut Ctx<'_>,
        process: ProcessKey,
        delivery: &Delivery<'_>,
        host: &Host<'_>,
        n_lines: u32,
    ) {
        let protocol = delivery.protocol.unwrap_or("");
        let protocol_tls = protocol_is_tls(protocol);
        if protocol_tls.is_none() && delivery.cipher.is_none() {
            // `P=local-smtp`, `P=local-bsmtp`, … : a local submission that names a host.
            ctx.counters.local_deliveries += u64::from(n_lines);
            return;
        }
        let mut conn = Connection::new(host, &ctx.meta, n_lines);
        if let Some(id) = delivery.message_id {
            push_bounded(&mut conn.queue_ids, id);
        }
        conn.delivered = Some(true);
        if let Some(cipher) = &delivery.cipher {
            // Exim 4.96 logs `CV=no` for a client that sent no certificate at all (seen in the
            // lab); only a `DN=` shows that one was sent and failed.
            let cert_verified = match (delivery.cert_verified, delivery.peer_dn) {
                (Some(CertVerified::No), None) => None,
                (cv, _) => cv,
            };
            let mut tls = tls_info(cipher, cert_verified, Direction::Inbound, delivery.sni);
            tls.cert = peer_cert(delivery.peer_dn);
            conn.tls = Some(tls);
        } else if protocol_tls == Some(true) {
            // `P=esmtps` without `X=` (the `tls_cipher` selector is off): TLS, parameters unknown.
            conn.tls = Some(TlsInfo { sni: delivery.sni.map(str::to_owned), ..TlsInfo::default() });
        } else {
            conn.protocol_plain = Some(true);
        }
        emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, conn);
    }

    /// The open outbound connection of `process` to `host` if `joinable` says the line belongs
    /// to it; otherwise the open one is emitted and a new one started. Counts `n_lines`.
    /// A message sent down an open connection (`H=host [ip]*`) is delivered by a new Exim
    /// process (`transport_pass_socket` re-execs it), so with `+pid` or syslog framing it has a
    /// pid of its own: the connection moves to it from the process that last used it (the most
    /// recent open one of the same instance to that address).
    fn adopt_continued(&mut self, process: ProcessKey, addr: &str) {
        let key = (process, addr.to_owned());
        if self.clients.contains_key(&key) {
            return;
        }
        let donor = self
            .clients
            .iter()
            .filter(|((other, other_addr), conn)| {
                other.name == process.name && other_addr == addr && conn.deliveries > 0 && conn.lines > 0
            })
            .max_by_key(|(_, conn)| conn.last_micros)
            .map(|(donor, _)| donor.clone());
        if let Some(conn) = donor.and_then(|donor| self.clients.remove(&donor)) {
            self.clients.insert(key, conn);
        }
    }

    fn client_conn(
        &mut self,
        ctx: &mut Ctx<'_>,
        process: ProcessKey,
        host: &Host<'_>,
        n_lines: u32,
        joinable: impl Fn(&Connection) -> bool,
    ) -> &mut Connection {
        let key = (process, host.addr.to_owned());
        let keep = self.clients.get(&key).is_some_and(|conn| joinable(conn));
        if !keep {
            if let Some(old) = self.clients.remove(&key) {
                emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, old);
            }
            self.clients.insert(key.clone(), Connection::new(host, &ctx.meta, 0));
        }
        let conn = self.clients.entry(key).or_insert_with(|| Connection::new(host, &ctx.meta, 0));
        if conn.lines == 0 {
            // The first line of its own (a plaintext retry marker has none yet); it still
            // needs the marker's line.
            conn.offset = ctx.meta.offset;
            conn.needs_from = conn.needs_from.min(ctx.meta.offset);
            conn.source = Some(ctx.meta.source);
            conn.first_micros = ctx.meta.ts_micros;
        }
        if conn.peer.hostname.is_none() && !host.name.is_empty() {
            conn.peer.hostname = Some(host.name.to_owned());
        }
        if conn.peer.port.is_none() {
            conn.peer.port = host.port;
        }
        conn.lines += n_lines;
        conn.last_micros = conn.last_micros.max(ctx.meta.ts_micros);
        conn
    }

    fn emit_client(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, addr: &str) {
        if let Some(conn) = self.clients.remove(&(process, addr.to_owned())) {
            emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, conn);
        }
    }
}

/// True when `conn` holds only lines logged before a delivery (verification errors, a DANE
/// failure) of message `id`: the next line of that message's attempt joins it.
/// A connection that holds only an old-style `TLS error on connection to …` line.
fn handshake_error_only(conn: &Connection) -> bool {
    conn.lines > 0 && conn.deliveries == 0 && conn.handshake.is_some() && !conn.after_tls_failure
}

fn pending_for(conn: &Connection, id: Option<&str>) -> bool {
    conn.lines > 0
        && conn.deliveries == 0
        && conn.handshake.is_none()
        && id.is_none_or(|id| conn.queue_ids.is_empty() || conn.queue_ids.iter().any(|q| q == id))
}

impl Connection {
    fn new(host: &Host<'_>, meta: &LineMeta, n_lines: u32) -> Box<Connection> {
        Box::new(Connection {
            peer: peer_info(host),
            first_micros: meta.ts_micros,
            last_micros: meta.ts_micros,
            source: Some(meta.source),
            offset: meta.offset,
            needs_from: meta.offset,
            lines: n_lines,
            ..Connection::default()
        })
    }
}

/// `P=` of an arrival: `Some(true)` for TLS (`esmtps`, `esmtpsa`, `smtps`, `ssmtp`, with or
/// without the `utf8` prefix), `Some(false)` for plaintext SMTP, `None` for local protocols.
fn protocol_is_tls(protocol: &str) -> Option<bool> {
    let protocol = protocol.strip_prefix("utf8").unwrap_or(protocol);
    match protocol {
        "esmtps" | "esmtpsa" | "smtps" | "ssmtp" | "essmtp" | "essmtpa" | "lmtps" => Some(true),
        "smtp" | "esmtp" | "esmtpa" | "asmtp" | "lmtp" => Some(false),
        _ => None,
    }
}

/// True when a delivery error shows the SMTP dialogue went past EHLO (so a STARTTLS offer would
/// have been taken): `SMTP error from remote mail server after RCPT TO:…`.
fn session_got_past_ehlo(error: &str) -> bool {
    let Some((_, after)) = error.split_once("SMTP error from remote mail server after ") else { return false };
    let after = after.trim_start_matches("pipelined ");
    ["MAIL", "RCPT", "DATA", "end of data", "BDAT", "RSET", "QUIT"].iter().any(|command| after.starts_with(command))
}

fn stage_detail(what: &str, stage: &str, detail: &str) -> String {
    if stage.is_empty() {
        format!("{what}: {detail}")
    } else {
        format!("{what} ({stage}): {detail}")
    }
}

fn push_bounded(items: &mut Vec<String>, item: &str) {
    if items.len() < MAX_ITEMS && !items.iter().any(|have| have == item) {
        items.push(item.to_owned());
    }
}

fn peer_info(host: &Host<'_>) -> PeerInfo {
    let hostname = match host.name {
        "" => None,
        name => Some(name.to_owned()),
    };
    PeerInfo { hostname, ip: super::canonical_ip(host.addr), port: host.port }
}

/// `TLS1.3` → `TLSv1.3` (the OpenSSL spelling the other MTAs log); `TLSv1` stays.
fn protocol_name(version: &str) -> String {
    match version.strip_prefix("TLS") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => format!("TLSv{rest}"),
        _ => version.to_owned(),
    }
}

fn tls_info(cipher: &Cipher<'_>, cv: Option<CertVerified>, direction: Direction, sni: Option<&str>) -> TlsInfo {
    let trust = match (cv, direction) {
        (Some(CertVerified::Dane), _) => Some(Trust::Verified),
        (Some(CertVerified::Yes), _) => Some(Trust::Trusted),
        (Some(CertVerified::No), _) => Some(Trust::Untrusted),
        // Inbound `CV=` is logged only when the client sent a certificate.
        (None, Direction::Inbound) => Some(Trust::Anonymous),
        (None, Direction::Outbound) => None,
    };
    TlsInfo {
        trust,
        protocol: Some(protocol_name(cipher.version)),
        cipher: Some(cipher.cipher.to_owned()),
        bits: cipher.bits,
        alg_bits: None,
        reused: false,
        sni: sni.map(str::to_owned),
        key_exchange: cipher.group.map(str::to_owned),
        verify_errors: Vec::new(),
        cert: None,
    }
}

/// The peer certificate of a `DN=` field (the subject's whole DN; Exim logs no issuer or
/// fingerprint on the delivery line).
fn peer_cert(dn: Option<&str>) -> Option<Cert> {
    dn.filter(|d| !d.trim().is_empty()).map(|d| Cert { subject: Some(d.trim().to_owned()), ..Cert::default() })
}

/// RFC 8460 result type for a certificate verification error text.
fn cert_failure_kind(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("expired") {
        "certificate-expired"
    } else if reason.contains("name mismatch") || reason.contains("hostname") {
        "certificate-host-mismatch"
    } else if reason.contains("self signed")
        || reason.contains("self-signed")
        || reason.contains("local issuer")
        || reason.contains("unable to verify")
        || reason.contains("unknown ca")
        || reason.contains("not trusted")
        || reason.contains("certificate verify failed")
    {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// The most specific failure kind among `texts`.
fn failure_kind<'t>(texts: impl IntoIterator<Item = &'t String>) -> &'static str {
    texts
        .into_iter()
        .map(|text| cert_failure_kind(text))
        .find(|kind| *kind != "validation-failure")
        .unwrap_or("validation-failure")
}

fn verdict(
    conn: &mut Connection,
    direction: Direction,
    tls_logged: bool,
) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    let with_errors = |reason: &str, errors: &[String]| {
        let mut text = reason.to_owned();
        for error in errors {
            text.push_str("; ");
            text.push_str(error);
        }
        text
    };
    if let Some(detail) = &conn.dane_failed {
        let reason = with_errors(&format!("DANE attempt failed: {detail}"), &conn.verify_errors);
        return (Outcome::CertVerifyFailed, Some(Failure { kind: "tlsa-invalid".to_owned(), reason }), None);
    }
    if let Some((kind, reason)) = &conn.required_missing {
        let failure = Failure { kind: (*kind).to_owned(), reason: reason.clone() };
        return (Outcome::TlsRequiredMissing, Some(failure), None);
    }
    if let Some(detail) = &conn.handshake {
        let reason = with_errors(detail, &conn.verify_errors);
        let verification = detail.contains("certificate verification failed");
        let kind = failure_kind(conn.verify_errors.iter().chain(std::iter::once(detail)));
        let outcome = if verification { Outcome::CertVerifyFailed } else { Outcome::HandshakeFailed };
        return (outcome, Some(Failure { kind: kind.to_owned(), reason }), None);
    }
    if let Some(tls) = conn.tls.take() {
        return (Outcome::Tls, None, Some(tls));
    }
    match direction {
        Direction::Inbound => {
            if conn.protocol_plain == Some(true) {
                return (Outcome::Plaintext, None, None);
            }
            (Outcome::Unknown, None, None)
        }
        Direction::Outbound => {
            let failure = conn
                .verify_errors
                .first()
                .map(|reason| Failure { kind: failure_kind(&conn.verify_errors).to_owned(), reason: reason.clone() });
            // The retry after a failed handshake is plaintext once a session took place.
            if conn.after_tls_failure && conn.deliveries > 0 && (conn.tls_fields_possible || conn.past_ehlo) {
                return (Outcome::Plaintext, None, None);
            }
            let proven =
                conn.delivered == Some(true) || (conn.past_ehlo && !conn.before_tls && conn.tls_fields_possible);
            if conn.deliveries > 0 && tls_logged && proven {
                return (Outcome::Plaintext, None, None);
            }
            (Outcome::Unknown, failure, None)
        }
    }
}

/// Turns a finished connection into an [`Observation`] in `ctx.out`; a retry marker that never
/// got a line is dropped.
fn emit(
    tls_logging_seen: &FxHashSet<u32>,
    ctx: &mut Ctx<'_>,
    process: ProcessKey,
    direction: Direction,
    conn: Box<Connection>,
) {
    let mut conn = *conn;
    if conn.lines == 0 {
        return;
    }
    let tls_logged = ctx.tls_logged(tls_logging_seen.contains(&process.name));
    let (reporter, instance) = ctx.names.get(process.name);
    let (source, event_id) = ctx.source_and_event_id(conn.source, conn.offset);
    let (outcome, failure, tls) = verdict(&mut conn, direction, tls_logged);
    let delivered = match direction {
        Direction::Outbound if conn.deliveries == 0 => conn.delivered.filter(|d| !d),
        _ => conn.delivered,
    };
    ctx.out.push(Observation {
        ts: micros_to_datetime(conn.first_micros),
        end_ts: micros_to_datetime(conn.last_micros),
        mta: Mta::Exim,
        reporter,
        instance,
        direction,
        peer: conn.peer,
        domains: conn.domains,
        queue_ids: conn.queue_ids,
        outcome,
        tls,
        failure,
        delivered,
        tls_feature: None,
        conn_use: conn.continued.then_some(2),
        local_policy: None,
        after_tls_failure: conn.after_tls_failure,
        replayed: false,
        source,
        lines: conn.lines,
        event_id,
    });
}

fn micros_to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::TlsLogging;
    use crate::correlate::{Config, Correlator, Counters};
    use crate::observation::Source;

    /// Runs Exim main-log `lines` (file framing, UTC) through a correlator; offsets are 100 apart.
    fn run_with(lines: &[&str], config: Config) -> (Vec<Observation>, Counters) {
        let mut correlator = Correlator::new(config);
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let mut out = Vec::new();
        for (idx, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(matches!(record.body, parsers::Body::Exim(_)), "not Exim: {line}");
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: idx as u64 * 100, ts_micros }, &mut out);
        }
        correlator.finish(&mut out);
        (out, correlator.counters().clone())
    }

    fn run(lines: &[&str]) -> Vec<Observation> {
        run_with(lines, Config::default()).0
    }

    const TLS_OUT: &str = "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"";

    #[test]
    fn additional_recipients_join_their_delivery() {
        let (out, counters) = run_with(
            &[
                TLS_OUT,
                "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w -> b@two.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
                "2026-11-30 10:00:01 1tAbCd-000000003Xy-Zq1w Completed",
            ],
            Config::default(),
        );
        assert_eq!(out.len(), 1, "{out:#?}");
        let o = &out[0];
        assert_eq!((o.outcome, o.lines, o.delivered), (Outcome::Tls, 2, Some(true)));
        assert_eq!(o.domains, ["one.example", "two.example"]);
        assert_eq!(o.tls.as_ref().unwrap().trust, Some(Trust::Trusted));
        assert_eq!(o.tls.as_ref().unwrap().protocol.as_deref(), Some("TLSv1.3"));
        assert_eq!(counters.ignored, 1, "Completed");
    }

    #[test]
    fn a_continued_connection_carries_the_next_message() {
        let out = run(&[
            TLS_OUT,
            "2026-11-30 10:00:02 1tAbCe-000000003Xy-Zq1w => c@one.example R=r T=t H=mx.one.example [192.0.2.1]*:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
            // A new `=>` of another message without `*`: a new connection.
            "2026-11-30 10:00:03 1tAbCf-000000003Xy-Zq1w => d@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
        ]);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!((out[0].lines, out[0].conn_use, out[0].queue_ids.len()), (2, Some(2), 2), "{:?}", out[0]);
        assert!(out[0].tls.as_ref().unwrap().reused);
        assert_eq!((out[1].lines, out[1].conn_use), (1, None));
    }

    #[test]
    fn fallback_to_clear_gives_two_observations() {
        let out = run(&[
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w TLS session: (SSL_connect): error:0A000126:SSL routines::unexpected eof while reading: delivering unencrypted to H=mx.one.example [192.0.2.1] (not in hosts_require_tls)",
            "2026-11-30 10:00:01 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 C=\"250 ok\"",
        ]);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(
            (out[0].outcome, out[0].after_tls_failure, out[0].delivered),
            (Outcome::HandshakeFailed, false, Some(false))
        );
        assert!(out[0].failure.as_ref().unwrap().reason.contains("unexpected eof"));
        assert_eq!(
            (out[1].outcome, out[1].after_tls_failure, out[1].delivered),
            (Outcome::Plaintext, true, Some(true))
        );
        assert_ne!(out[0].event_id, out[1].event_id);
        assert_eq!(out[1].peer.port, Some(25));
    }

    #[test]
    fn verification_errors_join_the_delivery_of_their_message() {
        let out = run(&[
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w [192.0.2.1] SSL verify error: depth=0 error=certificate has expired cert=/CN=mx.one.example",
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no C=\"250 ok\"",
        ]);
        assert_eq!(out.len(), 1, "{out:#?}");
        let tls = out[0].tls.as_ref().unwrap();
        assert_eq!((out[0].outcome, tls.trust, out[0].lines), (Outcome::Tls, Some(Trust::Untrusted), 2));
        assert_eq!(tls.verify_errors.len(), 1);
    }

    #[test]
    fn deferrals_carry_no_tls_fields_so_prove_no_plaintext() {
        // `deferral_log` never writes `X=`: a greylisted session over TLS looks like this.
        let greylisted = "2026-11-30 10:01:00 1tAbCe-000000003Xy-Zq1w == a@two.example R=r T=t defer (-44) H=mx.two.example [192.0.2.2]:25: SMTP error from remote mail server after RCPT TO:<a@two.example>: 451 4.7.1 Greylisted";
        for tls_logging in [TlsLogging::Auto, TlsLogging::On] {
            let out = run_with(&[TLS_OUT, greylisted], Config { tls_logging, ..Config::default() }).0;
            let got: Vec<_> = out.iter().map(|o| (o.peer.ip.as_deref(), o.outcome, o.delivered)).collect();
            assert_eq!(
                got,
                [(Some("192.0.2.1"), Outcome::Tls, Some(true)), (Some("192.0.2.2"), Outcome::Unknown, Some(false))],
                "{tls_logging:?}"
            );
        }
        // A `**` line carries `X=` when there was TLS: without it, past EHLO, it is plaintext.
        let bounced = "2026-11-30 10:01:00 1tAbCe-000000003Xy-Zq1w ** a@two.example R=r T=t H=mx.two.example [192.0.2.2]:25: SMTP error from remote mail server after RCPT TO:<a@two.example>: 550 no such user";
        let out = run(&[TLS_OUT, bounced]);
        assert_eq!((out[1].outcome, out[1].delivered), (Outcome::Plaintext, Some(false)));
        // The deferred recipients logged before the delivered one of the same transaction: one
        // connection, TLS.
        let deferred_first = "2026-11-30 10:02:00 1tAbCf-000000003Xy-Zq1w == a@three.example R=r T=t defer (-44) H=mx.three.example [192.0.2.3]:25: SMTP error from remote mail server after RCPT TO:<a@three.example>: 451 4.7.1 Greylisted";
        let delivered = "2026-11-30 10:02:00 1tAbCf-000000003Xy-Zq1w => b@three.example R=r T=t H=mx.three.example [192.0.2.3]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"";
        let out = run(&[deferred_first, delivered]);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!((out[0].outcome, out[0].delivered, out[0].lines), (Outcome::Tls, Some(true), 2));
    }

    #[test]
    fn a_glued_cv_keeps_the_trust_and_a_retry_that_never_connected_is_unknown() {
        // Older `failure_log`: `CV=yes: error` after a `=>` down the same connection.
        let failed = "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w ** d@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes: SMTP error from remote mail server after RCPT TO:<d@one.example>: 550 no";
        let out = run(&[TLS_OUT, failed]);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].tls.as_ref().and_then(|t| t.trust), Some(Trust::Trusted));
        // After `delivering unencrypted`, a retry refused at the greeting had no session.
        let out = run(&[
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w TLS session: (SSL_connect): error:0A000126:SSL routines::unexpected eof while reading: delivering unencrypted to H=mx.one.example [192.0.2.1] (not in hosts_require_tls)",
            "2026-11-30 10:00:01 1tAbCd-000000003Xy-Zq1w == a@one.example R=r T=t defer (-18) H=mx.one.example [192.0.2.1]:25: Remote host closed connection in response to initial connection",
        ]);
        let got: Vec<_> = out.iter().map(|o| (o.outcome, o.after_tls_failure)).collect();
        assert_eq!(got, [(Outcome::HandshakeFailed, false), (Outcome::Unknown, true)]);
    }

    #[test]
    fn later_lines_keep_the_verify_errors_and_no_mail_without_x_is_unknown() {
        let out = run(&[
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w [192.0.2.1] SSL verify error: depth=0 error=self-signed certificate cert=/CN=mx.one.example",
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no C=\"250 ok\"",
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w -> b@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no C=\"250 ok\"",
        ]);
        assert_eq!(out.len(), 1, "{out:#?}");
        let tls = out[0].tls.as_ref().unwrap();
        assert_eq!(tls.verify_errors.len(), 1, "{tls:?}");
        // `no MAIL` sessions: no mail transaction, so no plaintext claim; STARTTLS listed without
        // `X=` is no failed handshake either (a failed one writes no such line).
        let out = run(&[
            "2026-11-30 10:00:00 no MAIL in SMTP connection from (helo.example.com) [198.51.100.8] D=2s C=EHLO,QUIT",
            "2026-11-30 10:00:01 no MAIL in SMTP connection from (helo.example.com) [198.51.100.9] D=2s C=EHLO,STARTTLS,EHLO,QUIT",
        ]);
        assert_eq!(out.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Unknown, Outcome::Unknown]);
    }

    #[test]
    fn an_old_tls_error_and_its_fallback_are_one_failed_handshake() {
        // Before 4.93: the error, then the fallback notice, then the plaintext retry.
        let out = run(&[
            "2026-11-30 10:00:00 1Z0abc-0001xy-Zz TLS error on connection to mx.example.net [192.0.2.25] (SSL_connect): error:14077410:SSL routines:SSL23_GET_SERVER_HELLO:sslv3 alert handshake failure",
            "2026-11-30 10:00:00 1Z0abc-0001xy-Zz TLS session failure: delivering unencrypted to mx.example.net [192.0.2.25] (not in hosts_require_tls)",
            "2026-11-30 10:00:01 1Z0abc-0001xy-Zz => a@example.net R=r T=t H=mx.example.net [192.0.2.25] C=\"250 ok\"",
        ]);
        let got: Vec<_> = out.iter().map(|o| (o.outcome, o.after_tls_failure, o.queue_ids.clone(), o.lines)).collect();
        let ids = vec!["1Z0abc-0001xy-Zz".to_owned()];
        assert_eq!(
            got,
            [(Outcome::HandshakeFailed, false, ids.clone(), 2), (Outcome::Plaintext, true, ids, 1)],
            "{out:#?}"
        );
        assert!(out[0].failure.as_ref().unwrap().reason.contains("sslv3 alert handshake failure"));
        // With TLS required: the error, then the deferral.
        let out = run(&[
            "2026-11-30 10:00:00 1Z0abc-0001xy-Zz TLS error on connection to mx.example.net [192.0.2.25] (SSL_connect): error:14077410:SSL routines:SSL23_GET_SERVER_HELLO:sslv3 alert handshake failure",
            "2026-11-30 10:00:00 1Z0abc-0001xy-Zz == a@example.net R=r T=t defer (-37) H=mx.example.net [192.0.2.25]: TLS session: (SSL_connect): error:14077410:SSL routines:SSL23_GET_SERVER_HELLO:sslv3 alert handshake failure",
        ]);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!((out[0].outcome, out[0].lines, out[0].delivered), (Outcome::HandshakeFailed, 2, Some(false)));
    }

    #[test]
    fn a_continued_connection_is_joined_across_the_new_process() {
        let out = run(&[
            "2026-11-30 10:00:00 [1234] 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
            "2026-11-30 10:00:01 [1240] 1tAbCe-000000003Xy-Zq1w => b@one.example R=r T=t H=mx.one.example [192.0.2.1]:25* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
            "2026-11-30 10:00:02 [1244] 1tAbCf-000000003Xy-Zq1w => c@one.example R=r T=t H=mx.one.example [192.0.2.1]:25* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
            // Another address is no donor.
            "2026-11-30 10:00:03 [1250] 1tAbCg-000000003Xy-Zq1w => d@two.example R=r T=t H=mx.two.example [192.0.2.2]:25* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 ok\"",
        ]);
        let got: Vec<_> = out.iter().map(|o| (o.peer.ip.as_deref(), o.queue_ids.len(), o.lines)).collect();
        assert_eq!(got, [(Some("192.0.2.1"), 3, 3), (Some("192.0.2.2"), 1, 1)], "{out:#?}");
    }

    #[test]
    fn plaintext_only_when_tls_logging_is_known() {
        let plain = "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.example [192.0.2.1]:25 C=\"250 ok\"";
        assert_eq!(run(&[plain])[0].outcome, Outcome::Unknown);
        // After an `X=` of the same instance, the selector is known to be on.
        let out = run(&[TLS_OUT, plain]);
        assert_eq!(out.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Tls, Outcome::Plaintext]);
        let on = run_with(&[plain], Config { tls_logging: TlsLogging::On, ..Config::default() }).0;
        assert_eq!(on[0].outcome, Outcome::Plaintext);
        // A deferral before the session got going proves nothing.
        let refused = "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w == a@one.example R=r T=t defer (111): Connection refused H=mx.one.example [192.0.2.1]";
        let on = run_with(&[refused], Config { tls_logging: TlsLogging::On, ..Config::default() }).0;
        assert_eq!((on[0].outcome, on[0].delivered), (Outcome::Unknown, Some(false)));
    }

    #[test]
    fn old_outbound_tls_error_and_required_tls() {
        let out = run(&[
            "2026-11-30 10:00:00 TLS error on connection to mx.two.example [2001:db8::2] (SSL_connect): error:14090086:SSL routines:ssl3_get_server_certificate:certificate verify failed",
            "2026-11-30 10:00:01 1tAbCd-000000003Xy-Zq1w == a@three.example R=r T=t defer (-38) H=mx.three.example [192.0.2.3]: a TLS session is required, but the server did not offer TLS support",
        ]);
        // The old error line waits for a fallback or deferral of its own (emitted at the end).
        let mut got: Vec<_> = out
            .iter()
            .map(|o| (o.peer.ip.as_deref(), o.direction, o.outcome, o.failure.as_ref().map(|f| f.kind.as_str())))
            .collect();
        got.sort_by_key(|o| o.0);
        assert_eq!(
            got,
            [
                (Some("192.0.2.3"), Direction::Outbound, Outcome::TlsRequiredMissing, Some("starttls-not-supported")),
                (Some("2001:db8::2"), Direction::Outbound, Outcome::HandshakeFailed, Some("certificate-not-trusted")),
            ]
        );
    }

    #[test]
    fn no_connection_no_observation() {
        let (out, counters) = run_with(
            &[
                "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w == a@one.example R=dnslookup T=remote_smtp defer (-53): retry time not reached for any host",
                "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w == a@one.example routing defer (-51): retry time not reached",
                "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@local.example R=local_user T=mail_spool",
            ],
            Config::default(),
        );
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!((counters.ignored, counters.local_deliveries), (2, 1));
    }

    #[test]
    fn inbound_protocol_decides() {
        let out = run(&[
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w <= a@b H=(helo) [192.0.2.7]:4000 P=esmtp S=1",
            "2026-11-30 10:00:00 1tAbCe-000000003Xy-Zq1w <= a@b H=(helo) [192.0.2.8] P=esmtps S=1",
            "2026-11-30 10:00:00 1tAbCf-000000003Xy-Zq1w <= a@b U=root P=local S=1",
            "2026-11-30 10:00:00 TLS error on connection from (helo) [192.0.2.9] (SSL_accept): error:0A000076:SSL routines::no suitable signature algorithm",
            "2026-11-30 10:00:00 TLS error on connection from (helo) [192.0.2.10] (recv): The TLS connection was non-properly terminated.",
        ]);
        let got: Vec<_> = out.iter().map(|o| (o.peer.ip.as_deref(), o.outcome, o.delivered)).collect();
        assert_eq!(
            got,
            [
                (Some("192.0.2.7"), Outcome::Plaintext, Some(true)),
                (Some("192.0.2.8"), Outcome::Tls, Some(true)),
                (Some("192.0.2.9"), Outcome::HandshakeFailed, None),
            ]
        );
        assert!(out.iter().all(|o| o.direction == Direction::Inbound));
    }

    #[test]
    fn idle_connections_expire_and_open_ones_are_bounded() {
        let delivery = |minute: u32, ip: u32| {
            format!("2026-11-30 10:{minute:02}:00 1tAbC{ip}-000000003Xy-Zq1w => a@x R=r T=t H=h [192.0.2.{ip}] X=TLS1.2:AES128-SHA:128 CV=yes")
        };
        let lines: Vec<String> = vec![delivery(0, 1), delivery(10, 2)];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, counters) = run_with(&refs, Config::default());
        assert_eq!((out.len(), counters.expired), (2, 1));
        let lines: Vec<String> = (1..=9).map(|ip| delivery(0, ip)).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (out, counters) = run_with(&refs, Config { max_open: 4, ..Config::default() });
        assert_eq!(out.len(), 9);
        assert!(counters.evicted > 0);
    }

    #[test]
    fn split_lines_are_rejoined_and_lost_pieces_counted() {
        let head = "Nov 30 10:00:00 mx exim[7]: [1/2] 2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w => a@one.example R=r T=t H=mx.one.exa";
        let tail = "Nov 30 10:00:00 mx exim[7]: [2/2] mple [192.0.2.1]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane";
        let out = run(&[head, tail]);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].lines, out[0].tls.as_ref().unwrap().trust), (2, Some(Trust::Verified)));
        assert_eq!(out[0].peer.hostname.as_deref(), Some("mx.one.example"));
        // A second piece without its first one cannot be read.
        let (out, counters) = run_with(&[tail], Config::default());
        assert_eq!((out.len(), counters.orphans), (0, 1));
        // A first piece whose end never came is cut at an arbitrary byte: an orphan.
        let (out, counters) = run_with(&[head], Config::default());
        assert_eq!((out.len(), counters.orphans), (0, 1));
    }

    #[test]
    fn the_low_water_mark_covers_pending_lines() {
        let mut correlator = Correlator::new(Config::default());
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let lines = [
            "2026-11-30 10:00:00 1tAbCd-000000003Xy-Zq1w [192.0.2.1] SSL verify error: depth=0 error=self signed certificate cert=/CN=x",
            "2026-11-30 10:00:00 1tAbCe-000000003Xy-Zq1w <= a@b H=(helo) [192.0.2.8] P=esmtps S=1",
            "2026-11-30 10:00:01 1tAbCd-000000003Xy-Zq1w == a@one.example R=r T=t defer (-37) H=h [192.0.2.1]: TLS session: (SSL_connect): error",
        ];
        let mut marks = Vec::new();
        let mut out = Vec::new();
        for (idx, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: idx as u64 * 100, ts_micros }, &mut out);
            marks.push(correlator.low_water(source));
        }
        assert_eq!(marks, [Some(0), Some(0), None]);
        assert_eq!(out.len(), 2);
        // The plaintext retry depends on the `delivering unencrypted` line before it.
        let lines = [
            "2026-11-30 10:00:02 1tAbCg-000000003Xy-Zq1w TLS session: (SSL_connect): x: delivering unencrypted to H=h [192.0.2.2] (not in hosts_require_tls)",
            "2026-11-30 10:00:03 1tAbCg-000000003Xy-Zq1w => a@two.example R=r T=t H=h [192.0.2.2]:25 C=\"250 ok\"",
        ];
        let mut marks = Vec::new();
        for (idx, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: 1000 + idx as u64 * 100, ts_micros }, &mut out);
            marks.push(correlator.low_water(source));
        }
        assert_eq!(marks, [Some(1000), Some(1000)]);
        assert_eq!(correlator.open_processes(source).len(), 1);
        assert_eq!(out[1].outcome, Outcome::HandshakeFailed);
        assert_eq!(out[1].failure.as_ref().unwrap().kind, "certificate-not-trusted");
    }
}
