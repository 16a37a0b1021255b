//! `tlsledger reputation rebuild --from-clickhouse URL --state DIR`: the reputation state
//! rebuilt from ClickHouse (the scale-out path: many ingesters write to one ClickHouse, one
//! process rebuilds the histories and classifies them).
//!
//! Each `HostHistory` is assembled from the `endpoint_history` rollup (one row per endpoint and
//! day with exactly the day statistics `HostHistory::observe` keeps, as `uniqExact(event_id)`
//! states so resent rows count once) plus the ring of its latest observations (`observations
//! FINAL … LIMIT 16 BY`), then put in canonical form (`HostHistory::finish_rebuild`); the graph's
//! edges come from `SELECT DISTINCT` over outbound observations. The streaming path and the
//! rebuild therefore give identical histories and classes. The new state is built in
//! `DIR.rebuild/` and then renamed over `DIR/graph.bin`, so readers see the old or the new
//! state, never a half-built one.

use std::path::PathBuf;

use anyhow::{Context, Result};

use std::collections::{BTreeMap, BTreeSet};

use super::clickhouse_args::ClickhouseArgs;
use crate::observation::{Direction, Outcome, Trust};
use crate::reputation::history::{protocol_rank, DayStats, HostHistory, Recent, MAX_RECENT};
use crate::reputation::indra::{IndraStore, GRAPH_FILE};
use crate::reputation::store::{dns_name, EndpointKey, ReputationStore};
use crate::sinks::clickhouse::row::ip_text;

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

/// One row of the rollup, merged per endpoint and day (see schema/portable/0003_endpoint_history.sql).
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct DayRow {
    peer_ip: [u8; 16],
    outbound: u8,
    day: u32,
    first_seen: u32,
    last_seen: u32,
    reused: u64,
    outcomes: [u64; 6],
    trusts: [u64; 4],
    s_milter: u64,
    s_journald_trusted: u64,
    s_local: u64,
    cert_failures: u64,
    min_protocol: u8,
    max_protocol: u8,
    min_bits: u32,
    hostnames: Vec<String>,
    domains: Vec<String>,
    ports: Vec<u16>,
}

const DAYS_QUERY: &str = "SELECT peer_ip, direction = 'outbound' AS outbound, toUInt32(day) AS day, \
    toUInt32(minMerge(first_seen)), toUInt32(maxMerge(last_seen)), uniqExactIfMerge(reused), \
    uniqExactIfMerge(o_tls), uniqExactIfMerge(o_starttls_not_offered), uniqExactIfMerge(o_plaintext), \
    uniqExactIfMerge(o_handshake_failed), uniqExactIfMerge(o_cert_verify_failed), uniqExactIfMerge(o_tls_required_missing), \
    uniqExactIfMerge(t_verified), uniqExactIfMerge(t_trusted), uniqExactIfMerge(t_untrusted), uniqExactIfMerge(t_anonymous), \
    uniqExactIfMerge(s_milter), uniqExactIfMerge(s_journald_trusted), uniqExactIfMerge(s_local), uniqExactIfMerge(cert_failures), \
    minIfMerge(min_protocol), maxIfMerge(max_protocol), minIfMerge(min_bits), \
    groupUniqArrayArrayMerge(hostnames), groupUniqArrayArrayMerge(domains), groupUniqArrayArrayMerge(ports) \
    FROM endpoint_history GROUP BY peer_ip, direction, day ORDER BY peer_ip, direction, day";

/// One of the latest observations of an endpoint (the ring of [`HostHistory::recent`]).
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct RecentRow {
    peer_ip: [u8; 16],
    outbound: u8,
    ts: u32,
    outcome: i8,
    tls_trust: i8,
    tls_protocol: Option<String>,
    bits: u32,
    local_policy: u8,
    cert_failure: u8,
    source_trust: String,
    event_id: String,
}

/// The last [`MAX_RECENT`] counted observations of every endpoint, newest first.
fn recent_query() -> String {
    format!(
        "SELECT peer_ip, direction = 'outbound' AS outbound, toUInt32(ts) AS seconds, toInt8(outcome), toInt8(tls_trust), \
         tls_protocol, ifNull(tls_bits, toUInt32(0)), isNotNull(local_policy), \
         outcome = 'cert-verify-failed' OR startsWith(ifNull(failure_kind, ''), 'certificate-'), source_trust, event_id \
         FROM observations FINAL WHERE replayed = 0 AND tls_reused = 0 \
         ORDER BY peer_ip, direction, seconds DESC, event_id DESC LIMIT {MAX_RECENT} BY peer_ip, direction"
    )
}

/// A (hostname, other) pair of the graph's edges, from outbound observations.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct EdgeRow {
    hostname: String,
    other: String,
}

fn trusted(source_trust: &str, trusted_files: bool) -> bool {
    super::parse::is_trusted_source_name(source_trust, trusted_files)
}

fn endpoint_key(peer_ip: [u8; 16], outbound: u8) -> Option<EndpointKey> {
    let ip = ip_text(peer_ip)?;
    let direction = if outbound == 1 { Direction::Outbound } else { Direction::Inbound };
    Some(EndpointKey { direction, ip })
}

/// Histories from the rollup (day statistics) and the ring query (latest observations).
async fn histories(client: &clickhouse::Client, trusted_files: bool) -> Result<BTreeMap<EndpointKey, HostHistory>> {
    let mut histories: BTreeMap<EndpointKey, HostHistory> = BTreeMap::new();
    let mut days = client
        .query(DAYS_QUERY)
        .fetch::<DayRow>()
        .context("cannot read the endpoint_history rollup (run `tlsledger schema apply` to create it)")?;
    while let Some(row) = days.next().await.context("reading the endpoint_history rollup")? {
        let Some(key) = endpoint_key(row.peer_ip, row.outbound) else { continue };
        let history = histories.entry(key).or_default();
        let first = i64::from(row.first_seen);
        history.first_seen = if history.first_seen == 0 { first } else { history.first_seen.min(first) };
        history.last_seen = history.last_seen.max(i64::from(row.last_seen));
        history.reused += row.reused as u32;
        let mut by_outcome = [0u32; 7];
        for (slot, count) in by_outcome.iter_mut().zip(row.outcomes) {
            *slot = count as u32;
        }
        if by_outcome.iter().sum::<u32>() > 0 {
            let mut by_trust = [0u32; 4];
            for (slot, count) in by_trust.iter_mut().zip(row.trusts) {
                *slot = count as u32;
            }
            let trusted_sources = row.s_milter + row.s_journald_trusted + if trusted_files { row.s_local } else { 0 };
            history.days.push(DayStats {
                day: row.day,
                by_outcome,
                by_trust,
                trusted_sources: trusted_sources as u32,
                cert_failures: row.cert_failures as u32,
                min_protocol: row.min_protocol,
                max_protocol: row.max_protocol,
                min_bits: row.min_bits,
            });
        }
        history.hostnames.extend(row.hostnames);
        history.domains.extend(row.domains);
        history.ports.extend(row.ports);
    }
    let mut recent =
        client.query(&recent_query()).fetch::<RecentRow>().context("cannot read the latest observations")?;
    while let Some(row) = recent.next().await.context("reading the latest observations")? {
        let Some(key) = endpoint_key(row.peer_ip, row.outbound) else { continue };
        let Some(outcome) = Outcome::ALL.get((row.outcome as usize).wrapping_sub(1)).copied() else { continue };
        let trust = match row.tls_trust {
            1 => Some(Trust::Verified),
            2 => Some(Trust::Trusted),
            3 => Some(Trust::Untrusted),
            4 => Some(Trust::Anonymous),
            _ => None,
        };
        histories.entry(key).or_default().recent.push(Recent {
            ts: i64::from(row.ts),
            outcome,
            trust,
            protocol: protocol_rank(row.tls_protocol.as_deref()),
            bits: row.bits,
            local_policy: row.local_policy == 1,
            cert_failure: row.cert_failure == 1,
            trusted_source: trusted(&row.source_trust, trusted_files),
            event_id: row.event_id,
        });
    }
    for history in histories.values_mut() {
        history.finish_rebuild();
    }
    Ok(histories)
}

/// The graph's edges: (hostname, ip) and (hostname, domain) of outbound observations.
async fn edges(client: &clickhouse::Client) -> Result<(Vec<EdgeRow>, Vec<EdgeRow>)> {
    let ips = client
        .query("SELECT DISTINCT ifNull(peer_hostname, ''), IPv6NumToString(peer_ip) FROM observations WHERE direction = 'outbound' AND isNotNull(peer_hostname) AND peer_ip != toFixedString('', 16)")
        .fetch_all::<EdgeRow>()
        .await
        .context("cannot read host name to address edges")?;
    let domains = client
        .query("SELECT DISTINCT ifNull(peer_hostname, ''), arrayJoin(domains) FROM observations WHERE direction = 'outbound' AND isNotNull(peer_hostname)")
        .fetch_all::<EdgeRow>()
        .await
        .context("cannot read domain to host name edges")?;
    Ok((ips, domains))
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
    let (histories, (ip_edges, domain_edges)) = runtime.block_on(async {
        let client = config.client(false);
        let histories = histories(&client, *trusted_files)
            .await
            .with_context(|| format!("rebuilding from {}", config.display_url()))?;
        let edges = edges(&client).await.with_context(|| format!("rebuilding from {}", config.display_url()))?;
        anyhow::Ok((histories, edges))
    })?;
    let endpoints = histories.len();
    for (key, history) in &histories {
        store.put_history(key, history).with_context(|| format!("cannot store the history of {key}"))?;
    }
    drop(histories);
    let mut links = BTreeSet::new();
    for edge in &ip_edges {
        let (hostname, ip) = (dns_name(&edge.hostname), edge.other.parse::<std::net::IpAddr>().ok());
        let ip = ip.map(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.to_string(), |v4| v4.to_string()),
            v4 => v4.to_string(),
        });
        if let (false, Some(ip)) = (hostname.is_empty(), ip) {
            links.insert((hostname, ip));
        }
    }
    for (hostname, ip) in &links {
        store.link_hostname_ip(hostname, ip).with_context(|| format!("cannot link {hostname} to {ip}"))?;
    }
    let mut links = BTreeSet::new();
    for edge in &domain_edges {
        let (hostname, domain) = (dns_name(&edge.hostname), dns_name(&edge.other));
        if !hostname.is_empty() && !domain.is_empty() {
            links.insert((domain, hostname));
        }
    }
    for (domain, hostname) in &links {
        store.link_domain_hostname(domain, hostname).with_context(|| format!("cannot link {domain} to {hostname}"))?;
    }
    store.save()?;
    drop(store);
    std::fs::rename(staging.join(GRAPH_FILE), state.join(GRAPH_FILE))
        .with_context(|| format!("cannot move the rebuilt state into {}", state.display()))?;
    if let Ok(dir) = std::fs::File::open(state) {
        let _ = dir.sync_all();
    }
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "rebuilt {} from the endpoint_history rollup in {}: {endpoints} endpoints",
        state.display(),
        config.display_url()
    );
    Ok(())
}
