//! The batching, retrying, spooling ClickHouse writer.
//!
//! Wire contract: rows are sent as `INSERT INTO observations (<every column>) FORMAT RowBinary`
//! through the `clickhouse` crate (see [`super::row`]); on a cluster, into the Distributed
//! `observations` (with `insert_distributed_sync=1` unless asked otherwise) or the server's own
//! `observations_local` ([`InsertTarget`]). Delivery is at-least-once: a batch is
//! kept until the server acknowledged it and resent unchanged on failure, so a batch can land
//! twice; `observations` is a ReplacingMergeTree keyed by `event_id`, and queries use `FINAL`
//! or `uniqExact(event_id)`.
//!
//! A batch is flushed at [`SinkConfig::max_rows`] rows, [`SinkConfig::max_bytes`] (estimated)
//! or every [`SinkConfig::period`]. A failed insert is classified by [`super::retry::classify`]:
//! transient failures are retried with exponential backoff, then the batch goes to the on-disk
//! [`Spool`] and is replayed in order once the server answers again (also after a restart);
//! invalid rows are isolated by splitting the batch and written to the dead-letter file.
//!
//! A batch fills in memory; when it is flushed its rows are written, sorted by the table's key,
//! into one INSERT that is ended in the background while the next batch fills: at most
//! [`SinkConfig::in_flight`] batches (default 2) are in flight, and the oldest is settled
//! (acknowledged, or retried/spooled: its rows are rebuilt from its kept observations with the
//! batch's version, so a resend carries the same bytes) before a flush would exceed that. Batches
//! may therefore land out of order after a failure; nothing depends on the order (event ids
//! de-duplicate). A [`SinkInput::Flush`] settles everything before it answers. A batch that can
//! neither be sent nor spooled is kept aside in memory and retried at every flush; it is never
//! merged into another batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use tokio::sync::mpsc;

use super::config::ClickhouseConfig;
use super::retry::{backoff, classify, RetryAction};
use super::row::{ip_bytes, ObservationRow, LOCAL_TABLE, TABLE};
use super::spool::Spool;
use crate::observation::{Direction, Observation};

/// Batching, retry and spool limits.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Flush when a batch has this many rows.
    pub max_rows: usize,
    /// Flush when a batch's estimated size reaches this many bytes.
    pub max_bytes: usize,
    /// Flush at least this often when rows are waiting.
    pub period: Duration,
    /// Where unsendable batches and rejected rows are kept.
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; beyond it the sink stops accepting rows (back-pressure).
    pub spool_max_bytes: u64,
    /// Insert attempts before a batch is spooled.
    pub retry_attempts: u32,
    /// First backoff between attempts.
    pub retry_initial_backoff: Duration,
    /// Longest backoff between attempts.
    pub retry_max_backoff: Duration,
    /// Timeout of one insert request.
    pub request_timeout: Duration,
    /// Most batches whose INSERT was ended and is not yet acknowledged (at least 1). The server
    /// runs each INSERT's part writing and views on one thread, so two in flight let a 2-core
    /// server work on both while the next batch fills. Acknowledgements are taken oldest first.
    pub in_flight: usize,
    /// Compression of the insert requests' bodies.
    pub compression: InsertCompression,
    /// Where the rows go: the single-node table, or on a cluster the Distributed table or this
    /// server's local shard table.
    pub target: InsertTarget,
}

/// Compression of the rows sent (`--insert-compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InsertCompression {
    /// None for a server on a loopback address (compressing costs both sides CPU and saves no
    /// network), LZ4 otherwise.
    #[default]
    Auto,
    /// LZ4, ClickHouse's own block compression (about 4x smaller on the wire).
    Lz4,
    /// Plain RowBinary.
    None,
}

impl InsertCompression {
    /// The crate's setting for a server at `url`.
    fn for_url(self, url: &url::Url) -> clickhouse::Compression {
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        match self {
            InsertCompression::Auto if loopback => clickhouse::Compression::None,
            InsertCompression::Auto | InsertCompression::Lz4 => clickhouse::Compression::Lz4,
            InsertCompression::None => clickhouse::Compression::None,
        }
    }
}

/// Where the sink inserts (`--cluster-insert`; README "Scale-out on a ClickHouse cluster").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InsertTarget {
    /// `observations` on a single server (the default, no settings sent).
    #[default]
    #[value(skip)]
    Single,
    /// `observations`, the Distributed table, with `insert_distributed_sync=1`: the server
    /// answers once every shard wrote its rows, so an acknowledged batch is on its shards and a
    /// batch that a stopped shard cannot take is retried and spooled by the ingester. (Modern
    /// servers call the setting `distributed_foreground_insert` and accept this name as an
    /// alias: checked on 26.9 in chdb.)
    Distributed,
    /// `observations`, the Distributed table, asynchronously: the server keeps the rows for each
    /// shard in its own disk queue and forwards them later. Faster, and a stopped shard does not
    /// hold the ingester up, but an acknowledged batch lives on that one server until forwarded.
    DistributedAsync,
    /// `observations_local` on the server of `--clickhouse` (its own shard): no forwarding and
    /// no second write, but the rows are not sharded by endpoint, so one endpoint's history may
    /// span shards (the rebuild still merges it) and de-duplication holds only while an
    /// ingester keeps writing to the same shard.
    Local,
}

impl InsertTarget {
    /// The table the rows go to.
    pub fn table(self) -> &'static str {
        match self {
            InsertTarget::Local => LOCAL_TABLE,
            _ => TABLE,
        }
    }

    /// Settings sent with every insert (only those this mode needs: a setting the server does
    /// not know fails the request).
    pub fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            InsertTarget::Distributed => &[("insert_distributed_sync", "1")],
            _ => &[],
        }
    }
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            period: Duration::from_secs(1),
            spool_dir: PathBuf::from("tlsledger-spool"),
            spool_max_bytes: 1 << 30,
            retry_attempts: 3,
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            in_flight: 2,
            compression: InsertCompression::Auto,
            target: InsertTarget::Single,
        }
    }
}

/// What the sink did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Rows acknowledged by the server.
    pub rows_inserted: u64,
    /// Insert requests acknowledged.
    pub batches_inserted: u64,
    /// Insert attempts that failed (transient or not).
    pub insert_failures: u64,
    /// Batches written to the spool.
    pub batches_spooled: u64,
    /// Spooled batches later acknowledged and removed.
    pub batches_replayed: u64,
    /// Rows written to the dead-letter file.
    pub rows_dead_lettered: u64,
    /// Batches still in the spool when the sink stopped.
    pub batches_left_in_spool: u64,
}

/// What the producer sends to [`ClickhouseSink::run`].
#[derive(Debug)]
pub enum SinkInput {
    /// Observations to insert, in order.
    Rows(Vec<Observation>),
    /// End the current batch now (send it, or spool it when the server is away) and answer when
    /// its rows are durable: the ingester's checkpoints wait for this.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The writer. Feed it with [`ClickhouseSink::run`].
pub struct ClickhouseSink {
    client: clickhouse::Client,
    spool: Spool,
    config: SinkConfig,
    counters: SinkCounters,
    pending: Vec<Observation>,
    pending_bytes: usize,
    /// Consecutive failed rounds, for the backoff while the server is away.
    failed_rounds: u32,
    /// Rows acknowledged so far, readable from other threads (progress line).
    inserted: Arc<AtomicU64>,
    /// Version stamped on the rows of the current batch. A failed batch is resent unchanged:
    /// its rows are built again from its observations with this version (keeping the built rows
    /// instead doubled the sink's memory and allocations for the rare retry).
    batch_ver: u64,
    /// Earlier batches, oldest first, whose INSERTs are completing on the server while the next
    /// one fills (at most [`SinkConfig::in_flight`]: the server writes a part and runs the views
    /// at the end of each INSERT, on one thread per INSERT, which took 0.3 s per 50,000 rows in
    /// bench/clickhouse.sh).
    in_flight: VecDeque<InFlight>,
    /// Emptied vectors of settled batches, reused by the next ones.
    spare: Vec<Vec<Observation>>,
    /// Batches that could neither be sent nor spooled (disk full or unwritable and the server
    /// away): retried at every flush, never mixed into a batch that is streaming.
    kept: Vec<(Vec<Observation>, usize)>,
}

/// A batch whose INSERT stream was ended and is awaiting the server's answer.
struct InFlight {
    answer: tokio::task::JoinHandle<Result<(), clickhouse::error::Error>>,
    batch: Vec<Observation>,
    ver: u64,
    bytes: usize,
}

impl ClickhouseSink {
    /// A sink for the server of `clickhouse`; opens the spool folder.
    pub fn new(clickhouse: &ClickhouseConfig, validation: bool, config: SinkConfig) -> Result<Self> {
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let mut client = clickhouse.client(validation).with_compression(config.compression.for_url(&clickhouse.url));
        for (name, value) in config.target.settings() {
            client = client.with_setting(*name, *value);
        }
        Ok(ClickhouseSink {
            client,
            spool,
            config,
            counters: SinkCounters::default(),
            pending: Vec::new(),
            pending_bytes: 0,
            failed_rounds: 0,
            inserted: Arc::new(AtomicU64::new(0)),
            batch_ver: 0,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            kept: Vec::new(),
        })
    }

    /// A live count of acknowledged rows, for progress displays.
    pub fn inserted(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.inserted)
    }

    /// Consumes observations (in chunks, so the channel costs little per row) until the channel closes, then flushes, tries once more to empty the
    /// spool, and returns the counters. Spooled batches from an earlier run are replayed first.
    pub async fn run(mut self, mut observations: mpsc::Receiver<SinkInput>) -> SinkCounters {
        self.drain_spool().await;
        let mut ticker = tokio::time::interval(self.config.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = observations.recv() => match received {
                    Some(SinkInput::Flush(done)) => {
                        // Sent or spooled: either way the rows survive a crash from here on.
                        self.flush().await;
                        self.settle(0).await;
                        let _ = done.send(());
                    }
                    Some(SinkInput::Rows(chunk)) => {
                        for observation in chunk {
                            self.accept(observation).await;
                            if self.pending.len() >= self.config.max_rows || self.pending_bytes >= self.config.max_bytes {
                                self.flush().await;
                            }
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if !self.pending.is_empty() {
                        self.flush().await;
                    } else if !self.in_flight.is_empty() {
                        self.settle(0).await;
                    } else if self.failed_rounds > 0 {
                        self.drain_spool().await;
                    }
                }
            }
        }
        self.flush().await;
        self.settle(0).await;
        self.drain_spool().await;
        self.counters.batches_left_in_spool = self.spool.batches().map_or(0, |b| b.len() as u64);
        if !self.kept.is_empty() {
            let rows: usize = self.kept.iter().map(|(batch, _)| batch.len()).sum();
            eprintln!(
                "tlsledger: {rows} observations could neither be sent to ClickHouse nor spooled to {} and are lost",
                self.config.spool_dir.display()
            );
            self.counters.batches_left_in_spool += self.kept.len() as u64;
        }
        self.counters
    }

    /// Adds one observation to the current batch.
    async fn accept(&mut self, observation: Observation) {
        if self.pending.is_empty() {
            self.batch_ver = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        }
        self.pending_bytes += approx_bytes(&observation);
        self.pending.push(observation);
    }

    /// Ends the current batch: once any spooled batches went out (order is kept), its rows are
    /// sent sorted by the table's key in one INSERT that completes in the background (settled at
    /// a later flush); when the spool cannot be emptied or the INSERT cannot be written, the
    /// batch is retried, isolated or spooled at once.
    async fn flush(&mut self) {
        // Room for this batch among those in flight.
        self.settle(self.config.in_flight.max(1) - 1).await;
        self.retry_kept().await;
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let ver = self.batch_ver;
        // Reuse the vectors of a settled batch: allocating them afresh made every batch grow
        // them again (copies and page faults: half of the sink thread's time in bench/clickhouse.sh).
        self.pending = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.config.max_rows.min(1 << 16)));
        if !self.drain_spool().await {
            self.finish_batch(batch, ver, bytes, None).await;
            return;
        }
        match self.write_sorted(&batch, ver).await {
            Ok(insert) => {
                let answer = tokio::spawn(insert.end());
                self.in_flight.push_back(InFlight { answer, batch, ver, bytes });
            }
            Err(error) => self.finish_batch(batch, ver, bytes, Some(Err(error))).await,
        }
    }

    /// Opens the batch's INSERT and writes its rows in the order of the table's key
    /// (`peer_ip, direction, ts`): the server then finds them sorted, for the part it writes and
    /// for the views' aggregation. The same rows in log order cost it about half as much CPU
    /// again (bench/clickhouse.sh, one INSERT of 110,000 rows: 1.04-1.08 s against 0.63-0.80 s).
    async fn write_sorted(
        &mut self,
        batch: &[Observation],
        ver: u64,
    ) -> Result<clickhouse::insert::Insert<ObservationRow<'static>>, clickhouse::error::Error> {
        let mut order: Vec<([u8; 16], u8, i64, u32)> = batch
            .iter()
            .enumerate()
            .map(|(idx, o)| {
                let direction = match o.direction {
                    Direction::Outbound => 1,
                    Direction::Inbound => 2,
                };
                // A batch never holds more than u32::MAX rows (max_rows is far below).
                (ip_bytes(o.peer.ip.as_deref()), direction, o.ts.timestamp(), idx as u32)
            })
            .collect();
        order.sort_unstable();
        // One server-side block per batch: smaller blocks made the server write and merge many
        // more parts (2.4x its CPU in bench/clickhouse.sh) for no wall-clock gain.
        let timeout = Some(self.config.request_timeout);
        let mut insert = self
            .client
            .insert::<ObservationRow<'static>>(self.config.target.table())
            .await?
            .with_timeouts(timeout, timeout);
        for (_, _, _, idx) in order {
            insert.write(&ObservationRow::from_observation(&batch[idx as usize], ver)).await?;
        }
        Ok(insert)
    }

    /// Waits for the batches in flight, oldest first, until at most `keep` remain, and
    /// acknowledges, retries, isolates or spools each.
    async fn settle(&mut self, keep: usize) {
        while self.in_flight.len() > keep {
            let Some(InFlight { answer, batch, ver, bytes }) = self.in_flight.pop_front() else { return };
            let first = match answer.await {
                Ok(result) => result,
                // The task died (it cannot panic in practice): resend the batch as after any failure.
                Err(join_error) => Err(clickhouse::error::Error::Network(Box::new(join_error))),
            };
            self.finish_batch(batch, ver, bytes, Some(first)).await;
        }
    }

    /// The end of one batch. `first` is the answer to its INSERT, or `None` when none was sent
    /// because spooled batches are still waiting (order is kept: it is spooled).
    async fn finish_batch(
        &mut self,
        mut batch: Vec<Observation>,
        ver: u64,
        bytes: usize,
        first: Option<Result<(), clickhouse::error::Error>>,
    ) {
        let sent = match first {
            None => false,
            Some(Ok(())) => {
                self.acknowledged(batch.len());
                self.failed_rounds = 0;
                true
            }
            Some(Err(error)) => {
                self.counters.insert_failures += 1;
                match classify(&error) {
                    RetryAction::RejectRows(reason) => self.isolate(&batch, &build_rows(&batch, ver), reason).await,
                    RetryAction::Retry(reason) => {
                        eprintln!("tlsledger: ClickHouse insert failed ({}); retrying", short(&reason));
                        self.send_rows(&batch, &build_rows(&batch, ver), 1).await
                    }
                }
            }
        };
        if !sent {
            self.spool_batch(&mut batch, bytes).await;
        }
        batch.clear();
        self.spare.push(batch);
    }

    /// Tries again to spool batches that could not be spooled before.
    async fn retry_kept(&mut self) {
        for (mut batch, bytes) in std::mem::take(&mut self.kept) {
            self.spool_batch(&mut batch, bytes).await;
        }
    }

    /// Keeps a batch on disk while the server is away. When the spool is full, waits for the
    /// server (back-pressure on the producer) rather than drop anything.
    async fn spool_batch(&mut self, batch: &mut Vec<Observation>, bytes: usize) {
        while self.spool.is_full(bytes as u64).unwrap_or(false) {
            let wait = backoff(self.failed_rounds, self.config.retry_initial_backoff, self.config.retry_max_backoff);
            eprintln!("tlsledger: ClickHouse spool is full; waiting {wait:?} for the server");
            tokio::time::sleep(wait).await;
            self.drain_spool().await;
        }
        match self.spool.push(batch) {
            Ok(_) => self.counters.batches_spooled += 1,
            Err(error) => {
                // Last resort: keep the rows in memory and try again at the next flush.
                eprintln!("tlsledger: cannot spool a batch ({error:#}); keeping it in memory");
                self.kept.push((std::mem::take(batch), bytes));
            }
        }
    }

    /// Replays spooled batches oldest first; true when the spool is empty afterwards.
    async fn drain_spool(&mut self) -> bool {
        let Ok(batches) = self.spool.batches() else { return false };
        for (_, path) in batches {
            let (good, damaged) = match self.spool.read(&path) {
                Ok(read) => read,
                Err(error) => {
                    eprintln!("tlsledger: cannot read spooled batch {}: {error:#}", path.display());
                    return false;
                }
            };
            if !damaged.is_empty() {
                let _ = self.spool.dead_letter_lines(&damaged, "damaged line in the spool");
                self.counters.rows_dead_lettered += damaged.len() as u64;
            }
            if !good.is_empty() && !self.send(&good).await {
                return false;
            }
            if self.spool.remove(&path).is_ok() {
                self.counters.batches_replayed += 1;
            }
        }
        true
    }

    /// Inserts `batch` with retries; true when every row was acknowledged or dead-lettered.
    async fn send(&mut self, batch: &[Observation]) -> bool {
        let ver = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.send_rows(batch, &build_rows(batch, ver), 0).await
    }

    /// The retry loop for rows already built (they are resent unchanged), from `first_attempt`.
    async fn send_rows(&mut self, batch: &[Observation], rows: &[ObservationRow<'_>], first_attempt: u32) -> bool {
        for attempt in first_attempt..self.config.retry_attempts.max(1) {
            if attempt > 0 {
                let wait = backoff(attempt - 1, self.config.retry_initial_backoff, self.config.retry_max_backoff);
                tokio::time::sleep(wait).await;
            }
            match self.insert(rows).await {
                Ok(()) => {
                    self.failed_rounds = 0;
                    return true;
                }
                Err(RetryAction::RejectRows(reason)) => {
                    return self.isolate(batch, rows, reason).await;
                }
                Err(RetryAction::Retry(reason)) => {
                    let next = if attempt + 1 < self.config.retry_attempts { "retrying" } else { "spooling" };
                    eprintln!("tlsledger: ClickHouse insert failed ({}); {next}", short(&reason));
                }
            }
        }
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        false
    }

    /// Splits a rejected batch until the invalid rows are alone, inserting the good parts and
    /// dead-lettering the bad rows. False when the server went away meanwhile (the remaining
    /// parts are then spooled).
    async fn isolate(&mut self, batch: &[Observation], rows: &[ObservationRow<'_>], first_reason: String) -> bool {
        let mut work: Vec<(usize, usize, String)> = vec![(0, batch.len(), first_reason)];
        while let Some((start, end, reason)) = work.pop() {
            if end - start == 1 {
                eprintln!(
                    "tlsledger: ClickHouse rejected a row ({}); writing it to the dead-letter file",
                    short(&reason)
                );
                if self.spool.dead_letter(&batch[start..end], &reason).is_ok() {
                    self.counters.rows_dead_lettered += 1;
                }
                continue;
            }
            let middle = start + (end - start) / 2;
            for (lo, hi) in [(middle, end), (start, middle)] {
                match self.insert(&rows[lo..hi]).await {
                    Ok(()) => {}
                    Err(RetryAction::RejectRows(reason)) => work.push((lo, hi, reason)),
                    Err(RetryAction::Retry(_)) => {
                        let _ = self.spool.push(&batch[lo..hi]).map(|_| self.counters.batches_spooled += 1);
                    }
                }
            }
        }
        true
    }

    /// One insert request, counted.
    async fn insert(&mut self, rows: &[ObservationRow<'_>]) -> Result<(), RetryAction> {
        match insert_rows(&self.client, self.config.target.table(), rows, self.config.request_timeout).await {
            Ok(()) => {
                self.acknowledged(rows.len());
                Ok(())
            }
            Err(error) => {
                self.counters.insert_failures += 1;
                Err(classify(&error))
            }
        }
    }

    fn acknowledged(&mut self, n_rows: usize) {
        self.counters.rows_inserted += n_rows as u64;
        self.counters.batches_inserted += 1;
        self.inserted.fetch_add(n_rows as u64, Ordering::Relaxed);
    }
}

/// The rows of a batch, stamped with one version (its insert time): every resend of a batch
/// builds them with the same version, so it carries the same bytes.
fn build_rows(batch: &[Observation], ingest_ver: u64) -> Vec<ObservationRow<'_>> {
    batch.iter().map(|o| ObservationRow::from_observation(o, ingest_ver)).collect()
}

/// One `INSERT INTO observations … FORMAT RowBinary` request (or into `table`).
async fn insert_rows(
    client: &clickhouse::Client,
    table: &str,
    rows: &[ObservationRow<'_>],
    timeout: Duration,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<ObservationRow<'_>>(table).await?.with_timeouts(Some(timeout), Some(timeout));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// A rough size of a row, for the byte limit of a batch.
fn approx_bytes(observation: &Observation) -> usize {
    256 + observation.source.name.len()
        + observation.domains.iter().map(String::len).sum::<usize>()
        + observation.queue_ids.iter().map(String::len).sum::<usize>()
        + observation.failure.as_ref().map_or(0, |f| f.reason.len())
}

/// The first line of an error, at most 160 characters, for log lines.
fn short(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compression_is_off_for_loopback_servers_only() {
        let at = |url: &str| url::Url::parse(url).unwrap();
        for url in ["http://127.0.0.1:8123", "http://127.8.9.1:8123", "http://[::1]:8123", "http://LOCALHOST:8123"] {
            assert_eq!(InsertCompression::Auto.for_url(&at(url)), clickhouse::Compression::None, "{url}");
            assert_eq!(InsertCompression::Lz4.for_url(&at(url)), clickhouse::Compression::Lz4, "{url}");
        }
        for url in ["http://192.0.2.7:8123", "http://[2001:db8::1]:8123", "https://ch.example.net"] {
            assert_eq!(InsertCompression::Auto.for_url(&at(url)), clickhouse::Compression::Lz4, "{url}");
            assert_eq!(InsertCompression::None.for_url(&at(url)), clickhouse::Compression::None, "{url}");
        }
    }
}
