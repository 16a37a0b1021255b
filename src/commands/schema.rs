//! `tlsledger schema apply|status`: create and upgrade the ClickHouse tables.
//!
//! `apply` runs every pending file of `schema/portable` (and `schema/modern` on servers with
//! major version >= 22) in order, records each in `schema_migrations`, and refuses to continue if
//! an applied file changed. Running it twice changes nothing. `status` lists every file's state.
//! With `--cluster NAME` both use the `schema/cluster` set instead: the same tables as
//! Replicated* tables on every server of the cluster (`ON CLUSTER`, the servers' `shard` and
//! `replica` macros) with Distributed tables of the usual names in front.

use anyhow::{bail, Context, Result};

use super::clickhouse_args::ClickhouseArgs;
use crate::sinks::clickhouse::schema::{self, ApplyOptions, FileState};

/// `schema` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Create or upgrade the tables (idempotent).
    Apply {
        /// Where ClickHouse is.
        #[command(flatten)]
        clickhouse: ClickhouseArgs,
        /// Days of observations kept on servers that support TTL (modern set).
        #[arg(long, value_name = "DAYS", default_value_t = 400)]
        retention_days: u32,
        /// Apply the cluster schema ON CLUSTER NAME (a cluster of the servers' remote_servers;
        /// needs ZooKeeper and the shard and replica macros on every server) instead of the
        /// single-node one.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// Show the server version and which schema files are applied, pending or changed.
    Status {
        /// Where ClickHouse is.
        #[command(flatten)]
        clickhouse: ClickhouseArgs,
        /// Show the cluster schema's files (as `apply --cluster NAME`).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
}

/// Runs a `schema` subcommand.
pub fn run(command: &SchemaCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            SchemaCommand::Apply { clickhouse, retention_days, cluster } => {
                let config = clickhouse.config()?.context("--clickhouse URL is required")?;
                let server = config.server_client(false);
                let info = schema::server_info(&server)
                    .await
                    .with_context(|| format!("cannot reach ClickHouse at {}", config.display_url()))?;
                let options = ApplyOptions { retention_days: *retention_days, cluster: cluster.clone() };
                let applied = schema::apply(&server, &config.database, &options).await?;
                let mode = match (cluster, info.modern()) {
                    (Some(cluster), _) => format!("cluster {cluster}"),
                    (None, true) => "modern".to_owned(),
                    (None, false) => "portable only".to_owned(),
                };
                if applied.is_empty() {
                    eprintln!("ClickHouse {} ({mode}): database {} is up to date", info.version, config.database);
                } else {
                    for name in &applied {
                        eprintln!("applied schema/{name}");
                    }
                    eprintln!(
                        "ClickHouse {} ({mode}): {} file(s) applied to {}",
                        info.version,
                        applied.len(),
                        config.database
                    );
                }
                Ok(())
            }
            SchemaCommand::Status { clickhouse, cluster } => {
                let config = clickhouse.config()?.context("--clickhouse URL is required")?;
                let server = config.server_client(false);
                let (info, states) = schema::status(&server, &config.database, cluster.as_deref())
                    .await
                    .with_context(|| format!("cannot reach ClickHouse at {}", config.display_url()))?;
                let mut report =
                    format!("server {} (major {}), database {}\n", info.version, info.major, config.database);
                let mut changed = 0;
                for (file, state) in &states {
                    let label = match state {
                        FileState::Applied => "applied",
                        FileState::Pending => "pending",
                        FileState::NotApplicable if file.set == "cluster" => "cluster schema only (--cluster)",
                        FileState::NotApplicable if cluster.is_some() => "single-node schema only",
                        FileState::NotApplicable => "not for this server",
                        FileState::Changed => {
                            changed += 1;
                            "CHANGED after it was applied"
                        }
                    };
                    report.push_str(&format!("{:<9} {:<32} {label}\n", file.set, file.name));
                }
                std::io::Write::write_all(&mut std::io::stdout().lock(), report.as_bytes())?;
                if changed > 0 {
                    bail!("{changed} applied schema file(s) changed; schema files are append-only");
                }
                Ok(())
            }
        }
    })
}
