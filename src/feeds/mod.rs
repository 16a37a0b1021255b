//! Feeds: the files MTAs and spam filters read, written from the classified reputation.
//!
//! "Don't break SMTP": every feed is a local file replaced atomically ([`write_atomically`]:
//! temporary file in the same folder, fsync, rename, fsync of the folder), always valid (an empty
//! feed is a file with only comments), with `generated` and `expires` stamps in comment lines of
//! their own (Postfix keeps a trailing `# …` as part of a cidr value). Nothing that can hold mail
//! is written by default: the enforcement files (`tls_policy`, `require_tls.list`,
//! `verify_tls.list`, `TLS_Srv:` entries) stay empty until the operator opts in to a tier.
//!
//! - `postfix.rs`: `smtp_discard_ehlo.cidr` (outbound broken-STARTTLS), `smtpd_discard_ehlo.cidr`
//!   (inbound); `postfix_policy.rs`: `tls_policy` (opt-in tiers).
//! - `enforcement.rs`: which endpoints may be enforced, the promotion limit and its ledger, and
//!   the opt-in Exim lists and Sendmail `TLS_Srv:` entries.
//! - `rspamd.rs`: `tlsledger_downgrade.map` (inbound downgrade suspects with weights by severity)
//!   and `tlsledger_hist_tls.map` (inbound senders with a TLS history).
//! - `exim.rs`: `avoid_tls.list` (`hosts_avoid_tls`) and `no_starttls_clients.list`.
//! - `sendmail.rs`: `access.tlsledger` (`Try_TLS:IP NO`, `Srv_Features:IP S`, opt-in `TLS_Srv:`, `IPv6:` keys).
//! - `spamassassin.rs`: `tlsledger.cf`, rules on the `X-TLSLedger` header the milter adds
//!   (the header is defined there), scored from the thresholds file.
//! - `index.rs`: after the rename, `postmap` / `makemap` build indexed databases of `tls_policy`
//!   and `access.tlsledger` when asked (temporary database, then rename).
//! - `csv.rs`: `tlsledger-feed.csv`, one row per endpoint.
//! - `json.rs`: the canonical `tlsledger-feed.json` with every endpoint, its class, flags and
//!   evidence summary.

pub mod csv;
pub mod enforcement;
pub mod exim;
pub mod index;
pub mod json;
pub mod postfix;
pub mod postfix_policy;
pub mod rspamd;
pub mod sendmail;
pub mod spamassassin;

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::reputation::classify::Classification;
use crate::reputation::history::{DayStats, HostHistory};
use crate::reputation::store::EndpointKey;

/// One classified endpoint, the input of every feed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Direction and IP.
    pub key: EndpointKey,
    /// What the feeds show of its history.
    pub summary: Summary,
    /// Its verdict.
    pub classification: Classification,
}

/// The part of a [`HostHistory`] the feeds show, so a feed of every endpoint holds a few
/// hundred bytes per endpoint instead of whole histories (days and the ring of observations).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The sum of all days ([`HostHistory::totals_since`] day 0).
    pub totals: DayStats,
    /// Days with at least one decision.
    pub distinct_days: usize,
    /// The highest protocol of any day (as in [`DayStats::max_protocol`]).
    pub max_protocol: u8,
    /// First and last observation (Unix seconds).
    pub first_seen: i64,
    /// See `first_seen`.
    pub last_seen: i64,
    /// Host names of the endpoint.
    pub hostnames: Vec<String>,
    /// Recipient domains delivered via it.
    pub domains: Vec<String>,
    /// Server ports it was reached on (next-hop keys of the TLS policy map).
    pub ports: Vec<u16>,
}

impl Summary {
    /// The summary of `history`.
    pub fn of(history: &HostHistory) -> Self {
        Summary {
            totals: history.totals_since(0),
            distinct_days: history.days.len(),
            max_protocol: history.days.iter().map(|d| d.max_protocol).max().unwrap_or(0),
            first_seen: history.first_seen,
            last_seen: history.last_seen,
            hostnames: history.hostnames.clone(),
            domains: history.domains.clone(),
            ports: history.ports.clone(),
        }
    }
}

/// When a feed was made and until when it may be used.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Generation time.
    pub generated: DateTime<Utc>,
    /// After this a consumer should drop the feed and fall back to opportunistic TLS.
    pub expires: DateTime<Utc>,
}

impl Stamp {
    /// `# generated 2026-11-30T12:00:00Z  expires 2026-12-02T12:00:00Z`
    pub fn comment(&self) -> String {
        format!(
            "# generated {}  expires {}\n",
            self.generated.format("%Y-%m-%dT%H:%M:%SZ"),
            self.expires.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// An IP as a CIDR key: `/32` for IPv4, `/128` for IPv6; `None` when it is not an IP.
pub fn cidr(ip: &str) -> Option<String> {
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => Some(format!("{v4}/32")),
        std::net::IpAddr::V6(v6) => Some(format!("{v6}/128")),
    }
}

/// Replaces `dir/name` with `contents` atomically and durably.
pub fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(contents).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("cannot sync {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(handle) = File::open(dir) {
        // Makes the rename durable; failing here only weakens crash safety.
        let _ = handle.sync_all();
    }
    Ok(())
}

/// Test helpers shared by the feed formats' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::observation::Direction;
    use crate::reputation::classify::{BrokenStarttls, Class, Classification};

    /// An unknown-class endpoint, flagged broken-STARTTLS when `broken`.
    pub fn entry(direction: Direction, ip: &str, broken: bool) -> Entry {
        Entry {
            key: EndpointKey { direction, ip: ip.to_owned() },
            summary: Summary::default(),
            classification: Classification {
                class: Class::Unknown,
                baseline: Class::Unknown,
                broken_starttls: broken.then_some(BrokenStarttls {
                    last_failure: 0,
                    failures: 2,
                    level: 1,
                    retry_after: 3600,
                }),
                downgrade: None,
                dormant: false,
                expired: false,
                allowed: false,
                never_enforce: false,
                evidence: Vec::new(),
            },
        }
    }

    /// A stamp at the epoch.
    pub fn stamp() -> Stamp {
        Stamp { generated: DateTime::UNIX_EPOCH, expires: DateTime::UNIX_EPOCH }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_keys() {
        assert_eq!(cidr("192.0.2.1").as_deref(), Some("192.0.2.1/32"));
        assert_eq!(cidr("2001:db8::1").as_deref(), Some("2001:db8::1/128"));
        assert_eq!(cidr("x.x.x.x"), None);
    }

    #[test]
    fn atomic_replace_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("tlsledger-feed-{}", std::process::id()));
        write_atomically(&dir, "a.map", b"one\n").unwrap();
        write_atomically(&dir, "a.map", b"two\n").unwrap();
        assert_eq!(std::fs::read(dir.join("a.map")).unwrap(), b"two\n");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a.map"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
