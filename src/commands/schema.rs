//! `tlsledger schema apply|status`: create and upgrade the ClickHouse tables.
//!
//! `apply` runs every pending file of `schema/portable` (and `schema/modern` on servers with
//! major version >= 22) in order, records each in `schema_migrations`, and refuses to continue if
//! an applied file changed. Running it twice changes nothing. `status` lists every file's state.

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
    },
    /// Show the server version and which schema files are applied, pending or changed.
    Status {
        /// Where ClickHouse is.
        #[command(flatten)]
        clickhouse: ClickhouseArgs,
    },
}

/// Runs a `schema` subcommand.
pub fn run(command: &SchemaCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            SchemaCommand::Apply { clickhouse, retention_days } => {
                let config = clickhouse.config()?.context("--clickhouse URL is required")?;
                let server = config.server_client(false);
                let info = schema::server_info(&server)
                    .await
                    .with_context(|| format!("cannot reach ClickHouse at {}", config.display_url()))?;
                let applied =
                    schema::apply(&server, &config.database, &ApplyOptions { retention_days: *retention_days }).await?;
                let mode = if info.modern() { "modern" } else { "portable only" };
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
            SchemaCommand::Status { clickhouse } => {
                let config = clickhouse.config()?.context("--clickhouse URL is required")?;
                let server = config.server_client(false);
                let (info, states) = schema::status(&server, &config.database)
                    .await
                    .with_context(|| format!("cannot reach ClickHouse at {}", config.display_url()))?;
                let mut report =
                    format!("server {} (major {}), database {}\n", info.version, info.major, config.database);
                let mut changed = 0;
                for (file, state) in &states {
                    let label = match state {
                        FileState::Applied => "applied",
                        FileState::Pending => "pending",
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
