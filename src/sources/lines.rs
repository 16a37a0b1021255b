//! Line framing for byte streams (files, stdin): LF-terminated lines with their byte offsets.
//!
//! Reads in large blocks and splits with `memchr`, so the cost per line is a few instructions.
//! A trailing `\r` is left for the parser (which ignores it). A line longer than
//! `max_line_bytes` is not buffered: it is skipped up to its newline and reported as
//! [`Line::Oversized`], so one hostile line cannot make the reader grow without bound.
//! The last line of a stream is delivered even without a final newline.

use std::io::{self, Read};

/// Default block size of reads.
const BLOCK_BYTES: usize = 1 << 20;

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line, without its `\n`.
    Text {
        /// Byte offset of the first byte of the line in the stream.
        offset: u64,
        /// The line's bytes.
        bytes: &'a [u8],
    },
    /// A line longer than the limit, skipped.
    Oversized {
        /// Byte offset of the first byte of the line in the stream.
        offset: u64,
        /// Its full length in bytes.
        len: u64,
    },
}

/// Reads `reader` to its end, calling `on_line` for each line in order.
///
/// `on_line` returns `Err` to stop early (for example on a broken pipe downstream).
pub fn for_each_line<R, F, E>(mut reader: R, max_line_bytes: usize, mut on_line: F) -> Result<u64, E>
where
    R: Read,
    F: FnMut(Line<'_>) -> Result<(), E>,
    E: From<io::Error>,
{
    let max_line_bytes = max_line_bytes.max(1);
    let mut buf = vec![0u8; BLOCK_BYTES.max(max_line_bytes + 1)];
    // Bytes of buf[..filled] are valid; buf[..start] are consumed.
    let mut filled = 0;
    // Offset in the stream of buf[0].
    let mut base: u64 = 0;
    // When skipping an oversized line: its offset and the length seen so far.
    let mut skipping: Option<(u64, u64)> = None;
    loop {
        let n_read = match reader.read(&mut buf[filled..]) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        let at_eof = n_read == 0;
        filled += n_read;
        let mut start = 0;
        if let Some((offset, len)) = skipping {
            match memchr::memchr(b'\n', &buf[..filled]) {
                Some(idx) => {
                    on_line(Line::Oversized { offset, len: len + idx as u64 })?;
                    skipping = None;
                    start = idx + 1;
                }
                None if at_eof => {
                    on_line(Line::Oversized { offset, len: len + filled as u64 })?;
                    return Ok(base + filled as u64);
                }
                None => {
                    skipping = Some((offset, len + filled as u64));
                    base += filled as u64;
                    filled = 0;
                    continue;
                }
            }
        }
        let scan_from = start;
        for idx in memchr::memchr_iter(b'\n', &buf[scan_from..filled]) {
            let end = scan_from + idx;
            let offset = base + start as u64;
            if end - start > max_line_bytes {
                on_line(Line::Oversized { offset, len: (end - start) as u64 })?;
            } else {
                on_line(Line::Text { offset, bytes: &buf[start..end] })?;
            }
            start = end + 1;
        }
        if at_eof {
            if start < filled {
                let offset = base + start as u64;
                if filled - start > max_line_bytes {
                    on_line(Line::Oversized { offset, len: (filled - start) as u64 })?;
                } else {
                    on_line(Line::Text { offset, bytes: &buf[start..filled] })?;
                }
            }
            return Ok(base + filled as u64);
        }
        // Keep the partial line at the front of the buffer.
        let partial = filled - start;
        if partial > max_line_bytes {
            skipping = Some((base + start as u64, partial as u64));
            base += filled as u64;
            filled = 0;
            continue;
        }
        buf.copy_within(start..filled, 0);
        base += start as u64;
        filled = partial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `chunk` bytes per call, to exercise block boundaries.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn collect(data: &[u8], chunk: usize, max: usize) -> Vec<(u64, Result<Vec<u8>, u64>)> {
        let mut got = Vec::new();
        let total = for_each_line::<_, _, io::Error>(Trickle { data, chunk }, max, |line| {
            got.push(match line {
                Line::Text { offset, bytes } => (offset, Ok(bytes.to_vec())),
                Line::Oversized { offset, len } => (offset, Err(len)),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(total, data.len() as u64);
        got
    }

    #[test]
    fn lines_and_offsets_across_chunks() {
        let data = b"one\ntwo\r\n\nlast";
        for chunk in [1, 2, 3, 7, 100] {
            let got = collect(data, chunk, 100);
            let want: Vec<(u64, Result<Vec<u8>, u64>)> = vec![
                (0, Ok(b"one".to_vec())),
                (4, Ok(b"two\r".to_vec())),
                (9, Ok(Vec::new())),
                (10, Ok(b"last".to_vec())),
            ];
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn oversized_lines_are_skipped_and_reported() {
        let mut data = b"ok\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 50));
        data.extend(b"\nafter\n");
        data.extend(std::iter::repeat_n(b'y', 30));
        for chunk in [1, 4, 1000] {
            let got = collect(&data, chunk, 10);
            let want: Vec<(u64, Result<Vec<u8>, u64>)> =
                vec![(0, Ok(b"ok".to_vec())), (3, Err(50)), (54, Ok(b"after".to_vec())), (60, Err(30))];
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn empty_input() {
        assert!(collect(b"", 10, 10).is_empty());
    }
}
