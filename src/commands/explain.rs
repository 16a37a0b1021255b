//! `tlsledger explain HOST|IP|DOMAIN`: the class and flags of an endpoint, a host name or a
//! domain, and the evidence behind them, from the reputation state folder that
//! `tlsledger parse --state DIR` keeps.
//!
//! An IP shows its endpoints (outbound and inbound); a host name the endpoints of the IPs it was
//! seen with; a domain the endpoints of its MX host names and the domain's class (historically
//! valid only if every one of them is). `--json` prints the same as one JSON object.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::observation::Direction;
use crate::reputation::classify::{classify, domain_class, Class, Classification};
use crate::reputation::history::{protocol_name, CertSeen, HostHistory};
use crate::reputation::indra::{IndraStore, GRAPH_FILE, LEGACY_FILE};
use crate::reputation::store::{EndpointKey, ReputationStore};
use crate::reputation::thresholds::Thresholds;

/// Options of `tlsledger explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// An IP address, a host name or a recipient domain.
    pub target: String,

    /// The reputation state folder written by `tlsledger parse --state DIR`.
    #[arg(long, value_name = "DIR", default_value = "tlsledger-state")]
    pub state: PathBuf,

    /// Thresholds file (TOML); defaults as documented in the README.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,

    /// Judge as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<DateTime<Utc>>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One endpoint's verdict and the facts behind it.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    /// `outbound/192.0.2.1`.
    pub endpoint: String,
    /// The verdict.
    pub classification: Classification,
    /// First and last observation.
    pub first_seen: Option<DateTime<Utc>>,
    /// See `first_seen`.
    pub last_seen: Option<DateTime<Utc>>,
    /// Decisions by outcome over the kept days (`tls`, `plaintext`, …).
    pub decisions: Vec<(String, u32)>,
    /// Active days kept.
    pub active_days: usize,
    /// The latest observations, newest last: time, outcome, trust, protocol.
    pub recent: Vec<String>,
    /// Host names seen for the endpoint.
    pub hostnames: Vec<String>,
    /// Recipient domains delivered to it.
    pub domains: Vec<String>,
    /// Certificates it presented (where logged), oldest first, with the other IPs the graph
    /// saw present the same one.
    pub certificates: Vec<CertificateReport>,
}

/// A certificate of an endpoint in a report.
#[derive(Debug, Serialize)]
pub struct CertificateReport {
    /// What the history keeps of it.
    #[serde(flatten)]
    pub seen: CertSeen,
    /// True for the one seen last.
    pub current: bool,
    /// Other IPs that presented it.
    pub also_presented_by: Vec<String>,
}

/// What `explain` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// What was asked.
    pub target: String,
    /// `ip`, `hostname` or `domain`.
    pub kind: &'static str,
    /// The domain's class, for a domain.
    pub domain_class: Option<Class>,
    /// Every matching endpoint.
    pub endpoints: Vec<EndpointReport>,
}

/// Loads thresholds from a file, or the defaults.
pub fn load_thresholds(path: Option<&std::path::Path>) -> Result<Thresholds> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Thresholds::from_toml(&text).with_context(|| format!("in {}", path.display()))
        }
        None => Ok(Thresholds::default()),
    }
}

/// Runs `explain`.
pub fn run(args: &ExplainArgs) -> Result<()> {
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    // A version-1 file goes on to `open`, which says what to do with it.
    if !args.state.join(GRAPH_FILE).exists() && !args.state.join(LEGACY_FILE).exists() {
        anyhow::bail!(
            "no reputation state in {}: build it with `tlsledger parse --state {} LOG...`",
            args.state.display(),
            args.state.display()
        );
    }
    let store = IndraStore::open(&args.state)?;
    let now = args.now.unwrap_or_else(Utc::now).timestamp();
    let report = explain(&store, &args.target, &thresholds, now)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        stdout.write_all(b"\n")?;
    } else {
        stdout.write_all(format_report(&report).as_bytes())?;
    }
    if report.endpoints.is_empty() {
        anyhow::bail!("nothing is known about {}", args.target);
    }
    Ok(())
}

/// Builds the report for `target` from `store`.
pub fn explain(store: &dyn ReputationStore, target: &str, thresholds: &Thresholds, now: i64) -> Result<Report> {
    let target_lower = target.trim().trim_end_matches('.').to_ascii_lowercase();
    let (kind, ips) = if let Ok(ip) = target_lower.parse::<IpAddr>() {
        ("ip", BTreeSet::from([ip.to_string()]))
    } else {
        let hostname_ips: BTreeSet<String> = store.ips_of_hostname(&target_lower)?.into_iter().collect();
        if !hostname_ips.is_empty() {
            ("hostname", hostname_ips)
        } else {
            let mut ips = BTreeSet::new();
            for hostname in store.hostnames_of_domain(&target_lower)? {
                ips.extend(store.ips_of_hostname(&hostname)?);
            }
            ("domain", ips)
        }
    };
    let mut endpoints = Vec::new();
    for ip in &ips {
        for direction in [Direction::Outbound, Direction::Inbound] {
            let key = EndpointKey { direction, ip: ip.clone() };
            if let Some(history) = store.history(&key)? {
                let classification = classify(direction, ip, &history, thresholds, now);
                let mut report = endpoint_report(&key, &history, classification);
                for certificate in &mut report.certificates {
                    certificate.also_presented_by = store
                        .ips_of_certificate(&certificate.seen.identity)?
                        .into_iter()
                        .filter(|other| other != ip)
                        .collect();
                }
                endpoints.push(report);
            }
        }
    }
    let domain_class = (kind == "domain").then(|| {
        let classes: Vec<Class> =
            endpoints.iter().filter(|e| e.endpoint.starts_with("outbound/")).map(|e| e.classification.class).collect();
        domain_class(&classes)
    });
    Ok(Report { target: target.to_owned(), kind, domain_class, endpoints })
}

fn endpoint_report(key: &EndpointKey, history: &HostHistory, classification: Classification) -> EndpointReport {
    let total = history.totals_since(0);
    let decisions = crate::observation::Outcome::ALL
        .iter()
        .zip(total.by_outcome)
        .filter(|(_, n)| *n > 0)
        .map(|(outcome, n)| (outcome.as_str().to_owned(), n))
        .collect();
    let at = |secs: i64| (secs > 0).then(|| DateTime::from_timestamp(secs, 0)).flatten();
    let recent = history
        .recent
        .iter()
        .map(|r| {
            let when = at(r.ts).map_or_else(|| r.ts.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            let trust = r.trust.map_or(String::new(), |t| {
                format!(" {}", serde_json::to_value(t).unwrap_or_default().as_str().unwrap_or(""))
            });
            let protocol = if r.protocol > 0 { format!(" {}", protocol_name(r.protocol)) } else { String::new() };
            let policy = if r.local_policy { " (our policy)" } else { "" };
            format!("{when} {}{trust}{protocol}{policy}", r.outcome.as_str())
        })
        .collect();
    EndpointReport {
        endpoint: key.to_string(),
        classification,
        first_seen: at(history.first_seen),
        last_seen: at(history.last_seen),
        decisions,
        active_days: history.days.len(),
        recent,
        hostnames: history.hostnames.clone(),
        domains: history.domains.clone(),
        certificates: history
            .certs
            .iter()
            .map(|seen| CertificateReport {
                seen: seen.clone(),
                current: history.current_cert().is_some_and(|c| c.identity == seen.identity),
                also_presented_by: Vec::new(),
            })
            .collect(),
    }
}

/// The text form of a report.
pub fn format_report(report: &Report) -> String {
    let mut text = format!("{} ({})\n", report.target, report.kind);
    if let Some(class) = report.domain_class {
        text.push_str(&format!("domain class: {}\n", class.as_str()));
    }
    if report.endpoints.is_empty() {
        text.push_str("no observations\n");
    }
    for endpoint in &report.endpoints {
        let c = &endpoint.classification;
        let mut flags = Vec::new();
        if let Some(d) = &c.downgrade {
            flags.push(format!("downgrade-suspect ({:?}{})", d.severity, if d.demoted { ", demoted" } else { "" }));
        }
        if let Some(b) = &c.broken_starttls {
            flags.push(format!("broken-starttls (level {})", b.level));
        }
        if c.dormant {
            flags.push("dormant".to_owned());
        }
        text.push_str(&format!(
            "\n{}\n  class: {} (baseline {})\n  flags: {}\n",
            endpoint.endpoint,
            c.class.as_str(),
            c.baseline.as_str(),
            if flags.is_empty() { "none".to_owned() } else { flags.join(", ") }
        ));
        if let (Some(first), Some(last)) = (endpoint.first_seen, endpoint.last_seen) {
            text.push_str(&format!("  seen: {first} .. {last}, {} active days\n", endpoint.active_days));
        }
        let decisions: Vec<String> = endpoint.decisions.iter().map(|(o, n)| format!("{o} {n}")).collect();
        text.push_str(&format!("  decisions: {}\n", decisions.join(", ")));
        if !endpoint.hostnames.is_empty() {
            text.push_str(&format!("  hostnames: {}\n", endpoint.hostnames.join(", ")));
        }
        if !endpoint.domains.is_empty() {
            text.push_str(&format!("  domains: {}\n", endpoint.domains.join(", ")));
        }
        if endpoint.certificates.len() > 1 {
            text.push_str(&format!(
                "  certificate changed: {} certificates seen (informational: rotation is routine)\n",
                endpoint.certificates.len()
            ));
        }
        for certificate in &endpoint.certificates {
            let seen = &certificate.seen;
            let day = |secs: i64| {
                DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d").to_string())
            };
            text.push_str(&format!(
                "  certificate{}: {} (issuer {}) {}, {} times, {} .. {}\n",
                if certificate.current { " (current)" } else { "" },
                seen.subject.as_deref().unwrap_or("?"),
                seen.issuer.as_deref().unwrap_or("?"),
                seen.identity,
                seen.count,
                day(seen.first_seen),
                day(seen.last_seen)
            ));
            if !certificate.also_presented_by.is_empty() {
                text.push_str(&format!("    also presented by: {}\n", certificate.also_presented_by.join(", ")));
            }
        }
        text.push_str("  because:\n");
        for line in &c.evidence {
            text.push_str(&format!("    - {line}\n"));
        }
        text.push_str("  latest:\n");
        for line in endpoint.recent.iter().rev().take(8) {
            text.push_str(&format!("    {line}\n"));
        }
    }
    text
}
