//! Pure, zero-copy parsers for the lines mail systems log about SMTP sessions.
//!
//! # Brief overview
//!
//! A log line goes through two grammars, both in this crate and both free of IO:
//!
//! 1. [`syslog::parse_syslog`] recognises the envelope (RFC 3164, rsyslog's RFC 3339 file format,
//!    RFC 5424 with or without a BOM, Postfix `maillog_file`, `journalctl -o short`) and returns a
//!    [`syslog::SyslogLine`]: a [`syslog::Header`] (timestamp, hostname, program tag, pid) and the
//!    message text.
//! 2. An MTA grammar, chosen by the program tag, turns the message into a typed event:
//!    [`postfix::parse_message`] gives a [`postfix::Event`], [`sendmail::parse_message`] a
//!    [`sendmail::Event`], [`exim::parse_message`] an [`exim::Event`], [`opensmtpd::parse_message`]
//!    an [`opensmtpd::Event`].
//!
//! [`parse_line`] does both and returns a [`Record`], the borrowed value that the correlator in the
//! application crate consumes. Every field of a record is a slice of the input line: nothing is
//! allocated per line.
//!
//! **Invariants:** no function here does IO, panics on any input, or allocates on the hot path.
//! A line that cannot be understood is not an error that stops anything: it becomes
//! [`Body::Unparsed`] with an [`Error`] that says why, and the caller counts it.

pub mod exim;
pub mod opensmtpd;
pub mod peer;
pub mod postfix;
mod scan;
pub mod sendmail;
pub mod syslog;

pub use peer::Peer;
pub use syslog::{Header, HeaderCache, SyslogLine, Timestamp, YearInference};

/// Why a line, or part of one, was not understood.
///
/// Values travel as data inside [`Body::Unparsed`]; they never stop a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The line is empty or only white space.
    Empty,
    /// No known syslog or file framing matched the start of the line.
    NotSyslog,
    /// The framing matched but the timestamp is out of range (month 13, hour 25, ...).
    BadTimestamp,
    /// The header has no program tag (`ident[pid]: `).
    MissingTag,
    /// The message starts like a line we know (a TLS summary, a delivery line) but does not
    /// follow its grammar, for example because the reporter truncated it.
    Malformed,
}

impl Error {
    /// A stable, machine-friendly name for counters and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Empty => "empty",
            Error::NotSyslog => "not-syslog",
            Error::BadTimestamp => "bad-timestamp",
            Error::MissingTag => "missing-tag",
            Error::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Which MTA wrote a line, decided from the program tag alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mta {
    /// Postfix: a tag whose last path component is a Postfix daemon (`postfix/smtp`,
    /// `postfix-out/smtp`, `postfix/submission/smtpd`, `enforced-tls-smtp/smtp`).
    Postfix,
    /// Sendmail: `sendmail`, `sm-mta`, `sm-msp-queue` (see [`sendmail::is_tag`]).
    Sendmail,
    /// Exim: a tag whose last path component starts with `exim` (`exim`, `exim4`), and Exim's
    /// own main log (its framing gives the appname `exim`).
    Exim,
    /// OpenSMTPD: the bare tag `smtpd` (no path; `postfix/smtpd` is Postfix).
    Opensmtpd,
    /// Anything else.
    Other,
}

/// One parsed log line: the syslog envelope and what the MTA said.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// The envelope.
    pub header: Header<'a>,
    /// The MTA message, typed.
    pub body: Body<'a>,
}

/// The typed content of a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<'a> {
    /// A Postfix message.
    Postfix {
        /// Which daemon logged it.
        daemon: postfix::Daemon,
        /// What it says.
        event: postfix::Event<'a>,
    },
    /// A Sendmail message.
    Sendmail(sendmail::Event<'a>),
    /// An Exim main-log message (boxed: the largest event, it made every record 56 bytes larger,
    /// and records are copied several times on the way to the correlator).
    Exim(Box<exim::Event<'a>>),
    /// An OpenSMTPD message (program tag `smtpd`).
    Opensmtpd(opensmtpd::Event<'a>),
    /// A line from a program this crate has no grammar for.
    Other,
    /// The message was recognised as relevant but could not be parsed.
    Unparsed(Error),
}

/// Decides which MTA grammar applies to a program tag.
///
/// The tag's last path component is the daemon; Postfix daemons are recognised only when the
/// tag has a path (`postfix/smtpd`), because a bare `smtpd` is OpenSMTPD.
pub fn detect_mta(tag: &str) -> Mta {
    if postfix_daemon(tag).is_some() {
        return Mta::Postfix;
    }
    if sendmail::is_tag(last_component(tag)) {
        return Mta::Sendmail;
    }
    if is_exim(tag) {
        return Mta::Exim;
    }
    if tag == "smtpd" {
        return Mta::Opensmtpd;
    }
    Mta::Other
}

/// True for Exim's program tags: the last path component starts with `exim`.
fn is_exim(tag: &str) -> bool {
    let service = match tag.bytes().rposition(|b| b == b'/') {
        Some(slash) => &tag[slash + 1..],
        None => tag,
    };
    service.starts_with("exim")
}

/// The last path component of a tag (`/usr/sbin/sendmail` → `sendmail`).
fn last_component(tag: &str) -> &str {
    match tag.bytes().rposition(|b| b == b'/') {
        // An ASCII byte is always a character boundary.
        Some(slash) => &tag[slash + 1..],
        None => tag,
    }
}

/// The Postfix daemon of a tag with a path, if it is one.
fn postfix_daemon(tag: &str) -> Option<postfix::Daemon> {
    // A byte scan: the generic `rsplit_once(char)` costs more than the rest of this lookup.
    let slash = tag.bytes().rposition(|b| b == b'/')?;
    postfix::Daemon::from_service(&tag[slash + 1..])
}

/// Parses one line (without its line terminator) into a [`Record`].
///
/// `years` resolves the year of framings that have none (RFC 3164, `maillog_file`); feed it the
/// lines of one stream in order.
///
/// ```
/// let mut years = parsers::YearInference::new(2024, 11);
/// let line = "Nov  3 13:35:12 mx1 postfix/smtp[12345]: 4XyZ1234ABC: to=<bob@example.net>, \
///             relay=mx.example.net[192.0.2.25]:25, delay=0.52, delays=0.01/0.01/0.3/0.2, \
///             dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9F3A2)";
/// let record = parsers::parse_line(line, &mut years).unwrap();
/// assert_eq!(record.header.hostname, "mx1");
/// assert!(matches!(record.body, parsers::Body::Postfix { event: parsers::postfix::Event::Delivery(_), .. }));
/// ```
pub fn parse_line<'a>(line: &'a str, years: &mut YearInference) -> Result<Record<'a>, Error> {
    let mut record = parse_record(line)?;
    years.resolve(&mut record.header.timestamp);
    Ok(record)
}

/// Parses one line like [`parse_line`] but leaves the year of yearless framings unresolved
/// (`year_logged == false`, `year == 0`), so lines can be parsed out of order (on several
/// threads) and resolved in stream order afterwards with [`YearInference::resolve`].
#[inline]
pub fn parse_record(line: &str) -> Result<Record<'_>, Error> {
    parse_record_cached(line, &mut HeaderCache::default())
}

/// [`parse_record`] for the lines of one stream in turn: `cache` carries what the previous
/// line's timestamp looked like, so a line of the same second is read faster. The result is
/// the same as [`parse_record`]'s for every line, whatever the cache holds.
#[inline]
pub fn parse_record_cached<'a>(line: &'a str, cache: &mut HeaderCache) -> Result<Record<'a>, Error> {
    let mut record = Err(Error::Empty);
    parse_record_into(line, cache, &mut record);
    record
}

/// [`parse_record_cached`] writing its result into `out` (whatever `out` held before): a caller
/// that keeps records in a vector writes each one in its place. Returning a record and then
/// storing it copied the whole record (some 250 bytes) twice more per line (callgrind).
#[inline]
pub fn parse_record_into<'a>(line: &'a str, cache: &mut HeaderCache, out: &mut Result<Record<'a>, Error>) {
    let syslog_line = match syslog::parse_syslog_cached(line, cache) {
        Ok(syslog_line) => syslog_line,
        Err(error) => {
            *out = Err(error);
            return;
        }
    };
    let Some(daemon) = postfix_daemon(syslog_line.header.appname) else {
        *out = Ok(other_record(syslog_line));
        return;
    };
    // The header and an empty Postfix body go in first, then the event is written into its
    // place (building a whole `Body` around it copied it once more).
    *out = Ok(Record { header: syslog_line.header, body: Body::Postfix { daemon, event: postfix::Event::Ignored } });
    if let Ok(Record { body, .. }) = out {
        let parsed = postfix::parse_event(daemon, syslog_line.message);
        match (parsed, &mut *body) {
            (Ok(parsed), Body::Postfix { event, .. }) => *event = parsed,
            // Not reached: the body was made a Postfix one just above.
            (Ok(_), _) => {}
            (Err(error), body) => *body = Body::Unparsed(error),
        }
    }
}

/// The record of a line that is not Postfix's. Out of line, and building the whole record, so
/// that the Postfix path of [`parse_record`] (the hot one) compiles as if the other grammars
/// were not there (one more copy of the record per line otherwise, measured with callgrind).
#[inline(never)]
fn other_record(syslog_line: SyslogLine<'_>) -> Record<'_> {
    let tag = syslog_line.header.appname;
    let body = if tag == "smtpd" {
        match opensmtpd::parse_message(syslog_line.message) {
            Ok(event) => Body::Opensmtpd(event),
            Err(error) => Body::Unparsed(error),
        }
    } else if sendmail::is_tag(last_component(tag)) {
        match sendmail::parse_message(syslog_line.message) {
            Ok(event) => Body::Sendmail(event),
            Err(error) => Body::Unparsed(error),
        }
    } else if is_exim(tag) {
        match exim::parse_message(syslog_line.message) {
            Ok(event) => Body::Exim(Box::new(event)),
            Err(error) => Body::Unparsed(error),
        }
    } else {
        Body::Other
    };
    Record { header: syslog_line.header, body }
}

/// `text.split_once(byte)` for an ASCII byte, as a byte scan eight at a time: on the short fields
/// of a log line this is several times faster than the generic `char` pattern search.
#[inline]
pub(crate) fn split_byte(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = scan::find_any(text.as_bytes(), [byte])?;
    // An ASCII byte is always a character boundary.
    Some((&text[..at], &text[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_in_place_is_the_record_returned_whatever_the_slot_held() {
        // One line of every body kind, each written over a slot that holds each kind (and an
        // error) from before, with a header cache shared by all.
        let lines = [
            "2024-11-30T13:35:12.1+00:00 mx1 postfix/smtp[7]: Verified TLS connection established to mx.example.net[192.0.2.25]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
            "2024-11-30T13:35:12.2+00:00 mx1 postfix/smtpd[8]: connect from unknown[2001:db8::7]",
            "2024-11-30T13:35:12.3+00:00 mx1 postfix/smtpd[8]: warning: TLS library problem: broken",
            "2024-11-30T13:35:12.4+00:00 mx1 postfix/smtp[7]: 4F2D: to=<a@example.net>, relay=none, status=deferred (x)",
            "Nov  3 13:35:12 mx1 sm-mta[9]: x2AABBcc: from=<a@b>, size=1, class=0, nrcpts=1, relay=localhost [127.0.0.1]",
            "Nov  3 13:35:12 mx1 exim[10]: 1rA2bC-000ABC-DE <= a@example.org H=mx.example.org [192.0.2.9] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes S=1",
            "Nov  3 13:35:12 mx1 smtpd[11]: 1a2b3c4d5e6f7a8b smtp connected address=192.0.2.7 host=mx.example.org",
            "Nov  3 13:35:12 mx1 cron[12]: something else",
            "Nov  3 13:35:12 mx1 postfix/smtp[7]",
            "not syslog at all",
            "",
        ];
        let mut cache = HeaderCache::default();
        for before in lines {
            for line in lines {
                let mut slot = parse_record(before);
                parse_record_into(line, &mut cache, &mut slot);
                assert_eq!(slot, parse_record(line), "{line:?} over {before:?}");
            }
        }
        assert!(matches!(parse_record(lines[5]), Ok(Record { body: Body::Exim(_), .. })));
        assert!(matches!(parse_record(lines[6]), Ok(Record { body: Body::Opensmtpd(_), .. })));
        assert!(matches!(parse_record(lines[4]), Ok(Record { body: Body::Sendmail(_), .. })));
        assert!(matches!(parse_record(lines[2]), Ok(Record { body: Body::Postfix { .. }, .. })));
    }
}
