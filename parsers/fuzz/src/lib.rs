//! Shared checks for the fuzz targets of the `parsers` crate.
//!
//! Every target turns arbitrary bytes into text the way the application does, calls one parser
//! and then checks the properties below. A violated property panics, which libFuzzer records as
//! a crash, exactly like a panic inside the parser.
//!
//! - The parser does not panic (checked by libFuzzer itself).
//! - Zero copy: every non-empty borrowed field of a result is a slice of the input, compared by
//!   pointer range. Empty fields are exempt because the parsers return the literal `""` for
//!   absent values (RFC 5424 `-`, a delivery line without `dsn=`, a TLSRPT line without
//!   `domain=`), and a zero-length slice has no position worth checking.
//! - The grammar's own promises: a header field has the characters its grammar allows, a
//!   timestamp that was accepted is valid, the only error of the Postfix grammar is
//!   [`Error::Malformed`].
//!
//! Known, reported issues are tolerated unless the `strict-slices` or `strict-years` feature is
//! enabled (see README.md).

use parsers::postfix::{Event, Relay, Status};
use parsers::syslog::Framing;
use parsers::{Error, Header, Peer};

/// Calls `check` with `data` as text, as the application does: the bytes themselves when they
/// are valid UTF-8, otherwise their lossy conversion.
///
/// For valid UTF-8, `String::from_utf8_lossy` borrows the same bytes, so trying both would only
/// run the same input twice.
pub fn with_text(data: &[u8], check: impl FnOnce(&str)) {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
}

/// The address range `start..end` that `text` occupies in memory.
pub fn span(text: &str) -> (usize, usize) {
    let start = text.as_ptr() as usize;
    (start, start + text.len())
}

/// Panics unless `field` is empty or lies inside `input`.
pub fn assert_within(input: &str, name: &str, field: &str) {
    if field.is_empty() {
        return;
    }
    let (lo, hi) = span(input);
    let (start, end) = span(field);
    assert!(
        lo <= start && end <= hi,
        "{name} = {field:?} is not a slice of the input {input:?} ({start:#x}..{end:#x} outside {lo:#x}..{hi:#x})"
    );
}

/// Panics unless the non-empty fields `first` and `second` are in this order in memory.
pub fn assert_ordered(names: (&str, &str), first: &str, second: &str) {
    if first.is_empty() || second.is_empty() {
        return;
    }
    assert!(span(first).1 <= span(second).0, "{} {first:?} does not come before {} {second:?}", names.0, names.1);
}

/// Checks a syslog header parsed from `line`.
pub fn check_header(line: &str, header: &Header<'_>) {
    if header.framing == Framing::EximFile {
        // Exim's own log names no host or program: the header says so with fixed values. A
        // `<PRI>` before it (a raw Exim line relayed by syslog) is kept.
        assert_eq!((header.hostname, header.appname), ("", "exim"), "Exim framing of {line:?}");
        assert!(header.pri.is_none() || line.starts_with('<'), "PRI without `<` in {line:?}");
        let timestamp = header.timestamp.unwrap_or_else(|| panic!("Exim line without timestamp: {line:?}"));
        assert!(timestamp.is_valid() && timestamp.year_logged, "bad Exim timestamp {timestamp:?} in {line:?}");
        return;
    }
    assert_within(line, "header.hostname", header.hostname);
    assert_within(line, "header.appname", header.appname);
    assert_within(line, "header.service()", header.service());
    assert_within(line, "header.instance()", header.instance());
    assert_ordered(("hostname", "appname"), header.hostname, header.appname);
    if let Some(pri) = header.pri {
        assert!(pri <= 191, "<PRI> {pri} out of range in {line:?}");
    }
    if header.framing == Framing::Rfc5424 {
        assert!(header.pri.is_some(), "RFC 5424 without <PRI> in {line:?}");
    } else {
        assert!(header.timestamp.is_some(), "{:?} line without timestamp: {line:?}", header.framing);
        assert!(
            !header.hostname.is_empty() && !header.hostname.contains(' '),
            "bad hostname {:?} in {line:?}",
            header.hostname
        );
        assert!(
            !header.appname.is_empty() && !header.appname.contains(['[', ':', ' ']),
            "bad program tag {:?} in {line:?}",
            header.appname
        );
    }
    if let Some(timestamp) = header.timestamp {
        assert!(timestamp.is_valid(), "accepted an invalid timestamp {timestamp:?} in {line:?}");
        let _ = timestamp.unix_seconds_naive();
    }
}

/// Checks the fields of a remote endpoint.
fn check_peer(input: &str, name: &str, peer: &Peer<'_>) {
    assert_within(input, &format!("{name}.hostname"), peer.hostname);
    assert_within(input, &format!("{name}.addr"), peer.addr);
    assert_ordered(("hostname", "addr"), peer.hostname, peer.addr);
    let _ = peer.is_unix_socket();
}

/// Checks every borrowed field of a Postfix event parsed from `message`.
pub fn check_event(message: &str, event: &Event<'_>) {
    let within = |name: &str, field: &str| assert_within(message, name, field);
    let within_opt = |name: &str, field: Option<&str>| {
        if let Some(field) = field {
            assert_within(message, name, field);
        }
    };
    match event {
        Event::TlsConnection(tls) => {
            check_peer(message, "tls.peer", &tls.peer);
            within_opt("tls.sni", tls.sni);
            within("tls.protocol", tls.protocol);
            within("tls.cipher", tls.cipher);
            within_opt("tls.key_exchange", tls.key_exchange);
            within_opt("tls.server_signature", tls.server_signature);
        }
        Event::HandshakeError { peer, detail, .. } => {
            check_peer(message, "peer", peer);
            within("detail", detail);
        }
        Event::TlsLibraryProblem { reason, detail } => {
            within("reason", reason);
            within("detail", detail);
        }
        Event::CertVerifyFailed { peer, reason } => {
            check_peer(message, "peer", peer);
            within("reason", reason);
        }
        Event::UntrustedSessionReuse { peer } | Event::Connect { peer } | Event::Disconnect { peer, .. } => {
            check_peer(message, "peer", peer);
        }
        Event::CertificateRejected { queue_id, reason } | Event::HostSkipped { queue_id, reason } => {
            within("queue_id", queue_id);
            within("reason", reason);
        }
        Event::Delivery(delivery) => {
            within("delivery.queue_id", delivery.queue_id);
            within("delivery.to", delivery.to);
            within_opt("delivery.orig_to", delivery.orig_to);
            match &delivery.relay {
                Relay::Peer(peer) => check_peer(message, "delivery.relay", peer),
                Relay::Transport(transport) => within("delivery.relay", transport),
                Relay::None => {}
            }
            within_opt("delivery.tls", delivery.tls);
            within("delivery.dsn", delivery.dsn);
            if let Status::Other(status) = delivery.status {
                within("delivery.status", status);
            }
            within("delivery.reason", delivery.reason);
        }
        Event::DiscardedEhloKeywords { keywords, starttls } => {
            within("keywords", keywords);
            let has = keywords.split_ascii_whitespace().any(|word| word.eq_ignore_ascii_case("starttls"));
            assert_eq!(*starttls, has, "starttls flag disagrees with keywords {keywords:?}");
        }
        Event::HostOfferedStarttls { host } => within("host", host),
        Event::Tlsrpt(report) => {
            within("tlsrpt.domain", report.domain);
            check_peer(message, "tlsrpt.receiving_mx", &report.receiving_mx);
            within_opt("tlsrpt.failure_type", report.failure_type);
            within_opt("tlsrpt.failure_reason", report.failure_reason);
        }
        Event::LostConnection { what, after, peer } => {
            if cfg!(feature = "strict-slices") {
                within("what", what);
            } else {
                // Known finding: `what` is one of the parser's own literals, not a slice of the
                // message. Check its content instead.
                assert!(message.contains(what), "what = {what:?} does not occur in {message:?}");
            }
            within("after", after);
            check_peer(message, "peer", peer);
        }
        Event::Client { queue_id, peer } => {
            within("queue_id", queue_id);
            check_peer(message, "peer", peer);
        }
        Event::Reject { peer, reason, .. }
        | Event::TlsAbort { peer, reason }
        | Event::StarttlsRefused { peer, reason } => {
            check_peer(message, "peer", peer);
            within("reason", reason);
        }
        Event::Ignored => {}
        // `Event` is non-exhaustive: a new variant is not checked until it is listed above.
        _ => {}
    }
}

/// Checks the result of [`parsers::postfix::parse_message`] on `message`.
pub fn check_postfix_result(message: &str, result: &Result<Event<'_>, Error>) {
    match result {
        Ok(event) => check_event(message, event),
        Err(error) => assert_eq!(*error, Error::Malformed, "unexpected error kind for {message:?}"),
    }
}

/// Checks every borrowed field of an Exim event parsed from `message`.
pub fn check_exim_event(message: &str, event: &parsers::exim::Event<'_>) {
    use parsers::exim::{Cipher, Event as Exim, Host};
    let within = |name: &str, field: &str| assert_within(message, name, field);
    let host = |name: &str, host: &Host<'_>| {
        within(&format!("{name}.name"), host.name);
        within(&format!("{name}.addr"), host.addr);
        if let Some(helo) = host.helo {
            within(&format!("{name}.helo"), helo);
        }
    };
    let cipher = |cipher: &Cipher<'_>| {
        within("cipher.version", cipher.version);
        within("cipher.cipher", cipher.cipher);
        if let Some(group) = cipher.group {
            within("cipher.group", group);
        }
        assert!(!cipher.version.is_empty() && !cipher.cipher.is_empty(), "empty X= part in {message:?}");
    };
    match event {
        Exim::Delivery(delivery) => {
            within("address", delivery.address);
            assert!(!delivery.address.is_empty(), "delivery without address in {message:?}");
            for field in [delivery.message_id, delivery.peer_dn, delivery.sni, delivery.protocol, delivery.error]
                .into_iter()
                .flatten()
            {
                within("delivery field", field);
            }
            if let Some(h) = &delivery.host {
                host("host", h);
            }
            if let Some(c) = &delivery.cipher {
                cipher(c);
            }
        }
        Exim::TlsErrorFrom { host: h, stage, detail } | Exim::TlsErrorTo { host: h, stage, detail } => {
            host("host", h);
            assert!(!h.addr.is_empty(), "TLS error without address in {message:?}");
            within("stage", stage);
            within("detail", detail);
        }
        Exim::TlsIoError { host: h, detail } => {
            host("host", h);
            within("detail", detail);
        }
        Exim::TlsFallback { message_id, host: h, detail, .. } | Exim::DaneFailed { message_id, host: h, detail } => {
            host("host", h);
            within("detail", detail);
            if let Some(id) = message_id {
                within("message_id", id);
            }
        }
        Exim::VerifyError { message_id, addr, detail } => {
            within("addr", addr);
            within("detail", detail);
            if let Some(id) = message_id {
                within("message_id", id);
            }
        }
        Exim::NoMail { host: h, cipher: c, commands, .. } => {
            host("host", h);
            if let Some(c) = c {
                cipher(c);
            }
            if let Some(commands) = commands {
                within("commands", commands);
            }
        }
        Exim::Split { part, total, text } => {
            assert!(*part >= 1 && part <= total, "split piece {part}/{total} in {message:?}");
            within("text", text);
        }
        Exim::Ignored => {}
        _ => {}
    }
}
