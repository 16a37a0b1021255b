//! The HTTP API as a client sees it: a real `tlsledger serve` process on a free loopback port,
//! queried with curl (token, feed, endpoints, domains, metrics, errors), then stopped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::tlsledger;

/// Kills the server when the test ends, whatever happens.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let output =
        Command::new("curl").args(["-sS", "-o", "-", "-w", "\n%{http_code}"]).args(args).output().expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn serve_answers_the_api_on_loopback() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (state, out) = (base.join("state"), base.join("feed"));
    crate::common::parse_into_state(&state, "-", crate::feeds::log().as_bytes(), &[]);
    let feed = tlsledger(
        &["feed", "--state", state.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", "2026-11-11T10:00:00Z"],
        b"",
    );
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    std::fs::write(base.join("token"), "s3cret\n").unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--feed-dir")
        .arg(&out)
        .arg("--token-file")
        .arg(base.join("token"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let server = Server(child);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("tlsledger: serving on ").unwrap_or_else(|| panic!("{line}")).to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let auth = "Authorization: Bearer s3cret";
    assert_eq!(curl(&[&format!("{url}/healthz")]).0, 401, "the token is required");
    assert_eq!(curl(&["-H", "Authorization: Bearer wrong", &format!("{url}/healthz")]).0, 401);
    assert_eq!(curl(&["-H", auth, &format!("{url}/healthz")]), (200, "ok\n".to_owned()));

    let (code, body) = curl(&["-H", auth, &format!("{url}/v1/feed.json")]);
    assert_eq!(code, 200);
    let feed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!feed["endpoints"].as_array().unwrap().is_empty());

    let (code, body) = curl(&["-H", auth, &format!("{url}/v1/endpoints/192.0.2.40")]);
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(report["endpoints"][0]["classification"]["broken_starttls"].is_object(), "{report:#}");

    let (code, body) = curl(&["-H", auth, &format!("{url}/v1/domains/good.example")]);
    assert_eq!(code, 200, "{body}");
    let domain: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(domain["kind"], "domain");

    assert_eq!(curl(&["-H", auth, &format!("{url}/v1/endpoints/192.0.2.99")]).0, 404);
    assert_eq!(curl(&["-H", auth, &format!("{url}/nowhere")]).0, 404);
    assert_eq!(curl(&["-H", auth, "-X", "POST", &format!("{url}/healthz")]).0, 405);

    let (code, metrics) = curl(&["-H", auth, &format!("{url}/metrics")]);
    assert_eq!(code, 200);
    assert!(metrics.contains("tlsledger_endpoints{class="), "{metrics}");
    assert!(metrics.contains("tlsledger_flagged{flag=\"broken-starttls\"}"), "{metrics}");
    drop(server);
}
