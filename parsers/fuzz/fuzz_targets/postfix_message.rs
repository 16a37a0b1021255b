//! Fuzzes [`parsers::postfix::parse_message`], the Postfix message grammar.
//!
//! Input layout: the text up to the first NUL or newline is the service (daemon) name and the
//! rest is the message; without a separator the service is empty and the whole input is the
//! message. The message is parsed with that service and again as each daemon that has a
//! grammar of its own, so the fuzzer need not guess daemon names.
//!
//! Properties: no panic; every borrowed field of an event is a slice of the message; the only
//! error is [`parsers::Error::Malformed`].

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::postfix::parse_message;
use parsers_fuzz::{check_postfix_result, with_text};

/// The daemons whose messages have a grammar (`error` stands for the queue-file delivery agents).
const DAEMONS: [&str; 5] = ["smtp", "smtpd", "lmtp", "tlsproxy", "error"];

fuzz_target!(|data: &[u8]| {
    with_text(data, |text| {
        let (service, message) = match text.find(['\0', '\n']) {
            Some(idx) => (&text[..idx], &text[idx + 1..]),
            None => ("", text),
        };
        check_postfix_result(message, &parse_message(service, message));
        for daemon in DAEMONS {
            if daemon != service {
                check_postfix_result(message, &parse_message(daemon, message));
            }
        }
    });
});
