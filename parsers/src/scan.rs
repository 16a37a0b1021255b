//! Byte searches eight bytes at a time (SWAR: SIMD within a register), for the short scans of
//! every line: the end of the program tag, of the host name, of a peer's name and address, and
//! short literals inside a message ([`find`]).
//!
//! `std` offers no multi-byte `memchr`, and this crate takes no dependency beyond `nom`; a
//! byte-at-a-time loop with a table lookup cost about five instructions per byte, this about
//! two. Plain safe code: words are read with `u64::from_le_bytes` on eight-byte slices.
//!
//! **Invariant:** [`find_any`] returns exactly what
//! `bytes.iter().position(|b| needles.contains(b))` returns, for every input.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// A word with the high bit set in each byte of `word` that is zero, and possibly in bytes
/// above a zero byte (a borrow); the lowest set bit is always exact, which is all that is used.
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(LO) & !word & HI
}

/// The index of the first byte of `bytes` that is one of `needles`.
#[inline(always)]
pub(crate) fn find_any<const N: usize>(bytes: &[u8], needles: [u8; N]) -> Option<usize> {
    let broadcast = needles.map(|needle| LO * u64::from(needle));
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let mut hits = 0;
        for pattern in broadcast {
            hits |= zero_bytes(word ^ pattern);
        }
        if hits != 0 {
            // Little endian: the lowest set bit is the first byte in memory.
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|b| needles.contains(b)).map(|idx| at + idx)
}

/// The index of the first occurrence of `needle` in `haystack` (`str::find` for a short literal):
/// candidates are found by the needle's first byte, eight bytes at a time, and checked in place.
/// `str::find` with a `&str` pattern builds a Two-Way searcher on every call, about a thousand
/// instructions before the first byte is read: more than the whole search on a log line.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some(&first) = needle.first() else { return Some(0) };
    let mut from = 0;
    while let Some(idx) = find_any(&haystack[from..], [first]) {
        let at = from + idx;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive<const N: usize>(bytes: &[u8], needles: [u8; N]) -> Option<usize> {
        bytes.iter().position(|b| needles.contains(b))
    }

    #[test]
    fn agrees_with_a_plain_search_at_every_position_and_length() {
        // Every length to 40, the needle at every position, and bytes that defeat naive SWAR
        // (0x00, 0x80, 0xff, needle ± 1, a needle right after a byte equal to needle - 1).
        let fillers = [b'a', 0x00, 0x80, 0xff, b'[' - 1, b'[' + 1, b':' - 1, 0x7f, 0x01];
        for len in 0..40 {
            for filler in fillers {
                let mut bytes = vec![filler; len];
                assert_eq!(find_any(&bytes, [b'[', b':', b' ']), naive(&bytes, [b'[', b':', b' ']));
                for pos in 0..len {
                    for needle in [b'[', b':', b' '] {
                        bytes.fill(filler);
                        bytes[pos] = needle;
                        if pos + 1 < len {
                            bytes[pos + 1] = b' ';
                        }
                        if pos > 0 {
                            bytes[pos - 1] = needle.wrapping_sub(1);
                        }
                        assert_eq!(find_any(&bytes, [b'[', b':', b' ']), naive(&bytes, [b'[', b':', b' ']));
                        assert_eq!(find_any(&bytes, [needle]), Some(bytes.iter().position(|b| *b == needle).unwrap()));
                    }
                }
            }
        }
    }

    #[test]
    fn find_agrees_with_str_find() {
        // Haystacks over a tiny alphabet, so partial matches and overlaps are frequent.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let haystack: String = (0..(state % 40) as usize)
                .map(|i| [' ', 'f', 'r', 'o', 'm', 'x'][((state >> (i % 60)) % 6) as usize])
                .collect();
            for needle in ["", " from ", "from", "f", "ff", "x from", "from x", "mx", " "] {
                assert_eq!(
                    find(haystack.as_bytes(), needle.as_bytes()),
                    haystack.find(needle),
                    "{haystack:?} {needle:?}"
                );
            }
        }
    }

    #[test]
    fn agrees_with_a_plain_search_on_pseudo_random_bytes() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 48];
            for byte in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly a small alphabet around the needles, so they are often hit.
                *byte = if state.is_multiple_of(4) { (state >> 8) as u8 } else { b'Y' + (state >> 8) as u8 % 8 };
            }
            let len = (state >> 40) as usize % 49;
            let needles = [b'[', b']', b'^'];
            assert_eq!(find_any(&bytes[..len], needles), naive(&bytes[..len], needles), "{:?}", &bytes[..len]);
        }
    }
}
