//! Fuzzes [`parsers::syslog::parse_syslog`] with arbitrary bytes as one line.
//!
//! Besides not panicking, an accepted line must have its header fields inside the line, in
//! header order, and its message must be the rest of the line (up to one ignored trailing `\r`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::syslog::parse_syslog;
use parsers_fuzz::{assert_ordered, check_header, span, with_text};

fuzz_target!(|data: &[u8]| {
    with_text(data, |line| {
        let Ok(parsed) = parse_syslog(line) else { return };
        check_header(line, &parsed.header);

        let body = line.strip_suffix('\r').unwrap_or(line);
        let (body_start, body_end) = span(body);
        let (message_start, message_end) = span(parsed.message);
        assert!(
            body_start <= message_start && message_end == body_end,
            "message {:?} is not the rest of the line {line:?}",
            parsed.message
        );
        assert_ordered(("hostname", "message"), parsed.header.hostname, parsed.message);
        assert_ordered(("appname", "message"), parsed.header.appname, parsed.message);
    });
});
