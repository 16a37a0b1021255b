//! The reputation path end to end: `tlsledger parse --state DIR` folds observations into the
//! IndraDB-backed state, `tlsledger explain` reads it back and classifies with injected time.

use std::path::PathBuf;

use crate::common::tlsledger;

fn state_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Ten days of deliveries to three MX hosts, then one plaintext delivery to the valid one.
pub fn multi_day_log(days: std::ops::Range<u32>, with_downgrade: bool) -> String {
    let mut log = String::new();
    let mut pid = 1000;
    for day in days {
        let date = format!("2026-11-{:02}", day + 1);
        for (ip, host, class) in
            [("192.0.2.10", "mx.valid.example", "Trusted"), ("192.0.2.20", "mx.selfsigned.example", "Untrusted")]
        {
            pid += 1;
            let domain = host.trim_start_matches("mx.");
            log.push_str(&format!(
                "{date}T10:00:00+00:00 out postfix/smtp[{pid}]: {class} TLS connection established to {host}[{ip}]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
                 {date}T10:00:01+00:00 out postfix/smtp[{pid}]: A{pid:09X}: to=<u@{domain}>, relay={host}[{ip}]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
            ));
        }
        pid += 1;
        log.push_str(&format!(
            "{date}T10:00:02+00:00 out postfix/smtp[{pid}]: A{pid:09X}: to=<u@plain.example>, relay=mx.plain.example[192.0.2.30]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
        ));
    }
    if with_downgrade {
        log.push_str(
            "2026-11-11T09:00:00+00:00 out postfix/smtp[9999]: AFFFFFFFFF: to=<u@valid.example>, relay=mx.valid.example[192.0.2.10]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n",
        );
    }
    log
}

fn explain(state: &std::path::Path, target: &str) -> serde_json::Value {
    let output = tlsledger(
        &["explain", target, "--state", state.to_str().unwrap(), "--json", "--now", "2026-11-11T10:00:00Z"],
        b"",
    );
    assert!(output.status.success(), "explain {target}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn endpoint<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

#[test]
fn state_from_logs_gives_classes_flags_and_explanations() {
    let state = state_dir("classes");
    // Two runs over two halves: the state persists and accumulates between runs.
    let first = multi_day_log(0..6, false);
    let second = multi_day_log(6..10, true);
    for log in [&first, &second] {
        crate::common::parse_into_state(&state, "-", log.as_bytes(), &["--stats"]);
    }
    let valid = explain(&state, "192.0.2.10");
    let outbound = endpoint(&valid, "outbound/192.0.2.10");
    assert_eq!(outbound["classification"]["class"], "historically-valid", "{outbound:#}");
    assert_eq!(outbound["classification"]["downgrade"]["severity"], "high", "{outbound:#}");
    assert_eq!(outbound["hostnames"][0], "mx.valid.example");

    let selfsigned = explain(&state, "mx.selfsigned.example");
    assert_eq!(selfsigned["kind"], "hostname");
    assert_eq!(endpoint(&selfsigned, "outbound/192.0.2.20")["classification"]["class"], "tls-unverified");

    let plain = explain(&state, "plain.example");
    assert_eq!(plain["kind"], "domain");
    assert_eq!(plain["domain_class"], "never-tls");
    assert_eq!(endpoint(&plain, "outbound/192.0.2.30")["classification"]["class"], "never-tls");

    // The text form names the class, the flag and the evidence.
    let text = tlsledger(
        &["explain", "valid.example", "--state", state.to_str().unwrap(), "--now", "2026-11-11T10:00:00Z"],
        b"",
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("class: historically-valid"), "{text}");
    assert!(text.contains("downgrade-suspect (High)"), "{text}");
    assert!(text.contains("because:"), "{text}");
}

#[test]
fn untrusted_log_text_cannot_promote() {
    let state = state_dir("untrusted");
    let log = multi_day_log(0..10, false);
    let output = tlsledger(
        &["parse", "--output", "none", "--tls-logging", "on", "--state", state.to_str().unwrap(), "-"],
        log.as_bytes(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let valid = explain(&state, "192.0.2.10");
    assert_eq!(endpoint(&valid, "outbound/192.0.2.10")["classification"]["class"], "unknown");
}

#[test]
fn explain_without_state_or_unknown_target_is_a_clear_error() {
    let state = state_dir("empty");
    let output = tlsledger(&["explain", "192.0.2.1", "--state", state.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no reputation state"));

    let lab = tlsledger(
        &["parse", "--output", "none", "--state", state.to_str().unwrap(), "examples/postfix-out.maillog"],
        b"",
    );
    assert!(lab.status.success(), "{}", String::from_utf8_lossy(&lab.stderr));
    let known = explain(&state, "127.0.0.1");
    assert!(known["endpoints"].as_array().unwrap().len() == 2, "outbound and inbound: {known:#}");
    let unknown = tlsledger(&["explain", "192.0.2.99", "--state", state.to_str().unwrap()], b"");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nothing is known about 192.0.2.99"));
}
