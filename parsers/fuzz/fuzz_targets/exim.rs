//! Fuzzes [`parsers::exim::parse_message`], the Exim main-log grammar.
//!
//! Input layout: the whole input is one message (what follows the framing or the syslog tag).
//! It is also parsed with an Exim timestamp, a `[pid]` and a message id in front, and as a
//! whole line through [`parsers::parse_record`] in Exim's file framing, so the fuzzer reaches
//! the flagged-line grammar without guessing a valid prefix.
//!
//! Properties: no panic; every borrowed field of an event is a slice of the input; a rejoined
//! split piece is parsed again without panicking; the only error is
//! [`parsers::Error::Malformed`].

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::exim::{parse_message, Event};
use parsers::Error;
use parsers_fuzz::{check_exim_event, with_text};

fn check(message: &str) {
    match parse_message(message) {
        Ok(event) => {
            check_exim_event(message, &event);
            if let Event::Split { text, .. } = event {
                let _ = parse_message(text);
            }
        }
        Err(error) => assert_eq!(error, Error::Malformed, "unexpected error for {message:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    with_text(data, |text| {
        check(text);
        let prefixed = format!("2024-11-03 13:35:12.123 +0100 [42] 1tAbCd-000000003Xy-Zq1w {text}");
        check(&prefixed);
        if let Ok(record) = parsers::parse_record(&prefixed) {
            if let parsers::Body::Exim(event) = record.body {
                check_exim_event(&prefixed, &event);
            }
        }
    });
});
