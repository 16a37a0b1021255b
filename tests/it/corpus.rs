//! Golden conformance tests over the public Postfix corpora in tests/data/corpus (see
//! tests/data/corpus/SOURCES.md for provenance and licences).
//!
//! Each case runs the real binary and compares stdout (Observation JSON lines) and the
//! `--stats` report with tests/data/golden/<case>.{jsonl,stats}. After an intended change,
//! regenerate with `UPDATE_GOLDEN=1 cargo test --test it corpus` and review the diff.
//! Besides the golden files, each case asserts facts that do not depend on them.

use serde_json::Value;

use crate::common::{corpus, corpus_lines, observations, repo, stat, tlsledger};

/// Fixed clock and zone so the output does not depend on the machine.
const ARGS: &[&str] = &["parse", "--stats", "--reference-time", "2026-11-30T00:00:00Z", "--log-zone", "utc"];

/// Runs one case and checks it against its golden files; returns (observations, stderr).
pub(crate) fn golden(case: &str, extra_args: &[&str], stdin: &[u8]) -> (Vec<Value>, Vec<u8>) {
    let args: Vec<&str> = ARGS.iter().chain(extra_args).copied().collect();
    let output = tlsledger(&args, stdin);
    assert!(output.status.success(), "{case}: {}", String::from_utf8_lossy(&output.stderr));
    let dir = repo().join("tests/data/golden");
    let jsonl = dir.join(format!("{case}.jsonl"));
    let stats = dir.join(format!("{case}.stats"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&jsonl, &output.stdout).unwrap();
        std::fs::write(&stats, &output.stderr).unwrap();
    }
    let want_jsonl =
        std::fs::read(&jsonl).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", jsonl.display()));
    let want_stats =
        std::fs::read(&stats).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", stats.display()));
    if output.stdout != want_jsonl {
        let got = String::from_utf8_lossy(&output.stdout);
        let want = String::from_utf8_lossy(&want_jsonl);
        let first_diff = got.lines().zip(want.lines()).position(|(a, b)| a != b);
        panic!(
            "{case}: output differs from {} (first differing line {first_diff:?}; {} vs {} lines).\n\
             If the change is intended, run UPDATE_GOLDEN=1 cargo test --test it corpus and review the diff.",
            jsonl.display(),
            got.lines().count(),
            want.lines().count()
        );
    }
    assert_eq!(String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&want_stats), "{case}: stats differ");
    (observations(&output.stdout), output.stderr)
}

/// Wraps message-only corpus lines in an RFC 3164 header, one pid per line so unrelated upstream
/// test cases are never joined.
fn synthesize(lines: impl IntoIterator<Item = (String, String)>) -> Vec<u8> {
    let mut text = String::new();
    for (idx, (tag, message)) in lines.into_iter().enumerate() {
        let (minute, second) = ((idx / 60) % 60, idx % 60);
        text.push_str(&format!("Nov 30 12:{minute:02}:{second:02} corpus {tag}[{}]: {message}\n", 1000 + idx));
    }
    text.into_bytes()
}

pub(crate) fn find<'a>(observations: &'a [Value], ip: &str, direction: &str) -> Vec<&'a Value> {
    observations.iter().filter(|o| o["peer"]["ip"] == ip && o["direction"] == direction).collect()
}

#[test]
fn corpus_fail2ban_postfix() {
    let (got, stats) = golden("fail2ban-postfix", &["tests/data/corpus/fail2ban-postfix.log"], b"");
    assert_eq!(stat(&stats, "malformed message"), 0);
    // `lost connection after STARTTLS` from fail2ban's sample is a failed inbound handshake.
    let lost = find(&got, "192.0.2.42", "inbound");
    assert!(lost.iter().any(|o| o["outcome"] == "handshake-failed"), "{lost:#?}");
    for observation in &got {
        assert_eq!(observation["mta"], "postfix");
        assert_eq!(observation["source"]["name"], "tests/data/corpus/fail2ban-postfix.log");
    }
}

#[test]
fn corpus_kumina_postfix_exporter() {
    let (got, stats) = golden("kumina-postfix_exporter", &["tests/data/corpus/kumina-postfix_exporter.log"], b"");
    assert_eq!(stat(&stats, "malformed message"), 0);
    let comcast = find(&got, "2001:558:fe21:2a::6", "outbound");
    assert_eq!(comcast.len(), 1);
    assert_eq!(comcast[0]["outcome"], "tls");
    assert_eq!(comcast[0]["tls"]["trust"], "verified");
    assert_eq!(comcast[0]["tls"]["protocol"], "TLSv1.2");
    let google = find(&got, "108.177.14.26", "outbound");
    assert_eq!(google[0]["tls"]["key_exchange"], "X25519");
    // The corpus has no TLS line for mail.telia.com: with --tls-logging auto and no TLS line of that
    // pid before it, the delivery must not be called plaintext... unless the instance logged TLS.
    let telia = find(&got, "81.236.60.210", "outbound");
    assert_eq!(telia.len(), 1);
    assert_eq!(telia[0]["delivered"], true);
    assert_ne!(telia[0]["outcome"], "tls");
}

#[test]
fn corpus_crowdsec_hub() {
    let (got, stats) = golden("crowdsec-hub", &["tests/data/corpus/crowdsec-hub.log"], b"");
    assert_eq!(stat(&stats, "malformed message"), 0);
    // Its Postfix lines are SASL failures and rejects: no TLS facts. Its Exim lines (file and
    // syslog framing) are authenticator failures and ACL rejections: read, and ignored.
    assert_eq!(stat(&stats, "other programs"), 0);
    assert!(stat(&stats, "ignored (not TLS-relevant)") >= 37);
    assert!(got.iter().all(|o| o["direction"] == "inbound"));
}

#[test]
fn corpus_synthetic_framings() {
    let (got, stats) = golden("synthetic-framings", &["tests/data/corpus/synthetic-framings.txt"], b"");
    assert_eq!(stat(&stats, "malformed message"), 0);
    // Every framing F1-F6 that carries the Postfix TLS line must yield the same verified TLS peer.
    let tls: Vec<&Value> = find(&got, "192.0.2.25", "outbound").into_iter().filter(|o| o["mta"] == "postfix").collect();
    assert!(tls.len() >= 6, "{tls:#?}");
    // The Exim framings F7/F7b carry the same delivery (`CV=yes`: trusted); the split line is
    // rejoined into one observation of two lines.
    let exim = find(&got, "192.0.2.25", "outbound").into_iter().filter(|o| o["mta"] == "exim").collect::<Vec<_>>();
    assert_eq!(exim.len(), 3, "{exim:#?}");
    assert!(exim.iter().all(|o| o["tls"]["trust"] == "trusted" && o["tls"]["protocol"] == "TLSv1.3"));
    assert!(exim.iter().any(|o| o["lines"] == 2));
    for observation in tls {
        assert_eq!(observation["tls"]["trust"], "verified");
        assert_eq!(observation["tls"]["cipher"], "TLS_AES_256_GCM_SHA384");
    }
}

#[test]
fn corpus_postfix_docs_examples() {
    let lines = corpus_lines(&corpus("postfix-docs-examples.log"));
    let mut raw = Vec::new();
    let mut messages = Vec::new();
    for line in lines {
        if line.starts_with("Nov ") {
            raw.push(line);
        } else if let Some((tag, message)) = line.split_once("[process-id]: ") {
            messages.push((tag.to_owned(), message.to_owned()));
        } else {
            messages.push(("postfix/smtp".to_owned(), line));
        }
    }
    let mut input = synthesize(messages);
    for line in raw {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    let (got, stats) = golden("postfix-docs-examples", &["-"], &input);
    assert_eq!(stat(&stats, "malformed message"), 0);
    let sni: Vec<&Value> = got.iter().filter(|o| o["tls"]["sni"] == "server.example").collect();
    assert_eq!(sni.len(), 1);
    assert_eq!(sni[0]["direction"], "inbound");
    assert_eq!(sni[0]["peer"]["hostname"], "client.example");
    assert!(got.iter().any(|o| o["tls"]["reused"] == true));
    // The CONNECTION_CACHE example: conn_use=2 on a connection whose TLS line is not in the log.
    let cached = find(&got, "1.2.3.4", "outbound");
    assert_eq!(cached[0]["conn_use"], 2);
    assert_eq!(cached[0]["peer"]["port"], Value::Null);
}

#[test]
fn corpus_whyscream_postfix_grok_patterns() {
    let lines = corpus_lines(&corpus("postfix-grok-patterns.log"));
    let messages = lines.into_iter().filter_map(|line| {
        let (file, message) = line.split_once('\t')?;
        Some((
            format!("postfix/{}", crate::whyscream::daemon_of(file)),
            message.replace("\\r", "\r").replace("\\n", "\n"),
        ))
    });
    let (got, stats) = golden("postfix-grok-patterns", &["-"], &synthesize(messages));
    assert_eq!(stat(&stats, "malformed message"), 0);
    let trusts: Vec<&str> = got.iter().filter_map(|o| o["tls"]["trust"].as_str()).collect();
    for trust in ["anonymous", "untrusted", "trusted", "verified"] {
        assert!(trusts.contains(&trust), "no {trust} observation in {trusts:?}");
    }
    let features: Vec<(&str, &str)> =
        got.iter().filter_map(|o| Some((o["tls_feature"].as_str()?, o["outcome"].as_str()?))).collect();
    assert!(features.contains(&("may:none", "starttls-not-offered")), "{features:?}");
    assert!(features.contains(&("dane", "tls")), "{features:?}");
}

/// Real logs of the Postfix lab at TLS log level 2 (tests/data/postfix/README.md): every TLS
/// observation whose handshake had a peer-certificate line carries that certificate.
#[test]
fn corpus_postfix_tls_loglevel_2_certificates() {
    // Relative to the repository (the binary runs there): the source name is in the golden file.
    let relative = "tests/data/postfix/tls-loglevel2-out.maillog";
    let path = repo().join(relative);
    let (got, stderr) = golden("postfix-tls-loglevel2-out", &[relative], b"");
    assert_eq!(stat(&stderr, "malformed message"), 0);
    let text = std::fs::read_to_string(&path).unwrap();
    let cert_lines = text.lines().filter(|l| l.contains(": subject_CN=")).count();
    let with_cert: Vec<&Value> = got.iter().filter(|o| !o["tls"]["cert"].is_null()).collect();
    assert_eq!(with_cert.len(), cert_lines, "one certificate per certificate line");
    for o in &with_cert {
        let cert = &o["tls"]["cert"];
        let fingerprint = cert["fingerprint"].as_str().unwrap();
        assert_eq!(fingerprint.len(), 32 * 3 - 1, "a SHA-256 fingerprint: {o}");
        assert!(cert["pkey_fingerprint"].as_str().is_some_and(|p| p.len() == 95), "{o}");
        match o["peer"]["ip"].as_str().unwrap() {
            // The CA-signed receiver, verified or trusted depending on the policy of the transport.
            "127.0.0.2" => {
                assert_eq!(
                    (cert["subject"].as_str(), cert["issuer"].as_str()),
                    (Some("mx.ca.test"), Some("tlsledger lab CA"))
                );
                assert!(o["tls"]["trust"] == "verified" || o["tls"]["trust"] == "trusted", "{o}");
            }
            // The self-signed receiver: its own issuer, untrusted.
            "127.0.0.3" => {
                assert_eq!(cert["subject"], cert["issuer"], "{o}");
                assert_eq!(o["tls"]["trust"], "untrusted", "{o}");
            }
            _ => {}
        }
    }
    // The same certificate gives the same fingerprint on every connection to the same receiver.
    let ca: std::collections::BTreeSet<&str> = with_cert
        .iter()
        .filter(|o| o["peer"]["ip"] == "127.0.0.2")
        .map(|o| o["tls"]["cert"]["fingerprint"].as_str().unwrap())
        .collect();
    assert_eq!(ca.len(), 1, "{ca:?}");
}
