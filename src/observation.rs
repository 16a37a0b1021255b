//! The Observation: what one SMTP connection (or delivery attempt) told us about TLS.
//!
//! This is the owned value that leaves `correlate` and feeds every sink. Its JSON form is a
//! documented, stable interface (README "Observation JSON"): other tools and our own checks read
//! it, so fields may be added but never renamed or removed. That is why, unlike the borrowed
//! parser records, this type derives `Serialize`.
//!
//! Vocabulary: the outcome names follow research/FORMATS.md §0, failure kinds use the RFC 8460
//! result types (`starttls-not-supported`, `certificate-host-mismatch`, `certificate-expired`,
//! `certificate-not-trusted`, `validation-failure`) where one fits.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One SMTP connection or delivery attempt and its TLS outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// When the first line of the connection was logged (RFC 3339, UTC).
    pub ts: DateTime<Utc>,
    /// When its last line was logged.
    pub end_ts: DateTime<Utc>,
    /// Which MTA wrote the log.
    pub mta: Mta,
    /// The host that wrote the log (syslog HOSTNAME).
    pub reporter: Arc<str>,
    /// The program tag without the daemon (`postfix`, `postfix-out`, `postfix/submission`).
    pub instance: Arc<str>,
    /// Outbound: we were the SMTP client. Inbound: we were the server.
    pub direction: Direction,
    /// The remote endpoint.
    pub peer: PeerInfo,
    /// Recipient domains of the deliveries over this connection (outbound), de-duplicated.
    pub domains: Vec<String>,
    /// Queue ids seen on this connection.
    pub queue_ids: Vec<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The negotiated TLS parameters when TLS was used.
    pub tls: Option<TlsInfo>,
    /// Why TLS failed or was missing, when it did.
    pub failure: Option<Failure>,
    /// Outbound: true if any message was accepted by the peer, false if every delivery failed,
    /// null when no delivery was logged. Inbound: true if DATA succeeded, false if it was tried
    /// and failed, null otherwise.
    pub delivered: Option<bool>,
    /// Postfix ≥ 3.11 `tls=` feature status of the delivery (`may`, `may:none`, `dane:halfdane`).
    pub tls_feature: Option<String>,
    /// Highest `conn_use=` of the deliveries: ≥ 2 means a cached connection was reused.
    pub conn_use: Option<u32>,
    /// A local policy, not the peer, decided about TLS: `starttls-discarded` (our
    /// `smtp_discard_ehlo_keyword_address_maps`), `tls-level-none` (`Host offered STARTTLS`).
    pub local_policy: Option<String>,
    /// True for the plaintext delivery that followed a failed handshake on the same attempt
    /// (Postfix level `may` retries in clear).
    pub after_tls_failure: bool,
    /// True when no connection was made and the MTA repeated an earlier verdict
    /// (`postfix/error` `delivery temporarily suspended: …`).
    pub replayed: bool,
    /// Where the lines came from.
    pub source: Arc<Source>,
    /// Number of log lines joined into this observation.
    pub lines: u32,
    /// Stable id: a hash of the source name and the byte offset of the first line.
    pub event_id: String,
}

/// The MTA that wrote the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mta {
    /// Postfix.
    Postfix,
    /// Exim.
    Exim,
    /// Sendmail (seen by the milter only, so far).
    Sendmail,
    /// OpenSMTPD.
    Opensmtpd,
}

/// Which side of the SMTP connection we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We were the client (delivering mail).
    Outbound,
    /// We were the server (receiving mail).
    Inbound,
}

/// The remote endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The name as logged; null for `unknown` or an empty name.
    pub hostname: Option<String>,
    /// The address in canonical form; null when the log did not give an IP (redacted values).
    pub ip: Option<String>,
    /// The port, when logged.
    pub port: Option<u16>,
}

/// The TLS outcome of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// TLS was negotiated.
    Tls,
    /// The peer did not offer STARTTLS; the session went on in plaintext.
    StarttlsNotOffered,
    /// Plaintext for another or unknown reason (client did not use STARTTLS, local policy).
    Plaintext,
    /// STARTTLS was accepted but the handshake failed.
    HandshakeFailed,
    /// The handshake completed, but the certificate did not meet the policy.
    CertVerifyFailed,
    /// Our policy required TLS and the peer could not give it.
    TlsRequiredMissing,
    /// The log cannot tell (TLS logging off, or the session ended before STARTTLS).
    Unknown,
}

impl Outcome {
    /// Every outcome, in a fixed order (for counters and reports).
    pub const ALL: [Outcome; 7] = [
        Outcome::Tls,
        Outcome::StarttlsNotOffered,
        Outcome::Plaintext,
        Outcome::HandshakeFailed,
        Outcome::CertVerifyFailed,
        Outcome::TlsRequiredMissing,
        Outcome::Unknown,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Tls => "tls",
            Outcome::StarttlsNotOffered => "starttls-not-offered",
            Outcome::Plaintext => "plaintext",
            Outcome::HandshakeFailed => "handshake-failed",
            Outcome::CertVerifyFailed => "cert-verify-failed",
            Outcome::TlsRequiredMissing => "tls-required-missing",
            Outcome::Unknown => "unknown",
        }
    }
}

/// How far the peer's credential was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Chain trusted and the name or DANE/fingerprint matched under a must-match policy.
    Verified,
    /// Chain trusted, no match required.
    Trusted,
    /// A credential that did not validate, or was not checked.
    Untrusted,
    /// No credential (inbound: the client sent no certificate, the normal case).
    Anonymous,
}

/// Negotiated TLS parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Null when the log shows TLS was used but not with which credential (no summary line).
    pub trust: Option<Trust>,
    /// `TLSv1.3`, `TLSv1.2`, …
    pub protocol: Option<String>,
    /// OpenSSL cipher name.
    pub cipher: Option<String>,
    /// Bits in use.
    pub bits: Option<u32>,
    /// Bits of the algorithm.
    pub alg_bits: Option<u32>,
    /// True when an existing TLS connection was reused (`TLS connection reused`).
    pub reused: bool,
    /// The SNI name the client asked for (inbound), when logged.
    pub sni: Option<String>,
    /// Key-exchange group (`X25519`), when logged.
    pub key_exchange: Option<String>,
    /// Certificate verification errors logged for this connection that did not stop it.
    pub verify_errors: Vec<String>,
    /// The peer certificate, where the MTA logged it (Postfix at TLS log level 2, Exim `DN=`,
    /// milter macros). Absent from the JSON when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Cert>,
}

/// What the log tells of a peer certificate. Each part is `None` when not logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Cert {
    /// The subject (Postfix: the CN; Exim, Sendmail: the whole DN).
    pub subject: Option<String>,
    /// The issuer (Postfix: the CN; Sendmail: the whole DN).
    pub issuer: Option<String>,
    /// The certificate fingerprint as logged (hex pairs, `SHA256:` prefixed for OpenSMTPD).
    pub fingerprint: Option<String>,
    /// The public-key (SPKI) fingerprint as logged.
    pub pkey_fingerprint: Option<String>,
}

impl Cert {
    /// The identity a history compares: the fingerprint when logged, else subject and issuer.
    pub fn identity(&self) -> Option<String> {
        match (&self.fingerprint, &self.subject, &self.issuer) {
            (Some(fingerprint), _, _) => Some(fingerprint.to_ascii_uppercase()),
            (None, None, None) => None,
            (None, subject, issuer) => {
                Some(format!("{} / {}", subject.as_deref().unwrap_or(""), issuer.as_deref().unwrap_or("")))
            }
        }
    }
}

/// Why TLS failed or was missing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Failure {
    /// An RFC 8460 result type where one fits (`starttls-not-supported`, `certificate-expired`,
    /// `certificate-host-mismatch`, `certificate-not-trusted`, `validation-failure`), otherwise
    /// ours: `local-policy`, `local-tls-unavailable`.
    pub kind: String,
    /// The logged reason text.
    pub reason: String,
}

/// Where the lines of an observation came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// `file`, `stdin`, `syslog`, `milter` (later also `journald`).
    pub kind: String,
    /// The file path, `-` for stdin.
    pub name: String,
    /// How far the source can be trusted: `local` for files and stdin read by the operator.
    pub trust: String,
}

/// A stable 64-bit FNV-1a hash of `name` and `offset`, as 16 hex digits.
///
/// FNV-1a is written out here (rather than `std`'s `DefaultHasher`) because the value is stored
/// and must not change between Rust releases.
pub fn event_id(name: &str, offset: u64) -> String {
    event_id_at(event_id_prefix(name), offset)
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash state of [`event_id`] after the source name: computed once per source.
pub fn event_id_prefix(name: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hash = FNV_OFFSET;
    for byte in name.bytes().chain([0xff]) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// [`event_id`] from the source's [`event_id_prefix`].
pub fn event_id_at(prefix: u64, offset: u64) -> String {
    let mut hash = prefix;
    for byte in offset.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Digits written into an array, two per byte, and taken as one string: pushing sixteen
    // `char`s (each UTF-8-encoded and capacity-checked) cost four times as much, and a shift
    // per digit twice as much (callgrind).
    let mut digits = [0u8; 16];
    for (pair, byte) in digits.chunks_exact_mut(2).zip(hash.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // ASCII by construction: the check cannot fail.
    String::from_utf8(digits.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_stable_and_distinct() {
        assert_eq!(event_id("/var/log/mail.log", 0), event_id("/var/log/mail.log", 0));
        assert_ne!(event_id("/var/log/mail.log", 0), event_id("/var/log/mail.log", 1));
        assert_ne!(event_id("a", 0), event_id("b", 0));
        // The value is stored in ClickHouse: it must never change.
        assert_eq!(event_id("", 0), "2032dd643620252e");
    }

    #[test]
    fn event_id_is_the_hash_in_sixteen_hex_digits() {
        for (name, offset) in [("", 0), ("/var/log/mail.log", 1), ("journal", u64::MAX), ("a", 1 << 40)] {
            let mut hash = event_id_prefix(name);
            for byte in offset.to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
            assert_eq!(event_id(name, offset), format!("{hash:016x}"), "{name} {offset}");
        }
    }

    #[test]
    fn outcome_names_match_serde() {
        for outcome in Outcome::ALL {
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
    }
}
