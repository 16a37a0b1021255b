//! The Sendmail message grammar: `STARTTLS=` lines, TLS policy rulesets, `from=`/`to=` lines.
//!
//! Input is the message part of a line whose program tag is a Sendmail one (`sm-mta[1234]: `,
//! see [`is_tag`]). Output is an [`Event`] borrowing from the message; nothing is allocated.
//! The templates and their sources are catalogued in research/FORMATS.md §4 (Sendmail 8.17.1.9
//! `tls.c`, `deliver.c`, `srvrsmtp.c`, `conf.c`); each parser below quotes one line.
//!
//! Sendmail writes `key=value` fields separated by `, `. Values may contain commas (`to=<a>,<b>`)
//! and the last field (`stat=`, `reject=`) may contain anything, so a field ends only at `, `
//! followed by a lower-case `key=` ([`Fields`]), and `stat=`/`reject=` take the rest of the line.
//!
//! `sm_syslog()` splits messages longer than its buffer into `QID[1]: part ...`, `QID[2]: part`
//! pieces ([`Event::Piece`]); the correlator joins them and parses the whole message again with
//! [`parse_message`].
//!
//! Messages that carry nothing about TLS or delivery (`AUTH failure`, `possible SMTP attack`,
//! `User unknown`) become [`Event::Ignored`]. A message that starts like a line we know but
//! breaks its grammar is [`Error::Malformed`].

use crate::Error;

/// True for the program tags Sendmail logs under: `sendmail`, `sm-mta` (Debian's daemon),
/// `sm-msp-queue` (the MSP queue runner), `sendmail-*`/`sm-mta-*` (a `-L` label), and
/// `sm-acceptingconnections` (a process title logged as the tag, seen on real servers).
pub fn is_tag(tag: &str) -> bool {
    match tag.as_bytes().first() {
        Some(b's') => {
            matches!(tag, "sendmail" | "sm-mta" | "sm-msp-queue" | "sm-acceptingconnections")
                || tag.starts_with("sendmail-")
                || tag.starts_with("sm-mta-")
        }
        _ => false,
    }
}

/// Which side of the SMTP connection Sendmail was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `STARTTLS=client`: Sendmail delivered (outbound).
    Client,
    /// `STARTTLS=server`: Sendmail received (inbound).
    Server,
}

/// A `relay=` value: `host [ip]`, `[ip]`, `host [ip] (may be forged)`, `host.` (client side of a
/// `STARTTLS=` line: no address), `[IPv6:2001:db8::1]`, or `user@localhost` (local submission).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Relay<'a> {
    /// The name before the address, as logged (may end with a dot, may be empty or `[ip]`).
    pub host: &'a str,
    /// What is inside the last pair of brackets, when there is one (`192.0.2.1`, `IPv6:…`).
    pub addr: Option<&'a str>,
    /// ` (may be forged)`: the reverse name did not resolve back to the address.
    pub forged: bool,
}

/// `STARTTLS=client, relay=mx.example.net., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Starttls<'a> {
    /// The queue id of the milter-enabled variant (`221820LG031423: STARTTLS=server, …`).
    pub queue_id: Option<&'a str>,
    /// Client or server.
    pub side: Side,
    /// The peer: a host name (client side) or `host [ip]` (server side).
    pub relay: Relay<'a>,
    /// `TLSv1.3`, `TLSv1.2`, `TLSv1/SSLv3`.
    pub version: &'a str,
    /// The `{verify}` macro: `OK`, `TRUSTED`, `FAIL`, `NO`, `NOT`, `DANE_FAIL`, …
    pub verify: &'a str,
    /// OpenSSL cipher name.
    pub cipher: &'a str,
    /// Cipher bits, when the value is a number.
    pub bits: Option<u32>,
    /// Algorithm bits, when logged and a number.
    pub alg_bits: Option<u32>,
}

/// `ruleset=tls_server, arg1=SOFTWARE, relay=mx.example.com, reject=403 4.7.0 TLS handshake failed.`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ruleset<'a> {
    /// The queue id, when logged.
    pub queue_id: Option<&'a str>,
    /// `tls_server`, `tls_client`, `check_rcpt`, `check_relay`, …
    pub name: &'a str,
    /// `arg1=`: for the TLS rulesets the `{verify}` value.
    pub arg1: &'a str,
    /// `relay=`.
    pub relay: Option<Relay<'a>>,
    /// `reject=` (the rest of the line), when the ruleset rejected.
    pub reject: Option<&'a str>,
}

/// `qA7LqlqC029841: from=<alice@example.org>, size=1234, class=0, nrcpts=1, msgid=<…>, proto=ESMTPS, daemon=MTA, relay=mail.example.org [192.0.2.7]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct From<'a> {
    /// The queue id.
    pub queue_id: &'a str,
    /// The sender, without angle brackets.
    pub from: &'a str,
    /// `proto=`: `ESMTPS`/`ESMTPSA` mean TLS, `ESMTP`/`SMTP`/`ESMTPA` plaintext.
    pub proto: Option<&'a str>,
    /// `daemon=`: the name of the listening daemon (`MTA`, `MSA`, `MTA-v4`).
    pub daemon: Option<&'a str>,
    /// `nrcpts=`: how many recipients were accepted (0: every one was rejected).
    pub nrcpts: Option<u32>,
    /// `relay=`: the client.
    pub relay: Option<Relay<'a>>,
}

/// `qA7LqlqC029841: to=<bob@example.net>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.example.net. [192.0.2.25], dsn=2.0.0, stat=Sent (Ok: queued as 9F3A2)`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The queue id.
    pub queue_id: &'a str,
    /// The recipients as logged (`<a@x>,<b@y>`).
    pub to: &'a str,
    /// `mailer=`: `esmtp`, `smtp`, `relay`, `local`, `prog`, …
    pub mailer: Option<&'a str>,
    /// `relay=`: the peer (the host part truncated to 40 characters by Sendmail).
    pub relay: Option<Relay<'a>>,
    /// `dsn=`.
    pub dsn: Option<&'a str>,
    /// `stat=`: the rest of the line (`Sent (…)`, `Deferred: …`, `User unknown`).
    pub stat: &'a str,
}

impl Delivery<'_> {
    /// True when `stat=` says the peer took the message.
    pub fn sent(&self) -> bool {
        self.stat.starts_with("Sent")
    }

    /// The recipients, without angle brackets.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.to.split(',').map(|rcpt| rcpt.trim().trim_start_matches('<').trim_end_matches('>'))
    }
}

/// What one Sendmail message says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The TLS summary of a completed handshake.
    Starttls(Starttls<'a>),
    /// `STARTTLS=client, error: connect failed=0, reason=…, SSL_error=1, errno=0, retry=-1` and
    /// `STARTTLS=server, error: accept failed=0, reason=…, SSL_error=5, errno=0, retry=-1, relay=host [ip]`.
    StarttlsError {
        /// Which side failed.
        side: Side,
        /// `reason=` (the OpenSSL reason), when logged (8.15+).
        reason: Option<&'a str>,
        /// The text after `error: `.
        detail: &'a str,
        /// `relay=` (server side only).
        relay: Option<Relay<'a>>,
    },
    /// `STARTTLS=client, relay=mx.example.net., warning=DANE configured in DNS but no STARTTLS available`.
    StarttlsWarning {
        /// Which side.
        side: Side,
        /// The peer.
        relay: Relay<'a>,
        /// The warning text.
        warning: &'a str,
    },
    /// `STARTTLS=client, cert-subject=/CN=…, cert-issuer=/CN=…, verifymsg=self signed certificate`
    /// (LogLevel > 11).
    CertInfo {
        /// Which side.
        side: Side,
        /// `cert-subject=`: the peer certificate's subject DN, xtext-encoded as logged (see
        /// [`xtext_decode`]).
        subject: Option<&'a str>,
        /// `cert-issuer=`: its issuer DN, xtext-encoded as logged.
        issuer: Option<&'a str>,
        /// `verifymsg=`: the X509 verification result text (`ok` when it verified).
        verifymsg: &'a str,
    },
    /// Other `STARTTLS…` detail lines: OpenSSL error queues (`STARTTLS=client: …:error:…`), state
    /// traces (`STARTTLS: SSL_connect:failed in …`) and I/O errors (`STARTTLS: write error=…`).
    StarttlsDetail {
        /// Which side, when the line says.
        side: Option<Side>,
        /// The OpenSSL reason text when the detail is an error string, else the detail itself.
        reason: &'a str,
    },
    /// A `ruleset=` line: a rule rejected something.
    Ruleset(Ruleset<'a>),
    /// A `from=` line: a message was received.
    From(From<'a>),
    /// A `to=` line: a delivery attempt.
    Delivery(Delivery<'a>),
    /// `v26LtRA0020949: some-host.example.org [192.0.2.194] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA`
    NoMail {
        /// The client.
        relay: Relay<'a>,
        /// The daemon name (`MTA`, `TLSMTA`, `MSA`).
        daemon: &'a str,
    },
    /// `56VFYCxS024291: lost input channel from mail.example.org [192.0.2.196] to MTA-v4 after rcpt`
    LostInput {
        /// The client.
        relay: Relay<'a>,
        /// The SMTP phase (`rcpt`, `starttls`, `data`, …), when logged.
        after: Option<&'a str>,
    },
    /// One piece of a message `sm_syslog()` split: `QID[1]: to=<a@x>,<b@y>, ... ...`.
    Piece {
        /// The queue id.
        queue_id: &'a str,
        /// The piece number, from 1.
        seq: u32,
        /// The text of the piece, without the trailing ` ...` continuation mark.
        text: &'a str,
        /// True when more pieces follow (the piece ended with ` ...`).
        more: bool,
    },
    /// A Sendmail message that tells nothing about TLS or SMTP delivery.
    Ignored,
}

/// Parses one Sendmail message.
///
/// ```
/// use parsers::sendmail::{parse_message, Event, Side};
/// let msg = "STARTTLS=client, relay=mx.example.net., version=TLSv1.3, verify=OK, \
///            cipher=TLS_AES_256_GCM_SHA384, bits=256/256";
/// let Ok(Event::Starttls(tls)) = parse_message(msg) else { panic!() };
/// assert_eq!((tls.side, tls.verify, tls.bits), (Side::Client, "OK", Some(256)));
/// ```
pub fn parse_message(message: &str) -> Result<Event<'_>, Error> {
    if let Some(rest) = message.strip_prefix("STARTTLS") {
        return starttls(None, rest);
    }
    if let Some(rest) = message.strip_prefix("ruleset=") {
        return ruleset(None, rest);
    }
    let Some((queue_id, seq, rest)) = queue_id_prefix(message) else {
        return Ok(Event::Ignored);
    };
    if let Some(seq) = seq {
        let (text, more) = match rest.strip_suffix(" ...") {
            Some(text) => (text, true),
            None => (rest, false),
        };
        return Ok(Event::Piece { queue_id, seq, text, more });
    }
    match rest.as_bytes().first() {
        Some(b't') if rest.starts_with("to=") => delivery(queue_id, rest),
        Some(b'f') if rest.starts_with("from=") => from(queue_id, rest),
        Some(b'S') if rest.starts_with("STARTTLS") => starttls(Some(queue_id), &rest["STARTTLS".len()..]),
        Some(b'r') if rest.starts_with("ruleset=") => ruleset(Some(queue_id), &rest["ruleset=".len()..]),
        Some(b'l') if rest.starts_with("lost input channel from ") => {
            Ok(lost_input(&rest["lost input channel from ".len()..]))
        }
        _ => Ok(no_mail(rest).unwrap_or(Event::Ignored)),
    }
}

/// `s1GNXHYB005133: ` or `s1GNXHYB005133[2]: `: the queue id (and piece number) that
/// `sm_syslog()` puts before a message. `NOQUEUE: ` also counts as an id.
fn queue_id_prefix(message: &str) -> Option<(&str, Option<u32>, &str)> {
    let bytes = message.as_bytes();
    let n_id = bytes.iter().take(32).take_while(|b| b.is_ascii_alphanumeric()).count();
    if n_id < 6 {
        return None;
    }
    let (queue_id, rest) = message.split_at(n_id);
    if let Some(rest) = rest.strip_prefix(": ") {
        return Some((queue_id, None, rest));
    }
    let rest = rest.strip_prefix('[')?;
    let n_digits = rest.bytes().take(9).take_while(u8::is_ascii_digit).count();
    let seq = rest[..n_digits].parse::<u32>().ok()?;
    let rest = rest[n_digits..].strip_prefix("]: ")?;
    Some((queue_id, Some(seq), rest))
}

/// After `STARTTLS`: `=client, relay=…, version=…, verify=…, cipher=…, bits=…`, the error and
/// warning forms, and the detail lines.
fn starttls<'a>(queue_id: Option<&'a str>, rest: &'a str) -> Result<Event<'a>, Error> {
    let (side, rest) = if let Some(rest) = rest.strip_prefix("=client") {
        (Some(Side::Client), rest)
    } else if let Some(rest) = rest.strip_prefix("=server") {
        (Some(Side::Server), rest)
    } else {
        (None, rest)
    };
    let Some(side_known) = side else {
        // `STARTTLS: SSL_connect:failed in …`, `STARTTLS: write error=…`, `STARTTLS=read, info: …`.
        let detail = rest.strip_prefix(": ").unwrap_or(rest);
        return Ok(Event::StarttlsDetail { side: None, reason: openssl_reason(detail) });
    };
    if let Some(detail) = rest.strip_prefix(": ") {
        return Ok(Event::StarttlsDetail { side, reason: openssl_reason(detail) });
    }
    let Some(rest) = rest.strip_prefix(", ") else {
        return Err(Error::Malformed);
    };
    if let Some(detail) = rest.strip_prefix("error: ") {
        let mut reason = None;
        let mut relay = None;
        for (key, value) in Fields::new(detail) {
            match key {
                "reason" => reason = Some(value),
                "relay" => relay = Some(parse_relay(value)),
                _ => {}
            }
        }
        return Ok(Event::StarttlsError { side: side_known, reason, detail, relay });
    }
    let mut relay = None;
    let (mut version, mut verify, mut cipher, mut bits) = (None, None, None, None);
    let (mut warning, mut verifymsg, mut subject, mut issuer) = (None, None, None, None);
    for (key, value) in Fields::new(rest) {
        match key {
            "relay" => relay = Some(value),
            "version" => version = Some(value),
            "verify" => verify = Some(value),
            "cipher" => cipher = Some(value),
            "bits" => bits = Some(value),
            "warning" => warning = Some(value),
            "cert-subject" => subject = Some(value),
            "cert-issuer" => issuer = Some(value),
            "verifymsg" => verifymsg = Some(value),
            _ => {}
        }
    }
    match (relay, version, verify, cipher) {
        (Some(relay), Some(version), Some(verify), Some(cipher)) => {
            if verify.is_empty() || !verify.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                return Err(Error::Malformed);
            }
            let (bits, alg_bits) = match bits.map(|b| b.split_once('/').unwrap_or((b, ""))) {
                Some((bits, alg_bits)) => (bits.parse().ok(), alg_bits.parse().ok()),
                None => (None, None),
            };
            let tls = Starttls {
                queue_id,
                side: side_known,
                relay: parse_relay(relay),
                version,
                verify,
                cipher,
                bits,
                alg_bits,
            };
            Ok(Event::Starttls(tls))
        }
        (Some(relay), _, _, _) if warning.is_some() => {
            Ok(Event::StarttlsWarning { side: side_known, relay: parse_relay(relay), warning: warning.unwrap_or("") })
        }
        (_, None, None, None) if verifymsg.is_some() || subject.is_some() || issuer.is_some() => {
            Ok(Event::CertInfo { side: side_known, subject, issuer, verifymsg: verifymsg.unwrap_or("") })
        }
        // `relay=…, field=cn_subject, status=failed to extract CN`, `get_verify: …`.
        (_, None, None, None) => Ok(Event::StarttlsDetail { side, reason: rest }),
        _ => Err(Error::Malformed),
    }
}

/// The OpenSSL reason of an error string (`…:error:0A000086:SSL routines::certificate verify
/// failed:…` → `certificate verify failed`), or the text itself.
///
/// Only an error string at the start of the detail counts (`tlslogerr()` writes
/// `<thread id>:error:…`), not one quoted inside another message (`write error=…, get_error=error:…`).
fn openssl_reason(detail: &str) -> &str {
    let Some(idx) = detail.find("error:") else {
        return detail;
    };
    let lead = &detail[..idx];
    if !(lead.is_empty() || lead.strip_suffix(':').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))) {
        return detail;
    }
    detail[idx..].split(':').nth(4).filter(|reason| !reason.is_empty()).unwrap_or(detail)
}

/// After `ruleset=`: `tls_server, arg1=SOFTWARE, relay=mx.example.com, reject=403 4.7.0 …`.
fn ruleset<'a>(queue_id: Option<&'a str>, rest: &'a str) -> Result<Event<'a>, Error> {
    let mut fields = Fields::new(rest);
    let name = fields.first_value();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::Malformed);
    }
    let (mut arg1, mut relay, mut reject) = (None, None, None);
    for (key, value) in fields {
        match key {
            "arg1" => arg1 = Some(value),
            "relay" => relay = Some(parse_relay(value)),
            "reject" | "quarantine" | "discard" => reject = Some(value),
            _ => {}
        }
    }
    let arg1 = arg1.ok_or(Error::Malformed)?;
    Ok(Event::Ruleset(Ruleset { queue_id, name, arg1, relay, reject }))
}

/// `from=<alice@example.org>, size=1234, …, proto=ESMTPS, daemon=MTA, relay=host [ip]`.
fn from<'a>(queue_id: &'a str, rest: &'a str) -> Result<Event<'a>, Error> {
    let mut fields = Fields::new(&rest["from=".len()..]);
    let from = strip_angles(fields.first_value());
    let (mut proto, mut daemon, mut relay, mut nrcpts) = (None, None, None, None);
    for (key, value) in fields {
        match key {
            "nrcpts" => nrcpts = value.parse().ok(),
            "proto" => proto = Some(value),
            "daemon" => daemon = Some(value),
            "relay" => relay = Some(parse_relay(value)),
            _ => {}
        }
    }
    Ok(Event::From(From { queue_id, from, proto, daemon, nrcpts, relay }))
}

/// `to=<bob@example.net>, delay=…, mailer=esmtp, pri=…, relay=host. [ip], dsn=2.0.0, stat=Sent (…)`.
fn delivery<'a>(queue_id: &'a str, rest: &'a str) -> Result<Event<'a>, Error> {
    let mut fields = Fields::new(&rest["to=".len()..]);
    let to = fields.first_value();
    let (mut mailer, mut relay, mut dsn, mut stat) = (None, None, None, None);
    for (key, value) in fields {
        match key {
            "mailer" => mailer = Some(value),
            "relay" => relay = Some(parse_relay(value)),
            "dsn" => dsn = Some(value),
            "stat" => stat = Some(value),
            _ => {}
        }
    }
    let stat = stat.ok_or(Error::Malformed)?;
    Ok(Event::Delivery(Delivery { queue_id, to, mailer, relay, dsn, stat }))
}

/// `host [ip] (may be forged) did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA`.
fn no_mail(rest: &str) -> Option<Event<'_>> {
    const TEMPLATE: &str = " did not issue MAIL/EXPN/VRFY/ETRN during connection to ";
    let idx = rest.find(TEMPLATE)?;
    let relay = parse_relay(&rest[..idx]);
    relay.addr?;
    Some(Event::NoMail { relay, daemon: &rest[idx + TEMPLATE.len()..] })
}

/// After `lost input channel from `: `host [ip] to MTA-v4 after rcpt`.
fn lost_input(rest: &str) -> Event<'_> {
    let (peer, after) = match rest.rfind(" after ") {
        Some(idx) => (&rest[..idx], Some(&rest[idx + " after ".len()..])),
        None => (rest, None),
    };
    let peer = match peer.rfind(" to ") {
        Some(idx) => &peer[..idx],
        None => peer,
    };
    Event::LostInput { relay: parse_relay(peer), after }
}

/// A `relay=` value: `host [ip]`, `[ip]`, `host [ip] (may be forged)`, `host.`, `user@localhost`.
pub fn parse_relay(value: &str) -> Relay<'_> {
    let (value, forged) = match value.strip_suffix(" (may be forged)") {
        Some(value) => (value, true),
        None => (value, false),
    };
    let value = value.trim_end();
    let Some(inner) = value.strip_suffix(']') else {
        return Relay { host: value, addr: None, forged };
    };
    match inner.rfind('[') {
        Some(open) if open + 1 < inner.len() => {
            let host = inner[..open].trim_end();
            Relay { host, addr: Some(&inner[open + 1..]), forged }
        }
        _ => Relay { host: value, addr: None, forged },
    }
}

fn strip_angles(value: &str) -> &str {
    value.strip_prefix('<').and_then(|v| v.strip_suffix('>')).unwrap_or(value)
}

/// The `key=value` fields of a Sendmail message, in order.
///
/// A field ends at `, ` followed by a `key=` (so `to=<a>,<b>` and `ctladdr=<x> (0/0)`
/// stay whole); `stat=` and `reject=` take the rest of the message, because Sendmail
/// always logs them last and their text may contain anything.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    /// The fields of `text`.
    pub fn new(text: &'a str) -> Self {
        Fields { rest: text }
    }

    /// The text up to the first field boundary (the value of a field whose key the caller has
    /// already stripped, or the ruleset name).
    pub fn first_value(&mut self) -> &'a str {
        let end = next_boundary(self.rest);
        let value = &self.rest[..end];
        self.rest = self.rest.get(end + 2..).unwrap_or("");
        value
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        while !self.rest.is_empty() {
            let eq = key_len(self.rest);
            if eq == 0 {
                // Not a `key=`: skip to the next boundary.
                let end = next_boundary(self.rest);
                self.rest = self.rest.get(end + 2..).unwrap_or("");
                continue;
            }
            let key = &self.rest[..eq];
            let after = &self.rest[eq + 1..];
            if matches!(key, "stat" | "reject") {
                self.rest = "";
                return Some((key, after));
            }
            let end = next_boundary(after);
            let value = &after[..end];
            self.rest = after.get(end + 2..).unwrap_or("");
            return Some((key, value));
        }
        None
    }
}

/// The length of the `key` of a `key=` at the start of `text` (letters, digits, `_`, `-`; a
/// letter first: `SSL_error=`), or 0.
fn key_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return 0;
    }
    let n = bytes.iter().take(32).take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-').count();
    if bytes.get(n) == Some(&b'=') {
        n
    } else {
        0
    }
}

/// The index of the next `, key=` boundary in `text`, or its length.
fn next_boundary(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = bytes[from..].windows(2).position(|w| w == b", ") {
        let at = from + pos;
        if key_len(&text[at + 2..]) > 0 {
            return at;
        }
        from = at + 2;
    }
    text.len()
}

/// Decodes xtext (RFC 3461 §4: `+` and two upper-case hex digits stand for one byte), as
/// Sendmail writes the `cert-subject=`/`cert-issuer=` log fields and the `{cert_subject}` and
/// `{cert_issuer}` milter macros. A `+` not followed by two hex digits is kept as it is; bytes
/// that are not UTF-8 become U+FFFD. Never longer than its input.
pub fn xtext_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16).filter(|_| !b.is_ascii_lowercase());
        match (bytes[idx], bytes.get(idx + 1).copied().and_then(hex), bytes.get(idx + 2).copied().and_then(hex)) {
            (b'+', Some(high), Some(low)) => {
                // Two hex digits: at most 0xFF, so the cast keeps the value.
                out.push((high * 16 + low) as u8);
                idx += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                idx += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_decoding_of_hostile_values() {
        for (input, want) in [
            ("", ""),
            ("+", "+"),
            ("+4", "+4"),
            ("+4a", "+4a"),
            ("+41+42", "AB"),
            ("+00", "\u{0}"),
            ("+FF", "\u{fffd}"),
            ("\u{e4}+20", "\u{e4} "),
        ] {
            assert_eq!(xtext_decode(input), want, "{input:?}");
        }
        let long = "+FF".repeat(100);
        assert!(xtext_decode(&long).len() <= long.len());
    }

    fn check(message: &str) -> Event<'_> {
        parse_message(message).unwrap_or_else(|e| panic!("{message}: {e}"))
    }

    #[test]
    fn starttls_client_and_server() {
        let Event::Starttls(tls) = check("STARTTLS=client, relay=mx.example.net., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256") else { panic!() };
        assert_eq!(tls.side, Side::Client);
        assert_eq!(tls.relay, Relay { host: "mx.example.net.", addr: None, forged: false });
        assert_eq!(
            (tls.version, tls.verify, tls.cipher, tls.bits, tls.alg_bits),
            ("TLSv1.3", "OK", "TLS_AES_256_GCM_SHA384", Some(256), Some(256))
        );
        let Event::Starttls(tls) = check("STARTTLS=server, relay=mail.example.org [192.0.2.7] (may be forged), version=TLSv1/SSLv3, verify=NO, cipher=DHE-RSA-AES256-SHA, bits=256/256") else { panic!() };
        assert_eq!(tls.relay, Relay { host: "mail.example.org", addr: Some("192.0.2.7"), forged: true });
        assert_eq!((tls.side, tls.version, tls.verify), (Side::Server, "TLSv1/SSLv3", "NO"));
        // The QID-prefixed variant of milter-enabled builds, and the 8.17 DANE suffixes.
        let Event::Starttls(tls) = check("221820LG031423: STARTTLS=server, relay=[IPv6:2001:db8::25], version=TLSv1.3, verify=FAIL, cipher=TLS_AES_256_GCM_SHA384, bits=256/256, pubkey_fp=ab:cd") else { panic!() };
        assert_eq!(
            (tls.queue_id, tls.relay.addr, tls.verify),
            (Some("221820LG031423"), Some("IPv6:2001:db8::25"), "FAIL")
        );
        let Event::Starttls(tls) = check("STARTTLS=client, relay=mx.example.net., version=TLSv1.2, verify=DANE_FAIL, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256/256, status=all TLSA RRs are unsupported") else { panic!() };
        assert_eq!(tls.verify, "DANE_FAIL");
    }

    #[test]
    fn starttls_errors_and_details() {
        assert_eq!(
            check("STARTTLS=client, error: connect failed=0, SSL_error=5"),
            Event::StarttlsError {
                side: Side::Client,
                reason: None,
                detail: "connect failed=0, SSL_error=5",
                relay: None
            }
        );
        let Event::StarttlsError { side, reason, relay, .. } = check("STARTTLS=server, error: accept failed=0, reason=no shared cipher, SSL_error=1, errno=0, retry=-1, relay=client.example [192.0.2.9]") else { panic!() };
        assert_eq!(side, Side::Server);
        assert_eq!(reason, Some("no shared cipher"));
        assert_eq!(relay.and_then(|r| r.addr), Some("192.0.2.9"));
        assert_eq!(
            check("STARTTLS=client: 140135383:error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889:"),
            Event::StarttlsDetail { side: Some(Side::Client), reason: "certificate verify failed" }
        );
        assert_eq!(
            check("STARTTLS: write error=syscall error (-1), errno=104, get_error=error:00000000:lib(0)::reason(0), retry=99, ssl_err=5"),
            Event::StarttlsDetail { side: None, reason: "write error=syscall error (-1), errno=104, get_error=error:00000000:lib(0)::reason(0), retry=99, ssl_err=5" }
        );
        assert_eq!(
            check("STARTTLS=client, relay=mx.example.net., warning=DANE configured in DNS but no STARTTLS available"),
            Event::StarttlsWarning {
                side: Side::Client,
                relay: Relay { host: "mx.example.net.", addr: None, forged: false },
                warning: "DANE configured in DNS but no STARTTLS available"
            }
        );
        assert_eq!(
            check("STARTTLS=client, cert-subject=/CN=mx.example.net, cert-issuer=/CN=Lab+20CA, verifymsg=self signed certificate in certificate chain"),
            Event::CertInfo {
                side: Side::Client,
                subject: Some("/CN=mx.example.net"),
                issuer: Some("/CN=Lab+20CA"),
                verifymsg: "self signed certificate in certificate chain"
            }
        );
        assert!(matches!(
            check("STARTTLS=client, relay=mx.example.net., field=cn_subject, status=failed to extract CN"),
            Event::StarttlsDetail { .. }
        ));
    }

    #[test]
    fn rulesets() {
        let Event::Ruleset(rule) =
            check("ruleset=tls_server, arg1=SOFTWARE, relay=mx.example.com, reject=403 4.7.0 TLS handshake failed.")
        else {
            panic!()
        };
        assert_eq!(
            (rule.name, rule.arg1, rule.reject),
            ("tls_server", "SOFTWARE", Some("403 4.7.0 TLS handshake failed."))
        );
        assert_eq!(rule.relay.map(|r| r.host), Some("mx.example.com"));
        let Event::Ruleset(rule) = check("s1N706jo003992: ruleset=check_rcpt, arg1=<joaofr@example.pt>, relay=[151.232.63.226], reject=550 5.7.1 <joaofr@example.pt>... Rejected: 151.232.63.226 listed at sbl-xbl.spamhaus.org") else { panic!() };
        assert_eq!((rule.queue_id, rule.name), (Some("s1N706jo003992"), "check_rcpt"));
        assert_eq!(rule.relay.and_then(|r| r.addr), Some("151.232.63.226"));
        assert_eq!(parse_message("ruleset=tls_server, relay=x"), Err(Error::Malformed));
    }

    #[test]
    fn from_and_to_lines() {
        let Event::From(from) = check("rA37ZTSC026254: from=<davaojk25@domain.com>, size=0, class=0, nrcpts=0, bodytype=8BITMIME, proto=ESMTP, daemon=MTA, relay=163.23.32.95.dsl-dynamic.vsi.ru [95.32.23.163]") else { panic!() };
        assert_eq!(
            (from.queue_id, from.from, from.proto, from.daemon),
            ("rA37ZTSC026254", "davaojk25@domain.com", Some("ESMTP"), Some("MTA"))
        );
        assert_eq!(from.nrcpts, Some(0));
        assert_eq!(from.relay.and_then(|r| r.addr), Some("95.32.23.163"));
        let Event::Delivery(to) = check("4A3DZCx1012345: to=<bob@example.net>,<carol@example.net>, ctladdr=<root@lab> (0/0), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120000, relay=mx.example.net. [192.0.2.25], dsn=2.0.0, stat=Sent (Ok: queued as 9F3A2, id=x)") else { panic!() };
        assert_eq!(to.recipients().collect::<Vec<_>>(), ["bob@example.net", "carol@example.net"]);
        assert_eq!(
            (to.mailer, to.dsn, to.stat, to.sent()),
            (Some("esmtp"), Some("2.0.0"), "Sent (Ok: queued as 9F3A2, id=x)", true)
        );
        assert_eq!(to.relay, Some(Relay { host: "mx.example.net.", addr: Some("192.0.2.25"), forged: false }));
        assert_eq!(parse_message("4A3DZCx1012345: to=<bob@example.net>, delay=00:00:01"), Err(Error::Malformed));
    }

    #[test]
    fn split_pieces_and_session_ends() {
        assert_eq!(
            check("4A3DZCx1012345[1]: to=<a@example.net>,<b@example.net>, ... ..."),
            Event::Piece {
                queue_id: "4A3DZCx1012345",
                seq: 1,
                text: "to=<a@example.net>,<b@example.net>, ...",
                more: true
            }
        );
        assert_eq!(
            check("4A3DZCx1012345[2]: log terminated, too many parts"),
            Event::Piece { queue_id: "4A3DZCx1012345", seq: 2, text: "log terminated, too many parts", more: false }
        );
        assert_eq!(
            check("x2TMXH7Y023221: internettl.org [104.152.52.29] (may be forged) did not issue MAIL/EXPN/VRFY/ETRN during connection to TLSMTA"),
            Event::NoMail { relay: Relay { host: "internettl.org", addr: Some("104.152.52.29"), forged: true }, daemon: "TLSMTA" }
        );
        assert_eq!(
            check("56VFYCxS024291: lost input channel from mail.aqicn.org [139.162.120.196] to MTA-v4 after rcpt"),
            Event::LostInput {
                relay: Relay { host: "mail.aqicn.org", addr: Some("139.162.120.196"), forged: false },
                after: Some("rcpt")
            }
        );
        for ignored in [
            "s1GNXHYB005133: [190.5.230.178]: possible SMTP attack: command=AUTH, count=5",
            "rA37ZTSC026250: <arhipov@domain.com>... No such user here",
            "starting daemon (8.17.1.9): SMTP+queueing@00:10:00",
            "",
        ] {
            assert_eq!(check(ignored), Event::Ignored, "{ignored}");
        }
    }

    #[test]
    fn tags() {
        for tag in ["sendmail", "sm-mta", "sm-msp-queue", "sm-acceptingconnections", "sendmail-out", "sm-mta-in"] {
            assert!(is_tag(tag), "{tag}");
        }
        for tag in ["smtpd", "postfix/smtp", "sm", "exim4", "sendmailx"] {
            assert!(!is_tag(tag), "{tag}");
        }
    }

    #[test]
    fn every_prefix_and_hostile_input_is_safe() {
        let lines = [
            "STARTTLS=client, relay=mx.example.net., version=TLSv1.3, verify=OK, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
            "STARTTLS=server, error: accept failed=0, reason=no shared cipher, SSL_error=1, errno=0, retry=-1, relay=c [192.0.2.9]",
            "ruleset=tls_server, arg1=SOFTWARE, relay=mx.example.com, reject=403 4.7.0 TLS handshake failed.",
            "rA37ZTSC026254: from=<a@b>, size=0, proto=ESMTPS, daemon=MTA, relay=h [IPv6:2001:DB8::1] (may be forged)",
            "4A3DZCx1012345[12]: to=<a@example.net>, mailer=esmtp, relay=mx. [192.0.2.25], dsn=2.0.0, stat=Sent (ok) ...",
        ];
        for line in lines {
            for end in (0..=line.len()).filter(|end| line.is_char_boundary(*end)) {
                let _ = parse_message(&line[..end]);
            }
        }
        let long = format!("STARTTLS=client, relay={}, version=, verify=, cipher=, bits=/", "x, ".repeat(10_000));
        assert_eq!(parse_message(&long), Err(Error::Malformed));
        for hostile in [
            "STARTTLS=client, ",
            "ruleset=, arg1=",
            "AAAAAA[99999999999]: x",
            "AAAAAA[]: ",
            "relay=] [",
            "\u{fffd}\u{fffd}: to=, stat=",
            "ÄÄÄÄÄÄ: from=<",
            "STARTTLS=server, relay=[, version=é, verify=OK, cipher=é, bits=é/é",
        ] {
            let _ = parse_message(hostile);
            let _ = parse_relay(hostile);
        }
    }
}
