//! OpenSMTPD join rules: one observation per session id (research/FORMATS.md §5).
//!
//! Every session line starts with a 16-hex session id that joins connect → TLS → certificate
//! check → delivery → disconnect; the key here is (reporter+instance, session id), never the pid
//! (one smtpd process logs many sessions at once). Inbound sessions (`smtp`) open on
//! `smtp connected` and end on `smtp disconnected`; outbound ones (`mta`) open on
//! `mta connecting address=<scheme>://…` and end on `mta disconnected` or `mta error`. The scheme
//! is our TLS policy for the attempt: `smtp://` opportunistic, `smtp+tls://` and `smtps://`
//! required (a valid certificate check then means verified), `smtp+notls://` no TLS.
//!
//! OpenSMTPD 6.8 retries a failed opportunistic handshake in plaintext on the same session id
//! (`smtp-out: Error on session <id>: opportunistic TLS failed, downgrading to plain`, then a new
//! `mta connecting address=smtp+notls://…`): the failed attempt and the retry become two
//! observations, the second marked `after_tls_failure`, as Postfix's retries are.
//!
//! OpenSMTPD logs `tls ciphers=` for every TLS session and has no setting that turns it off, so
//! under [`TlsLogging::Auto`](super::TlsLogging::Auto) a session without that line is plaintext
//! when the log proves the SMTP dialogue went on (a delivery line outbound, `smtp message`
//! inbound); under [`TlsLogging::Off`](super::TlsLogging::Off) it is `unknown`. Lines of a
//! session whose start was not seen are counted as orphans (only the 5.x and 6.0 TLS lines start a session: those logs have no connect line
//! this grammar reads). That also keeps a restart exact: `ingest` re-feeds an smtpd process's
//! lines from its earliest open session, and one smtpd process logs many sessions, so the tail
//! of a session emitted before the restart must not become an observation of its own.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use parsers::opensmtpd::{CertResult, DeliveryResult, Event, Kind, Subsystem};
use rustc_hash::{FxHashMap, FxHashSet};

use super::postfix::Ctx;
use super::{LineMeta, ProcessKey, SourceId};
use crate::observation::{Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, TlsInfo, Trust};

/// Most queue ids and domains kept for one session.
const MAX_ITEMS: usize = 64;

/// The key of one session: interned reporter+instance and the session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SessionKey {
    name: u32,
    session: u64,
}

/// Open sessions of every OpenSMTPD instance.
#[derive(Debug, Default)]
pub struct State {
    sessions: FxHashMap<SessionKey, Box<Session>>,
}

/// What is known so far about one session.
#[derive(Debug, Default)]
struct Session {
    direction: Option<Direction>,
    /// The pid of the process that logged the first line (for replay after a restart).
    pid: u32,
    peer: PeerInfo,
    first_micros: i64,
    last_micros: i64,
    source: Option<SourceId>,
    offset: u64,
    lines: u32,
    /// The `mta connecting` scheme: `smtp`, `smtp+tls`, `smtps`, `smtp+notls`, `lmtp`.
    scheme: Option<String>,
    tls: Option<TlsInfo>,
    cert: Option<CertResult>,
    /// The certificate's fingerprint from `cert-check … fingerprint="SHA256:…"` (6.4 and later).
    fingerprint: Option<String>,
    /// `ssl_check_name: no match for '<name>'`.
    name_mismatch: Option<String>,
    /// `smtp-out: … opportunistic TLS failed`, `mta closing reason=tls-…`, inbound TLS I/O errors.
    handshake: Option<String>,
    /// `mta error reason=…`.
    error: Option<String>,
    /// Inbound `disconnected reason=…`.
    disconnect_reason: Option<String>,
    after_tls_failure: bool,
    queue_ids: Vec<String>,
    domains: Vec<String>,
    delivered: Option<bool>,
    /// Outbound: a delivery line was logged (the SMTP dialogue went past EHLO/STARTTLS).
    deliveries: u32,
    /// Inbound: `smtp message` was logged (DATA accepted).
    message: bool,
    /// Inbound from `address=local`: a local submission (smtpctl, `sendmail`, a bounce), not an
    /// SMTP peer; counted as a local delivery, never an observation.
    local: bool,
}

impl State {
    /// Sessions currently open.
    pub fn open(&self) -> usize {
        self.sessions.len()
    }

    /// Adds the interned names this state refers to.
    pub fn names_in_use(&self, names: &mut FxHashSet<u32>) {
        names.extend(self.sessions.keys().map(|key| key.name));
    }

    /// The offset of the earliest line of `source` that an open session still needs.
    pub fn low_water(&self, source: SourceId) -> Option<u64> {
        self.sessions.values().filter(|s| s.source == Some(source)).map(|s| s.offset).min()
    }

    /// The processes with an open session from `source`, with the offset of the session's first
    /// line (the earliest per process).
    pub fn open_processes(&self, source: SourceId) -> Vec<(ProcessKey, u64)> {
        let mut by_process: FxHashMap<ProcessKey, u64> = FxHashMap::default();
        for (key, session) in &self.sessions {
            if session.source == Some(source) {
                let process = ProcessKey { name: key.name, pid: session.pid };
                let offset = by_process.entry(process).or_insert(session.offset);
                *offset = (*offset).min(session.offset);
            }
        }
        by_process.into_iter().collect()
    }

    /// Handles one event of the instance `process` (whose pid is the line's).
    pub fn push(&mut self, ctx: &mut Ctx<'_>, process: ProcessKey, event: &Event<'_>) {
        if matches!(event.kind, Kind::Ignored) || event.subsystem == Subsystem::Mda {
            match event.kind {
                Kind::Delivery(_) => ctx.counters.local_deliveries += 1,
                _ => ctx.counters.ignored += 1,
            }
            return;
        }
        let key = SessionKey { name: process.name, session: event.session };
        let now = ctx.meta.ts_micros;
        match &event.kind {
            Kind::Connected { address, host } => {
                if let Some(old) = self.sessions.remove(&key) {
                    emit(ctx, key, old);
                }
                let mut session = Session::start(ctx.meta, process.pid, Direction::Inbound);
                session.peer = peer_info(address, host, None);
                session.local = *address == "local";
                self.sessions.insert(key, session);
            }
            Kind::Connecting { scheme, address, port, host } => {
                let mut after_tls_failure = false;
                if let Some(old) = self.sessions.remove(&key) {
                    after_tls_failure = old.handshake.is_some() && old.tls.is_none();
                    emit(ctx, key, old);
                }
                let mut session = Session::start(ctx.meta, process.pid, Direction::Outbound);
                session.peer = peer_info(address, host, *port);
                session.scheme = Some((*scheme).to_owned());
                session.after_tls_failure = after_tls_failure;
                self.sessions.insert(key, session);
            }
            Kind::Tls { protocol, cipher, bits, legacy } => {
                let direction = match event.subsystem {
                    Subsystem::Smtp => Direction::Inbound,
                    _ => Direction::Outbound,
                };
                let session = match self.sessions.entry(key) {
                    Entry::Occupied(entry) => {
                        let session = entry.into_mut();
                        touch(session, now);
                        session
                    }
                    // The 5.x / 6.0 formats: the TLS line starts the session.
                    Entry::Vacant(entry) if *legacy => entry.insert(Session::start(ctx.meta, process.pid, direction)),
                    // A current TLS line whose session start was not seen (a log that begins
                    // mid-session, or lines re-fed after a restart): an orphan, never a
                    // partial observation.
                    Entry::Vacant(_) => {
                        ctx.counters.orphans += 1;
                        return;
                    }
                };
                session.tls = Some(TlsInfo {
                    protocol: Some((*protocol).to_owned()),
                    cipher: Some((*cipher).to_owned()),
                    bits: *bits,
                    ..TlsInfo::default()
                });
            }
            kind => {
                let Some(session) = self.sessions.get_mut(&key) else {
                    ctx.counters.orphans += 1;
                    return;
                };
                touch(session, now);
                let finished = apply(session, kind);
                if finished {
                    if let Some(session) = self.sessions.remove(&key) {
                        emit(ctx, key, session);
                    }
                }
            }
        }
    }

    /// Emits every open session, oldest first.
    pub fn flush_all(&mut self, ctx: &mut Ctx<'_>) {
        let mut sessions: Vec<_> = self.sessions.drain().collect();
        sessions.sort_by_key(|(_, session)| (session.first_micros, session.offset));
        for (key, session) in sessions {
            emit(ctx, key, session);
        }
    }

    /// Emits sessions idle since before `cutoff_micros`, and the oldest ones while more than
    /// `max_open` are open.
    pub fn sweep(&mut self, ctx: &mut Ctx<'_>, cutoff_micros: i64) {
        let mut idle: Vec<(i64, u64, SessionKey)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last_micros < cutoff_micros)
            .map(|(key, s)| (s.first_micros, s.offset, *key))
            .collect();
        idle.sort_unstable_by_key(|(first, offset, _)| (*first, *offset));
        for (_, _, key) in idle {
            if let Some(session) = self.sessions.remove(&key) {
                ctx.counters.expired += 1;
                emit(ctx, key, session);
            }
        }
        let max_open = ctx.config.max_open;
        if self.sessions.len() > max_open {
            // Evict a tenth at a time so a full table does not cost a scan per line.
            let target = max_open - max_open / 10;
            let mut by_age: Vec<(i64, u64, SessionKey)> =
                self.sessions.iter().map(|(key, s)| (s.last_micros, s.offset, *key)).collect();
            by_age.sort_unstable_by_key(|(last, offset, _)| (*last, *offset));
            let n_evict = by_age.len().saturating_sub(target);
            for (_, _, key) in by_age.into_iter().take(n_evict) {
                if let Some(session) = self.sessions.remove(&key) {
                    ctx.counters.evicted += 1;
                    emit(ctx, key, session);
                }
            }
        }
    }
}

impl Session {
    fn start(meta: LineMeta, pid: u32, direction: Direction) -> Box<Session> {
        Box::new(Session {
            direction: Some(direction),
            pid,
            first_micros: meta.ts_micros,
            last_micros: meta.ts_micros,
            source: Some(meta.source),
            offset: meta.offset,
            lines: 1,
            ..Session::default()
        })
    }
}

/// Records one more line of a session.
fn touch(session: &mut Session, now: i64) {
    session.lines = session.lines.saturating_add(1);
    session.last_micros = session.last_micros.max(now);
}

/// Applies a line to its open session; true when the line ends the session.
fn apply(session: &mut Session, kind: &Kind<'_>) -> bool {
    match kind {
        Kind::CertCheck { result, fingerprint, .. } => {
            // 6.4–7.x may log both a result and `no certificate presented`; keep the first.
            session.cert.get_or_insert(*result);
            if let (None, Some(fingerprint)) = (&session.fingerprint, fingerprint) {
                session.fingerprint = Some((*fingerprint).to_owned());
            }
            false
        }
        Kind::NameMismatch { name } => {
            session.name_mismatch = Some((*name).to_owned());
            false
        }
        Kind::TlsDowngrade => {
            session.handshake = Some("opportunistic TLS failed, downgrading to plain".to_owned());
            session.delivered.get_or_insert(false);
            false
        }
        Kind::Closing { reason } => {
            if reason.starts_with("tls") || *reason == "ca-failure" {
                session.handshake = Some(format!("closing reason={reason}"));
            }
            false
        }
        Kind::MtaError { reason } => {
            session.error = Some((*reason).to_owned());
            session.delivered.get_or_insert(false);
            true
        }
        Kind::Message => {
            session.message = true;
            session.delivered = Some(true);
            false
        }
        Kind::Delivery(delivery) => {
            session.deliveries = session.deliveries.saturating_add(1);
            if let Some((_, domain)) = delivery.to.rsplit_once('@') {
                push_unique(&mut session.domains, &domain.to_ascii_lowercase());
            }
            push_unique(&mut session.queue_ids, delivery.evpid);
            let ok = delivery.result == DeliveryResult::Ok;
            session.delivered = Some(session.delivered == Some(true) || ok);
            // Sessions opened by their TLS line (no `mta connecting` seen) learn the peer here.
            if session.peer.ip.is_none() {
                if let Ok(ip) = delivery.relay_addr.parse::<IpAddr>() {
                    session.peer.ip = Some(ip.to_string());
                    if !delivery.relay_host.is_empty() {
                        session.peer.hostname = Some(delivery.relay_host.to_owned());
                    }
                }
            }
            false
        }
        Kind::Disconnected { reason } => {
            session.disconnect_reason = Some((*reason).to_owned());
            true
        }
        Kind::MtaConnected | Kind::Connected { .. } | Kind::Connecting { .. } | Kind::Tls { .. } | Kind::Ignored => {
            false
        }
    }
}

fn push_unique(items: &mut Vec<String>, item: &str) {
    if items.len() < MAX_ITEMS && !items.iter().any(|i| i == item) {
        items.push(item.to_owned());
    }
}

/// Turns a finished session into an [`Observation`] in `ctx.out`.
fn emit(ctx: &mut Ctx<'_>, key: SessionKey, session: Box<Session>) {
    let mut session = *session;
    if session.local {
        ctx.counters.local_deliveries += 1;
        return;
    }
    // OpenSMTPD always logs its TLS sessions: `auto` counts as on.
    let tls_logged = ctx.tls_logged(true);
    let (reporter, instance) = ctx.names.get(key.name);
    let (source, event_id) = ctx.source_and_event_id(session.source, session.offset);
    let direction = session.direction.unwrap_or(Direction::Outbound);
    let (outcome, failure, mut tls) = match direction {
        Direction::Outbound => outbound_verdict(&mut session, tls_logged),
        Direction::Inbound => inbound_verdict(&mut session, tls_logged),
    };
    if let (Some(tls), Some(fingerprint)) = (tls.as_mut(), session.fingerprint.take()) {
        tls.cert.get_or_insert_with(Cert::default).fingerprint = Some(fingerprint);
    }
    let local_policy = (matches!(session.scheme.as_deref(), Some("smtp+notls" | "lmtp")) && !session.after_tls_failure)
        .then(|| "tls-level-none".to_owned());
    ctx.out.push(Observation {
        ts: micros_to_datetime(session.first_micros),
        end_ts: micros_to_datetime(session.last_micros),
        mta: Mta::Opensmtpd,
        reporter,
        instance,
        direction,
        peer: session.peer,
        domains: session.domains,
        queue_ids: session.queue_ids,
        outcome,
        tls,
        failure,
        delivered: session.delivered,
        tls_feature: None,
        conn_use: None,
        local_policy,
        after_tls_failure: session.after_tls_failure,
        replayed: false,
        source,
        lines: session.lines,
        event_id,
    });
}

/// True for schemes under which OpenSMTPD requires TLS and verifies the certificate.
fn tls_required(scheme: Option<&str>) -> bool {
    matches!(scheme, Some("smtp+tls" | "smtps"))
}

/// Outcome of a session we made.
fn outbound_verdict(session: &mut Session, tls_logged: bool) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    let required = tls_required(session.scheme.as_deref());
    let error = session.error.as_deref().unwrap_or("");
    if let Some(mut tls) = session.tls.take() {
        let cert_failed = error.contains("certificate") || (required && session.name_mismatch.is_some());
        tls.trust = Some(match session.cert {
            Some(CertResult::Valid) if required => Trust::Verified,
            Some(CertResult::Valid) => Trust::Trusted,
            Some(CertResult::NoCertificate) => Trust::Anonymous,
            Some(CertResult::Failed | CertResult::Unchecked) => Trust::Untrusted,
            Some(CertResult::Other) | None if cert_failed => Trust::Untrusted,
            Some(CertResult::Other) | None => return (Outcome::Tls, None, Some(TlsInfo { trust: None, ..tls })),
        });
        if let Some(name) = &session.name_mismatch {
            tls.verify_errors.push(format!("no match for '{name}' in cert"));
        }
        if cert_failed {
            let (kind, reason) = match &session.name_mismatch {
                Some(name) => ("certificate-host-mismatch", format!("{error}: no match for '{name}' in cert")),
                None => ("validation-failure", error.to_owned()),
            };
            return (Outcome::CertVerifyFailed, Some(Failure { kind: kind.to_owned(), reason }), Some(tls));
        }
        return (Outcome::Tls, None, Some(tls));
    }
    if error.starts_with("TLS required") || (required && error.starts_with("STARTTLS rejected")) {
        let failure = Failure { kind: "starttls-not-supported".to_owned(), reason: error.to_owned() };
        return (Outcome::TlsRequiredMissing, Some(failure), None);
    }
    if let Some(detail) = &session.handshake {
        let failure = Failure { kind: "validation-failure".to_owned(), reason: detail.clone() };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    if error.contains("handshake failed") || error.contains("SSL routines") {
        // libtls's handshake error (`IO Error: handshake failed: error:0A000086:SSL
        // routines::certificate verify failed`) with no TLS line: under any scheme.
        let kind =
            if error.contains("certificate verify failed") { "certificate-not-trusted" } else { "validation-failure" };
        let failure = Failure { kind: kind.to_owned(), reason: error.to_owned() };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    if session.scheme.as_deref() == Some("smtps") && !error.is_empty() {
        // Implicit TLS starts at connect: an error before any TLS line is a failed handshake.
        let failure = Failure { kind: "validation-failure".to_owned(), reason: error.to_owned() };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    if let Some(scheme @ ("smtp+notls" | "lmtp")) = session.scheme.as_deref() {
        // The plaintext retry after a failed handshake, or our relay URL forbids TLS (`lmtp://`
        // never tries STARTTLS: to.c makes it `RELAY_TLS_NO`).
        let failure = (!session.after_tls_failure).then(|| Failure {
            kind: "local-policy".to_owned(),
            reason: format!("TLS disabled by the relay URL ({scheme})"),
        });
        return (Outcome::Plaintext, failure, None);
    }
    if session.deliveries == 0 || !tls_logged {
        return (Outcome::Unknown, None, None);
    }
    if error.starts_with("STARTTLS rejected") {
        let failure = Failure { kind: "starttls-not-supported".to_owned(), reason: error.to_owned() };
        return (Outcome::StarttlsNotOffered, Some(failure), None);
    }
    // Opportunistic (`smtp://`) and no TLS line although the dialogue went on: the peer did not
    // offer STARTTLS (OpenSMTPD takes it whenever it is offered, and logs a failed handshake).
    let failure = Failure {
        kind: "starttls-not-supported".to_owned(),
        reason: "no STARTTLS in the EHLO response (no tls line for the session)".to_owned(),
    };
    (Outcome::StarttlsNotOffered, Some(failure), None)
}

/// Outcome of a session a client made to us.
fn inbound_verdict(session: &mut Session, tls_logged: bool) -> (Outcome, Option<Failure>, Option<TlsInfo>) {
    let reason = session.disconnect_reason.as_deref().unwrap_or("");
    if let Some(mut tls) = session.tls.take() {
        tls.trust = Some(match session.cert {
            Some(CertResult::Valid) => Trust::Trusted,
            Some(CertResult::Failed | CertResult::Unchecked | CertResult::Other) => Trust::Untrusted,
            Some(CertResult::NoCertificate) | None => Trust::Anonymous,
        });
        if reason == "cert-check-failed" {
            let failure = Failure { kind: "validation-failure".to_owned(), reason: reason.to_owned() };
            return (Outcome::CertVerifyFailed, Some(failure), Some(tls));
        }
        return (Outcome::Tls, None, Some(tls));
    }
    if reason == "tls-accept-failed" || (reason.starts_with("io-error") && reason.contains("error:")) {
        // An OpenSSL error string (`error:0A000418:…`) on a session without a TLS line: the
        // handshake failed.
        let failure = Failure { kind: handshake_kind(reason).to_owned(), reason: reason.to_owned() };
        return (Outcome::HandshakeFailed, Some(failure), None);
    }
    if session.message && tls_logged {
        return (Outcome::Plaintext, None, None);
    }
    (Outcome::Unknown, None, None)
}

/// The RFC 8460 kind of a handshake error text, where one fits.
fn handshake_kind(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("expired") {
        "certificate-expired"
    } else if reason.contains("unknown ca") || reason.contains("certificate verify failed") {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// The peer of `connected address=… host=…` / `connecting address=…://ip:port host=…`.
fn peer_info(address: &str, host: &str, port: Option<u16>) -> PeerInfo {
    let hostname = match host {
        "" | "<unknown>" | "unknown" => None,
        name => Some(name.to_owned()),
    };
    let addr = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(address);
    let addr = addr.strip_prefix("IPv6:").unwrap_or(addr);
    PeerInfo { hostname, ip: super::canonical_ip(addr), port }
}

fn micros_to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::TlsLogging;
    use crate::correlate::{Config, Correlator};
    use crate::observation::Source;

    #[test]
    fn lmtp_is_our_policy_and_a_libtls_handshake_error_is_a_failed_handshake() {
        let (out, _) = run(
            &[
                "Nov 30 13:35:12 mx smtpd[567]: 3000000000000001 mta connecting address=lmtp://10.0.0.5:24 host=dovecot.internal",
                "Nov 30 13:35:12 mx smtpd[567]: 3000000000000001 mta connected",
                "Nov 30 13:35:12 mx smtpd[567]: 3000000000000001 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@example.net> rcpt=<-> source=\"10.0.0.1\" relay=\"10.0.0.5 (dovecot.internal)\" delay=0s result=\"Ok\" stat=\"250 2.0.0 ok\"",
                "Nov 30 13:35:12 mx smtpd[567]: 3000000000000001 mta disconnected reason=quit messages=1",
                "Nov 30 13:35:13 mx smtpd[567]: 1000000000000004 mta connecting address=smtp+tls://192.0.2.27:25 host=req.example.net",
                "Nov 30 13:35:13 mx smtpd[567]: 1000000000000004 mta connected",
                "Nov 30 13:35:13 mx smtpd[567]: 1000000000000004 mta error reason=IO Error: handshake failed: error:0A000086:SSL routines::certificate verify failed",
            ],
            TlsLogging::Auto,
        );
        let got: Vec<_> = out
            .iter()
            .map(|o| {
                (
                    o.peer.ip.as_deref(),
                    o.outcome,
                    o.local_policy.as_deref(),
                    o.failure.as_ref().map(|f| f.kind.as_str()),
                )
            })
            .collect();
        assert!(
            got.contains(&(Some("10.0.0.5"), Outcome::Plaintext, Some("tls-level-none"), Some("local-policy"))),
            "{got:?}"
        );
        assert!(
            got.contains(&(Some("192.0.2.27"), Outcome::HandshakeFailed, None, Some("certificate-not-trusted"))),
            "{got:?}"
        );
    }

    fn run(lines: &[&str], tls_logging: TlsLogging) -> (Vec<Observation>, crate::correlate::Counters) {
        let mut correlator = Correlator::new(Config { tls_logging, ..Config::default() });
        let source = correlator.add_source(Source {
            kind: "file".to_owned(),
            name: "test.log".to_owned(),
            trust: "local".to_owned(),
        });
        let mut years = parsers::YearInference::new(2026, 11);
        let mut out = Vec::new();
        let mut offset = 0;
        for line in lines {
            let record = parsers::parse_line(line, &mut years).unwrap();
            let ts = record.header.timestamp.map_or(0, |t| {
                chrono::NaiveDate::from_ymd_opt(t.year, u32::from(t.month), u32::from(t.day))
                    .and_then(|d| d.and_hms_opt(u32::from(t.hour), u32::from(t.minute), u32::from(t.second)))
                    .map_or(0, |dt| dt.and_utc().timestamp_micros())
            });
            correlator.push(&record, LineMeta { source, offset, ts_micros: ts }, &mut out);
            offset += line.len() as u64 + 1;
        }
        correlator.finish(&mut out);
        (out, correlator.counters().clone())
    }

    fn summary(o: &Observation) -> (Direction, Option<&str>, Outcome, Option<Trust>, Option<&str>) {
        (
            o.direction,
            o.peer.ip.as_deref(),
            o.outcome,
            o.tls.as_ref().and_then(|t| t.trust),
            o.failure.as_ref().map(|f| f.kind.as_str()),
        )
    }

    const P: &str = "Nov 30 19:32:22 vm smtpd[9151]: ";

    fn lines(messages: &[&str]) -> Vec<String> {
        messages.iter().map(|m| format!("{P}{m}")).collect()
    }

    fn run_messages(messages: &[&str], tls_logging: TlsLogging) -> Vec<Observation> {
        let owned = lines(messages);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        run(&refs, tls_logging).0
    }

    #[test]
    fn outbound_verified_and_trusted() {
        let got = run_messages(
            &[
                "7112e196da887622 mta connecting address=smtp+tls://127.0.0.2:16501 host=mx.ca.test",
                "7112e196da887622 mta connected",
                "7112e196da887622 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
                "7112e196da887622 mta server-cert-check result=\"success\"",
                "7112e196da887622 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@verified.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.2 (mx.ca.test)\" delay=0s result=\"Ok\" stat=\"250 2.0.0 Ok\"",
                "7112e1af926370d1 mta connecting address=smtp://127.0.0.2:16501 host=mx.ca.test",
                "7112e1af926370d1 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
                "7112e1af926370d1 mta server-cert-check result=\"success\"",
                "7112e196da887622 mta disconnected reason=quit messages=1",
            ],
            TlsLogging::Auto,
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            summary(&got[0]),
            (Direction::Outbound, Some("127.0.0.2"), Outcome::Tls, Some(Trust::Verified), None)
        );
        assert_eq!((got[0].lines, got[0].delivered, got[0].peer.port), (6, Some(true), Some(16501)));
        assert_eq!(got[0].domains, ["verified.test"]);
        assert_eq!(got[0].queue_ids, ["12a0010a8c60bd82"]);
        assert_eq!(got[0].mta, Mta::Opensmtpd);
        let tls = got[0].tls.as_ref().unwrap();
        assert_eq!((tls.protocol.as_deref(), tls.bits), (Some("TLSv1.3"), Some(256)));
        // The second session is still open at the end of input and is emitted by finish.
        assert_eq!(
            summary(&got[1]),
            (Direction::Outbound, Some("127.0.0.2"), Outcome::Tls, Some(Trust::Trusted), None)
        );
        assert_eq!(got[1].delivered, None);
    }

    #[test]
    fn outbound_failures() {
        let got = run_messages(
            &[
                "0000000000000001 mta connecting address=smtp+tls://127.0.0.6:16505 host=required.lab.test",
                "0000000000000001 mta connected",
                "0000000000000001 mta error reason=TLS required but not supported by remote host",
                "0000000000000002 mta connecting address=smtp+tls://127.0.0.5:16504 host=expired.lab.test",
                "0000000000000002 mta connected",
                "0000000000000002 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
                "0000000000000002 mta error reason=SSL certificate check failed",
                "0000000000000003 mta connecting address=smtp://127.0.0.3:16502 host=selfsigned.lab.test",
                "0000000000000003 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
                "0000000000000003 mta server-cert-check result=\"failure\"",
                "0000000000000003 mta delivery evpid=94f66c1ea37aebdb from=<al@b.test> to=<bob@selfsigned.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.3 (selfsigned.lab.test)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
                "0000000000000003 mta disconnected reason=quit messages=1",
                "0000000000000004 mta connecting address=smtp://127.0.0.4:16503 host=plain.lab.test",
                "0000000000000004 mta connected",
                "0000000000000004 mta delivery evpid=c94302ade82b22e0 from=<al@b.test> to=<bob@plain.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.4 (plain.lab.test)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
                "0000000000000004 mta disconnected reason=quit messages=1",
                "0000000000000005 mta connecting address=smtp+notls://127.0.0.2:16501 host=mx.ca.test",
                "0000000000000005 mta delivery evpid=458e0128bbecc218 from=<al@b.test> to=<bob@notls.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.2 (mx.ca.test)\" delay=10s result=\"Ok\" stat=\"250 ok\"",
                "0000000000000005 mta disconnected reason=quit messages=1",
            ],
            TlsLogging::Auto,
        );
        let got: Vec<_> = got.iter().map(summary).collect();
        assert_eq!(
            got,
            [
                (
                    Direction::Outbound,
                    Some("127.0.0.6"),
                    Outcome::TlsRequiredMissing,
                    None,
                    Some("starttls-not-supported")
                ),
                (
                    Direction::Outbound,
                    Some("127.0.0.5"),
                    Outcome::CertVerifyFailed,
                    Some(Trust::Untrusted),
                    Some("validation-failure")
                ),
                (Direction::Outbound, Some("127.0.0.3"), Outcome::Tls, Some(Trust::Untrusted), None),
                (
                    Direction::Outbound,
                    Some("127.0.0.4"),
                    Outcome::StarttlsNotOffered,
                    None,
                    Some("starttls-not-supported")
                ),
                (Direction::Outbound, Some("127.0.0.2"), Outcome::Plaintext, None, Some("local-policy")),
            ]
        );
    }

    #[test]
    fn downgrade_after_failed_handshake_is_two_observations() {
        let messages = [
            "7112e1aedd24304c mta connecting address=smtp://127.0.0.7:16506 host=broken.lab.test",
            "7112e1aedd24304c mta connected",
            "smtp-out: Error on session 7112e1aedd24304c: opportunistic TLS failed, downgrading to plain",
            "7112e1aedd24304c mta connecting address=smtp+notls://127.0.0.7:16506 host=broken.lab.test",
            "7112e1aedd24304c mta connected",
            "7112e1aedd24304c mta delivery evpid=a428990a47773def from=<al@b.test> to=<bob@broken.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.7 (broken.lab.test)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
            "7112e1aedd24304c mta disconnected reason=quit messages=1",
        ];
        let got = run_messages(&messages, TlsLogging::Auto);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            summary(&got[0]),
            (Direction::Outbound, Some("127.0.0.7"), Outcome::HandshakeFailed, None, Some("validation-failure"))
        );
        assert_eq!((got[0].delivered, got[0].lines), (Some(false), 3));
        assert_eq!(
            (got[1].outcome, got[1].after_tls_failure, got[1].delivered, got[1].local_policy.as_deref()),
            (Outcome::Plaintext, true, Some(true), None)
        );
        assert_ne!(got[0].event_id, got[1].event_id);
    }

    #[test]
    fn inbound_sessions() {
        let got = run_messages(
            &[
                "1daa84f56f19d5a5 smtp connected address=127.0.0.1 host=localhost",
                "1daa84f65fabebe6 smtp connected address=192.0.2.7 host=<unknown>",
                "1daa84f56f19d5a5 smtp disconnected reason=\"io-error: error:0A080006:SSL routines::EVP lib\"",
                "1daa84f65fabebe6 smtp message msgid=14fb5bd3 size=388 nrcpt=1 proto=ESMTP",
                "1daa84f65fabebe6 smtp disconnected reason=quit",
                "00000000000000aa smtp connected address=[2001:db8::1] host=mx.example.net",
                "00000000000000aa smtp tls ciphers=TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256",
                "00000000000000aa smtp message msgid=14fb5bd3 size=388 nrcpt=1 proto=ESMTP",
                "00000000000000aa smtp disconnected reason=quit",
                "00000000000000bb smtp connected address=192.0.2.8 host=c.example",
                "00000000000000bb smtp tls ciphers=TLSv1.3:TLS_AES_128_GCM_SHA256:128",
                "00000000000000bb smtp cert-check result=\"verified\" fingerprint=\"SHA256:00\"",
                "00000000000000bb smtp disconnected reason=quit",
                "00000000000000cc smtp connected address=192.0.2.9 host=d.example",
                "00000000000000cc smtp disconnected reason=timeout",
                "00000000000000dd smtp connected address=local host=vm",
                "00000000000000dd smtp message msgid=bb0209a5 size=1612 nrcpt=1 proto=ESMTP",
                "00000000000000dd smtp disconnected reason=quit",
            ],
            TlsLogging::Auto,
        );
        // The client certificate's fingerprint is kept; no certificate, no `cert`.
        let fingerprints: Vec<_> = got
            .iter()
            .map(|o| o.tls.as_ref().and_then(|t| t.cert.as_ref()).and_then(|c| c.fingerprint.as_deref()))
            .collect();
        assert_eq!(fingerprints, [None, None, None, Some("SHA256:00"), None]);
        let got: Vec<_> = got.iter().map(summary).collect();
        assert_eq!(
            got,
            [
                (Direction::Inbound, Some("127.0.0.1"), Outcome::HandshakeFailed, None, Some("validation-failure")),
                (Direction::Inbound, Some("192.0.2.7"), Outcome::Plaintext, None, None),
                (Direction::Inbound, Some("2001:db8::1"), Outcome::Tls, Some(Trust::Anonymous), None),
                (Direction::Inbound, Some("192.0.2.8"), Outcome::Tls, Some(Trust::Trusted), None),
                (Direction::Inbound, Some("192.0.2.9"), Outcome::Unknown, None, None),
            ]
        );
    }

    #[test]
    fn tls_logging_off_claims_no_plaintext() {
        let got = run_messages(
            &[
                "1daa84f65fabebe6 smtp connected address=192.0.2.7 host=<unknown>",
                "1daa84f65fabebe6 smtp message msgid=14fb5bd3 size=388 nrcpt=1 proto=ESMTP",
                "1daa84f65fabebe6 smtp disconnected reason=quit",
                "0000000000000004 mta connecting address=smtp://127.0.0.4:16503 host=plain.lab.test",
                "0000000000000004 mta delivery evpid=c94302ade82b22e0 from=<al@b.test> to=<bob@plain.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.4 (plain.lab.test)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
                "0000000000000004 mta disconnected reason=quit messages=1",
            ],
            TlsLogging::Off,
        );
        assert_eq!(got.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Unknown, Outcome::Unknown]);
    }

    #[test]
    fn legacy_lines_and_orphans() {
        let owned = lines(&[
            "smtp-out: Started TLS on session 0123456789abcdef: version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256",
            "smtp-out: Server certificate verification succeeded on session 0123456789abcdef",
            "00000000000000ff mta delivery evpid=c94302ade82b22e0 from=<a@b> to=<c@d> rcpt=<-> source=\"x\" relay=\"192.0.2.1 (x)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
            "info: OpenSMTPD 6.8.0p2 starting",
            "00000000000000ee mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
            "00000000000000ee mta server-cert-check result=\"success\"",
        ]);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (got, counters) = run(&refs, TlsLogging::Auto);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!((got[0].outcome, got[0].tls.as_ref().and_then(|t| t.trust)), (Outcome::Tls, Some(Trust::Trusted)));
        // The TLS line opened the session: two lines, not three.
        assert_eq!(got[0].lines, 2);
        // A current TLS line without its session start is an orphan, like the lines after it.
        assert_eq!((counters.orphans, counters.ignored), (3, 1));
    }

    #[test]
    fn restart_from_low_water_gives_the_reference_observations() {
        // Two overlapping sessions of one smtpd process; the checkpoint falls after A ended and
        // while B is open, so a restart re-feeds A's tail (A started before B).
        let owned = lines(&[
            "000000000000000a mta connecting address=smtp://192.0.2.1:25 host=a.example",
            "000000000000000b mta connecting address=smtp://192.0.2.2:25 host=b.example",
            "000000000000000a mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256",
            "000000000000000a mta delivery evpid=0000000000000001 from=<x@y> to=<u@a.example> rcpt=<-> source=\"x\" relay=\"192.0.2.1 (a.example)\" delay=0s result=\"Ok\" stat=\"250 ok\"",
            "000000000000000a mta disconnected reason=quit messages=1",
            "000000000000000b mta tls ciphers=TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256",
            "000000000000000b mta disconnected reason=quit messages=0",
        ]);
        let offsets: Vec<u64> =
            owned.iter().scan(0u64, |at, line| Some(std::mem::replace(at, *at + line.len() as u64 + 1))).collect();
        let feed = |correlator: &mut Correlator, source, idx: usize, out: &mut Vec<Observation>| {
            let mut years = parsers::YearInference::new(2026, 11);
            let record = parsers::parse_line(&owned[idx], &mut years).unwrap();
            correlator.push(&record, LineMeta { source, offset: offsets[idx], ts_micros: 1_000_000 }, out);
        };
        let new = || {
            let mut correlator = Correlator::new(Config::default());
            let source = correlator.add_source(Source { kind: "file".into(), name: "m".into(), trust: "local".into() });
            (correlator, source)
        };
        let (mut reference, source) = new();
        let mut want = Vec::new();
        (0..owned.len()).for_each(|idx| feed(&mut reference, source, idx, &mut want));
        reference.finish(&mut want);

        let (mut before, source) = new();
        let mut got = Vec::new();
        (0..5).for_each(|idx| feed(&mut before, source, idx, &mut got));
        let low_water = before.low_water(source).unwrap();
        let open = before.open_processes(source);
        assert_eq!((low_water, open.len(), open[0].2), (offsets[1], 1, 9151));
        let (mut after, source) = new();
        let mut replayed = Vec::new();
        for idx in (0..owned.len()).filter(|&idx| offsets[idx] >= low_water) {
            feed(&mut after, source, idx, &mut replayed);
        }
        after.finish(&mut replayed);
        let emitted: Vec<String> = got.iter().map(|o| o.event_id.clone()).collect();
        got.extend(replayed.into_iter().filter(|o| !emitted.contains(&o.event_id)));
        assert_eq!(got, want);
        assert_eq!(after.counters().orphans, 3, "A's tail is re-read as orphans");
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let mut correlator = Correlator::new(Config { max_open: 10, idle_timeout_secs: 60, ..Config::default() });
        let source = correlator.add_source(Source { kind: "file".into(), name: "x".into(), trust: "local".into() });
        let mut out = Vec::new();
        let mut years = parsers::YearInference::new(2026, 11);
        for n in 0..100u64 {
            let line = format!("{P}{n:016x} smtp connected address=192.0.2.1 host=a");
            let record = parsers::parse_line(&line, &mut years).unwrap();
            correlator.push(&record, LineMeta { source, offset: n * 100, ts_micros: 1_000_000 }, &mut out);
            assert!(correlator.open() <= 11, "{}", correlator.open());
        }
        assert!(correlator.counters().evicted >= 89, "{:?}", correlator.counters());
        let line = format!("{P}ffffffffffffffff smtp connected address=192.0.2.1 host=a");
        let record = parsers::parse_line(&line, &mut years).unwrap();
        correlator.push(&record, LineMeta { source, offset: 1_000_000, ts_micros: 1_000_000 + 61_000_000 }, &mut out);
        assert!(correlator.counters().expired >= 1);
        assert_eq!(correlator.open(), 1);
        assert_eq!(correlator.low_water(source), Some(1_000_000));
        correlator.finish(&mut out);
        assert_eq!(out.len(), 101);
    }
}
