//! Sendmail join rules: by pid, outbound (`STARTTLS=client` → `to=`) and inbound
//! (`STARTTLS=server` → `from=`).
//!
//! Outbound (research/FORMATS.md §4.3): the `STARTTLS=client` line has no queue id and no IP
//! address; it opens a connection of its pid that the next `to=` line with a remote `relay=`
//! binds to an address. Later `to=` lines of the pid to the same address join it (Sendmail's
//! connection cache) until another `STARTTLS=client` line, a `to=` line for another address, the
//! idle timeout or the end of input. A `to=` line with no pending `STARTTLS=client` line is a
//! plaintext connection when the instance logs TLS ([`TlsLogging`](super::TlsLogging)), else
//! `unknown`. A failed handshake followed by a delivery that was sent is Sendmail's retry without STARTTLS: two
//! observations, the second `after_tls_failure`. `ruleset=tls_server, arg1=…, reject=…` gives the
//! policy verdict by its `{verify}` value.
//!
//! Inbound: Sendmail serves each SMTP connection in its own child process, so the pid is the
//! session. `STARTTLS=server` gives the TLS parameters, `from=` lines the messages and
//! `proto=ESMTPS`/`ESMTPSA` (TLS) or `ESMTP`/`SMTP` (plaintext), which prove the outcome even
//! without TLS logging. Sendmail logs no disconnect: a session ends with `did not issue MAIL…`,
//! `lost input channel`, a line of the pid for another client, the idle timeout or the end.
//!
//! Lines `sm_syslog()` split (`QID[1]: … ...`, `QID[2]: …`) are joined per pid and queue id and
//! parsed again as one message.

use chrono::{DateTime, Utc};
use parsers::sendmail::{xtext_decode, Delivery, Event, From, Relay, Ruleset, Side, Starttls};
use rustc_hash::{FxHashMap, FxHashSet};

use super::postfix::Ctx;
use super::{LineMeta, ProcessKey, SourceId};
use crate::observation::{Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, TlsInfo, Trust};

/// Most reasons, queue ids and domains kept for one connection.
const MAX_ITEMS: usize = 64;
/// Most split messages being joined at once.
const MAX_SPLIT_MESSAGES: usize = 1024;
/// Most pieces and bytes of one split message (`sm_syslog()` gives up after about 20 pieces).
const MAX_PIECES: usize = 64;
const MAX_SPLIT_BYTES: usize = 64 * 1024;

/// Open connections of every Sendmail process.
#[derive(Debug, Default)]
pub struct State {
    /// Outbound, per pid.
    clients: FxHashMap<ProcessKey, Box<Connection>>,
    /// Inbound, per pid (one SMTP session per child process).
    servers: FxHashMap<ProcessKey, Box<Connection>>,
    /// Split messages being joined, per pid and queue id.
    pieces: FxHashMap<(ProcessKey, Box<str>), Split>,
    /// Instances that logged a `STARTTLS=` summary, per side (true: server).
    tls_logging_seen: FxHashSet<(u32, bool)>,
}

/// The pieces of one split message so far.
#[derive(Debug)]
struct Split {
    text: String,
    n_pieces: usize,
    meta: LineMeta,
    last_micros: i64,
}

/// What is known so far about one connection (either direction).
#[derive(Debug, Default)]
struct Connection {
    peer: PeerInfo,
    /// The address as logged, once a line gave one (the `STARTTLS=client` line has none).
    addr: Option<String>,
    first_micros: i64,
    last_micros: i64,
    source: Option<SourceId>,
    offset: u64,
    lines: u32,
    tls: Option<TlsInfo>,
    /// The `{verify}` value of the `STARTTLS=` line.
    verify: Option<String>,
    /// `STARTTLS=…, error: …`, `lost input channel … after starttls`.
    handshake: Option<String>,
    /// OpenSSL reasons and detail lines.
    reasons: Vec<String>,
    /// `ruleset=tls_server|tls_client, arg1=…, reject=…`: (arg1, reject).
    policy_reject: Option<(String, String)>,
    /// `warning=DANE configured in DNS but no STARTTLS available`.
    dane_no_starttls: Option<String>,
    queue_ids: Vec<String>,
    domains: Vec<String>,
    deliveries: u32,
    delivered: Option<bool>,
    /// Inbound `proto=` values seen: (any TLS, any plaintext).
    proto_tls: bool,
    proto_plain: bool,
    /// Inbound: a line shows the client got past EHLO (`from=`, `check_mail`/`check_rcpt`, no
    /// MAIL before the end), so a TLS-logging server would have logged STARTTLS by then.
    past_ehlo: bool,
    after_tls_failure: bool,
}

impl State {
    /// Connections currently open (split messages are part of the line that completes them).
    pub fn open(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    /// Adds the interned names this state refers to.
    pub fn names_in_use(&self, names: &mut FxHashSet<u32>) {
        names.extend(self.clients.keys().chain(self.servers.keys()).map(|key| key.name));
        names.extend(self.pieces.keys().map(|(key, _)| key.name));
        names.extend(self.tls_logging_seen.iter().map(|(name, _)| *name));
    }

    /// The offset of the earliest line of `source` that open state still needs.
    pub fn low_water(&self, source: SourceId) -> Option<u64> {
        self.open_processes(source).into_iter().map(|(_, offset)| offset).min()
    }

    /// The processes with open state from `source`, with the offset of its first line.
    pub fn open_processes(&self, source: SourceId) -> Vec<(ProcessKey, u64)> {
        let conns = self
            .clients
            .iter()
            .chain(self.servers.iter())
            .filter(|(_, conn)| conn.source == Some(source))
            .map(|(key, conn)| (*key, conn.offset));
        let splits = self
            .pieces
            .iter()
            .filter(|(_, split)| split.meta.source == source)
            .map(|((key, _), s)| (*key, s.meta.offset));
        conns.chain(splits).collect()
    }

    /// Handles one event from `process`.
    pub fn push(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        match event {
            Event::Piece { queue_id, seq, text, more } => self.piece(ctx, process, queue_id, *seq, text, *more),
            _ => self.event(ctx, process, event),
        }
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        match event {
            Event::Starttls(tls) => self.starttls(ctx, process, tls),
            Event::StarttlsError { side: Side::Client, reason, detail, .. } => {
                let conn = self
                    .client_pending(ctx, process, |c| c.tls.is_none() && c.handshake.is_none() && c.deliveries == 0);
                conn.handshake = Some(format!("STARTTLS=client, error: {detail}"));
                if let Some(reason) = reason {
                    push_bounded(&mut conn.reasons, reason);
                }
            }
            Event::StarttlsError { side: Side::Server, reason, detail, relay } => {
                let conn = match relay {
                    Some(relay) if relay.addr.is_some() => self.session_for(ctx, process, relay),
                    _ => self.session_any(ctx, process),
                };
                conn.handshake = Some(format!("STARTTLS=server, error: {detail}"));
                if let Some(reason) = reason {
                    push_bounded(&mut conn.reasons, reason);
                }
            }
            Event::StarttlsWarning { side: Side::Client, warning, .. } => {
                let conn = self.client_pending(ctx, process, |c| c.tls.is_none() && c.deliveries == 0);
                if warning.contains("no STARTTLS") || warning.contains("STARTTLS not offered") {
                    conn.dane_no_starttls = Some((*warning).to_owned());
                } else {
                    push_bounded(&mut conn.reasons, warning);
                }
            }
            Event::CertInfo { side, subject, issuer, verifymsg } => {
                // LogLevel > 11, right after the `STARTTLS=` summary of the same pid: the peer
                // certificate's names (xtext) and, when it did not verify, why.
                let failed = !(verifymsg.is_empty() || *verifymsg == "ok");
                let names = subject.is_some() || issuer.is_some();
                let conn = match side {
                    Side::Client => self.clients.get_mut(&process),
                    Side::Server => self.servers.get_mut(&process),
                };
                let Some(conn) = conn.filter(|c| failed || (names && c.tls.is_some())) else {
                    if failed {
                        ctx.counters.orphans += 1;
                    } else {
                        ctx.counters.ignored += 1;
                    }
                    return;
                };
                touch(conn, ctx.meta.ts_micros);
                match conn.tls.as_mut() {
                    Some(tls) => {
                        if names && tls.cert.is_none() {
                            tls.cert = Some(Cert {
                                subject: subject.map(xtext_decode),
                                issuer: issuer.map(xtext_decode),
                                ..Cert::default()
                            });
                        }
                        if failed {
                            push_bounded(&mut tls.verify_errors, verifymsg);
                        }
                    }
                    None => push_bounded(&mut conn.reasons, verifymsg),
                }
            }
            Event::StarttlsDetail { side: Some(side), reason } => {
                let conn = match side {
                    Side::Client => self.clients.get_mut(&process),
                    Side::Server => self.servers.get_mut(&process),
                };
                match conn {
                    Some(conn) => {
                        touch(conn, ctx.meta.ts_micros);
                        push_bounded(&mut conn.reasons, reason);
                    }
                    None => ctx.counters.orphans += 1,
                }
            }
            Event::StarttlsDetail { side: None, reason } => {
                // `STARTTLS: SSL_connect:failed in …`: belongs to the handshake of whichever side
                // of the pid is in one.
                let conn = self
                    .clients
                    .get_mut(&process)
                    .filter(|c| c.deliveries == 0)
                    .or_else(|| self.servers.get_mut(&process));
                match conn {
                    Some(conn) => {
                        touch(conn, ctx.meta.ts_micros);
                        push_bounded(&mut conn.reasons, reason);
                    }
                    None => ctx.counters.ignored += 1,
                }
            }
            Event::Ruleset(rule) => self.ruleset(ctx, process, rule),
            Event::From(from) => self.from(ctx, process, from),
            Event::Delivery(delivery) => self.delivery(ctx, process, delivery),
            Event::NoMail { relay, .. } => {
                // The client may have quit before EHLO: this proves nothing about STARTTLS.
                let conn = self.session_for(ctx, process, relay);
                conn.delivered.get_or_insert(false);
                self.end_session(ctx, process);
            }
            Event::LostInput { relay, after } => {
                let conn = self.session_for(ctx, process, relay);
                match after.map(str::to_ascii_lowercase).as_deref() {
                    Some("starttls") if conn.tls.is_none() => {
                        conn.handshake.get_or_insert_with(|| "lost input channel after STARTTLS".to_owned());
                    }
                    Some("mail" | "rcpt" | "data" | "quit") => conn.past_ehlo = true,
                    _ => {}
                }
                self.end_session(ctx, process);
            }
            _ => ctx.counters.ignored += 1,
        }
    }

    /// `QID[n]: …` pieces: joined per pid and queue id; the last one is parsed as one message.
    fn piece(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, queue_id: &str, seq: u32, text: &str, more: bool) {
        let key = (process, Box::<str>::from(queue_id));
        if seq == 1 || !self.pieces.contains_key(&key) {
            if self.pieces.len() >= MAX_SPLIT_MESSAGES {
                // Bounded: the oldest half-joined message is given up (counted).
                if let Some(oldest) = self.pieces.iter().min_by_key(|(_, s)| s.last_micros).map(|(k, _)| k.clone()) {
                    self.pieces.remove(&oldest);
                    ctx.counters.evicted += 1;
                }
            }
            let split = Split { text: format!("{queue_id}: "), n_pieces: 0, meta: ctx.meta, last_micros: 0 };
            self.pieces.insert(key.clone(), split);
        }
        let Some(split) = self.pieces.get_mut(&key) else { return };
        let terminated = text == "log terminated, too many parts";
        if !terminated && split.n_pieces < MAX_PIECES && split.text.len() + text.len() <= MAX_SPLIT_BYTES {
            split.text.push_str(text);
        }
        split.n_pieces += 1;
        split.last_micros = ctx.meta.ts_micros;
        if more && !terminated {
            return;
        }
        let Some(split) = self.pieces.remove(&key) else { return };
        let meta = ctx.meta;
        // The joined message stands where its first piece is: a restarted reader replays from
        // there, and its event id is that of the first piece.
        ctx.meta = split.meta;
        match parsers::sendmail::parse_message(&split.text) {
            Ok(Event::Piece { .. }) | Err(_) => ctx.counters.ignored += 1,
            Ok(event) => self.event(ctx, process, &event),
        }
        ctx.meta = meta;
    }

    fn starttls(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, tls: &Starttls<'_>) {
        super::note_evidence(&mut self.tls_logging_seen, (process.name, tls.side == Side::Server));
        let info = TlsInfo {
            trust: trust(tls.verify),
            protocol: Some(tls.version.to_owned()),
            cipher: Some(tls.cipher.to_owned()),
            bits: tls.bits,
            alg_bits: tls.alg_bits,
            ..TlsInfo::default()
        };
        let conn = match tls.side {
            // A new handshake is a new connection, unless only its error detail came first.
            Side::Client => self.client_pending(ctx, process, |c| c.tls.is_none() && c.deliveries == 0),
            Side::Server => match tls.relay.addr {
                Some(_) => self.session_for(ctx, process, &tls.relay),
                None => self.session_any(ctx, process),
            },
        };
        if conn.tls.is_some() {
            // A second handshake on one session (pid reuse): start over.
            conn.reasons.clear();
        }
        if let Some(queue_id) = tls.queue_id {
            push_bounded(&mut conn.queue_ids, queue_id);
        }
        if conn.addr.is_none() && conn.peer == PeerInfo::default() {
            // The client side names the host only (`relay=mx.example.` or `[192.0.2.9]`); the
            // `to=` line that follows gives the address.
            conn.peer = peer_info(&tls.relay);
        }
        conn.verify = Some(tls.verify.to_owned());
        conn.tls = Some(info);
    }

    fn ruleset(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, rule: &Ruleset<'_>) {
        let inbound_peer = rule.relay.filter(|relay| relay.addr.is_some());
        match (rule.name, inbound_peer) {
            ("tls_server" | "tls_rcpt", _) => {
                let Some(reject) = rule.reject else {
                    ctx.counters.ignored += 1;
                    return;
                };
                let conn = self.client_pending(ctx, process, |c| c.deliveries == 0);
                // `tls_rcpt`'s `arg1` is the recipient: its `{verify}` is in the reject text
                // (`… rcpt=bob@example.net, verify=FAIL`), or the connection's STARTTLS line.
                let verify = if rule.name == "tls_rcpt" {
                    verify_in(reject).or(conn.verify.as_deref()).unwrap_or("").to_owned()
                } else {
                    rule.arg1.to_owned()
                };
                conn.policy_reject = Some((verify, reject.to_owned()));
            }
            (name, Some(relay)) => {
                let conn = self.session_for(ctx, process, &relay);
                if let Some(queue_id) = rule.queue_id {
                    push_bounded(&mut conn.queue_ids, queue_id);
                }
                match (name, rule.reject) {
                    ("tls_client", Some(reject)) => {
                        conn.policy_reject = Some((rule.arg1.to_owned(), reject.to_owned()));
                    }
                    ("check_mail" | "check_rcpt" | "check_data" | "check_eoh" | "check_eom", _) => {
                        conn.past_ehlo = true;
                    }
                    _ => {}
                }
            }
            (_, None) => ctx.counters.ignored += 1,
        }
    }

    fn from(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, from: &From<'_>) {
        let Some(relay) = from.relay.filter(|relay| relay.addr.is_some()) else {
            // A local submission (`relay=root@localhost`) or a queue-file line: no SMTP peer.
            ctx.counters.local_deliveries += 1;
            return;
        };
        let conn = self.session_for(ctx, process, &relay);
        conn.past_ehlo = true;
        push_bounded(&mut conn.queue_ids, from.queue_id);
        match from.proto.map(proto_uses_tls) {
            Some(Some(true)) => conn.proto_tls = true,
            Some(Some(false)) => conn.proto_plain = true,
            _ => {}
        }
        let accepted = from.nrcpts.is_none_or(|n| n > 0);
        conn.delivered = Some(conn.delivered.unwrap_or(false) || accepted);
    }

    fn delivery(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, delivery: &Delivery<'_>) {
        let mailer = delivery.mailer.unwrap_or("");
        if matches!(mailer, "local" | "prog" | "*file*" | "*include*") {
            ctx.counters.local_deliveries += 1;
            return;
        }
        let Some(relay) = delivery.relay else {
            // `stat=queued` (DeliveryMode queue, load average): no connection was made.
            ctx.counters.ignored += 1;
            return;
        };
        let now = ctx.meta.ts_micros;
        let seen = &self.tls_logging_seen;
        let addr = relay.addr;
        let mut fallback = false;
        let join = match self.clients.get(&process) {
            // A STARTTLS line (or its error) waiting for the delivery that names its peer; a
            // delivery to another host (the next MX) leaves it an observation of its own.
            Some(conn) if conn.addr.is_none() && conn.deliveries == 0 => {
                if !same_relay(&conn.peer, &relay) {
                    false
                } else if conn.handshake.is_some() && conn.tls.is_none() && delivery.sent() {
                    // The handshake failed and the message went anyway: Sendmail retried in clear.
                    fallback = true;
                    false
                } else {
                    true
                }
            }
            // The cached connection to the same address.
            Some(conn) => addr.is_some() && conn.addr.as_deref() == addr && conn.policy_reject.is_none(),
            None => false,
        };
        if !join {
            if let Some(mut old) = self.clients.remove(&process) {
                if fallback {
                    bind(&mut old, &relay);
                    old.delivered.get_or_insert(false);
                }
                emit(seen, ctx, process, Direction::Outbound, old);
            }
            if addr.is_none() {
                // No connection was made (`Deferred: Connection refused by …`, host unknown).
                ctx.counters.ignored += 1;
                return;
            }
            let mut conn = Connection::new(&ctx.meta);
            conn.after_tls_failure = fallback;
            self.clients.insert(process, conn);
        }
        let Some(conn) = self.clients.get_mut(&process) else { return };
        if join {
            touch(conn, now);
        }
        if conn.addr.is_none() {
            bind(conn, &relay);
        }
        conn.deliveries += 1;
        push_bounded(&mut conn.queue_ids, delivery.queue_id);
        for rcpt in delivery.recipients() {
            if let Some((_, domain)) = rcpt.rsplit_once('@') {
                let domain = domain.to_ascii_lowercase();
                if !domain.is_empty() && conn.domains.len() < MAX_ITEMS && !conn.domains.contains(&domain) {
                    conn.domains.push(domain);
                }
            }
        }
        conn.delivered = Some(conn.delivered.unwrap_or(false) || delivery.sent());
        if conn.policy_reject.is_some() || conn.dane_no_starttls.is_some() {
            // The policy ended this connection.
            if let Some(conn) = self.clients.remove(&process) {
                emit(seen, ctx, process, Direction::Outbound, conn);
            }
        }
    }

    /// The client connection of `process` that a line with no peer belongs to: the open one
    /// when `joinable` says so, otherwise a new one (the open one is emitted).
    fn client_pending(
        &mut self,
        ctx: &mut Ctx<'_>,
        process: ProcessKey,
        joinable: impl Fn(&Connection) -> bool,
    ) -> &mut Connection {
        let now = ctx.meta.ts_micros;
        let keep = self.clients.get(&process).is_some_and(|c| joinable(c));
        if !keep {
            if let Some(old) = self.clients.remove(&process) {
                emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, old);
            }
            self.clients.insert(process, Connection::new(&ctx.meta));
        }
        let conn = self.clients.entry(process).or_insert_with(|| Connection::new(&ctx.meta));
        if keep {
            touch(conn, now);
        }
        conn
    }

    /// The session of `process` with the client `relay`: the open one when it has the same
    /// address (or none yet), otherwise a new one (the open one is emitted).
    fn session_for(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, relay: &Relay<'_>) -> &mut Connection {
        let now = ctx.meta.ts_micros;
        let keep = self.servers.get(&process).is_some_and(|c| c.addr.is_none() || c.addr.as_deref() == relay.addr);
        if !keep {
            if let Some(old) = self.servers.remove(&process) {
                emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, old);
            }
            self.servers.insert(process, Connection::new(&ctx.meta));
        }
        let conn = self.servers.entry(process).or_insert_with(|| Connection::new(&ctx.meta));
        if keep {
            touch(conn, now);
        }
        if conn.addr.is_none() {
            bind(conn, relay);
        }
        conn
    }

    /// The open session of `process` whatever its peer, or a new one without a peer.
    fn session_any(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey) -> &mut Connection {
        let now = ctx.meta.ts_micros;
        let meta = ctx.meta;
        let mut fresh = false;
        let conn = self.servers.entry(process).or_insert_with(|| {
            fresh = true;
            Connection::new(&meta)
        });
        if !fresh {
            touch(conn, now);
        }
        conn
    }

    fn end_session(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey) {
        if let Some(conn) = self.servers.remove(&process) {
            emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, conn);
        }
    }

    /// Emits every open connection.
    pub fn flush_all(&mut self, ctx: &mut Ctx<'_>) {
        let keys: Vec<_> = self.pieces.keys().cloned().collect();
        for (process, queue_id) in keys {
            // An unfinished split message: parse what arrived (its pieces are in the log).
            self.piece(ctx, process, &queue_id, u32::MAX, "", false);
        }
        let mut clients: Vec<_> = self.clients.drain().collect();
        clients.sort_by_key(|(_, conn)| (conn.first_micros, conn.offset));
        for (process, conn) in clients {
            emit(&self.tls_logging_seen, ctx, process, Direction::Outbound, conn);
        }
        let mut servers: Vec<_> = self.servers.drain().collect();
        servers.sort_by_key(|(_, conn)| (conn.first_micros, conn.offset));
        for (process, conn) in servers {
            emit(&self.tls_logging_seen, ctx, process, Direction::Inbound, conn);
        }
    }

    /// Emits connections idle since before `cutoff_micros`, and the oldest ones while more than
    /// `max_open` are open.
    pub fn sweep(&mut self, ctx: &mut Ctx<'_>, cutoff_micros: i64) {
        let idle_splits: Vec<_> =
            self.pieces.iter().filter(|(_, s)| s.last_micros < cutoff_micros).map(|(k, _)| k.clone()).collect();
        for (process, queue_id) in idle_splits {
            ctx.counters.expired += 1;
            self.piece(ctx, process, &queue_id, u32::MAX, "", false);
        }
        for inbound in [false, true] {
            let map = if inbound { &self.servers } else { &self.clients };
            let mut idle: Vec<_> = map
                .iter()
                .filter(|(_, c)| c.last_micros < cutoff_micros)
                .map(|(k, c)| (c.first_micros, c.offset, *k))
                .collect();
            idle.sort_unstable_by_key(|(first, offset, _)| (*first, *offset));
            for (_, _, process) in idle {
                let map = if inbound { &mut self.servers } else { &mut self.clients };
                if let Some(conn) = map.remove(&process) {
                    ctx.counters.expired += 1;
                    let direction = if inbound { Direction::Inbound } else { Direction::Outbound };
                    emit(&self.tls_logging_seen, ctx, process, direction, conn);
                }
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
                .chain(self.servers.iter().map(|(k, c)| (c.last_micros, true, *k)))
                .collect();
            by_age.sort_unstable_by_key(|(last, _, _)| *last);
            let n_evict = by_age.len().saturating_sub(target);
            for (_, inbound, process) in by_age.into_iter().take(n_evict) {
                let (map, direction) = if inbound {
                    (&mut self.servers, Direction::Inbound)
                } else {
                    (&mut self.clients, Direction::Outbound)
                };
                if let Some(conn) = map.remove(&process) {
                    ctx.counters.evicted += 1;
                    emit(&self.tls_logging_seen, ctx, process, direction, conn);
                }
            }
        }
    }
}

impl Connection {
    fn new(meta: &LineMeta) -> Box<Connection> {
        Box::new(Connection {
            first_micros: meta.ts_micros,
            last_micros: meta.ts_micros,
            source: Some(meta.source),
            offset: meta.offset,
            lines: 1,
            ..Connection::default()
        })
    }
}

/// Records one more line of a connection.
fn touch(conn: &mut Connection, now: i64) {
    conn.lines += 1;
    conn.last_micros = conn.last_micros.max(now);
}

/// Whether a `to=` line's relay is the host a `STARTTLS=client` line named (`peer`): the same
/// name (case and a final dot aside; one may be cut short when long) or, for `[ip]` relays, the
/// same address; `true` when either side names nothing to compare.
fn same_relay(peer: &PeerInfo, relay: &Relay<'_>) -> bool {
    let theirs = peer_info(relay);
    match (&peer.hostname, &theirs.hostname) {
        (Some(a), Some(b)) => {
            let a = a.trim_end_matches('.').to_ascii_lowercase();
            let b = b.trim_end_matches('.').to_ascii_lowercase();
            let (short, long) = if a.len() <= b.len() { (&a, &b) } else { (&b, &a) };
            a == b || (short.len() >= 40 && long.starts_with(short.as_str()))
        }
        _ => match (&peer.ip, &theirs.ip) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        },
    }
}

/// Gives a connection its peer.
fn bind(conn: &mut Connection, relay: &Relay<'_>) {
    conn.addr = relay.addr.map(str::to_owned);
    conn.peer = peer_info(relay);
}

/// `host [ip]` → PeerInfo; `[ip]` and `[IPv6:…]` hosts give no name (but an address when the
/// relay has no other, as on `STARTTLS=client, relay=[192.0.2.9]`).
fn peer_info(relay: &Relay<'_>) -> PeerInfo {
    let hostname = match relay.host {
        "" => None,
        host if host.starts_with('[') => None,
        host => Some(host.to_owned()),
    };
    let literal = relay.host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ip = relay.addr.or(literal).and_then(|addr| {
        let addr = addr.strip_prefix("IPv6:").or_else(|| addr.strip_prefix("ipv6:")).unwrap_or(addr);
        super::canonical_ip(addr)
    });
    PeerInfo { hostname, ip, port: None }
}

/// The trust a `{verify}` value on a `STARTTLS=` line stands for (FORMATS.md §4.1).
fn trust(verify: &str) -> Option<Trust> {
    match verify {
        "TRUSTED" => Some(Trust::Verified),
        "OK" => Some(Trust::Trusted),
        "FAIL" | "DANE_FAIL" => Some(Trust::Untrusted),
        "NO" | "NOT" => Some(Trust::Anonymous),
        _ => None,
    }
}

/// `proto=`: `Some(true)` for TLS (`ESMTPS`, `ESMTPSA`, `SMTPS`), `Some(false)` for plaintext
/// (`ESMTP`, `ESMTPA`, `SMTP`), `None` for anything else (`LMTP`, local).
fn proto_uses_tls(proto: &str) -> Option<bool> {
    let upper = proto.to_ascii_uppercase();
    let base = upper.strip_suffix('A').unwrap_or(&upper);
    match base {
        "ESMTPS" | "SMTPS" => Some(true),
        "ESMTP" | "SMTP" => Some(false),
        _ => None,
    }
}

fn push_bounded(items: &mut Vec<String>, item: &str) {
    if items.len() < MAX_ITEMS && !items.iter().any(|have| have == item) {
        items.push(item.to_owned());
    }
}

/// The `verify=` value a `tls_rcpt` reject text names (`… rcpt=bob@example.net, verify=FAIL`).
fn verify_in(reject: &str) -> Option<&str> {
    let at = reject.rfind("verify=")?;
    let value = &reject[at + "verify=".len()..];
    let end = value.find([',', ' ', ')']).unwrap_or(value.len());
    Some(&value[..end]).filter(|v| !v.is_empty())
}

/// The verdict of a `tls_server`/`tls_client` reject by its `{verify}` value (FORMATS.md §4.1).
fn policy_verdict(arg1: &str, reject: &str) -> (Outcome, Failure) {
    let reason = format!("verify={arg1}: {reject}");
    let (outcome, kind) = match arg1 {
        "NONE" | "DANE_NOTLS" => (Outcome::TlsRequiredMissing, "starttls-not-supported"),
        "FAIL" => (Outcome::CertVerifyFailed, "certificate-not-trusted"),
        "NO" | "NOT" | "OK" | "TRUSTED" | "DANE_FAIL" | "DANE_TEMP" | "BOGUS_DANE_RES" => {
            (Outcome::CertVerifyFailed, "validation-failure")
        }
        "CONFIG" | "USAGE" => (Outcome::HandshakeFailed, "local-policy"),
        // SOFTWARE (the handshake failed), TEMP, PROTOCOL, FAILURE, CLEAR.
        _ => (Outcome::HandshakeFailed, "validation-failure"),
    };
    (outcome, Failure { kind: kind.to_owned(), reason })
}

/// An RFC 8460 result type for handshake reasons.
fn reasons_kind(reasons: &[String]) -> &'static str {
    for reason in reasons {
        let reason = reason.to_ascii_lowercase();
        if reason.contains("expired") {
            return "certificate-expired";
        }
        if reason.contains("unknown ca")
            || reason.contains("self signed")
            || reason.contains("self-signed")
            || reason.contains("certificate verify failed")
            || reason.contains("local issuer")
        {
            return "certificate-not-trusted";
        }
    }
    "validation-failure"
}

/// The handshake error and the reasons logged with it, `; `-separated.
fn handshake_reason(detail: &str, reasons: &[String]) -> String {
    let mut reason = detail.to_owned();
    for extra in reasons {
        if !detail.contains(extra.as_str()) {
            reason.push_str("; ");
            reason.push_str(extra);
        }
    }
    reason
}

fn verdict(
    conn: &mut Connection,
    direction: Direction,
    tls_logged: bool,
) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    if let Some((arg1, reject)) = &conn.policy_reject {
        let (outcome, mut failure) = policy_verdict(arg1, reject);
        if let (Outcome::HandshakeFailed, Some(detail)) = (outcome, &conn.handshake) {
            // The handshake error line says why; the ruleset line only that it was refused.
            failure.kind = reasons_kind(&conn.reasons).to_owned();
            failure.reason = handshake_reason(detail, &conn.reasons) + "; " + &failure.reason;
        }
        let tls = if outcome == Outcome::CertVerifyFailed { conn.tls.take() } else { None };
        return (outcome, Some(failure), tls);
    }
    if let Some(tls) = conn.tls.take() {
        if conn.verify.as_deref() == Some("DANE_FAIL") {
            let failure = Failure { kind: "validation-failure".to_owned(), reason: "verify=DANE_FAIL".to_owned() };
            return (Outcome::CertVerifyFailed, Some(failure), Some(tls));
        }
        return (Outcome::Tls, None, Some(tls));
    }
    if let Some(detail) = &conn.handshake {
        let reason = handshake_reason(detail, &conn.reasons);
        let failure = Failure { kind: reasons_kind(&conn.reasons).to_owned(), reason };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    if let Some(warning) = &conn.dane_no_starttls {
        // DANE made TLS mandatory for the peer (FORMATS.md §4.2), as Postfix's `TLS is
        // required, but was not offered` is.
        let failure = Failure { kind: "starttls-not-supported".to_owned(), reason: warning.clone() };
        return (Outcome::TlsRequiredMissing, Some(failure), None);
    }
    match direction {
        Direction::Outbound => {
            if conn.after_tls_failure {
                return (Outcome::Plaintext, None, None);
            }
            if conn.deliveries > 0 && tls_logged {
                return (Outcome::Plaintext, None, None);
            }
            (Outcome::Unknown, None, None)
        }
        Direction::Inbound => {
            if conn.proto_tls {
                // TLS logging is off (LogLevel < 9), but `proto=ESMTPS` proves TLS.
                return (Outcome::Tls, None, Some(TlsInfo::default()));
            }
            if conn.proto_plain || (tls_logged && conn.past_ehlo) {
                return (Outcome::Plaintext, None, None);
            }
            (Outcome::Unknown, None, None)
        }
    }
}

/// Turns a finished connection into an [`Observation`] in `ctx.out`.
fn emit(
    tls_logging_seen: &FxHashSet<(u32, bool)>,
    ctx: &mut Ctx<'_>,
    process: ProcessKey,
    direction: Direction,
    conn: Box<Connection>,
) {
    let mut conn = *conn;
    let tls_logged = ctx.tls_logged(tls_logging_seen.contains(&(process.name, direction == Direction::Inbound)));
    let (reporter, instance) = ctx.names.get(process.name);
    let (source, event_id) = ctx.source_and_event_id(conn.source, conn.offset);
    let (outcome, failure, tls) = verdict(&mut conn, direction, tls_logged);
    ctx.out.push(Observation {
        ts: micros_to_datetime(conn.first_micros),
        end_ts: micros_to_datetime(conn.last_micros),
        mta: Mta::Sendmail,
        reporter,
        instance,
        direction,
        peer: conn.peer,
        domains: conn.domains,
        queue_ids: conn.queue_ids,
        outcome,
        tls,
        failure,
        delivered: conn.delivered,
        tls_feature: None,
        conn_use: None,
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

    /// Runs `lines` (RFC 3164, year 2026, UTC) through a correlator; offsets step by 100.
    fn run_with(lines: &[&str], config: Config) -> (Vec<Observation>, Counters, Vec<Option<u64>>) {
        let mut correlator = Correlator::new(config);
        let source =
            correlator.add_source(Source { kind: "file".to_owned(), name: "t".to_owned(), trust: "local".to_owned() });
        let mut years = parsers::YearInference::new(2026, 12);
        let mut clock = crate::clock::LogClock::new(crate::clock::Zone::Utc);
        let (mut out, mut marks) = (Vec::new(), Vec::new());
        for (idx, line) in lines.iter().enumerate() {
            let record = parsers::parse_line(line, &mut years).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(matches!(record.body, parsers::Body::Sendmail(_)), "not a Sendmail record: {line}");
            let ts_micros = clock.micros(record.header.timestamp.as_ref().unwrap());
            correlator.push(&record, LineMeta { source, offset: idx as u64 * 100, ts_micros }, &mut out);
            marks.push(correlator.low_water(source));
        }
        correlator.finish(&mut out);
        (out, correlator.counters().clone(), marks)
    }

    fn run(lines: &[&str], tls_logging: TlsLogging) -> Vec<Observation> {
        run_with(lines, Config { tls_logging, ..Config::default() }).0
    }

    #[test]
    fn tls_rcpt_reads_verify_from_its_reject_and_dane_without_starttls_is_required_tls() {
        let out = run(
            &[
                "Nov 30 16:00:00 mx sm-mta[5000]: STARTTLS=client, relay=mx.partner.example., version=TLSv1.3, verify=FAIL, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
                "Nov 30 16:00:00 mx sm-mta[5000]: 5AUG0000005000: ruleset=tls_rcpt, arg1=<bob@partner.example>, relay=mx.partner.example., reject=454 4.7.0 rcpt=bob@partner.example, verify=FAIL",
                "Nov 30 16:00:01 mx sm-mta[5000]: 5AUG0000005000: to=<bob@partner.example>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.partner.example. [192.0.2.50], dsn=4.7.0, stat=Deferred: 454 4.7.0 rcpt=bob@partner.example, verify=FAIL",
                "Nov 30 10:06:00 mx sm-mta[2007]: STARTTLS=client, relay=mx.nodane.example., warning=DANE configured in DNS but no STARTTLS available",
                "Nov 30 10:06:01 mx sm-mta[2007]: 5AUA07aa002007: to=<ivy@nodane.example>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30442, relay=mx.nodane.example. [203.0.113.7], dsn=4.7.0, stat=Deferred: 403 4.7.0 DANE: STARTTLS not offered",
            ],
            TlsLogging::Auto,
        );
        let by_ip = |ip: &str| {
            out.iter().find(|o| o.peer.ip.as_deref() == Some(ip)).unwrap_or_else(|| panic!("{ip}: {out:#?}"))
        };
        let rcpt = by_ip("192.0.2.50");
        assert_eq!(rcpt.outcome, Outcome::CertVerifyFailed);
        assert_eq!(rcpt.failure.as_ref().map(|f| f.kind.as_str()), Some("certificate-not-trusted"));
        assert_eq!(rcpt.tls.as_ref().and_then(|t| t.trust), Some(Trust::Untrusted));
        assert_eq!(by_ip("203.0.113.7").outcome, Outcome::TlsRequiredMissing);
    }

    #[test]
    fn a_starttls_line_is_not_given_to_a_delivery_to_another_mx() {
        let out = run(&[
            "Nov 30 13:45:10 mx sm-mta[1400]: STARTTLS=client, relay=mx1.multi.example., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
            "Nov 30 13:45:12 mx sm-mta[1400]: 5AUDZCk0001400: to=<u@multi.example>, delay=00:00:02, xdelay=00:00:02, mailer=esmtp, pri=30442, relay=mx2.multi.example. [203.0.113.12], dsn=2.0.0, stat=Sent (ok)",
            // The same host, spelled with another case and no final dot: one connection.
            "Nov 30 13:46:10 mx sm-mta[1401]: STARTTLS=client, relay=MX1.Other.Example., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
            "Nov 30 13:46:12 mx sm-mta[1401]: 5AUDZCk0001401: to=<u@other.example>, delay=00:00:02, xdelay=00:00:02, mailer=esmtp, pri=30442, relay=mx1.other.example [203.0.113.13], dsn=2.0.0, stat=Sent (ok)",
        ], TlsLogging::Auto);
        let got: Vec<_> =
            out.iter().map(|o| (o.peer.hostname.as_deref(), o.peer.ip.as_deref(), o.outcome, o.delivered)).collect();
        assert!(got.contains(&(Some("mx1.multi.example."), None, Outcome::Tls, None)), "{got:?}");
        assert!(
            got.iter().any(|o| o.1 == Some("203.0.113.12") && o.2 != Outcome::Tls && o.3 == Some(true)),
            "mx2 has no TLS of its own: {got:?}"
        );
        assert!(got.iter().any(|o| o.1 == Some("203.0.113.13") && o.2 == Outcome::Tls), "{got:?}");
        assert_eq!(out.len(), 3, "{out:#?}");
    }

    const TLS_CLIENT: &str = "Nov 30 10:00:00 mx sm-mta[100]: STARTTLS=client, relay=mx.example., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256";
    const TO_A: &str = "Nov 30 10:00:01 mx sm-mta[100]: 5AUA01aa000100: to=<b@example.net>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=1, relay=mx.example. [192.0.2.1], dsn=2.0.0, stat=Sent (ok)";
    const TO_PLAIN: &str = "Nov 30 10:00:02 mx sm-mta[200]: 5AUA02aa000200: to=<c@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=1, relay=mx.example.org. [192.0.2.2], dsn=2.0.0, stat=Sent (ok)";

    #[test]
    fn plaintext_outbound_only_when_tls_logging_is_known() {
        // Auto: the instance logged STARTTLS=client before, so the bare to= line is plaintext.
        let got = run(&[TLS_CLIENT, TO_A, TO_PLAIN], TlsLogging::Auto);
        let outcomes: Vec<_> = got.iter().map(|o| (o.peer.ip.as_deref(), o.outcome)).collect();
        assert_eq!(outcomes, [(Some("192.0.2.1"), Outcome::Tls), (Some("192.0.2.2"), Outcome::Plaintext)]);
        // Without any STARTTLS line, or with TLS logging off: unknown.
        assert_eq!(run(&[TO_PLAIN], TlsLogging::Auto)[0].outcome, Outcome::Unknown);
        assert_eq!(run(&[TLS_CLIENT, TO_A, TO_PLAIN], TlsLogging::Off)[1].outcome, Outcome::Unknown);
        assert_eq!(run(&[TO_PLAIN], TlsLogging::On)[0].outcome, Outcome::Plaintext);
    }

    #[test]
    fn a_handshake_error_after_a_delivery_starts_a_new_connection() {
        let error = "Nov 30 10:00:03 mx sm-mta[200]: STARTTLS=client, error: connect failed=0, SSL_error=5";
        let again = "Nov 30 10:00:04 mx sm-mta[200]: 5AUA03aa000200: to=<d@example.org>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=1, relay=mx.example.org. [192.0.2.2], dsn=4.0.0, stat=Deferred";
        let got = run(&[TLS_CLIENT, TO_A, TO_PLAIN, error, again], TlsLogging::Auto);
        let outcomes: Vec<_> = got.iter().map(|o| (o.peer.ip.as_deref(), o.outcome, o.delivered)).collect();
        assert_eq!(
            outcomes,
            [
                (Some("192.0.2.2"), Outcome::Plaintext, Some(true)),
                (Some("192.0.2.1"), Outcome::Tls, Some(true)),
                (Some("192.0.2.2"), Outcome::HandshakeFailed, Some(false)),
            ]
        );
        // A STARTTLS line whose delivery line never came still names its peer.
        let got = run(&[TLS_CLIENT], TlsLogging::Auto);
        assert_eq!((got[0].peer.hostname.as_deref(), got[0].outcome), (Some("mx.example."), Outcome::Tls));
        let literal = TLS_CLIENT.replace("relay=mx.example.", "relay=[192.0.2.9]");
        let got = run(&[&literal], TlsLogging::Auto);
        assert_eq!((got[0].peer.hostname.as_deref(), got[0].peer.ip.as_deref()), (None, Some("192.0.2.9")));
    }

    #[test]
    fn loglevel_12_certificate_names_become_the_observations_certificate() {
        let cert = "Nov 30 10:00:00 mx sm-mta[100]: STARTTLS=client, cert-subject=/C=DE/O=Example+20GmbH/CN=mx.example, cert-issuer=/CN=Lab+20CA, verifymsg=ok";
        let got = run(&[TLS_CLIENT, cert, TO_A], TlsLogging::Auto);
        assert_eq!((got.len(), got[0].outcome, got[0].lines), (1, Outcome::Tls, 3));
        let tls = got[0].tls.as_ref().unwrap();
        let names = tls.cert.as_ref().map(|c| (c.subject.as_deref(), c.issuer.as_deref()));
        assert_eq!(names, Some((Some("/C=DE/O=Example GmbH/CN=mx.example"), Some("/CN=Lab CA"))));
        assert!(tls.verify_errors.is_empty());
        // A failed verification keeps the names and the reason; a line without a connection
        // before it is counted, not guessed.
        let failed = cert.replace("verifymsg=ok", "verifymsg=self signed certificate");
        let got = run(&[TLS_CLIENT, &failed, TO_A], TlsLogging::Auto);
        let tls = got[0].tls.as_ref().unwrap();
        assert_eq!(tls.cert.as_ref().and_then(|c| c.issuer.as_deref()), Some("/CN=Lab CA"));
        assert_eq!(tls.verify_errors, ["self signed certificate"]);
        let (got, counters, _) = run_with(&[cert, TO_PLAIN], Config::default());
        assert!(got.iter().all(|o| o.tls.is_none()));
        assert_eq!(counters.ignored, 1, "{counters:?}");
    }

    #[test]
    fn a_new_starttls_line_is_a_new_connection_to_the_same_host() {
        let got = run(&[TLS_CLIENT, TO_A, TLS_CLIENT, TO_A], TlsLogging::Auto);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|o| o.outcome == Outcome::Tls && o.lines == 2));
        assert_ne!(got[0].event_id, got[1].event_id);
    }

    #[test]
    fn state_is_bounded_and_expiry_is_counted() {
        let lines: Vec<String> = (0..50)
            .map(|idx| format!("Nov 30 10:00:{:02} mx sm-mta[{}]: STARTTLS=server, relay=c [192.0.2.{idx}], version=TLSv1.3, verify=NO, cipher=X, bits=256/256", idx % 60, 1000 + idx))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let (got, counters, _) = run_with(&refs, Config { max_open: 10, ..Config::default() });
        assert_eq!(got.len(), 50, "every session is emitted once");
        assert!(counters.evicted >= 40 - 10, "{counters:?}");
        // A session idle for longer than the timeout is emitted when a later line sweeps.
        let late = "Nov 30 10:20:00 mx sm-mta[9]: starting daemon (8.17.1.9): SMTP";
        let (got, counters, marks) = run_with(&[&lines[0], late], Config::default());
        assert_eq!((got.len(), counters.expired), (1, 1));
        assert_eq!(marks, [Some(0), None], "the low-water mark follows open sessions");
    }

    #[test]
    fn split_messages_are_joined_and_hold_the_low_water_mark() {
        let lines = [
            "Nov 30 11:00:00 mx sm-mta[300]: 5AUB08aa000300[1]: from=<a@example.org>, size=1, class=0, nrcpts=1, ...",
            "Nov 30 11:00:00 mx sm-mta[300]: 5AUB08aa000300[2]:  proto=ESMTP, daemon=MTA, relay=c.example.org [192.0.2.9]",
        ];
        let (got, _, marks) = run_with(&lines, Config::default());
        assert_eq!(marks, [Some(0), Some(0)], "the session starts at the first piece");
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].outcome, got[0].peer.ip.as_deref()), (Outcome::Plaintext, Some("192.0.2.9")));
        assert_eq!(got[0].event_id, crate::observation::event_id("t", 0));
        // A message whose last piece never comes is still parsed at the end of input.
        let (got, _, _) = run_with(&lines[..1], Config::default());
        assert!(got.is_empty(), "a from= piece without relay names no peer: {got:?}");
        // `log terminated, too many parts` ends a message.
        let terminated = "Nov 30 11:00:00 mx sm-mta[300]: 5AUB08aa000300[2]: log terminated, too many parts";
        let (_, counters, marks) = run_with(&[lines[0], terminated], Config::default());
        assert_eq!(marks[1], None);
        assert_eq!(counters.local_deliveries, 1);
    }

    #[test]
    fn inbound_sessions_by_pid() {
        let got = run(
            &[
                "Nov 30 12:00:00 mx sm-mta[400]: STARTTLS=server, relay=a.example [192.0.2.10], version=TLSv1.2, verify=OK, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256/256",
                "Nov 30 12:00:01 mx sm-mta[400]: 5AUC01aa000400: from=<x@a.example>, size=1, class=0, nrcpts=1, proto=ESMTPS, daemon=MTA, relay=a.example [192.0.2.10]",
                "Nov 30 12:00:02 mx sm-mta[400]: 5AUC01ab000400: from=<y@a.example>, size=1, class=0, nrcpts=0, proto=ESMTPS, daemon=MTA, relay=a.example [192.0.2.10]",
                // The pid names another client: the first session ended.
                "Nov 30 12:10:00 mx sm-mta[400]: 5AUC02aa000400: from=<z@b.example>, size=1, class=0, nrcpts=1, proto=ESMTPSA, daemon=MTA, relay=[192.0.2.11]",
            ],
            TlsLogging::Off,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].queue_ids.len(), 2);
        assert_eq!(got[0].tls.as_ref().and_then(|t| t.trust), Some(Trust::Trusted));
        assert_eq!(got[0].delivered, Some(true));
        // proto=ESMTPSA proves TLS even with TLS logging off, without the parameters.
        assert_eq!((got[1].outcome, got[1].tls.as_ref().and_then(|t| t.trust)), (Outcome::Tls, None));
        assert_eq!(got[1].peer.hostname, None);
    }

    #[test]
    fn proto_values() {
        for (proto, want) in [
            ("ESMTPS", Some(true)),
            ("ESMTPSA", Some(true)),
            ("esmtps", Some(true)),
            ("ESMTP", Some(false)),
            ("ESMTPA", Some(false)),
            ("SMTP", Some(false)),
            ("LMTP", None),
            ("", None),
        ] {
            assert_eq!(proto_uses_tls(proto), want, "{proto}");
        }
    }
}
