//! Fuzzes [`parsers::syslog::parse_syslog`] with arbitrary bytes as one line.
//!
//! Besides not panicking, an accepted line must have its header fields inside the line, in
//! header order, and its message must be the rest of the line (up to one ignored trailing `\r`).
//! The input is also split at `\n` into lines parsed in turn with one shared
//! [`parsers::HeaderCache`]: [`parse_syslog_cached`] must return exactly what `parse_syslog`
//! returns for each of them, whatever the previous lines left in the cache.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::syslog::{parse_syslog, parse_syslog_cached};
use parsers::HeaderCache;
use parsers_fuzz::{assert_ordered, check_header, span, with_text};

fuzz_target!(|data: &[u8]| {
    let mut cache = HeaderCache::default();
    for line in data.split(|&byte| byte == b'\n') {
        with_text(line, |line| {
            assert_eq!(parse_syslog_cached(line, &mut cache), parse_syslog(line), "the cache changed {line:?}");
        });
    }
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
