//! Exim: golden conformance over the public Exim corpora (tests/data/corpus, provenance in its
//! SOURCES.md) with a count per line class that must add up to every line, and syslog framing
//! with split lines. The real Exim lab (two private daemons on loopback) is in `exim_lab`.

use serde_json::Value;

use crate::common::{corpus, stat, tlsledger};
use crate::corpus::golden;

/// Checks that every line of `file` is explained: our `#` comments and blank lines are the only
/// unparsed headers, no message is malformed, and every other line is in the `lines` of an
/// observation or counted as ignored, local, other program or orphan.
fn all_lines_explained(file: &str, observations: &[Value], stats: &[u8]) {
    let text = std::fs::read_to_string(corpus(file)).unwrap();
    let n_lines = text.lines().count() as u64;
    let n_comments = text.lines().filter(|l| l.starts_with('#') || l.trim().is_empty()).count() as u64;
    assert_eq!(stat(stats, "lines"), n_lines, "{file}");
    assert_eq!(stat(stats, "malformed message"), 0, "{file}");
    let in_observations: u64 = observations.iter().map(|o| o["lines"].as_u64().unwrap()).sum();
    let classes = [
        ("unparsed header", stat(stats, "unparsed header")),
        ("other programs", stat(stats, "other programs")),
        ("ignored (not TLS-relevant)", stat(stats, "ignored (not TLS-relevant)")),
        ("local deliveries", stat(stats, "local deliveries")),
        ("tlsproxy duplicates", stat(stats, "tlsproxy duplicates")),
        ("orphans", stat(stats, "orphans")),
        ("in observations", in_observations),
    ];
    let total: u64 = classes.iter().map(|(_, n)| n).sum();
    assert_eq!(total, n_lines, "{file}: line classes {classes:?} do not add up to {n_lines} lines");
    // Only our provenance comments (and a few upstream lines with no framing at all) are not
    // framed; for the test-suite files, exactly the comments.
    assert!(stat(stats, "unparsed header") >= n_comments, "{file}");
    for observation in observations {
        assert_eq!(observation["mta"], "exim", "{file}: {observation}");
    }
}

fn find<'a>(observations: &'a [Value], pred: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    observations.iter().filter(|o| pred(o)).collect()
}

#[test]
fn corpus_exim_testsuite_tls() {
    let file = "exim-testsuite-tls.log";
    let (got, stats) = golden("exim-testsuite-tls", &[&format!("tests/data/corpus/{file}")], b"");
    all_lines_explained(file, &got, &stats);
    let text = std::fs::read_to_string(corpus(file)).unwrap();
    let n_comments = text.lines().filter(|l| l.starts_with('#')).count() as u64;
    // One upstream line has no timestamp (a continuation of a multi-line message).
    assert!(stat(&stats, "unparsed header") <= n_comments + 1);
    assert_eq!(stat(&stats, "orphans"), 0);
    // Every class the suite exercises is there.
    for (direction, outcome, trust) in [
        ("outbound", "tls", Some("verified")),
        ("outbound", "tls", Some("trusted")),
        ("outbound", "tls", Some("untrusted")),
        ("inbound", "tls", Some("anonymous")),
        ("inbound", "tls", Some("trusted")),
        ("inbound", "handshake-failed", None),
        ("outbound", "handshake-failed", None),
        ("outbound", "cert-verify-failed", None),
        ("outbound", "tls-required-missing", None),
    ] {
        let hits = find(&got, |o| {
            o["direction"] == direction
                && o["outcome"] == outcome
                && trust.is_none_or(|t| o["tls"]["trust"] == t)
        });
        assert!(!hits.is_empty(), "no {direction} {outcome} {trust:?}");
    }
    // `X=TLS1.x:…` is normalised to the OpenSSL spelling; the suite's `xxx` bits are unknown.
    let tls = find(&got, |o| o["outcome"] == "tls" && o["tls"]["protocol"].is_string());
    assert!(tls.iter().all(|o| o["tls"]["protocol"] == "TLSv1.x"));
    for o in &tls {
        let normalised = o["tls"]["cipher"].as_str().unwrap().ends_with("nnn");
        assert_eq!(o["tls"]["bits"].is_null(), normalised, "{o}");
    }
    // `P=esmtps` without `X=` is TLS with unknown parameters.
    assert!(got.iter().any(|o| o["outcome"] == "tls" && o["tls"]["protocol"].is_null()));
    // `defer (-38) … did not offer TLS support` is a missing STARTTLS under a TLS requirement.
    let required = find(&got, |o| o["outcome"] == "tls-required-missing");
    assert!(required.iter().any(|o| o["failure"]["kind"] == "starttls-not-supported"), "{required:#?}");
    // A DANE failure joins the deferral of the same attempt.
    let dane = find(&got, |o| o["failure"]["kind"] == "tlsa-invalid");
    assert!(dane.iter().all(|o| o["lines"].as_u64() >= Some(2)), "{dane:#?}");
    // The plaintext retry after `delivering unencrypted` is not in this file (no TLS fields).
    assert!(got.iter().all(|o| o["after_tls_failure"] == false));
}

#[test]
fn corpus_exim_testsuite_delivery() {
    let file = "exim-testsuite-delivery.log";
    let (got, stats) = golden("exim-testsuite-delivery", &[&format!("tests/data/corpus/{file}")], b"");
    all_lines_explained(file, &got, &stats);
    // No line of this file carries TLS, and with `--tls-logging auto` an instance that never
    // logged `X=` cannot prove outbound plaintext; `P=esmtp` proves inbound plaintext.
    assert_eq!(stat(&stats, "tls"), 0);
    assert!(find(&got, |o| o["direction"] == "outbound").iter().all(|o| o["outcome"] == "unknown"));
    let inbound = find(&got, |o| o["direction"] == "inbound");
    assert!(inbound.iter().all(|o| o["outcome"] == "plaintext"), "{inbound:#?}");
    assert!(inbound.len() > 100);
    // Told that TLS logging is on, the delivered ones become plaintext.
    let output = tlsledger(
        &[
            "parse",
            "--reference-time",
            "2026-11-30T00:00:00Z",
            "--log-zone",
            "utc",
            "--tls-logging",
            "on",
            &format!("tests/data/corpus/{file}"),
        ],
        b"",
    );
    let on = crate::common::observations(&output.stdout);
    let delivered_out = find(&on, |o| o["direction"] == "outbound" && o["delivered"] == true);
    assert!(!delivered_out.is_empty());
    assert!(delivered_out.iter().all(|o| o["outcome"] == "plaintext"));
    // A deferral before the session got going (`Connection refused`, `SMTP timeout after initial
    // connection`) stays unknown even then.
    let timeouts = find(&on, |o| o["direction"] == "outbound" && o["delivered"] == false);
    assert!(timeouts.iter().any(|o| o["outcome"] == "unknown"));
}

#[test]
fn corpus_exim_real_world() {
    for (case, file) in [
        ("fail2ban-exim", "fail2ban-exim.log"),
        ("fail2ban-exim-spam", "fail2ban-exim-spam.log"),
        ("logstash-patterns-core-exim", "logstash-patterns-core-exim.log"),
    ] {
        let (got, stats) = golden(case, &[&format!("tests/data/corpus/{file}")], b"");
        all_lines_explained(file, &got, &stats);
        if case == "logstash-patterns-core-exim" {
            // Exim ≤ 4.92 wrote `X=TLSv1:AES256-SHA:256 CV=no`.
            let old = find(&got, |o| o["peer"]["ip"] == "208.42.54.2");
            assert_eq!(old.len(), 1);
            assert_eq!(old[0]["direction"], "inbound");
            assert_eq!(old[0]["outcome"], "tls");
            assert_eq!(old[0]["tls"]["protocol"], "TLSv1");
            assert_eq!(old[0]["tls"]["cipher"], "AES256-SHA");
            assert_eq!(old[0]["tls"]["bits"], 256);
            assert_eq!(old[0]["tls"]["trust"], "untrusted");
            assert_eq!(old[0]["peer"]["port"], 51792);
            assert_eq!(old[0]["queue_ids"][0], "1Ov4tU-0000Nz-Rm");
            // `P=esmtpa` without `X=`: authenticated, in plaintext.
            let plain = find(&got, |o| o["outcome"] == "plaintext");
            assert_eq!(plain.len(), 2, "{plain:#?}");
        }
    }
}

/// Exim through syslog: the repeated Exim timestamp, `[1/2]` pieces rejoined into one line,
/// IPv6, the 4.100 key-exchange group and a resumed session, the new message-id length.
#[test]
fn syslog_framing_and_split_lines() {
    let input = "\
Nov  3 13:35:12 mx1 exim[12345]: [1/2] 2024-11-03 13:35:12 1tAbCd-000000003Xy-Zq1w => bob@example.net R=dnslookup T=remote_smtp H=mx.exa
Nov  3 13:35:12 mx1 exim[777]: 2024-11-03 13:35:12 1tAbCe-000000003Xy-Zq1w <= alice@example.org H=mail.example.org (helo.example.org) [2001:db8::25]:40000 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256:X25519* SNI=mx1.example.net S=1234
Nov  3 13:35:13 mx1 exim[12345]: [2/2] mple.net [192.0.2.25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane C=\"250 2.0.0 Ok\"
Nov  3 13:35:14 mx1 exim4[12346]: 2024-11-03 13:35:14 1tAbCf-000000003Xy-Zq1w => carol@example.com R=dnslookup T=remote_smtp H=mx.example.com [192.0.2.26] C=\"250 ok\"
";
    let output = tlsledger(
        &["parse", "--stats", "--reference-time", "2024-11-30T00:00:00Z", "--log-zone", "utc", "--tls-logging", "on", "-"],
        input.as_bytes(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let got = crate::common::observations(&output.stdout);
    assert_eq!(got.len(), 3, "{got:#?}");
    let joined = find(&got, |o| o["peer"]["ip"] == "192.0.2.25");
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["lines"], 2);
    assert_eq!(joined[0]["peer"]["hostname"], "mx.example.net");
    assert_eq!(joined[0]["peer"]["port"], 25);
    assert_eq!(joined[0]["tls"]["trust"], "verified");
    assert_eq!(joined[0]["domains"][0], "example.net");
    assert_eq!(joined[0]["reporter"], "mx1");
    assert_eq!(joined[0]["instance"], "exim");
    let inbound = find(&got, |o| o["direction"] == "inbound");
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["peer"]["ip"], "2001:db8::25");
    assert_eq!(inbound[0]["tls"]["key_exchange"], "X25519");
    assert_eq!(inbound[0]["tls"]["sni"], "mx1.example.net");
    assert_eq!(inbound[0]["tls"]["trust"], "anonymous");
    let plain = find(&got, |o| o["peer"]["ip"] == "192.0.2.26");
    assert_eq!(plain[0]["outcome"], "plaintext");
    assert_eq!(plain[0]["instance"], "exim4");
    assert_eq!(stat(&output.stderr, "orphans"), 0);
}

/// The same line gets the same event id on every run, and different lines different ones.
#[test]
fn event_ids_are_stable() {
    let args = ["parse", "--reference-time", "2026-11-30T00:00:00Z", "--log-zone", "utc", "tests/data/corpus/exim-testsuite-tls.log"];
    let first = crate::common::observations(&tlsledger(&args, b"").stdout);
    let second = crate::common::observations(&tlsledger(&args, b"").stdout);
    let ids = |o: &[Value]| o.iter().map(|o| o["event_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second));
    let mut unique = ids(&first);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "duplicate event ids");
}
