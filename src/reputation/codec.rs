//! The compact binary form of a [`HostHistory`], as `IndraStore` keeps it in memory and on disk.
//!
//! A decoded history of a busy endpoint (30 days, a full ring of 16) takes about 3 kB of heap;
//! this form takes about a sixth of that, which is what lets a store hold a million endpoints in
//! well under a gigabyte. It is lossless: `decode(encode(h)) == h` for every history, including
//! unsorted or out-of-range ones (the rollup code may build any value), and it never panics on
//! bad input: a truncated or garbled value is a [`DecodeError`].
//!
//! Layout (integers are LEB128 varints; "signed" ones are zigzag-coded, and time and day numbers
//! are stored as wrapping differences from the previous value so that sorted lists stay small):
//!
//! ```text
//! history := first_seen:signed  (last_seen - first_seen):signed  reused
//!            n_days day*  n_recent recent*  n_hostnames string*  n_domains string*
//!            n_ports port*        (snapshot version 3 on; version 2 ends after the domains)
//!            [n_certs cert*]      (snapshot version 5 on; versions 3-4 end after the ports,
//!                                  which decodes as no certificates)
//! day     := (day - previous day, from 0):signed  mask  value*
//!            mask: bit i set = field i is not zero; fields by_outcome[0..7], by_trust[0..4],
//!            trusted_sources, cert_failures, min_protocol, max_protocol, min_bits; value*: the
//!            non-zero fields in that order
//! recent  := (ts - previous ts, from first_seen):signed  flags  protocol:u8  bits  event_id
//!            flags: outcome index (bits 0-2, as Outcome::ALL) | trust (bits 3-5, 0 = none,
//!            1 + trust_index) | local_policy (6) | cert_failure (7) | trusted_source (8) |
//!            event id is 16 lower-case hex digits (9)
//!            event_id: 8 bytes big-endian when bit 9 is set, else a string
//! cert    := identity:string  subject:opt  issuer:opt  (first_seen - history first_seen):signed
//!            (last_seen - first_seen):signed  count
//! opt     := 0 (none) | length + 1  UTF-8 bytes
//! string  := length  UTF-8 bytes
//! ```
//!
//! The layout has no version of its own: it is part of the snapshot format of `indra.rs`, whose
//! version changes with it.

use crate::observation::{Outcome, Trust};

use super::history::{CertSeen, DayStats, HostHistory, Recent};

/// Why bytes are not a history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end in the middle of a value.
    #[error("truncated history")]
    Truncated,
    /// A varint longer than its type, or a value out of its field's range.
    #[error("history field {0} out of range")]
    OutOfRange(&'static str),
    /// Unknown flag bits, an unknown outcome or trust.
    #[error("invalid history flags {0:#x}")]
    Flags(u64),
    /// A host name, domain or event id that is not UTF-8.
    #[error("history string is not UTF-8")]
    NotUtf8,
    /// Bytes after the end of the history.
    #[error("{0} bytes after the end of the history")]
    Trailing(usize),
}

const HEX_ID: u64 = 1 << 9;
const KNOWN_FLAGS: u64 = (1 << 10) - 1;

/// Appends the compact form of `history` to `out`.
pub fn encode(history: &HostHistory, out: &mut Vec<u8>) {
    put_signed(out, history.first_seen);
    put_signed(out, history.last_seen.wrapping_sub(history.first_seen));
    put(out, u64::from(history.reused));
    put(out, history.days.len() as u64);
    let mut previous_day = 0u32;
    for day in &history.days {
        put_signed(out, i64::from(day.day) - i64::from(previous_day));
        previous_day = day.day;
        let fields = day_fields(day);
        let mask = fields.iter().enumerate().filter(|(_, v)| **v != 0).fold(0u64, |m, (i, _)| m | 1 << i);
        put(out, mask);
        for value in fields.iter().filter(|v| **v != 0) {
            put(out, u64::from(*value));
        }
    }
    put(out, history.recent.len() as u64);
    let mut previous_ts = history.first_seen;
    for recent in &history.recent {
        put_signed(out, recent.ts.wrapping_sub(previous_ts));
        previous_ts = recent.ts;
        let outcome = Outcome::ALL.iter().position(|o| *o == recent.outcome).unwrap_or(6) as u64;
        let trust = recent.trust.map_or(0, |t| 1 + super::history::trust_index(t) as u64);
        let hex_id = hex_id(&recent.event_id);
        let flags = outcome
            | trust << 3
            | u64::from(recent.local_policy) << 6
            | u64::from(recent.cert_failure) << 7
            | u64::from(recent.trusted_source) << 8
            | if hex_id.is_some() { HEX_ID } else { 0 };
        put(out, flags);
        out.push(recent.protocol);
        put(out, u64::from(recent.bits));
        match hex_id {
            Some(id) => out.extend_from_slice(&id.to_be_bytes()),
            None => put_str(out, &recent.event_id),
        }
    }
    for names in [&history.hostnames, &history.domains] {
        put(out, names.len() as u64);
        for name in names {
            put_str(out, name);
        }
    }
    put(out, history.ports.len() as u64);
    for port in &history.ports {
        put(out, u64::from(*port));
    }
    put(out, history.certs.len() as u64);
    for cert in &history.certs {
        put_str(out, &cert.identity);
        for name in [&cert.subject, &cert.issuer] {
            match name {
                None => put(out, 0),
                Some(name) => {
                    put(out, name.len() as u64 + 1);
                    out.extend_from_slice(name.as_bytes());
                }
            }
        }
        put_signed(out, cert.first_seen.wrapping_sub(history.first_seen));
        put_signed(out, cert.last_seen.wrapping_sub(cert.first_seen));
        put(out, u64::from(cert.count));
    }
}

/// The compact form of `history` as a new vector.
pub fn to_bytes(history: &HostHistory) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 12 * history.days.len() + 20 * history.recent.len());
    encode(history, &mut out);
    out
}

/// Decodes a whole value made by [`encode`], or by the encoder of snapshot versions 3–4, which
/// ended after the ports (no certificates: a value of version 4 is a value of version 5).
pub fn decode(bytes: &[u8]) -> Result<HostHistory, DecodeError> {
    decode_layout(bytes, true, true)
}

/// Decodes a value of snapshot version 2, which had no ports (they decode as none).
pub fn decode_v2(bytes: &[u8]) -> Result<HostHistory, DecodeError> {
    decode_layout(bytes, false, false)
}

fn decode_layout(bytes: &[u8], with_ports: bool, with_certs: bool) -> Result<HostHistory, DecodeError> {
    let mut input = Reader { bytes, at: 0 };
    let first_seen = input.signed()?;
    let last_seen = first_seen.wrapping_add(input.signed()?);
    let reused = input.u32("reused")?;
    let n_days = input.count(2)?;
    let mut days = Vec::with_capacity(n_days);
    let mut previous_day = 0i64;
    for _ in 0..n_days {
        let day = previous_day.checked_add(input.signed()?).ok_or(DecodeError::OutOfRange("day"))?;
        previous_day = day;
        let day = u32::try_from(day).map_err(|_| DecodeError::OutOfRange("day"))?;
        let mask = input.varint()?;
        if mask >> 16 != 0 {
            return Err(DecodeError::OutOfRange("day mask"));
        }
        let mut fields = [0u32; 16];
        for (idx, field) in fields.iter_mut().enumerate() {
            if mask & 1 << idx != 0 {
                *field = input.u32("day value")?;
            }
        }
        let byte = |value: u32, name| u8::try_from(value).map_err(|_| DecodeError::OutOfRange(name));
        let mut stats = DayStats {
            day,
            trusted_sources: fields[11],
            cert_failures: fields[12],
            min_protocol: byte(fields[13], "min_protocol")?,
            max_protocol: byte(fields[14], "max_protocol")?,
            min_bits: fields[15],
            ..DayStats::default()
        };
        stats.by_outcome.copy_from_slice(&fields[..7]);
        stats.by_trust.copy_from_slice(&fields[7..11]);
        days.push(stats);
    }
    let n_recent = input.count(4)?;
    let mut recent = Vec::with_capacity(n_recent);
    let mut previous_ts = first_seen;
    for _ in 0..n_recent {
        let ts = previous_ts.wrapping_add(input.signed()?);
        previous_ts = ts;
        let flags = input.varint()?;
        let outcome = Outcome::ALL.get((flags & 7) as usize).copied();
        let trust = match flags >> 3 & 7 {
            0 => Some(None),
            1 => Some(Some(Trust::Verified)),
            2 => Some(Some(Trust::Trusted)),
            3 => Some(Some(Trust::Untrusted)),
            4 => Some(Some(Trust::Anonymous)),
            _ => None,
        };
        let (Some(outcome), Some(trust), 0) = (outcome, trust, flags & !KNOWN_FLAGS) else {
            return Err(DecodeError::Flags(flags));
        };
        let protocol = input.byte()?;
        let bits = input.u32("bits")?;
        let event_id = if flags & HEX_ID != 0 {
            let id = input.take(8)?;
            format!("{:016x}", u64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]))
        } else {
            input.string()?
        };
        recent.push(Recent {
            ts,
            outcome,
            trust,
            protocol,
            bits,
            local_policy: flags & 1 << 6 != 0,
            cert_failure: flags & 1 << 7 != 0,
            trusted_source: flags & 1 << 8 != 0,
            event_id,
        });
    }
    let mut names = [Vec::new(), Vec::new()];
    for list in &mut names {
        let n = input.count(1)?;
        list.reserve_exact(n);
        for _ in 0..n {
            list.push(input.string()?);
        }
    }
    let mut ports = Vec::new();
    if with_ports {
        let n = input.count(1)?;
        ports.reserve_exact(n);
        for _ in 0..n {
            let port = input.varint()?;
            ports.push(u16::try_from(port).map_err(|_| DecodeError::OutOfRange("port"))?);
        }
    }
    let mut certs = Vec::new();
    if with_certs && input.at < bytes.len() {
        let n = input.count(6)?;
        certs.reserve_exact(n);
        for _ in 0..n {
            let identity = input.string()?;
            let mut names = [None, None];
            for name in &mut names {
                let len = input.varint()?;
                if len > 0 {
                    let len = usize::try_from(len - 1).map_err(|_| DecodeError::Truncated)?;
                    let bytes = input.take(len)?;
                    *name = Some(std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?.to_owned());
                }
            }
            let cert_first = first_seen.wrapping_add(input.signed()?);
            let cert_last = cert_first.wrapping_add(input.signed()?);
            let count = input.u32("cert count")?;
            let [subject, issuer] = names;
            certs.push(CertSeen { identity, subject, issuer, first_seen: cert_first, last_seen: cert_last, count });
        }
    }
    if input.at != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - input.at));
    }
    let [hostnames, domains] = names;
    Ok(HostHistory { first_seen, last_seen, reused, days, recent, hostnames, domains, ports, certs })
}

fn day_fields(day: &DayStats) -> [u32; 16] {
    let mut fields = [0u32; 16];
    fields[..7].copy_from_slice(&day.by_outcome);
    fields[7..11].copy_from_slice(&day.by_trust);
    fields[11] = day.trusted_sources;
    fields[12] = day.cert_failures;
    fields[13] = u32::from(day.min_protocol);
    fields[14] = u32::from(day.max_protocol);
    fields[15] = day.min_bits;
    fields
}

/// The value of an event id of exactly 16 lower-case hex digits (the form `event_id` makes).
fn hex_id(text: &str) -> Option<u64> {
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if text.len() == 16 && text.as_bytes().iter().all(lower_hex) {
        u64::from_str_radix(text, 16).ok()
    } else {
        None
    }
}

/// Appends `value` as a LEB128 varint.
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over bytes being decoded.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            // The tenth byte may only hold the top bit of a u64.
            if shift == 63 && byte > 1 {
                return Err(DecodeError::OutOfRange("varint"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::OutOfRange("varint"))
    }

    fn signed(&mut self) -> Result<i64, DecodeError> {
        let value = self.varint()?;
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    fn u32(&mut self, name: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::OutOfRange(name))
    }

    /// A count of items of at least `min_bytes` each: more than the rest could hold is truncated
    /// input, caught before anything is allocated for it.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let rest = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes as u64) > rest {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or(DecodeError::Truncated)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::store::conformance::sample_history;

    fn check_round_trip(history: &HostHistory) -> Vec<u8> {
        let bytes = to_bytes(history);
        assert_eq!(decode(&bytes).as_ref(), Ok(history));
        bytes
    }

    #[test]
    fn round_trips() {
        check_round_trip(&HostHistory::default());
        let sample = sample_history("192.0.2.1", 3);
        let bytes = check_round_trip(&sample);
        assert!(bytes.len() < 200 + 100, "{} bytes (about 100 of them two certificates)", bytes.len());
        // Unsorted, extreme and unusual values survive too.
        let mut odd = sample.clone();
        odd.first_seen = i64::MIN;
        odd.last_seen = i64::MAX;
        odd.reused = u32::MAX;
        odd.days.reverse();
        odd.days[0].day = u32::MAX;
        odd.days[1].day = 0;
        odd.days[2] = DayStats {
            day: 7,
            by_outcome: [u32::MAX; 7],
            by_trust: [1, 2, 3, 4],
            trusted_sources: 5,
            cert_failures: 6,
            min_protocol: 255,
            max_protocol: 9,
            min_bits: u32::MAX,
        };
        odd.recent.reverse();
        odd.recent[0].ts = i64::MIN;
        odd.recent[1].ts = i64::MAX;
        odd.recent[0].event_id = "0123456789ABCDEF".into();
        odd.recent[1].event_id = String::new();
        odd.recent[2].event_id = "ffffffffffffffff".into();
        odd.recent[3].event_id = "not hex, ünïcode".into();
        odd.recent[4].protocol = 255;
        odd.recent[4].local_policy = true;
        odd.recent[4].trust = Some(Trust::Anonymous);
        odd.hostnames = vec!["z.example".into(), String::new(), "ä.example".into()];
        odd.ports = vec![u16::MAX, 0, 25];
        check_round_trip(&odd);
    }

    #[test]
    fn every_outcome_and_trust_round_trips() {
        let mut history = sample_history("192.0.2.1", 1);
        let template = history.recent[0].clone();
        history.recent.clear();
        for outcome in Outcome::ALL {
            for trust in
                [None, Some(Trust::Verified), Some(Trust::Trusted), Some(Trust::Untrusted), Some(Trust::Anonymous)]
            {
                for bools in 0..8u8 {
                    history.recent.push(Recent {
                        outcome,
                        trust,
                        local_policy: bools & 1 != 0,
                        cert_failure: bools & 2 != 0,
                        trusted_source: bools & 4 != 0,
                        ..template.clone()
                    });
                }
            }
        }
        check_round_trip(&history);
    }

    #[test]
    fn version_2_values_have_no_ports() {
        let mut history = sample_history("192.0.2.1", 3);
        history.ports.clear();
        history.certs.clear();
        let mut bytes = to_bytes(&history);
        assert_eq!(bytes.pop(), Some(0), "an empty certificate list is one zero byte at the end");
        assert_eq!(decode(&bytes), Ok(history.clone()), "a version-4 value (no certificates) decodes");
        assert_eq!(bytes.pop(), Some(0), "an empty port list is one zero byte before it");
        assert_eq!(decode_v2(&bytes), Ok(history.clone()));
        assert_eq!(decode(&bytes), Err(DecodeError::Truncated));
        let mut ports = sample_history("192.0.2.1", 3);
        ports.ports = vec![25, 65_535];
        assert!(decode_v2(&to_bytes(&ports)).is_err(), "a version-3 value is not a version-2 one");
        let mut too_big = to_bytes(&history);
        too_big.truncate(too_big.len() - 2);
        too_big.extend_from_slice(&[1, 0x80, 0x80, 0x04]);
        assert_eq!(decode(&too_big), Err(DecodeError::OutOfRange("port")));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let history = sample_history("192.0.2.1", 3);
        let bytes = to_bytes(&history);
        let mut without_certs = history.clone();
        without_certs.certs.clear();
        // The one cut that is a whole value: a version-4 value, which ends before the certificates
        // (the graph file's checksum, not the codec, catches a history cut there).
        let v4_len = to_bytes(&without_certs).len() - 1;
        for len in 0..bytes.len() {
            let want = if len == v4_len { Ok(without_certs.clone()) } else { Err(DecodeError::Truncated) };
            assert_eq!(decode(&bytes[..len]), want, "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn garbled_bytes_are_errors_not_panics() {
        let bytes = to_bytes(&sample_history("192.0.2.1", 3));
        // Every single-byte change either decodes to some history or is an error; none panics,
        // and a change is never silently dropped (it decodes to a different history or fails).
        let want = decode(&bytes).unwrap();
        for idx in 0..bytes.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = bytes.clone();
                if bad[idx] == value {
                    continue;
                }
                bad[idx] = value;
                if let Ok(history) = decode(&bad) {
                    assert_ne!(history, want, "byte {idx} = {value:#x} was ignored");
                }
            }
        }
        let cases: [(&[u8], DecodeError); 5] = [
            (&[0xff; 11], DecodeError::OutOfRange("varint")),
            (&[0, 0, 0x80, 0x80, 0x80, 0x80, 0x10], DecodeError::OutOfRange("reused")),
            (&[0, 0, 0, 0, 1, 0, 7, 0, 0], DecodeError::Flags(7)),
            (&[0, 0, 0, 1, 0, 0x80, 0x80, 0x04], DecodeError::OutOfRange("day mask")),
            (&[0, 0, 0, 0, 0, 1, 1, 0xff], DecodeError::NotUtf8),
        ];
        for (bad, want) in cases {
            assert_eq!(decode(bad), Err(want), "{bad:?}");
        }
    }

    #[test]
    fn the_day_mask_and_hex_ids_keep_it_small() {
        // One TLS day and one recent observation with an event id as `event_id` makes it (plus
        // one byte for the empty port list of version 3).
        let mut history = sample_history("192.0.2.1", 1);
        history.days.truncate(1);
        history.recent.truncate(1);
        history.hostnames.clear();
        history.domains.clear();
        history.ports.clear();
        history.certs.clear();
        let bytes = to_bytes(&history);
        assert!(bytes.len() <= 42, "{} bytes: {bytes:?}", bytes.len());
        assert_eq!(hex_id("00000000000000ff"), Some(255));
        assert_eq!(hex_id("00000000000000FF"), None);
        assert_eq!(hex_id("+0000000000000ff"), None);
        assert_eq!(hex_id("ff"), None);
    }
}
