//! `tlsledger feed --state DIR --out DIR`: classify every endpoint of the reputation state and
//! write the feed files atomically (see [`crate::feeds`]).
//!
//! The global guard is applied first: when many baseline endpoints regressed within the guard
//! window, no flag is published and classes stay frozen (and the command says so). Dormant
//! endpoints and those on the `always_allow` list are never listed.
//!
//! Enforcement files get entries only with an opt-in tier (`[enforcement] postfix_tier`,
//! `exim_tier`, `sendmail_tier`), and at most `max_promotions_per_hour` endpoints become newly
//! enforced per hour (the ledger `OUT/tlsledger-promotions.json`, [`crate::feeds::enforcement`]).
//! With a Postfix tier the
//! target Postfix version comes from `--postfix-version` or `postconf -h mail_version`, and the
//! next hops from the state, `--transport-map FILE` and `--relayhost` ([`crate::feeds::postfix_policy`]).
//!
//! After the files are replaced, `--postmap TYPE` and `--makemap TYPE` build indexed databases of
//! `tls_policy` and `access.tlsledger` with the MTA's own tools ([`crate::feeds::index`]); a
//! missing or failing tool is an error (exit 2) that leaves the new text files in place.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::explain::load_thresholds;
use crate::feeds::enforcement::{self, Ledger};
use crate::feeds::index::{self, MakemapType, PostmapType};
use crate::feeds::postfix_policy::{self, PostfixVersion, Route};
use crate::feeds::{self, csv, exim, json, postfix, rspamd, sendmail, spamassassin, Entry, Stamp, Summary};
use crate::observation::Direction;
use crate::reputation::classify::{apply_guard, classify, global_guard};
use crate::reputation::indra::IndraStore;
use crate::reputation::store::ReputationStore;
use crate::reputation::thresholds::{PostfixTier, Thresholds};

/// A group of feed files, for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedFormat {
    /// `smtp_discard_ehlo.cidr`, `smtpd_discard_ehlo.cidr`, `tls_policy`.
    Postfix,
    /// `avoid_tls.list`, `no_starttls_clients.list`, `require_tls.list`, `verify_tls.list`.
    Exim,
    /// `access.tlsledger`.
    Sendmail,
    /// `tlsledger_downgrade.map`, `tlsledger_hist_tls.map`.
    Rspamd,
    /// `tlsledger.cf`.
    Spamassassin,
    /// `tlsledger-feed.json`.
    Json,
    /// `tlsledger-feed.csv`.
    Csv,
}

impl FeedFormat {
    /// The group a feed file belongs to (`None`: a file of no group, always written).
    fn of(file: &str) -> Option<FeedFormat> {
        Some(match file {
            "smtp_discard_ehlo.cidr" | "smtpd_discard_ehlo.cidr" | "tls_policy" => FeedFormat::Postfix,
            "avoid_tls.list" | "no_starttls_clients.list" | "require_tls.list" | "verify_tls.list" => FeedFormat::Exim,
            "access.tlsledger" => FeedFormat::Sendmail,
            "tlsledger_downgrade.map" | "tlsledger_hist_tls.map" => FeedFormat::Rspamd,
            SPAMASSASSIN_RULES => FeedFormat::Spamassassin,
            "tlsledger-feed.json" => FeedFormat::Json,
            "tlsledger-feed.csv" => FeedFormat::Csv,
            _ => return None,
        })
    }
}

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

    /// Only these groups of files (comma-separated or repeated): postfix, exim, sendmail, rspamd,
    /// spamassassin, json, csv. Default: all of them.
    #[arg(long, value_name = "FORMAT", value_enum, value_delimiter = ',')]
    pub format: Vec<FeedFormat>,

    /// Publish even files whose entries changed by more than `max_feed_churn_ratio`.
    #[arg(long)]
    pub force: bool,

    /// After writing `tls_policy`, build `TYPE:OUT/tls_policy` with postmap (for
    /// `smtp_tls_policy_maps = TYPE:OUT/tls_policy`; without it use `texthash:`).
    #[arg(long, value_name = "TYPE", value_enum)]
    pub postmap: Option<PostmapType>,

    /// The postmap program.
    #[arg(long, value_name = "PATH", default_value = "postmap")]
    pub postmap_path: PathBuf,

    /// The Postfix configuration folder postmap reads (`postmap -c DIR`).
    #[arg(long, value_name = "DIR")]
    pub postfix_config: Option<PathBuf>,

    /// After writing `access.tlsledger`, build its Sendmail database with `makemap TYPE`
    /// (`OUT/access.tlsledger.db` for hash and btree).
    #[arg(long, value_name = "TYPE", value_enum)]
    pub makemap: Option<MakemapType>,

    /// The makemap program (Debian: /usr/libexec/sendmail/makemap, also /usr/sbin/makemap).
    #[arg(long, value_name = "PATH", default_value = "makemap")]
    pub makemap_path: PathBuf,

    /// The sendmail.cf makemap reads for `TrustedUser` (`makemap -C FILE`).
    #[arg(long, value_name = "FILE")]
    pub sendmail_cf: Option<PathBuf>,

    /// The Postfix release the TLS policy map is for (`3.7`, `3.10.2`); without it, an opt-in
    /// enforcement tier asks `postconf -h mail_version`.
    #[arg(long, value_name = "X.Y")]
    pub postfix_version: Option<PostfixVersion>,

    /// The postconf program (version detection).
    #[arg(long, value_name = "PATH", default_value = "postconf")]
    pub postconf_path: PathBuf,

    /// The operator's Postfix transport map (transport(5) text): its SMTP next hops become
    /// policy keys, and the domains it routes elsewhere get no domain key.
    #[arg(long, value_name = "FILE")]
    pub transport_map: Option<PathBuf>,

    /// The Postfix `relayhost` (`[smtp.example]:587`): mail for domains no transport map route
    /// takes goes there, so it is the policy key for them.
    #[arg(long, value_name = "NEXTHOP")]
    pub relayhost: Option<String>,
}

/// True when `--format` selects `format` (no `--format`: every group).
fn wanted(args: &FeedArgs, format: FeedFormat) -> bool {
    args.format.is_empty() || args.format.contains(&format)
}

/// The target Postfix version: given, or asked from postconf (only when a tier needs it).
fn postfix_version(args: &FeedArgs, thresholds: &Thresholds) -> Result<Option<PostfixVersion>> {
    if thresholds.enforcement.postfix_tier == PostfixTier::Off || !wanted(args, FeedFormat::Postfix) {
        return Ok(None);
    }
    if let Some(version) = args.postfix_version {
        return Ok(Some(version));
    }
    let mut command = std::process::Command::new(&args.postconf_path);
    if let Some(dir) = &args.postfix_config {
        command.arg("-c").arg(dir);
    }
    let output = command.args(["-h", "mail_version"]).output().with_context(|| {
        format!(
            "an enforcement tier needs the Postfix version: cannot run {} (give --postfix-version X.Y)",
            args.postconf_path.display()
        )
    })?;
    if !output.status.success() {
        anyhow::bail!(
            "{} -h mail_version failed ({}): {}; give --postfix-version X.Y",
            args.postconf_path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(Some(text.parse().with_context(|| format!("from {} -h mail_version", args.postconf_path.display()))?))
}

/// The routes of `--transport-map`, then `--relayhost` as the route of every other domain.
fn routes(args: &FeedArgs) -> Result<Vec<Route>> {
    let mut routes = match &args.transport_map {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            postfix_policy::parse_transport_map(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Vec::new(),
    };
    if let Some(relayhost) = &args.relayhost {
        if !routes.iter().any(|r| r.pattern == "*") {
            routes.push(postfix_policy::route("*", &format!("smtp:{relayhost}")));
        }
    }
    Ok(routes)
}

/// The SpamAssassin rule file: rules, not entries, so the churn guard does not apply.
const SPAMASSASSIN_RULES: &str = "tlsledger.cf";

/// Below this many changed entries a file is always published (small feeds churn by nature).
const MIN_CHURN: usize = 10;

/// The entries (non-comment, non-empty lines) of a feed file.
fn entry_lines(text: &str) -> std::collections::BTreeSet<&str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect()
}

/// Why a new version of a file must not replace the old one, if it must not.
fn churn_refusal(previous: &str, next: &str, max_ratio: f64) -> Option<String> {
    let (old, new) = (entry_lines(previous), entry_lines(next));
    if old.is_empty() {
        return None;
    }
    let changed = old.symmetric_difference(&new).count();
    let limit = ((old.len() as f64 * max_ratio).ceil() as usize).max(MIN_CHURN);
    (changed > limit).then(|| {
        format!("{changed} of {} entries would change (limit {limit}, max_feed_churn_ratio {max_ratio})", old.len())
    })
}

/// Runs `feed`.
pub fn run(args: &FeedArgs) -> Result<()> {
    if args.postmap.is_some() && !wanted(args, FeedFormat::Postfix) {
        anyhow::bail!("--postmap indexes tls_policy: add postfix to --format");
    }
    if args.makemap.is_some() && !wanted(args, FeedFormat::Sendmail) {
        anyhow::bail!("--makemap indexes access.tlsledger: add sendmail to --format");
    }
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let version = postfix_version(args, &thresholds)?;
    let routes = routes(args)?;
    let store = IndraStore::open(&args.state)?;
    let now = args.now.unwrap_or_else(Utc::now);
    // One history decoded at a time: an entry keeps only the summary the feeds show.
    let mut entries: Vec<Entry> = Vec::new();
    store.for_each_endpoint(&mut |key, history| {
        let classification = classify(key.direction, &key.ip, history, &thresholds, now.timestamp());
        if !classification.expired {
            entries.push(Entry { key: key.clone(), summary: Summary::of(history), classification });
        }
        Ok(())
    })?;
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
    // The promotion limit: endpoints newly enforceable beyond max_promotions_per_hour wait.
    let enforcing = enforcement::any_tier(&thresholds.enforcement);
    let mut ledger = if enforcing { Ledger::load(&args.out)? } else { Ledger::default() };
    if enforcing {
        let relaxed = enforcement::relax_long_holds(&mut entries, &thresholds.enforcement, now.timestamp());
        if !relaxed.is_empty() {
            eprintln!(
                "tlsledger: enforcement relaxed for {} endpoints held longer than enforce_hold_max (first: {})",
                relaxed.len(),
                relaxed[0]
            );
        }
        let admission = enforcement::limit_promotions(&mut entries, &thresholds.enforcement, &mut ledger, &stamp);
        if !admission.held.is_empty() {
            eprintln!(
                "tlsledger: {} endpoints newly enforceable, {} held back by max_promotions_per_hour = {} (first: {})",
                admission.promoted + admission.held.len(),
                admission.held.len(),
                thresholds.enforcement.max_promotions_per_hour,
                admission.held[0]
            );
        }
    }
    let hops = match thresholds.enforcement.postfix_tier {
        PostfixTier::Off => Default::default(),
        _ if !wanted(args, FeedFormat::Postfix) => Default::default(),
        _ => postfix_policy::next_hops(&store, &entries, &routes)?,
    };
    let tls_policy = if wanted(args, FeedFormat::Postfix) {
        postfix_policy::tls_policy(&entries, &hops, &thresholds.enforcement, version, &stamp)?
    } else {
        String::new()
    };
    // Files with entries are kept from churning; the others (documents, rules) always publish.
    let files = [
        ("smtp_discard_ehlo.cidr", postfix::discard_map(&entries, Direction::Outbound, &stamp)),
        ("smtpd_discard_ehlo.cidr", postfix::discard_map(&entries, Direction::Inbound, &stamp)),
        ("tls_policy", tls_policy),
        ("avoid_tls.list", exim::broken_starttls_list(&entries, Direction::Outbound, &stamp)),
        ("no_starttls_clients.list", exim::broken_starttls_list(&entries, Direction::Inbound, &stamp)),
        ("require_tls.list", enforcement::exim_require_tls(&entries, &thresholds.enforcement, &stamp)),
        ("verify_tls.list", enforcement::exim_verify_tls(&entries, &thresholds.enforcement, &stamp)),
        (
            "access.tlsledger",
            sendmail::access(&entries, &stamp) + &enforcement::sendmail_tls_srv(&entries, &thresholds.enforcement),
        ),
        ("tlsledger_downgrade.map", rspamd::downgrade_map(&entries, &stamp)),
        ("tlsledger_hist_tls.map", rspamd::hist_tls_map(&entries, &stamp)),
        ("tlsledger-feed.json", json::feed(&entries, trip.as_ref(), &stamp)?),
        ("tlsledger-feed.csv", csv::feed(&entries, &stamp)),
        (SPAMASSASSIN_RULES, spamassassin::rule_file(&thresholds.scores, &stamp)),
    ];
    let files: Vec<(&str, String)> =
        files.into_iter().filter(|(name, _)| FeedFormat::of(name).is_none_or(|f| wanted(args, f))).collect();
    let mut refused = Vec::new();
    for (name, contents) in &files {
        let guarded = !name.starts_with("tlsledger-feed.") && *name != SPAMASSASSIN_RULES;
        if !args.force && guarded {
            if let Ok(previous) = std::fs::read_to_string(args.out.join(name)) {
                if let Some(why) = churn_refusal(&previous, contents, thresholds.enforcement.max_feed_churn_ratio) {
                    eprintln!("tlsledger: kept the previous {name}: {why}; check and rerun with --force to publish");
                    refused.push(*name);
                    continue;
                }
            }
        }
        feeds::write_atomically(&args.out, name, contents.as_bytes())?;
    }
    let enforcement_files = ["tls_policy", "require_tls.list", "verify_tls.list", "access.tlsledger"];
    if enforcing && !refused.iter().any(|name| enforcement_files.contains(name)) {
        ledger.save(&args.out)?;
    }
    if let Some(kind) = args.postmap {
        if !refused.contains(&"tls_policy") {
            index::postmap(&args.postmap_path, args.postfix_config.as_deref(), kind, &args.out, "tls_policy")?;
        }
    }
    if let Some(kind) = args.makemap {
        if !refused.contains(&"access.tlsledger") {
            index::makemap(&args.makemap_path, args.sendmail_cf.as_deref(), kind, &args.out, "access.tlsledger")?;
        }
    }
    let broken = entries.iter().filter(|e| e.classification.broken_starttls.is_some()).count();
    let downgrades = entries.iter().filter(|e| e.classification.downgrade.is_some()).count();
    eprintln!(
        "wrote {} feed files to {}: {} endpoints, {broken} broken-STARTTLS, {downgrades} downgrade suspects",
        files.len(),
        args.out.display(),
        entries.len()
    );
    if !refused.is_empty() {
        anyhow::bail!("not published (too much churn): {}", refused.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feed_file_has_a_format() {
        for file in [
            "smtp_discard_ehlo.cidr",
            "smtpd_discard_ehlo.cidr",
            "tls_policy",
            "avoid_tls.list",
            "no_starttls_clients.list",
            "require_tls.list",
            "verify_tls.list",
            "access.tlsledger",
            "tlsledger_downgrade.map",
            "tlsledger_hist_tls.map",
            SPAMASSASSIN_RULES,
            "tlsledger-feed.json",
            "tlsledger-feed.csv",
        ] {
            assert!(FeedFormat::of(file).is_some(), "{file}");
        }
        assert_eq!(FeedFormat::of("tls_policy"), Some(FeedFormat::Postfix));
        assert_eq!(FeedFormat::of("require_tls.list"), Some(FeedFormat::Exim));
    }

    #[test]
    fn churn_guard() {
        let many = |n: usize, offset: usize| -> String {
            (0..n).map(|i| format!("192.0.2.{}/32\tstarttls\n", i + offset)).collect::<String>()
        };
        assert_eq!(churn_refusal("# only comments\n", &many(100, 0), 0.1), None, "from empty: publish");
        assert_eq!(churn_refusal(&many(100, 0), &many(100, 5), 0.1), None, "10 changes of 100: publish");
        assert!(churn_refusal(&many(100, 0), &many(100, 50), 0.1).is_some(), "100 changes of 100: refuse");
        assert_eq!(churn_refusal(&many(5, 0), "", 0.1), None, "small feeds may empty themselves");
    }
}
