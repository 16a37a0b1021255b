//! The logic of one milter session (one inbound SMTP connection), free of IO: what the MTA's
//! callbacks and macros told us, the header plan of each message, and the Observation at the end.
//!
//! The callbacks (`callbacks.rs`) only copy what indymilter hands them into a [`Session`]; every
//! decision is made here, so it is unit-tested without a socket.
//!
//! TLS is learned from the macros, never guessed. Postfix defines `{tls_version}`, `{cipher}`,
//! `{cipher_bits}`, `{cert_subject}` and `{cert_issuer}` (the last two only for a trusted client
//! certificate) once STARTTLS has completed, at HELO (the EHLO after STARTTLS) and, when asked, at
//! MAIL; Sendmail also defines `{verify}` and `{alg_bits}` (research/FORMATS.md §2.8, §4.4).
//! Sendmail's `{cert_subject}` and `{cert_issuer}` are whole DNs in xtext (`+20` for a space,
//! FORMATS.md §4.4); they are decoded, so the Observation holds the DN itself.
//! Once a stage showed TLS the session is TLS. Plaintext is claimed only when a MAIL command came
//! with no TLS macro at any stage so far: a session that ends before MAIL without TLS macros is
//! `unknown` (it may have done STARTTLS and quit before the next EHLO).
//!
//! **Invariant:** a session holds a bounded amount of memory whatever the MTA sends: every kept
//! string is cut to [`MAX_VALUE_BYTES`], at most [`MAX_QUEUE_IDS`] queue ids are kept, and counts
//! saturate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::feeds::spamassassin::{SessionTls, HEADER};
use crate::observation::{event_id, Cert, Direction, Mta, Observation, Outcome, PeerInfo, Source, TlsInfo, Trust};

/// The longest macro value or host name kept, in bytes.
pub const MAX_VALUE_BYTES: usize = 255;

/// The most queue ids kept per session.
pub const MAX_QUEUE_IDS: usize = 32;

/// The macros requested at connect (MTA host name, daemon name, MTA version).
pub const CONNECT_MACROS: &str = "j {daemon_name} v";
/// The macros requested at HELO: the TLS macros of Postfix and Sendmail.
pub const HELO_MACROS: &str =
    "{tls_version} {cipher} {cipher_bits} {alg_bits} {cert_subject} {cert_issuer} {verify} {tls_sni}";
/// The macros requested at MAIL: the queue id and the TLS macros again.
pub const MAIL_MACROS: &str =
    "i {tls_version} {cipher} {cipher_bits} {alg_bits} {cert_subject} {cert_issuer} {verify} {tls_sni}";
/// The macros requested at end of message: the queue id.
pub const EOM_MACROS: &str = "i";

/// Cuts `text` to at most [`MAX_VALUE_BYTES`] on a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_VALUE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A macro's value, `None` when undefined or empty (MTAs send empty values for unset macros).
fn value(macros: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    macros(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).map(|v| bounded(&v))
}

/// What the TLS macros said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TlsMacros {
    protocol: String,
    cipher: Option<String>,
    bits: Option<u32>,
    alg_bits: Option<u32>,
    cert_subject: Option<String>,
    cert_issuer: Option<String>,
    verify: Option<String>,
    sni: Option<String>,
}

impl TlsMacros {
    /// `None` unless `{tls_version}` is defined: the one macro both MTAs set exactly when TLS is
    /// active.
    fn read(macros: &dyn Fn(&str) -> Option<String>) -> Option<TlsMacros> {
        let protocol = value(macros, "{tls_version}")?;
        let number = |name: &str| value(macros, name).and_then(|v| v.split('/').next()?.parse().ok());
        Some(TlsMacros {
            protocol,
            cipher: value(macros, "{cipher}"),
            bits: number("{cipher_bits}"),
            alg_bits: number("{alg_bits}"),
            cert_subject: value(macros, "{cert_subject}"),
            cert_issuer: value(macros, "{cert_issuer}"),
            verify: value(macros, "{verify}"),
            sni: value(macros, "{tls_sni}"),
        })
    }

    /// The client credential's trust. Sendmail's `{verify}`: `OK` trusted, `FAIL` untrusted,
    /// `NO`/`NOT` no certificate. Without it (Postfix), `{cert_subject}` is set only for a trusted
    /// certificate; its absence does not tell "none" from "untrusted", so the trust is unknown.
    fn trust(&self) -> Option<Trust> {
        match self.verify.as_deref() {
            Some("OK" | "TRUSTED") => Some(Trust::Trusted),
            Some("FAIL" | "DANE_FAIL") => Some(Trust::Untrusted),
            Some("NO" | "NOT") => Some(Trust::Anonymous),
            Some(_) => None,
            None if self.cert_subject.is_some() => Some(Trust::Trusted),
            None => None,
        }
    }
}

/// What to do to the message at end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EomPlan {
    /// Copies of [`HEADER`] the client sent: delete occurrences `count..=1`, highest first, so
    /// the indices stay valid whether the MTA renumbers after a delete or not.
    pub forged_copies: u32,
}

/// One inbound SMTP session as the milter saw it.
#[derive(Debug, Clone)]
pub struct Session {
    connected_at: DateTime<Utc>,
    peer: PeerInfo,
    reporter: String,
    instance: String,
    mta: Mta,
    tls: Option<TlsMacros>,
    mail_seen: bool,
    messages: u32,
    completed_messages: u32,
    /// A message is between MAIL and end of message or abort.
    in_message: bool,
    queue_ids: Vec<String>,
    forged_copies: u32,
}

impl Session {
    /// A session from the connect callback: the MTA's name for the client (`unknown` or
    /// `[192.0.2.1]` when it has none), the client's socket address when it is an inet one, and
    /// the connect-stage macros.
    pub fn connect(
        now: DateTime<Utc>,
        hostname: &str,
        address: Option<SocketAddr>,
        macros: &dyn Fn(&str) -> Option<String>,
    ) -> Session {
        let hostname = hostname.trim();
        let hostname = (!hostname.is_empty() && hostname != "unknown" && !hostname.starts_with('['))
            .then(|| bounded(hostname.trim_end_matches('.')));
        let ip = address.map(|a| match a.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4).to_string(),
            ip => ip.to_string(),
        });
        // `v` is `Postfix 3.7.11` from Postfix and a bare version (`8.17.1`) from Sendmail.
        let mta = match value(macros, "v") {
            Some(v) if v.as_bytes().first().is_some_and(u8::is_ascii_digit) => Mta::Sendmail,
            _ => Mta::Postfix,
        };
        Session {
            connected_at: now,
            peer: PeerInfo { hostname, ip, port: address.map(|a| a.port()) },
            reporter: value(macros, "j").unwrap_or_else(|| "milter".to_owned()),
            instance: value(macros, "{daemon_name}").unwrap_or_else(|| "milter".to_owned()),
            mta,
            tls: None,
            mail_seen: false,
            messages: 0,
            completed_messages: 0,
            in_message: false,
            queue_ids: Vec::new(),
            forged_copies: 0,
        }
    }

    /// The macros of a stage that carries TLS macros (HELO, MAIL). The first EHLO comes before
    /// STARTTLS and has none; a later stage with them makes the session TLS.
    pub fn stage_macros(&mut self, macros: &dyn Fn(&str) -> Option<String>) {
        if let Some(mut tls) = TlsMacros::read(macros) {
            if self.mta == Mta::Sendmail {
                tls.cert_subject = tls.cert_subject.as_deref().map(parsers::sendmail::xtext_decode);
                tls.cert_issuer = tls.cert_issuer.as_deref().map(parsers::sendmail::xtext_decode);
            }
            self.tls = Some(tls);
        }
    }

    /// MAIL FROM: a new message begins.
    pub fn mail(&mut self, macros: &dyn Fn(&str) -> Option<String>) {
        self.stage_macros(macros);
        self.mail_seen = true;
        self.messages = self.messages.saturating_add(1);
        self.in_message = true;
        self.forged_copies = 0;
        self.queue_id(macros);
    }

    fn queue_id(&mut self, macros: &dyn Fn(&str) -> Option<String>) {
        if let Some(id) = value(macros, "i") {
            if !self.queue_ids.contains(&id) && self.queue_ids.len() < MAX_QUEUE_IDS {
                self.queue_ids.push(id);
            }
        }
    }

    /// One header of the message, as the client sent it.
    pub fn header(&mut self, name: &str) {
        if name.trim().eq_ignore_ascii_case(HEADER) {
            self.forged_copies = self.forged_copies.saturating_add(1);
        }
    }

    /// The message was aborted (RSET, a rejected DATA, a lost client): its header count goes.
    pub fn abort(&mut self) {
        self.in_message = false;
        self.forged_copies = 0;
    }

    /// End of message: what to do to this message.
    pub fn eom(&mut self, macros: &dyn Fn(&str) -> Option<String>) -> EomPlan {
        self.queue_id(macros);
        self.completed_messages = self.completed_messages.saturating_add(1);
        self.in_message = false;
        let plan = EomPlan { forged_copies: self.forged_copies };
        self.forged_copies = 0;
        plan
    }

    /// The session's TLS for the header.
    pub fn header_tls(&self) -> SessionTls<'_> {
        match &self.tls {
            Some(tls) => SessionTls::Tls { protocol: &tls.protocol, cipher: tls.cipher.as_deref().unwrap_or("") },
            None if self.mail_seen => SessionTls::Plaintext,
            None => SessionTls::Unknown,
        }
    }

    /// The queue ids seen so far.
    pub fn queue_ids(&self) -> &[String] {
        &self.queue_ids
    }

    /// The peer's IP in canonical form, when the MTA gave an inet address.
    pub fn peer_ip(&self) -> Option<&str> {
        self.peer.ip.as_deref()
    }

    /// The session's Observation as of `now` (at close; at end of message a provisional one for
    /// classifying the sender with this session included).
    pub fn observation(&self, source: &Arc<Source>, now: DateTime<Utc>) -> Observation {
        let (outcome, tls) = match &self.tls {
            Some(tls) => (
                Outcome::Tls,
                Some(TlsInfo {
                    trust: tls.trust(),
                    protocol: Some(tls.protocol.clone()),
                    cipher: tls.cipher.clone(),
                    bits: tls.bits,
                    alg_bits: tls.alg_bits,
                    sni: tls.sni.clone(),
                    cert: (tls.cert_subject.is_some() || tls.cert_issuer.is_some()).then(|| Cert {
                        subject: tls.cert_subject.clone(),
                        issuer: tls.cert_issuer.clone(),
                        ..Cert::default()
                    }),
                    ..TlsInfo::default()
                }),
            ),
            None if self.mail_seen => (Outcome::Plaintext, None),
            None => (Outcome::Unknown, None),
        };
        let delivered = if self.completed_messages > 0 {
            Some(true)
        } else if self.mail_seen {
            Some(false)
        } else {
            None
        };
        let id_name = format!(
            "milter\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.reporter,
            self.instance,
            self.peer.ip.as_deref().unwrap_or(""),
            self.peer.port.unwrap_or(0)
        );
        Observation {
            ts: self.connected_at,
            end_ts: now.max(self.connected_at),
            mta: self.mta,
            reporter: Arc::from(self.reporter.as_str()),
            instance: Arc::from(self.instance.as_str()),
            direction: Direction::Inbound,
            peer: self.peer.clone(),
            domains: Vec::new(),
            queue_ids: self.queue_ids.clone(),
            outcome,
            tls,
            failure: None,
            delivered,
            tls_feature: None,
            conn_use: None,
            local_policy: None,
            after_tls_failure: false,
            replayed: false,
            source: Arc::clone(source),
            lines: 0,
            event_id: event_id(&id_name, self.connected_at.timestamp_micros() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn macros(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    fn source() -> Arc<Source> {
        Arc::new(Source { kind: "milter".to_owned(), name: "inet:127.0.0.1:1".to_owned(), trust: "milter".to_owned() })
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn postfix_connect() -> Session {
        let connect = macros(&[("j", "mx.example.net"), ("{daemon_name}", "smtpd"), ("v", "Postfix 3.7.11")]);
        Session::connect(at(1_700_000_000), "client.example.org", Some("192.0.2.7:40001".parse().unwrap()), &connect)
    }

    const POSTFIX_TLS: &[(&str, &str)] =
        &[("{tls_version}", "TLSv1.3"), ("{cipher}", "TLS_AES_256_GCM_SHA384"), ("{cipher_bits}", "256")];

    #[test]
    fn starttls_after_a_first_ehlo_makes_the_session_tls() {
        let mut session = postfix_connect();
        session.stage_macros(&macros(&[]));
        assert_eq!(session.header_tls(), SessionTls::Unknown);
        session.stage_macros(&macros(POSTFIX_TLS));
        session.mail(&macros(&[]));
        session.header("Subject");
        let plan = session.eom(&macros(&[("i", "4XyZ1")]));
        assert_eq!(plan, EomPlan { forged_copies: 0 });
        assert_eq!(session.header_tls(), SessionTls::Tls { protocol: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" });
        let o = session.observation(&source(), at(1_700_000_005));
        assert_eq!(o.outcome, Outcome::Tls);
        let tls = o.tls.unwrap();
        assert_eq!((tls.trust, tls.protocol.as_deref(), tls.bits), (None, Some("TLSv1.3"), Some(256)));
        assert_eq!(o.direction, Direction::Inbound);
        assert_eq!(o.peer.ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(o.peer.hostname.as_deref(), Some("client.example.org"));
        assert_eq!(o.queue_ids, ["4XyZ1"]);
        assert_eq!(o.delivered, Some(true));
        assert_eq!((&*o.reporter, &*o.instance, o.mta), ("mx.example.net", "smtpd", Mta::Postfix));
        assert_eq!(o.source.kind, "milter");
    }

    #[test]
    fn plaintext_only_after_mail_without_tls_macros() {
        let mut session = postfix_connect();
        session.stage_macros(&macros(&[("{tls_version}", "")]));
        let o = session.observation(&source(), at(1_700_000_001));
        assert_eq!((o.outcome, o.delivered), (Outcome::Unknown, None));
        session.mail(&macros(&[]));
        assert_eq!(session.header_tls(), SessionTls::Plaintext);
        session.abort();
        let o = session.observation(&source(), at(1_700_000_001));
        assert_eq!((o.outcome, o.delivered), (Outcome::Plaintext, Some(false)));
        assert!(o.tls.is_none() && o.failure.is_none());
    }

    #[test]
    fn trust_from_verify_or_cert_subject() {
        type Macros<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Macros<'_>, Option<Trust>)] = &[
            (&[("{verify}", "OK")], Some(Trust::Trusted)),
            (&[("{verify}", "FAIL")], Some(Trust::Untrusted)),
            (&[("{verify}", "NO")], Some(Trust::Anonymous)),
            (&[("{verify}", "NOT")], Some(Trust::Anonymous)),
            (&[("{cert_subject}", "client.example.org")], Some(Trust::Trusted)),
            (&[], None),
        ];
        for (extra, want) in cases {
            let mut pairs = POSTFIX_TLS.to_vec();
            pairs.extend_from_slice(extra);
            let mut session = postfix_connect();
            session.stage_macros(&macros(&pairs));
            let o = session.observation(&source(), at(1_700_000_001));
            assert_eq!(o.tls.unwrap().trust, *want, "{extra:?}");
        }
    }

    #[test]
    fn forged_headers_are_counted_per_message() {
        let mut session = postfix_connect();
        session.mail(&macros(&[]));
        session.header("x-tlsledger");
        session.header("X-TLSLedger");
        session.header("X-TLSLedger-Other");
        assert_eq!(session.eom(&macros(&[])).forged_copies, 2);
        session.mail(&macros(&[]));
        session.header("X-TLSLedger");
        session.abort();
        session.mail(&macros(&[]));
        assert_eq!(session.eom(&macros(&[])).forged_copies, 0);
    }

    #[test]
    fn event_ids_are_stable_and_distinct_per_session() {
        let a = postfix_connect().observation(&source(), at(1_700_000_001)).event_id;
        assert_eq!(a, postfix_connect().observation(&source(), at(1_700_000_009)).event_id);
        let connect = macros(&[("j", "mx.example.net"), ("{daemon_name}", "smtpd")]);
        let other_port = Session::connect(at(1_700_000_000), "x", Some("192.0.2.7:40002".parse().unwrap()), &connect);
        assert_ne!(a, other_port.observation(&source(), at(1_700_000_001)).event_id);
    }

    #[test]
    fn sendmail_cert_names_are_xtext_decoded() {
        let connect = macros(&[("v", "8.17.1.9")]);
        let mut session = Session::connect(at(0), "x", Some("192.0.2.9:4000".parse().unwrap()), &connect);
        let mut pairs = POSTFIX_TLS.to_vec();
        pairs.extend_from_slice(&[
            ("{verify}", "OK"),
            ("{cert_subject}", "/C=DE/O=Example+20GmbH+2B+20Co/CN=mx.example.org"),
            ("{cert_issuer}", "/CN=Lab+20CA+C3+A4+ZZ+2+"),
        ]);
        session.stage_macros(&macros(&pairs));
        let cert = session.observation(&source(), at(1)).tls.unwrap().cert.unwrap();
        assert_eq!(cert.subject.as_deref(), Some("/C=DE/O=Example GmbH+ Co/CN=mx.example.org"));
        assert_eq!(cert.issuer.as_deref(), Some("/CN=Lab CA\u{e4}+ZZ+2+"));
        // Postfix's values are not xtext: a `+20` there stays.
        let mut session = postfix_connect();
        session.stage_macros(&macros(&[("{tls_version}", "TLSv1.3"), ("{cert_subject}", "a+20b")]));
        let cert = session.observation(&source(), at(1)).tls.unwrap().cert.unwrap();
        assert_eq!(cert.subject.as_deref(), Some("a+20b"));
    }

    #[test]
    fn sendmail_names_and_bounded_values() {
        let long = "a".repeat(10_000);
        let connect = macros(&[("v", "8.17.1"), ("j", &long)]);
        let mut session =
            Session::connect(at(0), "[192.0.2.9]", Some("[::ffff:192.0.2.9]:25".parse().unwrap()), &connect);
        for n in 0..100 {
            session.mail(&macros(&[("i", &format!("q{n}"))]));
        }
        let o = session.observation(&source(), at(1));
        assert_eq!(o.mta, Mta::Sendmail);
        assert_eq!(o.peer.hostname, None);
        assert_eq!(o.peer.ip.as_deref(), Some("192.0.2.9"));
        assert_eq!(o.reporter.len(), MAX_VALUE_BYTES);
        assert_eq!(o.queue_ids.len(), MAX_QUEUE_IDS);
    }
}
