//! What every opt-in enforcement feed shares (research/FEEDS.md §3.3, §3.6): which outbound
//! endpoints may be enforced at all, and the promotion rate limit.
//!
//! An endpoint is **enforceable** when it is historically-valid right now, not dormant, not flagged
//! broken-STARTTLS, not pinned by `always_allow` / `never_enforce`, and none of its host names and
//! recipient domains is in `protected_domains` (DANE / MTA-STS: their own resolver decides).
//! The Postfix policy map applies the same test to every endpoint behind a next hop; Exim's
//! `require_tls.list` / `verify_tls.list` and Sendmail's `TLS_Srv:` entries list enforceable
//! endpoints by address.
//!
//! **Promotion limit** (`[enforcement] max_promotions_per_hour`): an endpoint that becomes
//! enforceable is a promotion; at most that many promotions are published in any hour. The ones
//! over the limit are held back (treated as `never_enforce` for this run, in address order so the
//! same ones wait) and come in on later runs. The ledger of what was promoted when is
//! `OUT/tlsledger-promotions.json` beside the feed files (replaced atomically, only after every
//! enforcement file was published). Demotions are never limited: dropping an entry only makes
//! delivery opportunistic again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Entry, Stamp};
use crate::feeds::postfix_policy::is_protected;
use crate::observation::Direction;
use crate::reputation::classify::Class;
use crate::reputation::thresholds::{Enforcement, EximTier, SendmailTier};

/// The promotion ledger's file name in the feed folder.
pub const LEDGER: &str = "tlsledger-promotions.json";

/// Why an outbound endpoint gets no enforcement entry, if it gets none.
pub fn refusal(entry: &Entry, enforcement: &Enforcement) -> Option<String> {
    let ip = &entry.key.ip;
    let c = &entry.classification;
    if entry.key.direction != Direction::Outbound {
        return Some(format!("{ip} is a client, not a server"));
    }
    if c.class != Class::HistoricallyValid {
        return Some(format!("{ip} is {}", c.class.as_str()));
    }
    if c.dormant || c.allowed || c.never_enforce || c.broken_starttls.is_some() {
        return Some(format!("{ip} is dormant, pinned or flagged"));
    }
    let names = entry.summary.domains.iter().chain(&entry.summary.hostnames);
    if let Some(name) = names.into_iter().find(|n| is_protected(&enforcement.protected_domains, n)) {
        return Some(format!("{name} is DANE/MTA-STS protected"));
    }
    None
}

/// True when some enforcement tier is on.
pub fn any_tier(enforcement: &Enforcement) -> bool {
    enforcement.postfix_tier != crate::reputation::thresholds::PostfixTier::Off
        || enforcement.exim_tier != EximTier::Off
        || enforcement.sendmail_tier != SendmailTier::Off
}

/// The promotion ledger: endpoints enforceable at the last publication, and recent promotions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Endpoint IPs that were enforceable (and admitted) at the last publication.
    pub enforced: BTreeSet<String>,
    /// Promotions of the last hour: endpoint IP → Unix seconds.
    pub promoted: BTreeMap<String, i64>,
}

impl Ledger {
    /// Reads `dir/tlsledger-promotions.json`; a missing file is an empty ledger.
    pub fn load(dir: &Path) -> Result<Ledger> {
        let path = dir.join(LEDGER);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is damaged (delete it to start the promotion count afresh)", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the ledger file atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        super::write_atomically(dir, LEDGER, &serde_json::to_vec_pretty(self)?)
    }
}

/// What [`limit_promotions`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// New promotions published now.
    pub promoted: usize,
    /// Enforceable endpoints held back by the limit (they wait for a later run).
    pub held: Vec<String>,
}

/// Applies the promotion limit to `entries` (marking the held ones `never_enforce`) and
/// updates `ledger` for this run at `stamp.generated`.
pub fn limit_promotions(
    entries: &mut [Entry],
    enforcement: &Enforcement,
    ledger: &mut Ledger,
    stamp: &Stamp,
) -> Admission {
    let now = stamp.generated.timestamp();
    ledger.promoted.retain(|_, at| *at > now - 3_600 && *at <= now);
    let mut budget = (enforcement.max_promotions_per_hour as usize).saturating_sub(ledger.promoted.len());
    let mut admission = Admission::default();
    let mut enforced = BTreeSet::new();
    // Address order, so the endpoints held now are the ones admitted first later.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|a, b| entries[*a].key.ip.cmp(&entries[*b].key.ip));
    for index in order {
        let entry = &mut entries[index];
        if refusal(entry, enforcement).is_some() {
            continue;
        }
        let ip = entry.key.ip.clone();
        if !ledger.enforced.contains(&ip) {
            if budget == 0 {
                entry.classification.never_enforce = true;
                entry.classification.evidence.push(format!(
                    "enforcement held back: more than max_promotions_per_hour = {} promotions in the last hour",
                    enforcement.max_promotions_per_hour
                ));
                admission.held.push(ip);
                continue;
            }
            budget -= 1;
            admission.promoted += 1;
            ledger.promoted.insert(ip.clone(), now);
        }
        enforced.insert(ip);
    }
    ledger.enforced = enforced;
    admission
}

/// `[enforcement] enforce_hold_max` with `on_persistent_failure = "relax"` (the default): an
/// enforceable endpoint whose downgrade episode began longer ago than that gets no enforcement
/// entry (delivery goes back to opportunistic TLS), even before the regression is persistent
/// enough to demote it. With `"hold"` the entry stays. Returns the endpoints relaxed.
pub fn relax_long_holds(entries: &mut [Entry], enforcement: &Enforcement, now: i64) -> Vec<String> {
    if enforcement.on_persistent_failure != "relax" {
        return Vec::new();
    }
    let mut relaxed = Vec::new();
    for entry in entries.iter_mut() {
        let Some(since) = entry.classification.downgrade.as_ref().map(|d| d.since) else { continue };
        if now - since <= enforcement.enforce_hold_max.0 || refusal(entry, enforcement).is_some() {
            continue;
        }
        entry.classification.never_enforce = true;
        entry.classification.evidence.push(format!(
            "enforcement relaxed: downgrade episode since {since}, longer than enforce_hold_max = {} s",
            enforcement.enforce_hold_max.0
        ));
        relaxed.push(entry.key.ip.clone());
    }
    relaxed
}

/// `require_tls.list` (Exim `hosts_require_tls`): enforceable server IPs when the Exim tier is
/// on; comments only otherwise.
pub fn exim_require_tls(entries: &[Entry], enforcement: &Enforcement, stamp: &Stamp) -> String {
    exim_list(entries, enforcement, stamp, "hosts_require_tls", enforcement.exim_tier != EximTier::Off)
}

/// `verify_tls.list` (Exim `tls_verify_hosts`, used with `require_tls.list`): enforceable server
/// IPs when the Exim tier is `verify`.
pub fn exim_verify_tls(entries: &[Entry], enforcement: &Enforcement, stamp: &Stamp) -> String {
    exim_list(entries, enforcement, stamp, "tls_verify_hosts", enforcement.exim_tier == EximTier::Verify)
}

fn exim_list(entries: &[Entry], enforcement: &Enforcement, stamp: &Stamp, option: &str, on: bool) -> String {
    let mut text = format!("# tlsledger OPT-IN enforcement -- Exim smtp transport {option} (one host per line)\n");
    text.push_str(&stamp.comment());
    if !on {
        text.push_str("# Empty on purpose: tlsledger emits no enforcement unless the operator opts in.\n");
        return text;
    }
    text.push_str(&format!(
        "# Opt-in exim_tier {}: historically-valid servers only, never DANE/MTA-STS domains.\n",
        enforcement.exim_tier.as_str()
    ));
    for entry in entries.iter().filter(|e| refusal(e, enforcement).is_none()) {
        if let Ok(ip) = entry.key.ip.parse::<std::net::IpAddr>() {
            text.push_str(&format!("{ip}\n"));
        }
    }
    text
}

/// The opt-in `TLS_Srv:` access entries (Sendmail rule set `tls_server`, looked up by server
/// name, then address): `ENCR:128` or `VERIFY`. The default error of a failing `TLS_Srv` check
/// is temporary (403 4.7.0): mail is deferred, never bounced; never `PERM+`.
pub fn sendmail_tls_srv(entries: &[Entry], enforcement: &Enforcement) -> String {
    let value = match enforcement.sendmail_tier {
        SendmailTier::Off => return String::new(),
        SendmailTier::Encrypt => "ENCR:128",
        SendmailTier::Verify => "VERIFY",
    };
    let mut text = format!(
        "# OPT-IN sendmail_tier {}: historically-valid servers only (TEMP errors: mail waits, never bounces).\n",
        enforcement.sendmail_tier.as_str()
    );
    for entry in entries.iter().filter(|e| refusal(e, enforcement).is_none()) {
        let key = match entry.key.ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
            Ok(std::net::IpAddr::V6(v6)) => format!("IPv6:{v6}"),
            Err(_) => continue,
        };
        text.push_str(&format!("TLS_Srv:{key}\t{value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing::{entry, stamp};
    use crate::reputation::thresholds::Thresholds;

    fn valid(ip: &str) -> Entry {
        let mut e = entry(Direction::Outbound, ip, false);
        e.classification.class = Class::HistoricallyValid;
        e.classification.baseline = Class::HistoricallyValid;
        e
    }

    fn enforcement(toml: &str) -> Enforcement {
        Thresholds::from_toml(toml).unwrap().enforcement
    }

    fn items(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn only_enforceable_servers_are_listed() {
        let mut protected = valid("192.0.2.30");
        protected.summary.domains = vec!["sts.example".into()];
        let mut pinned = valid("192.0.2.31");
        pinned.classification.never_enforce = true;
        let mut broken = valid("192.0.2.32");
        broken.classification.broken_starttls = entry(Direction::Outbound, "x", true).classification.broken_starttls;
        let mut client = valid("192.0.2.33");
        client.key.direction = Direction::Inbound;
        let entries = [
            valid("192.0.2.25"),
            valid("2001:db8::25"),
            entry(Direction::Outbound, "192.0.2.26", false),
            protected,
            pinned,
            broken,
            client,
        ];
        let e = enforcement("[enforcement]\nexim_tier = \"verify\"\nsendmail_tier = \"encrypt\"\nprotected_domains = [\"sts.example\"]\n");
        assert_eq!(items(&exim_require_tls(&entries, &e, &stamp())), ["192.0.2.25", "2001:db8::25"]);
        assert_eq!(items(&exim_verify_tls(&entries, &e, &stamp())), ["192.0.2.25", "2001:db8::25"]);
        assert_eq!(
            items(&sendmail_tls_srv(&entries, &e)),
            ["TLS_Srv:192.0.2.25\tENCR:128", "TLS_Srv:IPv6:2001:db8::25\tENCR:128"]
        );
        let e = enforcement("[enforcement]\nexim_tier = \"require-tls\"\nsendmail_tier = \"verify\"\n");
        assert_eq!(items(&exim_require_tls(&entries, &e, &stamp())).len(), 3, "sts.example not protected now");
        assert!(items(&exim_verify_tls(&entries, &e, &stamp())).is_empty(), "require-tls only");
        assert!(items(&sendmail_tls_srv(&entries, &e)).iter().all(|l| l.ends_with("\tVERIFY")));
    }

    #[test]
    fn a_long_hold_is_relaxed_unless_the_operator_says_hold() {
        let held = |since: i64| {
            let mut e = valid("192.0.2.25");
            e.classification.downgrade = Some(crate::reputation::classify::Downgrade {
                severity: crate::reputation::classify::Severity::High,
                reason: "plaintext".into(),
                at: since + 10,
                since,
                bad: 2,
                demoted: false,
            });
            e
        };
        let e = enforcement("[enforcement]\nexim_tier = \"require-tls\"\nenforce_hold_max = \"24h\"\n");
        let now = 1_000_000;
        // Held for 23 h: the entry stays, mail waits for TLS.
        let mut entries = [held(now - 23 * 3_600)];
        assert!(relax_long_holds(&mut entries, &e, now).is_empty());
        assert_eq!(items(&exim_require_tls(&entries, &e, &stamp())), ["192.0.2.25"]);
        // Held for 25 h: relaxed, mail goes out opportunistically again.
        let mut entries = [held(now - 25 * 3_600)];
        assert_eq!(relax_long_holds(&mut entries, &e, now), ["192.0.2.25"]);
        assert!(items(&exim_require_tls(&entries, &e, &stamp())).is_empty());
        // The operator chose to hold.
        let hold = enforcement("[enforcement]\nexim_tier = \"require-tls\"\non_persistent_failure = \"hold\"\n");
        let mut entries = [held(now - 25 * 3_600)];
        assert!(relax_long_holds(&mut entries, &hold, now).is_empty());
        assert_eq!(items(&exim_require_tls(&entries, &hold, &stamp())), ["192.0.2.25"]);
    }

    #[test]
    fn the_default_enforces_nothing() {
        let entries = [valid("192.0.2.25")];
        let e = Enforcement::default();
        assert!(!any_tier(&e));
        assert!(items(&exim_require_tls(&entries, &e, &stamp())).is_empty());
        assert!(items(&exim_verify_tls(&entries, &e, &stamp())).is_empty());
        assert_eq!(sendmail_tls_srv(&entries, &e), "");
    }

    #[test]
    fn promotions_are_rate_limited_per_hour() {
        let e = enforcement("[enforcement]\nexim_tier = \"require-tls\"\nmax_promotions_per_hour = 2\n");
        let mut ledger = Ledger::default();
        let at = |secs: i64| Stamp {
            generated: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
            expires: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        };
        let fresh = || ["192.0.2.4", "192.0.2.1", "192.0.2.3", "192.0.2.2"].map(valid);
        let mut entries = fresh();
        let first = limit_promotions(&mut entries, &e, &mut ledger, &at(10_000));
        assert_eq!(first, Admission { promoted: 2, held: vec!["192.0.2.3".into(), "192.0.2.4".into()] });
        assert_eq!(items(&exim_require_tls(&entries, &e, &at(10_000))), ["192.0.2.1", "192.0.2.2"]);

        // Half an hour later the budget is still spent; the admitted stay listed.
        let mut entries = fresh();
        let second = limit_promotions(&mut entries, &e, &mut ledger, &at(11_800));
        assert_eq!(second.promoted, 0);
        assert_eq!(items(&exim_require_tls(&entries, &e, &at(11_800))), ["192.0.2.1", "192.0.2.2"]);

        // An hour after the first promotions the held ones come in.
        let mut entries = fresh();
        let third = limit_promotions(&mut entries, &e, &mut ledger, &at(13_601));
        assert_eq!(third, Admission { promoted: 2, held: vec![] });
        assert_eq!(items(&exim_require_tls(&entries, &e, &at(13_601))).len(), 4);

        // A demoted endpoint leaves at once; coming back is a promotion again.
        let mut entries = fresh();
        entries[1].classification.class = Class::TlsUnverified;
        limit_promotions(&mut entries, &e, &mut ledger, &at(20_000));
        assert!(!ledger.enforced.contains("192.0.2.1"));
        let mut entries = fresh();
        let back = limit_promotions(&mut entries, &e, &mut ledger, &at(20_100));
        assert_eq!(back.promoted, 1);
    }

    #[test]
    fn the_ledger_round_trips_and_a_damaged_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tlsledger-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Ledger::load(&dir).unwrap(), Ledger::default(), "missing: empty");
        let ledger =
            Ledger { enforced: ["192.0.2.1".to_owned()].into(), promoted: [("192.0.2.1".to_owned(), 5)].into() };
        ledger.save(&dir).unwrap();
        assert_eq!(Ledger::load(&dir).unwrap(), ledger);
        std::fs::write(dir.join(LEDGER), b"{not json").unwrap();
        let err = format!("{:#}", Ledger::load(&dir).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
