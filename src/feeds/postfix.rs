//! Postfix feeds (research/FEEDS.md §1.1).
//!
//! - `smtp_discard_ehlo.cidr` for `smtp_discard_ehlo_keyword_address_maps = cidr:…`: `IP/len
//!   starttls` for outbound endpoints flagged broken-STARTTLS. The table is looked up by server
//!   IP only. Never `silent-discard`: the `discarding EHLO keywords: STARTTLS` log line is how the
//!   next attempt is noticed. Endpoints with a TLS baseline are never listed (their failures are
//!   downgrades, and a TLS-required policy would then defer mail).
//! - `smtpd_discard_ehlo.cidr`, the inbound twin, for clients whose STARTTLS is broken.
//! - `tls_policy` is written by `postfix_policy.rs`: empty unless the operator opts in.
//!
//! Comments are on lines of their own: a `# …` after a cidr value becomes part of the value.

use super::{cidr, Entry, Stamp};
use crate::observation::Direction;

/// The broken-STARTTLS discard map for one direction.
pub fn discard_map(entries: &[Entry], direction: Direction, stamp: &Stamp) -> String {
    let (title, parameter) = match direction {
        Direction::Outbound => ("outbound", "smtp_discard_ehlo_keyword_address_maps"),
        Direction::Inbound => ("inbound", "smtpd_discard_ehlo_keyword_address_maps"),
    };
    let mut text = format!("# tlsledger broken-STARTTLS ({title}) -- {parameter}\n");
    text.push_str(&stamp.comment());
    text.push_str("# Keys: IP/len. Value: the EHLO keyword to ignore. Comments stay on their own lines.\n");
    for entry in entries.iter().filter(|e| e.key.direction == direction) {
        let Some(flag) = &entry.classification.broken_starttls else { continue };
        if entry.classification.allowed {
            continue;
        }
        let Some(key) = cidr(&entry.key.ip) else { continue };
        let retry = chrono::DateTime::from_timestamp(flag.retry_after, 0)
            .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        text.push_str(&format!("# n={} failures={} retry_after {retry}\n", flag.level, flag.failures));
        text.push_str(&format!("{key}\tstarttls\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing::{entry, stamp};

    #[test]
    fn feeds_larger_than_100k_entries() {
        let stamp = stamp();
        let entries: Vec<Entry> = (0..120_000u32)
            .map(|n| {
                let ip = if n % 2 == 0 {
                    std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string()
                } else {
                    std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(n)).to_string()
                };
                entry(Direction::Outbound, &ip, true)
            })
            .collect();
        let map = discard_map(&entries, Direction::Outbound, &stamp);
        let keys: Vec<&str> = map.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(keys.len(), 120_000);
        assert!(keys.iter().all(|k| k.ends_with("\tstarttls") && (k.contains("/32\t") || k.contains("/128\t"))));
    }

    #[test]
    fn discard_maps_list_flagged_ips_of_their_direction() {
        let stamp = stamp();
        let entries = [
            entry(Direction::Outbound, "192.0.2.1", true),
            entry(Direction::Outbound, "2001:db8::1", true),
            entry(Direction::Outbound, "192.0.2.2", false),
            entry(Direction::Inbound, "198.51.100.1", true),
            entry(Direction::Outbound, "not-an-ip", true),
        ];
        let outbound = discard_map(&entries, Direction::Outbound, &stamp);
        let keys: Vec<&str> = outbound.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(keys, ["192.0.2.1/32\tstarttls", "2001:db8::1/128\tstarttls"]);
        let inbound = discard_map(&entries, Direction::Inbound, &stamp);
        assert!(inbound.contains("198.51.100.1/32\tstarttls") && inbound.contains("smtpd_discard_ehlo"));
        let empty = discard_map(&[], Direction::Outbound, &stamp);
        assert!(empty.lines().all(|l| l.starts_with('#')), "an empty feed is comments only");
    }
}
