//! `classify(history, thresholds, now)`: the class and flags of one endpoint, a pure function.
//!
//! Classes (FEEDS.md §3.2): `unknown` (not enough history), `never-tls`, `tls-unverified`
//! (TLS every time, not always with a trusted certificate) and `historically-valid` (TLS with a
//! trusted or verified certificate every time, repeatedly, over days, with evidence from
//! trusted sources). Flags:
//!
//! - `downgrade-suspect` (§3.5): the latest observations regress from the endpoint's baseline
//!   class. The baseline is the class of the history *without* the current bad episode, so one
//!   bad observation never demotes a host; a persistent regression (`persistent_bad` bad
//!   observations spanning `persistent_span`, no good one between) does. The flag clears after
//!   `clear_after_good` consecutive good observations, or decays after `decay` without recurrence.
//! - `broken-starttls` (§3.4): handshake failures (`failures_to_flag` within `window`, or one
//!   when the host never did TLS in the lookback) on an endpoint whose baseline is not a TLS
//!   class (there it is a downgrade). Cleared at once by a TLS success, and when the next attempt
//!   is seen (an observation whose STARTTLS our own feed discarded) after the hold
//!   `hold_base * 2^(n-1)` (capped), where n counts earlier flag-and-retry cycles.
//!
//! [`global_guard`] looks across endpoints: many baseline endpoints regressing within an hour is
//! a local problem (a firewall stripping STARTTLS), so flags are suppressed and classes frozen.

use serde::Serialize;

use super::history::{protocol_name, DayStats, HostHistory, Recent};
use super::thresholds::Thresholds;
use crate::observation::{Direction, Outcome, Trust};

/// The class of an endpoint (or a domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Not enough history.
    Unknown,
    /// Never offered or used STARTTLS.
    NeverTls,
    /// TLS every time, not always with a trusted certificate.
    TlsUnverified,
    /// TLS with a trusted or verified certificate every time, over days.
    HistoricallyValid,
}

impl Class {
    /// The name used in feeds and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Unknown => "unknown",
            Class::NeverTls => "never-tls",
            Class::TlsUnverified => "tls-unverified",
            Class::HistoricallyValid => "historically-valid",
        }
    }

    fn is_tls_baseline(self) -> bool {
        matches!(self, Class::TlsUnverified | Class::HistoricallyValid)
    }
}

/// How bad a downgrade looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Weaker protocol or cipher, expired certificate.
    Low,
    /// Handshake failure, certificate not trusted.
    Medium,
    /// Plaintext where TLS was the rule (possible STRIPTLS).
    High,
}

/// The downgrade-suspect flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downgrade {
    /// Worst severity of the current episode.
    pub severity: Severity,
    /// Why, in words.
    pub reason: String,
    /// When the latest bad observation was (Unix seconds).
    pub at: i64,
    /// When the episode's first bad observation was (Unix seconds): how long an opt-in
    /// enforcement entry has been holding mail (`[enforcement] enforce_hold_max`).
    pub since: i64,
    /// Bad observations in the current episode.
    pub bad: u32,
    /// True when the regression is persistent and the class was demoted.
    pub demoted: bool,
}

/// The broken-STARTTLS flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenStarttls {
    /// The latest handshake failure (Unix seconds).
    pub last_failure: i64,
    /// Handshake failures since the last TLS success (in the kept history).
    pub failures: u32,
    /// n: 1 for the first flag, +1 for each earlier retry that failed again.
    pub level: u32,
    /// When TLS is retried: the feed drops the entry once an attempt is seen after this.
    pub retry_after: i64,
}

/// The verdict on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The class to act on (the baseline, unless a persistent regression demoted it).
    pub class: Class,
    /// The class of the history without the current bad episode.
    pub baseline: Class,
    /// The broken-STARTTLS flag.
    pub broken_starttls: Option<BrokenStarttls>,
    /// The downgrade-suspect flag.
    pub downgrade: Option<Downgrade>,
    /// No observation for `dormant_after`: nothing is emitted for it.
    pub dormant: bool,
    /// No observation for `delete_after`: the history can be dropped.
    pub expired: bool,
    /// On the operator's `always_allow` list: never flagged.
    pub allowed: bool,
    /// On the operator's `never_enforce` list.
    pub never_enforce: bool,
    /// Which facts and thresholds decided, in words (for `explain`).
    pub evidence: Vec<String>,
}

/// A decision is good for a baseline when it keeps the baseline's promise.
fn good_for(baseline: Class, direction: Direction, recent: &Recent) -> bool {
    match baseline {
        Class::HistoricallyValid if direction == Direction::Outbound => {
            recent.outcome == Outcome::Tls && matches!(recent.trust, Some(Trust::Verified | Trust::Trusted))
        }
        Class::HistoricallyValid | Class::TlsUnverified => recent.outcome == Outcome::Tls,
        Class::NeverTls | Class::Unknown => true,
    }
}

fn severity(direction: Direction, baseline: Class, recent: &Recent) -> (Severity, String) {
    match recent.outcome {
        Outcome::Plaintext | Outcome::StarttlsNotOffered => {
            (Severity::High, format!("{} where TLS was the rule", recent.outcome.as_str()))
        }
        Outcome::TlsRequiredMissing => (Severity::High, "TLS required but not offered".to_owned()),
        Outcome::HandshakeFailed => (Severity::Medium, "TLS handshake failed".to_owned()),
        Outcome::CertVerifyFailed => (Severity::Medium, "certificate rejected".to_owned()),
        Outcome::Tls if direction == Direction::Outbound && baseline == Class::HistoricallyValid => (
            Severity::Medium,
            format!("certificate {} where it was trusted", recent.trust.map_or("unknown", trust_name)),
        ),
        _ => (Severity::Low, "weaker TLS than the baseline".to_owned()),
    }
}

fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Verified => "verified",
        Trust::Trusted => "trusted",
        Trust::Untrusted => "untrusted",
        Trust::Anonymous => "anonymous",
    }
}

/// The class of `days` (already without excluded observations) and `decisions` (the ordered
/// decisions to judge `last_n` by).
fn class_of(
    direction: Direction,
    days: &[DayStats],
    decisions: &[&Recent],
    thresholds: &Thresholds,
    now: i64,
    evidence: &mut Vec<String>,
) -> Class {
    let baseline = &thresholds.baseline;
    let since_day = (now - baseline.lookback.0).div_euclid(86_400);
    let window: Vec<&DayStats> = days.iter().filter(|d| i64::from(d.day) >= since_day && d.decisions() > 0).collect();
    let mut total = DayStats::default();
    for day in &window {
        for (a, b) in total.by_outcome.iter_mut().zip(day.by_outcome) {
            *a += b;
        }
        for (a, b) in total.by_trust.iter_mut().zip(day.by_trust) {
            *a += b;
        }
        total.trusted_sources += day.trusted_sources;
    }
    let n = total.decisions();
    let span_secs = match (window.first(), window.last()) {
        (Some(first), Some(last)) => i64::from(last.day - first.day) * 86_400,
        _ => 0,
    };
    if n < baseline.min_sessions
        || (window.len() as u32) < baseline.min_distinct_days
        || span_secs < baseline.min_span.0
    {
        evidence.push(format!(
            "{n} decisions on {} days over {} days in the lookback: below min_sessions {}, min_distinct_days {} or min_span {} days",
            window.len(),
            span_secs / 86_400,
            baseline.min_sessions,
            baseline.min_distinct_days,
            baseline.min_span.0 / 86_400
        ));
        return Class::Unknown;
    }
    let [tls, not_offered, plaintext, handshake, cert, required, _] = total.by_outcome;
    if tls == 0 && handshake == 0 && cert == 0 && required == 0 {
        evidence
            .push(format!("{n} decisions, none with TLS ({not_offered} STARTTLS not offered, {plaintext} plaintext)"));
        return Class::NeverTls;
    }
    let last_n: Vec<&&Recent> = decisions.iter().rev().take(baseline.last_n_all_good as usize).collect();
    let ratio = f64::from(tls) / f64::from(n);
    let tls_every_time = last_n.iter().all(|r| r.outcome == Outcome::Tls)
        && ratio >= baseline.lookback_good_ratio
        && not_offered + plaintext == 0;
    if !tls_every_time {
        evidence.push(format!(
            "TLS in {tls} of {n} decisions ({:.0}%), last {} all TLS: {}; plaintext {}",
            ratio * 100.0,
            last_n.len(),
            last_n.iter().all(|r| r.outcome == Outcome::Tls),
            not_offered + plaintext
        ));
        return Class::Unknown;
    }
    if total.trusted_sources < baseline.min_trusted_sources {
        evidence.push(format!(
            "only {} decisions from trusted sources (min_trusted_sources {})",
            total.trusted_sources, baseline.min_trusted_sources
        ));
        return Class::Unknown;
    }
    let valid = total.by_trust[0] + total.by_trust[1];
    let recent_cert_failure_day = (now - baseline.no_cert_failure_for.0).div_euclid(86_400);
    let cert_failures: u32 =
        days.iter().filter(|d| i64::from(d.day) >= recent_cert_failure_day).map(|d| d.cert_failures).sum();
    let valid_every_time = direction == Direction::Outbound
        && last_n.iter().all(|r| matches!(r.trust, Some(Trust::Verified | Trust::Trusted)))
        && f64::from(valid) / f64::from(tls) >= baseline.lookback_good_ratio
        && cert_failures == 0;
    let floor = window.iter().map(|d| d.min_protocol).filter(|p| *p > 0).min().unwrap_or(0);
    if valid_every_time {
        evidence.push(format!(
            "TLS in {tls} of {n} decisions on {} days, certificate trusted or verified in {valid}, no certificate failure for {} days, protocol floor {}",
            window.len(),
            baseline.no_cert_failure_for.0 / 86_400,
            protocol_name(floor)
        ));
        Class::HistoricallyValid
    } else {
        evidence.push(format!(
            "TLS in {tls} of {n} decisions on {} days; certificate trusted or verified in {valid}; certificate failures in the last {} days: {cert_failures}",
            window.len(),
            baseline.no_cert_failure_for.0 / 86_400
        ));
        Class::TlsUnverified
    }
}

/// Classifies one endpoint at time `now` (Unix seconds).
pub fn classify(
    direction: Direction,
    ip: &str,
    history: &HostHistory,
    thresholds: &Thresholds,
    now: i64,
) -> Classification {
    let mut evidence = Vec::new();
    let allowed = thresholds.overrides.always_allow.iter().any(|a| a == ip);
    let never_enforce = thresholds.overrides.never_enforce.iter().any(|a| a == ip);
    let idle = now - history.last_seen;
    let dormant = idle > thresholds.expiry.dormant_after.0;
    let expired = idle > thresholds.expiry.delete_after.0;
    let decisions: Vec<&Recent> = history.recent.iter().filter(|r| r.is_decision()).collect();

    // The baseline: the strictest class that the evidence *before* the first recent bad
    // observation (relative to that class) already earned. Bad observations after it are judged
    // as episodes against that baseline instead of erasing it: one bad observation flags, it does
    // not demote (FEEDS.md §3.3). A history that never earned the class before its bad
    // observations (mixed from the start) has no such baseline.
    let mut baseline = Class::Unknown;
    let mut episode: Vec<&Recent> = Vec::new();
    for candidate in [Class::HistoricallyValid, Class::TlsUnverified] {
        let Some(first_bad) = decisions.iter().find(|r| !good_for(candidate, direction, r)) else { continue };
        let first_bad_day = first_bad.ts.div_euclid(86_400);
        let before_days: Vec<DayStats> =
            history.days.iter().filter(|d| i64::from(d.day) < first_bad_day).cloned().collect();
        let before: Vec<&Recent> = decisions.iter().copied().filter(|r| r.ts < first_bad.ts).collect();
        let mut candidate_evidence = Vec::new();
        if class_of(direction, &before_days, &before, thresholds, now, &mut candidate_evidence) == candidate {
            baseline = candidate;
            episode = current_episode(&decisions, candidate, direction, thresholds.downgrade.clear_after_good);
            evidence.extend(candidate_evidence);
            break;
        }
    }
    let current = class_of(direction, &history.days, &decisions, thresholds, now, &mut Vec::new());
    if baseline == Class::Unknown {
        baseline = class_of(direction, &history.days, &decisions, thresholds, now, &mut evidence);
    }

    let mut class = baseline;
    let mut downgrade = None;
    if baseline.is_tls_baseline() && !episode.is_empty() {
        let last_bad = episode.iter().map(|r| r.ts).max().unwrap_or(0);
        let first_bad = episode.iter().map(|r| r.ts).min().unwrap_or(0);
        let (severity, reason) = episode
            .iter()
            .map(|r| severity(direction, baseline, r))
            .max_by_key(|(severity, _)| *severity)
            .unwrap_or((Severity::Low, String::new()));
        let persistent = episode.len() as u32 >= thresholds.downgrade.persistent_bad
            && last_bad - first_bad >= thresholds.downgrade.persistent_span.0
            && trailing_bad_run(&decisions, baseline, direction) as usize >= episode.len();
        if persistent {
            class = current;
            evidence.push(format!(
                "persistent regression: {} bad observations over {} hours, demoted from {} to {}",
                episode.len(),
                (last_bad - first_bad) / 3_600,
                baseline.as_str(),
                current.as_str()
            ));
        }
        if now - last_bad <= thresholds.downgrade.decay.0 {
            evidence.push(format!("downgrade-suspect ({severity:?}): {reason}"));
            downgrade = Some(Downgrade {
                severity,
                reason,
                at: last_bad,
                since: first_bad,
                bad: episode.len() as u32,
                demoted: persistent,
            });
        } else {
            evidence.push("the last downgrade decayed".to_owned());
        }
    } else if baseline.is_tls_baseline() {
        if let Some((last, earlier)) = decisions.split_last() {
            // The protocol floor of the earlier TLS decisions that are kept.
            let floor =
                earlier.iter().filter(|r| r.outcome == Outcome::Tls && r.protocol > 0).map(|r| r.protocol).min();
            if let Some(floor) = floor {
                if last.outcome == Outcome::Tls && last.protocol > 0 && last.protocol < floor {
                    let reason = format!("{} below the floor {}", protocol_name(last.protocol), protocol_name(floor));
                    evidence.push(format!("downgrade-suspect (Low): {reason}"));
                    downgrade = Some(Downgrade {
                        severity: Severity::Low,
                        reason,
                        at: last.ts,
                        since: last.ts,
                        bad: 1,
                        demoted: false,
                    });
                }
            }
        }
    }

    let broken_starttls = if baseline.is_tls_baseline()
        && thresholds.broken_starttls.never_if_baseline.iter().any(|c| c == baseline.as_str())
    {
        None
    } else {
        broken_starttls(history, thresholds, now, &mut evidence)
    };

    let (broken_starttls, downgrade) = if allowed || dormant {
        if allowed {
            evidence.push("on the always_allow list: no flags".to_owned());
        }
        if dormant {
            evidence.push(format!("dormant: nothing seen for {} days", idle / 86_400));
        }
        (None, None)
    } else {
        (broken_starttls, downgrade)
    };
    Classification { class, baseline, broken_starttls, downgrade, dormant, expired, allowed, never_enforce, evidence }
}

/// The bad observations of the current episode against `baseline`: every bad decision after the
/// last run of `clear_after_good` consecutive good ones.
fn current_episode<'a>(
    decisions: &[&'a Recent],
    baseline: Class,
    direction: Direction,
    clear_after_good: u32,
) -> Vec<&'a Recent> {
    let mut episode = Vec::new();
    let mut goods_in_a_row = 0;
    for recent in decisions.iter().rev() {
        if good_for(baseline, direction, recent) {
            goods_in_a_row += 1;
            if goods_in_a_row >= clear_after_good {
                break;
            }
        } else {
            goods_in_a_row = 0;
            episode.push(*recent);
        }
    }
    episode.reverse();
    // Good observations after the last bad one do not clear it until there are enough of them,
    // but bad ones that came before a full good run belong to an older, cleared episode.
    episode
}

/// Consecutive bad decisions at the end.
fn trailing_bad_run(decisions: &[&Recent], baseline: Class, direction: Direction) -> u32 {
    decisions.iter().rev().take_while(|r| !good_for(baseline, direction, r)).count() as u32
}

fn broken_starttls(
    history: &HostHistory,
    thresholds: &Thresholds,
    now: i64,
    evidence: &mut Vec<String>,
) -> Option<BrokenStarttls> {
    let rules = &thresholds.broken_starttls;
    let recent = &history.recent;
    let last_tls = recent.iter().filter(|r| r.outcome == Outcome::Tls).map(|r| r.ts).max();
    let failures: Vec<&Recent> = recent
        .iter()
        .filter(|r| {
            r.outcome == Outcome::HandshakeFailed && last_tls.is_none_or(|t| r.ts > t || !rules.clear_on_tls_success)
        })
        .collect();
    let last_failure = failures.last()?;
    let lookback_day = (now - thresholds.baseline.lookback.0).div_euclid(86_400);
    let tls_in_lookback = history.totals_since(lookback_day.max(0) as u32).by_outcome[0] > 0;
    let needed = if tls_in_lookback { rules.failures_to_flag } else { 1 };
    let in_window = failures.iter().filter(|r| last_failure.ts - r.ts <= rules.window.0).count() as u32;
    if in_window < needed.max(1) {
        return None;
    }
    // n: earlier cycles of "retried (our discard seen) and failed again".
    let mut level = 1;
    let mut retried = false;
    for r in recent.iter().filter(|r| r.ts <= last_failure.ts) {
        if r.local_policy {
            retried = true;
        } else if retried && r.outcome == Outcome::HandshakeFailed {
            level += 1;
            retried = false;
        }
    }
    let hold = rules.hold_base.0.saturating_mul(1_i64 << (level - 1).min(30)).min(rules.hold_cap.0);
    let retry_after = last_failure.ts + hold;
    let attempt_after_hold = recent.iter().any(|r| r.local_policy && r.ts >= retry_after);
    if attempt_after_hold {
        evidence.push("broken-starttls cleared: the next attempt was seen after the hold, TLS is retried".to_owned());
        return None;
    }
    evidence.push(format!(
        "broken-starttls: {in_window} handshake failure(s) within {} hours (needed {needed}), level {level}, hold {} hours",
        rules.window.0 / 3_600,
        hold / 3_600
    ));
    Some(BrokenStarttls { last_failure: last_failure.ts, failures: failures.len() as u32, level, retry_after })
}

/// A trip of the global anomaly guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardTrip {
    /// Baseline endpoints that regressed within the window.
    pub regressed: u32,
    /// Baseline endpoints.
    pub baseline: u32,
}

/// Many baseline endpoints regressing at once is a local problem (an SMTP-inspecting firewall,
/// our own configuration), not many remote hosts going bad: returns the trip when at least
/// `global_guard_min` and `global_guard_ratio` of the baseline endpoints got a downgrade within
/// `global_guard_window` before `now`.
pub fn global_guard(classifications: &[&Classification], thresholds: &Thresholds, now: i64) -> Option<GuardTrip> {
    let rules = &thresholds.downgrade;
    let baseline = classifications.iter().filter(|c| c.baseline.is_tls_baseline()).count() as u32;
    let regressed = classifications
        .iter()
        .filter(|c| c.baseline.is_tls_baseline())
        .filter(|c| c.downgrade.as_ref().is_some_and(|d| now - d.at <= rules.global_guard_window.0))
        .count() as u32;
    (baseline > 0
        && regressed >= rules.global_guard_min
        && f64::from(regressed) / f64::from(baseline) >= rules.global_guard_ratio)
        .then_some(GuardTrip { regressed, baseline })
}

/// While the guard is tripped: no flags, and classes stay at their baseline (frozen).
pub fn apply_guard(classification: &mut Classification, trip: &GuardTrip) {
    classification.downgrade = None;
    classification.broken_starttls = None;
    classification.class = classification.baseline;
    classification.evidence.push(format!(
        "global guard: {} of {} baseline endpoints regressed at once; flags suppressed, classes frozen",
        trip.regressed, trip.baseline
    ));
}

/// A domain is historically-valid only if every MX endpoint seen for it recently is; otherwise
/// the weakest of its endpoints' classes.
pub fn domain_class(endpoint_classes: &[Class]) -> Class {
    endpoint_classes.iter().copied().min().unwrap_or(Class::Unknown)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::observation::{Failure, Mta, Observation, PeerInfo, Source, TlsInfo};

    const DAY: i64 = 86_400;
    const HOUR: i64 = 3_600;
    /// The injected clock: every test speaks in seconds after this.
    const T0: i64 = 1_790_000_000;

    #[derive(Clone, Copy)]
    enum Kind {
        Valid,
        Verified,
        Untrusted,
        Anonymous,
        Plain,
        NotOffered,
        Handshake,
        CertRejected,
        Discarded,
        Old,
    }

    fn observation(at: i64, kind: Kind, id: usize) -> Observation {
        let tls = |trust: Trust, protocol: &str| {
            Some(TlsInfo {
                trust: Some(trust),
                protocol: Some(protocol.to_owned()),
                bits: Some(256),
                ..TlsInfo::default()
            })
        };
        let (outcome, tls, failure, local_policy) = match kind {
            Kind::Valid => (Outcome::Tls, tls(Trust::Trusted, "TLSv1.3"), None, None),
            Kind::Verified => (Outcome::Tls, tls(Trust::Verified, "TLSv1.3"), None, None),
            Kind::Untrusted => (Outcome::Tls, tls(Trust::Untrusted, "TLSv1.3"), None, None),
            Kind::Anonymous => (Outcome::Tls, tls(Trust::Anonymous, "TLSv1.3"), None, None),
            Kind::Old => (Outcome::Tls, tls(Trust::Trusted, "TLSv1"), None, None),
            Kind::Plain => (Outcome::Plaintext, None, None, None),
            Kind::NotOffered => (Outcome::StarttlsNotOffered, None, None, None),
            Kind::Handshake => (
                Outcome::HandshakeFailed,
                None,
                Some(Failure { kind: "validation-failure".into(), reason: "SSL_connect error: -1".into() }),
                None,
            ),
            Kind::CertRejected => (
                Outcome::CertVerifyFailed,
                tls(Trust::Untrusted, "TLSv1.3"),
                Some(Failure { kind: "certificate-not-trusted".into(), reason: "not verified".into() }),
                None,
            ),
            Kind::Discarded => (Outcome::Plaintext, None, None, Some("starttls-discarded".to_owned())),
        };
        let ts = chrono::DateTime::from_timestamp(at, 0).unwrap();
        Observation {
            ts,
            end_ts: ts,
            mta: Mta::Postfix,
            reporter: Arc::from("mx"),
            instance: Arc::from("postfix"),
            direction: Direction::Outbound,
            peer: PeerInfo { hostname: Some("mx.example.net".into()), ip: Some("192.0.2.1".into()), port: Some(25) },
            domains: vec!["example.net".into()],
            queue_ids: Vec::new(),
            outcome,
            tls,
            failure,
            delivered: Some(true),
            tls_feature: None,
            conn_use: None,
            local_policy,
            after_tls_failure: false,
            replayed: false,
            source: Arc::new(Source { kind: "file".into(), name: "t".into(), trust: "local".into() }),
            lines: 2,
            event_id: format!("{id:016x}"),
        }
    }

    /// A history from (seconds after T0, kind) steps, all from trusted sources unless said.
    fn history(steps: &[(i64, Kind)], trusted: bool) -> HostHistory {
        let mut history = HostHistory::default();
        for (idx, (at, kind)) in steps.iter().enumerate() {
            history.observe(&observation(T0 + at, *kind, idx), trusted);
        }
        history
    }

    /// Ten days of daily trusted TLS: a historically-valid baseline.
    fn valid_baseline() -> Vec<(i64, Kind)> {
        (0..10).map(|day| (day * DAY, Kind::Valid)).collect()
    }

    fn run(steps: &[(i64, Kind)], now: i64) -> Classification {
        classify(Direction::Outbound, "192.0.2.1", &history(steps, true), &Thresholds::default(), T0 + now)
    }

    #[test]
    fn classes() {
        let days = |kind: Kind, n: i64| -> Vec<(i64, Kind)> { (0..n).map(|d| (d * DAY, kind)).collect() };
        type Case = (&'static str, Vec<(i64, Kind)>, Class);
        let cases: Vec<Case> = vec![
            ("too few sessions", days(Kind::Valid, 4), Class::Unknown),
            ("span under a week", (0..10).map(|i| (i * HOUR * 12, Kind::Valid)).collect(), Class::Unknown),
            ("trusted every day", days(Kind::Valid, 10), Class::HistoricallyValid),
            ("verified every day", days(Kind::Verified, 10), Class::HistoricallyValid),
            ("untrusted every day", days(Kind::Untrusted, 10), Class::TlsUnverified),
            ("plaintext every day", days(Kind::Plain, 10), Class::NeverTls),
            ("STARTTLS never offered", days(Kind::NotOffered, 10), Class::NeverTls),
            (
                "mixed TLS and plaintext",
                (0..10).map(|d| (d * DAY, if d % 2 == 0 { Kind::Valid } else { Kind::Plain })).collect(),
                Class::Unknown,
            ),
        ];
        for (name, steps, want) in cases {
            let got = run(&steps, 10 * DAY);
            assert_eq!(got.class, want, "{name}: {:#?}", got.evidence);
            assert_eq!(got.downgrade, None, "{name}");
        }
    }

    #[test]
    fn inbound_anonymous_tls_is_never_historically_valid() {
        let steps: Vec<(i64, Kind)> = (0..10).map(|d| (d * DAY, Kind::Anonymous)).collect();
        let got =
            classify(Direction::Inbound, "192.0.2.1", &history(&steps, true), &Thresholds::default(), T0 + 10 * DAY);
        assert_eq!(got.class, Class::TlsUnverified);
    }

    #[test]
    fn untrusted_sources_cannot_promote() {
        let got = classify(
            Direction::Outbound,
            "192.0.2.1",
            &history(&valid_baseline(), false),
            &Thresholds::default(),
            T0 + 10 * DAY,
        );
        assert_eq!(got.class, Class::Unknown, "{:#?}", got.evidence);
    }

    #[test]
    fn one_bad_observation_flags_and_keeps_the_baseline() {
        let cases = [
            (Kind::Plain, Severity::High),
            (Kind::NotOffered, Severity::High),
            (Kind::Handshake, Severity::Medium),
            (Kind::CertRejected, Severity::Medium),
            (Kind::Untrusted, Severity::Medium),
        ];
        for (kind, want) in cases {
            let mut steps = valid_baseline();
            steps.push((10 * DAY, kind));
            let got = run(&steps, 10 * DAY + HOUR);
            assert_eq!(got.class, Class::HistoricallyValid, "{:#?}", got.evidence);
            let downgrade = got.downgrade.unwrap_or_else(|| panic!("no downgrade: {:#?}", got.evidence));
            assert_eq!((downgrade.severity, downgrade.demoted), (want, false));
            assert_eq!(got.broken_starttls, None, "a TLS baseline gets a downgrade, never broken-starttls");
        }
    }

    #[test]
    fn weaker_protocol_is_a_low_downgrade() {
        let mut steps = valid_baseline();
        steps.push((10 * DAY, Kind::Old));
        let got = run(&steps, 10 * DAY + HOUR);
        assert_eq!(got.downgrade.map(|d| d.severity), Some(Severity::Low));
    }

    #[test]
    fn three_good_observations_clear_the_flag_and_it_decays() {
        let mut steps = valid_baseline();
        steps.push((10 * DAY, Kind::Plain));
        steps.push((10 * DAY + HOUR, Kind::Valid));
        steps.push((10 * DAY + 2 * HOUR, Kind::Valid));
        assert!(run(&steps, 10 * DAY + 3 * HOUR).downgrade.is_some(), "two good are not enough");
        steps.push((10 * DAY + 3 * HOUR, Kind::Valid));
        let cleared = run(&steps, 10 * DAY + 4 * HOUR);
        assert_eq!((cleared.class, cleared.downgrade), (Class::HistoricallyValid, None));

        let mut steps = valid_baseline();
        steps.push((10 * DAY, Kind::Plain));
        assert!(run(&steps, 16 * DAY).downgrade.is_some());
        assert!(run(&steps, 18 * DAY).downgrade.is_none(), "decays after 7 days");
    }

    #[test]
    fn persistent_regression_demotes() {
        let mut steps = valid_baseline();
        for hours in [0, 12, 25] {
            steps.push((10 * DAY + hours * HOUR, Kind::Plain));
        }
        let got = run(&steps, 11 * DAY + 2 * HOUR);
        let downgrade = got.downgrade.expect("flagged");
        assert!(downgrade.demoted, "{:#?}", got.evidence);
        assert_eq!(got.baseline, Class::HistoricallyValid);
        assert_ne!(got.class, Class::HistoricallyValid);
    }

    #[test]
    fn a_burst_of_forged_failures_cannot_demote() {
        let mut history = history(&valid_baseline(), true);
        for idx in 0..10 {
            history.observe(&observation(T0 + 10 * DAY + idx * 60, Kind::Handshake, 100 + idx as usize), false);
        }
        let got = classify(Direction::Outbound, "192.0.2.1", &history, &Thresholds::default(), T0 + 10 * DAY + HOUR);
        assert_eq!(got.class, Class::HistoricallyValid, "a burst within an hour is not persistent");
        assert!(!got.downgrade.as_ref().unwrap().demoted);
        assert_eq!(got.broken_starttls, None);
    }

    #[test]
    fn broken_starttls_lifecycle() {
        // No TLS history: one failure flags.
        let got = run(&[(0, Kind::Handshake)], HOUR / 2);
        let flag = got.broken_starttls.expect("flagged");
        assert_eq!((flag.level, flag.retry_after), (1, T0 + HOUR));
        // A TLS success clears at once.
        assert!(run(&[(0, Kind::Handshake), (600, Kind::Untrusted)], HOUR).broken_starttls.is_none());
        // The next attempt through our discard before the hold keeps it; after the hold clears it.
        assert!(run(&[(0, Kind::Handshake), (1_800, Kind::Discarded)], HOUR).broken_starttls.is_some());
        assert!(run(&[(0, Kind::Handshake), (2 * HOUR, Kind::Discarded)], 2 * HOUR).broken_starttls.is_none());
        // Failing again after the retry doubles the hold.
        let again = run(&[(0, Kind::Handshake), (2 * HOUR, Kind::Discarded), (3 * HOUR, Kind::Handshake)], 3 * HOUR);
        let flag = again.broken_starttls.expect("flagged again");
        assert_eq!((flag.level, flag.retry_after), (2, T0 + 5 * HOUR));
    }

    #[test]
    fn broken_starttls_needs_two_failures_when_tls_worked_before() {
        let base = [(0, Kind::Untrusted), (DAY, Kind::Plain)];
        let mut one = base.to_vec();
        one.push((2 * DAY, Kind::Handshake));
        assert!(run(&one, 2 * DAY + 60).broken_starttls.is_none());
        one.push((2 * DAY + HOUR, Kind::Handshake));
        assert!(run(&one, 2 * DAY + 2 * HOUR).broken_starttls.is_some());
    }

    #[test]
    fn dormant_and_allowed_endpoints_get_no_flags() {
        let mut steps = valid_baseline();
        steps.push((10 * DAY, Kind::Plain));
        let dormant = run(&steps, 41 * DAY);
        assert!(dormant.dormant && dormant.downgrade.is_none());
        let mut thresholds = Thresholds::default();
        thresholds.overrides.always_allow.push("192.0.2.1".into());
        let allowed =
            classify(Direction::Outbound, "192.0.2.1", &history(&steps, true), &thresholds, T0 + 10 * DAY + 60);
        assert!(allowed.allowed && allowed.downgrade.is_none());
    }

    #[test]
    fn global_guard_freezes_mass_regressions() {
        let mut steps = valid_baseline();
        steps.push((10 * DAY, Kind::Plain));
        let regressed = run(&steps, 10 * DAY + 600);
        let fine = run(&valid_baseline(), 10 * DAY + 600);
        let mut fleet: Vec<Classification> = std::iter::repeat_n(regressed.clone(), 12).collect();
        fleet.extend(std::iter::repeat_n(fine.clone(), 20));
        let refs: Vec<&Classification> = fleet.iter().collect();
        let trip = global_guard(&refs, &Thresholds::default(), T0 + 10 * DAY + 600).expect("12 of 32 regressed");
        let mut frozen = regressed.clone();
        apply_guard(&mut frozen, &trip);
        assert_eq!((frozen.class, frozen.downgrade), (Class::HistoricallyValid, None));
        // A few regressions are per-host signals.
        let few: Vec<&Classification> = fleet[8..].iter().collect();
        assert_eq!(global_guard(&few, &Thresholds::default(), T0 + 10 * DAY + 600), None);
    }

    #[test]
    fn domains_are_as_good_as_their_weakest_mx() {
        assert_eq!(domain_class(&[Class::HistoricallyValid, Class::HistoricallyValid]), Class::HistoricallyValid);
        assert_eq!(domain_class(&[Class::HistoricallyValid, Class::TlsUnverified]), Class::TlsUnverified);
        assert_eq!(domain_class(&[Class::HistoricallyValid, Class::Unknown]), Class::Unknown);
        assert_eq!(domain_class(&[]), Class::Unknown);
    }

    /// xorshift64*, so the property tests reproduce.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random_steps(state: &mut u64, n: usize) -> Vec<(i64, Kind)> {
        let kinds = [
            Kind::Valid,
            Kind::Verified,
            Kind::Untrusted,
            Kind::Plain,
            Kind::Handshake,
            Kind::CertRejected,
            Kind::Discarded,
            Kind::Old,
        ];
        let mut at = 0;
        (0..n)
            .map(|_| {
                at += (rng(state) % (2 * DAY as u64)) as i64;
                (at, kinds[(rng(state) % kinds.len() as u64) as usize])
            })
            .collect()
    }

    #[test]
    fn merging_partial_histories_is_associative_and_order_free() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let steps = random_steps(&mut state, 40);
            let whole = history(&steps, true);
            let cut1 = (rng(&mut state) % 40) as usize;
            let cut2 = cut1 + (rng(&mut state) % (40 - cut1 as u64 + 1)) as usize;
            let part = |range: std::ops::Range<usize>| {
                let mut h = HostHistory::default();
                for idx in range {
                    h.observe(&observation(T0 + steps[idx].0, steps[idx].1, idx), true);
                }
                h
            };
            let (a, b, c) = (part(0..cut1), part(cut1..cut2), part(cut2..40));
            let mut left = a.clone();
            left.merge(&b);
            left.merge(&c);
            let mut right_tail = b.clone();
            right_tail.merge(&c);
            let mut right = a.clone();
            right.merge(&right_tail);
            let mut reversed = c.clone();
            reversed.merge(&b);
            reversed.merge(&a);
            assert_eq!(left, right, "associative");
            assert_eq!(left, reversed, "commutative");
            assert_eq!(left, whole, "same as observing in order");
        }
    }

    #[test]
    fn good_evidence_never_creates_a_downgrade() {
        let mut state = 0x1234_5678_9abc_def1;
        for _ in 0..300 {
            let mut steps = random_steps(&mut state, 20);
            let now = steps.last().map_or(0, |s| s.0) + HOUR;
            let before = run(&steps, now);
            steps.push((now, Kind::Valid));
            let after = run(&steps, now + 60);
            if before.downgrade.is_none() {
                assert!(after.downgrade.is_none(), "a good observation created a downgrade: {:#?}", after.evidence);
            }
            assert!(after.broken_starttls.is_none(), "a TLS success clears broken-starttls");
        }
    }
}
