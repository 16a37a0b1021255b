//! `tlsledger reputation rebuild --from-clickhouse URL --state DIR`: the reputation state
//! rebuilt from the observations stored in ClickHouse (the scale-out path: many ingesters write
//! to one ClickHouse, one process rebuilds the histories and classifies them).
//!
//! The rows are read with `FINAL` (each event once, whatever was resent), in time order, turned
//! back into Observations and folded with the same `record()` as `parse --state`, so the
//! streaming path and the rebuild give identical histories and classes. The new state is built
//! in `DIR.rebuild/` and then renamed over `DIR/graph.bin`, so readers see the old or the new
//! state, never a half-built one.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::clickhouse_args::ClickhouseArgs;
use crate::reputation::indra::{IndraStore, GRAPH_FILE};
use crate::reputation::store::{record, RecordCounts, ReputationStore};
use crate::sinks::clickhouse::row::ObservationRow;

/// `reputation` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReputationCommand {
    /// Rebuild the reputation state from the observations in ClickHouse.
    Rebuild {
        /// Where ClickHouse is (`--from-clickhouse` is accepted as well).
        #[command(flatten)]
        clickhouse: ClickhouseArgs,
        /// The reputation state folder to replace.
        #[arg(long, value_name = "DIR", default_value = "tlsledger-state")]
        state: PathBuf,
        /// Treat observations from log files as trusted sources (as `parse --trusted-files`).
        #[arg(long)]
        trusted_files: bool,
    },
}

/// Runs a `reputation` subcommand.
pub fn run(command: &ReputationCommand) -> Result<()> {
    let ReputationCommand::Rebuild { clickhouse, state, trusted_files } = command;
    let config = clickhouse.config()?.context("--from-clickhouse URL is required")?;
    let staging = state.with_extension("rebuild");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    let mut store = IndraStore::open(&staging)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let counts = runtime.block_on(async {
        let client = config.client(false);
        let mut cursor = client
            .query("SELECT ?fields FROM observations FINAL ORDER BY ts, ts_micros, event_id")
            .fetch::<ObservationRow>()
            .with_context(|| format!("cannot read observations from {}", config.display_url()))?;
        let mut counts = RecordCounts::default();
        let mut chunk = Vec::with_capacity(10_000);
        let mut invalid = 0u64;
        loop {
            let row =
                cursor.next().await.with_context(|| format!("reading observations from {}", config.display_url()))?;
            let Some(row) = row else { break };
            match row.into_observation() {
                Some(observation) => chunk.push(observation),
                None => invalid += 1,
            }
            if chunk.len() >= 10_000 {
                counts.add(&record(&mut store, &chunk, |o| super::parse::is_trusted_source(o, *trusted_files))?);
                chunk.clear();
            }
        }
        counts.add(&record(&mut store, &chunk, |o| super::parse::is_trusted_source(o, *trusted_files))?);
        if invalid > 0 {
            eprintln!("tlsledger: {invalid} rows with codes this version does not know were skipped");
        }
        anyhow::Ok(counts)
    })?;
    store.save()?;
    let endpoints = store.n_endpoints()?;
    drop(store);
    std::fs::rename(staging.join(GRAPH_FILE), state.join(GRAPH_FILE))
        .with_context(|| format!("cannot move the rebuilt state into {}", state.display()))?;
    if let Ok(dir) = std::fs::File::open(state) {
        let _ = dir.sync_all();
    }
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "rebuilt {} from {} observations in {}: {endpoints} endpoints ({} observations without an IP skipped)",
        state.display(),
        counts.observations,
        config.display_url(),
        counts.skipped
    );
    Ok(())
}
