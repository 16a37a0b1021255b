//! Syslog receivers: UDP and unix datagram sockets (one message per datagram) and TCP with RFC 6587 framing (octet
//! counting, `LEN SP MSG`, or LF-terminated non-transparent framing, detected per message as
//! rsyslog does).
//!
//! Syslog can be forged by anyone who can reach the port, so: listeners are meant to bind
//! loopback (the CLI's default), every peer is checked against an allow-list before anything is
//! read, TCP connections are limited in number, messages in size (a longer one is skipped to its
//! end and counted), and every refusal and drop is counted per source address.
//!
//! **Delivery guarantee:** best-effort, like every plain syslog transport (no application-level
//! acknowledgement exists): UDP datagrams are dropped and counted when the pipeline is full; TCP
//! applies back-pressure to the sender instead, but messages in flight are lost if tlsledger
//! stops.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ipnet::IpNet;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::Sender;
use tokio::sync::Semaphore;

/// Messages of one sender received together: the complete frames of one TCP read (at most
/// [`BATCH_BYTES`] of them), or one datagram. One channel send and one counter update per batch
/// instead of per message is what lets the receiver keep up with rsyslog's imtcp.
#[derive(Debug)]
pub struct SyslogBatch {
    /// `udp`, `tcp` or `unix`.
    pub transport: &'static str,
    /// The sender's address.
    pub peer: IpAddr,
    /// The messages (syslog lines, without framing) back to back.
    pub data: Vec<u8>,
    /// Where each message ends in `data`.
    pub ends: Vec<usize>,
}

/// A TCP batch is handed on when it holds this many bytes, even if more input is buffered.
pub const BATCH_BYTES: usize = 256 * 1024;

impl SyslogBatch {
    fn new(transport: &'static str, peer: IpAddr) -> Self {
        SyslogBatch { transport, peer, data: Vec::new(), ends: Vec::new() }
    }

    /// A batch of one message.
    fn one(transport: &'static str, peer: IpAddr, bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        SyslogBatch { transport, peer, data: bytes, ends: vec![end] }
    }

    fn push(&mut self, message: &[u8]) {
        self.data.extend_from_slice(message);
        self.ends.push(self.data.len());
    }

    /// The messages, in the order received.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let message = &self.data[start..end];
            start = end;
            message
        })
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Settings of the receivers.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// Addresses to receive UDP on.
    pub udp: Vec<SocketAddr>,
    /// Addresses to accept TCP on.
    pub tcp: Vec<SocketAddr>,
    /// Unix datagram sockets to create and receive on (like `/dev/log`); local senders only,
    /// guarded by the socket file's permissions (mode 0660), not by the allow-list.
    pub unix: Vec<std::path::PathBuf>,
    /// Senders allowed; everything else is refused and counted.
    pub allow: Vec<IpNet>,
    /// Longest message accepted; longer ones are skipped and counted.
    pub max_message_bytes: usize,
    /// Most TCP connections at once; more are refused and counted.
    pub max_connections: usize,
}

/// Counters per sender address.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerCounters {
    /// Messages handed on.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Messages longer than the limit, skipped.
    pub oversized: u64,
    /// UDP datagrams dropped because the pipeline was full.
    pub dropped: u64,
    /// Datagrams or connections refused: not in the allow-list.
    pub refused: u64,
    /// TCP connections refused: too many open.
    pub over_limit: u64,
    /// TCP connections closed because of a framing error.
    pub framing_errors: u64,
}

/// Counters of all receivers, by sender address.
pub type SyslogCounters = Arc<Mutex<BTreeMap<IpAddr, PeerCounters>>>;

fn count(counters: &SyslogCounters, peer: IpAddr, update: impl FnOnce(&mut PeerCounters)) {
    if let Ok(mut map) = counters.lock() {
        // Refused senders could fill the map with forged addresses: keep it bounded.
        if map.len() < 10_000 || map.contains_key(&peer) {
            update(map.entry(peer).or_default());
        }
    }
}

/// True when `peer` is in the allow-list (IPv4-mapped IPv6 addresses match IPv4 entries).
pub fn allowed(allow: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    allow.iter().any(|net| net.contains(&peer))
}

/// Binds every listener (so a bad address fails at once) and spawns their tasks on the current
/// runtime; messages go to `sender`.
pub async fn spawn(config: SyslogConfig, sender: Sender<SyslogBatch>, counters: SyslogCounters) -> Result<()> {
    let config = Arc::new(config);
    for addr in &config.udp {
        let socket = UdpSocket::bind(addr).await.with_context(|| format!("cannot bind syslog UDP {addr}"))?;
        tokio::spawn(udp_loop(socket, Arc::clone(&config), sender.clone(), counters.clone()));
    }
    for addr in &config.tcp {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot bind syslog TCP {addr}"))?;
        tokio::spawn(tcp_accept_loop(listener, Arc::clone(&config), sender.clone(), counters.clone()));
    }
    for path in &config.unix {
        let socket = bind_unix(path)?;
        tokio::spawn(unix_loop(socket, Arc::clone(&config), sender.clone(), counters.clone()));
    }
    Ok(())
}

/// The address unix-socket senders are counted under (they have none).
pub const UNIX_PEER: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// Binds a unix datagram socket at `path`, replacing a stale socket (never another kind of file).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(metadata.file_type().is_socket(), "{} exists and is not a socket", path.display());
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let socket = tokio::net::UnixDatagram::bind(path)
        .with_context(|| format!("cannot bind syslog socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(socket)
}

async fn unix_loop(
    socket: tokio::net::UnixDatagram,
    config: Arc<SyslogConfig>,
    sender: Sender<SyslogBatch>,
    counters: SyslogCounters,
) {
    let mut buf = vec![0u8; config.max_message_bytes.clamp(1, 65_535) + 1];
    let hostname = local_hostname();
    loop {
        let Ok(n) = socket.recv(&mut buf).await else { continue };
        if n > config.max_message_bytes {
            count(&counters, UNIX_PEER, |c| c.oversized += 1);
            continue;
        }
        let bytes = with_hostname(trim_trailer(&buf[..n]), &hostname);
        if !offer(&sender, &counters, SyslogBatch::one("unix", UNIX_PEER, bytes)) {
            return;
        }
    }
}

async fn udp_loop(socket: UdpSocket, config: Arc<SyslogConfig>, sender: Sender<SyslogBatch>, counters: SyslogCounters) {
    // One byte more than the limit tells an oversized datagram from one of exactly the limit.
    let mut buf = vec![0u8; config.max_message_bytes.clamp(1, 65_535) + 1];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        let peer = from.ip();
        if !allowed(&config.allow, peer) {
            count(&counters, peer, |c| c.refused += 1);
            continue;
        }
        if n > config.max_message_bytes {
            count(&counters, peer, |c| c.oversized += 1);
            continue;
        }
        let bytes = trim_trailer(&buf[..n]).to_vec();
        if !offer(&sender, &counters, SyslogBatch::one("udp", peer, bytes)) {
            return;
        }
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    config: Arc<SyslogConfig>,
    sender: Sender<SyslogBatch>,
    counters: SyslogCounters,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let peer = from.ip();
        if !allowed(&config.allow, peer) {
            count(&counters, peer, |c| c.refused += 1);
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            count(&counters, peer, |c| c.over_limit += 1);
            continue;
        };
        let (config, sender, counters) = (Arc::clone(&config), sender.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::with_capacity(64 * 1024, stream);
            if let Err(FramingError) = read_frames(&mut reader, &config, peer, &sender, &counters).await {
                count(&counters, peer, |c| c.framing_errors += 1);
            }
        });
    }
}

/// The connection sent something that is neither framing.
#[derive(Debug)]
struct FramingError;

/// Reads RFC 6587 frames until the peer closes; each frame is octet-counted when it starts with
/// a digit, else LF-terminated. Complete frames are handed on in batches: whenever the buffered
/// input holds no further whole frame (so nothing waits for the sender's next bytes), when a
/// batch reaches [`BATCH_BYTES`], and at the end of the connection.
async fn read_frames<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    config: &SyslogConfig,
    peer: IpAddr,
    sender: &Sender<SyslogBatch>,
    counters: &SyslogCounters,
) -> Result<(), FramingError> {
    let max = config.max_message_bytes.max(1);
    let mut frame = Vec::new();
    let mut batch = SyslogBatch::new("tcp", peer);
    let result = loop {
        // Before a read that may wait for the sender, what is complete goes on.
        if !batch.is_empty() && !frame_buffered(reader.buffer()) && !hand_on(sender, counters, &mut batch).await {
            return Ok(());
        }
        match read_frame(reader, max, &mut frame).await {
            Frame::End => break Ok(()),
            Frame::Error => break Err(FramingError),
            Frame::Oversized => count(counters, peer, |c| c.oversized += 1),
            Frame::Complete => {
                let message = trim_trailer(&frame);
                if !message.is_empty() {
                    batch.push(message);
                    if batch.data.len() >= BATCH_BYTES && !hand_on(sender, counters, &mut batch).await {
                        return Ok(());
                    }
                }
            }
        }
    };
    // The complete frames before the end (or before a framing error) are delivered.
    if !batch.is_empty() {
        hand_on(sender, counters, &mut batch).await;
    }
    result
}

/// True when `buffered` starts with a whole frame (or with bytes that are no frame, which
/// [`read_frame`] reports at once): reading it will not wait for the sender.
fn frame_buffered(buffered: &[u8]) -> bool {
    match buffered.first() {
        None => false,
        Some(first) if first.is_ascii_digit() => {
            let Some(space) = buffered.iter().take(11).position(|b| *b == b' ') else {
                return buffered.len() >= 11;
            };
            match std::str::from_utf8(&buffered[..space]).ok().and_then(|d| d.parse::<usize>().ok()) {
                Some(len) => buffered.len() > space + len,
                None => true,
            }
        }
        Some(_) => memchr::memchr(b'\n', buffered).is_some(),
    }
}

/// Sends `batch` (waiting while the pipeline is full: back-pressure on the TCP sender), counts
/// it, and leaves it empty. False when the pipeline is gone.
async fn hand_on(sender: &Sender<SyslogBatch>, counters: &SyslogCounters, batch: &mut SyslogBatch) -> bool {
    let full = std::mem::replace(batch, SyslogBatch::new(batch.transport, batch.peer));
    let (peer, n, bytes) = (full.peer, full.len() as u64, full.data.len() as u64);
    if sender.send(full).await.is_err() {
        return false;
    }
    count(counters, peer, |c| {
        c.messages += n;
        c.bytes += bytes;
    });
    true
}

/// What [`read_frame`] found.
enum Frame {
    /// A frame is in the buffer.
    Complete,
    /// A frame longer than the limit was skipped.
    Oversized,
    /// The connection ended (or broke); a partial last frame is dropped.
    End,
    /// Neither framing: the connection must be closed.
    Error,
}

/// Reads one frame into `frame`.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, max: usize, frame: &mut Vec<u8>) -> Frame {
    let first = match reader.fill_buf().await {
        Ok([]) | Err(_) => return Frame::End,
        Ok(bytes) => bytes[0],
    };
    frame.clear();
    if first.is_ascii_digit() {
        let mut digits = Vec::with_capacity(8);
        // `LEN SP`: at most 9 digits.
        if (&mut *reader).take(10).read_until(b' ', &mut digits).await.is_err() || digits.last() != Some(&b' ') {
            return Frame::Error;
        }
        let Some(len) = std::str::from_utf8(&digits[..digits.len() - 1]).ok().and_then(|d| d.parse::<usize>().ok())
        else {
            return Frame::Error;
        };
        if len > max {
            let skipped =
                tokio::io::copy(&mut (&mut *reader).take(len as u64), &mut tokio::io::sink()).await.unwrap_or(0);
            return if skipped < len as u64 { Frame::End } else { Frame::Oversized };
        }
        frame.resize(len, 0);
        if reader.read_exact(frame).await.is_err() {
            return Frame::End;
        }
        Frame::Complete
    } else {
        let n = (&mut *reader).take(max as u64 + 1).read_until(b'\n', frame).await.unwrap_or(0);
        if n == 0 {
            return Frame::End;
        }
        if frame.last() != Some(&b'\n') && frame.len() > max {
            // Skip the rest of the long line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = (&mut *reader).take(64 * 1024).read_until(b'\n', &mut rest).await.unwrap_or(0);
                if n == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            return Frame::Oversized;
        }
        Frame::Complete
    }
}

/// Hands a datagram's message on without waiting: counted as delivered, or as dropped when the
/// pipeline is full (datagram senders cannot be slowed down). False when the pipeline is gone.
fn offer(sender: &Sender<SyslogBatch>, counters: &SyslogCounters, message: SyslogBatch) -> bool {
    let (peer, len) = (message.peer, message.data.len() as u64);
    match sender.try_send(message) {
        Ok(()) => count(counters, peer, |c| {
            c.messages += 1;
            c.bytes += len;
        }),
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => count(counters, peer, |c| c.dropped += 1),
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
    }
    true
}

/// This machine's name, for local messages that carry none.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Local senders (glibc `syslog()`, `logger -u`) write `<PRI>Mmm dd hh:mm:ss TAG: MSG` to the
/// socket, without the HOSTNAME field of RFC 3164: it is inserted, as rsyslog's imuxsock does.
/// Messages in other forms (RFC 5424 has its own hostname field) pass unchanged.
fn with_hostname(message: &[u8], hostname: &str) -> Vec<u8> {
    let after_pri = match message.first() {
        Some(b'<') => memchr::memchr(b'>', &message[..message.len().min(5)]).map(|end| end + 1),
        _ => None,
    };
    let Some(start) = after_pri else { return message.to_vec() };
    let stamp = &message[start..];
    // `Mmm dd hh:mm:ss ` with a letter first and colons where RFC 3164 puts them.
    let rfc3164 = stamp.len() > 16
        && stamp[0].is_ascii_alphabetic()
        && stamp[3] == b' '
        && stamp[9] == b':'
        && stamp[12] == b':'
        && stamp[15] == b' ';
    if !rfc3164 {
        return message.to_vec();
    }
    let mut out = Vec::with_capacity(message.len() + hostname.len() + 1);
    out.extend_from_slice(&message[..start + 16]);
    out.extend_from_slice(hostname.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&message[start + 16..]);
    out
}

/// Drops the trailing LF / CRLF / NUL some senders add.
fn trim_trailer(bytes: &[u8]) -> &[u8] {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> (Vec<String>, Result<(), FramingError>, PeerCounters) {
        let config = SyslogConfig {
            udp: vec![],
            tcp: vec![],
            unix: vec![],
            allow: vec![],
            max_message_bytes: max,
            max_connections: 1,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        let counters = SyslogCounters::default();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let result = read_frames(&mut BufReader::new(input), &config, peer, &tx, &counters).await;
        drop(tx);
        let mut got = Vec::new();
        while let Some(batch) = rx.recv().await {
            got.extend(batch.messages().map(|m| String::from_utf8_lossy(m).into_owned()));
        }
        let counts = counters.lock().unwrap().get(&peer).cloned().unwrap_or_default();
        (got, result, counts)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn octet_counted_and_lf_frames_mixed_with_limits() {
        let input = b"5 hello11 hello\nworld<13>lf framed\n3 abc20 0123456789012345678\nshort\n";
        let (got, result, counts) = frames(input, 14).await;
        assert!(result.is_ok());
        assert_eq!(got, ["hello", "hello\nworld", "<13>lf framed", "abc", "short"]);
        assert_eq!((counts.messages, counts.oversized), (5, 1));
        // An LF-framed line longer than the limit is skipped to its newline.
        let (got, _, counts) = frames(b"<13>this line is far too long\nok\n", 12).await;
        assert_eq!(got, ["ok"]);
        assert_eq!(counts.oversized, 1);
        // A length without its space, or too many digits: the connection is closed.
        assert!(frames(b"12345678901 x", 12).await.1.is_err());
        // A truncated last frame is dropped, not delivered short.
        assert_eq!(frames(b"10 abc", 12).await.0, Vec::<String>::new());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_of_one_read_travel_as_one_batch() {
        let config = SyslogConfig {
            udp: vec![],
            tcp: vec![],
            unix: vec![],
            allow: vec![],
            max_message_bytes: 1024,
            max_connections: 1,
        };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let mut input = Vec::new();
        for n in 0..2_000 {
            let message = format!("<13>Nov 30 12:00:00 mx postfix/smtpd[{n}]: connect from c{n}[192.0.2.1]");
            input.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
        let counters = SyslogCounters::default();
        // A 16 KiB read buffer: each refill is one batch of the whole frames it completes.
        let mut reader = BufReader::with_capacity(16 * 1024, input.as_slice());
        read_frames(&mut reader, &config, peer, &tx, &counters).await.unwrap();
        drop(tx);
        let (mut batches, mut got) = (0, Vec::new());
        while let Some(batch) = rx.recv().await {
            batches += 1;
            assert_eq!((batch.transport, batch.peer), ("tcp", peer));
            got.extend(batch.messages().map(|m| String::from_utf8_lossy(m).into_owned()));
        }
        assert_eq!(got.len(), 2_000);
        assert!(got.iter().enumerate().all(|(n, m)| m.contains(&format!("smtpd[{n}]:"))), "in order");
        let reads = input.len().div_ceil(16 * 1024);
        assert!(batches <= reads + 1, "{batches} batches for {reads} reads");
        let counts = counters.lock().unwrap().get(&peer).cloned().unwrap();
        assert_eq!(counts.messages, 2_000);
        assert_eq!(counts.bytes, got.iter().map(|m| m.len() as u64).sum::<u64>());
    }

    #[test]
    fn whole_frames_in_the_buffer() {
        assert!(!frame_buffered(b""));
        assert!(frame_buffered(b"5 hello"));
        assert!(!frame_buffered(b"5 hell"));
        assert!(!frame_buffered(b"12"));
        assert!(frame_buffered(b"12345678901"), "no space in 11 bytes: a framing error, reported at once");
        assert!(frame_buffered(b"<13>a line\n"));
        assert!(!frame_buffered(b"<13>a partial line"));
    }

    /// A sender that stops in the middle of a frame does not hold back the frames before it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_partial_frame_does_not_hold_back_complete_ones() {
        let config = SyslogConfig {
            udp: vec![],
            tcp: vec![],
            unix: vec![],
            allow: vec![],
            max_message_bytes: 1024,
            max_connections: 1,
        };
        let (client, server) = tokio::io::duplex(4096);
        let (tx, mut rx) = tokio::sync::mpsc::channel(10);
        let counters = SyslogCounters::default();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let reading = tokio::spawn(async move {
            let mut reader = BufReader::new(server);
            read_frames(&mut reader, &config, peer, &tx, &counters).await.is_ok()
        });
        let mut client = client;
        tokio::io::AsyncWriteExt::write_all(&mut client, b"<13>one\n<13>two\n<13>thr").await.unwrap();
        let first = rx.recv().await.expect("the complete frames, before the third one ends");
        assert_eq!(first.messages().collect::<Vec<_>>(), [b"<13>one".as_slice(), b"<13>two"]);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"ee\n").await.unwrap();
        drop(client);
        let second = rx.recv().await.unwrap();
        assert_eq!(second.messages().collect::<Vec<_>>(), [b"<13>three".as_slice()]);
        assert!(reading.await.unwrap());
    }

    #[test]
    fn local_messages_get_the_hostname() {
        let local = b"<13>Nov 30 18:41:40 postfix/smtpd[4343]: connect from x[192.0.2.1]";
        assert_eq!(
            with_hostname(local, "mx1"),
            b"<13>Nov 30 18:41:40 mx1 postfix/smtpd[4343]: connect from x[192.0.2.1]".to_vec()
        );
        let rfc5424 = b"<13>1 2026-11-30T18:41:40Z mx1 postfix/smtpd 4343 - - x";
        assert_eq!(with_hostname(rfc5424, "other"), rfc5424.to_vec());
        assert_eq!(with_hostname(b"<13>", "h"), b"<13>".to_vec());
        assert_eq!(with_hostname(b"", "h"), b"".to_vec());
        let line = String::from_utf8(with_hostname(local, "mx1")).unwrap();
        assert_eq!(parsers::parse_record(&line).unwrap().header.appname, "postfix/smtpd");
    }

    #[test]
    fn allow_list_with_mapped_addresses() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(allowed(&allow, "127.0.0.9".parse().unwrap()));
        assert!(allowed(&allow, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(allowed(&allow, "::1".parse().unwrap()));
        assert!(!allowed(&allow, "192.0.2.1".parse().unwrap()));
        assert!(!allowed(&[], "127.0.0.1".parse().unwrap()));
    }
}
