//! One inbound SMTP session seen twice, by the milter and in the MTA's log, counted once.
//!
//! `tlsledger ingest --milter-listen` gets each inbound session from the milter (at its close)
//! and, when it also follows the MTA's log, from the correlator (at the `disconnect` line). The
//! two Observations of one session have different event ids (the milter has no log position, the
//! log has no milter connection), so [`MilterDedup`] pairs them before any sink sees them.
//!
//! **The rule.** A log Observation and a milter Observation are the same session when they are
//! both inbound, from the same client IP, their client ports agree when both are known (Postfix
//! logs the port with `smtpd_client_port_logging = yes`), they share a queue id when both have
//! some, and their start times are at most [`DedupConfig::window`] apart. Pairing is one to one;
//! among several candidates an exact one (same port or a shared queue id) wins, then the nearest
//! start time. Of a pair, the milter's Observation is kept (highest source trust) and the log's
//! dropped, unless the milter's outcome is `unknown` (a session that ended before MAIL, e.g. a
//! failed STARTTLS handshake) and the log's is not: then the log's is kept. Since the log usually
//! trails the milter, a log inbound Observation (and a milter one that says `unknown`) waits up to
//! [`DedupConfig::grace`] for its twin before it is emitted; a milter Observation that arrives
//! after its log twin was emitted is then dropped instead (counted), so the session still counts
//! once. Every pairing preserves the client IP, so per-endpoint counts are exact even when
//! sessions without port or queue id are paired with the wrong twin.
//!
//! **Invariants:** no IO and no clock (the caller passes `now`); memory is bounded by
//! [`DedupConfig::max_entries`] remembered sessions and held log Observations (the oldest go
//! first: a remembered session is forgotten, a held Observation is emitted). Nothing is lost:
//! every Observation handed in is either emitted or counted as a duplicate.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::observation::{Direction, Observation, Outcome};

/// Limits of the pairing.
#[derive(Debug, Clone, Copy)]
pub struct DedupConfig {
    /// Largest difference of start times (log time against milter time) of one session.
    pub window: Duration,
    /// How long a log inbound Observation (or a milter one with outcome `unknown`) waits for its
    /// twin before it is emitted.
    pub grace: Duration,
    /// Most sessions remembered, and most Observations held, at once.
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig { window: Duration::from_secs(60), grace: Duration::from_secs(2), max_entries: 100_000 }
    }
}

/// What the pairing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupCounters {
    /// Milter Observations handed in.
    pub milter: u64,
    /// Log Observations dropped because the milter's Observation of the session was kept.
    pub log_duplicates: u64,
    /// Pairs where the log's Observation was kept: the milter's said `unknown`, the log's knew.
    pub log_kept: u64,
    /// Milter Observations dropped because the log's had already been emitted.
    pub late_milter_duplicates: u64,
    /// Log Observations emitted after waiting for a milter twin that did not come.
    pub log_unmatched: u64,
}

/// Which held Observations [`MilterDedup::release`] emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Those whose grace is over.
    Due,
    /// Those, and every held log Observation: before a checkpoint, whose file offsets must not
    /// pass a line whose Observation is only in memory. A held milter Observation (outcome
    /// `unknown`) keeps its whole grace: it pins no offset, and releasing it early would let a
    /// log twin that knows the outcome arrive too late to win.
    Log,
    /// Everything: the process stops.
    All,
}

/// Which source an Observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Log,
    Milter,
}

/// An emitted session, remembered for pairing with its late twin.
#[derive(Debug)]
struct Seen {
    side: Side,
    port: Option<u16>,
    ts_micros: i64,
    queue_ids: Vec<String>,
    consumed: bool,
}

/// The pairing state; see the module documentation.
#[derive(Debug, Default)]
pub struct MilterDedup {
    config: DedupConfig,
    /// Observations waiting for their twin, with their release time, oldest first.
    held: VecDeque<(Instant, Side, Observation)>,
    /// Emitted sessions by client IP, oldest first.
    recent: HashMap<String, VecDeque<Seen>>,
    /// (forget at, IP) of every remembered session, oldest first.
    order: VecDeque<(Instant, String)>,
    counters: DedupCounters,
}

/// How well a candidate (its port, start, queue ids) fits the session of `observation`: `None`
/// when it cannot be the same session, else (not exact, distance in µs): lower is better.
fn fit(
    observation: &Observation,
    port: Option<u16>,
    ts_micros: i64,
    queue_ids: &[String],
    window: Duration,
) -> Option<(bool, u64)> {
    let ports_known = observation.peer.port.is_some() && port.is_some();
    if ports_known && observation.peer.port != port {
        return None;
    }
    let ids_known = !observation.queue_ids.is_empty() && !queue_ids.is_empty();
    let shared_id = ids_known && observation.queue_ids.iter().any(|id| queue_ids.contains(id));
    if ids_known && !shared_id {
        return None;
    }
    let distance = observation.ts.timestamp_micros().abs_diff(ts_micros);
    if u128::from(distance) > window.as_micros() {
        return None;
    }
    Some((!(ports_known || shared_id), distance))
}

impl MilterDedup {
    /// An empty pairing state.
    pub fn new(config: DedupConfig) -> MilterDedup {
        MilterDedup { config: DedupConfig { max_entries: config.max_entries.max(1), ..config }, ..Default::default() }
    }

    /// What was done so far.
    pub fn counters(&self) -> &DedupCounters {
        &self.counters
    }

    /// Observations waiting for their twin.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// True for the Observations that take part: inbound, with a client IP, not a replay.
    fn applies(observation: &Observation) -> bool {
        observation.direction == Direction::Inbound && observation.peer.ip.is_some() && !observation.replayed
    }

    /// An Observation from the log: emitted into `out` now (not inbound), dropped (its milter
    /// twin was emitted), paired with a held milter twin, or held for [`DedupConfig::grace`].
    pub fn log(&mut self, observation: Observation, now: Instant, out: &mut Vec<Observation>) {
        self.forget(now);
        if !Self::applies(&observation) {
            out.push(observation);
            return;
        }
        if self.take_twin(&observation, Side::Milter) {
            self.counters.log_duplicates += 1;
            return;
        }
        if let Some(milter) = self.take_held(&observation, Side::Milter) {
            self.pair(milter, observation, out);
            return;
        }
        self.hold(Side::Log, observation, now, out);
    }

    /// An Observation from the milter: paired with its held log twin, or dropped because its log
    /// twin was already emitted, or held (outcome `unknown`: the log may know better), or emitted
    /// and remembered.
    pub fn milter(&mut self, observation: Observation, now: Instant, out: &mut Vec<Observation>) {
        self.forget(now);
        self.counters.milter += 1;
        if !Self::applies(&observation) {
            out.push(observation);
            return;
        }
        if let Some(log) = self.take_held(&observation, Side::Log) {
            self.pair(observation, log, out);
            return;
        }
        if self.take_twin(&observation, Side::Log) {
            self.counters.late_milter_duplicates += 1;
            return;
        }
        if observation.outcome == Outcome::Unknown {
            self.hold(Side::Milter, observation, now, out);
            return;
        }
        self.remember(&observation, Side::Milter, now);
        out.push(observation);
    }

    /// Emits the held Observations whose grace is over, and more with a wider `scope`.
    pub fn release(&mut self, now: Instant, scope: Release, out: &mut Vec<Observation>) {
        self.forget(now);
        // Held oldest first with one grace: the due ones are a prefix.
        while self.held.front().is_some_and(|(release_at, _, _)| *release_at <= now) {
            if let Some((_, side, observation)) = self.held.pop_front() {
                self.emit_held(side, observation, now, out);
            }
        }
        if scope == Release::Due || self.held.is_empty() {
            return;
        }
        // One pass over the rest (removing from the middle one by one could be quadratic).
        for (release_at, side, observation) in std::mem::take(&mut self.held) {
            if scope == Release::All || side == Side::Log {
                self.emit_held(side, observation, now, out);
            } else {
                self.held.push_back((release_at, side, observation));
            }
        }
    }

    /// One session seen by both: the milter's Observation is kept (completed from the log's where
    /// the milter's macros say nothing, see [`complete`]), unless it says `unknown` and the log's
    /// knows the outcome.
    fn pair(&mut self, milter: Observation, log: Observation, out: &mut Vec<Observation>) {
        if milter.outcome == Outcome::Unknown && log.outcome != Outcome::Unknown {
            self.counters.log_kept += 1;
            out.push(log);
        } else {
            self.counters.log_duplicates += 1;
            out.push(complete(milter, &log));
        }
    }

    fn hold(&mut self, side: Side, observation: Observation, now: Instant, out: &mut Vec<Observation>) {
        if self.held.len() >= self.config.max_entries {
            if let Some((_, side, oldest)) = self.held.pop_front() {
                self.emit_held(side, oldest, now, out);
            }
        }
        self.held.push_back((now + self.config.grace, side, observation));
    }

    fn emit_held(&mut self, side: Side, observation: Observation, now: Instant, out: &mut Vec<Observation>) {
        if side == Side::Log {
            self.counters.log_unmatched += 1;
        }
        self.remember(&observation, side, now);
        out.push(observation);
    }

    /// Takes the best held twin of `observation` from `side`.
    fn take_held(&mut self, observation: &Observation, side: Side) -> Option<Observation> {
        let window = self.config.window;
        let best = self
            .held
            .iter()
            .enumerate()
            .filter(|(_, (_, held_side, held))| *held_side == side && held.peer.ip == observation.peer.ip)
            .filter_map(|(idx, (_, _, held))| {
                fit(observation, held.peer.port, held.ts.timestamp_micros(), &held.queue_ids, window).map(|f| (f, idx))
            })
            .min()?;
        self.held.remove(best.1).map(|(_, _, held)| held)
    }

    /// Marks the best remembered twin of `observation` from `side` as used; false when none fits.
    fn take_twin(&mut self, observation: &Observation, side: Side) -> bool {
        let Some(ip) = observation.peer.ip.as_deref() else { return false };
        let Some(seen) = self.recent.get_mut(ip) else { return false };
        let window = self.config.window;
        let best = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.side == side && !s.consumed)
            .filter_map(|(idx, s)| fit(observation, s.port, s.ts_micros, &s.queue_ids, window).map(|f| (f, idx)))
            .min();
        match best {
            Some((_, idx)) => {
                seen[idx].consumed = true;
                true
            }
            None => false,
        }
    }

    fn remember(&mut self, observation: &Observation, side: Side, now: Instant) {
        let Some(ip) = observation.peer.ip.clone() else { return };
        if self.order.len() >= self.config.max_entries {
            self.forget_oldest();
        }
        self.recent.entry(ip.clone()).or_default().push_back(Seen {
            side,
            port: observation.peer.port,
            ts_micros: observation.ts.timestamp_micros(),
            queue_ids: observation.queue_ids.clone(),
            consumed: false,
        });
        // A session is remembered for the window plus the grace: its twin may be that late.
        self.order.push_back((now + self.config.window + self.config.grace, ip));
    }

    fn forget(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, ip)) = self.order.pop_front() else { return };
        // Sessions of one IP are remembered in the global order, so its oldest is at its front.
        if let Some(seen) = self.recent.get_mut(&ip) {
            seen.pop_front();
            if seen.is_empty() {
                self.recent.remove(&ip);
            }
        }
    }
}

/// The milter's Observation of a session, with what only the log told filled in: Postfix's
/// macros carry no trust for an anonymous or unverified client (`{cert_subject}` is set only for a
/// trusted certificate) and no key exchange, so when both saw TLS the log's trust, key exchange,
/// certificate and verification errors fill the milter's gaps; a host name the milter lacked too.
/// The milter's own values, outcome, source and event id stay. (Only a pair whose log side
/// waited is completed: a milter Observation is handed on as soon as it arrives.)
fn complete(mut milter: Observation, log: &Observation) -> Observation {
    if let (Some(tls), Some(from_log)) = (milter.tls.as_mut(), log.tls.as_ref()) {
        if tls.trust.is_none() {
            tls.trust = from_log.trust;
        }
        if tls.key_exchange.is_none() {
            tls.key_exchange.clone_from(&from_log.key_exchange);
        }
        if tls.cert.is_none() {
            tls.cert.clone_from(&from_log.cert);
        }
        if tls.verify_errors.is_empty() {
            tls.verify_errors.clone_from(&from_log.verify_errors);
        }
    }
    if milter.peer.hostname.is_none() {
        milter.peer.hostname.clone_from(&log.peer.hostname);
    }
    milter
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;

    use super::*;
    use crate::observation::{event_id, Mta, PeerInfo, Source};

    fn session(kind: &str, ip: &str, port: Option<u16>, ts_secs: i64, queue_ids: &[&str]) -> Observation {
        let ts = DateTime::from_timestamp(ts_secs, 0).unwrap();
        Observation {
            ts,
            end_ts: ts,
            mta: Mta::Postfix,
            reporter: Arc::from("mx"),
            instance: Arc::from("postfix"),
            direction: Direction::Inbound,
            peer: PeerInfo { hostname: None, ip: Some(ip.to_owned()), port },
            domains: Vec::new(),
            queue_ids: queue_ids.iter().map(|q| (*q).to_owned()).collect(),
            outcome: Outcome::Plaintext,
            tls: None,
            failure: None,
            delivered: None,
            tls_feature: None,
            conn_use: None,
            local_policy: None,
            after_tls_failure: false,
            replayed: false,
            source: Arc::new(Source { kind: kind.to_owned(), name: kind.to_owned(), trust: kind.to_owned() }),
            lines: 0,
            event_id: event_id(kind, ts_secs as u64 ^ u64::from(port.unwrap_or(0))),
        }
    }

    fn kinds(out: &[Observation]) -> Vec<&str> {
        out.iter().map(|o| o.source.kind.as_str()).collect()
    }

    #[test]
    fn milter_first_drops_the_log_twin() {
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        dedup.milter(session("milter", "192.0.2.1", Some(40001), 100, &["Q1"]), now, &mut out);
        dedup.log(session("file", "192.0.2.1", Some(40001), 101, &["Q1"]), now, &mut out);
        dedup.release(now + Duration::from_secs(10), Release::Due, &mut out);
        assert_eq!(kinds(&out), ["milter"]);
        assert_eq!(dedup.counters().log_duplicates, 1);
    }

    #[test]
    fn the_kept_milter_observation_takes_what_only_the_log_knew() {
        use crate::observation::{Cert, TlsInfo, Trust};
        let tls = |trust: Option<Trust>, key_exchange: Option<&str>, cert: Option<&str>| TlsInfo {
            trust,
            protocol: Some("TLSv1.3".into()),
            key_exchange: key_exchange.map(str::to_owned),
            cert: cert.map(|c| Cert { subject: Some(c.into()), ..Cert::default() }),
            ..TlsInfo::default()
        };
        let mut milter = session("milter", "192.0.2.1", Some(40001), 100, &["Q1"]);
        milter.outcome = Outcome::Tls;
        milter.tls = Some(tls(None, None, None));
        let mut log = session("file", "192.0.2.1", Some(40001), 100, &["Q1"]);
        log.outcome = Outcome::Tls;
        log.tls = Some(tls(Some(Trust::Anonymous), Some("X25519"), Some("client.example")));
        log.peer.hostname = Some("client.example".into());
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let (now, mut out) = (Instant::now(), Vec::new());
        let milter_id = milter.event_id.clone();
        // The log's observation came first and waits for its twin (the usual order: Postfix
        // logs the disconnect before the milter's close reaches the core).
        dedup.log(log, now, &mut out);
        dedup.milter(milter, now, &mut out);
        dedup.release(now + Duration::from_secs(10), Release::All, &mut out);
        assert_eq!(kinds(&out), ["milter"]);
        let kept = &out[0];
        assert_eq!(kept.event_id, milter_id, "the milter's identity stays");
        let got = kept.tls.as_ref().unwrap();
        assert_eq!((got.trust, got.key_exchange.as_deref()), (Some(Trust::Anonymous), Some("X25519")));
        assert_eq!(got.cert.as_ref().and_then(|c| c.subject.as_deref()), Some("client.example"));
        assert_eq!(kept.peer.hostname.as_deref(), Some("client.example"));
        // What the milter knew is not overwritten.
        let mut milter = session("milter", "192.0.2.2", Some(1), 200, &[]);
        milter.tls = Some(tls(Some(Trust::Trusted), None, Some("/CN=mine")));
        let mut log = session("file", "192.0.2.2", Some(1), 200, &[]);
        log.tls = Some(tls(Some(Trust::Untrusted), None, Some("theirs")));
        let kept = complete(milter, &log);
        let got = kept.tls.unwrap();
        assert_eq!(got.trust, Some(Trust::Trusted));
        assert_eq!(got.cert.unwrap().subject.as_deref(), Some("/CN=mine"));
    }

    #[test]
    fn log_first_waits_and_the_milter_one_is_kept() {
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        dedup.log(session("file", "192.0.2.1", Some(40001), 100, &[]), now, &mut out);
        assert!(out.is_empty());
        dedup.milter(session("milter", "192.0.2.1", Some(40001), 100, &[]), now + Duration::from_secs(1), &mut out);
        dedup.release(now + Duration::from_secs(10), Release::All, &mut out);
        assert_eq!(kinds(&out), ["milter"]);
        assert_eq!(dedup.held(), 0);
    }

    #[test]
    fn a_late_milter_twin_is_dropped_so_the_session_counts_once() {
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        dedup.log(session("file", "192.0.2.1", None, 100, &["Q1"]), now, &mut out);
        dedup.release(now + Duration::from_secs(3), Release::Due, &mut out);
        dedup.milter(session("milter", "192.0.2.1", Some(5), 100, &["Q1"]), now + Duration::from_secs(4), &mut out);
        assert_eq!(kinds(&out), ["file"]);
        assert_eq!(
            dedup.counters(),
            &DedupCounters { milter: 1, log_duplicates: 0, log_kept: 0, late_milter_duplicates: 1, log_unmatched: 1 }
        );
    }

    #[test]
    fn an_unknown_milter_outcome_gives_way_to_a_log_that_knows() {
        let now = Instant::now();
        let unknown =
            |kind: &str| Observation { outcome: Outcome::Unknown, ..session(kind, "192.0.2.1", Some(7), 100, &[]) };
        for milter_first in [true, false] {
            let mut dedup = MilterDedup::new(DedupConfig::default());
            let mut out = Vec::new();
            let failed =
                Observation { outcome: Outcome::HandshakeFailed, ..session("file", "192.0.2.1", Some(7), 100, &[]) };
            if milter_first {
                dedup.milter(unknown("milter"), now, &mut out);
                assert!(out.is_empty(), "an unknown milter observation waits for the log");
                dedup.log(failed, now + Duration::from_secs(1), &mut out);
            } else {
                dedup.log(failed, now, &mut out);
                dedup.milter(unknown("milter"), now + Duration::from_secs(1), &mut out);
            }
            dedup.release(now + Duration::from_secs(10), Release::All, &mut out);
            assert_eq!(kinds(&out), ["file"], "milter first: {milter_first}");
            assert_eq!(out[0].outcome, Outcome::HandshakeFailed);
            assert_eq!(dedup.counters().log_kept, 1);
        }
        // Both unknown: the milter's is kept; alone, an unknown milter one is emitted after the grace.
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let mut out = Vec::new();
        dedup.milter(unknown("milter"), now, &mut out);
        dedup.log(unknown("file"), now, &mut out);
        dedup.milter(
            Observation { peer: PeerInfo { port: Some(8), ..unknown("milter").peer }, ..unknown("milter") },
            now,
            &mut out,
        );
        dedup.release(now + Duration::from_secs(3), Release::Due, &mut out);
        assert_eq!(kinds(&out), ["milter", "milter"]);
    }

    #[test]
    fn a_checkpoint_releases_held_log_observations_but_not_an_unknown_milter_one() {
        let now = Instant::now();
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let mut out = Vec::new();
        let unknown = Observation { outcome: Outcome::Unknown, ..session("milter", "192.0.2.1", Some(7), 100, &[]) };
        dedup.milter(unknown, now, &mut out);
        dedup.log(session("file", "192.0.2.9", Some(9), 100, &[]), now, &mut out);
        // A checkpoint a moment later: the log observation (it pins a file offset) goes, the
        // milter's keeps its grace...
        dedup.release(now + Duration::from_millis(10), Release::Log, &mut out);
        assert_eq!(kinds(&out), ["file"]);
        assert_eq!(dedup.held(), 1);
        // ...so its log twin, a little late, still wins.
        let failed =
            Observation { outcome: Outcome::HandshakeFailed, ..session("file", "192.0.2.1", Some(7), 100, &[]) };
        dedup.log(failed, now + Duration::from_millis(900), &mut out);
        assert_eq!(out.iter().map(|o| o.outcome).collect::<Vec<_>>(), [Outcome::Plaintext, Outcome::HandshakeFailed]);
        assert_eq!(dedup.counters().log_kept, 1);
        // Past its grace, or when the process stops, an unknown milter observation is emitted.
        let unknown = Observation { outcome: Outcome::Unknown, ..session("milter", "192.0.2.1", Some(8), 100, &[]) };
        dedup.milter(unknown.clone(), now, &mut out);
        dedup.release(now + Duration::from_secs(1), Release::Log, &mut out);
        assert_eq!(dedup.held(), 1);
        dedup.release(now + Duration::from_secs(2), Release::Log, &mut out);
        assert_eq!(dedup.held(), 0);
        dedup.milter(
            Observation { peer: PeerInfo { port: Some(9), ..unknown.peer.clone() }, ..unknown },
            now,
            &mut out,
        );
        dedup.release(now, Release::All, &mut out);
        assert_eq!(dedup.held(), 0);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn ports_queue_ids_addresses_and_time_keep_sessions_apart() {
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        dedup.milter(session("milter", "192.0.2.1", Some(1), 100, &["Q1"]), now, &mut out);
        // Another port, another queue id, another address, far in time: all different sessions.
        dedup.log(session("file", "192.0.2.1", Some(2), 100, &[]), now, &mut out);
        dedup.log(session("file", "192.0.2.1", None, 100, &["Q2"]), now, &mut out);
        dedup.log(session("file", "192.0.2.2", Some(1), 100, &["Q1"]), now, &mut out);
        dedup.log(session("file", "192.0.2.1", Some(1), 1000, &["Q1"]), now, &mut out);
        dedup.release(now, Release::All, &mut out);
        assert_eq!(kinds(&out), ["milter", "file", "file", "file", "file"]);
        // Outbound and replayed observations pass untouched.
        let mut outbound = session("file", "192.0.2.1", Some(1), 100, &["Q1"]);
        outbound.direction = Direction::Outbound;
        out.clear();
        dedup.log(outbound, now, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn pairing_is_one_to_one_and_prefers_an_exact_twin() {
        let mut dedup = MilterDedup::new(DedupConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        // Two sessions from one address without ports or queue ids: each log one takes one twin.
        dedup.milter(session("milter", "192.0.2.1", None, 100, &[]), now, &mut out);
        dedup.milter(session("milter", "192.0.2.1", None, 102, &[]), now, &mut out);
        for ts in [100, 102, 104] {
            dedup.log(session("file", "192.0.2.1", None, ts, &[]), now, &mut out);
        }
        dedup.release(now, Release::All, &mut out);
        assert_eq!(kinds(&out), ["milter", "milter", "file"]);
        // A nearer start time loses against a shared queue id.
        let mut dedup = MilterDedup::new(DedupConfig::default());
        out.clear();
        dedup.log(session("file", "192.0.2.1", None, 100, &[]), now, &mut out);
        dedup.log(session("file", "192.0.2.1", None, 130, &["Q9"]), now, &mut out);
        dedup.milter(session("milter", "192.0.2.1", None, 101, &["Q9"]), now, &mut out);
        dedup.release(now, Release::All, &mut out);
        assert_eq!(out.iter().map(|o| o.ts.timestamp()).collect::<Vec<_>>(), [101, 100]);
    }

    #[test]
    fn memory_is_bounded_and_nothing_is_lost() {
        let config = DedupConfig { max_entries: 8, ..DedupConfig::default() };
        let mut dedup = MilterDedup::new(config);
        let now = Instant::now();
        let mut out = Vec::new();
        for n in 0..100u16 {
            dedup.log(session("file", "192.0.2.1", Some(n), 100, &[]), now, &mut out);
            dedup.milter(session("milter", "192.0.2.2", Some(n), 100, &[]), now, &mut out);
        }
        assert!(
            dedup.held() <= 8 && dedup.order.len() <= 8 && dedup.recent.values().map(VecDeque::len).sum::<usize>() <= 8
        );
        dedup.release(now, Release::All, &mut out);
        assert_eq!(out.len(), 200);
        // Remembered sessions are forgotten after the window and the grace.
        dedup.forget(now + Duration::from_secs(63));
        assert!(dedup.recent.is_empty() && dedup.order.is_empty());
    }
}
