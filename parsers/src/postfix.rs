//! The Postfix message grammar: TLS summaries, TLS failures, delivery lines and smtpd sessions.
//!
//! Input is the message part of a line (after `postfix/smtp[1234]: `) and the daemon name taken
//! from the tag ([`crate::Header::service`]). Output is an [`Event`] borrowing from the message.
//! The templates and their sources are catalogued in research/FORMATS.md §2; each parser below
//! quotes one real line.
//!
//! Messages of a known daemon that carry nothing about TLS or delivery (`qmgr`, `cleanup`, SASL
//! warnings, `host … said: …`) become [`Event::Ignored`]. A message that starts like a line we
//! know but breaks its grammar (a reporter truncated it) is [`Error::Malformed`].

use nom::bytes::complete::take_till;
use nom::{IResult, Parser};

use crate::peer::{peer, Peer};
use crate::Error;

/// A Postfix daemon, from the last component of the program tag.
///
/// Only the daemons whose messages this grammar reads have their own variant; every other
/// daemon of a Postfix installation is [`Daemon::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    /// `smtp`: the SMTP client.
    Smtp,
    /// `lmtp`: the LMTP client.
    Lmtp,
    /// `smtpd`: the SMTP server.
    Smtpd,
    /// `tlsproxy`: the TLS proxy of postscreen and of `smtp_tls_connection_reuse`.
    Tlsproxy,
    /// `postscreen`.
    Postscreen,
    /// `error` and `retry`: deliveries to dead destinations, `relay=none`.
    Error,
    /// `discard`.
    Discard,
    /// `local`, `virtual`, `pipe`: local deliveries.
    Local,
    /// Any other Postfix daemon (`qmgr`, `cleanup`, `pickup`, …).
    Other,
}

impl Daemon {
    /// The daemon for a tag's last component, or `None` when it is not a Postfix daemon name.
    pub fn from_service(service: &str) -> Option<Daemon> {
        let daemon = match service {
            "smtp" => Daemon::Smtp,
            "smtpd" => Daemon::Smtpd,
            "lmtp" => Daemon::Lmtp,
            "tlsproxy" => Daemon::Tlsproxy,
            "postscreen" => Daemon::Postscreen,
            "error" | "retry" => Daemon::Error,
            "discard" => Daemon::Discard,
            "local" | "virtual" | "pipe" => Daemon::Local,
            "qmgr" | "oqmgr" | "cleanup" | "pickup" | "bounce" | "defer" | "trace" | "anvil" | "master" | "scache"
            | "showq" | "tlsmgr" | "verify" | "flush" | "dnsblog" | "postlogd" | "proxymap" | "proxywrite"
            | "sendmail" | "postdrop" | "postqueue" | "postsuper" | "postmap" | "postfix-script" | "spawn"
            | "policyscreen" | "trivial-rewrite" | "smtp-sink" | "qmqpd" => Daemon::Other,
            _ => return None,
        };
        Some(daemon)
    }
}

/// True for the daemon names of a Postfix installation (the last component of the tag).
pub fn is_daemon(service: &str) -> bool {
    Daemon::from_service(service).is_some()
}

/// What one Postfix message says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// `Verified TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher …`
    TlsConnection(TlsConnection<'a>),
    /// `SSL_connect error to host[addr]:port: -1` (client) or `SSL_accept error from host[addr]: …` (server).
    HandshakeError {
        /// Which side we were.
        side: Side,
        /// The remote endpoint.
        peer: Peer<'a>,
        /// What follows the peer: `-1`, `0`, `lost connection`, `Connection reset by peer`.
        detail: &'a str,
    },
    /// `warning: TLS library problem: error:0A000086:SSL routines::certificate verify failed:…`
    TlsLibraryProblem {
        /// The OpenSSL reason text (`certificate verify failed`), or the whole detail when the
        /// error string has an unknown shape.
        reason: &'a str,
        /// Everything after `TLS library problem: `.
        detail: &'a str,
    },
    /// `certificate verification failed for host[addr]:port: untrusted issuer /CN=…`, and the
    /// `server `/`client `/`CA ` prefixed forms.
    CertVerifyFailed {
        /// The remote endpoint.
        peer: Peer<'a>,
        /// The verification error (`certificate has expired`, `self-signed certificate`, …).
        reason: &'a str,
    },
    /// `host[addr]:port: re-using session with untrusted peer credential, look for details earlier in the log`
    UntrustedSessionReuse {
        /// The remote endpoint.
        peer: Peer<'a>,
    },
    /// `7EE668039: Server certificate not verified` (or `not trusted`, Postfix < 3.6): the TLS
    /// connection just logged did not meet the policy and another MX is tried.
    CertificateRejected {
        /// The queue id.
        queue_id: &'a str,
        /// `Server certificate not verified` or `Server certificate not trusted`.
        reason: &'a str,
    },
    /// `7EE668039: <reason>` from the client, other than a certificate rejection: Postfix's
    /// `smtp_bulk_fail` logs this, once per message, when a soft error made it skip a server that
    /// is not the last MX (`TLS is required, but was not offered by host mx1.example[192.0.2.1]`,
    /// `Cannot start TLS: handshake failure`, `lost connection with …`, `host … said: 4…`); the
    /// recipients stay queued for the next server.
    HostSkipped {
        /// The queue id.
        queue_id: &'a str,
        /// The reason as logged.
        reason: &'a str,
    },
    /// `QID: to=<…>, relay=…, …, status=sent (…)`
    Delivery(Delivery<'a>),
    /// `discarding EHLO keywords: STARTTLS` (no host: it belongs to the next delivery of the pid).
    DiscardedEhloKeywords {
        /// The discarded keywords as logged.
        keywords: &'a str,
        /// True when STARTTLS is among them.
        starttls: bool,
    },
    /// `Host offered STARTTLS: [mx.example.net]` (level `none` with `smtp_tls_note_starttls_offer`).
    HostOfferedStarttls {
        /// The host name inside the brackets.
        host: &'a str,
    },
    /// `TLSRPT: status=failure, domain=example.org, receiving_mx=mail.example.org[ipaddr], failure_type=…`
    Tlsrpt(Tlsrpt<'a>),
    /// `connect from host[addr]`
    Connect {
        /// The client.
        peer: Peer<'a>,
    },
    /// `disconnect from host[addr] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7`
    Disconnect {
        /// The client.
        peer: Peer<'a>,
        /// The command counters (Postfix ≥ 3.0); empty on older versions.
        counters: Counters,
    },
    /// `lost connection after STARTTLS from host[addr]` and `timeout after …`, `too many errors after …`.
    LostConnection {
        /// `lost connection`, `timeout` or `too many errors`.
        what: &'a str,
        /// The last SMTP command (`STARTTLS`, `CONNECT`, `DATA`, …).
        after: &'a str,
        /// The client.
        peer: Peer<'a>,
    },
    /// `QID: client=host[addr]`: a message was opened in this smtpd session.
    Client {
        /// The queue id.
        queue_id: &'a str,
        /// The client.
        peer: Peer<'a>,
    },
    /// `NOQUEUE: reject: RCPT from host[addr]: 530 5.7.0 Must issue a STARTTLS command first; …`
    Reject {
        /// The client.
        peer: Peer<'a>,
        /// The reply text after the peer.
        reason: &'a str,
        /// True when the reply asks for STARTTLS first (`Must issue a STARTTLS command first`).
        starttls_required: bool,
    },
    /// `NOQUEUE: abort: TLS from host[addr]: Client certificate not trusted`
    TlsAbort {
        /// The client.
        peer: Peer<'a>,
        /// `Client certificate not trusted`, `No client certificate presented`.
        reason: &'a str,
    },
    /// `warning: Refusing STARTTLS request from host[addr] for service smtpd`, and the TLS session
    /// rate limit warning.
    StarttlsRefused {
        /// The client.
        peer: Peer<'a>,
        /// The whole warning text.
        reason: &'a str,
    },
    /// The peer certificate, logged before the TLS summary at `smtp_tls_loglevel`/
    /// `smtpd_tls_loglevel` ≥ 2 (or with the `peercert`/`certmatch` log mask):
    /// `mx.example.net[192.0.2.25]:25: subject_CN=mx.example.net, issuer_CN=R3,
    /// fingerprint=AB:…, pkey_fingerprint=CD:…` (client; the server writes `issuer=`), and the
    /// Postfix 2.x form `Verified: subject_CN=…, issuer=…` without the peer.
    PeerCertificate(PeerCertificate<'a>),
    /// A message of a Postfix daemon that tells nothing about TLS or SMTP delivery.
    Ignored,
}

/// What Postfix logs of a peer certificate ([`Event::PeerCertificate`]). Empty values (Postfix
/// logs `subject_CN=` with nothing when the certificate has no CN) are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertificate<'a> {
    /// The remote endpoint; `None` in the Postfix 2.x form, which joins by process.
    pub peer: Option<Peer<'a>>,
    /// The subject's common name.
    pub subject_cn: Option<&'a str>,
    /// The issuer's common name.
    pub issuer_cn: Option<&'a str>,
    /// The certificate fingerprint (`smtp_tls_fingerprint_digest`, hex pairs with colons).
    pub fingerprint: Option<&'a str>,
    /// The public-key fingerprint.
    pub pkey_fingerprint: Option<&'a str>,
}

/// Client side (`to`, outbound) or server side (`from`, inbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// We were the SMTP client (`postfix/smtp`, `postfix/lmtp`, tlsproxy `to`).
    Client,
    /// We were the SMTP server (`postfix/smtpd`, tlsproxy `from`).
    Server,
}

/// The first word of the TLS summary (`tls_misc.c` `tls_log_summary()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustClass {
    /// The peer presented no credential.
    Anonymous,
    /// A credential that did not validate, or was not checked.
    Untrusted,
    /// The chain validated, no name match was required.
    Trusted,
    /// The chain validated and matched the policy (DANE, fingerprint, `verify`, `secure`).
    Verified,
}

/// `Trusted TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher
/// TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConnection<'a> {
    /// Anonymous, Untrusted, Trusted or Verified.
    pub class: TrustClass,
    /// `reused`: an SMTP connection taken from the cache, no new handshake.
    pub reused: bool,
    /// `to` (client) or `from` (server).
    pub side: Side,
    /// The remote endpoint.
    pub peer: Peer<'a>,
    /// The SNI name after ` to ` on the server side (Postfix ≥ 3.4).
    pub sni: Option<&'a str>,
    /// `TLSv1.3`, `TLSv1.2`, …
    pub protocol: &'a str,
    /// OpenSSL cipher name.
    pub cipher: &'a str,
    /// Bits in use.
    pub bits: u32,
    /// Bits of the algorithm.
    pub alg_bits: u32,
    /// The group after `key-exchange` (`X25519`, `ECDHE`), Postfix ≥ 3.4.
    pub key_exchange: Option<&'a str>,
    /// The algorithm after `server-signature` (`RSA-PSS`, `ECDSA`, `ED25519`).
    pub server_signature: Option<&'a str>,
}

/// `status=` of a delivery line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status<'a> {
    /// Delivered.
    Sent,
    /// Will be retried.
    Deferred,
    /// Returned to the sender.
    Bounced,
    /// Too long in the queue.
    Expired,
    /// Address verification: undeliverable (also `undeliverable-but-not-cached`).
    Undeliverable,
    /// Address verification: deliverable.
    Deliverable,
    /// A value this grammar does not know.
    Other(&'a str),
}

/// Where a delivery went (`relay=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relay<'a> {
    /// `host[addr]:port` (SMTP/LMTP over TCP) or `host[private/dovecot-lmtp]` (LMTP over a socket).
    Peer(Peer<'a>),
    /// `relay=none`: no connection was made (dead destination, address verification, discard).
    None,
    /// A transport name: `local`, `virtual`, `dovecot`, ….
    Transport(&'a str),
}

/// `7EE668039: to=<admin@example.com>, relay=127.0.0.1[127.0.0.1]:2525, delay=3.6,
/// delays=0.2/0.02/0.04/3.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 153053D)`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The queue id.
    pub queue_id: &'a str,
    /// The recipient, without angle brackets.
    pub to: &'a str,
    /// `orig_to=`, when logged.
    pub orig_to: Option<&'a str>,
    /// `relay=`.
    pub relay: Relay<'a>,
    /// `conn_use=N`: the N-th delivery over a cached connection.
    pub conn_use: Option<u32>,
    /// `tls=` (Postfix ≥ 3.11), the TLS feature status: `may`, `may:none`, `dane`, `dane:halfdane`, …
    pub tls: Option<&'a str>,
    /// `dsn=`.
    pub dsn: &'a str,
    /// `status=`.
    pub status: Status<'a>,
    /// The text in parentheses after the status.
    pub reason: &'a str,
}

/// `TLSRPT: status=…, domain=…, receiving_mx=host[addr][, failure_type=…][, failure_reason=…]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlsrpt<'a> {
    /// `status=success`.
    pub success: bool,
    /// The policy domain.
    pub domain: &'a str,
    /// The MX.
    pub receiving_mx: Peer<'a>,
    /// `failure_type=` (`starttls_not_supported`, `validation_failure`, …).
    pub failure_type: Option<&'a str>,
    /// `failure_reason=`.
    pub failure_reason: Option<&'a str>,
}

/// smtpd's per-session command counters, `name=ok[/total]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counters {
    /// True when the line had counters (`commands=` present).
    pub present: bool,
    /// `starttls=ok/total`, when STARTTLS was tried.
    pub starttls: Option<(u32, u32)>,
    /// `mail=ok/total`.
    pub mail: Option<(u32, u32)>,
    /// `data=ok/total` (or `bdat=`).
    pub data: Option<(u32, u32)>,
}

/// Parses one Postfix message of daemon `service`.
///
/// ```
/// use parsers::postfix::{parse_message, Event, TrustClass};
/// let msg = "Trusted TLS connection established to mx.example.net[192.0.2.25]:25: \
///            TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)";
/// let Ok(Event::TlsConnection(tls)) = parse_message("smtp", msg) else { panic!() };
/// assert_eq!((tls.class, tls.protocol, tls.bits), (TrustClass::Trusted, "TLSv1.2", 256));
/// ```
pub fn parse_message<'a>(service: &str, message: &'a str) -> Result<Event<'a>, Error> {
    match Daemon::from_service(service) {
        Some(daemon) => parse_event(daemon, message),
        None => Ok(Event::Ignored),
    }
}

/// [`parse_message`] for a daemon already recognised.
#[inline]
pub fn parse_event(daemon: Daemon, message: &str) -> Result<Event<'_>, Error> {
    match daemon {
        Daemon::Smtp | Daemon::Lmtp => client(message),
        Daemon::Smtpd => server(message),
        Daemon::Tlsproxy => tlsproxy(message),
        Daemon::Error | Daemon::Discard | Daemon::Local => queue_message(message, client_queue_message),
        Daemon::Postscreen | Daemon::Other => Ok(Event::Ignored),
    }
}

/// Messages of `postfix/smtp` and `postfix/lmtp`.
fn client(message: &str) -> Result<Event<'_>, Error> {
    if let Some(event) = tls_or_library(message)? {
        return Ok(event);
    }
    if let Some(rest) = message.strip_prefix("SSL_connect error to ") {
        return handshake_error(Side::Client, rest);
    }
    if let Some(event) = cert_verify_failed(message)? {
        return Ok(event);
    }
    if let Some(rest) = message.strip_prefix("discarding EHLO keywords: ") {
        let starttls = rest.split_ascii_whitespace().any(|word| word.eq_ignore_ascii_case("starttls"));
        return Ok(Event::DiscardedEhloKeywords { keywords: rest, starttls });
    }
    if let Some(rest) = message.strip_prefix("Host offered STARTTLS: [") {
        let host = rest.strip_suffix(']').ok_or(Error::Malformed)?;
        return Ok(Event::HostOfferedStarttls { host });
    }
    if let Some(rest) = message.strip_prefix("TLSRPT: ") {
        return tlsrpt(rest);
    }
    if message.ends_with(": re-using session with untrusted peer credential, look for details earlier in the log") {
        let (_, peer) = peer(message).map_err(|_| Error::Malformed)?;
        return Ok(Event::UntrustedSessionReuse { peer });
    }
    queue_message(message, client_queue_message)
}

/// The part after `QID: ` of a client message.
fn client_queue_message<'a>(queue_id: &'a str, rest: &'a str) -> Result<Event<'a>, Error> {
    if let Some(fields) = rest.strip_prefix("to=") {
        return delivery(queue_id, fields).map(Event::Delivery);
    }
    if rest == "Server certificate not verified" || rest == "Server certificate not trusted" {
        return Ok(Event::CertificateRejected { queue_id, reason: rest });
    }
    // `enabling PIX workarounds: … for host[addr]:port` is the one other queue-id message;
    // `Verified: …` is a Postfix 2.x certificate line that is not one.
    if rest.is_empty() || rest.starts_with("enabling PIX workarounds") || matches!(queue_id, "Verified" | "Unverified")
    {
        return Ok(Event::Ignored);
    }
    Ok(Event::HostSkipped { queue_id, reason: rest })
}

/// Messages of `postfix/smtpd` (any service name: `smtps/smtpd`, `submission/smtpd`).
fn server(message: &str) -> Result<Event<'_>, Error> {
    if let Some(rest) = message.strip_prefix("connect from ") {
        let (_, peer) = peer(rest).map_err(|_| Error::Malformed)?;
        return Ok(Event::Connect { peer });
    }
    if let Some(rest) = message.strip_prefix("disconnect from ") {
        let (rest, peer) = peer(rest).map_err(|_| Error::Malformed)?;
        return Ok(Event::Disconnect { peer, counters: counters(rest) });
    }
    if let Some(event) = tls_or_library(message)? {
        return Ok(event);
    }
    if let Some(rest) = message.strip_prefix("SSL_accept error from ") {
        return handshake_error(Side::Server, rest);
    }
    if let Some(event) = lost_connection(message)? {
        return Ok(event);
    }
    if let Some(rest) = message.strip_prefix("warning: ") {
        for prefix in ["Refusing STARTTLS request from ", "New TLS session rate limit exceeded: "] {
            if let Some(after) = rest.strip_prefix(prefix) {
                let at = after.find(" from ").map_or(0, |idx| idx + " from ".len());
                let text = if prefix.starts_with("Refusing") { after } else { &after[at..] };
                let (_, peer) = peer(text).map_err(|_| Error::Malformed)?;
                return Ok(Event::StarttlsRefused { peer, reason: rest });
            }
        }
        return Ok(Event::Ignored);
    }
    if let Some(event) = cert_verify_failed(message)? {
        return Ok(event);
    }
    queue_message(message, server_queue_message)
}

/// The part after `QID: ` or `NOQUEUE: ` of a server message.
fn server_queue_message<'a>(queue_id: &'a str, rest: &'a str) -> Result<Event<'a>, Error> {
    if let Some(rest) = rest.strip_prefix("client=") {
        let (_, peer) = peer(rest).map_err(|_| Error::Malformed)?;
        return Ok(Event::Client { queue_id, peer });
    }
    if let Some(rest) = rest.strip_prefix("reject: ") {
        return reject(rest);
    }
    if let Some(rest) = rest.strip_prefix("abort: TLS from ") {
        let (rest, peer) = peer(rest).map_err(|_| Error::Malformed)?;
        let reason = rest.strip_prefix(": ").unwrap_or(rest);
        return Ok(Event::TlsAbort { peer, reason });
    }
    if let Some(event) = lost_connection(rest)? {
        return Ok(event);
    }
    Ok(Event::Ignored)
}

/// Messages of `postfix/tlsproxy`: the same TLS lines as smtp/smtpd, plus CONNECT/DISCONNECT.
fn tlsproxy(message: &str) -> Result<Event<'_>, Error> {
    if let Some(event) = tls_or_library(message)? {
        return Ok(event);
    }
    if let Some(rest) = message.strip_prefix("SSL_connect error to ") {
        return handshake_error(Side::Client, rest);
    }
    if let Some(rest) = message.strip_prefix("SSL_accept error from ") {
        return handshake_error(Side::Server, rest);
    }
    if let Some(event) = cert_verify_failed(message)? {
        return Ok(event);
    }
    Ok(Event::Ignored)
}

/// The TLS summary line or the `TLS library problem` warning, which both sides log.
fn tls_or_library(message: &str) -> Result<Option<Event<'_>>, Error> {
    let class = match message.as_bytes().first() {
        Some(b'A') if message.starts_with("Anonymous TLS connection ") => TrustClass::Anonymous,
        Some(b'U') if message.starts_with("Untrusted TLS connection ") => TrustClass::Untrusted,
        Some(b'T') if message.starts_with("Trusted TLS connection ") => TrustClass::Trusted,
        Some(b'V') if message.starts_with("Verified TLS connection ") => TrustClass::Verified,
        Some(b'w') => {
            return Ok(message.strip_prefix("warning: TLS library problem: ").map(library_problem));
        }
        _ => return Ok(None),
    };
    let class_len = match class {
        TrustClass::Anonymous | TrustClass::Untrusted => "Anonymous".len(),
        TrustClass::Trusted => "Trusted".len(),
        TrustClass::Verified => "Verified".len(),
    };
    let after_class = &message[class_len + " TLS connection ".len()..];
    match tls_summary(class, after_class) {
        Ok((_, tls)) => Ok(Some(Event::TlsConnection(tls))),
        Err(_) => Err(Error::Malformed),
    }
}

/// After `<Class> TLS connection `: `established to mx[192.0.2.25]:25: TLSv1.3 with cipher X (256/256 bits)…`
fn tls_summary(class: TrustClass, input: &str) -> IResult<&str, TlsConnection<'_>> {
    // Written with prefix checks rather than combinators: every TLS line comes through here.
    let fail = || nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Tag));
    let (reused, rest) = match (input.strip_prefix("established "), input.strip_prefix("reused ")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        _ => return Err(fail()),
    };
    let (side, rest) = match (rest.strip_prefix("to "), rest.strip_prefix("from ")) {
        (Some(rest), _) => (Side::Client, rest),
        (None, Some(rest)) => (Side::Server, rest),
        _ => return Err(fail()),
    };
    let (rest, peer) = peer(rest)?;
    let (sni, rest) = match rest.strip_prefix(" to ") {
        Some(after) => {
            let end = after.find([':', ' ']).unwrap_or(after.len());
            if end == 0 {
                return Err(fail());
            }
            (Some(&after[..end]), &after[end..])
        }
        None => (None, rest),
    };
    let rest = rest.strip_prefix(": ").ok_or_else(fail)?;
    let (protocol, rest) = word_until_space(rest).ok_or_else(fail)?;
    let rest = rest.strip_prefix(" with cipher ").ok_or_else(fail)?;
    let (cipher, rest) = word_until_space(rest).ok_or_else(fail)?;
    let rest = rest.strip_prefix(" (").ok_or_else(fail)?;
    let (bits, rest) = number(rest).ok_or_else(fail)?;
    let rest = rest.strip_prefix('/').ok_or_else(fail)?;
    let (alg_bits, rest) = number(rest).ok_or_else(fail)?;
    let extra = rest.strip_prefix(" bits)").ok_or_else(fail)?;
    let (key_exchange, server_signature) = tls_extras(extra);
    let tls = TlsConnection {
        class,
        reused,
        side,
        peer,
        sni,
        protocol,
        cipher,
        bits,
        alg_bits,
        key_exchange,
        server_signature,
    };
    Ok(("", tls))
}

/// A non-empty run of characters up to the next space (or the end).
fn word_until_space(text: &str) -> Option<(&str, &str)> {
    let end = crate::scan::find_any(text.as_bytes(), [b' ']).unwrap_or(text.len());
    (end > 0).then(|| (&text[..end], &text[end..]))
}

/// A decimal `u32` (digits only; overflow is no number).
fn number(text: &str) -> Option<(u32, &str)> {
    let end = text.bytes().take_while(u8::is_ascii_digit).count();
    let value = text.get(..end).filter(|d| !d.is_empty())?.parse().ok()?;
    Some((value, &text[end..]))
}

/// The words after `key-exchange` and `server-signature` in the TLS 1.3 suffix
/// (` key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256`).
/// `key-exchange` always comes first when present.
fn tls_extras(text: &str) -> (Option<&str>, Option<&str>) {
    fn word(text: &str) -> Option<&str> {
        word_until_space(text).map(|(word, _)| word)
    }
    if text.is_empty() {
        return (None, None);
    }
    let (key_exchange, rest) = match text.strip_prefix(" key-exchange ").and_then(word_until_space) {
        Some((word, rest)) => (Some(word), rest),
        None => (None, text),
    };
    // `server-signature` follows `key-exchange` directly; search only when it does not.
    let server_signature = match rest.strip_prefix(" server-signature ") {
        Some(after) => word(after),
        None => text.find(" server-signature ").and_then(|at| word(&text[at + " server-signature ".len()..])),
    };
    (key_exchange, server_signature)
}

/// `error:0A000086:SSL routines::certificate verify failed:../ssl/statem/statem_clnt.c:1889:`
/// (OpenSSL 3) or `error:14094410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:s3_pkt.c:1493:SSL alert number 40`
/// (OpenSSL 1.x); very old Postfix put `<pid>:` in front. The reason is the fifth field.
fn library_problem(detail: &str) -> Event<'_> {
    let from_error = detail.find("error:").map_or(detail, |idx| &detail[idx..]);
    let reason = from_error.split(':').nth(4).filter(|reason| !reason.is_empty()).unwrap_or(detail);
    Event::TlsLibraryProblem { reason, detail }
}

/// After `SSL_connect error to ` / `SSL_accept error from `: `host[addr]:port: -1`.
fn handshake_error(side: Side, input: &str) -> Result<Event<'_>, Error> {
    let (rest, peer) = peer(input).map_err(|_| Error::Malformed)?;
    let detail = rest.strip_prefix(": ").or_else(|| rest.strip_prefix(':')).unwrap_or(rest);
    Ok(Event::HandshakeError { side, peer, detail })
}

/// `[server |client |CA ]certificate verification failed for host[addr]:port: reason`.
fn cert_verify_failed(message: &str) -> Result<Option<Event<'_>>, Error> {
    const TEMPLATE: &str = "certificate verification failed for ";
    let Some(rest) = ["", "server ", "client ", "CA "]
        .into_iter()
        .find_map(|prefix| message.strip_prefix(prefix).and_then(|m| m.strip_prefix(TEMPLATE)))
    else {
        return Ok(None);
    };
    let (rest, peer) = peer(rest).map_err(|_| Error::Malformed)?;
    let reason = rest.strip_prefix(": ").unwrap_or(rest);
    Ok(Some(Event::CertVerifyFailed { peer, reason }))
}

/// `lost connection after STARTTLS from host[addr]`, `timeout after …`, `too many errors after …`.
fn lost_connection(message: &str) -> Result<Option<Event<'_>>, Error> {
    let Some(what) = ["lost connection", "timeout", "too many errors"]
        .into_iter()
        .find(|what| message.starts_with(what) && message[what.len()..].starts_with(" after "))
    else {
        return Ok(None);
    };
    let rest = &message[what.len() + " after ".len()..];
    let (after, rest) = split_at_literal(rest, " from ").ok_or(Error::Malformed)?;
    let (_, peer) = peer(rest).map_err(|_| Error::Malformed)?;
    // A slice of the message, not the literal: every field borrows from the input.
    let what = &message[..what.len()];
    Ok(Some(Event::LostConnection { what, after, peer }))
}

/// After `reject: `: `RCPT from host[addr]: 530 5.7.0 Must issue a STARTTLS command first; …`
fn reject(input: &str) -> Result<Event<'_>, Error> {
    let (_, rest) = split_at_literal(input, " from ").ok_or(Error::Malformed)?;
    let (rest, peer) = peer(rest).map_err(|_| Error::Malformed)?;
    let reason = rest.strip_prefix(": ").unwrap_or(rest);
    let starttls_required = crate::scan::find(reason.as_bytes(), b"Must issue a STARTTLS command first").is_some();
    Ok(Event::Reject { peer, reason, starttls_required })
}

/// `text` split around the first `literal` (ASCII): what comes before it and what follows it.
fn split_at_literal<'a>(text: &'a str, literal: &str) -> Option<(&'a str, &'a str)> {
    let at = crate::scan::find(text.as_bytes(), literal.as_bytes())?;
    // The match starts and ends next to ASCII bytes: both are character boundaries.
    Some((&text[..at], &text[at + literal.len()..]))
}

/// `ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7` (`smtpd_format_cmd_stats`).
fn counters(input: &str) -> Counters {
    let mut counters = Counters::default();
    // `split_ascii_whitespace`, with the separators found eight bytes at a time: the iterator
    // tested byte by byte and cost about a third of every `disconnect` line (callgrind).
    let mut rest = input;
    while !rest.is_empty() {
        let end = crate::scan::find_any(rest.as_bytes(), [b' ', b'\t', b'\n', b'\x0c', b'\r']).unwrap_or(rest.len());
        // ASCII separators: `end` and `end + 1` are character boundaries.
        let item = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        // Five names matter; their first bytes rule out the others (`ehlo=`, `rcpt=`, `quit=`,
        // …) before any split.
        let Some(&first) = item.as_bytes().first() else { continue };
        let name = match first {
            b's' => "starttls=",
            b'm' => "mail=",
            b'd' => "data=",
            b'b' => "bdat=",
            b'c' => "commands=",
            _ => continue,
        };
        let Some(value) = item.strip_prefix(name) else { continue };
        let (ok, total) = match crate::split_byte(value, b'/') {
            Some((ok, total)) => (ok.parse().ok(), total.parse().ok()),
            None => (value.parse().ok(), value.parse().ok()),
        };
        let (Some(ok), Some(total)) = (ok, total) else { continue };
        match first {
            b's' => counters.starttls = Some((ok, total)),
            b'm' => counters.mail = Some((ok, total)),
            b'd' | b'b' => counters.data = Some((ok, total)),
            _ => counters.present = true,
        }
    }
    counters
}

/// Splits `QID: rest` or `NOQUEUE: rest` and hands both to `then`; other messages are ignored.
fn queue_message<'a>(
    message: &'a str,
    then: impl FnOnce(&'a str, &'a str) -> Result<Event<'a>, Error>,
) -> Result<Event<'a>, Error> {
    match queue_id(message) {
        // `Verified` and `Unverified` look like queue ids: the Postfix 2.x certificate line.
        Ok((rest, "Verified" | "Unverified")) if rest.starts_with("subject_CN=") => no_queue_id(message),
        Ok((rest, queue_id)) => then(queue_id, rest),
        Err(_) => no_queue_id(message),
    }
}

/// `value` trimmed, `None` when empty.
fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// A message that is not a queue-id message: a peer certificate line, or nothing we use.
/// Tried only after the queue id failed, so the frequent delivery lines pay nothing for it.
fn no_queue_id(message: &str) -> Result<Event<'_>, Error> {
    let (peer, fields) = match message.strip_prefix("Verified: ").or_else(|| message.strip_prefix("Unverified: ")) {
        Some(rest) if rest.starts_with("subject_CN=") => (None, rest),
        Some(_) => return Ok(Event::Ignored),
        None => {
            // `host[addr]:port: subject_CN=…`: the peer ends in `]` or `]:port`.
            let Some(at) = message.find("]: subject_CN=").or_else(|| {
                let at = message.find(": subject_CN=")?;
                message[..at].rfind("]:").map(|_| at)
            }) else {
                return Ok(Event::Ignored);
            };
            let at = if message.as_bytes()[at] == b']' { at + 1 } else { at };
            let (rest, peer) = peer(&message[..at]).map_err(|_| Error::Malformed)?;
            if !rest.is_empty() {
                return Err(Error::Malformed);
            }
            (Some(peer), &message[at + 2..])
        }
    };
    let fields = fields.strip_prefix("subject_CN=").ok_or(Error::Malformed)?;
    // Right to left: the fingerprints are hex, the names may hold anything but these labels.
    let (fields, pkey_fingerprint) = match fields.rfind(", pkey_fingerprint=") {
        Some(at) => (&fields[..at], non_empty(&fields[at + ", pkey_fingerprint=".len()..])),
        None => (fields, None),
    };
    let (fields, fingerprint) = match fields.rfind(", fingerprint=") {
        Some(at) => (&fields[..at], non_empty(&fields[at + ", fingerprint=".len()..])),
        None => (fields, None),
    };
    let (subject, issuer) = match fields.rfind(", issuer_CN=") {
        Some(at) => (&fields[..at], &fields[at + ", issuer_CN=".len()..]),
        None => {
            let at = fields.rfind(", issuer=").ok_or(Error::Malformed)?;
            (&fields[..at], &fields[at + ", issuer=".len()..])
        }
    };
    Ok(Event::PeerCertificate(PeerCertificate {
        peer,
        subject_cn: non_empty(subject),
        issuer_cn: non_empty(issuer),
        fingerprint,
        pkey_fingerprint,
    }))
}

/// `7EE668039: `, `4WzPS31N13z8slH: ` (long ids), `NOQUEUE: `.
pub fn queue_id(input: &str) -> IResult<&str, &str> {
    let len = input.bytes().position(|b| !b.is_ascii_alphanumeric()).unwrap_or(input.len());
    if !(5..=20).contains(&len) || !input[len..].starts_with(": ") {
        return Err(nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::LengthValue)));
    }
    Ok((&input[len + 2..], &input[..len]))
}

/// After `QID: to=`: `<rcpt>, [orig_to=<…>, ]relay=…, [conn_use=N, ]delay=…, delays=…, [tls=…, ]dsn=…, status=… (…)`.
fn delivery<'a>(queue_id: &'a str, input: &'a str) -> Result<Delivery<'a>, Error> {
    let (mut rest, to) = address(input).map_err(|_| Error::Malformed)?;
    let mut found = Delivery {
        queue_id,
        to,
        orig_to: None,
        relay: Relay::None,
        conn_use: None,
        tls: None,
        dsn: "",
        status: Status::Other(""),
        reason: "",
    };
    let mut have_relay = false;
    loop {
        rest = rest.strip_prefix(", ").ok_or(Error::Malformed)?;
        let (key, after_key) = crate::split_byte(rest, b'=').ok_or(Error::Malformed)?;
        if key == "status" {
            let (status, reason) = crate::split_byte(after_key, b' ').unwrap_or((after_key, ""));
            found.status = match status {
                "sent" => Status::Sent,
                "deferred" => Status::Deferred,
                "bounced" => Status::Bounced,
                "expired" => Status::Expired,
                "undeliverable" | "undeliverable-but-not-cached" => Status::Undeliverable,
                "deliverable" => Status::Deliverable,
                other => Status::Other(other),
            };
            let reason = reason.strip_prefix('(').unwrap_or(reason);
            found.reason = reason.strip_suffix(')').unwrap_or(reason);
            break;
        }
        if key == "orig_to" {
            let (after, orig_to) = address(after_key).map_err(|_| Error::Malformed)?;
            found.orig_to = Some(orig_to);
            rest = after;
            continue;
        }
        let end = comma_space(after_key).unwrap_or(after_key.len());
        let value = &after_key[..end];
        rest = &after_key[end..];
        match key {
            "relay" => {
                have_relay = true;
                found.relay = match value {
                    "none" => Relay::None,
                    // `contains('[')` went through core's generic memchr: about 240 instructions
                    // per delivery line, eight times what the word-at-a-time scan costs (callgrind).
                    _ if crate::scan::find_any(value.as_bytes(), [b'[']).is_some() => match peer(value) {
                        Ok(("", peer)) => Relay::Peer(peer),
                        _ => return Err(Error::Malformed),
                    },
                    _ => Relay::Transport(value),
                };
            }
            "conn_use" => found.conn_use = value.parse().ok(),
            "tls" => found.tls = Some(value),
            "dsn" => found.dsn = value,
            _ => {}
        }
        if rest.is_empty() {
            return Err(Error::Malformed);
        }
    }
    if !have_relay {
        return Err(Error::Malformed);
    }
    Ok(found)
}

/// Index of the first `, ` (a byte scan, eight at a time: cheaper than a substring searcher).
fn comma_space(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(idx) = crate::scan::find_any(&bytes[from..], [b',']) {
        let at = from + idx;
        if bytes.get(at + 1) == Some(&b' ') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `<user@example.com>` or, in old logs, a bare `user@example.com`; ends before `, `.
fn address(input: &str) -> IResult<&str, &str> {
    if let Some(inner) = input.strip_prefix('<') {
        let bytes = inner.as_bytes();
        let mut from = 0;
        let end = loop {
            let Some(idx) = crate::scan::find_any(&bytes[from..], [b'>']) else {
                return Err(nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Char)));
            };
            let at = from + idx;
            if at + 1 == bytes.len() || bytes[at + 1..].starts_with(b", ") {
                break at;
            }
            from = at + 1;
        };
        return Ok((&inner[end + 1..], &inner[..end]));
    }
    take_till(|c: char| c == ',').parse(input)
}

/// After `TLSRPT: `.
fn tlsrpt(input: &str) -> Result<Event<'_>, Error> {
    let mut report =
        Tlsrpt { success: false, domain: "", receiving_mx: Peer::default(), failure_type: None, failure_reason: None };
    let mut have_status = false;
    for item in input.split(", ") {
        let (key, value) = crate::split_byte(item, b'=').ok_or(Error::Malformed)?;
        match key {
            "status" => {
                have_status = true;
                report.success = value == "success";
            }
            "domain" => report.domain = value,
            "receiving_mx" => report.receiving_mx = peer(value).map_err(|_| Error::Malformed)?.1,
            "failure_type" => report.failure_type = Some(value),
            "failure_reason" => report.failure_reason = Some(value),
            _ => {}
        }
    }
    if !have_status {
        return Err(Error::Malformed);
    }
    Ok(Event::Tlsrpt(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(service: &str, message: &str) -> TlsConnection<'static> {
        let message: &'static str = Box::leak(message.to_owned().into_boxed_str());
        match parse_message(service, message) {
            Ok(Event::TlsConnection(tls)) => tls,
            other => panic!("{message}: {other:?}"),
        }
    }

    #[test]
    fn tls_summary_classes_and_sides() {
        let cases = [
            ("smtp", "Verified TLS connection established to mx2.comcast.net[2001:558:fe21:2a::6]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)", TrustClass::Verified, Side::Client, "2001:558:fe21:2a::6", Some(25)),
            ("smtp", "Trusted TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256", TrustClass::Trusted, Side::Client, "192.0.2.25", Some(25)),
            ("smtp", "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:2525: TLSv1 with cipher AES256-SHA (256/256 bits)", TrustClass::Untrusted, Side::Client, "127.0.0.1", Some(2525)),
            ("smtpd", "Anonymous TLS connection established from unknown[72.13.58.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) server-signature ED25519", TrustClass::Anonymous, Side::Server, "72.13.58.7", None),
            ("smtpd", "Untrusted TLS connection established from localhost[127.0.0.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)", TrustClass::Untrusted, Side::Server, "127.0.0.1", Some(25)),
        ];
        for (service, message, class, side, addr, port) in cases {
            let got = tls(service, message);
            assert_eq!((got.class, got.side, got.peer.addr, got.peer.port), (class, side, addr, port), "{message}");
            assert!(!got.reused);
        }
    }

    #[test]
    fn tls_summary_details() {
        let got = tls("smtpd", "Untrusted TLS connection established from client.example[192.0.2.1] to server.example: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256 client-signature ECDSA (P-256) client-digest SHA256");
        assert_eq!(got.sni, Some("server.example"));
        assert_eq!(got.peer.hostname, "client.example");
        assert_eq!((got.protocol, got.cipher, got.bits, got.alg_bits), ("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256));
        assert_eq!((got.key_exchange, got.server_signature), (Some("X25519"), Some("RSA-PSS")));

        let reused = tls("smtp", "Verified TLS connection reused to mail.example.com[192.0.2.9]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)");
        assert!(reused.reused);
        assert_eq!(reused.key_exchange, None);
    }

    #[test]
    fn truncated_tls_summary_is_malformed() {
        let line = "Trusted TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/2";
        for cut in 0..line.len() {
            if !line.is_char_boundary(cut) || cut < "Trusted TLS connection ".len() {
                continue;
            }
            assert_eq!(parse_message("smtp", &line[..cut]), Err(Error::Malformed), "cut at {cut}");
        }
    }

    #[test]
    fn handshake_errors_and_library_problems() {
        assert_eq!(
            parse_message("smtp", "SSL_connect error to mx.example.net[192.0.2.25]:25: -1"),
            Ok(Event::HandshakeError {
                side: Side::Client,
                peer: Peer { hostname: "mx.example.net", addr: "192.0.2.25", port: Some(25) },
                detail: "-1"
            })
        );
        assert_eq!(
            parse_message("smtpd", "SSL_accept error from unknown[192.0.2.1]: Connection reset by peer"),
            Ok(Event::HandshakeError {
                side: Side::Server,
                peer: Peer { hostname: "unknown", addr: "192.0.2.1", port: None },
                detail: "Connection reset by peer"
            })
        );
        let reasons = [
            ("warning: TLS library problem: error:0A000086:SSL routines::certificate verify failed:../ssl/statem/statem_clnt.c:1889:", "certificate verify failed"),
            ("warning: TLS library problem: error:14094410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:s3_pkt.c:1493:SSL alert number 40", "sslv3 alert handshake failure"),
            ("warning: TLS library problem: 4632:error:1408A0C1:SSL routines:ssl3_get_client_hello:no shared cipher:s3_srvr.c:1417:", "no shared cipher"),
            ("warning: TLS library problem: something else", "something else"),
        ];
        for (message, want) in reasons {
            match parse_message("smtpd", message) {
                Ok(Event::TlsLibraryProblem { reason, .. }) => assert_eq!(reason, want),
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn certificate_failures() {
        let cases = [
            ("certificate verification failed for mx.example.net[192.0.2.25]:25: untrusted issuer /CN=Evil CA", "untrusted issuer /CN=Evil CA"),
            ("server certificate verification failed for mx.example.net[192.0.2.25]:25: certificate has expired", "certificate has expired"),
            ("CA certificate verification failed for mx.example.net[192.0.2.25]:25: num=20:unable to get local issuer certificate", "num=20:unable to get local issuer certificate"),
        ];
        for (message, want) in cases {
            match parse_message("smtp", message) {
                Ok(Event::CertVerifyFailed { peer, reason }) => {
                    assert_eq!((peer.addr, reason), ("192.0.2.25", want));
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        assert_eq!(
            parse_message("smtp", "7EE668039: Server certificate not verified"),
            Ok(Event::CertificateRejected { queue_id: "7EE668039", reason: "Server certificate not verified" })
        );
        assert_eq!(
            parse_message("smtp", "1AA668039: TLS is required, but was not offered by host mx1.example[192.0.2.60]"),
            Ok(Event::HostSkipped {
                queue_id: "1AA668039",
                reason: "TLS is required, but was not offered by host mx1.example[192.0.2.60]"
            })
        );
        assert_eq!(
            parse_message("lmtp", "7EE668039: Cannot start TLS: handshake failure"),
            Ok(Event::HostSkipped { queue_id: "7EE668039", reason: "Cannot start TLS: handshake failure" })
        );
        assert_eq!(
            parse_message("smtp", "7EE668039: enabling PIX workarounds: disable_esmtp for mx.example[192.0.2.1]:25"),
            Ok(Event::Ignored)
        );
        assert!(matches!(
            parse_message("smtp", "mx.example.net[192.0.2.25]:25: re-using session with untrusted peer credential, look for details earlier in the log"),
            Ok(Event::UntrustedSessionReuse { .. })
        ));
    }

    #[test]
    fn delivery_lines() {
        let Ok(Event::Delivery(got)) = parse_message("smtp", "19B6B2900FE: to=<wietse@test.example.com>, orig_to=<wietse@test>, relay=mail.example.com[1.2.3.4], conn_use=2, delay=0.22, delays=0.04/0.01/0.05/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)") else { panic!() };
        assert_eq!(
            (got.queue_id, got.to, got.orig_to, got.conn_use),
            ("19B6B2900FE", "wietse@test.example.com", Some("wietse@test"), Some(2))
        );
        assert_eq!(got.relay, Relay::Peer(Peer { hostname: "mail.example.com", addr: "1.2.3.4", port: None }));
        assert_eq!((got.dsn, got.status, got.reason), ("2.0.0", Status::Sent, "250 2.0.0 Ok"));

        let Ok(Event::Delivery(got)) = parse_message("smtp", "4WzPS31N13z8slH: to=<a@b.example>, relay=mx.b.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, tls=may:none, dsn=2.0.0, status=sent (250 ok)") else { panic!() };
        assert_eq!(got.tls, Some("may:none"));

        let Ok(Event::Delivery(got)) = parse_message("lmtp", "ABCDE12345: to=<u@x.example>, relay=mail.x.example[private/dovecot-lmtp], delay=0.1, delays=0/0/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 saved)") else { panic!() };
        assert!(matches!(got.relay, Relay::Peer(p) if p.is_unix_socket()));

        let Ok(Event::Delivery(got)) = parse_message("error", "2DC5552A34: to=<user@yahoo.com>, relay=none, delay=63495, delays=63350/144/0/0, dsn=4.4.2, status=deferred (delivery temporarily suspended: lost connection with mta7.am0.yahoodns.net[98.136.216.22] while sending RCPT TO)") else { panic!() };
        assert_eq!((got.relay, got.status), (Relay::None, Status::Deferred));

        let Ok(Event::Delivery(got)) = parse_message("smtp", "2A22C263F6: to=user@hostname.example.com, orig_to=root@localhost, relay=local, delay=0.07, delays=0.04/0/0/0.03, dsn=2.0.0, status=sent (delivered to command: procmail -a \"$EXTENSION\")") else { panic!() };
        assert_eq!(
            (got.to, got.orig_to, got.relay),
            ("user@hostname.example.com", Some("root@localhost"), Relay::Transport("local"))
        );
    }

    #[test]
    fn truncated_delivery_is_malformed() {
        let line = "ABCDE12345: to=<a@b.example>, relay=mx.b.example[192.0.2.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)";
        let status_at = line.find("status=").unwrap();
        for cut in "ABCDE12345: to=".len()..status_at {
            assert_eq!(parse_message("smtp", &line[..cut]), Err(Error::Malformed), "cut at {cut}: {}", &line[..cut]);
        }
    }

    #[test]
    fn command_counters_keep_only_the_five_names() {
        let summary = |text| {
            let c = counters(text);
            (c.present, c.starttls, c.mail, c.data)
        };
        // Names that share a first byte with a kept one, `bdat`, and a `commands` that is no number.
        assert_eq!(
            summary("ehlo=1 sasl=1 starttlsx=9 mail=2/3 mailx=4 dataa=5 bdat=1/2 commands=x"),
            (false, None, Some((2, 3)), Some((1, 2)))
        );
        assert_eq!(summary("data=+1\tstarttls=1/1  commands=3 mail=1/"), (true, Some((1, 1)), None, Some((1, 1))));
        assert_eq!(summary(""), (false, None, None, None));
        assert_eq!(summary("= s m d b c starttls= mail=/1"), (false, None, None, None));
    }

    #[test]
    fn command_counters_split_as_split_ascii_whitespace_does() {
        // The items a `split_ascii_whitespace` split gives, read alone: the counters must be
        // those of the same items joined by one space, whatever separated them.
        let items = ["ehlo=1", "starttls=1/2", "mail=3", "data=0/1", "commands=5", "x", "=", "bdat=2"];
        let separators = [" ", "  ", "\t", "\n", "\x0c", "\r", " \t ", "\u{a0}"];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(state % 7) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(separators[(state % 8) as usize]);
                text.push_str(items[((state >> 8) % 8) as usize]);
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(separators[(state % 8) as usize]);
            let joined = text.split_ascii_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(counters(&text), counters(&joined), "{text:?}");
        }
    }

    #[test]
    fn smtpd_session_lines() {
        assert!(matches!(parse_message("smtpd", "connect from unknown[192.0.2.1]"), Ok(Event::Connect { .. })));
        let Ok(Event::Disconnect { peer, counters }) = parse_message(
            "smtpd",
            "disconnect from mail.example[192.0.2.1] ehlo=2 starttls=0/1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=5/7",
        ) else {
            panic!()
        };
        assert_eq!(peer.addr, "192.0.2.1");
        assert_eq!(
            (counters.present, counters.starttls, counters.mail, counters.data),
            (true, Some((0, 1)), Some((1, 1)), Some((0, 1)))
        );
        let Ok(Event::Disconnect { counters, .. }) = parse_message("smtpd", "disconnect from mail.example[192.0.2.1]")
        else {
            panic!()
        };
        assert!(!counters.present);

        for message in [
            "lost connection after STARTTLS from unknown[192.0.2.1]",
            "NOQUEUE: lost connection after STARTTLS from unknown[192.0.2.1]",
        ] {
            assert_eq!(
                parse_message("smtpd", message),
                Ok(Event::LostConnection {
                    what: "lost connection",
                    after: "STARTTLS",
                    peer: Peer { hostname: "unknown", addr: "192.0.2.1", port: None }
                }),
                "{message}"
            );
        }
        assert!(matches!(
            parse_message("smtpd", "1CF582025C: client=xxx[2.3.4.5]"),
            Ok(Event::Client { queue_id: "1CF582025C", .. })
        ));
        let Ok(Event::Reject { starttls_required, .. }) = parse_message("smtpd", "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 530 5.7.0 Must issue a STARTTLS command first; from=<a@b> to=<c@d> proto=ESMTP helo=<x>") else { panic!() };
        assert!(starttls_required);
        assert!(matches!(
            parse_message("smtpd", "NOQUEUE: abort: TLS from unknown[192.0.2.1]: Client certificate not trusted"),
            Ok(Event::TlsAbort { reason: "Client certificate not trusted", .. })
        ));
        assert!(matches!(
            parse_message("smtpd", "warning: Refusing STARTTLS request from unknown[192.0.2.1] for service smtpd"),
            Ok(Event::StarttlsRefused { .. })
        ));
        assert!(matches!(
            parse_message(
                "smtpd",
                "warning: New TLS session rate limit exceeded: 5 from unknown[192.0.2.1] for service smtpd"
            ),
            Ok(Event::StarttlsRefused { peer: Peer { addr: "192.0.2.1", .. }, .. })
        ));
    }

    #[test]
    fn lost_connection_fields_borrow_from_the_message() {
        // Fuzz finding: `what` used to be the parser's own literal.
        let message = String::from("timeout after DATA from unknown[192.0.2.1]");
        let Ok(Event::LostConnection { what, .. }) = parse_message("smtpd", &message) else { panic!() };
        let range = message.as_bytes().as_ptr_range();
        assert!(range.contains(&what.as_ptr()), "{what:?} is not a slice of the message");
        assert_eq!(what, "timeout");
    }

    #[test]
    fn client_odds_and_ends() {
        assert_eq!(
            parse_message("smtp", "discarding EHLO keywords: STARTTLS"),
            Ok(Event::DiscardedEhloKeywords { keywords: "STARTTLS", starttls: true })
        );
        assert_eq!(parse_message("smtpd", "discarding EHLO keywords: CHUNKING ETRN"), Ok(Event::Ignored));
        assert_eq!(
            parse_message("smtp", "Host offered STARTTLS: [mx.example.net]"),
            Ok(Event::HostOfferedStarttls { host: "mx.example.net" })
        );
        let Ok(Event::Tlsrpt(report)) = parse_message("smtp", "TLSRPT: status=failure, domain=example.net, receiving_mx=mail.example.net[192.0.2.3], failure_type=validation_failure, failure_reason=self-signed_certificate") else { panic!() };
        assert_eq!(
            (report.success, report.domain, report.failure_type),
            (false, "example.net", Some("validation_failure"))
        );
        assert_eq!(parse_message("qmgr", "BACE842E72: from=<a@b>, size=1, nrcpt=1 (queue active)"), Ok(Event::Ignored));
        assert_eq!(
            parse_message("smtp", "732BB407C3: host mail.domain.com[1.1.1.1] said: 451 try later"),
            Ok(Event::HostSkipped {
                queue_id: "732BB407C3",
                reason: "host mail.domain.com[1.1.1.1] said: 451 try later"
            })
        );
    }

    #[test]
    fn peer_certificate_lines_of_both_sides_and_the_old_form() {
        let client = "mx.example.net[192.0.2.25]:25: subject_CN=mx.example.net, issuer_CN=R3, fingerprint=6B:1C:2D:3E, pkey_fingerprint=AA:BB:CC:DD";
        let Ok(Event::PeerCertificate(cert)) = parse_message("smtp", client) else { panic!("{client}") };
        assert_eq!(cert.peer.map(|p| (p.addr, p.port)), Some(("192.0.2.25", Some(25))));
        assert_eq!(
            (cert.subject_cn, cert.issuer_cn, cert.fingerprint, cert.pkey_fingerprint),
            (Some("mx.example.net"), Some("R3"), Some("6B:1C:2D:3E"), Some("AA:BB:CC:DD"))
        );
        // The server writes `issuer=`, the peer without a port; a CN with a comma stays whole.
        let server = "client.example[2001:db8::7]: subject_CN=Example, Inc. client, issuer=Example CA, fingerprint=01:02, pkey_fingerprint=03:04";
        let Ok(Event::PeerCertificate(cert)) = parse_message("smtpd", server) else { panic!("{server}") };
        assert_eq!(cert.peer.map(|p| p.addr), Some("2001:db8::7"));
        assert_eq!((cert.subject_cn, cert.issuer_cn), (Some("Example, Inc. client"), Some("Example CA")));
        // Postfix 2.x: no peer, no fingerprints; an empty CN is None.
        let old = "Verified: subject_CN=, issuer=Old CA";
        let Ok(Event::PeerCertificate(cert)) = parse_message("smtp", old) else { panic!("{old}") };
        assert_eq!((cert.peer, cert.subject_cn, cert.issuer_cn, cert.fingerprint), (None, None, Some("Old CA"), None));
        // Truncated or odd lines never panic; a peer-looking head with no issuer is malformed.
        assert_eq!(parse_message("smtp", "mx[192.0.2.1]:25: subject_CN=x"), Err(Error::Malformed));
        assert_eq!(parse_message("smtp", "Verified: something else"), Ok(Event::Ignored));
        assert_eq!(parse_message("smtp", "note: subject_CN=x, issuer_CN=y"), Ok(Event::Ignored));
        for cut in 0..client.len() {
            let _ = parse_message("smtp", &client[..cut]);
            let _ = parse_message("smtpd", &server[..cut.min(server.len())]);
        }
    }
}
