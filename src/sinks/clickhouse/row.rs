//! The ClickHouse row of an [`Observation`]: `schema/portable/0001_observations.sql`, column for
//! column, in RowBinary through the `clickhouse` crate.
//!
//! Types follow the portable subset (research/CLICKHOUSE.md §8.1): enums are sent as their `i8`
//! codes (validation is off on 18.16, and `u8` is rejected by modern servers' validation), the
//! peer address as 16 bytes (`FixedString(16)`, IPv4 mapped), times as `DateTime('UTC')` plus the
//! microseconds. Every Observation field survives the round trip ([`ObservationRow::into_observation`]).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observation::{Cert, Direction, Failure, Mta, Observation, Outcome, PeerInfo, Source, TlsInfo, Trust};

/// The table the rows go to (on a cluster, the Distributed table in front of the shards).
pub const TABLE: &str = "observations";

/// The shard-local table of the cluster schema (schema/cluster/0001_observations.sql).
pub const LOCAL_TABLE: &str = "observations_local";

/// One row of `observations`. Each field is the column of the same name; the DDL documents them.
///
/// Text borrows from the [`Observation`] it was built from (`Cow::Borrowed`): building a row
/// allocates nothing, which halved the sink thread's work in bench/clickhouse.sh. Rows read back
/// from the server own their text.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct ObservationRow<'a> {
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub ts: DateTime<Utc>,
    pub ts_micros: u32,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub end_ts: DateTime<Utc>,
    pub end_ts_micros: u32,
    pub mta: i8,
    pub reporter: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    pub direction: i8,
    pub peer_hostname: Option<Cow<'a, str>>,
    pub peer_ip: [u8; 16],
    pub peer_port: Option<u16>,
    pub domains: Cow<'a, [String]>,
    pub queue_ids: Cow<'a, [String]>,
    pub outcome: i8,
    pub has_tls: u8,
    pub tls_trust: i8,
    pub tls_protocol: Option<Cow<'a, str>>,
    pub tls_cipher: Option<Cow<'a, str>>,
    pub tls_bits: Option<u32>,
    pub tls_alg_bits: Option<u32>,
    pub tls_reused: u8,
    pub tls_sni: Option<Cow<'a, str>>,
    pub tls_key_exchange: Option<Cow<'a, str>>,
    pub tls_verify_errors: Cow<'a, [String]>,
    pub failure_kind: Option<Cow<'a, str>>,
    pub failure_reason: Option<Cow<'a, str>>,
    pub delivered: Option<u8>,
    pub tls_feature: Option<Cow<'a, str>>,
    pub conn_use: Option<u32>,
    pub local_policy: Option<Cow<'a, str>>,
    pub after_tls_failure: u8,
    pub replayed: u8,
    pub source_kind: Cow<'a, str>,
    pub source_name: Cow<'a, str>,
    pub source_trust: Cow<'a, str>,
    pub lines: u32,
    pub event_id: Cow<'a, str>,
    pub ingest_ver: u64,
    pub cert_subject: Option<Cow<'a, str>>,
    pub cert_issuer: Option<Cow<'a, str>>,
    pub cert_fingerprint: Option<Cow<'a, str>>,
    pub cert_pkey_fingerprint: Option<Cow<'a, str>>,
}

/// The column names of [`ObservationRow`] in order, for the drift test against `system.columns`.
pub const COLUMNS: &[&str] = &[
    "ts",
    "ts_micros",
    "end_ts",
    "end_ts_micros",
    "mta",
    "reporter",
    "instance",
    "direction",
    "peer_hostname",
    "peer_ip",
    "peer_port",
    "domains",
    "queue_ids",
    "outcome",
    "has_tls",
    "tls_trust",
    "tls_protocol",
    "tls_cipher",
    "tls_bits",
    "tls_alg_bits",
    "tls_reused",
    "tls_sni",
    "tls_key_exchange",
    "tls_verify_errors",
    "failure_kind",
    "failure_reason",
    "delivered",
    "tls_feature",
    "conn_use",
    "local_policy",
    "after_tls_failure",
    "replayed",
    "source_kind",
    "source_name",
    "source_trust",
    "lines",
    "event_id",
    "ingest_ver",
    "cert_subject",
    "cert_issuer",
    "cert_fingerprint",
    "cert_pkey_fingerprint",
];

fn mta_code(mta: Mta) -> i8 {
    match mta {
        Mta::Postfix => 1,
        Mta::Exim => 2,
        Mta::Sendmail => 3,
        Mta::Opensmtpd => 4,
    }
}

fn outcome_code(outcome: Outcome) -> i8 {
    Outcome::ALL.iter().position(|o| *o == outcome).map_or(7, |idx| idx as i8 + 1)
}

fn trust_code(trust: Option<Trust>) -> i8 {
    match trust {
        None => 0,
        Some(Trust::Verified) => 1,
        Some(Trust::Trusted) => 2,
        Some(Trust::Untrusted) => 3,
        Some(Trust::Anonymous) => 4,
    }
}

/// The 16-byte form of an address string; all zeros when it is not an IP.
pub fn ip_bytes(ip: Option<&str>) -> [u8; 16] {
    match ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    }
}

/// The canonical text of a 16-byte address (IPv4 for mapped addresses); `None` for all zeros.
pub fn ip_text(bytes: [u8; 16]) -> Option<String> {
    let v6 = Ipv6Addr::from(bytes);
    if v6.is_unspecified() {
        return None;
    }
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    })
}

impl<'a> ObservationRow<'a> {
    /// The row for `observation`, stamped with `ingest_ver` (insert time in microseconds).
    pub fn from_observation(observation: &'a Observation, ingest_ver: u64) -> Self {
        let tls = observation.tls.as_ref();
        let cert = tls.and_then(|t| t.cert.as_ref());
        ObservationRow {
            ts: observation.ts,
            ts_micros: observation.ts.timestamp_subsec_micros(),
            end_ts: observation.end_ts,
            end_ts_micros: observation.end_ts.timestamp_subsec_micros(),
            mta: mta_code(observation.mta),
            reporter: Cow::Borrowed(&observation.reporter),
            instance: Cow::Borrowed(&observation.instance),
            direction: match observation.direction {
                Direction::Outbound => 1,
                Direction::Inbound => 2,
            },
            peer_hostname: borrow(observation.peer.hostname.as_ref()),
            peer_ip: ip_bytes(observation.peer.ip.as_deref()),
            peer_port: observation.peer.port,
            domains: Cow::Borrowed(&observation.domains),
            queue_ids: Cow::Borrowed(&observation.queue_ids),
            outcome: outcome_code(observation.outcome),
            has_tls: u8::from(tls.is_some()),
            tls_trust: trust_code(tls.and_then(|t| t.trust)),
            tls_protocol: borrow(tls.and_then(|t| t.protocol.as_ref())),
            tls_cipher: borrow(tls.and_then(|t| t.cipher.as_ref())),
            tls_bits: tls.and_then(|t| t.bits),
            tls_alg_bits: tls.and_then(|t| t.alg_bits),
            tls_reused: u8::from(tls.is_some_and(|t| t.reused)),
            tls_sni: borrow(tls.and_then(|t| t.sni.as_ref())),
            tls_key_exchange: borrow(tls.and_then(|t| t.key_exchange.as_ref())),
            tls_verify_errors: tls.map_or(Cow::Borrowed(&[][..]), |t| Cow::Borrowed(&t.verify_errors)),
            failure_kind: observation.failure.as_ref().map(|f| Cow::Borrowed(f.kind.as_str())),
            failure_reason: observation.failure.as_ref().map(|f| Cow::Borrowed(f.reason.as_str())),
            delivered: observation.delivered.map(u8::from),
            tls_feature: borrow(observation.tls_feature.as_ref()),
            conn_use: observation.conn_use,
            local_policy: borrow(observation.local_policy.as_ref()),
            after_tls_failure: u8::from(observation.after_tls_failure),
            replayed: u8::from(observation.replayed),
            source_kind: Cow::Borrowed(&observation.source.kind),
            source_name: Cow::Borrowed(&observation.source.name),
            source_trust: Cow::Borrowed(&observation.source.trust),
            lines: observation.lines,
            event_id: Cow::Borrowed(&observation.event_id),
            ingest_ver,
            cert_subject: borrow(cert.and_then(|c| c.subject.as_ref())),
            cert_issuer: borrow(cert.and_then(|c| c.issuer.as_ref())),
            cert_fingerprint: borrow(cert.and_then(|c| c.fingerprint.as_ref())),
            cert_pkey_fingerprint: borrow(cert.and_then(|c| c.pkey_fingerprint.as_ref())),
        }
    }

    /// The Observation this row stores; `None` when a code is out of range.
    pub fn into_observation(self) -> Option<Observation> {
        let with_micros = |at: DateTime<Utc>, micros: u32| {
            DateTime::from_timestamp_micros(at.timestamp() * 1_000_000 + i64::from(micros.min(999_999)))
        };
        let ts = with_micros(self.ts, self.ts_micros)?;
        let end_ts = with_micros(self.end_ts, self.end_ts_micros)?;
        let trust = match self.tls_trust {
            0 => None,
            1 => Some(Trust::Verified),
            2 => Some(Trust::Trusted),
            3 => Some(Trust::Untrusted),
            4 => Some(Trust::Anonymous),
            _ => return None,
        };
        let tls = (self.has_tls == 1).then_some(TlsInfo {
            trust,
            protocol: owned(self.tls_protocol),
            cipher: owned(self.tls_cipher),
            bits: self.tls_bits,
            alg_bits: self.tls_alg_bits,
            reused: self.tls_reused == 1,
            sni: owned(self.tls_sni),
            key_exchange: owned(self.tls_key_exchange),
            verify_errors: self.tls_verify_errors.into_owned(),
            cert: match (self.cert_subject, self.cert_issuer, self.cert_fingerprint, self.cert_pkey_fingerprint) {
                (None, None, None, None) => None,
                (subject, issuer, fingerprint, pkey_fingerprint) => Some(Cert {
                    subject: owned(subject),
                    issuer: owned(issuer),
                    fingerprint: owned(fingerprint),
                    pkey_fingerprint: owned(pkey_fingerprint),
                }),
            },
        });
        let failure = match (self.failure_kind, self.failure_reason) {
            (Some(kind), Some(reason)) => Some(Failure { kind: kind.into_owned(), reason: reason.into_owned() }),
            _ => None,
        };
        Some(Observation {
            ts,
            end_ts,
            mta: match self.mta {
                1 => Mta::Postfix,
                2 => Mta::Exim,
                3 => Mta::Sendmail,
                4 => Mta::Opensmtpd,
                _ => return None,
            },
            reporter: Arc::from(self.reporter.as_ref()),
            instance: Arc::from(self.instance.as_ref()),
            direction: match self.direction {
                1 => Direction::Outbound,
                2 => Direction::Inbound,
                _ => return None,
            },
            peer: PeerInfo { hostname: owned(self.peer_hostname), ip: ip_text(self.peer_ip), port: self.peer_port },
            domains: self.domains.into_owned(),
            queue_ids: self.queue_ids.into_owned(),
            outcome: *Outcome::ALL.get(usize::try_from(self.outcome).ok()?.checked_sub(1)?)?,
            tls,
            failure,
            delivered: self.delivered.map(|d| d == 1),
            tls_feature: owned(self.tls_feature),
            conn_use: self.conn_use,
            local_policy: owned(self.local_policy),
            after_tls_failure: self.after_tls_failure == 1,
            replayed: self.replayed == 1,
            source: Arc::new(Source {
                kind: self.source_kind.into_owned(),
                name: self.source_name.into_owned(),
                trust: self.source_trust.into_owned(),
            }),
            lines: self.lines,
            event_id: self.event_id.into_owned(),
        })
    }
}

/// Borrowed text of an optional field.
fn borrow(text: Option<&String>) -> Option<Cow<'_, str>> {
    text.map(|t| Cow::Borrowed(t.as_str()))
}

/// Owned text of an optional field.
fn owned(text: Option<Cow<'_, str>>) -> Option<String> {
    text.map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_forms() {
        assert_eq!(ip_text(ip_bytes(Some("192.0.2.1"))).as_deref(), Some("192.0.2.1"));
        assert_eq!(ip_text(ip_bytes(Some("2001:db8::1"))).as_deref(), Some("2001:db8::1"));
        assert_eq!(ip_bytes(Some("192.0.2.1"))[10..12], [0xff, 0xff]);
        assert_eq!(ip_bytes(Some("x.x.x.x")), [0; 16]);
        assert_eq!(ip_text([0; 16]), None);
    }

    #[test]
    fn enum_codes_match_the_ddl() {
        let ddl = include_str!("../../../schema/portable/0001_observations.sql");
        for (idx, outcome) in Outcome::ALL.iter().enumerate() {
            let entry = format!("'{}' = {}", outcome.as_str(), idx + 1);
            assert!(ddl.contains(&entry), "DDL lacks {entry}");
            assert_eq!(outcome_code(*outcome), idx as i8 + 1);
        }
        for (trust, code) in [("verified", 1), ("trusted", 2), ("untrusted", 3), ("anonymous", 4)] {
            assert!(ddl.contains(&format!("'{trust}' = {code}")));
        }
        let added = include_str!("../../../schema/portable/0004_observation_cert.sql");
        for column in COLUMNS {
            let declared = ddl.contains(&format!("    {column} ")) || added.contains(&format!("ADD COLUMN {column} "));
            assert!(declared, "DDL lacks column {column}");
        }
    }

    #[test]
    fn mta_codes_match_the_ddl() {
        let ddl = include_str!("../../../schema/portable/0001_observations.sql");
        for mta in [Mta::Postfix, Mta::Exim, Mta::Sendmail] {
            let name = serde_json::to_value(mta).unwrap();
            let entry = format!("'{}' = {}", name.as_str().unwrap(), mta_code(mta));
            assert!(ddl.contains(&entry), "DDL lacks {entry}");
        }
    }
}
