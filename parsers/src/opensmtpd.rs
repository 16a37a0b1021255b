//! The OpenSMTPD message grammar: sessions, TLS, certificate checks, relay errors and deliveries.
//!
//! Input is the message part of a line logged with the program tag `smtpd` (after
//! `smtpd[75295]: `). Output is an [`Event`] borrowing from the message. Every current line is
//! `<16-hex session id> <subsystem> <event> key=value…`, where the subsystem is `smtp` (inbound),
//! `mta` (outbound relay) or `mda` (local delivery), and the session id joins the lines of one
//! connection (research/FORMATS.md §5). One real line (Debian 12's 6.8.0p2, captured by
//! tests/harness/opensmtpd-lab.sh):
//!
//! ```text
//! 7112e196da887622 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256
//! ```
//!
//! All four historic formats of FORMATS.md §5.2 are read:
//!
//! - ≤ 5.9: `smtp-in: Started TLS on session <id>: version=TLSv1.2, cipher=…, bits=256` and
//!   `smtp-out: Server certificate verification succeeded|failed on session <id>`;
//! - 6.0.x: `<id> smtp event=starttls address=… host=… ciphers="version=…, cipher=…, bits=…"`,
//!   `<id> smtp event=client-cert-check … result="success|failure"`, `event=connected`,
//!   `event=closed … reason=…`;
//! - 6.4 – 6.8 (OpenSSL): `<id> smtp|mta tls ciphers=V:C:B`, `<id> smtp client-cert-check
//!   result=…`, `<id> mta server-cert-check result="success|failure"`, `<id> mta ssl_check_name:
//!   no match for '<mx>' in cert`, and 6.8's `smtp-out: Error on session <id>: opportunistic TLS
//!   failed, downgrading to plain`;
//! - 6.6+ / 7.x (libtls): `<id> smtp|mta cert-check result="valid|verified|unverified|unchecked|
//!   failure" fingerprint=…`, and `<id> smtp cert-check result="no certificate presented"`
//!   (logged under `smtp` by the mta side: a source bug the correlator allows for).
//!
//! Messages that carry nothing about sessions, TLS or delivery (`info:`, `warn:`, `debug:`
//! lines, `smtp envelope`, `smtp failed-command`, filter lines) become [`Kind::Ignored`]. A
//! message whose event word is known but whose fields break its template (a truncated line) is
//! [`Error::Malformed`]. Nothing here allocates: every field is a slice of the message.

use nom::bytes::complete::take_while_m_n;
use nom::{IResult, Parser};

use crate::Error;

/// Which part of smtpd logged a session line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsystem {
    /// `smtp` (and 5.x `smtp-in`): the SMTP server, inbound sessions.
    Smtp,
    /// `mta` (and 5.x `smtp-out`): the relay client, outbound sessions.
    Mta,
    /// `mda`: local delivery.
    Mda,
    /// A line with no session subsystem (`info:`, `warn:`, …).
    None,
}

/// One OpenSMTPD message.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// The 64-bit session id (16 hex digits in the log); 0 for lines without one.
    pub session: u64,
    /// The subsystem the line was logged under.
    pub subsystem: Subsystem,
    /// What the line says.
    pub kind: Kind<'a>,
}

/// The result of a certificate check, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertResult {
    /// `valid`, `verified`, `success`, `succeeded`: the chain (and, where checked, the name)
    /// validated.
    Valid,
    /// `failure`, `failed`: the check was made and failed.
    Failed,
    /// `unverified`, `unchecked`: a certificate was presented but not checked.
    Unchecked,
    /// `no certificate presented`.
    NoCertificate,
    /// Any other value.
    Other,
}

/// The `result=` of a delivery line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryResult {
    /// `Ok`.
    Ok,
    /// `TempFail`.
    TempFail,
    /// `PermFail`.
    PermFail,
    /// `Loop` or another value.
    Other,
}

/// An `mta delivery` / `mda delivery` line.
///
/// `7112e196da887622 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@verified.test>
/// rcpt=<-> source="127.0.0.1" relay="127.0.0.2 (mx.ca.test)" delay=0s result="Ok" stat="250 2.0.0
/// Ok: queued as 4jdZ0k2tkDz1VcNC"`
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<'a> {
    /// The envelope id (16 hex digits).
    pub evpid: &'a str,
    /// The recipient (`to=<…>`), without the angle brackets.
    pub to: &'a str,
    /// The relay's address: the IP comes first in `relay="<ip> (<ptr>)"`.
    pub relay_addr: &'a str,
    /// The relay's name from the parentheses, empty when absent.
    pub relay_host: &'a str,
    /// The result.
    pub result: DeliveryResult,
    /// The server's reply or the local error (`stat=`).
    pub stat: &'a str,
}

/// What a line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    /// `smtp connected address=<ip|local> host=<rdns|<unknown>>` (6.0: `event=connected`).
    Connected {
        /// The client address as logged (may be `local`, or bracketed IPv6).
        address: &'a str,
        /// Its reverse-DNS name, `<unknown>` when there is none.
        host: &'a str,
    },
    /// `mta connecting address=<scheme>://<ip>:<port> host=<ptr>`: the start of an outbound
    /// attempt, and our TLS policy for it.
    Connecting {
        /// `smtp` (opportunistic STARTTLS), `smtp+tls` (required), `smtps`, `smtp+notls`, `lmtp`.
        scheme: &'a str,
        /// The relay address.
        address: &'a str,
        /// The port, when it parses.
        port: Option<u16>,
        /// The relay's name.
        host: &'a str,
    },
    /// `mta connected`: the TCP connection is up.
    MtaConnected,
    /// TLS is established (`tls ciphers=…`, 6.0 `event=starttls`, 5.x `Started TLS`).
    Tls {
        /// `TLSv1.3`, …
        protocol: &'a str,
        /// The cipher name.
        cipher: &'a str,
        /// The cipher strength in bits, when it parses.
        bits: Option<u32>,
        /// A ≤ 5.9 or 6.0 line (`Started TLS on session`, `event=starttls`): those logs have no
        /// connect line this grammar reads, so the TLS line is where a session starts.
        legacy: bool,
    },
    /// A certificate check (`cert-check`, `server-cert-check`, `client-cert-check`, 6.0
    /// `event=client-cert-check`, 5.x `certificate verification`).
    CertCheck {
        /// The result, normalised.
        result: CertResult,
        /// The result as logged.
        text: &'a str,
        /// `fingerprint="SHA256:<hex>"` of the certificate checked (6.4 and later), as logged.
        fingerprint: Option<&'a str>,
    },
    /// `mta ssl_check_name: no match for '<name>' in cert` (6.4–6.8).
    NameMismatch {
        /// The name that was not in the certificate.
        name: &'a str,
    },
    /// `smtp-out: Error on session <id>: opportunistic TLS failed, downgrading to plain` (6.8):
    /// the handshake failed and the same session retries in plaintext.
    TlsDowngrade,
    /// `smtp|mta disconnected reason=…` (6.0: `event=closed`).
    Disconnected {
        /// The reason (`quit`, `timeout`, `tls-accept-failed`, `io-error: …`, …), unquoted.
        reason: &'a str,
    },
    /// `mta closing reason=tls-failure|tls-connect-failed|ca-failure`.
    Closing {
        /// The reason.
        reason: &'a str,
    },
    /// `mta error reason=<text>` (`TLS required but not supported by remote host`, `SSL
    /// certificate check failed`, `STARTTLS rejected: …`, `IO Error: …`).
    MtaError {
        /// The text after `reason=`.
        reason: &'a str,
    },
    /// `smtp message msgid=… size=… nrcpt=… proto=…`: the client's DATA was accepted.
    Message,
    /// `mta delivery …` / `mda delivery …`.
    Delivery(Delivery<'a>),
    /// A line with nothing about sessions, TLS or delivery.
    Ignored,
}

/// An event without a session.
const IGNORED: Event<'static> = Event { session: 0, subsystem: Subsystem::None, kind: Kind::Ignored };

/// Parses one OpenSMTPD message (the text after `smtpd[pid]: `).
///
/// ```
/// use parsers::opensmtpd::{parse_message, Kind, Subsystem};
/// let event = parse_message("7112e196da887622 mta tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256").unwrap();
/// assert_eq!((event.session, event.subsystem), (0x7112e196da887622, Subsystem::Mta));
/// assert_eq!(
///     event.kind,
///     Kind::Tls { protocol: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: Some(256), legacy: false }
/// );
/// ```
pub fn parse_message(message: &str) -> Result<Event<'_>, Error> {
    if let Some(rest) = message.strip_prefix("smtp-in: ") {
        return legacy(Subsystem::Smtp, rest);
    }
    if let Some(rest) = message.strip_prefix("smtp-out: ") {
        return legacy(Subsystem::Mta, rest);
    }
    let Ok((rest, session)) = session_id(message) else {
        return Ok(IGNORED);
    };
    let Some((word, rest)) = rest.strip_prefix(' ').and_then(|rest| split_word(rest)) else {
        return Ok(IGNORED);
    };
    let subsystem = match word {
        "smtp" => Subsystem::Smtp,
        "mta" => Subsystem::Mta,
        "mda" => Subsystem::Mda,
        _ => return Ok(IGNORED),
    };
    let kind = session_line(subsystem, rest)?;
    Ok(Event { session, subsystem, kind })
}

/// Sixteen hex digits, as a number.
fn session_id(input: &str) -> IResult<&str, u64> {
    let (rest, digits) = take_while_m_n(16, 16, |c: char| c.is_ascii_hexdigit()).parse(input)?;
    // Sixteen hex digits always fit in a u64.
    let id = u64::from_str_radix(digits, 16).unwrap_or(0);
    Ok((rest, id))
}

/// The first space-separated word of `text` (non-empty) and what follows its space.
fn split_word(text: &str) -> Option<(&str, &str)> {
    let end = text.bytes().position(|b| b == b' ').unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    Some((&text[..end], text.get(end + 1..).unwrap_or("")))
}

/// The event word and its fields, after `<id> <subsystem> `.
fn session_line(subsystem: Subsystem, text: &str) -> Result<Kind<'_>, Error> {
    let (word, rest) = split_word(text).unwrap_or((text, ""));
    let kind = match word {
        "connected" if subsystem == Subsystem::Mta => Kind::MtaConnected,
        "connected" => connected(rest)?,
        "connecting" => connecting(rest)?,
        "tls" => {
            let ciphers = field(rest, "ciphers").ok_or(Error::Malformed)?;
            modern_ciphers(ciphers)?
        }
        "cert-check" | "server-cert-check" | "client-cert-check" => {
            let text = field(rest, "result").ok_or(Error::Malformed)?;
            Kind::CertCheck { result: cert_result(text), text, fingerprint: field(rest, "fingerprint") }
        }
        "ssl_check_name:" => {
            let name = rest
                .strip_prefix("no match for '")
                .and_then(|name| name.strip_suffix("' in cert"))
                .ok_or(Error::Malformed)?;
            Kind::NameMismatch { name }
        }
        "disconnected" => Kind::Disconnected { reason: field(rest, "reason").ok_or(Error::Malformed)? },
        "closing" => Kind::Closing { reason: field(rest, "reason").ok_or(Error::Malformed)? },
        "error" => Kind::MtaError { reason: rest.strip_prefix("reason=").ok_or(Error::Malformed)? },
        "message" => Kind::Message,
        "delivery" => Kind::Delivery(delivery(rest)?),
        _ => match word.strip_prefix("event=") {
            Some(event) => event_v6_0(event, rest)?,
            None => Kind::Ignored,
        },
    };
    Ok(kind)
}

/// `address=127.0.0.1 host=localhost`.
fn connected(rest: &str) -> Result<Kind<'_>, Error> {
    let address = field(rest, "address").filter(|a| !a.is_empty()).ok_or(Error::Malformed)?;
    let host = field(rest, "host").unwrap_or("");
    Ok(Kind::Connected { address, host })
}

/// `address=smtp+tls://127.0.0.2:16501 host=mx.ca.test`; IPv6 addresses may be bracketed.
fn connecting(rest: &str) -> Result<Kind<'_>, Error> {
    let url = field(rest, "address").ok_or(Error::Malformed)?;
    let (scheme, hostport) = url.split_once("://").ok_or(Error::Malformed)?;
    let (address, port) = match hostport.rfind(':') {
        Some(at) if hostport[at + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&hostport[..at], hostport[at + 1..].parse().ok())
        }
        _ => (hostport, None),
    };
    let address = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(address);
    if scheme.is_empty() || address.is_empty() {
        return Err(Error::Malformed);
    }
    let host = field(rest, "host").unwrap_or("");
    Ok(Kind::Connecting { scheme, address, port, host })
}

/// `TLSv1.3:TLS_AES_256_GCM_SHA384:256` (`tls_to_text()`: version, cipher, strength).
fn modern_ciphers(text: &str) -> Result<Kind<'_>, Error> {
    let (protocol, rest) = text.split_once(':').ok_or(Error::Malformed)?;
    let (cipher, bits) = rest.rsplit_once(':').ok_or(Error::Malformed)?;
    if protocol.is_empty() || cipher.is_empty() {
        return Err(Error::Malformed);
    }
    Ok(Kind::Tls { protocol, cipher, bits: bits.parse().ok(), legacy: false })
}

/// `version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256` (≤ 5.9 and 6.0).
fn legacy_ciphers(text: &str) -> Result<Kind<'_>, Error> {
    let mut protocol = None;
    let mut cipher = None;
    let mut bits = None;
    for part in text.split(", ") {
        match part.split_once('=') {
            Some(("version", value)) => protocol = Some(value),
            Some(("cipher", value)) => cipher = Some(value),
            Some(("bits", value)) => bits = value.parse().ok(),
            _ => {}
        }
    }
    match (protocol, cipher) {
        (Some(protocol), Some(cipher)) if !protocol.is_empty() && !cipher.is_empty() => {
            Ok(Kind::Tls { protocol, cipher, bits, legacy: true })
        }
        _ => Err(Error::Malformed),
    }
}

fn cert_result(text: &str) -> CertResult {
    match text {
        "valid" | "verified" | "success" | "succeeded" => CertResult::Valid,
        "failure" | "failed" => CertResult::Failed,
        "unverified" | "unchecked" => CertResult::Unchecked,
        "no certificate presented" => CertResult::NoCertificate,
        _ => CertResult::Other,
    }
}

/// The 6.0.x `event=` lines (tag opensmtpd-6.0.3p1, smtp_session.c / mta_session.c).
fn event_v6_0<'a>(event: &'a str, rest: &'a str) -> Result<Kind<'a>, Error> {
    let kind = match event {
        "connected" => connected(rest)?,
        "starttls" => {
            // smtp: `ciphers="version=…, cipher=…, bits=…"`; mta: unquoted to the end of line.
            let at = rest.find("ciphers=").ok_or(Error::Malformed)?;
            let value = &rest[at + "ciphers=".len()..];
            let value = match value.strip_prefix('"') {
                Some(quoted) => quoted.split_once('"').map_or(quoted, |(inside, _)| inside),
                None => value,
            };
            legacy_ciphers(value)?
        }
        "client-cert-check" | "server-cert-check" => {
            let text = field(rest, "result").ok_or(Error::Malformed)?;
            Kind::CertCheck { result: cert_result(text), text, fingerprint: field(rest, "fingerprint") }
        }
        "closed" => Kind::Disconnected { reason: field(rest, "reason").unwrap_or("") },
        _ => Kind::Ignored,
    };
    Ok(kind)
}

/// The ≤ 5.9 lines after `smtp-in: ` / `smtp-out: `, and 6.8's downgrade notice.
fn legacy(subsystem: Subsystem, rest: &str) -> Result<Event<'_>, Error> {
    if let Some(after) = rest.strip_prefix("Started TLS on session ") {
        let (after, session) = session_id(after).map_err(|_| Error::Malformed)?;
        let ciphers = after.strip_prefix(": ").ok_or(Error::Malformed)?;
        return Ok(Event { session, subsystem, kind: legacy_ciphers(ciphers)? });
    }
    if let Some(after) = rest.strip_prefix("Error on session ") {
        let (after, session) = session_id(after).map_err(|_| Error::Malformed)?;
        let kind = if after == ": opportunistic TLS failed, downgrading to plain" {
            Kind::TlsDowngrade
        } else {
            Kind::Ignored
        };
        return Ok(Event { session, subsystem, kind });
    }
    for prefix in ["Client certificate verification ", "Server certificate verification "] {
        if let Some(after) = rest.strip_prefix(prefix) {
            let (text, after) = split_word(after).ok_or(Error::Malformed)?;
            let after = after.strip_prefix("on session ").ok_or(Error::Malformed)?;
            let (_, session) = session_id(after).map_err(|_| Error::Malformed)?;
            return Ok(Event {
                session,
                subsystem,
                kind: Kind::CertCheck { result: cert_result(text), text, fingerprint: None },
            });
        }
    }
    Ok(IGNORED)
}

/// `evpid=… from=<…> to=<…> rcpt=<…> source="…" relay="<ip> (<ptr>)" delay=… result="Ok"
/// stat="…"` (mta) or `evpid=… from=<…> to=<…> rcpt=<…> user=… delay=… result=Ok stat=…` (mda).
fn delivery(rest: &str) -> Result<Delivery<'_>, Error> {
    let evpid = field(rest, "evpid").ok_or(Error::Malformed)?;
    let to = field(rest, "to").ok_or(Error::Malformed)?;
    let to = to.strip_prefix('<').and_then(|to| to.strip_suffix('>')).unwrap_or(to);
    let (relay_addr, relay_host) = match field(rest, "relay") {
        Some(relay) => match relay.split_once(" (") {
            Some((addr, host)) => (addr, host.strip_suffix(')').unwrap_or(host)),
            None => (relay, ""),
        },
        None => ("", ""),
    };
    let result = match field(rest, "result").ok_or(Error::Malformed)? {
        "Ok" => DeliveryResult::Ok,
        "TempFail" => DeliveryResult::TempFail,
        "PermFail" => DeliveryResult::PermFail,
        _ => DeliveryResult::Other,
    };
    // `stat` is the last field and its text may hold quotes and spaces: take the rest of the line.
    let stat = match rest.find(" stat=") {
        Some(at) => {
            let value = &rest[at + " stat=".len()..];
            value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
        }
        None => "",
    };
    Ok(Delivery { evpid, to, relay_addr, relay_host, result, stat })
}

/// The value of ` key=` in a `key=value key="quoted value"` list, unquoted; `None` when absent.
///
/// A quoted value ends at a quote followed by a space or the end of the text; an unquoted one at
/// the next space. Keys match only at the start of the list or after a space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(key)) {
        let at = from + found;
        let after_key = at + key.len();
        let starts_field = at == 0 || text.as_bytes().get(at - 1) == Some(&b' ');
        if starts_field && text.as_bytes().get(after_key) == Some(&b'=') {
            return Some(value(&text[after_key + 1..]).0);
        }
        from = after_key;
    }
    None
}

/// One value at the start of `text` and what follows it.
fn value(text: &str) -> (&str, &str) {
    if let Some(inner) = text.strip_prefix('"') {
        let bytes = inner.as_bytes();
        let mut search = 0;
        while let Some(found) = inner.get(search..).and_then(|t| t.find('"')) {
            let at = search + found;
            if matches!(bytes.get(at + 1), None | Some(b' ')) {
                return (&inner[..at], &inner[at + 1..]);
            }
            search = at + 1;
        }
        return (inner, "");
    }
    let end = text.bytes().position(|b| b == b' ').unwrap_or(text.len());
    (&text[..end], &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str, session: u64, subsystem: Subsystem, kind: Kind<'_>) {
        assert_eq!(parse_message(message), Ok(Event { session, subsystem, kind }), "{message}");
    }

    #[test]
    fn current_session_lines() {
        use Subsystem::{Mta, Smtp};
        let id = 0x7112e196da887622;
        check(
            "7112e196da887622 smtp connected address=127.0.0.1 host=localhost",
            id,
            Smtp,
            Kind::Connected { address: "127.0.0.1", host: "localhost" },
        );
        check(
            "7112e196da887622 smtp connected address=[::1] host=<unknown>",
            id,
            Smtp,
            Kind::Connected { address: "[::1]", host: "<unknown>" },
        );
        check(
            "7112e196da887622 mta connecting address=smtp+tls://127.0.0.2:16501 host=mx.ca.test",
            id,
            Mta,
            Kind::Connecting { scheme: "smtp+tls", address: "127.0.0.2", port: Some(16501), host: "mx.ca.test" },
        );
        check(
            "7112e196da887622 mta connecting address=smtp://[2001:db8::1]:25 host=mx.example.net",
            id,
            Mta,
            Kind::Connecting { scheme: "smtp", address: "2001:db8::1", port: Some(25), host: "mx.example.net" },
        );
        check("7112e196da887622 mta connected", id, Mta, Kind::MtaConnected);
        check(
            "7112e196da887622 smtp tls ciphers=TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256",
            id,
            Smtp,
            Kind::Tls { protocol: "TLSv1.2", cipher: "ECDHE-RSA-AES256-GCM-SHA384", bits: Some(256), legacy: false },
        );
        check(
            "7112e196da887622 mta server-cert-check result=\"success\"",
            id,
            Mta,
            Kind::CertCheck { result: CertResult::Valid, text: "success", fingerprint: None },
        );
        check(
            "7112e196da887622 mta cert-check result=\"unverified\" fingerprint=\"SHA256:0123abcd\"",
            id,
            Mta,
            Kind::CertCheck { result: CertResult::Unchecked, text: "unverified", fingerprint: Some("SHA256:0123abcd") },
        );
        check(
            "7112e196da887622 smtp cert-check result=\"no certificate presented\"",
            id,
            Smtp,
            Kind::CertCheck { result: CertResult::NoCertificate, text: "no certificate presented", fingerprint: None },
        );
        check(
            "7112e196da887622 mta ssl_check_name: no match for 'mx.example.net' in cert",
            id,
            Mta,
            Kind::NameMismatch { name: "mx.example.net" },
        );
        check(
            "7112e196da887622 smtp disconnected reason=\"io-error: error:0A080006:SSL routines::EVP lib\"",
            id,
            Smtp,
            Kind::Disconnected { reason: "io-error: error:0A080006:SSL routines::EVP lib" },
        );
        check(
            "7112e196da887622 smtp disconnected  reason=tls-accept-failed",
            id,
            Smtp,
            Kind::Disconnected { reason: "tls-accept-failed" },
        );
        check(
            "7112e196da887622 mta disconnected reason=quit messages=1",
            id,
            Mta,
            Kind::Disconnected { reason: "quit" },
        );
        check("7112e196da887622 mta closing reason=tls-failure", id, Mta, Kind::Closing { reason: "tls-failure" });
        check(
            "7112e196da887622 mta error reason=TLS required but not supported by remote host",
            id,
            Mta,
            Kind::MtaError { reason: "TLS required but not supported by remote host" },
        );
        check("7112e196da887622 smtp message msgid=0c7e1bdb size=412 nrcpt=1 proto=ESMTP", id, Smtp, Kind::Message);
        check(
            "7112e196da887622 smtp envelope evpid=0c7e1bdbc6a32339 from=<al@b.test> to=<bob@x.test>",
            id,
            Smtp,
            Kind::Ignored,
        );
    }

    #[test]
    fn deliveries() {
        let got = parse_message("7112e196da887622 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@verified.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.2 (mx.ca.test)\" delay=0s result=\"Ok\" stat=\"250 2.0.0 Ok: queued as 4jdZ0k2tkDz1VcNC\"").unwrap();
        assert_eq!(
            got.kind,
            Kind::Delivery(Delivery {
                evpid: "12a0010a8c60bd82",
                to: "bob@verified.test",
                relay_addr: "127.0.0.2",
                relay_host: "mx.ca.test",
                result: DeliveryResult::Ok,
                stat: "250 2.0.0 Ok: queued as 4jdZ0k2tkDz1VcNC",
            })
        );
        let got = parse_message("d38d9252099402fd mda delivery evpid=14fb5bd37d5df845 from=<al@b.test> to=<bob@a.test> rcpt=<bob@a.test> user=opensmtpd delay=0s result=PermFail stat=Error (\"/bin/sh: 1: /usr/libexec/opensmtpd/mail.mda: not found\")").unwrap();
        assert_eq!(got.subsystem, Subsystem::Mda);
        let Kind::Delivery(delivery) = got.kind else { panic!("{got:?}") };
        assert_eq!((delivery.result, delivery.relay_addr), (DeliveryResult::PermFail, ""));
        assert_eq!(delivery.stat, "Error (\"/bin/sh: 1: /usr/libexec/opensmtpd/mail.mda: not found\")");
        // A quoted stat with quotes inside.
        let got = parse_message("0000000000000001 mta delivery evpid=0000000000000002 from=<a@b> to=<c@d> rcpt=<-> source=\"192.0.2.1\" relay=\"62.211.72.32 (smtp.tin.it)\" delay=1h result=\"TempFail\" stat=\"421 \"busy\" try later\"").unwrap();
        let Kind::Delivery(delivery) = got.kind else { panic!("{got:?}") };
        assert_eq!((delivery.relay_host, delivery.result), ("smtp.tin.it", DeliveryResult::TempFail));
        assert_eq!(delivery.stat, "421 \"busy\" try later");
    }

    #[test]
    fn historic_formats() {
        use Subsystem::{Mta, Smtp};
        let id = 0x0123456789abcdef;
        let tls12 =
            Kind::Tls { protocol: "TLSv1.2", cipher: "ECDHE-RSA-AES256-GCM-SHA384", bits: Some(256), legacy: true };
        check(
            "smtp-in: Started TLS on session 0123456789abcdef: version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256",
            id,
            Smtp,
            tls12.clone(),
        );
        check(
            "smtp-out: Started TLS on session 0123456789abcdef: version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256",
            id,
            Mta,
            tls12.clone(),
        );
        check(
            "smtp-out: Server certificate verification failed on session 0123456789abcdef",
            id,
            Mta,
            Kind::CertCheck { result: CertResult::Failed, text: "failed", fingerprint: None },
        );
        check(
            "smtp-in: Client certificate verification succeeded on session 0123456789abcdef",
            id,
            Smtp,
            Kind::CertCheck { result: CertResult::Valid, text: "succeeded", fingerprint: None },
        );
        check(
            "0123456789abcdef smtp event=starttls address=192.0.2.1 host=mx.example.net ciphers=\"version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256\"",
            id,
            Smtp,
            tls12.clone(),
        );
        check(
            "0123456789abcdef mta event=starttls ciphers=version=TLSv1.2, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256",
            id,
            Mta,
            tls12,
        );
        check(
            "0123456789abcdef smtp event=client-cert-check address=192.0.2.1 host=mx.example.net result=\"failure\"",
            id,
            Smtp,
            Kind::CertCheck { result: CertResult::Failed, text: "failure", fingerprint: None },
        );
        check(
            "0123456789abcdef smtp event=closed address=192.0.2.1 host=mx.example.net reason=cert-check-failed",
            id,
            Smtp,
            Kind::Disconnected { reason: "cert-check-failed" },
        );
        check(
            "smtp-out: Error on session 0123456789abcdef: opportunistic TLS failed, downgrading to plain",
            id,
            Mta,
            Kind::TlsDowngrade,
        );
    }

    #[test]
    fn dispatch_by_program_tag() {
        use crate::{detect_mta, parse_record, Body, Mta};
        assert_eq!(detect_mta("smtpd"), Mta::Opensmtpd);
        assert_eq!(detect_mta("postfix/smtpd"), Mta::Postfix);
        assert_eq!(detect_mta("postfix/submission/smtpd"), Mta::Postfix);
        assert_eq!(detect_mta("opensmtpd"), Mta::Other);
        let line = "Nov 30 19:32:22 vm smtpd[9151]: 7112e196da887622 mta connected";
        let record = parse_record(line).unwrap();
        assert!(matches!(record.body, Body::Opensmtpd(Event { kind: Kind::MtaConnected, .. })), "{record:?}");
        let line = "Nov 30 19:32:22 vm postfix/smtpd[9151]: connect from unknown[192.0.2.1]";
        assert!(matches!(parse_record(line).unwrap().body, Body::Postfix { .. }));
        let line = "Nov 30 19:32:22 vm smtpd[9151]: 7112e196da887622 mta tls ciphers=TLSv1.3";
        assert_eq!(parse_record(line).unwrap().body, Body::Unparsed(Error::Malformed));
        let line = "Nov 30 19:32:22 vm sshd[9151]: 7112e196da887622 mta tls ciphers=TLSv1.3";
        assert_eq!(parse_record(line).unwrap().body, Body::Other);
    }

    #[test]
    fn unrelated_lines_are_ignored() {
        for message in [
            "info: OpenSMTPD 6.8.0p2 starting",
            "warn: queue: no return path!",
            "smtp-out: Disabling route [] <-> 127.0.0.6 (required.lab.test) for 15s",
            "smtp-out: No valid route for [connector:[]->[relay:x,port=1,smtp+tls,mx],0x0]",
            "7112e196da887622 filters protocol phase=connect",
            "7112e196da887622 smtp authentication user=al result=ok",
            "7112e196da887622 smtp event=proxy address=192.0.2.1",
            "not-hex-at-all mta tls ciphers=x:y:1",
            "",
        ] {
            assert_eq!(parse_message(message).map(|e| e.kind), Ok(Kind::Ignored), "{message:?}");
        }
    }

    #[test]
    fn truncated_lines_are_malformed() {
        for message in [
            "7112e196da887622 mta tls",
            "7112e196da887622 mta tls ciphers=TLSv1.3",
            "7112e196da887622 mta tls ciphers=TLSv1.3:",
            "7112e196da887622 mta connecting address=smtp+tls",
            "7112e196da887622 mta connecting",
            "7112e196da887622 smtp connected",
            "7112e196da887622 mta server-cert-check",
            "7112e196da887622 mta ssl_check_name: no match for 'mx.exa",
            "7112e196da887622 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@verified.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.2 (mx.ca",
            "7112e196da887622 mta disconnected",
            "7112e196da887622 mta error",
            "smtp-in: Started TLS on session 0123456789abcdef: version=TLSv1.2, ciph",
            "smtp-in: Started TLS on session 01234567",
            "smtp-out: Server certificate verification failed on sess",
        ] {
            assert_eq!(parse_message(message), Err(Error::Malformed), "{message:?}");
        }
    }

    #[test]
    fn every_prefix_and_hostile_bytes_never_panic() {
        let lines = [
            "7112e196da887622 mta delivery evpid=12a0010a8c60bd82 from=<al@b.test> to=<bob@verified.test> rcpt=<-> source=\"127.0.0.1\" relay=\"127.0.0.2 (mx.ca.test)\" delay=0s result=\"Ok\" stat=\"250 2.0.0 Ok\"",
            "0123456789abcdef smtp event=starttls address=192.0.2.1 host=h ciphers=\"version=TLSv1.2, cipher=X, bits=256\"",
            "smtp-out: Server certificate verification failed on session 0123456789abcdef",
            "7112e196da887622 mta connecting address=smtp://[2001:db8::1]:25 host=mx.example.net",
        ];
        for line in lines {
            for end in (0..=line.len()).filter(|&end| line.is_char_boundary(end)) {
                let _ = parse_message(&line[..end]);
            }
        }
        let hostile = format!("7112e196da887622 mta tls ciphers={}", "\"=:é\u{0}".repeat(10_000));
        let _ = parse_message(&hostile);
        let _ = parse_message("7112e196da887622 mta delivery stat=\" result=\"");
        let _ = parse_message("7112e196da887622 smtp connected address=\" host=\"");
        let _ = parse_message("\u{fffd}\u{fffd} smtp tls ciphers=\u{fffd}:\u{fffd}:\u{fffd}");
    }
}
