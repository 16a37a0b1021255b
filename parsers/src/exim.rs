//! The Exim main-log grammar: delivery and arrival lines with their TLS fields, TLS errors.
//!
//! Input is the message part of a line: after the file framing (`2024-03-01 12:00:00 [pid] `,
//! [`crate::syslog`] strips it) or after the syslog tag `exim[pid]: `, where Exim repeats its own
//! timestamp (`syslog_timestamp`, on by default) and may split long lines into `[1/2] …`
//! pieces (research/FORMATS.md §1 F7/F7b, §3). The timestamp, `[pid]` and the message id are
//! optional here so both framings give the same [`Event`].
//!
//! Exim puts everything about an outbound connection on the delivery line itself
//! (`=> rcpt R=… T=… H=host [ip]:port X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes …`), and an
//! inbound one on the arrival line (`<= sender H=… P=esmtps X=… CV=… SNI=…`), so the fields of
//! those lines are read as `KEY=value` tokens in any order ([`Delivery`]). Errors that concern
//! TLS have their own events. Messages that carry nothing about TLS or an SMTP peer
//! (`Completed`, ACL rejections, authenticator failures …) are [`Event::Ignored`]. A line that
//! starts like one we know but breaks its grammar (truncated) is [`Error::Malformed`].
//!
//! Versions accepted: the old `X=TLSv1:AES256-SHA:256` (≤ 4.92) and the new `X=TLS1.3:…` forms,
//! the 4.100 key-exchange group (`…:256:X25519`), `*` for a resumed session, the old
//! (`1Ov4tU-0000Nz-Rm`) and 4.97+ (`10HmaX-000000005vi-0000`) message ids, and the test suite's
//! normalised values (`xxx` bits, `ip4.ip4.ip4.ip4`, `:PORT_D`).

use crate::Error;

/// What one Exim main-log message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A `<=`, `=>`, `->`, `**`, `==`, `*>` or `>>` line.
    Delivery(Delivery<'a>),
    /// `TLS error on connection from (helo) [ip]:port (SSL_accept): detail`: an inbound
    /// handshake (or, for `recv`/`send`, an I/O error after it).
    TlsErrorFrom {
        /// The client.
        host: Host<'a>,
        /// The function or phase in parentheses (`SSL_accept`, `gnutls_handshake`, `recv`);
        /// empty when not logged.
        stage: &'a str,
        /// The rest of the line.
        detail: &'a str,
    },
    /// `TLS error on connection to host [ip] (SSL_connect): detail` (older versions, outbound).
    TlsErrorTo {
        /// The server.
        host: Host<'a>,
        /// The function in parentheses.
        stage: &'a str,
        /// The rest of the line.
        detail: &'a str,
    },
    /// `H=host [ip] TLS error on connection (recv): …`: an I/O error after the handshake.
    TlsIoError {
        /// The peer.
        host: Host<'a>,
        /// The rest of the line.
        detail: &'a str,
    },
    /// `TLS session: (SSL_connect): detail: delivering unencrypted to H=host [ip] (not in
    /// hosts_require_tls)`, or the older `TLS session failure: delivering unencrypted to host
    /// [ip] (…)`: the handshake failed and Exim retries in clear.
    TlsFallback {
        /// The message the delivery belongs to, when logged.
        message_id: Option<&'a str>,
        /// The server.
        host: Host<'a>,
        /// What failed (`(SSL_connect): error: …`).
        detail: &'a str,
        /// True for a verification callout (`callout unencrypted to …`), not a delivery.
        callout: bool,
    },
    /// `DANE attempt failed; TLS connection to host [ip]: detail`.
    DaneFailed {
        /// The message, when logged.
        message_id: Option<&'a str>,
        /// The server.
        host: Host<'a>,
        /// Why.
        detail: &'a str,
    },
    /// `[ip] SSL verify error: depth=0 error=… cert=…` or `…: certificate name mismatch: …`:
    /// certificate verification failed; the session may go on (`CV=no`).
    VerifyError {
        /// The message, when logged.
        message_id: Option<&'a str>,
        /// The address in the brackets.
        addr: &'a str,
        /// The text after `SSL verify error: `.
        detail: &'a str,
    },
    /// `no MAIL in SMTP connection from (helo) [ip] D=… X=… C=EHLO,STARTTLS,…`: an inbound
    /// session that delivered nothing.
    NoMail {
        /// The client.
        host: Host<'a>,
        /// `X=`, when TLS was used.
        cipher: Option<Cipher<'a>>,
        /// `CV=`.
        cert_verified: Option<CertVerified>,
        /// `C=`: the SMTP commands, when logged.
        commands: Option<&'a str>,
    },
    /// `[2/3] text`: one piece of a line that syslog split (`[2\3]` for a split at a newline);
    /// the pieces of one line joined in order give the original message.
    Split {
        /// 1-based piece number.
        part: u16,
        /// Number of pieces.
        total: u16,
        /// The piece.
        text: &'a str,
    },
    /// A message with nothing about TLS or an SMTP peer.
    Ignored,
}

/// The flag of a message line (research/FORMATS.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `<=`: arrival.
    Arrival,
    /// `=>`: delivery.
    Delivered,
    /// `->`: another address delivered over the same connection.
    Additional,
    /// `*>`: delivery suppressed by `-N`.
    Suppressed,
    /// `>>`: cutthrough delivery.
    Cutthrough,
    /// `**`: permanent failure.
    Failed,
    /// `==`: deferral.
    Deferred,
}

/// A `<=`, `=>`, `->`, `**`, `==`, `*>` or `>>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The message id, when the line had one.
    pub message_id: Option<&'a str>,
    /// Which kind of line.
    pub flag: Flag,
    /// The first word after the flag: the recipient (deliveries) or sender (`<=`, may be `<>`).
    pub address: &'a str,
    /// `H=`: the remote host; `None` for local deliveries and arrivals.
    pub host: Option<Host<'a>>,
    /// `X=`: the TLS version and cipher.
    pub cipher: Option<Cipher<'a>>,
    /// `CV=`.
    pub cert_verified: Option<CertVerified>,
    /// `DN=`: the peer's certificate subject, without quotes.
    pub peer_dn: Option<&'a str>,
    /// `SNI=`.
    pub sni: Option<&'a str>,
    /// `P=`: the protocol of an arrival (`esmtps`, `esmtp`, `local` …).
    pub protocol: Option<&'a str>,
    /// `defer (-37)`: Exim's error number of a deferral.
    pub errno: Option<i32>,
    /// The error text of a deferral or failure (after `: `), when logged.
    pub error: Option<&'a str>,
}

/// `H=name (helo) [ip]:port`; every part but the address is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Host<'a> {
    /// The host name (DNS or as configured); empty when not logged.
    pub name: &'a str,
    /// The HELO/EHLO name in parentheses (inbound), when logged.
    pub helo: Option<&'a str>,
    /// What is inside the brackets; empty when the line gave no address (`H=ten-1.test.ex`).
    pub addr: &'a str,
    /// The port, when logged as digits.
    pub port: Option<u16>,
    /// `[ip]*`: the delivery went down a connection made for an earlier message.
    pub continued: bool,
}

/// `X=TLS1.3:TLS_AES_256_GCM_SHA384:256[:X25519][*]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cipher<'a> {
    /// `TLS1.3`, `TLSv1`, `TLS1.x` (as logged).
    pub version: &'a str,
    /// The cipher suite (OpenSSL name or GnuTLS descriptor).
    pub cipher: &'a str,
    /// Bits; `None` when not a number (the test suite writes `xxx`).
    pub bits: Option<u32>,
    /// Exim 4.100 key-exchange group.
    pub group: Option<&'a str>,
    /// `*`: the TLS session was resumed.
    pub resumed: bool,
}

/// `CV=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertVerified {
    /// `CV=yes`.
    Yes,
    /// `CV=no`.
    No,
    /// `CV=dane`.
    Dane,
}

/// Parses one Exim message (see the module documentation for what is accepted).
///
/// ```
/// use parsers::exim::{parse_message, Event, CertVerified};
/// let line = "2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => bob@example.net R=dnslookup \
///             T=remote_smtp H=mx.example.net [192.0.2.25] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 \
///             CV=yes C=\"250 2.0.0 Ok\"";
/// let Ok(Event::Delivery(delivery)) = parse_message(line) else { panic!() };
/// assert_eq!(delivery.host.unwrap().addr, "192.0.2.25");
/// assert_eq!(delivery.cipher.unwrap().cipher, "TLS_AES_256_GCM_SHA384");
/// assert_eq!(delivery.cert_verified, Some(CertVerified::Yes));
/// ```
pub fn parse_message(message: &str) -> Result<Event<'_>, Error> {
    let message = message.strip_suffix('\r').unwrap_or(message);
    if let Some(split) = split_piece(message) {
        return Ok(split);
    }
    let rest = skip_timestamp(message);
    let rest = skip_pid(rest);
    let (message_id, rest) = match message_id(rest) {
        Some((id, rest)) => (Some(id), rest),
        None => (None, rest),
    };
    if let Some(flag) = flag(rest) {
        return delivery(message_id, flag, &rest[2..]).map(Event::Delivery);
    }
    body(message_id, rest)
}

/// `[n/m] ` or `[n\m] ` at the start.
fn split_piece(message: &str) -> Option<Event<'_>> {
    let rest = message.strip_prefix('[')?;
    let (part, rest) = number(rest)?;
    let rest = rest.strip_prefix(['/', '\\'])?;
    let (total, rest) = number(rest)?;
    let text = rest.strip_prefix("] ").or_else(|| rest.strip_prefix(']'))?;
    let (part, total) = (u16::try_from(part).ok()?, u16::try_from(total).ok()?);
    (1..=total).contains(&part).then_some(Event::Split { part, total, text })
}

/// Leading ASCII digits as a number (at most 9 digits).
fn number(text: &str) -> Option<(u32, &str)> {
    let n_digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if n_digits == 0 || n_digits > 9 {
        return None;
    }
    Some((text[..n_digits].parse().ok()?, &text[n_digits..]))
}

/// Skips `YYYY-MM-DD HH:MM:SS[.mmm][ ±hhmm] ` when the message starts with one.
fn skip_timestamp(text: &str) -> &str {
    match crate::syslog::exim_timestamp(text) {
        Ok((rest, _)) => rest.strip_prefix(' ').unwrap_or(rest),
        Err(_) => text,
    }
}

/// Skips `[1234] `.
fn skip_pid(text: &str) -> &str {
    let Some(rest) = text.strip_prefix('[') else { return text };
    let n_digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest.get(n_digits..).and_then(|after| after.strip_prefix("] ")) {
        Some(after) if n_digits > 0 => after,
        _ => text,
    }
}

/// A message id followed by a space: `1Ov4tU-0000Nz-Rm` (6-6-2) or `10HmaX-000000005vi-0000`
/// (6-11-4, Exim ≥ 4.97).
fn message_id(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let alnum =
        |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|b| b.iter().all(u8::is_ascii_alphanumeric));
    let (middle, last) = if bytes.get(6) == Some(&b'-') && bytes.get(13) == Some(&b'-') {
        (7..13, 14..16)
    } else if bytes.get(6) == Some(&b'-') && bytes.get(18) == Some(&b'-') {
        (7..18, 19..23)
    } else {
        return None;
    };
    let len = last.end;
    if !alnum(0..6) || !alnum(middle) || !alnum(last) {
        return None;
    }
    match bytes.get(len) {
        Some(b' ') => Some((&text[..len], &text[len + 1..])),
        None => Some((&text[..len], "")),
        _ => None,
    }
}

/// The two-character flag and the space after it.
fn flag(text: &str) -> Option<Flag> {
    let bytes = text.as_bytes();
    if bytes.get(2) != Some(&b' ') {
        return None;
    }
    Some(match &bytes[..2] {
        b"<=" => Flag::Arrival,
        b"=>" => Flag::Delivered,
        b"->" => Flag::Additional,
        b"*>" => Flag::Suppressed,
        b">>" => Flag::Cutthrough,
        b"**" => Flag::Failed,
        b"==" => Flag::Deferred,
        _ => return None,
    })
}

/// The rest of a flagged line: address, then `KEY=value` tokens.
fn delivery<'a>(message_id: Option<&'a str>, flag: Flag, text: &'a str) -> Result<Delivery<'a>, Error> {
    let text = text.trim_start_matches(' ');
    let (address, mut rest) = word(text);
    if address.is_empty() {
        return Err(Error::Malformed);
    }
    let mut delivery = Delivery {
        message_id,
        flag,
        address,
        host: None,
        cipher: None,
        cert_verified: None,
        peer_dn: None,
        sni: None,
        protocol: None,
        errno: None,
        error: None,
    };
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(error) = rest.strip_prefix(": ").or_else(|| (rest == ":").then_some("")) {
            // `defer (111): Connection timed out H=host [ip]: SMTP timeout after …`: the system
            // error comes before the host.
            if delivery.host.is_none() {
                if let Some((_, after)) = error.split_once(" H=") {
                    if let Some((host, after)) = host(after) {
                        delivery.host = Some(host);
                        delivery.error = Some(after.strip_prefix(": ").unwrap_or(error));
                        break;
                    }
                }
            }
            delivery.error = Some(error);
            break;
        }
        if let Some(after) = rest.strip_prefix("defer (") {
            // A number (`-37`, `111`), or the test suite's normalised `dd`/`EEE`.
            let close = after.find(')').ok_or(Error::Malformed)?;
            delivery.errno = after[..close].parse().ok();
            rest = &after[close + 1..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("H=") {
            let (host, after) = host(after).ok_or(Error::Malformed)?;
            delivery.host = Some(host);
            rest = after;
            continue;
        }
        let quoted =
            rest.as_bytes().iter().position(|b| *b == b'=').and_then(|at| rest.as_bytes().get(at + 1)) == Some(&b'"');
        let (key, value, after) = key_value(rest);
        rest = after;
        let Some(mut value) = value else { continue };
        // `KEY=value: error`: the message follows the last field with its colon glued on
        // (`failure_log` writes `: ` right after `CV=yes`, `deferral_log` after `I=[ip]:port`,
        // and `** addr R=router: error`).
        let ends_fields = !quoted && after.starts_with(' ') && value.ends_with(':');
        if ends_fields {
            value = &value[..value.len() - 1];
        }
        match key {
            "X" => delivery.cipher = cipher(value),
            "CV" => delivery.cert_verified = cert_verified(value),
            "DN" => delivery.peer_dn = Some(value),
            "SNI" => delivery.sni = Some(value),
            "P" => delivery.protocol = Some(value),
            _ => {}
        }
        if ends_fields {
            delivery.error = Some(after.trim_start_matches(' '));
            break;
        }
    }
    Ok(delivery)
}

/// A run of non-space characters and the rest.
fn word(text: &str) -> (&str, &str) {
    let end = text.bytes().position(|b| b == b' ').unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// `KEY=value` or `KEY="quoted \" value"`; a token that is not `KEY=` gives `(word, None)`.
/// Quoted values are returned without their quotes (escapes are left in).
fn key_value(text: &str) -> (&str, Option<&str>, &str) {
    let bytes = text.as_bytes();
    let key_len = bytes.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
    if key_len == 0 || bytes.get(key_len) != Some(&b'=') {
        let (token, rest) = word(text);
        return (token, None, rest);
    }
    let key = &text[..key_len];
    let value_start = key_len + 1;
    if bytes.get(value_start) == Some(&b'"') {
        let mut idx = value_start + 1;
        while let Some(byte) = bytes.get(idx) {
            match byte {
                b'\\' => idx += 2,
                b'"' => return (key, Some(&text[value_start + 1..idx]), &text[idx + 1..]),
                _ => idx += 1,
            }
        }
        // No closing quote: the value runs to the end (a truncated line).
        return (key, Some(&text[(value_start + 1).min(text.len())..]), "");
    }
    let (value, rest) = word(&text[value_start..]);
    (key, Some(value), rest)
}

/// `X=` value.
fn cipher(value: &str) -> Option<Cipher<'_>> {
    let (value, resumed) = match value.strip_suffix('*') {
        Some(value) => (value, true),
        None => (value, false),
    };
    let mut parts = value.split(':');
    let version = parts.next().filter(|v| !v.is_empty())?;
    let cipher = parts.next().filter(|c| !c.is_empty())?;
    let bits = parts.next().and_then(|bits| bits.parse().ok());
    let group = parts.next().filter(|g| !g.is_empty());
    Some(Cipher { version, cipher, bits, group, resumed })
}

fn cert_verified(value: &str) -> Option<CertVerified> {
    match value {
        "yes" => Some(CertVerified::Yes),
        "no" => Some(CertVerified::No),
        "dane" => Some(CertVerified::Dane),
        _ => None,
    }
}

/// `name (helo) [ip]:port*` and what follows it; the bracketed address is optional only when
/// nothing but a name is logged (`H=ten-1.test.ex`).
pub fn host(text: &str) -> Option<(Host<'_>, &str)> {
    let mut host = Host::default();
    let mut rest = text;
    // The name: a word that does not start with `(` or `[`.
    if !rest.starts_with(['(', '[']) {
        let end = rest.bytes().position(|b| matches!(b, b' ' | b'[')).unwrap_or(rest.len());
        host.name = &rest[..end];
        rest = &rest[end..];
        let after_space = rest.trim_start_matches(' ');
        if !after_space.starts_with(['(', '[']) {
            // A name alone (no address), or followed by something else.
            return (!host.name.is_empty()).then_some((host, rest));
        }
        rest = after_space;
    }
    if let Some(after) = rest.strip_prefix('(') {
        // HELO names can hold anything but a `)` followed by ` [`.
        let close = after.find(") [").or_else(|| after.find(')'))?;
        host.helo = Some(&after[..close]);
        rest = after[close + 1..].trim_start_matches(' ');
    }
    let after = rest.strip_prefix('[')?;
    let close = after.find(']')?;
    host.addr = &after[..close];
    rest = &after[close + 1..];
    if let Some(after) = rest.strip_prefix('*') {
        host.continued = true;
        rest = after;
    }
    if let Some(after) = rest.strip_prefix(':') {
        let n_digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits > 0 {
            host.port = after[..n_digits].parse().ok();
            rest = &after[n_digits..];
        } else if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // A normalised port (`:PORT_D`).
            let end = after.bytes().position(|b| !(b.is_ascii_alphanumeric() || b == b'_')).unwrap_or(after.len());
            rest = &after[end..];
        }
        if let Some(after) = rest.strip_prefix('*') {
            host.continued = true;
            rest = after;
        }
    }
    if host.addr.is_empty() {
        return None;
    }
    Some((host, rest))
}

/// Messages without a flag.
fn body<'a>(message_id: Option<&'a str>, text: &'a str) -> Result<Event<'a>, Error> {
    let first = text.as_bytes().first().copied().unwrap_or(b' ');
    match first {
        b'T' => {
            if let Some(rest) = text.strip_prefix("TLS error on connection from ") {
                let (host, stage, detail) = host_stage_detail(rest).ok_or(Error::Malformed)?;
                return Ok(Event::TlsErrorFrom { host, stage, detail });
            }
            if let Some(rest) = text.strip_prefix("TLS error on connection to ") {
                let (host, stage, detail) = host_stage_detail(rest).ok_or(Error::Malformed)?;
                return Ok(Event::TlsErrorTo { host, stage, detail });
            }
            if text.starts_with("TLS session") {
                return tls_session(message_id, text);
            }
        }
        b'[' => {
            if let Some((addr, rest)) = text[1..].split_once("] SSL verify error: ") {
                if !addr.contains(' ') {
                    return Ok(Event::VerifyError { message_id, addr, detail: rest });
                }
            }
        }
        b'D' => {
            if let Some(rest) = text.strip_prefix("DANE attempt failed; TLS connection to ") {
                let (host, after) = host(rest).ok_or(Error::Malformed)?;
                let detail = after.strip_prefix(": ").unwrap_or(after.trim_start_matches([':', ' ']));
                return Ok(Event::DaneFailed { message_id, host, detail });
            }
        }
        b'n' => {
            // `TFO `/`TFO* `: the client used TCP Fast Open (with data).
            if let Some(rest) = [
                "no MAIL in SMTP connection from ",
                "no MAIL in TFO SMTP connection from ",
                "no MAIL in TFO* SMTP connection from ",
            ]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix))
            {
                return no_mail(rest);
            }
        }
        b'H' => {
            if let Some(rest) = text.strip_prefix("H=") {
                if let Some((host, after)) = host(rest) {
                    if let Some(detail) = after.strip_prefix(" TLS error on connection ") {
                        return Ok(Event::TlsIoError { host, detail });
                    }
                }
            }
        }
        _ => {}
    }
    Ok(Event::Ignored)
}

/// `host [ip]:port (stage): detail` or `host [ip] detail`.
fn host_stage_detail(text: &str) -> Option<(Host<'_>, &str, &str)> {
    let (host, rest) = host(text)?;
    if host.addr.is_empty() {
        return None;
    }
    let rest = skip_interface(rest.trim_start_matches(' '));
    if let Some(after) = rest.strip_prefix('(') {
        // The stage may itself hold parentheses-free text with spaces (`cert/key setup: cert=…`).
        let close = after.find("):").or_else(|| after.rfind(')'))?;
        let detail = after[close + 1..].strip_prefix(':').unwrap_or(&after[close + 1..]);
        return Some((host, &after[..close], detail.trim_start_matches(' ')));
    }
    Some((host, "", rest))
}

/// Skips `I=[ip]:port ` (`+incoming_interface`, `+outgoing_interface`), which Exim writes
/// right after the remote host.
fn skip_interface(text: &str) -> &str {
    let Some(after) = text.strip_prefix("I=[") else { return text };
    let Some(close) = after.find(']') else { return text };
    let after = &after[close + 1..];
    let after = match after.strip_prefix(':') {
        Some(port) => port.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => after,
    };
    after.trim_start_matches(' ')
}

/// `TLS session: (where): detail: delivering unencrypted to H=host [ip] (not in
/// hosts_require_tls)`, `TLS session failure: delivering unencrypted to host [ip] (…)`, and
/// `callout unencrypted to host [ip]`.
fn tls_session<'a>(message_id: Option<&'a str>, text: &'a str) -> Result<Event<'a>, Error> {
    for (marker, callout) in [(": delivering unencrypted to ", false), (": callout unencrypted to ", true)] {
        if let Some(at) = text.rfind(marker) {
            let detail = text[..at].strip_prefix("TLS session").unwrap_or(&text[..at]);
            let detail = detail.trim_start_matches([':', ' ']);
            let target = &text[at + marker.len()..];
            let target = target.strip_prefix("H=").unwrap_or(target);
            let (host, _) = host(target).ok_or(Error::Malformed)?;
            return Ok(Event::TlsFallback { message_id, host, detail, callout });
        }
    }
    // `TLS session: (SSL_connect): error: …` alone repeats the deferral logged on the `==` line.
    Ok(Event::Ignored)
}

/// The part of `no MAIL in SMTP connection from …` after `from `.
fn no_mail(text: &str) -> Result<Event<'_>, Error> {
    let (host, mut rest) = host(text).ok_or(Error::Malformed)?;
    let (mut cipher_field, mut cert_verified, mut commands) = (None, None, None);
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let (key, value, after) = key_value(rest);
        rest = after;
        match (key, value) {
            ("X", Some(value)) => cipher_field = cipher(value),
            ("CV", Some(value)) => cert_verified = self::cert_verified(value),
            ("C", Some(value)) => commands = Some(value),
            _ => {}
        }
    }
    Ok(Event::NoMail { host, cipher: cipher_field, cert_verified, commands })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery_of(line: &str) -> Delivery<'_> {
        match parse_message(line) {
            Ok(Event::Delivery(delivery)) => delivery,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn outbound_tls_delivery_new_format() {
        let d = delivery_of("2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => bob@example.net R=dnslookup T=remote_smtp H=mx.example.net [192.0.2.25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256:X25519* CV=dane DN=\"CN=mx.example.net\" C=\"250 2.0.0 Ok\"");
        assert_eq!(d.message_id, Some("1tAbCd-000000003Xy-Zq1w"));
        assert_eq!(d.flag, Flag::Delivered);
        assert_eq!(d.address, "bob@example.net");
        let host = d.host.unwrap();
        assert_eq!((host.name, host.addr, host.port, host.helo), ("mx.example.net", "192.0.2.25", Some(25), None));
        let cipher = d.cipher.unwrap();
        assert_eq!(
            (cipher.version, cipher.cipher, cipher.bits, cipher.group, cipher.resumed),
            ("TLS1.3", "TLS_AES_256_GCM_SHA384", Some(256), Some("X25519"), true)
        );
        assert_eq!(d.cert_verified, Some(CertVerified::Dane));
        assert_eq!(d.peer_dn, Some("CN=mx.example.net"));
    }

    #[test]
    fn inbound_arrival_old_format() {
        let d = delivery_of("2010-09-13 05:00:13 [1487] 1Ov4tU-0000Nz-Rm <= mailling.list@domain.com H=mailhost.domain.com [208.42.54.2]:51792 I=[67.215.162.175]:25 P=esmtps X=TLSv1:AES256-SHA:256 CV=no S=21778 id=384a86a39e83be0d9b3a94d1feb3119f@domain.com T=\"Daily List: Chameleon\" for user@example.com");
        assert_eq!(d.message_id, Some("1Ov4tU-0000Nz-Rm"));
        assert_eq!(d.flag, Flag::Arrival);
        assert_eq!(d.host.unwrap().port, Some(51792));
        assert_eq!(d.protocol, Some("esmtps"));
        assert_eq!(d.cipher.unwrap().version, "TLSv1");
        assert_eq!(d.cert_verified, Some(CertVerified::No));
    }

    #[test]
    fn host_forms() {
        let cases = [
            ("(helo) [127.0.0.1] P=x", "", Some("helo"), "127.0.0.1", None, false),
            ("name (helo) [::1]:25 X", "name", Some("helo"), "::1", Some(25), false),
            ("[192.0.2.1]", "", None, "192.0.2.1", None, false),
            ("127.0.0.1 [127.0.0.1]* X=", "127.0.0.1", None, "127.0.0.1", None, true),
            ("127.0.0.1 [127.0.0.1]:PORT_D: a TLS", "127.0.0.1", None, "127.0.0.1", None, false),
            ("([2001:db8::1]) [2001:db8::1]", "", Some("[2001:db8::1]"), "2001:db8::1", None, false),
            ("ten-1.test.ex", "ten-1.test.ex", None, "", None, false),
        ];
        for (text, name, helo, addr, port, continued) in cases {
            let (got, _) = host(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                (got.name, got.helo, got.addr, got.port, got.continued),
                (name, helo, addr, port, continued),
                "{text}"
            );
        }
    }

    #[test]
    fn deferrals() {
        let d = delivery_of("1999-03-02 09:44:33 10HmaX-000000005vi-0000 == CALLER@test.ex R=client T=send_to_server defer (-37) H=127.0.0.1 [127.0.0.1]: TLS session: (SSL_connect): error: <<detail omitted>>");
        assert_eq!(d.errno, Some(-37));
        assert_eq!(d.host.unwrap().addr, "127.0.0.1");
        assert_eq!(d.error, Some("TLS session: (SSL_connect): error: <<detail omitted>>"));
        let d = delivery_of("10HmaX-000000005vi-0000 == userx@test.ex R=client T=send_to_server defer (-38) H=127.0.0.1 [127.0.0.1]:PORT_D: a TLS session is required, but the server did not offer TLS support");
        assert_eq!(d.errno, Some(-38));
        assert_eq!(d.error, Some("a TLS session is required, but the server did not offer TLS support"));
        let d = delivery_of("10HmaX-000000005vi-0000 == x@y R=r T=t defer (-53): retry time not reached for any host");
        assert_eq!((d.host, d.errno, d.error), (None, Some(-53), Some("retry time not reached for any host")));
        let d = delivery_of("1j1Z2g-00Faoy-Uh ** admin@example.net R=virtual_aliases: No such person at this address.");
        assert_eq!(d.error, Some("No such person at this address."));
        let d = delivery_of("10HmaX-000000005vi-0000 ** f1@test.ex R=to_server T=remote_smtp H=127.0.0.1 [127.0.0.1] X=TLS1.x:ke-RSA-AES256-SHAnnn:xxx CV=yes : SMTP error from remote mail server after RCPT TO:<f1@test.ex>: 550 we really do not like you");
        assert_eq!(d.cipher.unwrap().bits, None);
        assert!(d.error.unwrap().starts_with("SMTP error"));
    }

    #[test]
    fn no_mail_with_tcp_fast_open() {
        for tfo in ["TFO ", "TFO* "] {
            let line = format!("2024-01-01 00:00:00 no MAIL in {tfo}SMTP connection from (helo.example.com) [198.51.100.8]:4000 D=2s X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no C=EHLO,STARTTLS,EHLO,QUIT");
            match parse_message(&line) {
                Ok(Event::NoMail { host, cipher, .. }) => {
                    assert_eq!((host.addr, cipher.map(|c| c.version)), ("198.51.100.8", Some("TLS1.3")), "{line}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn fields_glued_to_the_error_and_interfaces() {
        // `failure_log` (older Exims): `: ` right after `CV=yes`.
        let d = delivery_of("2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w ** d@example.net R=dnslookup T=remote_smtp H=mx.example.net [192.0.2.25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes: SMTP error from remote mail server after RCPT TO:<d@example.net>: 550 no");
        assert_eq!(d.cert_verified, Some(CertVerified::Yes));
        assert_eq!(d.error, Some("SMTP error from remote mail server after RCPT TO:<d@example.net>: 550 no"));
        // `deferral_log` with `+outgoing_interface`.
        let d = delivery_of("2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w == a@example.org R=dnslookup T=remote_smtp defer (-38) H=mx.example.org [192.0.2.26]:25 I=[192.0.2.1]:45679: a TLS session is required, but the server did not offer TLS support");
        assert_eq!((d.errno, d.host.map(|h| h.addr)), (Some(-38), Some("192.0.2.26")));
        assert_eq!(d.error, Some("a TLS session is required, but the server did not offer TLS support"));
        // A quoted value that ends in a colon is not the end of the fields.
        let d = delivery_of("2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => a@example.org R=r T=t H=h [192.0.2.26]:25 DN=\"CN=x:\" X=TLS1.2:ECDHE-RSA-AES128-GCM-SHA256:128 CV=no C=\"250 ok\"");
        assert_eq!((d.peer_dn, d.cert_verified, d.error), (Some("CN=x:"), Some(CertVerified::No), None));
        // `+incoming_interface` on an inbound TLS error.
        match parse_message("2024-01-01 00:00:00 TLS error on connection from mail.example.com (helo.example.com) [198.51.100.7]:54321 I=[192.0.2.1]:25 (recv): The TLS connection was non-properly terminated.") {
            Ok(Event::TlsErrorFrom { host, stage, detail }) => {
                assert_eq!((host.addr, stage, detail), ("198.51.100.7", "recv", "The TLS connection was non-properly terminated."));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_errors_and_fallbacks() {
        match parse_message("2024-01-01 00:00:00 TLS error on connection from (helo.data.changed) [127.0.0.1]:4000 (SSL_accept): error: <<detail omitted>>") {
            Ok(Event::TlsErrorFrom { host, stage, detail }) => {
                assert_eq!((host.helo, host.addr, host.port, stage, detail), (Some("helo.data.changed"), "127.0.0.1", Some(4000), "SSL_accept", "error: <<detail omitted>>"));
            }
            other => panic!("{other:?}"),
        }
        match parse_message("TLS error on connection from localhost (myhost.test.ex) [127.0.0.1] Unknown curve name in tls_eccurve 'bogus'") {
            Ok(Event::TlsErrorFrom { stage, detail, .. }) => assert_eq!((stage, detail), ("", "Unknown curve name in tls_eccurve 'bogus'")),
            other => panic!("{other:?}"),
        }
        match parse_message("10HmaX-000000005vi-0000 TLS session: (certificate verification failed): certificate invalid: delivering unencrypted to H=127.0.0.1 [127.0.0.1] (not in hosts_require_tls)") {
            Ok(Event::TlsFallback { message_id, host, detail, callout }) => {
                assert_eq!((message_id, host.addr, detail, callout), (Some("10HmaX-000000005vi-0000"), "127.0.0.1", "(certificate verification failed): certificate invalid", false));
            }
            other => panic!("{other:?}"),
        }
        match parse_message("1Ov4tU-0000Nz-Rm TLS session failure: delivering unencrypted to mx.example [192.0.2.9] (not in hosts_require_tls)") {
            Ok(Event::TlsFallback { host, detail, .. }) => assert_eq!((host.addr, detail), ("192.0.2.9", "failure")),
            other => panic!("{other:?}"),
        }
        match parse_message(
            "10HmaX-000000005vi-0000 [127.0.0.1] SSL verify error: depth=0 error=self signed certificate cert=/CN=x",
        ) {
            Ok(Event::VerifyError { addr, detail, .. }) => {
                assert_eq!((addr, detail), ("127.0.0.1", "depth=0 error=self signed certificate cert=/CN=x"))
            }
            other => panic!("{other:?}"),
        }
        match parse_message("no MAIL in SMTP connection from (foobar) [127.0.0.1] D=qqs A=plain:userx X=TLS1.2:ECDHE-RSA-AES256-GCM-SHA384:256 C=EHLO,STARTTLS,EHLO,AUTH,QUIT") {
            Ok(Event::NoMail { host, cipher, commands, .. }) => {
                assert_eq!((host.addr, cipher.unwrap().bits, commands), ("127.0.0.1", Some(256), Some("EHLO,STARTTLS,EHLO,AUTH,QUIT")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_pieces() {
        assert_eq!(
            parse_message("[1/2] 2024-11-03 13:35:12 1tAbCd"),
            Ok(Event::Split { part: 1, total: 2, text: "2024-11-03 13:35:12 1tAbCd" })
        );
        assert_eq!(parse_message("[2\\2] tail"), Ok(Event::Split { part: 2, total: 2, text: "tail" }));
        // Not a split marker: a pid or an address.
        assert_eq!(parse_message("[3/2] x"), Ok(Event::Ignored));
        assert!(matches!(parse_message("[1234] 1tAbCd-000000003Xy-Zq1w Completed"), Ok(Event::Ignored)));
    }

    #[test]
    fn malformed_when_truncated() {
        for line in [
            "2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => ",
            "1tAbCd-000000003Xy-Zq1w == x@y R=r defer (-3",
            "1tAbCd-000000003Xy-Zq1w => x@y H=mx [192.0.2",
            "TLS error on connection from (helo",
            "no MAIL in SMTP connection from (x",
        ] {
            assert_eq!(parse_message(line), Err(Error::Malformed), "{line}");
        }
    }

    #[test]
    fn every_prefix_and_hostile_bytes_are_safe() {
        let lines = [
            "2017-07-30 18:51:05.712 +0100 [99] 10HmaZ-000000005vi-0000 => hazcookie@test.ex R=r T=t H=127.0.0.1 [127.0.0.1]:25* TFO* X=TLS1.3:TLS_AES_256_GCM_SHA384:256:X25519* CV=yes DN=\"/CN=a \\\"b\\\"\" C=\"250 OK id=10HmbA-000000005vi-0000\"",
            "10HmaX-000000005vi-0000 TLS session: (SSL_connect): error: x: delivering unencrypted to H=h (x) [::1]:26 (not in hosts_require_tls)",
            "TLS error on connection from h (x) [1.2.3.4]:5 (cert/key setup: cert=/a key=/b): Error while reading file.",
            "[1/3] 1tAbCd-000000003Xy-Zq1w DANE attempt failed; TLS connection to h [1.2.3.4]: (SSL_connect) bad",
        ];
        for line in lines {
            for end in (0..=line.len()).filter(|end| line.is_char_boundary(*end)) {
                let _ = parse_message(&line[..end]);
            }
        }
        let hostile = [
            "H=",
            "H=(",
            "H=([",
            "X=",
            "X=:",
            "X=::::*",
            "DN=\"\\",
            "<= ",
            "== a defer (",
            "[",
            "[1/",
            "[\u{fffd}] SSL verify error: ",
        ];
        for text in hostile {
            let _ = parse_message(text);
            let _ = parse_message(&format!("1tAbCd-000000003Xy-Zq1w => a {text}"));
        }
        let long = "X=".repeat(100_000);
        let _ = parse_message(&format!("1tAbCd-000000003Xy-Zq1w => a {long}"));
    }
}

#[cfg(test)]
mod corpus_tests {
    use super::*;

    /// The Exim corpus files of tests/data/corpus (provenance in its SOURCES.md).
    const CORPUS: [(&str, &str); 5] = [
        ("exim-testsuite-tls.log", include_str!("../../tests/data/corpus/exim-testsuite-tls.log")),
        ("exim-testsuite-delivery.log", include_str!("../../tests/data/corpus/exim-testsuite-delivery.log")),
        ("fail2ban-exim.log", include_str!("../../tests/data/corpus/fail2ban-exim.log")),
        ("fail2ban-exim-spam.log", include_str!("../../tests/data/corpus/fail2ban-exim-spam.log")),
        ("logstash-patterns-core-exim.log", include_str!("../../tests/data/corpus/logstash-patterns-core-exim.log")),
    ];

    #[test]
    fn no_corpus_line_is_malformed() {
        let mut malformed = Vec::new();
        for (name, text) in CORPUS {
            for line in text.lines().filter(|line| !line.starts_with('#')) {
                let message = crate::syslog::parse_syslog(line).map_or(line, |framed| framed.message);
                if parse_message(message).is_err() {
                    malformed.push(format!("{name}: {line}"));
                }
            }
        }
        assert!(malformed.is_empty(), "{} malformed:\n{}", malformed.len(), malformed.join("\n"));
    }

    #[test]
    fn every_prefix_of_every_corpus_line_is_safe() {
        for (_, text) in CORPUS {
            for line in text.lines() {
                for end in (0..=line.len()).filter(|end| line.is_char_boundary(*end)) {
                    let _ = crate::parse_record(&line[..end]);
                    let _ = parse_message(&line[..end]);
                }
            }
        }
    }
}
