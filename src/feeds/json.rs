//! The canonical JSON feed (`tlsledger-feed.json`, after research/feed-examples/canonical):
//! every endpoint with its class, baseline, flags, names, domains and an evidence summary, plus
//! the guard state and the generated/expires stamps.

use serde::Serialize;

use super::{Entry, Stamp};
use crate::observation::Outcome;
use crate::reputation::classify::{BrokenStarttls, Downgrade, GuardTrip};
use crate::reputation::history::protocol_name;

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Feed<'a> {
    /// Format name and version.
    pub version: &'static str,
    /// RFC 3339.
    pub generated: String,
    /// RFC 3339; after it consumers fall back to opportunistic TLS.
    pub expires: String,
    /// The global guard, when tripped: flags are suppressed and classes frozen.
    pub guard: Option<&'a GuardTrip>,
    /// Every endpoint.
    pub endpoints: Vec<EndpointDoc<'a>>,
}

/// One endpoint.
#[derive(Debug, Serialize)]
pub struct EndpointDoc<'a> {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The IP.
    pub ip: &'a str,
    /// Host names seen.
    pub names: &'a [String],
    /// Recipient domains (outbound).
    pub domains: &'a [String],
    /// The class.
    pub class: &'static str,
    /// The baseline class.
    pub baseline: &'static str,
    /// The downgrade-suspect flag.
    pub downgrade_suspect: Option<&'a Downgrade>,
    /// The broken-STARTTLS flag.
    pub broken_starttls: Option<&'a BrokenStarttls>,
    /// No observation for a while: emits nothing.
    pub dormant: bool,
    /// Counts behind the class.
    pub evidence: Evidence,
}

/// The evidence summary.
#[derive(Debug, Serialize)]
pub struct Evidence {
    /// Decisions by outcome over the kept days.
    pub decisions: std::collections::BTreeMap<&'static str, u32>,
    /// Active days kept.
    pub distinct_days: usize,
    /// Lowest and highest protocol seen.
    pub min_protocol: &'static str,
    /// See `min_protocol`.
    pub max_protocol: &'static str,
    /// First and last observation (Unix seconds).
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
}

/// The JSON text of the feed.
pub fn feed(entries: &[Entry], guard: Option<&GuardTrip>, stamp: &Stamp) -> serde_json::Result<String> {
    let endpoints = entries
        .iter()
        .map(|entry| {
            let total = &entry.summary.totals;
            let decisions = Outcome::ALL
                .iter()
                .zip(total.by_outcome)
                .filter(|(_, n)| *n > 0)
                .map(|(outcome, n)| (outcome.as_str(), n))
                .collect();
            let c = &entry.classification;
            EndpointDoc {
                direction: match entry.key.direction {
                    crate::observation::Direction::Outbound => "outbound",
                    crate::observation::Direction::Inbound => "inbound",
                },
                ip: &entry.key.ip,
                names: &entry.summary.hostnames,
                domains: &entry.summary.domains,
                class: c.class.as_str(),
                baseline: c.baseline.as_str(),
                downgrade_suspect: c.downgrade.as_ref(),
                broken_starttls: c.broken_starttls.as_ref(),
                dormant: c.dormant,
                evidence: Evidence {
                    decisions,
                    distinct_days: entry.summary.distinct_days,
                    min_protocol: protocol_name(total.min_protocol),
                    max_protocol: protocol_name(entry.summary.max_protocol),
                    first_seen: entry.summary.first_seen,
                    last_seen: entry.summary.last_seen,
                },
            }
        })
        .collect();
    let document = Feed {
        version: "tlsledger-feed/1",
        generated: stamp.generated.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        expires: stamp.expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        guard,
        endpoints,
    };
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    Ok(text)
}
