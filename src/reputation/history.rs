//! `HostHistory`: what one endpoint (direction + IP) has shown over time, in compact form.
//!
//! Evidence is kept per day ([`DayStats`]: decisions by outcome and trust, protocol and bit
//! ranges, trusted-source count) for the last [`MAX_DAYS`] active days, plus a ring of the
//! [`MAX_RECENT`] latest observations for the rules that look at order (last N all good,
//! consecutive failures, clearing after the next attempt). Merging two histories is associative
//! and commutative (sums, min/max, union-then-keep-the-newest), so partial histories built from
//! ClickHouse partitions or by several ingesters combine into the same result in any order.
//!
//! What is not evidence (FEEDS.md §3.1): a reused connection only moves `last_seen`; a
//! connection whose plaintext our own policy caused (`local_policy`) and a replayed verdict
//! (`replayed`, no connection made) are not counted as decisions, but the former is kept in the
//! ring because it shows that the next attempt happened (broken-STARTTLS lifecycle).
//!
//! Certificates ([`CertSeen`], where the MTA logs them): the [`MAX_CERTS`] most recently seen
//! identities (fingerprint, else subject and issuer) with first/last seen and a count. A new
//! certificate is not a failure (rotation is routine, FEEDS.md §3.3): it is shown, not judged.

use serde::{Deserialize, Serialize};

use crate::observation::{Observation, Outcome, Trust};

/// Active days kept per endpoint (a bit more than the 90-day deletion age).
pub const MAX_DAYS: usize = 100;
/// Latest observations kept per endpoint.
pub const MAX_RECENT: usize = 16;
/// Certificate identities kept per endpoint (the most recently seen).
pub const MAX_CERTS: usize = 4;

/// A certificate the endpoint presented, by identity ([`crate::observation::Cert::identity`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertSeen {
    /// The fingerprint (upper case) when logged, else `subject / issuer`.
    pub identity: String,
    /// The subject as logged (Postfix: CN).
    pub subject: Option<String>,
    /// The issuer as logged (Postfix: CN).
    pub issuer: Option<String>,
    /// First and last observation with it (Unix seconds).
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// Observations with it.
    pub count: u32,
}

/// A protocol's rank: 0 unknown, 1 SSLv3, 2 TLSv1, 3 TLSv1.1, 4 TLSv1.2, 5 TLSv1.3.
pub fn protocol_rank(protocol: Option<&str>) -> u8 {
    match protocol {
        Some("SSLv3") => 1,
        Some("TLSv1") | Some("TLSv1.0") | Some("TLS1.0") => 2,
        Some("TLSv1.1") | Some("TLS1.1") => 3,
        Some("TLSv1.2") | Some("TLS1.2") => 4,
        Some("TLSv1.3") | Some("TLS1.3") => 5,
        _ => 0,
    }
}

/// The protocol name of a rank.
pub fn protocol_name(rank: u8) -> &'static str {
    match rank {
        1 => "SSLv3",
        2 => "TLSv1",
        3 => "TLSv1.1",
        4 => "TLSv1.2",
        5 => "TLSv1.3",
        _ => "unknown",
    }
}

/// One day's decisions of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DayStats {
    /// Days since 1970-01-01 (UTC).
    pub day: u32,
    /// Decisions by outcome, indexed like [`Outcome::ALL`].
    pub by_outcome: [u32; 7],
    /// TLS decisions by trust: verified, trusted, untrusted, anonymous.
    pub by_trust: [u32; 4],
    /// Decisions from trusted sources.
    pub trusted_sources: u32,
    /// Certificate failures (`cert-verify-failed`, or a `certificate-*` failure kind).
    pub cert_failures: u32,
    /// Lowest and highest protocol rank of the TLS decisions (0 when none).
    pub min_protocol: u8,
    /// See `min_protocol`.
    pub max_protocol: u8,
    /// Lowest cipher bits of the TLS decisions (0 when none or not logged).
    pub min_bits: u32,
}

impl DayStats {
    /// Decisions that day (every outcome but `unknown`).
    pub fn decisions(&self) -> u32 {
        self.by_outcome[..6].iter().sum()
    }

    fn merge(&mut self, other: &DayStats) {
        for (a, b) in self.by_outcome.iter_mut().zip(other.by_outcome) {
            *a += b;
        }
        for (a, b) in self.by_trust.iter_mut().zip(other.by_trust) {
            *a += b;
        }
        self.trusted_sources += other.trusted_sources;
        self.cert_failures += other.cert_failures;
        self.min_protocol = min_nonzero(self.min_protocol, other.min_protocol);
        self.max_protocol = self.max_protocol.max(other.max_protocol);
        self.min_bits = min_nonzero(self.min_bits, other.min_bits);
    }
}

fn min_nonzero<T: Ord + Default + Copy>(a: T, b: T) -> T {
    match (a == T::default(), b == T::default()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    }
}

/// One of the latest observations, reduced to what the ordered rules need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    /// Unix seconds.
    pub ts: i64,
    /// The outcome.
    pub outcome: Outcome,
    /// The trust, for TLS.
    pub trust: Option<Trust>,
    /// Protocol rank (see [`protocol_rank`]).
    pub protocol: u8,
    /// Cipher bits, 0 when not logged.
    pub bits: u32,
    /// Our own policy decided (STARTTLS discarded by our feed, TLS level none).
    pub local_policy: bool,
    /// A certificate failure (outcome or failure kind).
    pub cert_failure: bool,
    /// From a trusted source.
    pub trusted_source: bool,
    /// The observation's id (orders ties, removes duplicates when merging).
    pub event_id: String,
}

impl Recent {
    /// True for a decision the classes count (not unknown, not our own policy).
    pub fn is_decision(&self) -> bool {
        self.outcome != Outcome::Unknown && !self.local_policy
    }
}

/// The history of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostHistory {
    /// First and last observation (Unix seconds); 0 when empty.
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// Reused connections (no new handshake) seen.
    pub reused: u32,
    /// Active days, oldest first, at most [`MAX_DAYS`] (the newest).
    pub days: Vec<DayStats>,
    /// Latest observations, oldest first, at most [`MAX_RECENT`].
    pub recent: Vec<Recent>,
    /// Host names seen for the endpoint (at most 8).
    pub hostnames: Vec<String>,
    /// Recipient domains delivered to it (at most 16).
    pub domains: Vec<String>,
    /// Server ports it was reached on (outbound `relay=host[ip]:port`, at most 8): with the host
    /// names, the next hops (`[host]:port`) Postfix looks TLS policies up by.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Certificates seen, oldest first, at most [`MAX_CERTS`] (the most recently seen).
    #[serde(default)]
    pub certs: Vec<CertSeen>,
}

impl HostHistory {
    /// Adds one observation; `trusted_source` says whether its source may promote.
    pub fn observe(&mut self, observation: &Observation, trusted_source: bool) {
        let ts = observation.ts.timestamp();
        self.first_seen = if self.first_seen == 0 { ts } else { self.first_seen.min(ts) };
        self.last_seen = self.last_seen.max(ts);
        if observation.replayed {
            return;
        }
        let tls = observation.tls.as_ref();
        if tls.is_some_and(|t| t.reused) {
            self.reused += 1;
            return;
        }
        let cert_failure = observation.outcome == Outcome::CertVerifyFailed
            || observation.failure.as_ref().is_some_and(|f| f.kind.starts_with("certificate-"));
        let local_policy = observation.local_policy.is_some();
        let protocol = protocol_rank(tls.and_then(|t| t.protocol.as_deref()));
        let bits = tls.and_then(|t| t.bits).unwrap_or(0);
        let recent = Recent {
            ts,
            outcome: observation.outcome,
            trust: tls.and_then(|t| t.trust),
            protocol,
            bits,
            local_policy,
            cert_failure,
            trusted_source,
            event_id: observation.event_id.clone(),
        };
        if recent.is_decision() {
            let mut day = DayStats { day: (ts.div_euclid(86_400)) as u32, ..DayStats::default() };
            let outcome_idx = Outcome::ALL.iter().position(|o| *o == observation.outcome).unwrap_or(6);
            day.by_outcome[outcome_idx] = 1;
            if observation.outcome == Outcome::Tls {
                if let Some(trust_idx) = recent.trust.map(trust_index) {
                    day.by_trust[trust_idx] = 1;
                }
                day.min_protocol = protocol;
                day.max_protocol = protocol;
                day.min_bits = bits;
            }
            day.trusted_sources = u32::from(trusted_source);
            day.cert_failures = u32::from(cert_failure);
            merge_days(&mut self.days, std::slice::from_ref(&day));
        }
        merge_recent(&mut self.recent, std::slice::from_ref(&recent));
        if let Some(hostname) = &observation.peer.hostname {
            push_capped(&mut self.hostnames, hostname, 8);
        }
        for domain in &observation.domains {
            push_capped(&mut self.domains, domain, 16);
        }
        if let Some(port) = observation.peer.port {
            push_port(&mut self.ports, port);
        }
        if let Some(cert) = tls.and_then(|t| t.cert.as_ref()) {
            if let Some(identity) = cert.identity() {
                let seen = CertSeen {
                    identity,
                    subject: cert.subject.clone(),
                    issuer: cert.issuer.clone(),
                    first_seen: ts,
                    last_seen: ts,
                    count: 1,
                };
                merge_certs(&mut self.certs, std::slice::from_ref(&seen));
            }
        }
    }

    /// The certificate seen last, if any was logged.
    pub fn current_cert(&self) -> Option<&CertSeen> {
        self.certs.iter().max_by(|a, b| (a.last_seen, &a.identity).cmp(&(b.last_seen, &b.identity)))
    }

    /// Combines another partial history of the same endpoint into this one.
    pub fn merge(&mut self, other: &HostHistory) {
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.reused += other.reused;
        merge_days(&mut self.days, &other.days);
        merge_recent(&mut self.recent, &other.recent);
        for hostname in &other.hostnames {
            push_capped(&mut self.hostnames, hostname, 8);
        }
        for domain in &other.domains {
            push_capped(&mut self.domains, domain, 16);
        }
        for port in &other.ports {
            push_port(&mut self.ports, *port);
        }
        merge_certs(&mut self.certs, &other.certs);
    }

    /// Puts a history assembled from rollup rows (see `tlsledger reputation rebuild`) in the
    /// canonical form [`HostHistory::observe`] keeps: days sorted and capped, the ring sorted
    /// and capped, names sorted, deduplicated and capped.
    pub fn finish_rebuild(&mut self) {
        let days = std::mem::take(&mut self.days);
        merge_days(&mut self.days, &days);
        let recent = std::mem::take(&mut self.recent);
        merge_recent(&mut self.recent, &recent);
        for (items, max) in [(&mut self.hostnames, 8), (&mut self.domains, 16)] {
            let all = std::mem::take(items);
            for item in &all {
                push_capped(items, item, max);
            }
        }
        for port in std::mem::take(&mut self.ports) {
            push_port(&mut self.ports, port);
        }
        let certs = std::mem::take(&mut self.certs);
        merge_certs(&mut self.certs, &certs);
    }

    /// The day statistics from `since_day` on, summed.
    pub fn totals_since(&self, since_day: u32) -> DayStats {
        let mut total = DayStats::default();
        for day in self.days.iter().filter(|d| d.day >= since_day) {
            total.merge(day);
        }
        total
    }
}

/// Index of a trust in [`DayStats::by_trust`].
pub fn trust_index(trust: Trust) -> usize {
    match trust {
        Trust::Verified => 0,
        Trust::Trusted => 1,
        Trust::Untrusted => 2,
        Trust::Anonymous => 3,
    }
}

fn merge_days(days: &mut Vec<DayStats>, other: &[DayStats]) {
    for day in other {
        match days.binary_search_by_key(&day.day, |d| d.day) {
            Ok(idx) => days[idx].merge(day),
            Err(idx) => days.insert(idx, day.clone()),
        }
    }
    if days.len() > MAX_DAYS {
        days.drain(..days.len() - MAX_DAYS);
    }
}

fn merge_recent(recent: &mut Vec<Recent>, other: &[Recent]) {
    for item in other {
        if recent.iter().any(|r| r.event_id == item.event_id && r.ts == item.ts) {
            continue;
        }
        let at = recent.partition_point(|r| (r.ts, r.event_id.as_str()) < (item.ts, item.event_id.as_str()));
        recent.insert(at, item.clone());
    }
    if recent.len() > MAX_RECENT {
        recent.drain(..recent.len() - MAX_RECENT);
    }
}

/// Adds certificates by identity (counts summed, first/last seen widened, names kept from the
/// first that had them), keeps the [`MAX_CERTS`] most recently seen, oldest first.
fn merge_certs(certs: &mut Vec<CertSeen>, other: &[CertSeen]) {
    for item in other {
        match certs.iter_mut().find(|c| c.identity == item.identity) {
            Some(have) => {
                have.first_seen = have.first_seen.min(item.first_seen);
                have.last_seen = have.last_seen.max(item.last_seen);
                have.count = have.count.saturating_add(item.count);
                if have.subject.is_none() {
                    have.subject.clone_from(&item.subject);
                }
                if have.issuer.is_none() {
                    have.issuer.clone_from(&item.issuer);
                }
            }
            None => certs.push(item.clone()),
        }
    }
    certs.sort_by(|a, b| (b.last_seen, &b.identity).cmp(&(a.last_seen, &a.identity)));
    certs.truncate(MAX_CERTS);
    certs.sort_by(|a, b| (a.first_seen, &a.identity).cmp(&(b.first_seen, &b.identity)));
}

/// Adds to the sorted set of ports, which keeps its 8 smallest members (like [`push_capped`]).
fn push_port(ports: &mut Vec<u16>, port: u16) {
    if let Err(at) = ports.binary_search(&port) {
        ports.insert(at, port);
        ports.truncate(8);
    }
}

/// Adds to a sorted set that keeps its `max` smallest members: the same set whatever the order
/// of additions and merges.
fn push_capped(items: &mut Vec<String>, item: &str, max: usize) {
    if let Err(at) = items.binary_search_by(|have| have.as_str().cmp(item)) {
        items.insert(at, item.to_owned());
        items.truncate(max);
    }
}
