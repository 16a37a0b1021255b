//! The SpamAssassin rule file (`tlsledger.cf`) for the header the tlsledger milter adds to inbound
//! mail, and the header itself (research/FEEDS.md §1.5).
//!
//! The header is the contract between the milter (a later stage) and spam filters:
//!
//! ```text
//! X-TLSLedger: class=historically-valid; flags=downgrade-suspect; severity=high; tls=none
//! X-TLSLedger: class=tls-unverified; flags=none; severity=none; tls=TLSv1.3; cipher=TLS_AES_256_GCM_SHA384
//! ```
//!
//! `class` is the sending endpoint's class, `flags` its flags (`downgrade-suspect`,
//! `broken-starttls`, comma-separated, or `none`), `severity` the downgrade severity (`none` without
//! that flag); `tls` and `cipher` describe the session when the milter knows it (`tls=none` is a
//! plaintext session, which has no `cipher`). The fields always come in this order. The milter must
//! delete inbound copies of the header before adding its own; otherwise the sender sets the signal.
//!
//! The rules only add scores (from `[scores]` of the thresholds file), never reject: the highest
//! default is 1.5 of SpamAssassin's default 5.0.

use super::Stamp;
use crate::reputation::classify::{Classification, Severity};
use crate::reputation::thresholds::Scores;

/// The header's name.
pub const HEADER: &str = "X-TLSLedger";

/// The TLS of the session that carried a message, as the milter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTls<'a> {
    /// The milter does not know (no `tls`/`cipher` fields are written).
    Unknown,
    /// A plaintext session.
    Plaintext,
    /// A TLS session with this protocol and cipher (milter macros `{tls_version}`, `{cipher}`).
    Tls {
        /// E.g. `TLSv1.3`.
        protocol: &'a str,
        /// E.g. `TLS_AES_256_GCM_SHA384`.
        cipher: &'a str,
    },
}

/// Keeps a macro value to the characters of protocol and cipher names, so a value can neither
/// end a field (`;`) nor the header line.
fn token(text: &str) -> String {
    let clean: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "._-+/".contains(c) { c } else { '_' }).collect();
    if clean.is_empty() {
        "unknown".to_owned()
    } else {
        clean
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

/// The header's value for a sending endpoint's classification and the session's TLS.
pub fn header_value(classification: &Classification, tls: SessionTls<'_>) -> String {
    let mut flags = Vec::new();
    if classification.downgrade.is_some() {
        flags.push("downgrade-suspect");
    }
    if classification.broken_starttls.is_some() {
        flags.push("broken-starttls");
    }
    let flags = if flags.is_empty() { "none".to_owned() } else { flags.join(",") };
    let severity = classification.downgrade.as_ref().map_or("none", |d| severity_name(d.severity));
    let mut value = format!("class={}; flags={flags}; severity={severity}", classification.class.as_str());
    match tls {
        SessionTls::Unknown => {}
        SessionTls::Plaintext => value.push_str("; tls=none"),
        SessionTls::Tls { protocol, cipher } => {
            value.push_str(&format!("; tls={}; cipher={}", token(protocol), token(cipher)));
        }
    }
    value
}

/// The header's flags field containing `flag`, after the class field (Perl regex text).
fn with_flag(flag: &str) -> String {
    format!(r"^\s*class=[a-z-]+\s*;\s*flags=(?:[a-z-]+,)*{flag}(?:,[a-z-]+)*\s*")
}

/// One rule: name, Perl regex on the header, description (at most 50 characters), score.
fn rules(scores: &Scores) -> [(&'static str, String, &'static str, f64); 5] {
    let downgrade = |severity: &str| format!(r"{};\s*severity={severity}\s*(?:;|$)", with_flag("downgrade-suspect"));
    [
        (
            "TLSLEDGER_DOWNGRADE_HIGH",
            downgrade("high"),
            "Sender had a TLS history; plaintext this time",
            scores.spamassassin_high,
        ),
        (
            "TLSLEDGER_DOWNGRADE_MEDIUM",
            downgrade("medium"),
            "Sender TLS failed where it had a TLS history",
            scores.spamassassin_medium,
        ),
        ("TLSLEDGER_DOWNGRADE_LOW", downgrade("low"), "Sender TLS weaker than its history", scores.spamassassin_low),
        (
            "TLSLEDGER_BROKEN_STARTTLS",
            format!("{}(?:;|$)", with_flag("broken-starttls")),
            "Sender's STARTTLS is known to be broken",
            scores.spamassassin_broken_starttls,
        ),
        (
            "TLSLEDGER_HISTORICALLY_VALID",
            r"^\s*class=historically-valid\s*;\s*flags=(?![^;]*\bdowngrade-suspect\b)".to_owned(),
            "Sender kept its history of valid TLS",
            scores.spamassassin_historically_valid,
        ),
    ]
}

/// The rule file.
pub fn rule_file(scores: &Scores, stamp: &Stamp) -> String {
    let mut text = format!("# tlsledger SpamAssassin rules -- for the {HEADER} header of the tlsledger milter\n");
    text.push_str(&stamp.comment());
    text.push_str(&format!(
        "# {HEADER}: class=<unknown|never-tls|tls-unverified|historically-valid>; flags=<flag,...|none>;\n\
         #   severity=<high|medium|low|none>[; tls=<protocol|none>; cipher=<cipher>]\n\
         # The milter deletes inbound copies of the header before adding its own.\n\
         # Scores come from [scores] of the thresholds file; none of them rejects a message on its own.\n"
    ));
    for (name, regex, description, score) in rules(scores) {
        text.push_str(&format!(
            "\nheader   {name} {HEADER} =~ /{regex}/\ndescribe {name} {description}\nscore    {name} {score}\n"
        ));
        if score < 0.0 {
            text.push_str(&format!("tflags   {name} nice\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing::{entry, stamp};
    use crate::observation::Direction;
    use crate::reputation::classify::{Class, Downgrade};

    #[test]
    fn header_values() {
        let mut c = entry(Direction::Inbound, "192.0.2.1", false).classification;
        assert_eq!(header_value(&c, SessionTls::Unknown), "class=unknown; flags=none; severity=none");
        c.class = Class::HistoricallyValid;
        c.downgrade = Some(Downgrade {
            severity: Severity::High,
            reason: String::new(),
            at: 0,
            since: 0,
            bad: 1,
            demoted: false,
        });
        assert_eq!(
            header_value(&c, SessionTls::Plaintext),
            "class=historically-valid; flags=downgrade-suspect; severity=high; tls=none"
        );
        let broken = entry(Direction::Inbound, "192.0.2.1", true).classification;
        assert_eq!(
            header_value(&broken, SessionTls::Tls { protocol: "TLSv1.2", cipher: "ECDHE-RSA-AES256-GCM-SHA384" }),
            "class=unknown; flags=broken-starttls; severity=none; tls=TLSv1.2; cipher=ECDHE-RSA-AES256-GCM-SHA384"
        );
        let hostile = header_value(&broken, SessionTls::Tls { protocol: "TLSv1.3; class=x\r\nX-Y: z", cipher: "" });
        assert_eq!(
            hostile,
            "class=unknown; flags=broken-starttls; severity=none; tls=TLSv1.3__class_x__X-Y__z; cipher=unknown"
        );
    }

    #[test]
    fn rule_file_takes_scores_and_stays_comments_then_rules() {
        let scores = Scores { spamassassin_high: 2.5, ..Scores::default() };
        let text = rule_file(&scores, &stamp());
        assert!(text.contains("score    TLSLEDGER_DOWNGRADE_HIGH 2.5\n"), "{text}");
        assert!(text.contains("score    TLSLEDGER_DOWNGRADE_MEDIUM 1\n"), "{text}");
        assert!(
            text.contains("score    TLSLEDGER_HISTORICALLY_VALID -0.001\ntflags   TLSLEDGER_HISTORICALLY_VALID nice\n")
        );
        assert!(text.lines().any(|l| l.starts_with("# generated 1970-01-01T00:00:00Z  expires")));
        for (_, _, description, _) in rules(&scores) {
            assert!(description.len() <= 50, "{description}");
        }
    }
}
