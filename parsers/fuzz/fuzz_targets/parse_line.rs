//! Fuzzes [`parsers::parse_line`], the whole pipeline from a raw line to a [`parsers::Record`].
//!
//! Input layout: bytes 0..4 are the reference year (`i32`, little endian; reduced to
//! ±999 999 unless the `strict-years` feature is on), byte 4 is the reference month, and the rest
//! is a stream of lines. As in the application (`sources::lines::for_each_line` and
//! `commands::parse`), the stream is split at `\n`, each line is taken as UTF-8 or converted
//! lossily, and all lines share one [`parsers::YearInference`] so that its state is exercised.
//! When the stream has several lines it is also parsed once as a single line, since
//! `parse_line` must not panic on embedded newlines either.
//!
//! Properties: no panic; the result agrees with [`parsers::syslog::parse_syslog`] (same error,
//! same header apart from the inferred year) and with [`parsers::postfix::parse_message`] on the
//! same service and message (or [`parsers::sendmail::parse_message`] for Sendmail tags); header
//! and event fields are slices of the line; [`parsers::parse_record_into`] writes over a slot
//! holding an earlier record (of a kind picked by the line's length) exactly what
//! [`parsers::parse_record`] returns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parsers::postfix::{parse_message, Daemon};
use parsers::{
    detect_mta, parse_line, parse_record, parse_record_into, syslog::parse_syslog, Body, Error, HeaderCache, Mta,
    YearInference,
};
use parsers_fuzz::{check_event, check_exim_event, check_header, with_text};

fuzz_target!(|data: &[u8]| {
    let Some((prefix, stream)) = data.split_first_chunk::<5>() else { return };
    let raw_year = i32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let year = if cfg!(feature = "strict-years") { raw_year } else { raw_year % 1_000_000 };
    let mut years = YearInference::new(year, prefix[4]);
    let mut whole = years.clone();

    for line in stream.split(|&byte| byte == b'\n') {
        check_line(line, &mut years);
    }
    if stream.contains(&b'\n') {
        check_line(stream, &mut whole);
    }
});

/// Lines whose records fill the slot that [`parse_record_into`] writes over: one per body kind.
const EARLIER: [&str; 5] = [
    "Nov  3 13:35:12 mx1 postfix/smtp[7]: Verified TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
    "Nov  3 13:35:12 mx1 exim[10]: 1rA2bC-000ABC-DE <= a@example.org H=mx.example.org [192.0.2.9] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes S=1",
    "Nov  3 13:35:12 mx1 sm-mta[9]: x2AABBcc: from=<a@b>, size=1, class=0, nrcpts=1, relay=localhost [127.0.0.1]",
    "Nov  3 13:35:12 mx1 cron[12]: something else",
    "not syslog",
];

/// Parses one line and checks the properties listed in the module documentation.
fn check_line(bytes: &[u8], years: &mut YearInference) {
    with_text(bytes, |line| {
        let mut slot = parse_record(EARLIER[line.len() % EARLIER.len()]);
        parse_record_into(line, &mut HeaderCache::default(), &mut slot);
        assert_eq!(slot, parse_record(line), "parse_record_into disagrees on {line:?}");
        let framed = parse_syslog(line);
        let record = match parse_line(line, years) {
            Ok(record) => record,
            Err(error) => {
                assert_eq!(framed.err(), Some(error), "parse_line and parse_syslog disagree on {line:?}");
                return;
            }
        };
        let Ok(framed) = framed else {
            panic!("parse_line accepted {line:?} but parse_syslog did not: {framed:?}");
        };
        let mut expected = framed.header;
        if let (Some(want), Some(got)) = (&mut expected.timestamp, &record.header.timestamp) {
            if !want.year_logged {
                want.year = got.year;
            }
        }
        assert_eq!(record.header, expected, "header differs from parse_syslog for {line:?}");
        check_header(line, &record.header);
        let service = record.header.service();
        let direct = parse_message(service, framed.message);
        match &record.body {
            Body::Postfix { daemon, event } => {
                assert_eq!(Daemon::from_service(service), Some(*daemon), "daemon of {line:?}");
                assert_eq!(direct.as_ref(), Ok(event), "parse_message disagrees on {line:?}");
                check_event(line, event);
            }
            Body::Sendmail(event) => {
                assert_eq!(detect_mta(record.header.appname), Mta::Sendmail, "MTA of {line:?}");
                let direct = parsers::sendmail::parse_message(framed.message);
                assert_eq!(direct.as_ref(), Ok(event), "sendmail::parse_message disagrees on {line:?}");
            }
            Body::Unparsed(error) if detect_mta(record.header.appname) == Mta::Sendmail => {
                assert_eq!(*error, Error::Malformed, "unexpected body error for {line:?}");
                let direct = parsers::sendmail::parse_message(framed.message);
                assert_eq!(direct, Err(*error), "sendmail::parse_message disagrees on {line:?}");
            }
            Body::Opensmtpd(event) => {
                assert_eq!(record.header.appname, "smtpd", "OpenSMTPD body for {line:?}");
                let direct = parsers::opensmtpd::parse_message(framed.message);
                assert_eq!(direct.as_ref(), Ok(event), "opensmtpd::parse_message disagrees on {line:?}");
            }
            Body::Unparsed(error) if record.header.appname == "smtpd" => {
                assert_eq!(*error, Error::Malformed, "unexpected body error for {line:?}");
                let direct = parsers::opensmtpd::parse_message(framed.message);
                assert_eq!(direct, Err(*error), "opensmtpd::parse_message disagrees on {line:?}");
            }
            Body::Unparsed(error) if detect_mta(record.header.appname) == Mta::Exim => {
                assert_eq!(*error, Error::Malformed, "unexpected body error for {line:?}");
                let direct = parsers::exim::parse_message(framed.message);
                assert_eq!(direct.err(), Some(*error), "exim::parse_message disagrees on {line:?}");
            }
            Body::Unparsed(error) => {
                assert_eq!(*error, Error::Malformed, "unexpected body error for {line:?}");
                assert_eq!(direct, Err(*error), "parse_message disagrees on {line:?}");
            }
            Body::Exim(event) => {
                assert_eq!(
                    parsers::exim::parse_message(framed.message).as_ref(),
                    Ok(&**event),
                    "Exim grammar disagrees on {line:?}"
                );
                check_exim_event(line, event);
            }
            Body::Other => {}
        }
    });
}
