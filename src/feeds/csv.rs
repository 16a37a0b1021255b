//! The CSV feed (`tlsledger-feed.csv`): one row per endpoint for spreadsheets and scripts.
//!
//! Columns: `direction,ip,class,baseline,downgrade_severity,broken_starttls_level,dormant,
//! decisions,tls,plaintext,handshake_failed,first_seen,last_seen,names`. Fields are quoted when
//! they contain a comma, a quote or a line break (RFC 4180); names are joined with spaces.

use super::{Entry, Stamp};
use crate::observation::{Direction, Outcome};

fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .filter(|_| secs > 0)
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The CSV text (with a header row; the stamp is not part of RFC 4180, so it is not written).
pub fn feed(entries: &[Entry], _stamp: &Stamp) -> String {
    let mut text = String::from(
        "direction,ip,class,baseline,downgrade_severity,broken_starttls_level,dormant,decisions,tls,plaintext,handshake_failed,first_seen,last_seen,names\n",
    );
    for entry in entries {
        let c = &entry.classification;
        let total = &entry.summary.totals;
        let count =
            |outcome: Outcome| Outcome::ALL.iter().position(|o| *o == outcome).map_or(0, |idx| total.by_outcome[idx]);
        let severity = c.downgrade.as_ref().map_or(String::new(), |d| format!("{:?}", d.severity).to_lowercase());
        let level = c.broken_starttls.as_ref().map_or(String::new(), |b| b.level.to_string());
        let row = [
            match entry.key.direction {
                Direction::Outbound => "outbound".to_owned(),
                Direction::Inbound => "inbound".to_owned(),
            },
            field(&entry.key.ip),
            c.class.as_str().to_owned(),
            c.baseline.as_str().to_owned(),
            severity,
            level,
            c.dormant.to_string(),
            total.decisions().to_string(),
            count(Outcome::Tls).to_string(),
            (count(Outcome::Plaintext) + count(Outcome::StarttlsNotOffered)).to_string(),
            count(Outcome::HandshakeFailed).to_string(),
            rfc3339(entry.summary.first_seen),
            rfc3339(entry.summary.last_seen),
            field(&entry.summary.hostnames.join(" ")),
        ];
        text.push_str(&row.join(","));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(field("mx.example.net"), "mx.example.net");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn empty_feed_has_a_header() {
        let stamp = Stamp { generated: chrono::DateTime::UNIX_EPOCH, expires: chrono::DateTime::UNIX_EPOCH };
        let text = feed(&[], &stamp);
        assert_eq!(text.lines().count(), 1);
        assert_eq!(text.lines().next().unwrap().split(',').count(), 14);
    }
}
