//! The driver of `bench/milter-load.sh` (issue 7, point 6): plays Postfix's side of the milter
//! protocol against a milter, and serves the no-op milter it is compared with.
//!
//! `cargo run --release --example milter_load -- load HOST:PORT SESSIONS CONCURRENCY` runs SESSIONS
//! SMTP sessions, CONCURRENCY at a time, each on its own milter connection as Postfix's smtpd
//! does: option negotiation (protocol 6, every action and protocol flag Postfix 3.7 offers),
//! connect with Postfix's connect macros (`j`, `{daemon_name}`, `v`, …), HELO after STARTTLS with
//! the TLS macros (`{tls_version}`, `{cipher}`, `{cipher_bits}`), MAIL with `i` and the mail
//! macros, RCPT, DATA, five headers, end of headers, a body chunk, end of message (reading the
//! milter's modifications), then QUIT. Stages the milter skipped (`SMFIP_NO*`) are not sent and
//! stages it answers with "no reply" (`SMFIP_NR_*`) are not waited for, exactly as an MTA does.
//! Client addresses cycle through 4096 addresses of 198.18.0.0/15 (the benchmarking range).
//! It prints `key=value` lines: sessions, seconds, sessions per second, and the p50/p90/p99/max
//! of the session time (connect to the end-of-message reply) in microseconds.
//!
//! `… -- idle HOST:PORT N PID` opens N milter connections, each negotiated and inside a session
//! (connect and HELO sent), holds them, and prints the resident memory of process PID
//! (`/proc/PID/status` `VmRSS`) before and after and the difference per connection.
//!
//! `… -- noop HOST:PORT [MAX_CONNECTIONS]` serves a milter on the same library (indymilter) that
//! negotiates the same stages and flags as tlsledger's milter, sets `TCP_NODELAY` as it does, and
//! answers continue to everything without looking at anything: the baseline.

// The driver prints its figures on stdout for the script to read.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indymilter::{Actions, Callbacks, ProtoOpts, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

/// Every protocol flag Postfix 3.7 offers (`SMFIP_NOCONNECT` … `SMFIP_HDR_LEADSPC`).
const MTA_PROTOCOL: u32 = 0x1F_FFFF;
/// Every action Postfix offers (`SMFIF_ADDHDRS` … `SMFIF_SETSYMLIST`).
const MTA_ACTIONS: u32 = 0x1FF;

const NO_CONNECT: u32 = 0x1;
const NO_HELO: u32 = 0x2;
const NO_MAIL: u32 = 0x4;
const NO_RCPT: u32 = 0x8;
const NO_BODY: u32 = 0x10;
const NO_HDRS: u32 = 0x20;
const NO_EOH: u32 = 0x40;
const NR_HDR: u32 = 0x80;
const NO_DATA: u32 = 0x200;
const NR_CONN: u32 = 0x1000;
const NR_HELO: u32 = 0x2000;
const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_DATA: u32 = 0x1_0000;
const NR_EOH: u32 = 0x4_0000;
const NR_BODY: u32 = 0x8_0000;

/// One milter connection, the MTA side.
struct Mta {
    stream: BufWriter<TcpStream>,
    protocol: u32,
}

impl Mta {
    async fn connect(address: &str) -> Result<Mta> {
        let stream = TcpStream::connect(address).await.with_context(|| format!("connect to {address}"))?;
        stream.set_nodelay(true)?;
        let mut mta = Mta { stream: BufWriter::new(stream), protocol: 0 };
        let mut negotiate = Vec::with_capacity(12);
        negotiate.extend_from_slice(&6u32.to_be_bytes());
        negotiate.extend_from_slice(&MTA_ACTIONS.to_be_bytes());
        negotiate.extend_from_slice(&MTA_PROTOCOL.to_be_bytes());
        mta.send(b'O', &negotiate).await?;
        mta.stream.flush().await?;
        let (code, data) = mta.read().await?;
        if code != b'O' || data.len() < 12 {
            bail!("bad option negotiation reply {:?}", code as char);
        }
        mta.protocol = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        Ok(mta)
    }

    async fn send(&mut self, code: u8, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len() + 1).context("packet too long")?;
        self.stream.write_all(&len.to_be_bytes()).await?;
        self.stream.write_all(&[code]).await?;
        self.stream.write_all(data).await?;
        Ok(())
    }

    async fn read(&mut self) -> Result<(u8, Vec<u8>)> {
        let stream = self.stream.get_mut();
        let len = stream.read_u32().await? as usize;
        if len == 0 || len > 1 << 20 {
            bail!("bad reply length {len}");
        }
        let mut buffer = vec![0; len];
        stream.read_exact(&mut buffer).await?;
        let code = buffer[0];
        buffer.remove(0);
        Ok((code, buffer))
    }

    /// Sends `macros` for `stage` (always: Postfix sends its macros even for skipped stages'
    /// neighbours), then the command unless skipped, and waits for the reply unless "no reply".
    async fn stage(&mut self, stage: u8, macros: &[(&str, &str)], data: &[u8], skip: u32, noreply: u32) -> Result<()> {
        if self.protocol & skip != 0 {
            return Ok(());
        }
        if !macros.is_empty() {
            let mut packet = vec![stage];
            for (name, value) in macros {
                packet.extend_from_slice(name.as_bytes());
                packet.push(0);
                packet.extend_from_slice(value.as_bytes());
                packet.push(0);
            }
            self.send(b'D', &packet).await?;
        }
        self.send(stage, data).await?;
        if self.protocol & noreply != 0 {
            return Ok(());
        }
        self.stream.flush().await?;
        self.final_reply().await
    }

    /// Reads replies until a final one (modifications and progress come before it).
    async fn final_reply(&mut self) -> Result<()> {
        loop {
            let (code, _) = self.read().await?;
            match code {
                b'c' | b'a' | b'r' | b't' | b'd' | b'y' => return Ok(()),
                b'h' | b'm' | b'i' | b'p' | b'e' | b'+' | b'-' | b'2' | b'b' | b'q' => continue,
                other => bail!("unexpected reply {:?}", other as char),
            }
        }
    }

    /// Connect and HELO (after STARTTLS) of session `n`.
    async fn open_session(&mut self, n: u64) -> Result<()> {
        let ip = format!("198.18.{}.{}", (n / 256) % 16, n % 256);
        let port = 40_000 + (n % 20_000) as u16;
        let mut connect = b"client.example.org\x004".to_vec();
        connect.extend_from_slice(&port.to_be_bytes());
        connect.extend_from_slice(ip.as_bytes());
        connect.push(0);
        let port_text = port.to_string();
        let macros = [
            ("j", "mx.example.net"),
            ("{daemon_name}", "mx.example.net"),
            ("{daemon_addr}", "192.0.2.1"),
            ("v", "Postfix 3.7.11"),
            ("_", "client.example.org [198.18.0.1]"),
            ("{client_addr}", ip.as_str()),
            ("{client_port}", port_text.as_str()),
        ];
        self.stage(b'C', &macros, &connect, NO_CONNECT, NR_CONN).await?;
        let tls = [("{tls_version}", "TLSv1.3"), ("{cipher}", "TLS_AES_256_GCM_SHA384"), ("{cipher_bits}", "256")];
        self.stage(b'H', &tls, b"client.example.org\0", NO_HELO, NR_HELO).await
    }

    /// One message, MAIL to end of message.
    async fn message(&mut self, n: u64) -> Result<()> {
        let queue_id = format!("4Q{n:010X}");
        let mail = [
            ("i", queue_id.as_str()),
            ("{auth_type}", ""),
            ("{mail_addr}", "sender@client.example.org"),
            ("{tls_version}", "TLSv1.3"),
            ("{cipher}", "TLS_AES_256_GCM_SHA384"),
            ("{cipher_bits}", "256"),
        ];
        self.stage(b'M', &mail, b"<sender@client.example.org>\0SIZE=2048\0", NO_MAIL, NR_MAIL).await?;
        self.stage(b'R', &[("{rcpt_addr}", "user@example.net")], b"<user@example.net>\0", NO_RCPT, NR_RCPT).await?;
        self.stage(b'T', &[], b"", NO_DATA, NR_DATA).await?;
        for (name, value) in [
            ("From", "Sender <sender@client.example.org>"),
            ("To", "user@example.net"),
            ("Subject", "load test"),
            ("Date", "Mon, 30 Nov 2026 19:00:00 +0000"),
            ("Message-Id", "<load@client.example.org>"),
        ] {
            let header = format!("{name}\0{value}\0");
            self.stage(b'L', &[], header.as_bytes(), NO_HDRS, NR_HDR).await?;
        }
        self.stage(b'N', &[], b"", NO_EOH, NR_EOH).await?;
        self.stage(b'B', &[], &[b'x'; 2048], NO_BODY, NR_BODY).await?;
        // End of message always gets a reply (after any modifications).
        self.stage(b'E', &[("i", queue_id.as_str())], b"", 0, 0).await
    }

    async fn quit(mut self) -> Result<()> {
        self.send(b'Q', b"").await?;
        self.stream.flush().await?;
        Ok(())
    }
}

/// One whole session; its duration up to the end-of-message reply.
async fn session(address: &str, n: u64) -> Result<Duration> {
    let started = Instant::now();
    let mut mta = Mta::connect(address).await?;
    mta.open_session(n).await?;
    mta.message(n).await?;
    let took = started.elapsed();
    mta.quit().await?;
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_micros()
}

async fn load(address: String, sessions: u64, concurrency: u64) -> Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (address, next) = (address.clone(), std::sync::Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= sessions {
                    return anyhow::Ok(times);
                }
                times.push(session(&address, n).await?);
            }
        }));
    }
    let mut times = Vec::with_capacity(sessions as usize);
    for worker in workers {
        times.extend(worker.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_unstable();
    println!("sessions={}", times.len());
    println!("concurrency={concurrency}");
    println!("seconds={elapsed:.3}");
    println!("sessions_per_sec={:.0}", times.len() as f64 / elapsed);
    println!("p50_us={}", percentile(&times, 0.50));
    println!("p90_us={}", percentile(&times, 0.90));
    println!("p99_us={}", percentile(&times, 0.99));
    println!("max_us={}", percentile(&times, 1.0));
    Ok(())
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/PID/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn idle(address: String, n: u64, pid: u32) -> Result<()> {
    // One warm-up session, so that lazily allocated state does not count as per-connection.
    session(&address, 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(pid)?;
    let mut held = Vec::with_capacity(n as usize);
    for idx in 0..n {
        let mut mta = Mta::connect(&address).await?;
        mta.open_session(idx).await?;
        held.push(mta);
    }
    // Each connection answered its negotiation, so the milter holds every one of them; let
    // allocations settle before reading the resident size.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    println!("idle_connections={n}");
    println!("rss_before_kib={before}");
    println!("rss_after_kib={after}");
    println!("bytes_per_idle_connection={}", after.saturating_sub(before) * 1024 / n.max(1));
    for mta in held {
        mta.quit().await?;
    }
    Ok(())
}

/// TCP connections with `TCP_NODELAY`, as tlsledger's milter sets it: the comparison is about
/// the work done per session, not the socket options.
struct NoDelay(tokio::net::TcpListener);

impl indymilter::Listener for NoDelay {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<TcpStream>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        })
    }
}

async fn noop(address: String, max_connections: usize) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&address).await.with_context(|| format!("listen on {address}"))?;
    println!("noop milter listening on {}", listener.local_addr()?);
    // The same stages, flags and actions as tlsledger's milter with its header on.
    let callbacks: Callbacks<()> = Callbacks::new()
        .on_negotiate(|cx, actions, opts| {
            Box::pin(async move {
                cx.requested_actions = (Actions::ADD_HEADER | Actions::CHANGE_HEADER) & actions;
                let skip = ProtoOpts::NO_RCPT
                    | ProtoOpts::NO_DATA
                    | ProtoOpts::NO_EOH
                    | ProtoOpts::NO_BODY
                    | ProtoOpts::NO_UNKNOWN;
                let noreply = ProtoOpts::NOREPLY_CONNECT
                    | ProtoOpts::NOREPLY_HELO
                    | ProtoOpts::NOREPLY_MAIL
                    | ProtoOpts::NOREPLY_HEADER;
                cx.requested_opts = (skip | noreply) & opts;
                Status::Continue
            })
        })
        .on_connect(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_helo(|_, _| Box::pin(async { Status::Noreply }))
        .on_mail(|_, _| Box::pin(async { Status::Noreply }))
        .on_header(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_eom(|_| Box::pin(async { Status::Continue }));
    let config = indymilter::Config { max_connections, ..Default::default() };
    indymilter::run(NoDelay(listener), callbacks, config, tokio::signal::ctrl_c()).await?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let number = |idx: usize, name: &str| -> Result<u64> {
        args.get(idx).with_context(|| format!("missing {name}"))?.parse().with_context(|| format!("bad {name}"))
    };
    let target = || args.get(1).cloned().context("missing HOST:PORT");
    match args.first().map(String::as_str) {
        Some("load") => runtime.block_on(load(target()?, number(2, "SESSIONS")?, number(3, "CONCURRENCY")?)),
        Some("idle") => runtime.block_on(idle(target()?, number(2, "N")?, number(3, "PID")? as u32)),
        Some("noop") => {
            let max = args.get(2).map_or(Ok(100), |m| m.parse()).context("bad MAX_CONNECTIONS")?;
            // Like `tlsledger milter`: the sessions on one current-thread runtime.
            runtime.block_on(noop(target()?, max))
        }
        _ => bail!(
            "usage: milter_load load HOST:PORT SESSIONS CONCURRENCY | idle HOST:PORT N PID | noop HOST:PORT [MAX]"
        ),
    }
}
