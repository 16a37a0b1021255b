//! `tlsledger feed --state DIR --out DIR`: classify every endpoint of the reputation state and
//! write the feed files atomically (see [`crate::feeds`]).
//!
//! The global guard is applied first: when many baseline endpoints regressed within the guard
//! window, no flag is published and classes stay frozen (and the command says so). Dormant
//! endpoints and those on the `always_allow` list are never listed.

use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::explain::load_thresholds;
use crate::feeds::{self, exim, json, postfix, rspamd, sendmail, Entry, Stamp};
use crate::observation::Direction;
use crate::reputation::classify::{apply_guard, classify, global_guard};
use crate::reputation::indra::IndraStore;
use crate::reputation::store::ReputationStore;

/// Options of `tlsledger feed`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// The reputation state folder written by `tlsledger parse --state DIR`.
    #[arg(long, value_name = "DIR", default_value = "tlsledger-state")]
    pub state: PathBuf,

    /// Where to write the feed files (created if missing; each file is replaced atomically).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Thresholds file (TOML).
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,

    /// Classify as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<DateTime<Utc>>,
}

/// Runs `feed`.
pub fn run(args: &FeedArgs) -> Result<()> {
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let store = IndraStore::open(&args.state)?;
    let now = args.now.unwrap_or_else(Utc::now);
    let mut entries: Vec<Entry> = store
        .endpoints()?
        .into_iter()
        .map(|(key, history)| {
            let classification = classify(key.direction, &key.ip, &history, &thresholds, now.timestamp());
            Entry { key, history, classification }
        })
        .filter(|entry| !entry.classification.expired)
        .collect();
    let trip = {
        let refs: Vec<_> = entries.iter().map(|e| &e.classification).collect();
        global_guard(&refs, &thresholds, now.timestamp())
    };
    if let Some(trip) = &trip {
        eprintln!(
            "tlsledger: global guard tripped ({} of {} baseline endpoints regressed at once): flags withheld, classes frozen",
            trip.regressed, trip.baseline
        );
        for entry in &mut entries {
            apply_guard(&mut entry.classification, trip);
        }
    }
    let stamp = Stamp { generated: now, expires: now + chrono::Duration::seconds(thresholds.expiry.feed_ttl.0) };
    let files = [
        ("smtp_discard_ehlo.cidr", postfix::discard_map(&entries, Direction::Outbound, &stamp)),
        ("smtpd_discard_ehlo.cidr", postfix::discard_map(&entries, Direction::Inbound, &stamp)),
        ("tls_policy", postfix::tls_policy(&stamp)),
        ("avoid_tls.list", exim::broken_starttls_list(&entries, Direction::Outbound, &stamp)),
        ("no_starttls_clients.list", exim::broken_starttls_list(&entries, Direction::Inbound, &stamp)),
        ("access.tlsledger", sendmail::access(&entries, &stamp)),
        ("tlsledger_downgrade.map", rspamd::downgrade_map(&entries, &stamp)),
        ("tlsledger_hist_tls.map", rspamd::hist_tls_map(&entries, &stamp)),
        ("tlsledger-feed.json", json::feed(&entries, trip.as_ref(), &stamp)?),
    ];
    for (name, contents) in &files {
        feeds::write_atomically(&args.out, name, contents.as_bytes())?;
    }
    let broken = entries.iter().filter(|e| e.classification.broken_starttls.is_some()).count();
    let downgrades = entries.iter().filter(|e| e.classification.downgrade.is_some()).count();
    eprintln!(
        "wrote {} feed files to {}: {} endpoints, {broken} broken-STARTTLS, {downgrades} downgrade suspects",
        files.len(),
        args.out.display(),
        entries.len()
    );
    Ok(())
}
