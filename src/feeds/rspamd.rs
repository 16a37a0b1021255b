//! rspamd multimap maps for inbound senders (research/FEEDS.md §1.4, feed-examples/rspamd).
//!
//! - `tlsledger_downgrade.map`: `IP weight` for inbound endpoints flagged downgrade-suspect;
//!   weights by severity: high 1.0, medium 0.6, low 0.3 (the symbol's score multiplies them).
//! - `tlsledger_hist_tls.map`: inbound sender IPs with a TLS history (class tls-unverified or
//!   historically-valid), for a composite with `RCVD_NO_TLS_LAST`.
//!
//! Spam-filter signals only: never a reject, never an rspamd action.

use super::{Entry, Stamp};
use crate::observation::Direction;
use crate::reputation::classify::{Class, Severity};

/// Weight of a downgrade severity.
pub fn weight(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "1.0",
        Severity::Medium => "0.6",
        Severity::Low => "0.3",
    }
}

/// The downgrade-suspect map.
pub fn downgrade_map(entries: &[Entry], stamp: &Stamp) -> String {
    let mut text = String::from("# tlsledger downgrade-suspect (inbound) -- IP weight (symbol score x weight)\n");
    text.push_str(&stamp.comment());
    for entry in entries.iter().filter(|e| e.key.direction == Direction::Inbound && !e.classification.allowed) {
        if let Some(downgrade) = &entry.classification.downgrade {
            if entry.key.ip.parse::<std::net::IpAddr>().is_ok() {
                text.push_str(&format!("{} {}\n", entry.key.ip, weight(downgrade.severity)));
            }
        }
    }
    text
}

/// The historically-TLS senders map.
pub fn hist_tls_map(entries: &[Entry], stamp: &Stamp) -> String {
    let mut text = String::from("# tlsledger historically-TLS inbound sender IPs\n");
    text.push_str(&stamp.comment());
    for entry in entries.iter().filter(|e| e.key.direction == Direction::Inbound) {
        if matches!(entry.classification.class, Class::TlsUnverified | Class::HistoricallyValid)
            && entry.key.ip.parse::<std::net::IpAddr>().is_ok()
        {
            text.push_str(&format!("{}\n", entry.key.ip));
        }
    }
    text
}
