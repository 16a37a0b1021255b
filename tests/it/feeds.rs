//! Feeds end to end: logs → `parse --state` → `tlsledger feed`, and the real consumer reads the
//! result: Postfix's own `postmap -q` on the generated cidr maps and on the `tls_policy` database
//! the feed built with `postmap`, Sendmail's `makemap` run by the feed, Exim reading its host
//! lists (`exim -bh`, `exim -be`), SpamAssassin linting and scoring with `tlsledger.cf`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::tlsledger;

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("feeds-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Broken STARTTLS at 192.0.2.40 (twice in a day) and 2001:db8::40 (once, no TLS ever), a
/// healthy TLS peer at 192.0.2.10, and an inbound client with ten days of STARTTLS that then
/// arrives in plaintext.
pub fn log() -> String {
    let mut log = String::new();
    for day in 0..10u32 {
        let date = format!("2026-11-{:02}", day + 1);
        let pid = 2000 + day;
        log.push_str(&format!(
            "{date}T08:00:00+00:00 mx postfix/smtp[{pid}]: Trusted TLS connection established to mx.good.example[192.0.2.10]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
             {date}T08:00:01+00:00 mx postfix/smtp[{pid}]: B{pid:09X}: to=<u@good.example>, relay=mx.good.example[192.0.2.10]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n\
             {date}T09:00:00+00:00 mx postfix/smtpd[{pid}]: connect from client.example[198.51.100.7]\n\
             {date}T09:00:00+00:00 mx postfix/smtpd[{pid}]: Anonymous TLS connection established from client.example[198.51.100.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
             {date}T09:00:01+00:00 mx postfix/smtpd[{pid}]: disconnect from client.example[198.51.100.7] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7\n"
        ));
    }
    log.push_str(
        "2026-11-11T08:00:00+00:00 mx postfix/smtp[3001]: SSL_connect error to mx.broken.example[192.0.2.40]:25: -1\n\
         2026-11-11T08:00:01+00:00 mx postfix/smtp[3001]: C000000001: to=<u@broken.example>, relay=mx.broken.example[192.0.2.40]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)\n\
         2026-11-11T09:00:00+00:00 mx postfix/smtp[3002]: SSL_connect error to mx.broken.example[192.0.2.40]:25: -1\n\
         2026-11-11T09:00:01+00:00 mx postfix/smtp[3002]: C000000002: to=<u@broken.example>, relay=mx.broken.example[192.0.2.40]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)\n\
         2026-11-11T09:30:00+00:00 mx postfix/smtp[3003]: SSL_connect error to mx6.broken.example[2001:db8::40]:25: lost connection\n\
         2026-11-11T09:30:01+00:00 mx postfix/smtp[3003]: C000000003: to=<u@broken6.example>, relay=mx6.broken.example[2001:db8::40]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)\n\
         2026-11-11T09:40:00+00:00 mx postfix/smtpd[4000]: connect from client.example[198.51.100.7]\n\
         2026-11-11T09:40:01+00:00 mx postfix/smtpd[4000]: disconnect from client.example[198.51.100.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5\n",
    );
    log
}

/// `postmap -q KEY cidr:MAP`, with a private (empty) main.cf: Debian's "No configuration"
/// install has no /etc/postfix/main.cf, and postmap refuses to run without one.
fn postmap_query(key: &str, map: &Path) -> Option<String> {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = dir(&format!("postmap-config-{call}"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("main.cf"), "").unwrap();
    let output = Command::new("postmap")
        .arg("-c")
        .arg(&config)
        .args(["-q", key, &format!("cidr:{}", map.display())])
        .output()
        .expect("run postmap (tests/run.sh installs postfix)");
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn feed_files_are_read_by_the_real_consumers() {
    let state = dir("state");
    let out = dir("out");
    crate::common::parse_into_state(&state, "-", log().as_bytes(), &[]);
    let feed = tlsledger(
        &["feed", "--state", state.to_str().unwrap(), "--out", out.to_str().unwrap(), "--now", "2026-11-11T10:00:00Z"],
        b"",
    );
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));

    let outbound = out.join("smtp_discard_ehlo.cidr");
    assert_eq!(postmap_query("192.0.2.40", &outbound).as_deref(), Some("starttls"));
    assert_eq!(postmap_query("2001:db8::40", &outbound).as_deref(), Some("starttls"));
    assert_eq!(postmap_query("192.0.2.10", &outbound), None, "a healthy TLS peer is never listed");
    assert_eq!(postmap_query("192.0.2.41", &outbound), None);
    let inbound = out.join("smtpd_discard_ehlo.cidr");
    assert_eq!(postmap_query("192.0.2.40", &inbound), None, "directions do not mix");

    let text = std::fs::read_to_string(&outbound).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("# generated 2026-11-11T10:00:00Z  expires 2026-11-13T10:00:00Z")),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains('#'), "comments must stay on their own lines: {line}");
    }

    let downgrade = std::fs::read_to_string(out.join("tlsledger_downgrade.map")).unwrap();
    assert!(downgrade.lines().any(|l| l == "198.51.100.7 1.0"), "{downgrade}");
    let hist = std::fs::read_to_string(out.join("tlsledger_hist_tls.map")).unwrap();
    assert!(hist.lines().any(|l| l == "198.51.100.7"), "{hist}");
    let policy = std::fs::read_to_string(out.join("tls_policy")).unwrap();
    assert!(policy.lines().all(|l| l.starts_with('#')), "no enforcement without opt-in: {policy}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tlsledger-feed.json")).unwrap()).unwrap();
    let endpoints = json["endpoints"].as_array().unwrap();
    let good = endpoints.iter().find(|e| e["ip"] == "192.0.2.10" && e["direction"] == "outbound").unwrap();
    assert_eq!(good["class"], "historically-valid");
    let broken = endpoints.iter().find(|e| e["ip"] == "192.0.2.40").unwrap();
    assert_eq!(broken["broken_starttls"]["level"], 1);
    assert_eq!(json["expires"], "2026-11-13T10:00:00Z");

    let csv = std::fs::read_to_string(out.join("tlsledger-feed.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("outbound,192.0.2.10,historically-valid,")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("outbound,192.0.2.40,unknown,unknown,,1,")), "{csv}");
    assert_eq!(csv.lines().count(), endpoints.len() + 1);
}

#[test]
fn an_empty_state_gives_valid_empty_feeds() {
    let out = dir("empty-out");
    let feed =
        tlsledger(&["feed", "--state", dir("empty-state").to_str().unwrap(), "--out", out.to_str().unwrap()], b"");
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    assert_eq!(postmap_query("192.0.2.40", &out.join("smtp_discard_ehlo.cidr")), None);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tlsledger-feed.json")).unwrap()).unwrap();
    assert_eq!(json["endpoints"].as_array().unwrap().len(), 0);
}

/// Issue 5: an opt-in tier needs the target Postfix version, given or detected; without one, or
/// for a Postfix too old for the attributes, nothing is written and the run fails (exit 2).
#[test]
fn enforcement_tiers_need_a_known_postfix_version() {
    let thresholds_dir = dir("tier-thresholds");
    std::fs::create_dir_all(&thresholds_dir).unwrap();
    let thresholds = thresholds_dir.join("encrypt.toml");
    std::fs::write(&thresholds, "[enforcement]\npostfix_tier = \"encrypt\"\n").unwrap();
    let state = dir("tier-state");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "feed",
            "--state",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--thresholds",
            thresholds.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        tlsledger(&args, b"")
    };
    let out = dir("tier-no-postconf");
    let failed = run(&out, &["--postconf-path", "/nonexistent/postconf"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--postfix-version"), "{stderr}");
    assert!(!out.join("tls_policy").exists(), "nothing written");
    let old = run(&dir("tier-old"), &["--postfix-version", "2.11.3"]);
    assert!(String::from_utf8_lossy(&old.stderr).contains("too old"), "{}", String::from_utf8_lossy(&old.stderr));
    assert_eq!(old.status.code(), Some(2));
    let bad = run(&dir("tier-bad"), &["--postfix-version", "latest"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let out = dir("tier-ok");
    let ok = run(&out, &["--postfix-version", "3.7.11"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let policy = std::fs::read_to_string(out.join("tls_policy")).unwrap();
    assert!(policy.contains("tier encrypt for Postfix 3.7"), "{policy}");
    assert!(policy.lines().all(|l| l.starts_with('#')), "an empty state has no next hop: {policy}");
}

/// `parse --state` of `log` into a fresh state folder, then `feed --now 2026-11-11T10:00:00Z
/// --out OUT` with `extra` options.
fn generate(name: &str, log: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let state = dir(&format!("{name}-state"));
    let parsed = tlsledger(
        &["parse", "--output", "none", "--tls-logging", "on", "--state", state.to_str().unwrap(), "-"],
        log.as_bytes(),
    );
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let mut args = vec![
        "feed",
        "--state",
        state.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--now",
        "2026-11-11T10:00:00Z",
    ];
    args.extend_from_slice(extra);
    tlsledger(&args, b"")
}

/// The names in `dir` that start with a dot (temporary files).
fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Sendmail's makemap, unpacked privately by tests/run.sh (it conflicts with Postfix).
fn makemap() -> PathBuf {
    let makemap = crate::common::repo().join(".ci-work/pkgs/sendmail-bin/usr/libexec/sendmail/makemap");
    assert!(makemap.exists(), "{} missing: run tests/run.sh (tests/harness/unpack.sh sendmail-bin)", makemap.display());
    makemap
}

#[test]
fn the_feed_runs_sendmail_makemap_and_replaces_the_database() {
    let makemap = makemap();
    let out = dir("makemap-out");
    std::fs::create_dir_all(&out).unwrap();
    // makemap looks up TrustedUser in a sendmail.cf: an empty private one will do.
    let cf = dir("makemap-cf").with_extension("cf");
    std::fs::write(&cf, "").unwrap();
    // A stale database from an earlier run, with an entry the new feed no longer has.
    let stale = Command::new(&makemap)
        .arg("-C")
        .arg(&cf)
        .arg("hash")
        .arg(out.join("access.tlsledger"))
        .stdin(std::fs::File::open(write_temp("stale-access", "Try_TLS:203.0.113.9\tNO\n")).unwrap())
        .output()
        .unwrap();
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));
    let feed = generate(
        "makemap",
        &log(),
        &out,
        &["--makemap", "hash", "--makemap-path", makemap.to_str().unwrap(), "--sendmail-cf", cf.to_str().unwrap()],
    );
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    let dump =
        Command::new(&makemap).arg("-C").arg(&cf).args(["-u", "hash"]).arg(out.join("access.tlsledger")).output();
    let dump = dump.unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.lines().any(|l| l == "try_tls:192.0.2.40\tNO"), "{dump}");
    assert!(dump.lines().any(|l| l == "try_tls:ipv6:2001:db8::40\tNO"), "{dump}");
    assert!(!dump.contains("203.0.113.9"), "the stale database was replaced: {dump}");
    assert!(!dump.contains("192.0.2.10"), "healthy peers are not listed: {dump}");
    assert_eq!(hidden_files(&out), Vec::<String>::new());
}

#[test]
fn a_missing_or_failing_index_tool_fails_the_run_and_leaves_the_files() {
    let out = dir("no-makemap-out");
    let feed = generate("no-makemap", &log(), &out, &["--makemap", "hash", "--makemap-path", "/nonexistent/makemap"]);
    let stderr = String::from_utf8_lossy(&feed.stderr);
    assert_eq!(feed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/makemap") && stderr.contains("access.tlsledger"), "{stderr}");
    let access = std::fs::read_to_string(out.join("access.tlsledger")).unwrap();
    assert!(access.contains("Try_TLS:192.0.2.40\tNO"), "the new text file stays: {access}");
    assert!(!out.join("access.tlsledger.db").exists());

    // Debian's base postfix has no lmdb: postmap itself fails, and says so.
    let config = postfix_config("lmdb");
    let out = dir("postmap-lmdb-out");
    let feed =
        generate("postmap-lmdb", &log(), &out, &["--postmap", "lmdb", "--postfix-config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&feed.stderr);
    assert_eq!(feed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("postmap failed to index tls_policy") && stderr.contains("lmdb"), "{stderr}");
    assert!(out.join("tls_policy").exists() && !out.join("tls_policy.lmdb").exists());
    assert_eq!(hidden_files(&out), Vec::<String>::new());
}

/// A private Postfix configuration folder with an empty main.cf (see [`postmap_query`]).
fn postfix_config(name: &str) -> PathBuf {
    let config = dir(&format!("postfix-config-{name}"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("main.cf"), "").unwrap();
    config
}

/// Writes `text` to a fresh file named `name`.
fn write_temp(name: &str, text: &str) -> PathBuf {
    let path = dir(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_feed_runs_postmap_on_the_policy_map() {
    let config = postfix_config("hash");
    let out = dir("postmap-out");
    std::fs::create_dir_all(&out).unwrap();
    // A stale tls_policy.db with an entry: the feed's (empty) policy must replace it.
    std::fs::write(out.join("tls_policy"), "stale.example encrypt\n").unwrap();
    let stale = Command::new("postmap")
        .arg("-c")
        .arg(&config)
        .arg(format!("hash:{}", out.join("tls_policy").display()))
        .output()
        .unwrap();
    assert!(stale.status.success(), "{}", String::from_utf8_lossy(&stale.stderr));
    let query = |key: &str| {
        Command::new("postmap")
            .arg("-c")
            .arg(&config)
            .args(["-q", key, &format!("hash:{}", out.join("tls_policy").display())])
            .output()
            .unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&query("stale.example").stdout).trim(), "encrypt");

    let feed = generate("postmap", &log(), &out, &["--postmap", "hash", "--postfix-config", config.to_str().unwrap()]);
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    let after = query("stale.example");
    assert_eq!(after.status.code(), Some(1), "not found: {}", String::from_utf8_lossy(&after.stderr));
    assert!(after.stdout.is_empty() && after.stderr.is_empty(), "{}", String::from_utf8_lossy(&after.stderr));
    let dump = Command::new("postmap")
        .arg("-c")
        .arg(&config)
        .arg("-s")
        .arg(format!("hash:{}", out.join("tls_policy").display()))
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(dump.stdout.is_empty(), "no enforcement without opt-in: {}", String::from_utf8_lossy(&dump.stdout));
    assert_eq!(hidden_files(&out), Vec::<String>::new());
}

/// A private SpamAssassin site configuration folder: the package's `.pre` files (they load the
/// plugins, as in /etc/spamassassin), a local.cf that turns Bayes off and writes every hit with
/// its score into `X-Spam-Tests`, and `rules` (the generated `tlsledger.cf`).
fn spamassassin_site(name: &str, rules: &str) -> PathBuf {
    let site = dir(&format!("sa-{name}"));
    std::fs::create_dir_all(&site).unwrap();
    for it in std::fs::read_dir("/etc/spamassassin").expect("/etc/spamassassin (tests/run.sh installs spamassassin)") {
        let path = it.unwrap().path();
        if path.extension().is_some_and(|e| e == "pre") {
            std::fs::copy(&path, site.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(site.join("local.cf"), "use_bayes 0\nadd_header all Tests _TESTSSCORES(,)_\n").unwrap();
    std::fs::write(site.join("tlsledger.cf"), rules).unwrap();
    site
}

/// `spamassassin` with only `site` as the site configuration, local tests only (`-L`), no user
/// preferences written (`-x`, a private HOME).
fn spamassassin(site: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let home = site.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new("spamassassin")
        .args(["-L", "-x", "--siteconfigpath"])
        .arg(site)
        .args(args)
        .env("HOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run spamassassin (tests/run.sh installs it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The TLSLEDGER_* rules that hit `message`, with their scores, from the `X-Spam-Tests` header.
fn tlsledger_hits(site: &Path, message: &str) -> Vec<String> {
    let output = spamassassin(site, &[], message.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let header = text.split("\n\n").next().unwrap().replace("\n\t", " ").replace("\n ", " ");
    let tests = header
        .lines()
        .find_map(|l| l.strip_prefix("X-Spam-Tests:"))
        .unwrap_or_else(|| panic!("no X-Spam-Tests header in:\n{text}"));
    let mut hits: Vec<String> =
        tests.split(',').map(|t| t.trim().to_owned()).filter(|t| t.starts_with("TLSLEDGER_")).collect();
    hits.sort();
    hits
}

#[test]
fn spamassassin_lints_the_rule_file_and_scores_the_header() {
    let thresholds = write_temp("sa-thresholds.toml", "[scores]\nspamassassin_high = 2.5\n");
    let out = dir("sa-out");
    let feed = generate("sa", &log(), &out, &["--thresholds", thresholds.to_str().unwrap()]);
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    let rules = std::fs::read_to_string(out.join("tlsledger.cf")).unwrap();
    assert!(rules.lines().any(|l| l.starts_with("# generated 2026-11-11T10:00:00Z  expires 2026-11-13T10:00:00Z")));
    let site = spamassassin_site("rules", &rules);

    let lint = spamassassin(&site, &["--lint"], b"");
    assert!(lint.status.success(), "lint: {}", String::from_utf8_lossy(&lint.stderr));
    // The lint is not a formality: a broken rule beside ours fails it.
    let broken = spamassassin_site("broken", &format!("{rules}\nheader TLSLEDGER_BROKEN X-TLSLedger =~ /(/\n"));
    assert!(!spamassassin(&broken, &["--lint"], b"").status.success(), "lint accepted a broken regex");

    let message = |header: Option<&str>| {
        format!(
            "From: sender@example.net\nTo: user@example.org\nSubject: hello\nDate: Wed, 11 Nov 2026 10:00:00 +0000\n\
             Message-ID: <tlsledger-test@example.net>\n{}\nHello.\n",
            header.map_or(String::new(), |h| format!("X-TLSLedger: {h}\n"))
        )
    };
    let cases: [(Option<&str>, &[&str]); 7] = [
        (
            Some("class=historically-valid; flags=downgrade-suspect; severity=high; tls=none"),
            &["TLSLEDGER_DOWNGRADE_HIGH=2.5"],
        ),
        (
            Some("class=tls-unverified; flags=downgrade-suspect; severity=medium; tls=TLSv1.2; cipher=ECDHE-RSA-AES256-GCM-SHA384"),
            &["TLSLEDGER_DOWNGRADE_MEDIUM=1"],
        ),
        (
            Some("class=unknown; flags=downgrade-suspect,broken-starttls; severity=low"),
            &["TLSLEDGER_BROKEN_STARTTLS=0.001", "TLSLEDGER_DOWNGRADE_LOW=0.5"],
        ),
        (
            Some("class=historically-valid; flags=none; severity=none; tls=TLSv1.3; cipher=TLS_AES_256_GCM_SHA384"),
            &["TLSLEDGER_HISTORICALLY_VALID=-0.001"],
        ),
        (Some("class=unknown; flags=none; severity=none; tls=none"), &[]),
        (Some("class=never-tls; flags=none; severity=high"), &[]),
        (None, &[]),
    ];
    std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(header, want)| {
                let text = message(*header);
                let site = &site;
                (header, want, scope.spawn(move || tlsledger_hits(site, &text)))
            })
            .collect();
        for (header, want, run) in runs {
            assert_eq!(run.join().unwrap(), *want, "X-TLSLedger: {header:?}");
        }
    });
}

/// Exim, unpacked privately by tests/run.sh (exim4-daemon-light conflicts with Postfix).
fn exim() -> PathBuf {
    let exim = crate::common::repo().join(".ci-work/pkgs/exim4-daemon-light/usr/sbin/exim4");
    assert!(exim.exists(), "{} missing: run tests/run.sh (tests/harness/unpack.sh exim4-daemon-light)", exim.display());
    exim
}

/// Inbound clients whose STARTTLS fails: 203.0.113.50 twice, 2001:db8::50 once (no TLS ever).
fn inbound_broken_log() -> String {
    let mut log = String::new();
    for (pid, minute, ip) in [(5001, 10, "203.0.113.50"), (5002, 20, "203.0.113.50"), (5003, 30, "2001:db8::50")] {
        log.push_str(&format!(
            "2026-11-11T08:{minute}:00+00:00 mx postfix/smtpd[{pid}]: connect from unknown[{ip}]\n\
             2026-11-11T08:{minute}:01+00:00 mx postfix/smtpd[{pid}]: SSL_accept error from unknown[{ip}]: -1\n\
             2026-11-11T08:{minute}:01+00:00 mx postfix/smtpd[{pid}]: lost connection after STARTTLS from unknown[{ip}]\n\
             2026-11-11T08:{minute}:01+00:00 mx postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 starttls=0/1 commands=1/2\n"
        ));
    }
    log
}

/// Runs the private Exim with configuration `config`, `args` and `stdin`.
fn run_exim(config: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(exim())
        .arg("-C")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn exim_reads_the_generated_host_lists() {
    let out = dir("exim-out");
    let feed = generate("exim", &format!("{}{}", log(), inbound_broken_log()), &out, &[]);
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    let (avoid, clients) = (out.join("avoid_tls.list"), out.join("no_starttls_clients.list"));
    // The wiring of feed-examples/exim/smtp_transport.conf.snippet: the files are host-list items.
    let work = dir("exim-work");
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("exim.conf");
    std::fs::write(
        &config,
        format!(
            "AVOID_TLS = {avoid}\n\
             keep_environment =\n\
             primary_hostname = mx.lab.example\n\
             spool_directory = {work}/spool\n\
             log_file_path = {work}/log/%slog\n\
             tls_advertise_hosts = ! {clients} : *\n\
             begin transports\n\
             remote_smtp:\n  driver = smtp\n  hosts_avoid_tls = AVOID_TLS\n",
            avoid = avoid.display(),
            clients = clients.display(),
            work = work.display()
        ),
    )
    .unwrap();
    let check = run_exim(&config, &["-bV"], b"");
    assert!(check.status.success(), "exim -bV: {}", String::from_utf8_lossy(&check.stderr));
    let transport = run_exim(&config, &["-bP", "transport", "remote_smtp"], b"");
    let transport = String::from_utf8_lossy(&transport.stdout);
    assert!(transport.lines().any(|l| l == format!("hosts_avoid_tls = {}", avoid.display())), "{transport}");

    // Outbound: the transport's list, matched by Exim against server IPs.
    for (ip, want) in
        [("192.0.2.40", "avoid"), ("2001:db8::40", "avoid"), ("192.0.2.10", "try"), ("2001:db8::41", "try")]
    {
        let expanded =
            run_exim(&config, &["-be", &format!("${{if match_ip{{{ip}}}{{AVOID_TLS}}{{avoid}}{{try}}}}")], b"");
        assert!(expanded.status.success(), "{}", String::from_utf8_lossy(&expanded.stderr));
        assert_eq!(String::from_utf8_lossy(&expanded.stdout).trim(), want, "hosts_avoid_tls for {ip}");
    }

    // Inbound: an SMTP session as if from each client (`-bh`, nothing delivered) shows whether
    // Exim offers STARTTLS to it.
    for (ip, listed) in
        [("203.0.113.50", true), ("2001:db8::50", true), ("198.51.100.7", false), ("2001:db8::51", false)]
    {
        let session = run_exim(&config, &["-bh", ip], b"EHLO client.example\r\nQUIT\r\n");
        let (stdout, stderr) = (String::from_utf8_lossy(&session.stdout), String::from_utf8_lossy(&session.stderr));
        assert!(session.status.success(), "{stderr}");
        assert!(stdout.contains("250 HELP"), "{stdout}");
        assert_eq!(!stdout.contains("250-STARTTLS"), listed, "STARTTLS offered to {ip}?\n{stdout}");
        if listed {
            let why = format!("host in tls_advertise_hosts? no (matched \"{ip}\" in {})", clients.display());
            assert!(stderr.contains(&why), "{stderr}");
        }
    }
}

/// Ten days of verified TLS to a server on 127.0.0.1 (for a real delivery test), next to the
/// historically-valid 192.0.2.10 of [`log`].
fn loopback_valid_log() -> String {
    let mut log = log();
    for day in 0..10u32 {
        let (date, pid) = (format!("2026-11-{:02}", day + 1), 6000 + day);
        log.push_str(&format!(
            "{date}T07:00:00+00:00 mx postfix/smtp[{pid}]: Verified TLS connection established to mx.lab.example[127.0.0.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n\
             {date}T07:00:01+00:00 mx postfix/smtp[{pid}]: D{pid:09X}: to=<u@lab.example>, relay=mx.lab.example[127.0.0.1]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
        ));
    }
    log
}

/// The entries (non-comment lines) of a feed file.
fn entries_of(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect()
}

/// A plain SMTP receiver without STARTTLS (Python's `smtpd`, Debian's python3) on a free
/// loopback port; killed on drop.
struct PlainReceiver {
    child: std::process::Child,
    port: u16,
}

impl PlainReceiver {
    fn start() -> PlainReceiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("/usr/bin/python3")
            .args(["-W", "ignore", "-m", "smtpd", "-n", "-c", "DebuggingServer", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the receiver did not start on port {port}");
            std::thread::yield_now();
        }
        PlainReceiver { child, port }
    }
}

impl Drop for PlainReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Delivers one message to `u@lab.example` with the private Exim (`-odi`: in the foreground)
/// through an smtp transport wired to the feed's opt-in lists, and returns Exim's main log.
fn exim_delivery(name: &str, out: &Path, port: u16) -> String {
    let work = dir(name);
    for sub in ["spool", "log"] {
        std::fs::create_dir_all(work.join(sub)).unwrap();
        // Deliveries run as Debian-exim (the binary's EXIM_USER).
        let chown = Command::new("chown").args(["Debian-exim:"]).arg(work.join(sub)).status().unwrap();
        assert!(chown.success());
    }
    let config = work.join("exim.conf");
    std::fs::write(
        &config,
        format!(
            "exim_path = {exim}\n\
             keep_environment =\n\
             primary_hostname = sender.lab.example\n\
             spool_directory = {work}/spool\n\
             log_file_path = {work}/log/%slog\n\
             tls_advertise_hosts =\n\
             begin routers\n\
             lab:\n  driver = manualroute\n  domains = lab.example\n  transport = remote_smtp\n  \
               route_list = * 127.0.0.1::{port} byname\n  self = send\n\
             begin transports\n\
             remote_smtp:\n  driver = smtp\n  allow_localhost\n  \
               hosts_require_tls = {out}/require_tls.list\n  tls_verify_hosts = {out}/verify_tls.list\n\
             begin retry\n* * F,1h,10m\n",
            exim = exim().display(),
            work = work.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let sent = run_exim(&config, &["-odi", "-oi", "u@lab.example"], b"Subject: tier test\n\nhello\n");
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    std::fs::read_to_string(work.join("log/mainlog")).unwrap()
}

#[test]
fn opt_in_exim_and_sendmail_tiers_are_rate_limited_and_hold_mail_in_a_real_exim() {
    let state = dir("tiers-state");
    crate::common::parse_into_state(&state, "-", loopback_valid_log().as_bytes(), &[]);
    let thresholds = write_temp(
        "tiers.toml",
        "[enforcement]\nexim_tier = \"verify\"\nsendmail_tier = \"encrypt\"\nmax_promotions_per_hour = 1\n",
    );
    let feed = |out: &Path, thresholds: &Path, now: &str| {
        let run = tlsledger(
            &[
                "feed",
                "--state",
                state.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--thresholds",
                thresholds.to_str().unwrap(),
                "--now",
                now,
            ],
            b"",
        );
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        String::from_utf8_lossy(&run.stderr).into_owned()
    };

    // Two servers become enforceable; one promotion an hour lets the first (by address) in.
    let out = dir("tiers-out");
    let said = feed(&out, &thresholds, "2026-11-11T10:00:00Z");
    assert!(said.contains("1 held back by max_promotions_per_hour = 1 (first: 192.0.2.10)"), "{said}");
    assert_eq!(entries_of(&out.join("require_tls.list")), ["127.0.0.1"]);
    assert_eq!(entries_of(&out.join("verify_tls.list")), ["127.0.0.1"]);
    let access = entries_of(&out.join("access.tlsledger"));
    assert!(access.contains(&"TLS_Srv:127.0.0.1\tENCR:128".to_owned()), "{access:?}");
    assert!(!access.iter().any(|l| l.contains("192.0.2.10")), "{access:?}");
    assert!(!access.iter().any(|l| l.contains("PERM")), "{access:?}");
    assert!(access.contains(&"Try_TLS:192.0.2.40\tNO".to_owned()), "broken-STARTTLS stays: {access:?}");
    // Sendmail's makemap accepts the access entries, TLS_Srv included.
    let cf = write_temp("tiers-sendmail.cf", "");
    let db = Command::new(makemap())
        .arg("-C")
        .arg(&cf)
        .arg("hash")
        .arg(out.join("access-check"))
        .stdin(std::fs::File::open(out.join("access.tlsledger")).unwrap())
        .output()
        .unwrap();
    assert!(db.status.success(), "makemap: {}", String::from_utf8_lossy(&db.stderr));

    // Within the hour nothing more; an hour later the held server comes in.
    feed(&out, &thresholds, "2026-11-11T10:30:00Z");
    assert_eq!(entries_of(&out.join("require_tls.list")), ["127.0.0.1"]);
    feed(&out, &thresholds, "2026-11-11T11:00:01Z");
    assert_eq!(entries_of(&out.join("require_tls.list")), ["127.0.0.1", "192.0.2.10"]);
    assert_eq!(entries_of(&out.join("verify_tls.list")), ["127.0.0.1", "192.0.2.10"]);

    // A real Exim reads the lists: the historically-valid server now offers no STARTTLS, so
    // the delivery is deferred instead of going out in clear ...
    let receiver = PlainReceiver::start();
    let log = exim_delivery("tiers-exim-held", &out, receiver.port);
    assert!(
        log.lines().any(|l| l.contains("== u@lab.example")
            && l.contains("defer (-38)")
            && l.contains("a TLS session is required, but the server did not offer TLS support")),
        "{log}"
    );
    assert!(!log.contains("=> u@lab.example"), "{log}");
    // ... while with the tier off (the default) the same delivery goes out in clear.
    let off = dir("tiers-out-off");
    feed(&off, &write_temp("tiers-off.toml", ""), "2026-11-11T11:00:01Z");
    assert_eq!(entries_of(&off.join("require_tls.list")), Vec::<String>::new());
    assert!(!off.join("tlsledger-promotions.json").exists(), "no promotion ledger without a tier");
    let log = exim_delivery("tiers-exim-open", &off, receiver.port);
    assert!(log.lines().any(|l| l.contains("=> u@lab.example") && l.contains("H=127.0.0.1")), "{log}");
}

#[test]
fn format_selects_the_groups_of_files_written() {
    let out = dir("format-out");
    let feed = generate("format", &log(), &out, &["--format", "exim,json"]);
    assert!(feed.status.success(), "{}", String::from_utf8_lossy(&feed.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        ["avoid_tls.list", "no_starttls_clients.list", "require_tls.list", "tlsledger-feed.json", "verify_tls.list"]
    );
    assert!(entries_of(&out.join("avoid_tls.list")).contains(&"192.0.2.40".to_owned()));
    // An index tool of a group that is not written is a usage error, before anything is written.
    let out = dir("format-postmap");
    let refused = generate("format-postmap", &log(), &out, &["--format", "exim", "--postmap", "hash"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("add postfix to --format"));
    assert!(!out.exists());
    let bad = generate("format-bad", &log(), &dir("format-bad-out"), &["--format", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
}
