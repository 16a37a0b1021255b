//! `ReputationStore`: where endpoint histories and the name graph live between runs.
//!
//! The store sits after `correlate` in the flow: [`record`] folds a batch of observations into
//! it (one [`HostHistory`] per [`EndpointKey`], plus the names that lead to an endpoint), and
//! `explain` and the feeds read it back. Two backends implement the trait: `memory.rs`
//! ([`super::memory::MemoryStore`], plain maps, the reference) and `indra.rs`
//! ([`super::indra::IndraStore`], an IndraDB graph saved atomically to a folder). Both pass the
//! same conformance suite (`reputation_store_suite!`, STYLE.md §6).
//!
//! The name graph has two kinds of edges, both learned from outbound observations only: an MX
//! or peer host name resolves to an endpoint IP, and a recipient domain was delivered via a host
//! name. Names are stored as given; [`record`] normalises them with [`dns_name`] first, and
//! readers should look them up the same way.
//!
//! **Invariant:** [`ReputationStore::save`] is the only durability point. It is atomic: a crash at
//! any moment leaves either the previous or the new state on disk, never a torn one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::history::HostHistory;
use crate::observation::{Direction, Observation};

/// One remote endpoint: which side we were, and the peer's IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    /// Outbound: we delivered to it. Inbound: it delivered to us.
    pub direction: Direction,
    /// The peer's address in canonical form, as in [`crate::observation::PeerInfo::ip`].
    pub ip: String,
}

/// The name of a direction in keys: `outbound` or `inbound`.
pub fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    }
}

impl Ord for EndpointKey {
    /// Orders like the text form (`inbound/…` before `outbound/…`, then by IP text), so a sorted
    /// list of keys and a sorted list of their names agree.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (direction_name(self.direction), self.ip.as_str()).cmp(&(direction_name(other.direction), other.ip.as_str()))
    }
}

impl PartialOrd for EndpointKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for EndpointKey {
    /// `outbound/192.0.2.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", direction_name(self.direction), self.ip)
    }
}

impl FromStr for EndpointKey {
    type Err = anyhow::Error;

    /// Parses the text form, `outbound/192.0.2.1` or `inbound/2001:db8::1`.
    fn from_str(text: &str) -> Result<Self> {
        let (direction, ip) = text.split_once('/').with_context(|| format!("invalid endpoint {text:?}"))?;
        let direction = match direction {
            "outbound" => Direction::Outbound,
            "inbound" => Direction::Inbound,
            _ => bail!("invalid endpoint {text:?}: the direction must be outbound or inbound"),
        };
        if ip.is_empty() {
            bail!("invalid endpoint {text:?}: no IP");
        }
        Ok(EndpointKey { direction, ip: ip.to_owned() })
    }
}

/// A host name or domain in the form the store keeps: trimmed, ASCII lower case, no final dot.
pub fn dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Persistent reputation state: endpoint histories and the name graph.
///
/// Methods that only read take `&self`; writes take `&mut self` and are visible to later reads at
/// once, but reach the disk only with [`ReputationStore::save`].
pub trait ReputationStore {
    /// The history of an endpoint, `None` if it was never stored.
    fn history(&self, key: &EndpointKey) -> Result<Option<HostHistory>>;

    /// Stores an endpoint's history, replacing what was there.
    fn put_history(&mut self, key: &EndpointKey, history: &HostHistory) -> Result<()>;

    /// Every endpoint with its history, sorted by key.
    fn endpoints(&self) -> Result<Vec<(EndpointKey, HostHistory)>>;

    /// Calls `visit` with every endpoint and its history, in key order, like
    /// [`ReputationStore::endpoints`] but one at a time: a backend that keeps histories in a
    /// compact form decodes one history per call instead of all of them at once (a decoded
    /// history takes several times the memory of its compact form). The first error stops it.
    fn for_each_endpoint(&self, visit: &mut dyn FnMut(&EndpointKey, &HostHistory) -> Result<()>) -> Result<()> {
        for (key, history) in self.endpoints()? {
            visit(&key, &history)?;
        }
        Ok(())
    }

    /// Records that an MX or peer host name resolved to an endpoint IP (idempotent).
    fn link_hostname_ip(&mut self, hostname: &str, ip: &str) -> Result<()>;

    /// Records that mail for a recipient domain was delivered via a host name (idempotent).
    fn link_domain_hostname(&mut self, domain: &str, hostname: &str) -> Result<()>;

    /// The IPs a host name resolved to, sorted and deduplicated.
    fn ips_of_hostname(&self, hostname: &str) -> Result<Vec<String>>;

    /// The host names a domain was delivered via, sorted and deduplicated.
    fn hostnames_of_domain(&self, domain: &str) -> Result<Vec<String>>;

    /// The host names that resolved to an IP (the reverse of `link_hostname_ip`), sorted and
    /// deduplicated.
    fn hostnames_of_ip(&self, ip: &str) -> Result<Vec<String>>;

    /// Records that `ip` presented the certificate `certificate` (its identity,
    /// [`crate::observation::Cert::identity`]).
    fn link_ip_certificate(&mut self, ip: &str, certificate: &str) -> Result<()>;

    /// The certificates `ip` presented, sorted.
    fn certificates_of_ip(&self, ip: &str) -> Result<Vec<String>>;

    /// The IPs that presented `certificate`, sorted.
    fn ips_of_certificate(&self, certificate: &str) -> Result<Vec<String>>;

    /// Makes everything written so far durable (atomic: a crash at any point leaves the previous
    /// or the new state, never a torn one).
    fn save(&mut self) -> Result<()>;
}

/// What [`record`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RecordCounts {
    /// Observations given, including the skipped ones.
    pub observations: u64,
    /// Observations without a peer IP: no endpoint to attribute them to, so no history.
    pub skipped: u64,
    /// Distinct endpoints whose history was updated.
    pub endpoints: u64,
    /// Of those, endpoints the store did not know before.
    pub new_endpoints: u64,
    /// Distinct host name → IP links written.
    pub hostname_links: u64,
    /// Distinct domain → host name links written.
    pub domain_links: u64,
    /// Distinct IP → certificate links written.
    pub certificate_links: u64,
}

impl RecordCounts {
    /// Adds another batch's counts (`endpoints` may then count an endpoint once per batch).
    pub fn add(&mut self, other: &RecordCounts) {
        self.observations += other.observations;
        self.skipped += other.skipped;
        self.endpoints += other.endpoints;
        self.new_endpoints += other.new_endpoints;
        self.hostname_links += other.hostname_links;
        self.domain_links += other.domain_links;
        self.certificate_links += other.certificate_links;
    }
}

/// Folds observations into a store and returns what it did.
///
/// Each observation with a peer IP goes into the history of its (direction, IP) endpoint; the
/// batch is grouped by endpoint first, so each endpoint is read and written once (in key order),
/// and observations are applied in slice order. Observations without an IP are skipped and
/// counted. Outbound observations also add the edges host name → IP (when both are known) and
/// recipient domain → host name (when the host name is known; this one does not need the IP).
/// Names are normalised with [`dns_name`]. `trusted_source` says whether an observation's source
/// may promote a host (see [`HostHistory::observe`]).
pub fn record(
    store: &mut dyn ReputationStore,
    observations: &[Observation],
    trusted_source: impl Fn(&Observation) -> bool,
) -> Result<RecordCounts> {
    let mut counts = RecordCounts { observations: observations.len() as u64, ..RecordCounts::default() };
    let mut by_endpoint: BTreeMap<EndpointKey, Vec<&Observation>> = BTreeMap::new();
    let mut hostname_ips: BTreeSet<(String, String)> = BTreeSet::new();
    let mut domain_hostnames: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ip_certificates: BTreeSet<(String, String)> = BTreeSet::new();
    for observation in observations {
        let outbound = observation.direction == Direction::Outbound;
        let hostname = observation.peer.hostname.as_deref().map(dns_name).filter(|h| !h.is_empty());
        let ip = observation.peer.ip.as_deref().filter(|ip| !ip.is_empty());
        if let (true, Some(hostname)) = (outbound, &hostname) {
            for domain in observation.domains.iter().map(|d| dns_name(d)).filter(|d| !d.is_empty()) {
                domain_hostnames.insert((domain, hostname.clone()));
            }
            if let Some(ip) = ip {
                hostname_ips.insert((hostname.clone(), ip.to_owned()));
            }
        }
        let Some(ip) = ip else {
            counts.skipped += 1;
            continue;
        };
        if let Some(identity) = observation.tls.as_ref().and_then(|t| t.cert.as_ref()).and_then(|c| c.identity()) {
            ip_certificates.insert((ip.to_owned(), identity));
        }
        let key = EndpointKey { direction: observation.direction, ip: ip.to_owned() };
        by_endpoint.entry(key).or_default().push(observation);
    }
    for (key, group) in &by_endpoint {
        let stored = store.history(key).with_context(|| format!("cannot read the history of {key}"))?;
        if stored.is_none() {
            counts.new_endpoints += 1;
        }
        let mut history = stored.unwrap_or_default();
        for observation in group {
            history.observe(observation, trusted_source(observation));
        }
        store.put_history(key, &history).with_context(|| format!("cannot store the history of {key}"))?;
    }
    counts.endpoints = by_endpoint.len() as u64;
    for (hostname, ip) in &hostname_ips {
        store.link_hostname_ip(hostname, ip).with_context(|| format!("cannot link {hostname} to {ip}"))?;
    }
    counts.hostname_links = hostname_ips.len() as u64;
    for (domain, hostname) in &domain_hostnames {
        store.link_domain_hostname(domain, hostname).with_context(|| format!("cannot link {domain} to {hostname}"))?;
    }
    counts.domain_links = domain_hostnames.len() as u64;
    for (ip, certificate) in &ip_certificates {
        store.link_ip_certificate(ip, certificate).with_context(|| format!("cannot link {ip} to {certificate}"))?;
    }
    counts.certificate_links = ip_certificates.len() as u64;
    Ok(counts)
}

/// Runs the conformance suite against a store backend: one `#[test]` per check, in a module.
///
/// `reputation_store_suite!(memory_suite, MemoryStore::new())` expands to `mod memory_suite`
/// with a test per function of `store::conformance`, each on a fresh store from the constructor
/// expression (evaluated in the calling module's scope).
#[cfg(test)]
macro_rules! reputation_store_suite {
    ($prefix:ident, $constructor:expr) => {
        mod $prefix {
            #[allow(unused_imports)]
            use super::*;

            $crate::reputation::store::reputation_store_suite!(@tests $constructor;
                missing_endpoint_is_none,
                round_trip,
                overwrite,
                endpoints_sorted,
                for_each_endpoint_agrees,
                edges,
                edges_do_not_make_endpoints,
                record_groups_and_counts,
                record_merges_with_stored_history,
                certificates
            );
        }
    };
    (@tests $constructor:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let mut store = $constructor;
                $crate::reputation::store::conformance::$name(&mut store).unwrap();
            }
        )*
    };
}

#[cfg(test)]
pub(crate) use reputation_store_suite;

/// The checks every backend must pass, and the observation builder they share.
#[cfg(test)]
pub(crate) mod conformance {
    use std::sync::Arc;

    use anyhow::{ensure, Result};

    use super::{record, EndpointKey, RecordCounts, ReputationStore};
    use crate::observation::{Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, Source, TlsInfo, Trust};
    use crate::reputation::history::HostHistory;

    /// Seconds after which the test observations happen.
    pub const T0: i64 = 1_790_000_000;
    const DAY: i64 = 86_400;

    /// What an observation shows.
    #[derive(Clone, Copy)]
    pub enum Kind {
        /// TLSv1.3 with a trusted certificate.
        Valid,
        /// TLSv1.2 with an untrusted certificate.
        Untrusted,
        /// Plaintext.
        Plain,
        /// A failed handshake.
        Handshake,
    }

    /// Where an observation came from: direction, IP, host name and recipient domains.
    pub struct Peer<'a> {
        pub direction: Direction,
        pub ip: Option<&'a str>,
        pub hostname: Option<&'a str>,
        pub domains: &'a [&'a str],
    }

    /// An outbound peer with a host name and one domain.
    pub fn outbound<'a>(ip: &'a str, hostname: &'a str, domains: &'a [&'a str]) -> Peer<'a> {
        Peer { direction: Direction::Outbound, ip: Some(ip), hostname: Some(hostname), domains }
    }

    /// One observation of `peer` at `T0 + at`, with id `id`.
    pub fn observation(peer: &Peer<'_>, at: i64, kind: Kind, id: usize) -> Observation {
        let tls = |trust: Trust, protocol: &str, cert: Cert| {
            Some(TlsInfo {
                trust: Some(trust),
                protocol: Some(protocol.to_owned()),
                bits: Some(256),
                cert: Some(cert),
                ..TlsInfo::default()
            })
        };
        let hostname = peer.hostname.unwrap_or("unknown");
        // A CA-signed certificate logged with its fingerprint; a self-signed one by names only.
        let signed = Cert {
            subject: Some(hostname.to_owned()),
            issuer: Some("Example CA".to_owned()),
            fingerprint: Some("2f:dc:d6:54".to_owned()),
            pkey_fingerprint: Some("AD:EA:28:86".to_owned()),
        };
        let own = Cert { subject: Some(hostname.to_owned()), issuer: Some(hostname.to_owned()), ..Cert::default() };
        let (outcome, tls, failure) = match kind {
            Kind::Valid => (Outcome::Tls, tls(Trust::Trusted, "TLSv1.3", signed), None),
            Kind::Untrusted => (Outcome::Tls, tls(Trust::Untrusted, "TLSv1.2", own), None),
            Kind::Plain => (Outcome::Plaintext, None, None),
            Kind::Handshake => (
                Outcome::HandshakeFailed,
                None,
                Some(Failure { kind: "validation-failure".into(), reason: "SSL_connect error: -1".into() }),
            ),
        };
        let ts = chrono::DateTime::from_timestamp(T0 + at, 0).unwrap();
        Observation {
            ts,
            end_ts: ts,
            mta: Mta::Postfix,
            reporter: Arc::from("mx"),
            instance: Arc::from("postfix"),
            direction: peer.direction,
            peer: PeerInfo {
                hostname: peer.hostname.map(str::to_owned),
                ip: peer.ip.map(str::to_owned),
                port: Some(25),
            },
            domains: peer.domains.iter().map(|d| (*d).to_owned()).collect(),
            queue_ids: Vec::new(),
            outcome,
            tls,
            failure,
            delivered: Some(true),
            tls_feature: None,
            conn_use: None,
            local_policy: None,
            after_tls_failure: false,
            replayed: false,
            source: Arc::new(Source { kind: "file".into(), name: "t".into(), trust: "local".into() }),
            lines: 2,
            event_id: format!("{id:016x}"),
        }
    }

    /// A history with days, a ring of recent observations, names and domains.
    pub fn sample_history(ip: &str, seed: usize) -> HostHistory {
        let peer = outbound(ip, "mx.example.net", &["example.net", "example.org"]);
        let kinds = [Kind::Valid, Kind::Untrusted, Kind::Plain, Kind::Handshake, Kind::Valid];
        let mut history = HostHistory::default();
        for (idx, kind) in kinds.iter().enumerate() {
            let at = (idx as i64) * DAY + seed as i64;
            history.observe(&observation(&peer, at, *kind, seed * 100 + idx), idx % 2 == 0);
        }
        history
    }

    fn key(direction: Direction, ip: &str) -> EndpointKey {
        EndpointKey { direction, ip: ip.to_owned() }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Certificates: the history keeps each identity with its names and times; the graph links
    /// the IP to it both ways.
    pub fn certificates(store: &mut dyn ReputationStore) -> Result<()> {
        let history = sample_history("192.0.2.1", 1);
        let identities: Vec<&str> = history.certs.iter().map(|c| c.identity.as_str()).collect();
        assert_eq!(identities, ["2F:DC:D6:54", "mx.example.net / mx.example.net"], "{:?}", history.certs);
        assert_eq!(history.certs[0].count, 2, "two valid observations");
        assert_eq!(history.current_cert().map(|c| c.identity.as_str()), Some("2F:DC:D6:54"));
        let a = outbound("192.0.2.1", "mx1.example.net", &["example.net"]);
        let b = outbound("192.0.2.2", "mx2.example.net", &["example.net"]);
        let observations = [observation(&a, 0, Kind::Valid, 1), observation(&b, 10, Kind::Valid, 2)];
        let counts = record(store, &observations, |_| true)?;
        assert_eq!(counts.certificate_links, 2);
        assert_eq!(store.certificates_of_ip("192.0.2.1")?, ["2F:DC:D6:54"]);
        // One certificate on two addresses (a shared certificate, or a MITM presenting one).
        assert_eq!(store.ips_of_certificate("2F:DC:D6:54")?, ["192.0.2.1", "192.0.2.2"]);
        assert!(store.certificates_of_ip("192.0.2.3")?.is_empty());
        assert!(store.ips_of_certificate("no such certificate")?.is_empty());
        let stored = store.history(&key(Direction::Outbound, "192.0.2.1"))?.expect("recorded");
        assert_eq!(stored.certs.len(), 1);
        assert_eq!(stored.certs[0].subject.as_deref(), Some("mx1.example.net"));
        Ok(())
    }

    pub fn for_each_endpoint_agrees(store: &mut dyn ReputationStore) -> Result<()> {
        let mut seen = Vec::new();
        store.for_each_endpoint(&mut |key, history| {
            seen.push((key.clone(), history.clone()));
            Ok(())
        })?;
        ensure!(seen.is_empty());
        for (idx, ip) in ["198.51.100.7", "192.0.2.10", "192.0.2.9", "2001:db8::1"].iter().enumerate() {
            let direction = if idx % 2 == 0 { Direction::Outbound } else { Direction::Inbound };
            store.put_history(&key(direction, ip), &sample_history(ip, idx))?;
        }
        store.for_each_endpoint(&mut |key, history| {
            seen.push((key.clone(), history.clone()));
            Ok(())
        })?;
        assert_eq!(seen, store.endpoints()?);
        // The first error stops the walk and is returned.
        let mut calls = 0;
        let res = store.for_each_endpoint(&mut |_, _| {
            calls += 1;
            anyhow::bail!("stop")
        });
        ensure!(res.is_err() && calls == 1);
        Ok(())
    }

    pub fn missing_endpoint_is_none(store: &mut dyn ReputationStore) -> Result<()> {
        ensure!(store.history(&key(Direction::Outbound, "192.0.2.1"))?.is_none());
        ensure!(store.endpoints()?.is_empty());
        ensure!(store.ips_of_hostname("mx.example.net")?.is_empty());
        ensure!(store.hostnames_of_domain("example.net")?.is_empty());
        ensure!(store.hostnames_of_ip("192.0.2.1")?.is_empty());
        Ok(())
    }

    pub fn round_trip(store: &mut dyn ReputationStore) -> Result<()> {
        let history = sample_history("192.0.2.1", 1);
        ensure!(history.days.len() == 5 && history.recent.len() == 5 && history.domains.len() == 2);
        let outbound = key(Direction::Outbound, "192.0.2.1");
        store.put_history(&outbound, &history)?;
        assert_eq!(store.history(&outbound)?, Some(history.clone()));
        // The other direction of the same IP is another endpoint.
        assert_eq!(store.history(&key(Direction::Inbound, "192.0.2.1"))?, None);
        let ipv6 = key(Direction::Inbound, "2001:db8::25");
        store.put_history(&ipv6, &HostHistory::default())?;
        assert_eq!(store.history(&ipv6)?, Some(HostHistory::default()));
        assert_eq!(store.endpoints()?, vec![(ipv6, HostHistory::default()), (outbound, history)]);
        Ok(())
    }

    pub fn overwrite(store: &mut dyn ReputationStore) -> Result<()> {
        let outbound = key(Direction::Outbound, "192.0.2.1");
        store.put_history(&outbound, &sample_history("192.0.2.1", 1))?;
        let newer = sample_history("192.0.2.1", 2);
        store.put_history(&outbound, &newer)?;
        assert_eq!(store.history(&outbound)?, Some(newer.clone()));
        assert_eq!(store.endpoints()?, vec![(outbound, newer)]);
        Ok(())
    }

    pub fn endpoints_sorted(store: &mut dyn ReputationStore) -> Result<()> {
        let keys = [
            key(Direction::Outbound, "198.51.100.7"),
            key(Direction::Inbound, "203.0.113.9"),
            key(Direction::Outbound, "192.0.2.10"),
            key(Direction::Outbound, "192.0.2.9"),
            key(Direction::Inbound, "192.0.2.9"),
            key(Direction::Outbound, "2001:db8::1"),
        ];
        for (idx, key) in keys.iter().enumerate() {
            store.put_history(key, &sample_history(&key.ip, idx))?;
        }
        let got = store.endpoints()?;
        let names: Vec<String> = got.iter().map(|(key, _)| key.to_string()).collect();
        assert_eq!(
            names,
            strings(&[
                "inbound/192.0.2.9",
                "inbound/203.0.113.9",
                "outbound/192.0.2.10",
                "outbound/192.0.2.9",
                "outbound/198.51.100.7",
                "outbound/2001:db8::1",
            ])
        );
        for (key, history) in &got {
            let idx = keys.iter().position(|k| k == key).unwrap();
            assert_eq!(*history, sample_history(&key.ip, idx), "{key}");
        }
        Ok(())
    }

    pub fn edges(store: &mut dyn ReputationStore) -> Result<()> {
        store.link_hostname_ip("mx2.example.net", "192.0.2.2")?;
        store.link_hostname_ip("mx1.example.net", "192.0.2.1")?;
        store.link_hostname_ip("mx1.example.net", "2001:db8::1")?;
        store.link_hostname_ip("mx1.example.net", "192.0.2.1")?;
        store.link_hostname_ip("mx2.example.net", "192.0.2.1")?;
        store.link_domain_hostname("example.net", "mx2.example.net")?;
        store.link_domain_hostname("example.net", "mx1.example.net")?;
        store.link_domain_hostname("example.net", "mx1.example.net")?;
        store.link_domain_hostname("example.org", "mx1.example.net")?;
        // A name used as a domain and as a host name keeps the two roles apart.
        store.link_domain_hostname("example.com", "example.com")?;
        store.link_hostname_ip("example.com", "198.51.100.1")?;

        assert_eq!(store.ips_of_hostname("mx1.example.net")?, strings(&["192.0.2.1", "2001:db8::1"]));
        assert_eq!(store.ips_of_hostname("mx2.example.net")?, strings(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(store.hostnames_of_domain("example.net")?, strings(&["mx1.example.net", "mx2.example.net"]));
        assert_eq!(store.hostnames_of_domain("example.org")?, strings(&["mx1.example.net"]));
        assert_eq!(store.hostnames_of_ip("192.0.2.1")?, strings(&["mx1.example.net", "mx2.example.net"]));
        assert_eq!(store.hostnames_of_ip("2001:db8::1")?, strings(&["mx1.example.net"]));
        assert_eq!(store.hostnames_of_domain("example.com")?, strings(&["example.com"]));
        assert_eq!(store.ips_of_hostname("example.com")?, strings(&["198.51.100.1"]));
        assert_eq!(store.hostnames_of_ip("198.51.100.1")?, strings(&["example.com"]));
        // Names of the wrong kind, and unknown names, have no edges.
        ensure!(store.ips_of_hostname("example.net")?.is_empty());
        ensure!(store.hostnames_of_domain("mx1.example.net")?.is_empty());
        ensure!(store.hostnames_of_ip("192.0.2.3")?.is_empty());
        ensure!(store.hostnames_of_domain("example.edu")?.is_empty());
        Ok(())
    }

    pub fn edges_do_not_make_endpoints(store: &mut dyn ReputationStore) -> Result<()> {
        store.link_hostname_ip("mx1.example.net", "192.0.2.1")?;
        ensure!(store.endpoints()?.is_empty());
        ensure!(store.history(&key(Direction::Outbound, "192.0.2.1"))?.is_none());
        // And an endpoint makes no edges.
        store.put_history(&key(Direction::Outbound, "192.0.2.7"), &HostHistory::default())?;
        ensure!(store.hostnames_of_ip("192.0.2.7")?.is_empty());
        Ok(())
    }

    pub fn record_groups_and_counts(store: &mut dyn ReputationStore) -> Result<()> {
        let a = outbound("192.0.2.1", "MX1.Example.NET.", &["example.net"]);
        let b = outbound("192.0.2.2", "mx1.example.net", &["example.org", "example.net"]);
        let inbound = Peer {
            direction: Direction::Inbound,
            ip: Some("192.0.2.1"),
            hostname: Some("mail.example.com"),
            domains: &[],
        };
        let no_ip = Peer {
            direction: Direction::Outbound,
            ip: None,
            hostname: Some("mx9.example.net"),
            domains: &["example.edu"],
        };
        let observations = vec![
            observation(&a, 0, Kind::Valid, 1),
            observation(&b, 10, Kind::Untrusted, 2),
            observation(&inbound, 20, Kind::Plain, 3),
            observation(&a, DAY, Kind::Handshake, 4),
            observation(&no_ip, DAY, Kind::Valid, 5),
            observation(&a, 2 * DAY, Kind::Valid, 6),
        ];
        // Only observations from the "trusted" reporter count as trusted sources.
        let trusted = |o: &Observation| o.event_id.ends_with('1') || o.event_id.ends_with('6');
        let counts = record(store, &observations, trusted)?;
        let want = RecordCounts {
            observations: 6,
            skipped: 1,
            endpoints: 3,
            new_endpoints: 3,
            hostname_links: 2,
            domain_links: 3,
            certificate_links: 2,
        };
        assert_eq!(counts, want);

        let expect = |picks: &[usize]| {
            let mut history = HostHistory::default();
            for idx in picks {
                history.observe(&observations[*idx], trusted(&observations[*idx]));
            }
            history
        };
        let endpoints = store.endpoints()?;
        assert_eq!(
            endpoints,
            vec![
                (key(Direction::Inbound, "192.0.2.1"), expect(&[2])),
                (key(Direction::Outbound, "192.0.2.1"), expect(&[0, 3, 5])),
                (key(Direction::Outbound, "192.0.2.2"), expect(&[1])),
            ]
        );
        let trusted_flags: Vec<bool> = endpoints[1].1.recent.iter().map(|r| r.trusted_source).collect();
        assert_eq!(trusted_flags, vec![true, false, true]);

        // Names are normalised; inbound peers make no edges; no IP still links domain → host.
        assert_eq!(store.ips_of_hostname("mx1.example.net")?, strings(&["192.0.2.1", "192.0.2.2"]));
        ensure!(store.ips_of_hostname("MX1.Example.NET.")?.is_empty());
        ensure!(store.ips_of_hostname("mail.example.com")?.is_empty());
        assert_eq!(store.hostnames_of_domain("example.net")?, strings(&["mx1.example.net"]));
        assert_eq!(store.hostnames_of_domain("example.org")?, strings(&["mx1.example.net"]));
        assert_eq!(store.hostnames_of_domain("example.edu")?, strings(&["mx9.example.net"]));
        ensure!(store.ips_of_hostname("mx9.example.net")?.is_empty());

        // An empty batch does nothing.
        assert_eq!(record(store, &[], |_| true)?, RecordCounts::default());
        assert_eq!(store.endpoints()?, endpoints);
        Ok(())
    }

    pub fn record_merges_with_stored_history(store: &mut dyn ReputationStore) -> Result<()> {
        let a = outbound("192.0.2.1", "mx1.example.net", &["example.net"]);
        let first: Vec<Observation> = (0..3).map(|d| observation(&a, d * DAY, Kind::Valid, d as usize)).collect();
        let second: Vec<Observation> = (3..5).map(|d| observation(&a, d * DAY, Kind::Plain, d as usize)).collect();
        let counts = record(store, &first, |_| true)?;
        assert_eq!((counts.endpoints, counts.new_endpoints), (1, 1));
        let counts = record(store, &second, |_| true)?;
        assert_eq!((counts.endpoints, counts.new_endpoints), (1, 0));
        let mut want = HostHistory::default();
        for observation in first.iter().chain(&second) {
            want.observe(observation, true);
        }
        assert_eq!(store.history(&key(Direction::Outbound, "192.0.2.1"))?, Some(want));
        assert_eq!(store.ips_of_hostname("mx1.example.net")?, strings(&["192.0.2.1"]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_print_parse_and_sort_like_text() {
        let keys: Vec<EndpointKey> =
            ["outbound/192.0.2.1", "inbound/2001:db8::1", "outbound/192.0.2.10", "inbound/192.0.2.1"]
                .iter()
                .map(|text| text.parse().unwrap())
                .collect();
        for key in &keys {
            assert_eq!(key.to_string().parse::<EndpointKey>().unwrap(), *key);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let mut names: Vec<String> = keys.iter().map(ToString::to_string).collect();
        names.sort();
        assert_eq!(sorted.iter().map(ToString::to_string).collect::<Vec<_>>(), names);
        assert_eq!(keys[0], EndpointKey { direction: Direction::Outbound, ip: "192.0.2.1".into() });
        for bad in ["192.0.2.1", "sideways/192.0.2.1", "outbound/", ""] {
            assert!(bad.parse::<EndpointKey>().is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&keys[0]).unwrap(), r#"{"direction":"outbound","ip":"192.0.2.1"}"#);
    }

    #[test]
    fn dns_names() {
        assert_eq!(dns_name(" MX1.Example.NET. "), "mx1.example.net");
        assert_eq!(dns_name("example.net"), "example.net");
    }
}
