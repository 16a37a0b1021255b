//! The `host[addr]:port` notation that Postfix uses for every remote endpoint.
//!
//! Postfix writes `namaddr` as `host[addr]` or `host[addr]:port` (`smtp_proto.c`, `smtpd.c`).
//! IPv6 addresses appear bare inside the brackets (`mail.sys4.de[2001:1578:400:111::7]:25`),
//! the host is `unknown` when reverse DNS failed, may be the address itself, and may be empty
//! (`[192.0.2.1]:25` in tlsproxy and postscreen lines). For LMTP over a unix socket the
//! "address" is a socket path (`host[private/dovecot-lmtp]`). This module only slices the text;
//! deciding whether the address is an IP is the caller's business.

use nom::IResult;

/// A remote endpoint as logged: `hostname[addr]:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Peer<'a> {
    /// The name before the bracket: a DNS name, `unknown`, the address again, or empty.
    pub hostname: &'a str,
    /// What is inside the brackets: an IPv4 or IPv6 address, or a unix socket path.
    pub addr: &'a str,
    /// The port after the closing bracket, when logged.
    pub port: Option<u16>,
}

/// `mx.example.net[192.0.2.7]:25`, `unknown[2001:db8::1]`, `[192.0.2.1]:25`.
///
/// The port is taken only when `:` is followed by digits, so the `:` that ends a namaddr inside
/// a sentence (`…[192.0.2.7]:25: TLSv1.3 …`, `…[192.0.2.7]: -1`) is left in the input.
/// Written with byte scans rather than combinators: it runs on most lines.
pub fn peer(input: &str) -> IResult<&str, Peer<'_>> {
    let fail = || nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Char));
    let bytes = input.as_bytes();
    let open = crate::scan::find_any(bytes, [b'[', b' ', b',']).ok_or_else(fail)?;
    if bytes[open] != b'[' {
        return Err(fail());
    }
    let close = open + 1 + crate::scan::find_any(&bytes[open + 1..], [b']']).ok_or_else(fail)?;
    if close == open + 1 {
        return Err(fail());
    }
    let (hostname, addr) = (&input[..open], &input[open + 1..close]);
    let mut rest = &input[close + 1..];
    let mut port = None;
    if let Some(after) = rest.strip_prefix(':') {
        let n_digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if n_digits > 0 {
            if let Ok(value) = after[..n_digits].parse::<u16>() {
                port = Some(value);
                rest = &after[n_digits..];
            }
        }
    }
    Ok((rest, Peer { hostname, addr, port }))
}

impl Peer<'_> {
    /// True when the address is a unix socket path rather than a network address.
    pub fn is_unix_socket(&self) -> bool {
        // `str::contains` costs a generic search setup per call; addresses are short.
        crate::scan::find_any(self.addr.as_bytes(), [b'/']).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_forms() {
        let cases: &[(&str, Peer<'_>, &str)] = &[
            (
                "mx.example.net[192.0.2.7]:25: TLS",
                Peer { hostname: "mx.example.net", addr: "192.0.2.7", port: Some(25) },
                ": TLS",
            ),
            (
                "mail.sys4.de[2001:1578:400:111::7]:25",
                Peer { hostname: "mail.sys4.de", addr: "2001:1578:400:111::7", port: Some(25) },
                "",
            ),
            ("unknown[72.13.58.7]: x", Peer { hostname: "unknown", addr: "72.13.58.7", port: None }, ": x"),
            ("[192.0.2.1]:2525", Peer { hostname: "", addr: "192.0.2.1", port: Some(2525) }, ""),
            (
                "host[private/dovecot-lmtp], delay",
                Peer { hostname: "host", addr: "private/dovecot-lmtp", port: None },
                ", delay",
            ),
        ];
        for (input, want, rest) in cases {
            let (got_rest, got) = peer(input).unwrap();
            assert_eq!((&got, got_rest), (want, *rest), "input: {input}");
        }
    }

    #[test]
    fn peer_rejects() {
        for input in ["", "host", "host[", "host[]", "host[1.2.3.4", "host name[1.2.3.4]"] {
            assert!(peer(input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn port_out_of_range_is_not_a_port() {
        let (rest, got) = peer("h[192.0.2.1]:99999").unwrap();
        assert_eq!(got.port, None);
        assert_eq!(rest, ":99999");
    }
}
