//! Cross-check of our Postfix grammar against whyscream/postfix-grok-patterns' expected captures
//! (tests/data/corpus/postfix-grok-patterns-expected.yaml, BSD-3-Clause): for every upstream
//! test case whose grok pattern extracts TLS or relay fields, our parser must extract the same
//! host, address, port, protocol, cipher, bits, trust class, queue id and status.

use parsers::postfix::{parse_message, Event, Relay, Status, TrustClass};

use crate::common::corpus;

/// The Postfix daemon an upstream test file is about (`smtpd_0039.yaml` → `smtpd`).
pub fn daemon_of(file: &str) -> &str {
    let stem = file.trim_end_matches(".yaml");
    let name = stem.rsplit_once('_').map_or(stem, |(name, _)| name);
    match name {
        "tls_features" | "relay" | "delays" | "command_counter_data" => "smtp",
        "script" => "postfix-script",
        "trivial_rewrite" => "trivial-rewrite",
        other => other,
    }
}

/// One upstream test case: the message and the expected captures.
struct Case {
    source: String,
    data: String,
    results: Vec<(String, String)>,
}

impl Case {
    fn get(&self, key: &str) -> Option<&str> {
        self.results.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Reads the multi-document YAML. Its shape is fixed (top-level `key: value`, `results:` with
/// two-space indented `key: value`, single-quoted or plain scalars), so a small reader does.
fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus("postfix-grok-patterns-expected.yaml")).unwrap();
    let mut cases = Vec::new();
    for doc in text.split("\n---\n").skip(1) {
        let mut case = Case { source: String::new(), data: String::new(), results: Vec::new() };
        for line in doc.lines() {
            if let Some(item) = line.strip_prefix("  ") {
                if let Some((key, value)) = item.split_once(": ") {
                    case.results.push((key.to_owned(), scalar(value)));
                }
            } else if let Some(value) = line.strip_prefix("source: ") {
                case.source = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                case.data = scalar(value);
            }
        }
        cases.push(case);
    }
    cases
}

/// A YAML scalar: `'single quoted'` (with `''` for a quote), `"double quoted"` or plain.
fn scalar(value: &str) -> String {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        value.to_owned()
    }
}

#[test]
fn whyscream_expected_captures_agree() {
    let cases = cases();
    assert_eq!(cases.len(), 191, "the corpus file changed");
    let (mut n_tls, mut n_delivery) = (0, 0);
    for case in &cases {
        let file = case.source.rsplit('/').next().unwrap_or_default();
        let daemon = daemon_of(file);
        let event = parse_message(daemon, &case.data);
        let context = format!("{}: {}", case.source, case.data);
        if let Some(version) = case.get("postfix_tls_version") {
            let Ok(Event::TlsConnection(tls)) = event else { panic!("{context}: {event:?}") };
            n_tls += 1;
            let class = match tls.class {
                TrustClass::Anonymous => "Anonymous",
                TrustClass::Untrusted => "Untrusted",
                TrustClass::Trusted => "Trusted",
                TrustClass::Verified => "Verified",
            };
            assert_eq!(Some(class), case.get("postfix_tls_trustlevel"), "{context}");
            assert_eq!(tls.protocol, version, "{context}");
            assert_eq!(Some(tls.cipher), case.get("postfix_tls_cipher"), "{context}");
            assert_eq!(Some(format!("{}/{}", tls.bits, tls.alg_bits).as_str()), case.get("postfix_tls_cipher_size"));
            let host = case.get("postfix_relay_hostname").or(case.get("postfix_client_hostname"));
            let ip = case.get("postfix_relay_ip").or(case.get("postfix_client_ip"));
            let port = case.get("postfix_relay_port").or(case.get("postfix_client_port"));
            assert_eq!(Some(tls.peer.hostname), host, "{context}");
            assert_eq!(Some(tls.peer.addr), ip, "{context}");
            assert_eq!(tls.peer.port.map(|p| p.to_string()).as_deref(), port, "{context}");
            if let Some(kex) = case.get("postfix_tls_key_exchange") {
                assert_eq!(tls.key_exchange, Some(kex), "{context}");
            }
            if let Some(signature) = case.get("postfix_tls_server_signature") {
                assert_eq!(tls.server_signature, Some(signature), "{context}");
            }
        } else if let (Some(queue_id), Some(status)) = (case.get("postfix_queueid"), case.get("postfix_status")) {
            if !case.data.contains(" to=") && !case.data.contains(": to=") {
                continue;
            }
            let Ok(Event::Delivery(delivery)) = event else { panic!("{context}: {event:?}") };
            n_delivery += 1;
            assert_eq!(delivery.queue_id, queue_id, "{context}");
            let want_status = match status {
                "sent" => Status::Sent,
                "deferred" => Status::Deferred,
                "bounced" => Status::Bounced,
                "expired" => Status::Expired,
                "undeliverable" | "undeliverable-but-not-cached" => Status::Undeliverable,
                "deliverable" => Status::Deliverable,
                other => Status::Other(other),
            };
            assert_eq!(delivery.status, want_status, "{context}");
            if let Some(ip) = case.get("postfix_relay_ip") {
                let Relay::Peer(peer) = delivery.relay else { panic!("{context}: {:?}", delivery.relay) };
                assert_eq!(peer.addr, ip, "{context}");
                assert_eq!(Some(peer.hostname), case.get("postfix_relay_hostname"), "{context}");
                assert_eq!(peer.port.map(|p| p.to_string()).as_deref(), case.get("postfix_relay_port"), "{context}");
            }
            if let Some(message) = case.get("postfix_smtp_response").or(case.get("postfix_status_data")) {
                assert!(delivery.reason.contains(message) || message.contains(delivery.reason), "{context}");
            }
        }
    }
    assert!(n_tls >= 8, "only {n_tls} TLS cases checked");
    assert!(n_delivery >= 10, "only {n_delivery} delivery cases checked");
}
