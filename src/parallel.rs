//! Parallel parsing of one byte stream, consumed in stream order.
//!
//! Correlation must see lines in order, but the grammars in `parsers` are pure and need no
//! context, so they run on several threads:
//!
//! ```text
//! reader thread ──chunk i──▶ worker i % N ──parsed chunk i──▶ caller (in order: 0, 1, 2, …)
//!      ▲                                                        │
//!      └──────────────────── empty chunk (recycled) ◀───────────┘
//! ```
//!
//! The reader reads straight into a [`Chunk`] (one `read` per chunk, so a pipe's lines go on as
//! they arrive), frames its lines as [`crate::sources::lines`] does and keeps the incomplete last
//! line for the next chunk. Workers check each chunk's text for UTF-8 once (a non-UTF-8 line is
//! replaced by its lossy form and marked) and parse each line with
//! [`parsers::parse_record_into`] (one header cache per chunk) into records that borrow the
//! chunk (a [`self_cell`] keeps the text and its records together). The caller gets the chunks
//! back in stream order because chunk `i` always goes to worker `i % N` and is collected from
//! there.
//!
//! **Invariants:** every line of the stream reaches the caller exactly once, in order, as a
//! record, a parse error or an oversized-line marker; memory is bounded by a fixed number of
//! chunks in flight (the reader waits for a recycled chunk); when the caller stops early every
//! thread ends and is joined; years of yearless timestamps are left for the caller to resolve
//! in order ([`parsers::YearInference`] is stateful).

use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};

use anyhow::{Context, Result};

/// Bytes of line text per chunk: large enough that channel hand-offs (and the context switches
/// they cause) are rare, small enough that the chunks in flight stay about 10 MB with their
/// records. 512 KiB against 128 KiB on `bench/parse.sh`'s log: context switches 10,000 → 2,700,
/// system time 0.25–0.38 s → 0.16–0.23 s (six alternating runs each).
const CHUNK_BYTES: usize = 512 * 1024;

/// Where a line sits in its chunk.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// `text[start..end]`; `len` bytes in the stream; `lossy` when they were not UTF-8 (the
    /// text is then their lossy form).
    Text { offset: u64, len: u32, start: u32, end: u32, lossy: bool },
    /// A line longer than the limit, skipped by the framer.
    Oversized { offset: u64, len: u64 },
}

/// Whole lines of a stream, read straight into this buffer; `bytes[..len]` is the chunk's text,
/// and the positions in `slots` are relative to it. A worker checks that the text is UTF-8 (see
/// `parse_chunk`).
///
/// The buffer keeps its initialised length from one use to the next, so a read into it need not
/// zero it first; `len` says how much of it is this chunk's text.
#[derive(Debug, Default)]
pub struct Chunk {
    bytes: Vec<u8>,
    len: usize,
    slots: Vec<Slot>,
}

impl Chunk {
    /// This chunk's text.
    fn text(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A chunk on its way to a worker, with an empty vector whose allocation the worker reuses for
/// the parsed lines (allocating a fresh one per chunk costs page faults).
#[derive(Debug, Default)]
struct Job {
    chunk: Chunk,
    spare: Vec<Parsed<'static>>,
}

/// One line, parsed.
// Records live in a reused vector per chunk: boxing the large variant would allocate per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A line read into memory.
    Line {
        /// Byte offset of the line in the stream.
        offset: u64,
        /// Length of the line in bytes, without its newline.
        len: u64,
        /// The original bytes were not UTF-8; `record` borrows their lossy form.
        lossy: bool,
        /// The parsed line (the year of a yearless timestamp is not yet resolved), or why its
        /// envelope could not be parsed. Kept as the parser returns it: re-wrapping it in
        /// variants of our own copied every record once more (callgrind).
        record: Result<parsers::Record<'a>, parsers::Error>,
    },
    /// A line longer than the limit: not read into memory.
    Oversized {
        /// Byte offset of the line in the stream.
        offset: u64,
        /// Its length in bytes.
        len: u64,
    },
}

type ParsedLines<'a> = Vec<Parsed<'a>>;

self_cell::self_cell!(
    /// A chunk and the records that borrow its text.
    pub struct ParsedChunk {
        owner: Chunk,
        #[covariant]
        dependent: ParsedLines,
    }
);

impl std::fmt::Debug for ParsedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedChunk").field("lines", &self.borrow_dependent().len()).finish()
    }
}

/// Parses every line of a chunk. The chunk's text is checked for UTF-8 once, here: a valid
/// chunk (nearly every one) is parsed as it is, otherwise each line that is not UTF-8 is first
/// replaced by its lossy form and marked (see `make_lossy`).
fn parse_chunk(Job { chunk, spare }: Job) -> ParsedChunk {
    let attempt = ParsedChunk::try_new_or_recover(chunk, move |chunk| match simdutf8::basic::from_utf8(chunk.text()) {
        Ok(text) => Ok(parse_lines(chunk, Some(text), spare)),
        Err(_) => Err(spare),
    });
    match attempt {
        Ok(parsed) => parsed,
        Err((mut chunk, spare)) => {
            make_lossy(&mut chunk);
            // The lossy text is UTF-8 by construction; should that ever fail, lines are checked
            // one by one.
            ParsedChunk::new(chunk, move |chunk| {
                parse_lines(chunk, simdutf8::basic::from_utf8(chunk.text()).ok(), spare)
            })
        }
    }
}

/// The lines of `chunk`, parsed into `spare`'s allocation; `text` is the chunk's text when it
/// is known to be UTF-8 as a whole.
fn parse_lines<'a>(chunk: &'a Chunk, text: Option<&'a str>, spare: Vec<Parsed<'static>>) -> ParsedLines<'a> {
    let mut parsed = relabel(spare);
    parsed.reserve(chunk.slots.len());
    let mut cache = parsers::HeaderCache::default();
    for slot in &chunk.slots {
        let (offset, len, start, end, lossy) = match *slot {
            Slot::Text { offset, len, start, end, lossy } => {
                (offset, u64::from(len), start as usize, end as usize, lossy)
            }
            Slot::Oversized { offset, len } => {
                parsed.push(Parsed::Oversized { offset, len });
                continue;
            }
        };
        let line = match text {
            Some(text) => text.get(start..end),
            None => chunk.text().get(start..end).and_then(|line| std::str::from_utf8(line).ok()),
        };
        let Some(line) = line else {
            parsed.push(Parsed::Line { offset, len, lossy: true, record: Err(parsers::Error::NotSyslog) });
            continue;
        };
        // The line's place is pushed first and its record written into it: building the whole
        // `Parsed` and then pushing it copied each record once more (callgrind).
        parsed.push(Parsed::Line { offset, len, lossy, record: Err(parsers::Error::NotSyslog) });
        if let Some(Parsed::Line { record, .. }) = parsed.last_mut() {
            parsers::parse_record_into(line, &mut cache, record);
        }
    }
    parsed
}

/// Lines between the prefetch stages of [`prefetch_ahead`]. Tuned on `bench/parse.sh`'s log
/// (see bench/RESULTS.md).
const PREFETCH_STRIDE: usize = 8;

/// Asks the CPU to start loading the lines the correlating thread will read soon, while it
/// works on `lines[i]`; call it once for each `i`, in order.
///
/// Records and text were written by a worker on another core, and a 272-byte `Parsed` spans five
/// cache lines: without this, the correlating thread waited for each of them in turn, which on
/// a 2-core AMD EPYC VM was about a fifth of its time (`perf record`, see bench/RESULTS.md).
/// A prefetch is only a hint: it reads nothing and cannot fault. What it asks for is found by
/// reading the record, so it goes in three stages, each of which reads only what the stage
/// before fetched (a read that misses would stall the thread, which is what this avoids):
/// 1. three strides ahead, the record's first cache line (its variant), by address alone;
/// 2. two strides ahead, its other cache lines, through the fields that lie in them;
/// 3. one stride ahead, the start of the line's text (host name and program tag).
#[inline(always)]
pub fn prefetch_ahead(lines: &[Parsed<'_>], i: usize) {
    if let Some(line) = lines.get(i + 3 * PREFETCH_STRIDE) {
        prefetch_t0(line);
    }
    if let Some(Parsed::Line { len, record: Ok(record), .. }) = lines.get(i + 2 * PREFETCH_STRIDE) {
        prefetch_t0(len);
        prefetch_t0(&record.header.timestamp);
        prefetch_t0(&record.header.hostname);
        prefetch_t0(&record.header.appname);
        if let parsers::Body::Postfix { daemon, event } = &record.body {
            prefetch_t0(daemon);
            prefetch_event(event);
        }
    }
    if let Some(Parsed::Line { record: Ok(record), .. }) = lines.get(i + PREFETCH_STRIDE) {
        if let Some(first) = record.header.hostname.as_bytes().first() {
            prefetch_t0(first);
        }
    }
}

/// The fields of the Postfix events that most lines carry, which fill the middle of a record.
#[inline(always)]
fn prefetch_event(event: &parsers::postfix::Event<'_>) {
    use parsers::postfix::Event;
    match event {
        Event::Delivery(delivery) => {
            prefetch_t0(&delivery.queue_id);
            prefetch_t0(&delivery.relay);
            prefetch_t0(&delivery.reason);
            prefetch_t0(&delivery.status);
            prefetch_t0(&delivery.tls);
        }
        Event::TlsConnection(tls) => {
            prefetch_t0(&tls.peer);
            prefetch_t0(&tls.protocol);
            prefetch_t0(&tls.key_exchange);
        }
        _ => {}
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
use safe_arch::prefetch_t0;

/// Elsewhere a prefetch is left to the hardware.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
#[inline(always)]
fn prefetch_t0<T>(_: &T) {}

/// An empty vector of lines with another lifetime, in the same allocation (the standard
/// library collects a `vec::IntoIter` in place when the element layout is unchanged).
// `filter` cannot change the lifetime: `filter_map` is needed.
#[allow(clippy::unnecessary_filter_map)]
fn relabel<'b>(lines: Vec<Parsed<'_>>) -> Vec<Parsed<'b>> {
    lines.into_iter().filter_map(|_| None).collect()
}

/// The number of parse workers to use when the operator did not say: one fewer than the
/// available cores (at least one, at most 8), so that the workers and the correlating thread
/// each have a core (the reader thread, mostly waiting on the kernel's copy, shares one).
/// On a 2-core AMD EPYC VM with the prefetching correlator (`bench/parse.sh`'s log, six
/// alternating rounds, wall seconds): 1 worker 0.87–1.11 (median 1.08), 2 workers 1.13–1.31,
/// 3 workers 1.24–1.46 (1.32), 4 workers 1.23–1.53; with JSON output 1 worker 2.40–3.22 s
/// against 2.69–3.13 s for 3. More workers than cores only add hand-offs between cores and
/// time slices lost to the ordering (chunk `i` waits for its worker to be scheduled again).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).clamp(1, 8)
}

/// Reads `reader` to its end on a thread of its own, parses its lines on `workers` threads and
/// calls `on_lines` with each line in stream order, on the calling thread.
///
/// `on_lines` gets the lines of one chunk at a time (mutable, so the caller can resolve years in
/// place) and returns `Err` to stop early. Returns the number of bytes read.
pub fn parse_stream<R, F>(reader: R, max_line_bytes: usize, workers: usize, mut on_lines: F) -> Result<u64>
where
    R: Read + Send,
    F: FnMut(&mut [Parsed<'_>]) -> Result<()>,
{
    let workers = workers.clamp(1, 64);
    // Slots hold u32 positions: a chunk is at most CHUNK_BYTES plus one line (in its lossy
    // form, at most three times its bytes).
    let max_line_bytes = max_line_bytes.min(256 << 20);
    // Chunks in flight: one being filled, one queued and one being parsed per worker, one
    // being consumed.
    let in_flight = 2 * workers + 2;
    std::thread::scope(|scope| {
        let (free_tx, free_rx) = mpsc::sync_channel::<Job>(in_flight);
        for _ in 0..in_flight {
            free_tx.send(Job::default()).expect("the receiver is alive");
        }
        let mut to_workers: Vec<SyncSender<Job>> = Vec::with_capacity(workers);
        let mut from_workers: Vec<Receiver<ParsedChunk>> = Vec::with_capacity(workers);
        let mut worker_handles = Vec::with_capacity(workers);
        for index in 0..workers {
            let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Job>(1);
            let (parsed_tx, parsed_rx) = mpsc::sync_channel::<ParsedChunk>(1);
            to_workers.push(chunk_tx);
            from_workers.push(parsed_rx);
            let handle = std::thread::Builder::new()
                .name(format!("parse-{index}"))
                .spawn_scoped(scope, move || {
                    for chunk in chunk_rx {
                        if parsed_tx.send(parse_chunk(chunk)).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a parse thread")?;
            worker_handles.push(handle);
        }
        let reader_handle = std::thread::Builder::new()
            .name("read".to_owned())
            .spawn_scoped(scope, move || read_chunks(reader, max_line_bytes, &free_rx, &to_workers))
            .context("cannot start the reader thread")?;

        let mut consumed: Result<()> = Ok(());
        'chunks: for index in 0.. {
            let Ok(mut parsed) = from_workers[index % workers].recv() else { break 'chunks };
            consumed = parsed.with_dependent_mut(|_, lines| on_lines(lines));
            if consumed.is_err() {
                break 'chunks;
            }
            let spare = parsed.with_dependent_mut(|_, lines| relabel(std::mem::take(lines)));
            let chunk = parsed.into_owner();
            // The reader may have finished: then nobody needs the chunk back.
            let _ = free_tx.try_send(Job { chunk, spare });
        }
        // Hang up on the workers and the reader (when the caller stopped early), then join them.
        drop(from_workers);
        drop(free_tx);
        let read = reader_handle.join();
        for handle in worker_handles {
            if handle.join().is_err() {
                anyhow::bail!("a parse thread panicked");
            }
        }
        consumed?;
        match read {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(error)) => Err(error),
            Err(_) => anyhow::bail!("the reader thread panicked"),
        }
    })
}

/// The reader thread: reads the stream straight into chunks, frames their lines and deals them
/// to the workers in turn.
///
/// A chunk ends at its last newline; the incomplete line after it starts the next chunk. A line
/// longer than `max_line_bytes` is reported as oversized and its bytes are dropped as they
/// arrive (never buffered beyond one chunk).
fn read_chunks<R: Read>(
    mut reader: R,
    max_line_bytes: usize,
    free: &Receiver<Job>,
    workers: &[SyncSender<Job>],
) -> Result<u64> {
    let mut next_worker = 0;
    // Stream offset of the first byte of the chunk being filled.
    let mut base: u64 = 0;
    // The incomplete last line of the previous chunk.
    let mut carry: Vec<u8> = Vec::new();
    // While dropping an oversized line: its offset and the bytes seen so far.
    let mut skipping: Option<(u64, u64)> = None;
    let mut job: Option<Job> = None;
    loop {
        let mut current = match job.take() {
            Some(current) => current,
            None => match free.recv() {
                Ok(current) => current,
                // The caller stopped early and reports its own error.
                Err(_) => return Ok(base),
            },
        };
        let chunk = &mut current.chunk;
        chunk.slots.clear();
        let kept = carry.len();
        let want = CHUNK_BYTES.saturating_sub(kept).max(CHUNK_BYTES / 4);
        if chunk.bytes.len() < kept + want {
            chunk.bytes.resize(kept + want, 0);
        }
        chunk.bytes[..kept].copy_from_slice(&carry);
        carry.clear();
        // One `read` per chunk, not "read until the chunk is full": a regular file fills it at
        // once anyway, while a pipe hands over what it has, so lines written to stdin are parsed
        // (and a loader sends them) without waiting for the writer to produce a whole chunk.
        let n_read = loop {
            match reader.read(&mut chunk.bytes[kept..kept + want]) {
                Ok(n) => break n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        };
        let at_eof = n_read == 0;
        let filled = kept + n_read;
        chunk.len = filled;
        let mut start = 0;
        if let Some((offset, len)) = skipping {
            match memchr::memchr(b'\n', chunk.text()) {
                Some(idx) => {
                    chunk.slots.push(Slot::Oversized { offset, len: len + idx as u64 });
                    skipping = None;
                    start = idx + 1;
                }
                None if at_eof => {
                    chunk.slots.push(Slot::Oversized { offset, len: len + filled as u64 });
                    skipping = None;
                    start = filled;
                }
                None => {
                    skipping = Some((offset, len + filled as u64));
                    base += filled as u64;
                    job = Some(current);
                    continue;
                }
            }
        }
        let scan_from = start;
        for idx in memchr::memchr_iter(b'\n', &chunk.bytes[scan_from..filled]) {
            let end = scan_from + idx;
            push_line(&mut chunk.slots, base, start, end, max_line_bytes);
            start = end + 1;
        }
        if at_eof {
            if start < filled {
                push_line(&mut chunk.slots, base, start, filled, max_line_bytes);
                start = filled;
            }
        } else if filled - start > max_line_bytes {
            skipping = Some((base + start as u64, (filled - start) as u64));
        } else {
            carry.extend_from_slice(&chunk.bytes[start..filled]);
        }
        chunk.len = start.min(filled);
        base += filled as u64 - carry.len() as u64;
        if chunk.slots.is_empty() {
            if at_eof {
                return Ok(base);
            }
            job = Some(current);
            continue;
        }
        if workers[next_worker].send(current).is_err() {
            return Ok(base);
        }
        next_worker = (next_worker + 1) % workers.len();
        if at_eof {
            return Ok(base);
        }
    }
}

/// Records the line `chunk.bytes[start..end]` (at stream offset `base + start`).
fn push_line(slots: &mut Vec<Slot>, base: u64, start: usize, end: usize, max_line_bytes: usize) {
    let offset = base + start as u64;
    let len = end - start;
    slots.push(if len > max_line_bytes {
        Slot::Oversized { offset, len: len as u64 }
    } else {
        // Chunks and lines are far below 4 GiB (see `parse_stream`).
        Slot::Text { offset, len: len as u32, start: start as u32, end: end as u32, lossy: false }
    });
}

/// Rewrites a chunk that holds bytes that are not UTF-8: each such line becomes its lossy form
/// (U+FFFD for each bad sequence) and is marked; valid lines are copied unchanged.
fn make_lossy(chunk: &mut Chunk) {
    let mut bytes = Vec::with_capacity(chunk.len + 64);
    // Borrowed field by field: the slots are rewritten while the text is read.
    let text = &chunk.bytes[..chunk.len];
    for slot in &mut chunk.slots {
        if let Slot::Text { start, end, lossy, .. } = slot {
            let line = &text[*start as usize..*end as usize];
            let new_start = bytes.len() as u32;
            match std::str::from_utf8(line) {
                Ok(_) => bytes.extend_from_slice(line),
                Err(_) => {
                    bytes.extend_from_slice(String::from_utf8_lossy(line).as_bytes());
                    *lossy = true;
                }
            }
            *start = new_start;
            *end = bytes.len() as u32;
        }
    }
    chunk.len = bytes.len();
    chunk.bytes = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as the tests compare it: its offset and what it became.
    fn describe(line: &Parsed<'_>) -> (u64, String) {
        match line {
            Parsed::Line { offset, len, lossy, record: Ok(record) } => {
                (*offset, format!("record {len} {lossy} {}", record.header.hostname))
            }
            Parsed::Line { offset, len, lossy, record: Err(error) } => {
                (*offset, format!("failed {len} {lossy} {error}"))
            }
            Parsed::Oversized { offset, len } => (*offset, format!("oversized {len}")),
        }
    }

    /// What the caller saw of each line, in order.
    fn collect(data: &[u8], max_line_bytes: usize, workers: usize) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        let bytes = parse_stream(data, max_line_bytes, workers, |lines| {
            got.extend(lines.iter().map(describe));
            Ok(())
        })
        .unwrap();
        assert_eq!(bytes, data.len() as u64);
        got
    }

    fn sample(lines: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..lines {
            match i % 5 {
                0 => data.extend_from_slice(b"\xff\xfe not utf-8\n"),
                1 => data.extend_from_slice(&vec![b'x'; 300]),
                _ => data.extend_from_slice(format!("Nov  3 13:35:12 h{i} postfix/qmgr[1]: removed\n").as_bytes()),
            }
            if i % 5 == 1 {
                data.push(b'\n');
            }
        }
        data
    }

    #[test]
    fn every_line_arrives_once_in_order_with_any_worker_count() {
        let data = sample(20_000);
        let one = collect(&data, 200, 1);
        assert_eq!(one.len(), 20_000);
        assert!(one.windows(2).all(|pair| pair[0].0 < pair[1].0), "offsets increase");
        assert_eq!(one[0].1, "failed 12 true not-syslog");
        assert_eq!(one[1].1, "oversized 300");
        assert_eq!(one[2].1, "record 43 false h2");
        for workers in [2, 3, 7] {
            assert_eq!(collect(&data, 200, workers), one, "{workers} workers");
        }
    }

    #[test]
    fn the_caller_can_stop_early_and_every_thread_ends() {
        let data = sample(200_000);
        let mut seen = 0;
        let result = parse_stream(&data[..], 200, 3, |lines| {
            seen += lines.len();
            anyhow::bail!("stop")
        });
        assert_eq!(result.unwrap_err().to_string(), "stop");
        assert!(seen > 0 && seen < 200_000);
    }

    #[test]
    fn read_errors_are_reported() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let error = parse_stream(Broken, 100, 2, |_| Ok(())).unwrap_err();
        assert!(format!("{error:#}").contains("disk on fire"), "{error:#}");
    }

    /// What `sources::lines::for_each_line` (the reference framer) makes of `data`.
    fn reference(data: &[u8], max_line_bytes: usize) -> Vec<(u64, String)> {
        let mut want = Vec::new();
        crate::sources::lines::for_each_line::<_, _, std::io::Error>(data, max_line_bytes, |line| {
            want.push(match line {
                crate::sources::lines::Line::Text { offset, bytes } => {
                    let lossy = std::str::from_utf8(bytes).is_err();
                    let text = String::from_utf8_lossy(bytes);
                    let len = bytes.len();
                    match parsers::parse_record(&text) {
                        Ok(record) => (offset, format!("record {len} {lossy} {}", record.header.hostname)),
                        Err(error) => (offset, format!("failed {len} {lossy} {error}")),
                    }
                }
                crate::sources::lines::Line::Oversized { offset, len } => (offset, format!("oversized {len}")),
            });
            Ok(())
        })
        .unwrap();
        want
    }

    #[test]
    fn framing_matches_the_reference_framer_across_chunk_boundaries() {
        // Lines far longer than a chunk, bad UTF-8 right after one, CRs, empty lines, and no
        // final newline: every framing edge, at several line limits.
        let mut data = Vec::new();
        for i in 0..3000u32 {
            match i % 11 {
                0 if i % 550 == 0 => data.extend(std::iter::repeat_n(b'y', 3 * CHUNK_BYTES + i as usize)),
                1 => data.extend_from_slice(b"Nov  3 13:35:12 bad\xc3( postfix/smtp[1]: x"),
                2 => {}
                3 => data.extend_from_slice(b"\r"),
                4 => data.extend(std::iter::repeat_n(b'z', 150 + i as usize % 100)),
                _ => data.extend_from_slice(format!("Nov  3 13:35:12 h{i} postfix/qmgr[1]: removed").as_bytes()),
            }
            data.push(b'\n');
        }
        data.extend_from_slice(b"Nov  3 13:35:12 last postfix/qmgr[1]: no newline");
        for max in [100, 200, 4 * CHUNK_BYTES] {
            let want = reference(&data, max);
            for workers in [1, 3] {
                assert_eq!(collect(&data, max, workers), want, "max {max}, {workers} workers");
            }
        }
        // A stream that is one oversized line, with and without a newline.
        for tail in [&b""[..], b"\n"] {
            let mut one = vec![b'x'; 2 * CHUNK_BYTES + 5];
            one.extend_from_slice(tail);
            assert_eq!(collect(&one, 10, 2), vec![(0, format!("oversized {}", 2 * CHUNK_BYTES + 5))]);
        }
    }

    #[test]
    fn recycled_vectors_keep_their_allocation() {
        let lines: Vec<Parsed<'_>> = Vec::with_capacity(1000);
        let address = lines.as_ptr() as usize;
        let relabelled: Vec<Parsed<'static>> = relabel(lines);
        assert_eq!(relabelled.as_ptr() as usize, address);
        assert!(relabelled.capacity() >= 1000);
    }

    #[test]
    fn prefetching_ahead_reads_only_what_exists() {
        // Every position of short and long chunks, past the end too, and each kind of line:
        // a hint never indexes out of bounds and leaves the lines as they were.
        let mut data = sample(40);
        for i in 0..40 {
            let line = match i % 2 {
                0 => format!("Nov  3 13:35:12 h postfix/smtp[{i}]: 4Bq{i:04}: to=<a@b.example>, relay=mx.b.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n"),
                _ => format!("Nov  3 13:35:12 h postfix/smtp[{i}]: Verified TLS connection established to mx.b.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"),
            };
            data.extend_from_slice(line.as_bytes());
        }
        let (mut all, mut events) = (Vec::new(), 0);
        parse_stream(&data[..], 200, 2, |lines| {
            for i in 0..lines.len() + 3 * PREFETCH_STRIDE + 1 {
                prefetch_ahead(lines, i);
            }
            all.extend(lines.iter().map(describe));
            events += lines
                .iter()
                .filter(|line| {
                    use parsers::postfix::Event;
                    matches!(
                        line,
                        Parsed::Line {
                            record: Ok(parsers::Record {
                                body: parsers::Body::Postfix {
                                    event: Event::Delivery(_) | Event::TlsConnection(_),
                                    ..
                                },
                                ..
                            }),
                            ..
                        }
                    )
                })
                .count();
            Ok(())
        })
        .unwrap();
        assert_eq!(events, 40, "the deliveries and TLS lines were parsed as such");
        assert_eq!(all, collect(&data, 200, 2));
        let oversized = [Parsed::Oversized { offset: 0, len: 1 << 20 }];
        for i in 0..4 * PREFETCH_STRIDE {
            prefetch_ahead(&oversized, i);
            prefetch_ahead(&[], i);
        }
    }

    #[test]
    fn empty_stream() {
        assert!(collect(b"", 10, 2).is_empty());
    }

    /// A reader that returns at most `step` bytes per call, as a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_frame_like_whole_ones() {
        // 500 lines with every kind of line `sample` makes; one-byte reads make this slow to grow.
        let mut data = sample(500);
        data.extend_from_slice(b"Nov  3 13:35:12 last postfix/qmgr[1]: no newline");
        for max in [100, 200] {
            let want = collect(&data, max, 2);
            for step in [1, 7, 100, 4096] {
                let mut got = Vec::new();
                let bytes = parse_stream(Trickle { data: &data, step }, max, 3, |lines| {
                    got.extend(lines.iter().map(describe));
                    Ok(())
                })
                .unwrap();
                assert_eq!(bytes, data.len() as u64);
                assert_eq!(got, want, "max {max}, step {step}");
            }
        }
    }

    /// A reader fed by a channel: it blocks until the test sends more, like a pipe whose writer
    /// is still working.
    struct Fed(Receiver<Vec<u8>>, Vec<u8>);

    impl Read for Fed {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1.is_empty() {
                match self.0.recv() {
                    Ok(more) => self.1 = more,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.1.len());
            buf[..n].copy_from_slice(&self.1[..n]);
            self.1.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn lines_from_a_pipe_are_handed_on_before_the_writer_is_done() {
        // Three lines, far less than a chunk: they must reach the caller while the writer still
        // holds the pipe open (the reader used to wait for a full chunk or the end).
        let (to_reader, from_test) = mpsc::channel::<Vec<u8>>();
        let (to_test, seen) = mpsc::channel::<u64>();
        let parser = std::thread::spawn(move || {
            parse_stream(Fed(from_test, Vec::new()), 1000, 2, |lines| {
                for line in lines.iter() {
                    if let Parsed::Line { offset, record: Ok(_), .. } = line {
                        let _ = to_test.send(*offset);
                    }
                }
                Ok(())
            })
        });
        let line = b"Nov  3 13:35:12 h postfix/qmgr[1]: removed\n";
        to_reader.send(line.repeat(3)).unwrap();
        let timeout = std::time::Duration::from_secs(20);
        let first: Vec<u64> = (0..3).map(|_| seen.recv_timeout(timeout).expect("a line arrived")).collect();
        assert_eq!(first, [0, line.len() as u64, 2 * line.len() as u64]);
        to_reader.send(line.to_vec()).unwrap();
        assert_eq!(seen.recv_timeout(timeout).expect("the fourth line arrived"), 3 * line.len() as u64);
        drop(to_reader);
        assert_eq!(parser.join().unwrap().unwrap(), 4 * line.len() as u64);
    }
}
