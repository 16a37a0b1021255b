//! Fuzzes [`parsers::opensmtpd::parse_message`], the OpenSMTPD message grammar.
//!
//! Input layout: the whole input is one message (the text after `smtpd[pid]: `).
//!
//! Properties: no panic; every borrowed field of an event is a slice of the message; the only
//! error is [`parsers::Error::Malformed`]; a session line's id is the number its first 16 hex
//! digits spell, and a line without one has id 0 and no subsystem unless it is a 5.x
//! `smtp-in:`/`smtp-out:` line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::opensmtpd::{parse_message, Kind, Subsystem};
use parsers::Error;
use parsers_fuzz::{assert_within, with_text};

fuzz_target!(|data: &[u8]| {
    with_text(data, |message| {
        let event = match parse_message(message) {
            Ok(event) => event,
            Err(error) => {
                assert_eq!(error, Error::Malformed, "unexpected error for {message:?}");
                return;
            }
        };
        let legacy = message.starts_with("smtp-in: ") || message.starts_with("smtp-out: ");
        if !legacy {
            match message.get(..16).filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit())) {
                Some(id) if event.subsystem != Subsystem::None => {
                    assert_eq!(Ok(event.session), u64::from_str_radix(id, 16), "session id of {message:?}");
                }
                _ => assert_eq!((event.session, &event.kind), (0, &Kind::Ignored), "{message:?}"),
            }
        }
        let fields: Vec<(&str, &str)> = match &event.kind {
            Kind::Connected { address, host } => vec![("address", address), ("host", host)],
            Kind::Connecting { scheme, address, host, .. } => {
                assert!(!scheme.is_empty() && !address.is_empty(), "{message:?}");
                vec![("scheme", scheme), ("address", address), ("host", host)]
            }
            Kind::Tls { protocol, cipher, .. } => {
                assert!(!protocol.is_empty() && !cipher.is_empty(), "{message:?}");
                vec![("protocol", protocol), ("cipher", cipher)]
            }
            Kind::CertCheck { text, .. } => vec![("result", text)],
            Kind::NameMismatch { name } => vec![("name", name)],
            Kind::Disconnected { reason } | Kind::Closing { reason } | Kind::MtaError { reason } => {
                vec![("reason", reason)]
            }
            Kind::Delivery(delivery) => vec![
                ("evpid", delivery.evpid),
                ("to", delivery.to),
                ("relay_addr", delivery.relay_addr),
                ("relay_host", delivery.relay_host),
                ("stat", delivery.stat),
            ],
            Kind::MtaConnected | Kind::TlsDowngrade | Kind::Message | Kind::Ignored => vec![],
        };
        for (name, field) in fields {
            assert_within(message, name, field);
        }
    });
});
