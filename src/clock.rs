//! Log time: turns a parsed [`parsers::Timestamp`] into microseconds since the Unix epoch (UTC).
//!
//! Timestamps that carry an offset (RFC 3339, RFC 5424) are exact. RFC 3164 and `maillog_file`
//! timestamps are the reporter's local wall-clock time without a zone: [`Zone`] says how to read
//! them (`local` = this machine's zone, with DST; `utc`; or a fixed offset). The zone offset is
//! cached per hour of wall-clock time, so the per-line cost is a few integer operations.

use chrono::{Local, NaiveDateTime, Offset, TimeZone};
use parsers::Timestamp;

/// How to read timestamps that have no UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// This machine's local time zone (the usual case: the MTA logs on this host).
    Local,
    /// UTC.
    Utc,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
}

impl std::str::FromStr for Zone {
    type Err = String;

    /// `local`, `utc`, `UTC`, `Z`, `+02:00`, `-0500`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "local" => return Ok(Zone::Local),
            "utc" | "UTC" | "Z" => return Ok(Zone::Utc),
            _ => {}
        }
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => return Err(format!("invalid zone {text:?}: use local, utc or an offset like +02:00")),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid zone offset {text:?}: use +HH:MM"));
        }
        let hours: i32 = digits[..2].parse().map_err(|_| format!("invalid hours in {text:?}"))?;
        let minutes: i32 = digits[2..].parse().map_err(|_| format!("invalid minutes in {text:?}"))?;
        if hours > 23 || minutes > 59 {
            return Err(format!("zone offset out of range: {text:?}"));
        }
        Ok(Zone::Fixed(sign * (hours * 3600 + minutes * 60)))
    }
}

/// Converts timestamps of one stream, caching the zone offset.
#[derive(Debug, Clone)]
pub struct LogClock {
    zone: Zone,
    /// (hour of naive wall-clock time, its offset in seconds).
    cached: Option<(i64, i32)>,
    /// The last timestamp converted, with its fraction cleared, and its UTC seconds: most lines
    /// of a busy log share their second with the line before.
    last_second: Option<(Timestamp, i64)>,
}

impl LogClock {
    /// A converter for `zone`.
    pub fn new(zone: Zone) -> Self {
        LogClock { zone, cached: None, last_second: None }
    }

    /// Microseconds since the epoch, UTC.
    pub fn micros(&mut self, timestamp: &Timestamp) -> i64 {
        let fraction = i64::from(timestamp.nanos / 1000);
        let second = Timestamp { nanos: 0, ..*timestamp };
        if let Some((last, secs)) = &self.last_second {
            if *last == second {
                return secs * 1_000_000 + fraction;
            }
        }
        let naive_secs = timestamp.unix_seconds_naive();
        let offset = if timestamp.offset_secs.is_some() { 0 } else { self.offset(naive_secs) };
        let secs = naive_secs - i64::from(offset);
        self.last_second = Some((second, secs));
        secs * 1_000_000 + fraction
    }

    fn offset(&mut self, naive_secs: i64) -> i32 {
        match self.zone {
            Zone::Utc => 0,
            Zone::Fixed(offset) => offset,
            Zone::Local => {
                let hour = naive_secs.div_euclid(3600);
                if let Some((cached_hour, offset)) = self.cached {
                    if cached_hour == hour {
                        return offset;
                    }
                }
                let offset = chrono::DateTime::from_timestamp(naive_secs, 0)
                    .map(|utc| utc.naive_utc())
                    .and_then(|naive: NaiveDateTime| Local.offset_from_local_datetime(&naive).earliest())
                    .map_or(0, |offset| offset.fix().local_minus_utc());
                self.cached = Some((hour, offset));
                offset
            }
        }
    }
}

/// The year and month of `micros` in `zone`, for [`parsers::YearInference`].
pub fn year_month(zone: Zone, micros: i64) -> (i32, u8) {
    use chrono::Datelike;
    let utc = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    let local = match zone {
        Zone::Local => utc.with_timezone(&Local).naive_local(),
        Zone::Utc => utc.naive_utc(),
        Zone::Fixed(offset) => utc.naive_utc() + chrono::Duration::seconds(i64::from(offset)),
    };
    (local.year(), local.month() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse() {
        assert_eq!("local".parse(), Ok(Zone::Local));
        assert_eq!("utc".parse(), Ok(Zone::Utc));
        assert_eq!("+02:00".parse(), Ok(Zone::Fixed(7200)));
        assert_eq!("-0530".parse(), Ok(Zone::Fixed(-19800)));
        assert!("+25:00".parse::<Zone>().is_err());
        assert!("Europe/Paris".parse::<Zone>().is_err());
    }

    /// 2024-11-03 13:35:12.000005, no year logged, no offset.
    const YEARLESS: Timestamp = Timestamp {
        year: 2024,
        year_logged: false,
        month: 11,
        day: 3,
        hour: 13,
        minute: 35,
        second: 12,
        nanos: 5_000,
        offset_secs: None,
    };

    #[test]
    fn fixed_and_logged_offsets() {
        let yearless = YEARLESS;
        let mut clock = LogClock::new(Zone::Fixed(3600));
        assert_eq!(clock.micros(&yearless), (1_730_640_912 - 3600) * 1_000_000 + 5);
        let logged = Timestamp { offset_secs: Some(0), ..yearless };
        assert_eq!(clock.micros(&logged), 1_730_640_912 * 1_000_000 + 5);
    }

    #[test]
    fn the_cached_second_is_reused_only_for_the_same_second() {
        let base = Timestamp { year_logged: true, offset_secs: Some(0), ..YEARLESS };
        let mut clock = LogClock::new(Zone::Utc);
        assert_eq!(clock.micros(&base), 1_730_640_912_000_005);
        // Same second: the fraction still counts.
        assert_eq!(clock.micros(&Timestamp { nanos: 999_999_000, ..base }), 1_730_640_912_999_999);
        // Any other field, including the offset and the year, is a new second.
        assert_eq!(clock.micros(&Timestamp { offset_secs: Some(3600), ..base }), 1_730_637_312_000_005);
        assert_eq!(clock.micros(&Timestamp { second: 13, ..base }), 1_730_640_913_000_005);
        assert_eq!(clock.micros(&Timestamp { year: 2025, ..base }), 1_762_176_912_000_005);
        assert_eq!(clock.micros(&Timestamp { offset_secs: None, ..base }), 1_730_640_912_000_005);
    }
}
