//! Command-line options shared by every command that talks to ClickHouse.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::sinks::clickhouse::{ClickhouseConfig, InsertCompression, InsertTarget, SinkConfig};

/// Where ClickHouse is.
#[derive(Debug, Clone, clap::Args)]
pub struct ClickhouseArgs {
    /// ClickHouse HTTP URL, e.g. http://127.0.0.1:8123 (credentials may be given as
    /// http://user:password@host:port, or with TLSLEDGER_CLICKHOUSE_USER/_PASSWORD, or a password file).
    #[arg(long, value_name = "URL", env = "TLSLEDGER_CLICKHOUSE_URL", alias = "from-clickhouse")]
    pub clickhouse: Option<String>,

    /// Database of tlsledger's tables (created by `schema apply`).
    #[arg(long, value_name = "NAME", default_value = "tlsledger")]
    pub database: String,

    /// File whose first line is the ClickHouse password.
    #[arg(long, value_name = "FILE")]
    pub clickhouse_password_file: Option<PathBuf>,
}

impl ClickhouseArgs {
    /// The connection settings, when `--clickhouse` was given.
    pub fn config(&self) -> Result<Option<ClickhouseConfig>> {
        let Some(url) = &self.clickhouse else { return Ok(None) };
        Ok(Some(ClickhouseConfig::new(url, Some(&self.database), self.clickhouse_password_file.as_deref())?))
    }
}

/// How the ClickHouse sink batches, retries and spools.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Folder for batches the server could not take yet (replayed in order, also after a
    /// restart) and for rows it rejected (dead-letter.jsonl).
    #[arg(long, value_name = "DIR", default_value = "tlsledger-spool")]
    pub spool_dir: PathBuf,

    /// Most megabytes kept in the spool; when full, reading pauses until the server is back.
    #[arg(long, value_name = "MB", default_value_t = 1024)]
    pub spool_max_mb: u64,

    /// Rows per insert. Fewer, larger inserts cost the server much less (parts to write and
    /// merge, view blocks): bench/clickhouse.sh measured half the server CPU at 100,000 rows as
    /// at 50,000.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub batch_rows: usize,

    /// Most megabytes per insert (estimated from the observations; whichever of this and
    /// --batch-rows comes first ends a batch). Each batch is kept in memory until acknowledged.
    #[arg(long, value_name = "MB", default_value_t = 64)]
    pub batch_mb: usize,

    /// Send waiting rows at least this often.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub batch_period_ms: u64,

    /// Most sent batches awaiting the server's acknowledgement while the next one fills (the
    /// server works on each INSERT with one thread; 1 = strictly one after the other).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub batches_in_flight: usize,

    /// Compression of the rows sent: `auto` sends them plain to a server on a loopback address
    /// (compressing only costs both sides CPU there) and LZ4-compressed to any other.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub insert_compression: InsertCompression,

    /// Insert attempts (with exponential backoff) before a batch is spooled.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retry_attempts: u32,

    /// On a ClickHouse cluster (`schema apply --cluster`): insert through the Distributed table
    /// and wait for every shard (`distributed`), let the server forward to the shards later
    /// (`distributed-async`), or write to the shard of the --clickhouse server only (`local`).
    /// Without it, the single-node table.
    #[arg(long, value_enum, value_name = "MODE")]
    pub cluster_insert: Option<InsertTarget>,
}

impl SinkArgs {
    /// The sink settings.
    pub fn config(&self) -> SinkConfig {
        SinkConfig {
            max_rows: self.batch_rows.max(1),
            max_bytes: self.batch_mb.max(1).saturating_mul(1 << 20),
            period: Duration::from_millis(self.batch_period_ms.max(10)),
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_mb.saturating_mul(1 << 20).max(1 << 20),
            retry_attempts: self.retry_attempts.max(1),
            in_flight: self.batches_in_flight.max(1),
            compression: self.insert_compression,
            target: self.cluster_insert.unwrap_or_default(),
            ..SinkConfig::default()
        }
    }
}
