//! Fuzzes [`parsers::peer::peer`], the `host[addr]:port` notation.
//!
//! Properties: no panic; on success the hostname starts the input, the address follows the
//! `[`, the remainder is a suffix of the input, and the consumed text is exactly
//! `hostname[addr]` plus `:digits` when a port was returned.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::peer::peer;
use parsers_fuzz::{assert_within, span, with_text};

fuzz_target!(|data: &[u8]| {
    with_text(data, |input| {
        let Ok((rest, found)) = peer(input) else { return };
        let (start, end) = span(input);
        assert!(start <= span(rest).0 && span(rest).1 == end, "rest {rest:?} is not a suffix of {input:?}");
        assert_within(input, "hostname", found.hostname);
        assert_within(input, "addr", found.addr);
        if !found.hostname.is_empty() {
            assert_eq!(span(found.hostname).0, start, "hostname {:?} does not start {input:?}", found.hostname);
        }
        assert_eq!(
            span(found.addr).0,
            start + found.hostname.len() + 1,
            "addr {:?} misplaced in {input:?}",
            found.addr
        );
        assert!(!found.hostname.contains(['[', ' ', ',']), "bad hostname {:?} in {input:?}", found.hostname);
        assert!(!found.addr.is_empty() && !found.addr.contains(']'), "bad addr {:?} in {input:?}", found.addr);

        let consumed = &input[..input.len() - rest.len()];
        let head = format!("{}[{}]", found.hostname, found.addr);
        assert!(consumed.starts_with(&head), "consumed {consumed:?} does not start with {head:?}");
        let tail = &consumed[head.len()..];
        match found.port {
            Some(port) => {
                let digits = tail.strip_prefix(':').unwrap_or_else(|| panic!("port {port} without ':' in {input:?}"));
                assert!(digits.bytes().all(|b| b.is_ascii_digit()), "port text {digits:?} in {input:?}");
                assert_eq!(digits.parse::<u16>().ok(), Some(port), "port text {digits:?} in {input:?}");
            }
            None => assert!(tail.is_empty(), "consumed {tail:?} after the bracket without a port in {input:?}"),
        }
        let _ = found.is_unix_socket();
    });
});
