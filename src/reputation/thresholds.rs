//! Thresholds of the reputation state model, from a TOML file with documented defaults.
//!
//! The file and the defaults follow research/feed-examples/canonical/thresholds.toml
//! (FEEDS.md §3); durations are written `30d`, `24h`, `1h`, `90m`, `45s`. Every key is optional:
//! a missing key keeps its default, an unknown key is an error (a typo must not silently keep a
//! default). Operators pin overrides in `[overrides]`: `always_allow` (never flagged, never
//! enforced) and `never_enforce` (flags shown, no enforcement entry). `[enforcement]` is where
//! the operator opts in to a Postfix TLS policy tier ([`PostfixTier`]) and lists the domains that
//! DANE or MTA-STS protect (`protected_domains`), which never get an entry.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A duration in seconds, parsed from `7d`, `24h`, `90m`, `45s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Secs(pub i64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text).map(Secs).map_err(serde::de::Error::custom)
    }
}

/// `7d` → 604800.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().with_context(|| format!("invalid duration {text:?}: use e.g. 30d, 24h, 90m"))?;
    let factor = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => bail!("invalid duration unit in {text:?}: use d, h, m or s"),
    };
    number.checked_mul(factor).with_context(|| format!("duration {text:?} is too large"))
}

/// All thresholds.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// When an endpoint has enough history for a class.
    pub baseline: Baseline,
    /// When an endpoint goes quiet.
    pub expiry: Expiry,
    /// The broken-STARTTLS flag.
    pub broken_starttls: BrokenStarttlsThresholds,
    /// The downgrade-suspect flag and the global guard.
    pub downgrade: DowngradeThresholds,
    /// Opt-in enforcement and feed guards.
    pub enforcement: Enforcement,
    /// Spam-filter weights (never a reject).
    pub scores: Scores,
    /// Operator pins.
    pub overrides: Overrides,
}

/// The opt-in Postfix `smtp_tls_policy_maps` tier for historically-valid next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostfixTier {
    /// No entries (the default): Postfix stays opportunistic.
    #[default]
    Off,
    /// `encrypt` with a protocol floor: TLS required, certificate not checked.
    Encrypt,
    /// `verify`: TLS required and the certificate must match the MX name (trusts DNS).
    Verify,
    /// `secure match=<observed names>`: the certificate must match the host names seen so far.
    SecureMatchObserved,
}

impl PostfixTier {
    /// The name in the thresholds file.
    pub fn as_str(self) -> &'static str {
        match self {
            PostfixTier::Off => "off",
            PostfixTier::Encrypt => "encrypt",
            PostfixTier::Verify => "verify",
            PostfixTier::SecureMatchObserved => "secure-match-observed",
        }
    }
}

/// The opt-in Exim tier: `require_tls.list` (`hosts_require_tls`) and, for `verify`,
/// `verify_tls.list` (`tls_verify_hosts`), with historically-valid server IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EximTier {
    /// No entries (the default).
    #[default]
    Off,
    /// TLS required (`hosts_require_tls`), certificate not checked.
    RequireTls,
    /// TLS required and the certificate must verify (`hosts_require_tls` + `tls_verify_hosts`).
    Verify,
}

impl EximTier {
    /// The name in the thresholds file.
    pub fn as_str(self) -> &'static str {
        match self {
            EximTier::Off => "off",
            EximTier::RequireTls => "require-tls",
            EximTier::Verify => "verify",
        }
    }
}

/// The opt-in Sendmail tier: `TLS_Srv:IP ENCR:128` or `TLS_Srv:IP VERIFY` access entries for
/// historically-valid server IPs (temporary errors only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendmailTier {
    /// No entries (the default).
    #[default]
    Off,
    /// `ENCR:128`: TLS with at least 128-bit ciphers required.
    Encrypt,
    /// `VERIFY`: TLS required and the certificate must verify.
    Verify,
}

impl SendmailTier {
    /// The name in the thresholds file.
    pub fn as_str(self) -> &'static str {
        match self {
            SendmailTier::Off => "off",
            SendmailTier::Encrypt => "encrypt",
            SendmailTier::Verify => "verify",
        }
    }
}

/// `[enforcement]`: everything here is opt-in; the default enforces nothing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Enforcement {
    /// `off` (default), `encrypt`, `verify` or `secure-match-observed`.
    pub postfix_tier: PostfixTier,
    /// `off` (default), `require-tls` or `verify`: Exim's `require_tls.list` / `verify_tls.list`.
    pub exim_tier: EximTier,
    /// `off` (default), `encrypt` or `verify`: Sendmail `TLS_Srv:` access entries.
    pub sendmail_tier: SendmailTier,
    /// Domains protected by DANE or MTA-STS: never an enforcement entry for them (their own
    /// resolver decides). `example.com` is that domain only, `.example.com` its subdomains.
    pub protected_domains: Vec<String>,
    /// Drop an enforcement entry after this much persistent failure.
    pub enforce_hold_max: Secs,
    /// `relax` (default) or `hold`.
    pub on_persistent_failure: String,
    /// Never emit enforcement for DANE / MTA-STS protected domains.
    pub skip_policy_protected: bool,
    /// Most new promotions per hour (endpoints that become enforceable; the others wait).
    pub max_promotions_per_hour: u32,
    /// A feed file whose entries change by more than this share is not published.
    pub max_feed_churn_ratio: f64,
}

impl Default for Enforcement {
    fn default() -> Self {
        Enforcement {
            postfix_tier: PostfixTier::Off,
            exim_tier: EximTier::Off,
            sendmail_tier: SendmailTier::Off,
            protected_domains: Vec::new(),
            enforce_hold_max: Secs(24 * 3_600),
            on_persistent_failure: "relax".to_owned(),
            skip_policy_protected: true,
            max_promotions_per_hour: 50,
            max_feed_churn_ratio: 0.10,
        }
    }
}

/// `[scores]`: weights for spam filters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scores {
    /// rspamd symbol score of TLSLEDGER_DOWNGRADE_SUSPECT (times the severity weight).
    pub rspamd_downgrade_symbol_score: f64,
    /// rspamd composite score for plaintext from a sender with a TLS history.
    pub rspamd_plaintext_from_tls_sender: f64,
    /// SpamAssassin score of a high-severity header (TLSLEDGER_DOWNGRADE_HIGH).
    pub spamassassin_high: f64,
    /// SpamAssassin score of a medium-severity header (TLSLEDGER_DOWNGRADE_MEDIUM).
    pub spamassassin_medium: f64,
    /// SpamAssassin score of a low-severity header (TLSLEDGER_DOWNGRADE_LOW).
    pub spamassassin_low: f64,
    /// SpamAssassin score of a sender flagged broken-STARTTLS (informational by default).
    pub spamassassin_broken_starttls: f64,
    /// SpamAssassin score of a historically-valid sender that kept its TLS (informational).
    pub spamassassin_historically_valid: f64,
}

impl Default for Scores {
    fn default() -> Self {
        Scores {
            rspamd_downgrade_symbol_score: 3.0,
            rspamd_plaintext_from_tls_sender: 2.0,
            spamassassin_high: 1.5,
            spamassassin_medium: 1.0,
            spamassassin_low: 0.5,
            spamassassin_broken_starttls: 0.001,
            spamassassin_historically_valid: -0.001,
        }
    }
}

/// `[baseline]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Baseline {
    /// Fewest TLS decisions (not reused, not by local policy) in the lookback.
    pub min_sessions: u32,
    /// Fewest distinct days with a decision in the lookback.
    pub min_distinct_days: u32,
    /// Shortest span between the first and last decision in the lookback.
    pub min_span: Secs,
    /// The window the class is computed over.
    pub lookback: Secs,
    /// The last N decisions must all satisfy the class.
    pub last_n_all_good: u32,
    /// Share of decisions in the lookback that must satisfy the class.
    pub lookback_good_ratio: f64,
    /// historically-valid: no certificate failure for this long.
    pub no_cert_failure_for: Secs,
    /// Promotions need this many observations from trusted sources.
    pub min_trusted_sources: u32,
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            min_sessions: 5,
            min_distinct_days: 3,
            min_span: Secs(7 * 86_400),
            lookback: Secs(30 * 86_400),
            last_n_all_good: 5,
            lookback_good_ratio: 0.95,
            no_cert_failure_for: Secs(14 * 86_400),
            min_trusted_sources: 2,
        }
    }
}

/// `[expiry]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expiry {
    /// No observation for this long: dormant (kept, emits nothing).
    pub dormant_after: Secs,
    /// No observation for this long: deleted.
    pub delete_after: Secs,
    /// `expires` of feed files.
    pub feed_ttl: Secs,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry { dormant_after: Secs(30 * 86_400), delete_after: Secs(90 * 86_400), feed_ttl: Secs(48 * 3_600) }
    }
}

/// `[broken_starttls]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokenStarttlsThresholds {
    /// Handshake failures within `window` that set the flag (1 if no TLS success in the lookback).
    pub failures_to_flag: u32,
    /// The window for `failures_to_flag`.
    pub window: Secs,
    /// hold(n) = hold_base * 2^(n-1): how long the flag stands before TLS is retried.
    pub hold_base: Secs,
    /// Longest hold.
    pub hold_cap: Secs,
    /// Clear the flag at once on a TLS success.
    pub clear_on_tls_success: bool,
    /// Baseline classes that never get the flag (a failure there is a downgrade).
    pub never_if_baseline: Vec<String>,
}

impl Default for BrokenStarttlsThresholds {
    fn default() -> Self {
        BrokenStarttlsThresholds {
            failures_to_flag: 2,
            window: Secs(24 * 3_600),
            hold_base: Secs(3_600),
            hold_cap: Secs(7 * 86_400),
            clear_on_tls_success: true,
            never_if_baseline: vec!["historically-valid".to_owned(), "tls-unverified".to_owned()],
        }
    }
}

/// `[downgrade]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DowngradeThresholds {
    /// Consecutive good observations that clear the flag.
    pub clear_after_good: u32,
    /// The flag decays after this long without recurrence.
    pub decay: Secs,
    /// Bad observations, with no good one between, that demote the baseline ...
    pub persistent_bad: u32,
    /// ... when they span at least this long.
    pub persistent_span: Secs,
    /// Global guard: share of baseline endpoints regressing within the window ...
    pub global_guard_ratio: f64,
    /// ... and at least this many ...
    pub global_guard_min: u32,
    /// ... within this window: a local problem, freeze.
    pub global_guard_window: Secs,
}

impl Default for DowngradeThresholds {
    fn default() -> Self {
        DowngradeThresholds {
            clear_after_good: 3,
            decay: Secs(7 * 86_400),
            persistent_bad: 3,
            persistent_span: Secs(24 * 3_600),
            global_guard_ratio: 0.20,
            global_guard_min: 10,
            global_guard_window: Secs(3_600),
        }
    }
}

/// `[overrides]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    /// Endpoints (IPs) never flagged and never enforced.
    pub always_allow: Vec<String>,
    /// Endpoints (IPs) never put into an enforcement feed.
    pub never_enforce: Vec<String>,
}

impl Thresholds {
    /// Parses a thresholds file; sections and keys left out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self> {
        let thresholds: Thresholds = toml::from_str(text).context("invalid thresholds file")?;
        if !(0.0..=1.0).contains(&thresholds.baseline.lookback_good_ratio)
            || !(0.0..=1.0).contains(&thresholds.downgrade.global_guard_ratio)
            || !(0.0..=1.0).contains(&thresholds.enforcement.max_feed_churn_ratio)
        {
            bail!("ratios in the thresholds file must be between 0 and 1");
        }
        let scores = &thresholds.scores;
        if ![
            scores.rspamd_downgrade_symbol_score,
            scores.rspamd_plaintext_from_tls_sender,
            scores.spamassassin_high,
            scores.spamassassin_medium,
            scores.spamassassin_low,
            scores.spamassassin_broken_starttls,
            scores.spamassassin_historically_valid,
        ]
        .iter()
        .all(|score| score.is_finite())
        {
            bail!("scores in the thresholds file must be finite numbers");
        }
        if crate::feeds::enforcement::any_tier(&thresholds.enforcement) && !thresholds.enforcement.skip_policy_protected
        {
            bail!("enforcement.skip_policy_protected must stay true: DANE and MTA-STS domains are never enforced from history");
        }
        if let Some(bad) = thresholds.enforcement.protected_domains.iter().find(|d| {
            let name = d.strip_prefix('.').unwrap_or(d);
            name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == '[')
        }) {
            bail!("enforcement.protected_domains: {bad:?} is not a domain");
        }
        if !matches!(thresholds.enforcement.on_persistent_failure.as_str(), "relax" | "hold") {
            bail!("enforcement.on_persistent_failure must be \"relax\" or \"hold\"");
        }
        Ok(thresholds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("24h").unwrap(), 86_400);
        assert_eq!(parse_duration("90m").unwrap(), 5_400);
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn the_canonical_file_matches_the_defaults() {
        // research/feed-examples/canonical/thresholds.toml, the sections this engine reads.
        let text = r#"
            [baseline]
            min_sessions        = 5
            min_distinct_days   = 3
            min_span            = "7d"
            lookback            = "30d"
            last_n_all_good     = 5
            lookback_good_ratio = 0.95
            no_cert_failure_for = "14d"
            min_trusted_sources = 2
            [expiry]
            dormant_after  = "30d"
            delete_after   = "90d"
            feed_ttl       = "48h"
            [broken_starttls]
            failures_to_flag   = 2
            window             = "24h"
            hold_base          = "1h"
            hold_cap           = "7d"
            clear_on_tls_success = true
            never_if_baseline  = ["historically-valid", "tls-unverified"]
            [downgrade]
            clear_after_good   = 3
            decay              = "7d"
            persistent_bad     = 3
            persistent_span    = "24h"
            global_guard_ratio = 0.20
            global_guard_min   = 10
            global_guard_window = "1h"
            [enforcement]
            postfix_tier        = "off"
            enforce_hold_max    = "24h"
            on_persistent_failure = "relax"
            skip_policy_protected = true
            max_promotions_per_hour = 50
            max_feed_churn_ratio    = 0.10
            [scores]
            rspamd_downgrade_symbol_score = 3.0
            rspamd_plaintext_from_tls_sender = 2.0
            spamassassin_high = 1.5
            spamassassin_low  = 0.5
        "#;
        assert_eq!(Thresholds::from_toml(text).unwrap(), Thresholds::default());
    }

    #[test]
    fn the_shipped_example_file_is_the_defaults() {
        let text = include_str!("../../examples/thresholds.toml");
        assert_eq!(Thresholds::from_toml(text).unwrap(), Thresholds::default());
    }

    #[test]
    fn partial_files_keep_defaults_and_typos_are_errors() {
        let got = Thresholds::from_toml("[baseline]\nmin_sessions = 2\n").unwrap();
        assert_eq!(got.baseline.min_sessions, 2);
        assert_eq!(got.baseline.min_distinct_days, 3);
        assert!(Thresholds::from_toml("[baseline]\nmin_session = 2\n").is_err());
        assert!(Thresholds::from_toml("[baseline]\nlookback = \"soon\"\n").is_err());
        assert!(Thresholds::from_toml("[downgrade]\nglobal_guard_ratio = 2.0\n").is_err());
        assert!(Thresholds::from_toml("[scores]\nspamassassin_high = nan\n").is_err());
        assert!(Thresholds::from_toml("[enforcement]\npostfix_tier = \"dane-only\"\n").is_err(), "not a tier");
        assert!(Thresholds::from_toml("[enforcement]\npostfix_tier = \"none\"\n").is_err(), "not a tier");
    }

    #[test]
    fn enforcement_tiers_are_opt_in() {
        assert_eq!(Thresholds::default().enforcement.postfix_tier, PostfixTier::Off);
        for (text, tier) in [
            ("encrypt", PostfixTier::Encrypt),
            ("verify", PostfixTier::Verify),
            ("secure-match-observed", PostfixTier::SecureMatchObserved),
        ] {
            let got = Thresholds::from_toml(&format!("[enforcement]\npostfix_tier = \"{text}\"\n")).unwrap();
            assert_eq!(got.enforcement.postfix_tier, tier);
        }
        let got =
            Thresholds::from_toml("[enforcement]\nprotected_domains = [\"example.com\", \".example.org\"]\n").unwrap();
        assert_eq!(got.enforcement.protected_domains, ["example.com", ".example.org"]);
        assert!(Thresholds::from_toml("[enforcement]\nprotected_domains = [\"a b\"]\n").is_err());
        assert!(Thresholds::from_toml("[enforcement]\nprotected_domains = [\".\"]\n").is_err());
        let unprotected = "[enforcement]\npostfix_tier = \"encrypt\"\nskip_policy_protected = false\n";
        assert!(Thresholds::from_toml(unprotected).is_err(), "protected domains are never enforced");
    }
}
