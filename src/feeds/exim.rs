//! Exim host lists (research/FEEDS.md §1.2, feed-examples/exim).
//!
//! - `avoid_tls.list` for the smtp transport's `hosts_avoid_tls = /path/avoid_tls.list`:
//!   outbound broken-STARTTLS server IPs, one host-list item per line.
//! - `no_starttls_clients.list` for `tls_advertise_hosts = ! /path/no_starttls_clients.list : *`:
//!   inbound clients whose STARTTLS is broken.
//!
//! Exim reads a file list item line by line each time the list is used, so an atomic replace
//! is picked up without a reload. In a file list each line is one item, so IPv6 addresses need
//! no quoting or list-separator change (that is only needed inline in the configuration).

use super::{Entry, Stamp};
use crate::observation::Direction;

/// The broken-STARTTLS host list for one direction.
pub fn broken_starttls_list(entries: &[Entry], direction: Direction, stamp: &Stamp) -> String {
    let option = match direction {
        Direction::Outbound => "hosts_avoid_tls (outbound)",
        Direction::Inbound => "tls_advertise_hosts exclusion (inbound)",
    };
    let mut text = format!("# tlsledger broken-STARTTLS -- Exim {option}\n");
    text.push_str(&stamp.comment());
    text.push_str("# One host-list item per line.\n");
    for entry in entries.iter().filter(|e| e.key.direction == direction && !e.classification.allowed) {
        if let Some(flag) = &entry.classification.broken_starttls {
            if let Ok(ip) = entry.key.ip.parse::<std::net::IpAddr>() {
                text.push_str(&format!("# n={} failures={}\n{ip}\n", flag.level, flag.failures));
            }
        }
    }
    text
}
