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
//!
//! On a ClickHouse cluster (`schema apply --cluster`) the same queries run against any server:
//! `endpoint_history` and `observations` are Distributed tables there, so each shard merges the
//! states of its endpoints and the server asked merges the shards' partial states (ClickHouse's
//! two-stage distributed aggregation; `LIMIT 16 BY` and `DISTINCT` are applied again after the
//! shards' results are merged). The classes are those a single node fed every log would give.
//!
//! `--incremental` refreshes only the endpoints with observations inserted since the last run
//! (`ingest_ver` above the newest insert version that run saw, less `--overlap-secs` for batches
//! that were stamped before it but acknowledged after it, and for ingesters' clock skew): their
//! histories are rebuilt whole from ClickHouse and replace the old ones in the existing state,
//! which is then saved atomically. `DIR/rebuild.json` records the source and that version.
//! Endpoints whose rows only went away (dropped partitions) are refreshed by a full rebuild.

use std::path::PathBuf;

use anyhow::{Context, Result};

use std::collections::{BTreeMap, BTreeSet};

use super::clickhouse_args::ClickhouseArgs;
use crate::observation::{Cert, Direction, Outcome, Trust};
use crate::reputation::history::{protocol_rank, CertSeen, DayStats, HostHistory, Recent, MAX_RECENT};
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
        /// Refresh only the endpoints with observations inserted since the last rebuild of DIR
        /// from the same database (a full rebuild when there was none).
        #[arg(long)]
        incremental: bool,
        /// How far before the newest insert the last run saw an incremental run looks again:
        /// longer than a batch can take from its insert version (stamped when it starts) to its
        /// acknowledgment, plus the ingesters' clock skew.
        #[arg(long, value_name = "SECS", default_value_t = 900)]
        overlap_secs: u64,
    },
}

/// `DIR/rebuild.json`: what the last rebuild read, for `--incremental`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RebuildMarker {
    /// `URL/database` (no credentials).
    source: String,
    /// Whether log files counted as trusted sources.
    trusted_files: bool,
    /// The newest `ingest_ver` in `observations` when the rebuild started.
    watermark_ver: u64,
}

const MARKER_FILE: &str = "rebuild.json";

fn read_marker(state: &std::path::Path) -> Option<RebuildMarker> {
    let text = std::fs::read_to_string(state.join(MARKER_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_marker(state: &std::path::Path, marker: &RebuildMarker) -> Result<()> {
    let path = state.join(MARKER_FILE);
    let temp = state.join(format!("{MARKER_FILE}.tmp"));
    let text = serde_json::to_string_pretty(marker)?;
    let mut file = std::fs::File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The SQL condition that keeps the endpoints with rows inserted after `since` (an insert
/// version), or nothing when every endpoint is wanted. `GLOBAL IN`: on a cluster the set is
/// computed once and sent to every shard.
fn changed_filter(since: Option<u64>) -> String {
    match since {
        Some(since) => format!(
            "(peer_ip, direction) GLOBAL IN (SELECT DISTINCT peer_ip, direction FROM observations WHERE ingest_ver > {since})"
        ),
        None => "1".to_owned(),
    }
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

fn days_query(filter: &str) -> String {
    format!("SELECT peer_ip, direction = 'outbound' AS outbound, toUInt32(day) AS day, \
    toUInt32(minMerge(first_seen)), toUInt32(maxMerge(last_seen)), uniqExactIfMerge(reused), \
    uniqExactIfMerge(o_tls), uniqExactIfMerge(o_starttls_not_offered), uniqExactIfMerge(o_plaintext), \
    uniqExactIfMerge(o_handshake_failed), uniqExactIfMerge(o_cert_verify_failed), uniqExactIfMerge(o_tls_required_missing), \
    uniqExactIfMerge(t_verified), uniqExactIfMerge(t_trusted), uniqExactIfMerge(t_untrusted), uniqExactIfMerge(t_anonymous), \
    uniqExactIfMerge(s_milter), uniqExactIfMerge(s_journald_trusted), uniqExactIfMerge(s_local), uniqExactIfMerge(cert_failures), \
    minIfMerge(min_protocol), maxIfMerge(max_protocol), minIfMerge(min_bits), \
    groupUniqArrayArrayMerge(hostnames), groupUniqArrayArrayMerge(domains), groupUniqArrayArrayMerge(ports) \
    FROM endpoint_history WHERE {filter} GROUP BY peer_ip, direction, day ORDER BY peer_ip, direction, day")
}

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
    /// Not used: selected because ClickHouse 18.16 answers `FINAL` on a Distributed table only
    /// when the query reads the sorting key and version columns ("Cannot find column ingest_ver
    /// in source stream" otherwise).
    #[allow(dead_code)]
    ingest_ver: u64,
}

/// The last [`MAX_RECENT`] counted observations of every endpoint, newest first.
/// One certificate an endpoint presented, as the observations hold it.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct CertRow {
    peer_ip: [u8; 16],
    outbound: u8,
    fingerprint: Option<String>,
    subject: Option<String>,
    issuer: Option<String>,
    first_seen: u32,
    last_seen: u32,
    count: u64,
}

/// The certificates of every endpoint (`HostHistory::certs`): one row per endpoint and logged
/// certificate, counted by distinct event id (resent rows count once, without FINAL).
fn certs_query(filter: &str) -> String {
    format!(
        "SELECT peer_ip, direction = 'outbound' AS outbound, cert_fingerprint, cert_subject, cert_issuer, \
         toUInt32(min(ts)), toUInt32(max(ts)), uniqExact(event_id) \
         FROM observations WHERE replayed = 0 AND tls_reused = 0 \
         AND (isNotNull(cert_fingerprint) OR isNotNull(cert_subject) OR isNotNull(cert_issuer)) AND {filter} \
         GROUP BY peer_ip, outbound, cert_fingerprint, cert_subject, cert_issuer"
    )
}

fn recent_query(filter: &str) -> String {
    format!(
        "SELECT peer_ip, direction = 'outbound' AS outbound, toUInt32(ts) AS seconds, toInt8(outcome), toInt8(tls_trust), \
         tls_protocol, ifNull(tls_bits, toUInt32(0)), isNotNull(local_policy), \
         outcome = 'cert-verify-failed' OR startsWith(ifNull(failure_kind, ''), 'certificate-'), source_trust, event_id, ingest_ver \
         FROM observations FINAL WHERE replayed = 0 AND tls_reused = 0 AND {filter} \
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
async fn histories(
    client: &clickhouse::Client,
    trusted_files: bool,
    filter: &str,
) -> Result<BTreeMap<EndpointKey, HostHistory>> {
    let mut histories: BTreeMap<EndpointKey, HostHistory> = BTreeMap::new();
    let mut days = client
        .query(&days_query(filter))
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
        client.query(&recent_query(filter)).fetch::<RecentRow>().context("cannot read the latest observations")?;
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
    let mut certs = client.query(&certs_query(filter)).fetch::<CertRow>().context("cannot read the certificates")?;
    while let Some(row) = certs.next().await.context("reading the certificates")? {
        let Some(key) = endpoint_key(row.peer_ip, row.outbound) else { continue };
        let cert =
            Cert { subject: row.subject, issuer: row.issuer, fingerprint: row.fingerprint, pkey_fingerprint: None };
        let Some(identity) = cert.identity() else { continue };
        histories.entry(key).or_default().certs.push(CertSeen {
            identity,
            subject: cert.subject,
            issuer: cert.issuer,
            first_seen: i64::from(row.first_seen),
            last_seen: i64::from(row.last_seen),
            count: u32::try_from(row.count).unwrap_or(u32::MAX),
        });
    }
    for history in histories.values_mut() {
        history.finish_rebuild();
    }
    Ok(histories)
}

/// The graph's edges: (hostname, ip) and (hostname, domain) of outbound observations.
async fn edges(client: &clickhouse::Client, filter: &str) -> Result<(Vec<EdgeRow>, Vec<EdgeRow>)> {
    let ips = client
        .query(&format!("SELECT DISTINCT ifNull(peer_hostname, ''), IPv6NumToString(peer_ip) FROM observations WHERE direction = 'outbound' AND isNotNull(peer_hostname) AND peer_ip != toFixedString('', 16) AND {filter}"))
        .fetch_all::<EdgeRow>()
        .await
        .context("cannot read host name to address edges")?;
    let domains = client
        .query(&format!("SELECT DISTINCT ifNull(peer_hostname, ''), arrayJoin(domains) FROM observations WHERE direction = 'outbound' AND isNotNull(peer_hostname) AND {filter}"))
        .fetch_all::<EdgeRow>()
        .await
        .context("cannot read domain to host name edges")?;
    Ok((ips, domains))
}

/// Runs a `reputation` subcommand.
pub fn run(command: &ReputationCommand) -> Result<()> {
    let ReputationCommand::Rebuild { clickhouse, state, trusted_files, incremental, overlap_secs } = command;
    let config = clickhouse.config()?.context("--from-clickhouse URL is required")?;
    let source = format!("{}/{}", config.display_url(), config.database);
    let since = match (incremental, read_marker(state)) {
        (false, _) => None,
        (true, Some(marker))
            if marker.source == source && marker.trusted_files == *trusted_files && state.join(GRAPH_FILE).exists() =>
        {
            Some(marker.watermark_ver.saturating_sub(overlap_secs.saturating_mul(1_000_000)))
        }
        (true, _) => {
            eprintln!(
                "tlsledger: no earlier rebuild of {} from {source} with these options; rebuilding every endpoint",
                state.display()
            );
            None
        }
    };
    let filter = changed_filter(since);
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (watermark_ver, histories, (ip_edges, domain_edges)) = runtime.block_on(async {
        let client = config.client(false);
        // Read before the histories: rows inserted meanwhile are looked at again next time.
        let watermark_ver: u64 = client
            .query("SELECT max(ingest_ver) FROM observations")
            .fetch_one()
            .await
            .with_context(|| format!("cannot read the newest insert version from {}", config.display_url()))?;
        let histories = histories(&client, *trusted_files, &filter)
            .await
            .with_context(|| format!("rebuilding from {}", config.display_url()))?;
        let edges =
            edges(&client, &filter).await.with_context(|| format!("rebuilding from {}", config.display_url()))?;
        anyhow::Ok((watermark_ver, histories, edges))
    })?;
    std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    let endpoints = histories.len();
    let staging = state.with_extension("rebuild");
    let mut store = if since.is_some() {
        // Replace the changed histories in the existing state; its save is atomic.
        IndraStore::open(state)?
    } else {
        let _ = std::fs::remove_dir_all(&staging);
        IndraStore::open(&staging)?
    };
    for (key, history) in &histories {
        store.put_history(key, history).with_context(|| format!("cannot store the history of {key}"))?;
        for cert in &history.certs {
            store
                .link_ip_certificate(&key.ip, &cert.identity)
                .with_context(|| format!("cannot link {} to {}", key.ip, cert.identity))?;
        }
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
    let total = store.n_endpoints().unwrap_or(endpoints);
    drop(store);
    if since.is_none() {
        std::fs::rename(staging.join(GRAPH_FILE), state.join(GRAPH_FILE))
            .with_context(|| format!("cannot move the rebuilt state into {}", state.display()))?;
        if let Ok(dir) = std::fs::File::open(state) {
            let _ = dir.sync_all();
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    write_marker(state, &RebuildMarker { source, trusted_files: *trusted_files, watermark_ver })?;
    let seconds = started.elapsed().as_secs_f64();
    if since.is_some() {
        eprintln!(
            "refreshed {endpoints} of {total} endpoints in {} from {} in {seconds:.2} s (incremental)",
            state.display(),
            config.display_url()
        );
    } else {
        eprintln!(
            "rebuilt {} from the endpoint_history rollup in {}: {endpoints} endpoints in {seconds:.2} s",
            state.display(),
            config.display_url()
        );
    }
    Ok(())
}
