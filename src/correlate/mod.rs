//! Correlate: joins the lines of one SMTP connection into one [`Observation`].
//!
//! This is the first stage that outlives an input buffer: it takes borrowed
//! [`parsers::Record`]s and keeps owned, bounded state per MTA process until a connection is
//! complete, then emits an owned [`Observation`]. Each MTA has its own join rules in a submodule
//! (`postfix`: by `smtp[pid]` for outbound, by the `smtpd[pid]` connect…disconnect window for
//! inbound; research/FORMATS.md §2.1, §2.4. `sendmail`: by pid, `STARTTLS=` → `to=`/`from=`; §4.3;
//! `opensmtpd`: by session id, §5).
//!
//! **Invariants:** state is bounded by [`Config::max_open`] entries and by
//! [`Config::idle_timeout_secs`] of log time; every expiry and eviction is counted and still
//! emits what was known. Plaintext is only claimed when the log proves it (see [`TlsLogging`]).
//! Nothing here does IO.

pub mod exim;
pub mod milter_dedup;
pub mod opensmtpd;
pub mod postfix;
pub mod sendmail;

use std::sync::Arc;

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::observation::{Direction, Observation, Outcome, Source};

/// Whether the MTA logs a TLS summary for every TLS connection
/// (Postfix `smtp_tls_loglevel`/`smtpd_tls_loglevel` ≥ 1).
///
/// Without it a connection with no TLS line may well have used TLS, so it cannot be called
/// plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsLogging {
    /// Known to be on for the whole log: a connection without a TLS line is plaintext.
    On,
    /// Known to be off (or unknown): a connection without a TLS line is `unknown`.
    Off,
    /// On for an MTA instance once that instance has logged a TLS summary line on the same
    /// side (client or server); `unknown` before that. The default: it never claims plaintext
    /// for an MTA that never logs TLS.
    #[default]
    Auto,
}

/// Limits and options of the correlator.
#[derive(Debug, Clone)]
pub struct Config {
    /// See [`TlsLogging`].
    pub tls_logging: TlsLogging,
    /// Most connections kept open at once; beyond it the least recently active is emitted early.
    pub max_open: usize,
    /// A connection with no new line for this long (log time) is emitted.
    pub idle_timeout_secs: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { tls_logging: TlsLogging::Auto, max_open: 100_000, idle_timeout_secs: 300 }
    }
}

/// Where and when one line was read.
#[derive(Debug, Clone, Copy)]
pub struct LineMeta {
    /// Index returned by [`Correlator::add_source`].
    pub source: SourceId,
    /// Byte offset of the line in its source.
    pub offset: u64,
    /// Log time of the line, microseconds since the Unix epoch, UTC.
    pub ts_micros: i64,
}

/// A registered source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(u32);

/// What the correlator saw, for `--stats` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records pushed.
    pub records: u64,
    /// Lines of programs with no grammar (not an MTA we know).
    pub other_program: u64,
    /// MTA lines that carry nothing about TLS or delivery (`qmgr`, `cleanup`, …).
    pub ignored: u64,
    /// TLS lines of `tlsproxy`, which repeat a handshake that `smtp`/`smtpd` also logs.
    pub tlsproxy_duplicates: u64,
    /// Delivery lines without an SMTP peer (`relay=local`, LMTP over a unix socket, `relay=none`).
    pub local_deliveries: u64,
    /// Lines that refer to a connection we never saw the start of and cannot stand alone.
    pub orphans: u64,
    /// Connections emitted because they were idle for [`Config::idle_timeout_secs`].
    pub expired: u64,
    /// Connections emitted early because [`Config::max_open`] was reached.
    pub evicted: u64,
    /// Interned (reporter, instance) names dropped because no open state used them and the
    /// table was full (see [`Names`]); nothing is lost, a name seen again is interned anew.
    pub names_forgotten: u64,
    /// Observations emitted, by [`Outcome`] in the order of [`Outcome::ALL`].
    pub by_outcome: [u64; 7],
    /// Observations emitted: outbound, inbound.
    pub by_direction: [u64; 2],
}

impl Counters {
    /// Observations emitted in total.
    pub fn observations(&self) -> u64 {
        self.by_direction.iter().sum()
    }

    fn count(&mut self, observation: &Observation) {
        let outcome_idx = Outcome::ALL.iter().position(|o| *o == observation.outcome).unwrap_or(6);
        self.by_outcome[outcome_idx] += 1;
        self.by_direction[usize::from(observation.direction == Direction::Inbound)] += 1;
    }
}

/// Joins records into observations.
#[derive(Debug)]
pub struct Correlator {
    config: Config,
    sources: Vec<Arc<Source>>,
    /// [`crate::observation::event_id_prefix`] of each source.
    id_prefixes: Vec<u64>,
    names: Names,
    postfix: postfix::State,
    sendmail: sendmail::State,
    exim: exim::State,
    opensmtpd: opensmtpd::State,
    counters: Counters,
    /// Log time of the last expiry sweep.
    last_sweep_micros: i64,
    /// The latest log time pushed (for [`Correlator::idle_sweep`]).
    latest_micros: i64,
    /// The (estimated) log time of the last [`Correlator::idle_sweep`].
    last_idle_sweep_micros: i64,
}

impl Correlator {
    /// A correlator with no sources.
    pub fn new(config: Config) -> Self {
        Correlator {
            config,
            sources: Vec::new(),
            id_prefixes: Vec::new(),
            names: Names::default(),
            postfix: postfix::State::default(),
            sendmail: sendmail::State::default(),
            exim: exim::State::default(),
            opensmtpd: opensmtpd::State::default(),
            counters: Counters::default(),
            last_sweep_micros: i64::MIN,
            latest_micros: i64::MIN,
            last_idle_sweep_micros: i64::MIN,
        }
    }

    /// Registers a source; lines from it carry the returned id in [`LineMeta::source`].
    pub fn add_source(&mut self, source: Source) -> SourceId {
        self.id_prefixes.push(crate::observation::event_id_prefix(&source.name));
        self.sources.push(Arc::new(source));
        SourceId(u32::try_from(self.sources.len() - 1).unwrap_or(u32::MAX))
    }

    /// Feeds one parsed line; completed observations are appended to `out`.
    pub fn push(&mut self, record: &parsers::Record<'_>, meta: LineMeta, out: &mut Vec<Observation>) {
        self.counters.records += 1;
        let start = out.len();
        match &record.body {
            parsers::Body::Other => self.counters.other_program += 1,
            parsers::Body::Unparsed(_) => {}
            // A third of a Postfix log (qmgr, cleanup, pickup, …): nothing to join, so the
            // process name is not even looked up.
            parsers::Body::Postfix { event: parsers::postfix::Event::Ignored, .. } => self.counters.ignored += 1,
            body => {
                let process = self.names.process(&record.header, record.header.procid);
                let mut ctx = postfix::Ctx {
                    config: &self.config,
                    sources: &self.sources,
                    id_prefixes: &self.id_prefixes,
                    names: &self.names,
                    counters: &mut self.counters,
                    meta,
                    out,
                };
                match body {
                    parsers::Body::Postfix { daemon, event } => self.postfix.push(&mut ctx, process, *daemon, event),
                    parsers::Body::Sendmail(event) => self.sendmail.push(&mut ctx, process, event),
                    parsers::Body::Exim(event) => self.exim.push(&mut ctx, process, event),
                    parsers::Body::Opensmtpd(event) => self.opensmtpd.push(&mut ctx, process, event),
                    parsers::Body::Other | parsers::Body::Unparsed(_) => {}
                }
            }
        }
        self.latest_micros = self.latest_micros.max(meta.ts_micros);
        if meta.ts_micros.saturating_sub(self.last_sweep_micros) >= 10_000_000
            || self.postfix.open() > self.config.max_open
            || self.sendmail.open() > self.config.max_open
            || self.exim.open() > self.config.max_open
            || self.opensmtpd.open() > self.config.max_open
        {
            self.sweep(meta.ts_micros, out);
        }
        self.count_new(out, start);
        if self.names.over_limit() {
            self.forget_unused_names();
        }
    }

    /// Forgets the interned names that no open connection, split line or TLS-logging evidence
    /// refers to (called when [`Names`] outgrows its limit).
    // Cold and out of line: inlined, it made `push` too large to be inlined into its caller
    // (+1 % instructions per line, callgrind).
    #[cold]
    #[inline(never)]
    pub fn forget_unused_names(&mut self) {
        let mut keep = FxHashSet::default();
        self.postfix.names_in_use(&mut keep);
        self.sendmail.names_in_use(&mut keep);
        self.exim.names_in_use(&mut keep);
        self.opensmtpd.names_in_use(&mut keep);
        self.counters.names_forgotten += self.names.retain(&keep);
    }

    /// Interned (reporter, instance) names currently held.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The offset of the earliest line of `source` that an open connection still needs (see
    /// [`postfix::State::low_water`]); `None` when nothing of it is open.
    pub fn low_water(&self, source: SourceId) -> Option<u64> {
        [
            self.postfix.low_water(source),
            self.sendmail.low_water(source),
            self.exim.low_water(source),
            self.opensmtpd.low_water(source),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The shared source record of `id` (observations carry clones of this `Arc`).
    pub fn source(&self, id: SourceId) -> Option<&Arc<Source>> {
        self.sources.get(id.0 as usize)
    }

    /// The processes (reporter, instance, pid) with a connection from `source` still open, and
    /// the offset of its first line: what a reader that restarts at [`Correlator::low_water`]
    /// must feed again (other lines of that range belong to connections already emitted).
    pub fn open_processes(&self, source: SourceId) -> Vec<(String, String, u32, u64)> {
        self.postfix
            .open_processes(source)
            .into_iter()
            .chain(self.sendmail.open_processes(source))
            .chain(self.exim.open_processes(source))
            .chain(self.opensmtpd.open_processes(source))
            .map(|(key, offset)| {
                let (reporter, instance) = self.names.get(key.name);
                (reporter.to_string(), instance.to_string(), key.pid, offset)
            })
            .collect()
    }

    /// The `--tls-logging auto` evidence: (reporter, instance, inbound) of every MTA instance
    /// seen logging a TLS summary on that side. A daemon saves it with its checkpoint, so that
    /// after a restart a connection without a TLS line is still known to be plaintext.
    pub fn tls_logging_evidence(&self) -> Vec<(String, String, bool)> {
        let mut evidence: Vec<(String, String, bool)> = self
            .postfix
            .tls_logging_seen()
            .map(|(name, inbound)| {
                let (reporter, instance) = self.names.get(name);
                (reporter.to_string(), instance.to_string(), inbound)
            })
            .collect();
        evidence.sort();
        evidence
    }

    /// Restores [`Correlator::tls_logging_evidence`] of an earlier run.
    pub fn restore_tls_logging_evidence(&mut self, evidence: &[(String, String, bool)]) {
        for (reporter, instance, inbound) in evidence {
            let name = self.names.intern(reporter, instance);
            self.postfix.restore_tls_logging_seen(name, *inbound);
        }
    }

    /// Registers a source whose event ids hash `id_key` instead of the source's name: a followed
    /// file is one name across rotations, but each generation needs ids of its own.
    pub fn add_source_keyed(&mut self, source: Source, id_key: &str) -> SourceId {
        let id = self.add_source(source);
        if let Some(prefix) = self.id_prefixes.get_mut(id.0 as usize) {
            *prefix = crate::observation::event_id_prefix(id_key);
        }
        id
    }

    /// Emits every open connection (end of input, shutdown).
    pub fn finish(&mut self, out: &mut Vec<Observation>) {
        let start = out.len();
        let mut ctx = postfix::Ctx {
            config: &self.config,
            sources: &self.sources,
            id_prefixes: &self.id_prefixes,
            names: &self.names,
            counters: &mut self.counters,
            meta: LineMeta { source: SourceId(0), offset: 0, ts_micros: i64::MAX },
            out,
        };
        self.postfix.flush_all(&mut ctx);
        self.sendmail.flush_all(&mut ctx);
        self.exim.flush_all(&mut ctx);
        self.opensmtpd.flush_all(&mut ctx);
        self.count_new(out, start);
    }

    /// A live daemon's clock when no line comes: `quiet_micros` after the latest line, log time
    /// is taken to have moved on as much, so connections idle for [`Config::idle_timeout_secs`]
    /// are emitted even when the MTA logs nothing more (a quiet server's last delivery would
    /// otherwise wait for its next line). Sweeps at most every 10 s of that time.
    pub fn idle_sweep(&mut self, quiet_micros: i64, out: &mut Vec<Observation>) {
        if self.latest_micros == i64::MIN {
            return;
        }
        let now = self.latest_micros.saturating_add(quiet_micros.max(0));
        let every = 10_000_000.min(self.config.idle_timeout_secs.saturating_mul(1_000_000));
        if now.saturating_sub(self.last_idle_sweep_micros.max(self.last_sweep_micros)) >= every {
            self.last_idle_sweep_micros = now;
            // The log-time sweeps of `push` keep their own clock: lines of a slower source
            // (an old file read later) are still swept by their own times.
            let last_sweep = self.last_sweep_micros;
            let start = out.len();
            self.sweep(now, out);
            self.last_sweep_micros = last_sweep;
            self.count_new(out, start);
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.postfix.open() + self.sendmail.open() + self.exim.open() + self.opensmtpd.open()
    }

    fn sweep(&mut self, now_micros: i64, out: &mut Vec<Observation>) {
        self.last_sweep_micros = now_micros;
        let mut ctx = postfix::Ctx {
            config: &self.config,
            sources: &self.sources,
            id_prefixes: &self.id_prefixes,
            names: &self.names,
            counters: &mut self.counters,
            meta: LineMeta { source: SourceId(0), offset: 0, ts_micros: now_micros },
            out,
        };
        let cutoff_micros = now_micros.saturating_sub(self.config.idle_timeout_secs.saturating_mul(1_000_000));
        self.postfix.sweep(&mut ctx, cutoff_micros);
        self.sendmail.sweep(&mut ctx, cutoff_micros);
        self.exim.sweep(&mut ctx, cutoff_micros);
        self.opensmtpd.sweep(&mut ctx, cutoff_micros);
    }

    fn count_new(&mut self, out: &[Observation], start: usize) {
        for observation in &out[start..] {
            self.counters.count(observation);
        }
    }
}

/// A process of one MTA instance on one reporting host: the key of per-process state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    /// Index of (reporter, instance) in [`Names`].
    pub name: u32,
    /// The pid, or 0 when the line had none.
    pub pid: u32,
}

/// Interns (reporter, instance) pairs so per-line keys are two integers.
///
/// **Bounded:** host names and program tags come from the log, and forged lines can bring new
/// ones without end. When the table holds more than `limit` names (or tags), the correlator
/// calls [`Correlator::forget_unused_names`], which keeps only the names open state still
/// refers to; the slots of the others are reused. A forgotten pair seen again is interned anew,
/// so nothing but a few allocations is lost.
#[derive(Debug)]
pub struct Names {
    /// `(reporter, instance)` → index in `pairs`.
    ids: FxHashMap<(Arc<str>, Arc<str>), u32>,
    /// The pair of each index; `None` for a forgotten one, whose index is in `free`.
    pairs: Vec<Option<(Arc<str>, Arc<str>)>>,
    free: Vec<u32>,
    /// Hash of (reporter, program tag) → the (reporter, tag, index in `pairs`) with that hash:
    /// one hash lookup per line, without splitting the tag, allocating or copying the names
    /// into a key (which cost three `memcpy` calls per line).
    by_tag: FxHashMap<u64, Vec<TaggedName>>,
    /// Entries of `by_tag`, all vectors together.
    tagged: usize,
    /// Names or tags beyond which unused names are forgotten: twice what was left in use after
    /// the last time, and at least `base`.
    limit: usize,
    base: usize,
}

/// A (reporter, program tag) pair seen in a header, and the index of its (reporter, instance).
type TaggedName = (Box<str>, Box<str>, u32);

/// The least [`Names`] limit: far more MTA instances than one site runs, small in memory (a
/// name costs about two hundred bytes).
pub(crate) const NAMES_LIMIT: usize = 16_384;

impl Default for Names {
    fn default() -> Self {
        Names::with_limit(NAMES_LIMIT)
    }
}

impl Names {
    fn with_limit(limit: usize) -> Self {
        Names {
            ids: FxHashMap::default(),
            pairs: Vec::new(),
            free: Vec::new(),
            by_tag: FxHashMap::default(),
            tagged: 0,
            limit,
            base: limit,
        }
    }

    // Inlined into each MTA arm of `Correlator::push`: once it had two callers the compiler
    // stopped inlining it, which cost the Postfix path ~0.5 % more instructions (callgrind).
    #[inline(always)]
    fn process(&mut self, header: &parsers::Header<'_>, pid: Option<u32>) -> ProcessKey {
        let (reporter, tag) = (header.hostname, header.appname);
        let mut hasher = rustc_hash::FxHasher::default();
        // Length-prefixed, so names that move bytes between the parts hash apart (an equal hash
        // is still compared name by name).
        hasher.write_usize(reporter.len());
        hasher.write(reporter.as_bytes());
        hasher.write(tag.as_bytes());
        let hash = hasher.finish();
        let found = self.by_tag.get(&hash).and_then(|entries| {
            entries.iter().find(|(have_reporter, have_tag, _)| **have_reporter == *reporter && **have_tag == *tag)
        });
        let name = match found {
            Some((_, _, id)) => *id,
            None => {
                let id = self.intern(reporter, header.instance());
                self.by_tag.entry(hash).or_default().push((reporter.into(), tag.into(), id));
                self.tagged += 1;
                id
            }
        };
        ProcessKey { name, pid: pid.unwrap_or(0) }
    }

    /// The index of (reporter, instance), interned if new.
    fn intern(&mut self, reporter: &str, instance: &str) -> u32 {
        let key: (Arc<str>, Arc<str>) = (Arc::from(reporter), Arc::from(instance));
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.pairs[id as usize] = Some(key.clone());
                id
            }
            None => {
                self.pairs.push(Some(key.clone()));
                u32::try_from(self.pairs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.ids.insert(key, id);
        id
    }

    /// The (reporter, instance) of an interned name.
    pub fn get(&self, name: u32) -> (Arc<str>, Arc<str>) {
        self.pairs.get(name as usize).and_then(Option::clone).unwrap_or_else(|| (Arc::from(""), Arc::from("")))
    }

    /// Names interned and not forgotten.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no name is interned.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether the table has outgrown its limit (see [`Correlator::forget_unused_names`]).
    fn over_limit(&self) -> bool {
        self.ids.len().max(self.tagged) > self.limit
    }

    /// Forgets every name not in `keep`; returns how many were forgotten. The limit becomes
    /// twice what is left (at least the base limit), so the work stays a constant per interned
    /// name however many stay in use.
    fn retain(&mut self, keep: &FxHashSet<u32>) -> u64 {
        let mut forgotten = 0;
        for (id, pair) in self.pairs.iter_mut().enumerate() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            if pair.is_some() && !keep.contains(&id) {
                if let Some(key) = pair.take() {
                    self.ids.remove(&key);
                }
                self.free.push(id);
                forgotten += 1;
            }
        }
        self.by_tag.retain(|_, entries| {
            entries.retain(|(_, _, id)| keep.contains(id));
            !entries.is_empty()
        });
        self.tagged = self.by_tag.values().map(Vec::len).sum();
        self.limit = self.base.max(2 * self.ids.len().max(self.tagged));
        forgotten
    }
}

/// Most instances remembered per side as logging TLS summaries ([`TlsLogging::Auto`]'s
/// evidence). Forged lines could otherwise grow the sets without end; past the limit new
/// evidence is not recorded, which only makes plaintext claims rarer (`unknown` instead).
pub(crate) const MAX_TLS_EVIDENCE: usize = 16_384;

/// Records `value` in an evidence set unless the set is full (see [`MAX_TLS_EVIDENCE`]).
pub(crate) fn note_evidence<T: std::hash::Hash + Eq>(set: &mut FxHashSet<T>, value: T) {
    if set.len() < MAX_TLS_EVIDENCE || set.contains(&value) {
        set.insert(value);
    }
}

/// The canonical text of an IP address as logged (`192.0.2.7`, `2001:db8::7`; an IPv6 address is
/// rewritten to its RFC 5952 form), or `None` when `addr` is not one. The caller strips MTA
/// decorations (`IPv6:`, brackets) first. One place for the four correlators.
///
/// An address with a colon can only be IPv6 and one without only IPv4, so each text is parsed
/// once (`IpAddr`'s parser tried IPv4 first on every IPv6 address), and IPv6 is written by
/// [`ipv6_text`] rather than through `Display` (the formatting machinery cost about 2,000
/// instructions per address, `ipv6_text` about 300: callgrind).
pub(crate) fn canonical_ip(addr: &str) -> Option<String> {
    // An IPv6 text has a colon within its first five bytes (a group has four digits at most).
    if addr.bytes().take(5).any(|byte| byte == b':') {
        // MTAs log what `inet_ntop` writes, nearly always the canonical text already: checked
        // in one pass and copied (parsing and rewriting it cost about 490 instructions per
        // address, callgrind on the bench log).
        if is_canonical_ipv6(addr) {
            return Some(addr.to_owned());
        }
        addr.parse::<std::net::Ipv6Addr>().ok().map(ipv6_text)
    } else {
        // std rejects leading zeros, so a parsed IPv4 address is already in canonical form. (A
        // hand-written byte loop cost as much as std's parser: tried twice, callgrind.)
        addr.parse::<std::net::Ipv4Addr>().ok().map(|_| addr.to_owned())
    }
}

/// Whether `text` is exactly what [`ipv6_text`] writes for the address it spells: hex groups in
/// lowercase without leading zeros, and `::` standing for the first longest run of two or more
/// zero groups (and only for it). Dotted tails and IPv4-mapped addresses are left to the
/// parser (`false`), as is anything else; `true` implies that `text` parses.
fn is_canonical_ipv6(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() > 39 {
        return false;
    }
    // The groups as written, and where `::` stands among them.
    let mut written = [0u16; 8];
    let mut count = 0;
    let mut gap = None;
    let mut at = 0;
    if bytes.starts_with(b"::") {
        gap = Some(0);
        at = 2;
    }
    while at < bytes.len() {
        let start = at;
        let mut value = 0u16;
        while at < bytes.len() && at - start < 4 {
            let digit = match bytes[at] {
                byte @ b'0'..=b'9' => byte - b'0',
                byte @ b'a'..=b'f' => byte - b'a' + 10,
                _ => break,
            };
            value = value << 4 | u16::from(digit);
            at += 1;
        }
        let digits = at - start;
        if digits == 0 || (digits > 1 && bytes[start] == b'0') || count == 8 {
            return false;
        }
        written[count] = value;
        count += 1;
        match bytes.get(at) {
            None => break,
            Some(b':') => at += 1,
            Some(_) => return false,
        }
        match bytes.get(at) {
            Some(b':') if gap.is_none() => {
                gap = Some(count);
                at += 1;
            }
            Some(b':') | None => return false,
            Some(_) => {}
        }
    }
    let mut groups = [0u16; 8];
    let gap_len = match gap {
        None if count == 8 => {
            groups = written;
            0
        }
        Some(gap_at) if count <= 6 => {
            let gap_len = 8 - count;
            groups[..gap_at].copy_from_slice(&written[..gap_at]);
            groups[gap_at + gap_len..].copy_from_slice(&written[gap_at..count]);
            gap_len
        }
        _ => return false,
    };
    if groups[..5] == [0; 5] && groups[5] == 0xffff {
        return false;
    }
    let (run_start, run_len) = longest_zero_run(&groups);
    match gap {
        None => run_len < 2,
        Some(gap_at) => run_len >= 2 && run_start == gap_at && run_len == gap_len,
    }
}

/// The first longest run of zero groups: (start, length).
fn longest_zero_run(groups: &[u16; 8]) -> (usize, usize) {
    let (mut run_start, mut run_len) = (0, 0);
    let mut at = 0;
    while at < groups.len() {
        if groups[at] == 0 {
            let start = at;
            while at < groups.len() && groups[at] == 0 {
                at += 1;
            }
            if at - start > run_len {
                (run_start, run_len) = (start, at - start);
            }
        } else {
            at += 1;
        }
    }
    (run_start, run_len)
}

/// The RFC 5952 text of `ip`, exactly as `Ipv6Addr`'s `Display` writes it: lowercase hex
/// without leading zeros, the first longest run of two or more zero groups as `::`, and
/// IPv4-mapped addresses (and only those) with a dotted tail.
fn ipv6_text(ip: std::net::Ipv6Addr) -> String {
    if ip.to_ipv4_mapped().is_some() {
        return ip.to_string();
    }
    let groups = ip.segments();
    // The first longest run of zero groups, if it is two or more long.
    let (run_start, mut run_len) = longest_zero_run(&groups);
    if run_len < 2 {
        run_len = 0;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Written into an array and taken as one string (39 bytes at most: eight groups of four
    // digits and seven colons).
    let mut text = [0u8; 39];
    let mut len = 0;
    let mut idx = 0;
    while idx < groups.len() {
        if run_len > 0 && idx == run_start {
            text[len..len + 2].copy_from_slice(b"::");
            len += 2;
            idx += run_len;
            continue;
        }
        if idx > 0 && !(run_len > 0 && idx == run_start + run_len) {
            text[len] = b':';
            len += 1;
        }
        let group = groups[idx];
        let digits = (4 - group.leading_zeros() / 4).max(1);
        for shift in (0..digits).rev() {
            text[len] = HEX[usize::from((group >> (shift * 4)) & 0xf)];
            len += 1;
        }
        idx += 1;
    }
    // ASCII by construction: the check cannot fail.
    String::from_utf8(text[..len].to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names_are_interned_per_reporter_and_instance() {
        let line = |host: &'static str, tag: &'static str| parsers::Header {
            framing: parsers::syslog::Framing::Rfc3164,
            pri: None,
            timestamp: None,
            hostname: host,
            appname: tag,
            procid: Some(7),
        };
        let mut names = Names::default();
        let mut id = |host, tag| names.process(&line(host, tag), Some(7)).name;
        let smtp = id("mx1", "postfix/smtp");
        // The same instance on the same host, whatever the daemon: one name.
        assert_eq!(id("mx1", "postfix/smtpd"), smtp);
        assert_eq!(id("mx1", "postfix/smtp"), smtp);
        // Bytes moved between host and tag, another host, another instance: other names.
        let moved = id("mx1p", "ostfix/smtp");
        let other_host = id("mx2", "postfix/smtp");
        let other_instance = id("mx1", "postfix-out/smtp");
        let all = [smtp, moved, other_host, other_instance];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b, "{all:?}");
            }
        }
        assert_eq!(id("mx1p", "ostfix/smtp"), moved);
        assert_eq!(names.get(other_instance), (Arc::from("mx1"), Arc::from("postfix-out")));
        assert_eq!(names.get(moved), (Arc::from("mx1p"), Arc::from("ostfix")));
    }

    #[test]
    fn evidence_sets_stop_growing_at_their_limit() {
        let mut set = FxHashSet::default();
        for value in 0..MAX_TLS_EVIDENCE + 10 {
            note_evidence(&mut set, value);
        }
        assert_eq!(set.len(), MAX_TLS_EVIDENCE);
        // What is already known stays known.
        note_evidence(&mut set, 0);
        assert!(set.contains(&0) && !set.contains(&MAX_TLS_EVIDENCE));
    }

    #[test]
    fn forgotten_names_free_their_slots_and_come_back_when_seen_again() {
        let header = |host: &'static str| parsers::Header {
            framing: parsers::syslog::Framing::Rfc3164,
            pri: None,
            timestamp: None,
            hostname: host,
            appname: "postfix/smtpd",
            procid: Some(1),
        };
        let mut names = Names::with_limit(2);
        let a = names.process(&header("a"), Some(1)).name;
        let b = names.process(&header("b"), Some(1)).name;
        let c = names.process(&header("c"), Some(1)).name;
        assert!(names.over_limit());
        assert_eq!(names.retain(&FxHashSet::from_iter([b])), 2);
        assert!(!names.over_limit());
        assert_eq!((names.len(), names.tagged), (1, 1));
        assert_eq!(names.get(b), (Arc::from("b"), Arc::from("postfix")));
        assert_eq!(names.get(a), (Arc::from(""), Arc::from("")));
        // A forgotten pair seen again gets a name back (a reused slot), and `b` keeps its own.
        let again = names.process(&header("a"), Some(1)).name;
        assert!(again == a || again == c, "{again}");
        assert_eq!(names.get(again), (Arc::from("a"), Arc::from("postfix")));
        assert_eq!(names.process(&header("b"), Some(1)).name, b);
        assert_eq!(names.pairs.len(), 3);
    }

    #[test]
    fn ipv6_text_is_what_display_writes() {
        // Every pattern of zero groups (runs at the start, the end, ties, single zeros), with
        // group values of every digit count, plus the special addresses.
        let values = [0x1u16, 0x2a, 0xdb8, 0xfe80, 0xffff, 0x0f0f, 0x100];
        let mut checked = 0;
        for mask in 0u32..256 {
            for (round, value) in values.iter().enumerate() {
                let groups: [u16; 8] = std::array::from_fn(|idx| {
                    if mask & (1 << idx) == 0 {
                        0
                    } else {
                        value.rotate_left((idx * 3 + round) as u32)
                    }
                });
                let ip = std::net::Ipv6Addr::from(groups);
                assert_eq!(ipv6_text(ip), ip.to_string(), "{groups:x?}");
                checked += 1;
            }
        }
        for text in ["::", "::1", "::ffff:192.0.2.7", "::192.0.2.7", "64:ff9b::192.0.2.7", "fe80::1:0:0:1"] {
            let ip: std::net::Ipv6Addr = text.parse().unwrap();
            assert_eq!(ipv6_text(ip), ip.to_string(), "{text}");
        }
        assert_eq!(checked, 256 * values.len());
    }

    #[test]
    fn the_canonical_ipv6_check_agrees_with_parsing_and_rewriting() {
        // Addresses with zero runs of every length and place, each written canonically and in
        // the other ways MTAs or forgers may write it (upper case, leading zeros, the wrong
        // run compressed, no compression, a single zero group compressed), plus mangled texts.
        let slow = |text: &str| text.parse::<std::net::Ipv6Addr>().ok().map(ipv6_text);
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut fast_hits = 0;
        for _ in 0..60_000 {
            let mut groups = [0u16; 8];
            for group in &mut groups {
                *group = match next() % 4 {
                    0 | 1 => 0,
                    2 => (next() % 16) as u16,
                    _ => next() as u16,
                };
            }
            if next() % 16 == 0 {
                groups[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0xffff]);
            }
            let ip = std::net::Ipv6Addr::from(groups);
            let canonical = ipv6_text(ip);
            let mut texts = vec![
                canonical.clone(),
                canonical.to_uppercase(),
                groups.iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":"),
                groups.iter().map(|g| format!("{g:04x}")).collect::<Vec<_>>().join(":"),
            ];
            // Every run of zeros (of one group or more) compressed in turn.
            for start in 0..8 {
                for end in start + 1..=8 {
                    if groups[start..end].iter().all(|g| *g == 0) {
                        let head = groups[..start].iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
                        let tail = groups[end..].iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":");
                        texts.push(format!("{head}::{tail}"));
                    }
                }
            }
            let cut = (next() % (canonical.len() as u64 + 1)) as usize;
            texts.push(canonical[..cut].to_owned());
            texts.push(format!("{canonical}:"));
            texts.push(format!("{canonical}%eth0"));
            texts.push(format!("0{canonical}"));
            for text in texts {
                let want = slow(&text);
                // Only a text that the rewrite leaves as it is takes the fast path.
                if is_canonical_ipv6(&text) {
                    assert_eq!(want.as_deref(), Some(text.as_str()));
                    fast_hits += 1;
                }
                assert_eq!(canonical_ip(&text), want, "{text:?}");
            }
            // The canonical text of an address that is not IPv4-mapped takes the fast path.
            if ip.to_ipv4_mapped().is_none() {
                assert!(is_canonical_ipv6(&canonical), "{canonical:?}");
            }
        }
        assert!(fast_hits > 60_000, "{fast_hits}");
    }

    #[test]
    fn canonical_ip_keeps_ipv4_and_rewrites_ipv6() {
        for (addr, want) in [
            ("192.0.2.7", Some("192.0.2.7")),
            ("2001:DB8:0:0::7", Some("2001:db8::7")),
            ("::ffff:192.0.2.7", Some("::ffff:192.0.2.7")),
            ("01.2.3.4", None),
            ("12345::1", None),
            ("192.0.2.7:25", None),
            ("2001:db8::7%eth0", None),
            ("256.1.1.1", None),
            ("private/dovecot-lmtp", None),
            ("", None),
        ] {
            assert_eq!(canonical_ip(addr).as_deref(), want, "{addr:?}");
        }
    }
}
