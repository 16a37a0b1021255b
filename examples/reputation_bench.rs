//! The driver of `bench/reputation.sh` (issue 4, point 8): builds an `IndraStore` of synthetic
//! endpoints, and measures loading it and classifying every endpoint in a fresh process.
//!
//! `cargo run --release --example reputation_bench -- build DIR [ENDPOINTS] [SEED]` generates
//! ENDPOINTS (default 1,000,000) endpoints with realistic histories from a deterministic
//! generator (same seed, same store), stores them with the name graph that `record()` would
//! make, and saves `DIR`. `… -- measure DIR` opens `DIR`, walks every endpoint with
//! `for_each_endpoint` and runs the pure `classify` with default thresholds on each. Both print
//! `key=value` lines on stdout (seconds, counts) for the script to read; peak RSS is measured
//! from outside with `/usr/bin/time -f %M`.
//!
//! A generated endpoint: 70 % outbound, 30 % inbound, one in five IPv6; 5–30 active days in the
//! 120 days before `NOW` with 1–40 decisions each; a full ring of 16 recent observations with
//! 16-hex-digit event ids; 1–2 host names; outbound ones 0–3 recipient domains (inbound none).
//! Profiles: 70 % verified TLS, 12 % untrusted TLS, 8 % plaintext, 6 % TLS with a recent plaintext
//! episode (downgrade), 4 % failing handshakes (broken STARTTLS). Outbound host names are shared
//! by two IPs (`mx<n>.mail<m>.example`), domains come from a pool of half as many names as
//! outbound endpoints, and every domain of an endpoint is linked to each of its host names.

// The driver prints its figures on stdout for the script to read.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tlsledger::observation::{Direction, Outcome, Trust};
use tlsledger::reputation::classify::{classify, Class};
use tlsledger::reputation::history::{trust_index, DayStats, HostHistory, Recent, MAX_RECENT};
use tlsledger::reputation::indra::IndraStore;
use tlsledger::reputation::store::{EndpointKey, ReputationStore};
use tlsledger::reputation::thresholds::Thresholds;

/// The same allocator as the `tlsledger` binary, so the figures are the tool's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The classification time of the bench (Unix seconds, 2026-09-20): the newest generated day.
const NOW: i64 = 1_790_000_000 + 100 * 86_400;
const DAY: i64 = 86_400;

/// SplitMix64: a tiny deterministic generator, so the same seed always gives the same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// True with probability `percent` %.
    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Verified,
    Untrusted,
    Plaintext,
    Downgrade,
    Broken,
}

/// One recent observation of a profile; `bad` is the downgrade episode.
fn recent(rng: &mut Rng, profile: Profile, ts: i64, bad: bool, trusted_source: bool) -> Recent {
    let tls = |trust| (Outcome::Tls, Some(trust), 5, 256);
    let (outcome, trust, protocol, bits) = match profile {
        Profile::Verified | Profile::Downgrade if bad => (Outcome::Plaintext, None, 0, 0),
        Profile::Verified | Profile::Downgrade => tls(if rng.percent(20) { Trust::Verified } else { Trust::Trusted }),
        Profile::Untrusted => tls(Trust::Untrusted),
        Profile::Plaintext => (Outcome::StarttlsNotOffered, None, 0, 0),
        Profile::Broken => (Outcome::HandshakeFailed, None, 0, 0),
    };
    let protocol = if protocol == 5 && rng.percent(30) { 4 } else { protocol };
    Recent {
        ts,
        outcome,
        trust,
        protocol,
        bits,
        local_policy: false,
        cert_failure: false,
        trusted_source,
        event_id: format!("{:016x}", rng.next()),
    }
}

/// The endpoint `idx` of a store of `n` endpoints: its key, history and graph links.
struct Generated {
    key: EndpointKey,
    history: HostHistory,
    /// Host names to link to the IP (outbound only) and domains to link to each host name.
    links: Option<(Vec<String>, Vec<String>)>,
}

fn generate(seed: u64, idx: u64, n_endpoints: u64) -> Generated {
    let mut rng = Rng(seed ^ idx.wrapping_mul(0xa076_1d64_78bd_642f));
    let direction = if rng.percent(70) { Direction::Outbound } else { Direction::Inbound };
    let ip = if rng.percent(20) {
        format!("2001:db8:{:x}:{:x}::25", idx >> 16, idx & 0xffff)
    } else {
        format!("10.{}.{}.{}", (idx >> 16) & 0xff, (idx >> 8) & 0xff, idx & 0xff)
    };
    let profile = match rng.next() % 100 {
        0..70 => Profile::Verified,
        70..82 => Profile::Untrusted,
        82..90 => Profile::Plaintext,
        90..96 => Profile::Downgrade,
        _ => Profile::Broken,
    };

    // Active days, newest first while generating: gaps of 1–4 days back from NOW.
    let n_days = rng.range(5, 30) as usize;
    let mut day = NOW.div_euclid(DAY) - rng.range(0, 2) as i64;
    let mut days = Vec::with_capacity(n_days);
    for _ in 0..n_days {
        let decisions = if rng.percent(80) { rng.range(1, 8) } else { rng.range(9, 40) } as u32;
        let trusted = if rng.percent(90) { decisions } else { decisions / 2 };
        let mut stats = DayStats { day: day as u32, trusted_sources: trusted, ..DayStats::default() };
        let sample = recent(&mut rng, profile, day * DAY, false, true);
        let outcome_idx = Outcome::ALL.iter().position(|o| *o == sample.outcome).unwrap_or(6);
        stats.by_outcome[outcome_idx] = decisions;
        if let Some(trust) = sample.trust {
            stats.by_trust[trust_index(trust)] = decisions;
            stats.min_protocol = sample.protocol;
            stats.max_protocol = 5;
            stats.min_bits = sample.bits;
        }
        days.push(stats);
        day -= rng.range(1, 4) as i64;
    }
    days.reverse();

    // The ring: the last MAX_RECENT decisions, minutes to hours apart, ending on the last day.
    let last_day = i64::from(days[n_days - 1].day);
    let mut ts = last_day * DAY + rng.range(0, DAY as u64 / 2) as i64;
    let mut ring = Vec::with_capacity(MAX_RECENT);
    let episode = if profile == Profile::Downgrade { rng.range(1, 4) as usize } else { 0 };
    for ring_idx in 0..MAX_RECENT {
        let bad = ring_idx < episode;
        let trusted_source = rng.percent(90);
        ring.push(recent(&mut rng, profile, ts, bad, trusted_source));
        ts -= rng.range(60, 6 * 3_600) as i64;
    }
    ring.reverse();

    let first_seen = i64::from(days[0].day) * DAY + rng.range(0, DAY as u64 - 1) as i64;
    let last_seen = ring.last().map_or(first_seen, |r| r.ts);
    let (hostnames, domains) = if direction == Direction::Outbound {
        let n_out = (n_endpoints * 7 / 10).max(1);
        let mx = idx / 2;
        let mut hostnames = vec![format!("mx{}.mail{}.example", mx % 2, mx)];
        if rng.percent(30) {
            hostnames.push(format!("mx{}.mail{}.example", (mx + 1) % 2, mx));
        }
        let domains = (0..rng.range(0, 3)).map(|_| format!("d{}.example", rng.next() % (n_out / 2).max(1))).collect();
        (hostnames, domains)
    } else {
        let mut hostnames = vec![format!("host-{idx}.pool{}.example", idx % 1_000)];
        if rng.percent(20) {
            hostnames.push(format!("mail-{idx}.pool{}.example", idx % 1_000));
        }
        (hostnames, Vec::new())
    };
    let mut sorted_hostnames = hostnames.clone();
    sorted_hostnames.sort();
    let mut sorted_domains: Vec<String> = domains;
    sorted_domains.sort();
    sorted_domains.dedup();
    let history = HostHistory {
        first_seen: first_seen.min(last_seen),
        last_seen,
        reused: rng.range(0, 50) as u32,
        days,
        recent: ring,
        hostnames: sorted_hostnames.clone(),
        domains: sorted_domains.clone(),
        ports: vec![25],
        // No certificates: Postfix logs them only at TLS log level 2, not the common level 1.
        certs: Vec::new(),
    };
    let links = (direction == Direction::Outbound).then_some((sorted_hostnames, sorted_domains));
    Generated { key: EndpointKey { direction, ip }, history, links }
}

fn build(dir: PathBuf, n_endpoints: u64, seed: u64) -> Result<()> {
    if dir.join(tlsledger::reputation::indra::GRAPH_FILE).exists() {
        bail!("{} already holds a store; remove it first", dir.display());
    }
    let start = Instant::now();
    let mut store = IndraStore::open(&dir)?;
    let mut history_bytes = 0u64;
    for idx in 0..n_endpoints {
        let generated = generate(seed, idx, n_endpoints);
        history_bytes += tlsledger::reputation::codec::to_bytes(&generated.history).len() as u64;
        store.put_history(&generated.key, &generated.history)?;
        if let Some((hostnames, domains)) = &generated.links {
            for hostname in hostnames {
                store.link_hostname_ip(hostname, &generated.key.ip)?;
                for domain in domains {
                    store.link_domain_hostname(domain, hostname)?;
                }
            }
        }
    }
    let built = start.elapsed().as_secs_f64();
    let start = Instant::now();
    store.save()?;
    let saved = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(store.graph_path())?.len();
    println!("endpoints={n_endpoints}");
    println!("seed={seed}");
    println!("build_secs={built:.3}");
    println!("save_secs={saved:.3}");
    println!("file_bytes={bytes}");
    println!("history_bytes_avg={}", history_bytes / n_endpoints.max(1));
    Ok(())
}

fn measure(dir: PathBuf) -> Result<()> {
    let (start, cpu_start) = (Instant::now(), cpu_secs());
    let store = IndraStore::open(&dir)?;
    let (loaded, load_cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu_start);
    let (rss_loaded, hwm_loaded) = (status_kb("VmRSS"), status_kb("VmHWM"));
    let thresholds = Thresholds::default();
    let start = Instant::now();
    let mut n_endpoints = 0u64;
    let mut by_class = [0u64; 4];
    let mut n_flagged = 0u64;
    store.for_each_endpoint(&mut |key, history| {
        let classification = classify(key.direction, &key.ip, history, &thresholds, NOW);
        n_endpoints += 1;
        by_class[match classification.class {
            Class::Unknown => 0,
            Class::NeverTls => 1,
            Class::TlsUnverified => 2,
            Class::HistoricallyValid => 3,
        }] += 1;
        n_flagged += u64::from(classification.downgrade.is_some() || classification.broken_starttls.is_some());
        Ok(())
    })?;
    let classified = start.elapsed().as_secs_f64();
    if n_endpoints == 0 {
        bail!("{} holds no endpoints", dir.display());
    }
    println!("endpoints={n_endpoints}");
    println!("load_secs={loaded:.3}");
    println!("classify_secs={classified:.3}");
    println!("load_cpu_secs={load_cpu:.3}");
    println!("rss_after_load_kb={rss_loaded}");
    println!("peak_rss_after_load_kb={hwm_loaded}");
    println!(
        "classes=unknown:{} never-tls:{} tls-unverified:{} historically-valid:{} flagged:{n_flagged}",
        by_class[0], by_class[1], by_class[2], by_class[3]
    );
    Ok(())
}

/// CPU seconds (user + system, all threads) of this process so far, from `/proc/self/stat`
/// (Linux, at the usual 100 clock ticks per second); 0 when there is none. Other processes on
/// a busy machine stretch wall-clock times, much less this one.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// A `kB` figure of `/proc/self/status` (Linux), 0 when there is none.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    line.and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: reputation_bench build DIR [ENDPOINTS] [SEED] | measure DIR";
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["build", dir, rest @ ..] if rest.len() <= 2 => {
            let n_endpoints = rest.first().map_or(Ok(1_000_000), |n| n.parse()).context("ENDPOINTS")?;
            let seed = rest.get(1).map_or(Ok(1), |n| n.parse()).context("SEED")?;
            build(PathBuf::from(dir), n_endpoints, seed)
        }
        ["measure", dir] => measure(PathBuf::from(dir)),
        _ => bail!("{usage}"),
    }
}
