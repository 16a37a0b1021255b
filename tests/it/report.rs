//! `tlsledger report`, the dashboards and the Grafana dashboard against real parts: a private
//! ClickHouse 18.16 (tests/harness/clickhouse.sh, test indexes 10 and 11) loaded by `tlsledger
//! parse --clickhouse` from a known log (tests/data/report/mail.log, whose expected numbers are
//! derived by hand in tests/data/report/README.md), headless Chromium for the HTML page, and
//! ClickHouse 26 in process (chdb) for the Grafana panels' SQL with the macros expanded and for
//! the dashboards over the same observations (the same TSV on both engines).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tlsledger::dashboards::{self, grafana, Params};
use tlsledger::sinks::clickhouse::{query, ClickhouseConfig};

use crate::clickhouse::Server;
use crate::common::{repo, tlsledger};

/// The end of the report range: the log's last day is 2026-11-28.
const NOW: &str = "2026-11-30T00:00:00Z";
const LOG: &str = "tests/data/report/mail.log";

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server with the schema in `database` and the known log loaded `loads` times (a reload
/// resends every row with the same event ids, as an at-least-once retry would).
fn loaded_server(index: u16, database: &str, loads: usize) -> Server {
    let server = Server::started(index);
    server.apply_schema(database);
    let spool = scratch(&format!("spool-{index}"));
    for _ in 0..loads {
        let output = tlsledger(
            &[
                "parse",
                "--output",
                "none",
                "--stats",
                "--tls-logging",
                "on",
                "--clickhouse",
                &server.url,
                "--database",
                database,
                "--spool-dir",
                spool.to_str().unwrap(),
                LOG,
            ],
            b"",
        );
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(crate::common::stat(&output.stderr, "clickhouse rows inserted"), 67);
    }
    server
}

fn report(server: &Server, database: &str, extra: &[&str]) -> Output {
    let mut args = vec!["report", "--clickhouse", &server.url, "--database", database, "--now", NOW];
    args.extend(extra);
    let output = tlsledger(&args, b"");
    assert!(output.status.success(), "report {extra:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn json_report(server: &Server, database: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--format", "json"];
    args.extend(extra);
    serde_json::from_slice(&report(server, database, &args).stdout).expect("report --format json is JSON")
}

/// The rows of dashboard `name`.
fn rows<'a>(report: &'a Value, name: &str) -> &'a Vec<Value> {
    report["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no dashboard {name}"))["rows"]
        .as_array()
        .unwrap()
}

/// `column` of every row, as compact JSON text (for order-sensitive comparisons).
fn column(rows: &[Value], column: &str) -> Vec<String> {
    rows.iter().map(|row| row[column].to_string()).collect()
}

#[test]
fn report_dashboards_give_the_hand_derived_numbers_of_the_known_log() {
    let server = loaded_server(10, "known", 2);
    let week = json_report(&server, "known", &["--since", "7d"]);
    assert_eq!(week["from"], "2026-11-23T00:00:00+00:00");
    assert_eq!(week["server"].as_str().unwrap().split('.').next(), Some("18"));
    assert_eq!(week["dashboards"].as_array().unwrap().len(), dashboards::FILES.len());

    // Protocol share (daily buckets for a 7-day range); the resent copy of the log counts once.
    let share = rows(&week, "protocol_share");
    let outbound: u64 =
        share.iter().filter(|r| r["direction"] == "outbound").map(|r| r["connections"].as_u64().unwrap()).sum();
    let inbound: u64 =
        share.iter().filter(|r| r["direction"] == "inbound").map(|r| r["connections"].as_u64().unwrap()).sum();
    assert_eq!((outbound, inbound), (16, 3));
    assert!(share.contains(&json!({"bucket": "2026-11-26 00:00:00", "direction": "outbound", "protocol": "TLSv1.1", "connections": 2, "share": 0.5})), "{share:#?}");
    let ciphers = rows(&week, "cipher_share");
    assert!(ciphers.contains(&json!({"bucket": "2026-11-26 00:00:00", "direction": "outbound", "cipher": "ECDHE-RSA-AES256-SHA", "connections": 3, "share": 0.75})), "{ciphers:#?}");

    // Weakest first; mx.mixed's weakest connection is TLSv1 (256 bits), its fewest bits 128.
    let weakest = rows(&week, "weakest_peers");
    assert_eq!(
        column(weakest, "peer"),
        ["\"192.0.2.20\"", "\"192.0.2.30\"", "\"192.0.2.60\"", "\"192.0.2.50\"", "\"198.51.100.7\"", "\"192.0.2.10\""]
    );
    assert_eq!(
        (&weakest[1]["weakest_protocol"], &weakest[1]["weakest_bits"], &weakest[1]["fewest_bits"]),
        (&json!("TLSv1"), &json!(256), &json!(128))
    );

    // Impact: only mx.old never negotiated more than TLSv1.1, and only it used nothing but the
    // cipher: 4 connections carrying 5 messages (one connection delivered two).
    for name in ["impact_protocol", "impact_cipher"] {
        let impact = rows(&week, name);
        assert_eq!(impact.len(), 1, "{name}: {impact:#?}");
        assert_eq!(
            (&impact[0]["peer"], &impact[0]["connections"], &impact[0]["messages"]),
            (&json!("192.0.2.20"), &json!(4), &json!(5))
        );
    }
    assert_eq!(rows(&week, "impact_protocol")[0]["best_protocol"], "TLSv1.1");
    let up_to_12 =
        json_report(&server, "known", &["--since", "7d", "--dashboard", "impact_protocol", "--protocol", "TLSv1.2"]);
    assert_eq!(up_to_12["dashboards"].as_array().unwrap().len(), 1);
    assert_eq!(
        column(rows(&up_to_12, "impact_protocol"), "peer"),
        ["\"192.0.2.20\"", "\"192.0.2.30\"", "\"192.0.2.60\"", "\"192.0.2.50\""]
    );
    let up_to_10 = json_report(&server, "known", &["--dashboard", "impact_protocol", "--protocol", "TLSv1"]);
    assert!(rows(&up_to_10, "impact_protocol").is_empty());
    let tls13 = json_report(&server, "known", &["--dashboard", "impact_cipher", "--cipher", "TLS_AES_256_GCM_SHA384"]);
    let tls13 = rows(&tls13, "impact_cipher");
    assert_eq!((tls13.len(), &tls13[0]["peer"], &tls13[0]["connections"]), (1, &json!("192.0.2.10"), &json!(6)));

    // Verification: never-verifying peers first.
    let verification = rows(&week, "verification");
    let rate = |domain: &str| {
        let row = verification.iter().find(|r| r["domain"] == domain).unwrap();
        (
            row["connections"].as_u64().unwrap(),
            row["verified_rate"].as_f64().unwrap(),
            row["trusted_or_verified_rate"].as_f64().unwrap(),
        )
    };
    assert_eq!(rate("old.example"), (4, 0.0, 0.0));
    assert_eq!(rate("cert.example"), (2, 0.5, 0.5));
    assert_eq!(rate("valid.example"), (6, 0.0, 1.0));
    assert_eq!(rate("mixed.example"), (3, 1.0, 1.0));
    assert_eq!(verification[0]["trusted_or_verified_rate"], 0.0);

    let failures = rows(&week, "handshake_failures");
    assert_eq!(column(failures, "peer"), ["\"192.0.2.50\"", "\"192.0.2.40\""]);
    assert_eq!(column(failures, "failures"), ["3", "2"]);

    // Broken STARTTLS: mx.broken never did TLS (one failure is enough, it had two); mx.flaky did
    // once, then failed three times, the latest two 8 hours apart.
    let broken = rows(&week, "broken_starttls");
    assert_eq!(column(broken, "peer"), ["\"192.0.2.50\"", "\"192.0.2.40\""]);
    assert_eq!(column(broken, "failures"), ["3", "2"]);
    assert_eq!(column(broken, "tls_successes"), ["1", "0"]);

    // Downgrades against the 30-day baseline before the range.
    let downgrades = rows(&week, "downgrades");
    let summary: Vec<(String, String, String)> = downgrades
        .iter()
        .map(|r| {
            (
                r["peer"].as_str().unwrap().into(),
                r["severity"].as_str().unwrap().into(),
                r["baseline"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("192.0.2.60", "medium", "historically-valid"),
        ("192.0.2.60", "low", "historically-valid"),
        ("198.51.100.7", "high", "tls-unverified"),
        ("192.0.2.10", "high", "historically-valid"),
    ];
    assert_eq!(summary, want.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned())));
    assert_eq!(downgrades[1]["reason"], "TLSv1 below the floor TLSv1.2");
    // A 2-day baseline is too short for any baseline: no downgrade then.
    let short = json_report(&server, "known", &["--since", "7d", "--dashboard", "downgrades", "--lookback-days", "2"]);
    assert!(rows(&short, "downgrades").is_empty());

    let inbound_share = rows(&week, "inbound_tls_share");
    assert_eq!(column(inbound_share, "share"), ["1.0", "1.0", "1.0", "0.0"]);
    let reuse = rows(&week, "session_reuse");
    let day = |bucket: &str| reuse.iter().find(|r| r["bucket"] == bucket && r["direction"] == "outbound").unwrap();
    assert_eq!((&day("2026-11-27 00:00:00")["reused"], &day("2026-11-27 00:00:00")["rate"]), (&json!(1), &json!(0.5)));
    assert_eq!(day("2026-11-26 00:00:00")["cached_connections"], 1);

    let plaintext = rows(&week, "plaintext_to_tls_domains");
    assert_eq!(plaintext.len(), 1, "{plaintext:#?}");
    assert_eq!(
        (
            &plaintext[0]["domain"],
            &plaintext[0]["messages"],
            &plaintext[0]["baseline_tls"],
            &plaintext[0]["baseline_tls_share"]
        ),
        (&json!("valid.example"), &json!(1), &json!(13), &json!(1.0))
    );

    // The last day only: the range moves every dashboard.
    let last_day = json_report(&server, "known", &["--since", "1d"]);
    for dashboard in last_day["dashboards"].as_array().unwrap() {
        assert!(dashboard["rows"].as_array().unwrap().is_empty(), "{dashboard:#}");
    }

    // A database without the schema: the first dashboard's failure names it and the server's error.
    let missing = tlsledger(&["report", "--clickhouse", &server.url, "--database", "nothing_here"], b"");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dashboard protocol_share (dashboards/01_protocol_share.sql) failed"), "{stderr}");

    // Tables: titles with the parameters, rows aligned.
    let table = String::from_utf8(report(&server, "known", &["--since", "7d"]).stdout).unwrap();
    assert!(table.contains("== Who breaks if protocols up to TLSv1.1 are disabled (impact_protocol)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("outbound   192.0.2.20  mx.old.example  old.example")), "{table}");
}

#[test]
fn report_rejects_bad_options_before_connecting() {
    // Port 9 (discard) is never a ClickHouse: validation must fail before any connection.
    let base = ["report", "--clickhouse", "http://127.0.0.1:9"];
    for (extra, message) in [
        (&["--cipher", "x' OR 1=1 --"][..], "invalid cipher name"),
        (&["--protocol", "TLSv1.9"], "unknown protocol"),
        (&["--since", "7x"], "--since"),
        (&["--since", "0d"], "--since"),
        (&["--bucket", "1s"], "bucket"),
        (&["--lookback-days", "0"], "lookback"),
        (&["--dashboard", "nope"], "unknown dashboard \"nope\""),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        let output = tlsledger(&args, b"");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    let output = tlsledger(&base, b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach ClickHouse"));
    let output = tlsledger(&["report"], b"");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--clickhouse URL is required"));
}

/// Runs headless Chromium on `page`: (screenshot, dumped DOM, console lines).
fn chromium(page: &Path, dir: &Path) -> (PathBuf, String, Vec<String>) {
    let shot = dir.join(format!("{}.png", page.file_stem().unwrap().to_string_lossy()));
    let url = format!("file://{}", page.display());
    let run = |mode: &str| {
        let output = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=900,1800"])
            .args(["--enable-logging=stderr", "--v=0"])
            .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
            .arg(mode)
            .arg(&url)
            .output()
            .expect("run chromium (tests/run.sh installs it: tests/harness/install-deps.sh report)");
        assert!(output.status.success(), "chromium {mode}: {}", String::from_utf8_lossy(&output.stderr));
        output
    };
    let screenshot = run(&format!("--screenshot={}", shot.display()));
    let dump = run("--dump-dom");
    let console = [&screenshot.stderr, &dump.stderr]
        .iter()
        .flat_map(|stderr| String::from_utf8_lossy(stderr).lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| line.contains(":CONSOLE"))
        .collect();
    (shot, String::from_utf8_lossy(&dump.stdout).into_owned(), console)
}

/// (non-white, saturated) pixels of a PNG (tests/harness/png_pixels.py).
fn pixels(png: &Path) -> (u64, u64) {
    let output = Command::new("python3").arg(repo().join("tests/harness/png_pixels.py")).arg(png).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u64> = text.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 4, "{text}");
    (numbers[2], numbers[3])
}

#[test]
fn report_html_renders_its_charts_in_chromium_and_grafana_panels_match_the_report() {
    let server = loaded_server(11, "html", 1);
    let dir = scratch("html");

    // The page: one self-contained file with an SVG chart per time-series facet and bar dashboard.
    let page = dir.join("report.html");
    report(&server, "html", &["--since", "7d", "--format", "html", "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<script", "src=", "href=", "url(", "@import", "http://", "https://"] {
        assert!(!html.contains(external), "the page refers to something outside it: {external}");
    }
    let charts = html.matches("<svg class=\"chart\"").count();
    // protocol_share, cipher_share: inbound + outbound; inbound_tls_share: 1; session_reuse: 2;
    // bars: weakest_peers, impact x2, verification, handshake_failures, broken_starttls,
    // downgrades, plaintext_to_tls_domains.
    assert_eq!(charts, 2 + 2 + 1 + 2 + 8);
    let (shot, dom, console) = chromium(&page, &dir);
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), charts, "Chromium parsed a different page");
    let (non_white, saturated) = pixels(&shot);
    // The first screen holds the two protocol-share charts: thousands of coloured bar pixels.
    assert!(saturated > 20_000 && non_white > saturated, "blank charts? {non_white} non-white, {saturated} coloured");

    // Controls that prove both checks can fail: a report without rows has no chart pixels, and a
    // page with a script error shows on the console.
    let empty = dir.join("empty.html");
    report(&server, "html", &["--since", "1d", "--format", "html", "--out", empty.to_str().unwrap()]);
    let (empty_shot, _, empty_console) = chromium(&empty, &dir);
    assert!(empty_console.is_empty(), "{empty_console:#?}");
    let (empty_non_white, empty_saturated) = pixels(&empty_shot);
    assert!(empty_non_white > 0 && empty_saturated == 0, "{empty_non_white} {empty_saturated}");
    let broken = dir.join("broken.html");
    std::fs::write(&broken, "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>").unwrap();
    let (_, _, broken_console) = chromium(&broken, &dir);
    assert!(broken_console.iter().any(|l| l.contains("undefinedFunction")), "{broken_console:#?}");

    // Every Grafana panel's SQL, with the macros expanded as the plugin expands them, returns
    // exactly the report's rows for the same range and variables.
    let week = json_report(&server, "html", &["--since", "7d"]);
    let grafana: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("dashboards/grafana/tlsledger.json")).unwrap())
            .unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(NOW).unwrap().timestamp();
    let params = Params {
        from: now - 7 * 86_400,
        to: now,
        bucket_s: 86_400,
        lookback_days: 30,
        protocol: "TLSv1.1".into(),
        cipher: "ECDHE-RSA-AES256-SHA".into(),
    };
    let config = ClickhouseConfig::new(&server.url, Some("html"), None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let all = dashboards::all().unwrap();
    let panels = grafana["panels"].as_array().unwrap();
    assert_eq!(panels.len(), all.len());
    let chdb_dir = scratch("grafana-chdb");
    for (panel, dashboard) in panels.iter().zip(&all) {
        let raw = panel["targets"][0]["rawSql"].as_str().unwrap();
        let sql = expand_grafana(raw, &params);
        let table = runtime
            .block_on(query::select(&config.client(false), &sql, 60))
            .unwrap_or_else(|e| panic!("{}: {e:#}", dashboard.name));
        let want: Vec<Vec<Value>> = rows(&week, &dashboard.name)
            .iter()
            .map(|row| table.columns.iter().map(|c| row[&c.name].clone()).collect())
            .collect();
        assert_eq!(table.rows, want, "panel {} differs from the report", dashboard.name);
        // The same panel on ClickHouse 26, over the sample rows (2026-11-30).
        let chdb_params = Params { from: 1_795_564_800, to: 1_796_169_600, bucket_s: 3_600, ..params.clone() };
        std::fs::write(chdb_dir.join(dashboard.file), format!("{};\n", expand_grafana(raw, &chdb_params))).unwrap();
    }
    let output = Command::new("python3")
        .arg(repo().join("tests/harness/chdb_check.py"))
        .args(["--params", "retention_days=400"])
        .args(["schema/portable", "tests/data/clickhouse/sample.sql", "schema/modern"])
        .arg(&chdb_dir)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Grafana panels on ClickHouse 26 (chdb):\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("OK") && l.contains("grafana-chdb")).count(), all.len(), "{text}");

    // The dashboards themselves over the same observations on ClickHouse 26.
    dashboards_agree_on_both_engines(&server, "html", &params);
}

/// The dashboards on ClickHouse 26 (chdb) over the same observations as `server`'s `database`,
/// exported from 18.16 and loaded into chdb: every dashboard gives the same TSV on both engines.
fn dashboards_agree_on_both_engines(server: &Server, database: &str, params: &Params) {
    let dir = scratch("engines");
    let names = tlsledger::sinks::clickhouse::row::COLUMNS;
    let select: Vec<String> = names
        .iter()
        .map(|c| if *c == "peer_ip" { "IPv6NumToString(peer_ip) AS peer_ip".to_owned() } else { (*c).to_owned() })
        .collect();
    let export = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--data-binary"])
        .arg(format!("SELECT {} FROM observations FINAL FORMAT JSONEachRow", select.join(", ")))
        .arg(format!("{}/?database={database}&output_format_json_quote_64bit_integers=0", server.url))
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stdout));
    let rows = dir.join("observations.jsonl");
    std::fs::write(&rows, &export.stdout).unwrap();
    // Enums and DateTimes come as text (their names and `YYYY-MM-DD hh:mm:ss`), the address as
    // text converted back to 16 bytes: the INSERT's SELECT casts each to the column's type.
    let types = server.query_in(
        database,
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'observations'",
    );
    let structure: Vec<String> = types
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(name, kind)| {
            let text = name == "peer_ip" || kind.starts_with("Enum") || kind.starts_with("DateTime");
            format!("{name} {}", if text { "String" } else { kind })
        })
        .collect();
    let converted: Vec<String> = names
        .iter()
        .map(|c| if *c == "peer_ip" { "IPv6StringToNum(peer_ip)".to_owned() } else { (*c).to_owned() })
        .collect();
    let table = format!(
        "observations ({}) SELECT {} FROM input('{}')",
        names.join(", "),
        converted.join(", "),
        structure.join(", ")
    );
    let all = dashboards::all().unwrap();
    let mut expected = Vec::new();
    for dashboard in &all {
        let sql = params.render(&dashboard.sql).unwrap();
        std::fs::write(dir.join(dashboard.file), format!("{sql};\n")).unwrap();
        expected.push(server.query_in(database, &format!("{sql}\nFORMAT TSV")));
    }
    let output = Command::new("python3")
        .arg(repo().join("tests/harness/chdb_check.py"))
        .args(["--params", "retention_days=400", "--show", "--sample-data"])
        .arg(&rows)
        .args(["--table", &table, "schema/portable", "schema/modern"])
        .arg(&dir)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "dashboards on chdb:\n{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("(67 rows into observations"), "{text}");
    assert!(expected.iter().all(|tsv| !tsv.is_empty()), "every dashboard has rows in this range");
    for (dashboard, want) in all.iter().zip(expected) {
        // chdb_check.py names a file relative to the repository when it is inside it (a target
        // folder in the checkout), else as given: match the folder and file name only.
        let folder = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tail = format!("{folder}/{}", dashboard.file);
        let got: Vec<&str> = text
            .lines()
            .skip_while(|l| !(l.starts_with("-- ") && l.contains(&format!("{tail}:"))))
            .skip(1)
            .take_while(|l| !(l.starts_with("OK   ") && l.contains(&tail)))
            .collect();
        let got = if got.iter().all(|l| l.is_empty()) { String::new() } else { format!("{}\n", got.join("\n")) };
        assert_eq!(got, want, "{}: ClickHouse 26 and 18.16 differ", dashboard.name);
    }
}

/// `raw` with the Grafana ClickHouse plugin's macros expanded as its pkg/macros/macros.go does
/// (`$__fromTime` → `toDateTime(<unix>)`, `$__interval_s` → seconds) and the dashboard variables
/// as Grafana formats them (`${v:sqlstring}`: quoted, `'` doubled).
fn expand_grafana(raw: &str, params: &Params) -> String {
    let sqlstring = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let sql = raw
        .replace("$__fromTime", &format!("toDateTime({})", params.from))
        .replace("$__toTime", &format!("toDateTime({})", params.to))
        .replace("$__interval_s", &params.bucket_s.to_string())
        .replace("${lookback_days}", &params.lookback_days.to_string())
        .replace("${protocol:sqlstring}", &sqlstring(&params.protocol))
        .replace("${cipher:sqlstring}", &sqlstring(&params.cipher));
    assert!(!sql.contains('$'), "an unexpanded macro or variable in: {sql}");
    sql
}

#[test]
fn grafana_dashboard_and_provisioning_are_valid() {
    let text = std::fs::read_to_string(repo().join("dashboards/grafana/tlsledger.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("tlsledger.json is JSON");
    assert_eq!(dashboard["uid"], grafana::DASHBOARD_UID);
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable =
        |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no variable {name}"));
    assert_eq!(
        (&variable("datasource")["type"], &variable("datasource")["query"]),
        (&json!("datasource"), &json!(grafana::PLUGIN))
    );
    assert_eq!(variable("datasource")["current"]["value"], grafana::DATASOURCE_UID);
    for name in ["lookback_days", "protocol", "cipher"] {
        assert!(variable(name)["current"]["value"].is_string(), "{name}");
    }

    let all = dashboards::all().unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert_eq!(panels.len(), all.len(), "one panel per dashboards/*.sql");
    let mut ids = std::collections::BTreeSet::new();
    let mut cells = std::collections::BTreeSet::new();
    for (panel, sql_dashboard) in panels.iter().zip(&all) {
        let name = &sql_dashboard.name;
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{name}: duplicate id");
        assert!(["timeseries", "table"].contains(&panel["type"].as_str().unwrap()), "{name}");
        assert!(!panel["title"].as_str().unwrap().is_empty(), "{name}");
        let datasource = json!({"type": grafana::PLUGIN, "uid": "${datasource}"});
        assert_eq!(panel["datasource"], datasource, "{name}");
        let grid = &panel["gridPos"];
        let (x, y, w, h) = (
            grid["x"].as_u64().unwrap(),
            grid["y"].as_u64().unwrap(),
            grid["w"].as_u64().unwrap(),
            grid["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{name}: {grid}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{name} overlaps another panel at ({cx}, {cy})");
            }
        }
        let targets = panel["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{name}");
        let target = &targets[0];
        assert_eq!(
            (&target["datasource"], &target["refId"], &target["queryType"]),
            (&datasource, &json!("A"), &json!("sql")),
            "{name}"
        );
        let raw = target["rawSql"].as_str().unwrap();
        // Only the macros that work on 18.16 (research/PIPELINE.md §4).
        for forbidden in ["$__timeInterval", "$__timeGroup", "_ms", "toStartOfInterval", "$__timeFilter_ms"] {
            assert!(!raw.contains(forbidden), "{name} uses {forbidden}");
        }
        assert!(raw.contains("$__fromTime") && raw.contains("$__toTime"), "{name}");
        assert_eq!(
            raw,
            dashboards::grafana_sql(&sql_dashboard.sql).unwrap(),
            "{name}: the panel's SQL is not the file's"
        );
    }

    let datasources =
        std::fs::read_to_string(repo().join("dashboards/grafana/provisioning/datasources/tlsledger-clickhouse.yaml"))
            .unwrap();
    assert!(datasources.contains("apiVersion: 1"));
    assert!(datasources.contains(&format!("type: {}", grafana::PLUGIN)));
    assert!(datasources.contains(&format!("uid: {}", grafana::DATASOURCE_UID)));
    assert!(datasources.contains("protocol: http") && datasources.contains("defaultDatabase: tlsledger"));
    let providers =
        std::fs::read_to_string(repo().join("dashboards/grafana/provisioning/dashboards/tlsledger.yaml")).unwrap();
    assert!(providers.contains("apiVersion: 1") && providers.contains("type: file") && providers.contains("path: "));
}
