//! Compressed logs: logrotate compresses rotated logs (`mail.log.2.gz`, Debian's default), so an
//! operator's `tlsledger parse /var/log/mail.log*` meets gzip files among plain ones.
//!
//! A file is recognised by its first bytes (the format's magic number), never by its name:
//! a syslog line cannot start with any of them (it starts with `<`, a digit or a month name).
//! `parse` reads gzip transparently (every member of a multi-member file, as `zcat` does) and
//! refuses the other formats with an error that says how to read them; file follow skips every
//! compressed file (a compressed rotated log is a generation it has already read as plain text).

use std::io::{self, BufReader, Read};

/// A compression format recognised by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (RFC 1952): `1f 8b`.
    Gzip,
    /// Zstandard: `28 b5 2f fd`.
    Zstd,
    /// xz: `fd 37 7a 58 5a 00`.
    Xz,
    /// bzip2: `BZh` and a block-size digit.
    Bzip2,
}

impl Compression {
    /// The usual name of the format's tool.
    pub fn tool(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The command that writes a file of this format to stdout.
    pub fn cat(self) -> &'static str {
        match self {
            Compression::Gzip => "zcat",
            Compression::Zstd => "zstdcat",
            Compression::Xz => "xzcat",
            Compression::Bzip2 => "bzcat",
        }
    }
}

/// Bytes [`detect`] needs to see.
pub const MAGIC_BYTES: usize = 6;

/// The format whose magic number `head` (the first bytes of a file, at most [`MAGIC_BYTES`]
/// needed) starts with, if any.
pub fn detect(head: &[u8]) -> Option<Compression> {
    match head {
        [0x1f, 0x8b, ..] => Some(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Some(Compression::Xz),
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some(Compression::Bzip2),
        _ => None,
    }
}

/// Reads from `reader` until `buf` is full or the reader ends; returns how much was read.
pub fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// `reader` as text: its first bytes are looked at, and a gzip stream is decompressed. Returns
/// the reader and the format it was in; another compression format is an error naming the
/// command that reads it. Nothing is read beyond the magic number before the caller reads.
pub fn open(mut reader: Box<dyn Read + Send>, name: &str) -> io::Result<(Box<dyn Read + Send>, Option<Compression>)> {
    let mut head = [0u8; MAGIC_BYTES];
    let filled = fill(&mut reader, &mut head)?;
    let found = detect(&head[..filled]);
    // The bytes looked at are read again, first.
    let whole = io::Cursor::new(head[..filled].to_vec()).chain(reader);
    match found {
        None => Ok((Box::new(whole), None)),
        Some(Compression::Gzip) => {
            // Buffered: the decoder reads its input in small pieces.
            let decoder = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, whole));
            Ok((Box::new(decoder), found))
        }
        Some(other) => {
            let how = if name == "stdin" {
                format!("decompress it first (`{}`)", other.cat())
            } else {
                format!("`{} {name} | tlsledger parse -`", other.cat())
            };
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} is {}-compressed; only gzip is read directly: {how}", other.tool()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(bytes: Vec<u8>) -> io::Result<(Vec<u8>, Option<Compression>)> {
        let (mut reader, found) = open(Box::new(io::Cursor::new(bytes)), "x.log")?;
        let mut text = Vec::new();
        reader.read_to_end(&mut text)?;
        Ok((text, found))
    }

    #[test]
    fn magic_numbers() {
        assert_eq!(detect(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Compression::Zstd));
        assert_eq!(detect(b"\xfd7zXZ\x00"), Some(Compression::Xz));
        assert_eq!(detect(b"BZh9"), Some(Compression::Bzip2));
        for text in
            [&b""[..], b"\x1f", b"BZh", b"BZhx", b"Nov  3 13:35:12 mx", b"<22>1 2024", b"2024-11-30T", b"\xfd7zXZ"]
        {
            assert_eq!(detect(text), None, "{text:?}");
        }
    }

    #[test]
    fn plain_text_passes_unchanged_and_gzip_is_decompressed() {
        let text = b"Nov  3 13:35:12 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]\n".repeat(1000);
        assert_eq!(read_all(text.clone()).unwrap(), (text.clone(), None));
        // Shorter than a magic number, and empty.
        assert_eq!(read_all(b"N\n".to_vec()).unwrap(), (b"N\n".to_vec(), None));
        assert_eq!(read_all(Vec::new()).unwrap(), (Vec::new(), None));
        assert_eq!(read_all(gzip(&text)).unwrap(), (text.clone(), Some(Compression::Gzip)));
        // Two members (`cat a.gz b.gz`), as zcat reads them.
        let mut two = gzip(&text[..500]);
        two.extend(gzip(&text[500..]));
        assert_eq!(read_all(two).unwrap().0, text);
    }

    #[test]
    fn other_formats_and_broken_gzip_are_errors() {
        let error = read_all(b"\xfd7zXZ\x00rest".to_vec()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "x.log is xz-compressed; only gzip is read directly: `xzcat x.log | tlsledger parse -`"
        );
        let whole = gzip(&b"Nov  3 13:35:12 mx1 postfix/smtpd[1]: connect from a[192.0.2.1]\n".repeat(100));
        // Cut short, and corrupted in the middle.
        assert!(read_all(whole[..whole.len() / 2].to_vec()).is_err());
        let mut corrupt = whole.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        corrupt[middle + 1] ^= 0xff;
        assert!(read_all(corrupt).is_err());
    }
}
