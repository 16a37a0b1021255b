//! Sendmail access-map entries (research/FEEDS.md §1.3, feed-examples/sendmail), to merge into
//! the `access` file of `FEATURE(\`access_db')` and rebuild with `makemap hash`.
//!
//! - `Try_TLS:IP NO`: do not try STARTTLS to an outbound broken-STARTTLS server;
//! - `Srv_Features:IP S`: do not offer STARTTLS to an inbound client whose STARTTLS is broken.
//!
//! IPv6 keys carry the `IPv6:` prefix (cf/README). No enforcement (`TLS_Srv`, `TLS_Rcpt`) is
//! written without opt-in, and never a permanent error.

use super::{Entry, Stamp};
use crate::observation::Direction;

/// The access entries.
pub fn access(entries: &[Entry], stamp: &Stamp) -> String {
    let mut text = String::from("# tlsledger entries for the sendmail access map (FEATURE(`access_db'))\n");
    text.push_str(&stamp.comment());
    text.push_str("# Merge into /etc/mail/access and run: makemap hash /etc/mail/access < /etc/mail/access\n");
    for entry in entries.iter().filter(|e| !e.classification.allowed && e.classification.broken_starttls.is_some()) {
        let key = match entry.key.ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
            Ok(std::net::IpAddr::V6(v6)) => format!("IPv6:{v6}"),
            Err(_) => continue,
        };
        let line = match entry.key.direction {
            Direction::Outbound => format!("Try_TLS:{key}\tNO\n"),
            Direction::Inbound => format!("Srv_Features:{key}\tS\n"),
        };
        text.push_str(&line);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing::{entry, stamp};

    fn broken(direction: Direction, ip: &str) -> Entry {
        entry(direction, ip, true)
    }

    #[test]
    fn access_and_exim_lists() {
        let stamp = stamp();
        let entries = [
            broken(Direction::Outbound, "192.0.2.1"),
            broken(Direction::Outbound, "2001:db8::1"),
            broken(Direction::Inbound, "198.51.100.9"),
        ];
        let access = access(&entries, &stamp);
        let lines: Vec<&str> = access.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["Try_TLS:192.0.2.1\tNO", "Try_TLS:IPv6:2001:db8::1\tNO", "Srv_Features:198.51.100.9\tS"]);
        let exim = crate::feeds::exim::broken_starttls_list(&entries, Direction::Outbound, &stamp);
        let items: Vec<&str> = exim.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(items, ["192.0.2.1", "2001:db8::1"]);
    }
}
