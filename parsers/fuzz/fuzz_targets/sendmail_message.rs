//! Fuzzes [`parsers::sendmail::parse_message`], the Sendmail message grammar, and
//! [`parsers::sendmail::parse_relay`].
//!
//! Input layout: the whole input is one message (the text after `sm-mta[pid]: `).
//!
//! Properties: no panic; every borrowed field of an event is a slice of the message; the only
//! error is [`parsers::Error::Malformed`]; a `STARTTLS=` summary has a non-empty upper-case
//! `verify=`; a piece's sequence number and text come from the message; `parse_relay` returns
//! slices of its input and a non-empty address when it returns one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::sendmail::{parse_message, parse_relay, Event, Relay};
use parsers::Error;
use parsers_fuzz::{assert_within, with_text};

fn check_relay(message: &str, relay: &Relay<'_>) {
    assert_within(message, "relay.host", relay.host);
    if let Some(addr) = relay.addr {
        assert!(!addr.is_empty(), "empty relay address in {message:?}");
        assert_within(message, "relay.addr", addr);
    }
}

fuzz_target!(|data: &[u8]| {
    with_text(data, |message| {
        check_relay(message, &parse_relay(message));
        let event = match parse_message(message) {
            Ok(event) => event,
            Err(error) => {
                assert_eq!(error, Error::Malformed, "unexpected error for {message:?}");
                return;
            }
        };
        match event {
            Event::Starttls(tls) => {
                check_relay(message, &tls.relay);
                for (name, field) in [("version", tls.version), ("verify", tls.verify), ("cipher", tls.cipher)] {
                    assert_within(message, name, field);
                }
                if let Some(queue_id) = tls.queue_id {
                    assert_within(message, "queue_id", queue_id);
                }
                assert!(
                    !tls.verify.is_empty() && tls.verify.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "verify {:?} in {message:?}",
                    tls.verify
                );
            }
            Event::StarttlsError { reason, detail, relay, .. } => {
                assert_within(message, "detail", detail);
                if let Some(reason) = reason {
                    assert_within(message, "reason", reason);
                }
                if let Some(relay) = relay {
                    check_relay(message, &relay);
                }
            }
            Event::StarttlsWarning { relay, warning, .. } => {
                check_relay(message, &relay);
                assert_within(message, "warning", warning);
            }
            Event::CertInfo { verifymsg, subject, issuer, .. } => {
                assert_within(message, "verifymsg", verifymsg);
                for (name, dn) in [("subject", subject), ("issuer", issuer)] {
                    if let Some(dn) = dn {
                        assert_within(message, name, dn);
                        assert!(parsers::sendmail::xtext_decode(dn).len() <= dn.len(), "xtext grew {dn:?}");
                    }
                }
            }
            Event::StarttlsDetail { reason, .. } => assert_within(message, "reason", reason),
            Event::Ruleset(rule) => {
                assert_within(message, "name", rule.name);
                assert!(!rule.name.is_empty(), "empty ruleset name in {message:?}");
                assert_within(message, "arg1", rule.arg1);
                if let Some(relay) = rule.relay {
                    check_relay(message, &relay);
                }
                if let Some(reject) = rule.reject {
                    assert_within(message, "reject", reject);
                }
            }
            Event::From(from) => {
                assert_within(message, "queue_id", from.queue_id);
                assert_within(message, "from", from.from);
                if let Some(relay) = from.relay {
                    check_relay(message, &relay);
                }
            }
            Event::Delivery(delivery) => {
                assert_within(message, "queue_id", delivery.queue_id);
                assert_within(message, "to", delivery.to);
                assert_within(message, "stat", delivery.stat);
                if let Some(relay) = delivery.relay {
                    check_relay(message, &relay);
                }
                let _ = delivery.recipients().count();
                let _ = delivery.sent();
            }
            Event::NoMail { relay, daemon } => {
                check_relay(message, &relay);
                assert!(relay.addr.is_some(), "NoMail without an address in {message:?}");
                assert_within(message, "daemon", daemon);
            }
            Event::LostInput { relay, after } => {
                check_relay(message, &relay);
                if let Some(after) = after {
                    assert_within(message, "after", after);
                }
            }
            Event::Piece { queue_id, seq, text, .. } => {
                assert_within(message, "queue_id", queue_id);
                assert_within(message, "text", text);
                assert!(message.contains(&format!("{queue_id}[")), "piece id {queue_id:?} in {message:?}");
                let _ = seq;
            }
            Event::Ignored => {}
            _ => {}
        }
    });
});
