//! The dashboard queries of `dashboards/*.sql`, compiled in: their headers, their placeholders
//! and the one place that fills those placeholders with validated, quoted values.
//!
//! Each file is one named, commented query over `observations` (dashboards/README.md):
//!
//! ```text
//! -- name: protocol_share
//! -- title: TLS protocol share over time
//! -- chart: timeseries x=bucket y=connections series=protocol facet=direction
//! --
//! -- What it answers and how it derives it.
//! SELECT ... WHERE ts >= {from} AND ts < {to} ...
//! ```
//!
//! ClickHouse 18.16 has no query parameters, so placeholders are text: [`Params::render`]
//! replaces each `{name}` with a complete SQL literal built here from validated values (numbers,
//! a protocol from a closed list, a cipher name of cipher characters, quoted and escaped anyway).
//! An unknown placeholder is an error, never passed through. [`grafana_sql`] maps the same
//! placeholders to the Grafana ClickHouse plugin's macros that work on old servers.

pub mod grafana;

use anyhow::{bail, Context, Result};

/// Every dashboard file, in name order: (file name, text).
pub const FILES: &[(&str, &str)] = &[
    ("01_protocol_share.sql", include_str!("../../dashboards/01_protocol_share.sql")),
    ("02_cipher_share.sql", include_str!("../../dashboards/02_cipher_share.sql")),
    ("03_weakest_peers.sql", include_str!("../../dashboards/03_weakest_peers.sql")),
    ("04_impact_protocol.sql", include_str!("../../dashboards/04_impact_protocol.sql")),
    ("05_impact_cipher.sql", include_str!("../../dashboards/05_impact_cipher.sql")),
    ("06_verification.sql", include_str!("../../dashboards/06_verification.sql")),
    ("07_handshake_failures.sql", include_str!("../../dashboards/07_handshake_failures.sql")),
    ("08_broken_starttls.sql", include_str!("../../dashboards/08_broken_starttls.sql")),
    ("09_downgrades.sql", include_str!("../../dashboards/09_downgrades.sql")),
    ("10_inbound_tls_share.sql", include_str!("../../dashboards/10_inbound_tls_share.sql")),
    ("11_session_reuse.sql", include_str!("../../dashboards/11_session_reuse.sql")),
    ("12_plaintext_to_tls_domains.sql", include_str!("../../dashboards/12_plaintext_to_tls_domains.sql")),
];

/// The placeholders a dashboard may use (dashboards/README.md "Placeholders").
pub const PLACEHOLDERS: &[&str] = &["from", "to", "bucket_s", "lookback_days", "protocol", "cipher"];

/// The protocol names `{protocol}` accepts (the ranks of the schema's rollup).
pub const PROTOCOLS: &[&str] = &["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// How a dashboard is drawn in the HTML report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chart {
    /// Table only.
    None,
    /// Values over time buckets: one bar per `x`, stacked by `series`, one chart per `facet` value.
    TimeSeries {
        /// The time column.
        x: String,
        /// The value column.
        y: String,
        /// The column whose values stack.
        series: Option<String>,
        /// The column whose values get a chart each.
        facet: Option<String>,
    },
    /// One horizontal bar per row (the first rows): `label` and its `y`.
    Bars {
        /// The label column.
        label: String,
        /// The value column.
        y: String,
    },
}

/// One dashboard query.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file name, e.g. `01_protocol_share.sql`.
    pub file: &'static str,
    /// The `name:` header: the key in JSON output and the Grafana panel's identity.
    pub name: String,
    /// The `title:` header, placeholders unfilled.
    pub title: String,
    /// The `chart:` header.
    pub chart: Chart,
    /// The free comment lines after the headers, joined with spaces per paragraph.
    pub description: String,
    /// The query without its leading comment lines, placeholders unfilled.
    pub sql: String,
}

impl Dashboard {
    /// Parses one file.
    pub fn parse(file: &'static str, text: &str) -> Result<Dashboard> {
        let mut name = None;
        let mut title = None;
        let mut chart = None;
        let mut description = String::new();
        let mut body = Vec::new();
        let mut in_header = true;
        for line in text.lines() {
            if in_header {
                if let Some(comment) = line.strip_prefix("--") {
                    let comment = comment.trim();
                    if let Some(value) = comment.strip_prefix("name:") {
                        name = Some(value.trim().to_owned());
                    } else if let Some(value) = comment.strip_prefix("title:") {
                        title = Some(value.trim().to_owned());
                    } else if let Some(value) = comment.strip_prefix("chart:") {
                        chart = Some(parse_chart(value.trim()).with_context(|| format!("dashboards/{file}: chart"))?);
                    } else if comment.is_empty() {
                        if !description.is_empty() && !description.ends_with('\n') {
                            description.push('\n');
                        }
                    } else {
                        if !description.is_empty() && !description.ends_with('\n') {
                            description.push(' ');
                        }
                        description.push_str(comment);
                    }
                    continue;
                }
                if line.trim().is_empty() {
                    continue;
                }
                in_header = false;
            }
            body.push(line);
        }
        let name = name.with_context(|| format!("dashboards/{file}: no `-- name:` header"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            bail!("dashboards/{file}: the name {name:?} must be lower-case letters, digits and _");
        }
        let sql = body.join("\n").trim().trim_end_matches(';').trim_end().to_owned();
        if sql.is_empty() {
            bail!("dashboards/{file}: no query");
        }
        for placeholder in placeholders(&sql)? {
            if !PLACEHOLDERS.contains(&placeholder) {
                bail!("dashboards/{file}: unknown placeholder {{{placeholder}}} (known: {})", PLACEHOLDERS.join(", "));
            }
        }
        Ok(Dashboard {
            file,
            title: title.with_context(|| format!("dashboards/{file}: no `-- title:` header"))?,
            chart: chart.unwrap_or(Chart::None),
            description: description.trim().to_owned(),
            name,
            sql,
        })
    }

    /// The title with its placeholders shown as the values (`TLSv1.1`, not `'TLSv1.1'`).
    pub fn display_title(&self, params: &Params) -> String {
        params.display(&self.title)
    }

    /// The description with its placeholders shown as the values.
    pub fn display_description(&self, params: &Params) -> String {
        params.display(&self.description)
    }
}

/// Every dashboard, in file order.
pub fn all() -> Result<Vec<Dashboard>> {
    let dashboards = FILES.iter().map(|(file, text)| Dashboard::parse(file, text)).collect::<Result<Vec<_>>>()?;
    for (i, dashboard) in dashboards.iter().enumerate() {
        if dashboards[..i].iter().any(|d| d.name == dashboard.name) {
            bail!("dashboards/{}: the name {} is used twice", dashboard.file, dashboard.name);
        }
    }
    Ok(dashboards)
}

fn parse_chart(text: &str) -> Result<Chart> {
    let mut words = text.split_whitespace();
    let kind = words.next().unwrap_or("none");
    let mut options = std::collections::BTreeMap::new();
    for word in words {
        let (key, value) = word.split_once('=').with_context(|| format!("expected key=value, got {word:?}"))?;
        options.insert(key, value.to_owned());
    }
    let mut take = |key: &str| options.remove(key);
    let chart = match kind {
        "none" => Chart::None,
        "timeseries" => Chart::TimeSeries {
            x: take("x").context("timeseries needs x=")?,
            y: take("y").context("timeseries needs y=")?,
            series: take("series"),
            facet: take("facet"),
        },
        "bars" => {
            Chart::Bars { label: take("label").context("bars needs label=")?, y: take("y").context("bars needs y=")? }
        }
        other => bail!("unknown chart kind {other:?} (none, timeseries, bars)"),
    };
    if let Some(key) = options.keys().next() {
        bail!("unknown chart option {key:?}");
    }
    Ok(chart)
}

/// The `{name}` placeholders of `sql`, in order (repeats included).
pub fn placeholders(sql: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = sql;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}').context("a `{` without its `}`")?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            bail!("bad placeholder {{{name}}}");
        }
        out.push(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// The values of the placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Start of the range, Unix seconds (inclusive).
    pub from: i64,
    /// End of the range, Unix seconds (exclusive).
    pub to: i64,
    /// Width of a time bucket in seconds.
    pub bucket_s: u32,
    /// Days before `from` that make the baseline.
    pub lookback_days: u32,
    /// The protocol of the impact analysis: peers that never negotiated anything stronger.
    pub protocol: String,
    /// The cipher of the impact analysis: peers that never negotiated another.
    pub cipher: String,
}

/// DateTime's range on every server version (UInt32 seconds).
const MAX_SECONDS: i64 = u32::MAX as i64;

impl Params {
    /// Checks every value; the errors say which option is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.from < 0 || self.to > MAX_SECONDS || self.from >= self.to {
            bail!(
                "the time range must be non-empty and within 1970-01-01..2106-02-07 (from {} to {})",
                self.from,
                self.to
            );
        }
        if !(60..=31 * 86_400).contains(&self.bucket_s) {
            bail!("the bucket must be between 60 seconds and 31 days (got {} seconds)", self.bucket_s);
        }
        if !(1..=3650).contains(&self.lookback_days) {
            bail!("the lookback must be 1 to 3650 days (got {})", self.lookback_days);
        }
        if !PROTOCOLS.contains(&self.protocol.as_str()) {
            bail!("unknown protocol {:?} (one of {})", self.protocol, PROTOCOLS.join(", "));
        }
        if self.cipher.is_empty()
            || self.cipher.len() > 100
            || !self.cipher.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '='))
        {
            bail!("invalid cipher name {:?} (letters, digits and - _ . + =, at most 100)", self.cipher);
        }
        Ok(())
    }

    /// `sql` with every placeholder replaced by its SQL literal; validates first.
    pub fn render(&self, sql: &str) -> Result<String> {
        self.validate()?;
        let mut out = String::with_capacity(sql.len() + 64);
        let mut rest = sql;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('}').context("a `{` without its `}`")?;
            out.push_str(&self.literal(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn literal(&self, name: &str) -> Result<String> {
        Ok(match name {
            "from" => format!("toDateTime({})", self.from),
            "to" => format!("toDateTime({})", self.to),
            "bucket_s" => self.bucket_s.to_string(),
            "lookback_days" => self.lookback_days.to_string(),
            "protocol" => quote(&self.protocol),
            "cipher" => quote(&self.cipher),
            other => bail!("unknown placeholder {{{other}}}"),
        })
    }

    /// `text` (a title or description) with every placeholder shown as its value.
    pub fn display(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, value) in self.display_values() {
            text = text.replace(&format!("{{{name}}}"), &value);
        }
        text
    }

    /// (name, value as shown to people) of every placeholder.
    pub fn display_values(&self) -> Vec<(&'static str, String)> {
        let time = |seconds: i64| {
            chrono::DateTime::from_timestamp(seconds, 0).map_or_else(|| seconds.to_string(), |t| t.to_rfc3339())
        };
        vec![
            ("from", time(self.from)),
            ("to", time(self.to)),
            ("bucket_s", self.bucket_s.to_string()),
            ("lookback_days", self.lookback_days.to_string()),
            ("protocol", self.protocol.clone()),
            ("cipher", self.cipher.clone()),
        ]
    }
}

/// A ClickHouse string literal: `'` and `\` escaped with a backslash, as ClickHouse reads them.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// `sql` for the Grafana ClickHouse data source plugin: placeholders become the plugin's macros
/// and dashboard variables that work on ClickHouse 18.16 (research/PIPELINE.md §4).
pub fn grafana_sql(sql: &str) -> Result<String> {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('}').context("a `{` without its `}`")?;
        out.push_str(match &after[..end] {
            "from" => "$__fromTime",
            "to" => "$__toTime",
            "bucket_s" => "$__interval_s",
            "lookback_days" => "${lookback_days}",
            "protocol" => "${protocol:sqlstring}",
            "cipher" => "${cipher:sqlstring}",
            other => bail!("unknown placeholder {{{other}}}"),
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `7d`, `12h`, `30m`, `90s`, `2w` into seconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().with_context(|| format!("invalid duration {text:?} (e.g. 7d, 12h, 30m)"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("invalid duration {text:?}: the unit must be s, m, h, d or w (e.g. 7d, 12h)"),
    };
    let seconds = number.checked_mul(unit_s).filter(|s| *s > 0 && *s <= MAX_SECONDS);
    seconds.with_context(|| format!("duration {text:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            from: 1_795_564_800,
            to: 1_796_169_600,
            bucket_s: 3_600,
            lookback_days: 30,
            protocol: "TLSv1.1".to_owned(),
            cipher: "ECDHE-RSA-AES256-SHA".to_owned(),
        }
    }

    #[test]
    fn every_dashboard_file_is_listed_and_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = FILES.iter().map(|(file, _)| *file).collect();
        assert_eq!(on_disk, listed, "dashboards/*.sql and FILES differ");
        let dashboards = all().unwrap();
        for dashboard in &dashboards {
            assert!(!dashboard.description.is_empty(), "{}", dashboard.file);
            let rendered = params().render(&dashboard.sql).unwrap();
            assert!(!rendered.contains('{') && !rendered.contains('}'), "{rendered}");
            assert!(grafana_sql(&dashboard.sql).is_ok(), "{}", dashboard.file);
        }
    }

    #[test]
    fn headers_and_charts_parse() {
        let text = "-- name: x_1\n-- title: T {protocol}\n-- chart: bars label=peer y=n\n--\n-- One.\n-- Two.\n--\n-- Three.\nSELECT 1;\n";
        let dashboard = Dashboard::parse("x.sql", text).unwrap();
        assert_eq!(dashboard.name, "x_1");
        assert_eq!(dashboard.chart, Chart::Bars { label: "peer".into(), y: "n".into() });
        assert_eq!(dashboard.description, "One. Two.\nThree.");
        assert_eq!(dashboard.sql, "SELECT 1");
        assert_eq!(dashboard.display_title(&params()), "T TLSv1.1");
        for bad in [
            "-- title: t\nSELECT 1",
            "-- name: Bad Name\n-- title: t\nSELECT 1",
            "-- name: a\n-- title: t\n-- chart: pie\nSELECT 1",
            "-- name: a\n-- title: t\n-- chart: bars label=x\nSELECT 1",
            "-- name: a\n-- title: t\nSELECT {evil}",
            "-- name: a\n-- title: t\nSELECT {from",
            "-- name: a\n-- title: t\n",
        ] {
            assert!(Dashboard::parse("bad.sql", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_validated_and_quoted() {
        let p = params();
        assert_eq!(
            p.render("{from} {to} {bucket_s} {lookback_days} {protocol} {cipher}").unwrap(),
            "toDateTime(1795564800) toDateTime(1796169600) 3600 30 'TLSv1.1' 'ECDHE-RSA-AES256-SHA'"
        );
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        let bad = [
            Params { cipher: "x' OR 1=1 --".into(), ..params() },
            Params { cipher: String::new(), ..params() },
            Params { cipher: "\u{e9}".into(), ..params() },
            Params { protocol: "TLSv1.4".into(), ..params() },
            Params { from: 10, to: 10, ..params() },
            Params { to: MAX_SECONDS + 1, ..params() },
            Params { bucket_s: 1, ..params() },
            Params { lookback_days: 0, ..params() },
        ];
        for p in bad {
            assert!(p.render("SELECT {cipher}").is_err(), "{p:?}");
        }
        assert!(params().render("SELECT {nope}").is_err());
    }

    #[test]
    fn grafana_macros_replace_placeholders() {
        assert_eq!(
            grafana_sql("ts >= {from} AND ts < {to} {bucket_s} {lookback_days} {protocol} {cipher}").unwrap(),
            "ts >= $__fromTime AND ts < $__toTime $__interval_s ${lookback_days} ${protocol:sqlstring} ${cipher:sqlstring}"
        );
        assert!(grafana_sql("{x}").is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        let samples = [
            "{",
            "}{",
            "{}",
            "{{from}}",
            "{fr\u{e9}m}",
            "\u{0}\u{1b}[2J{cipher",
            "7\u{e9}d",
            "99999999999999999999999999w",
            "-- name: a\n-- title: t\n-- chart: timeseries x=\nSELECT {from}",
        ];
        for sample in samples {
            for end in 0..=sample.len() {
                let Some(prefix) = sample.get(..end) else { continue };
                let _ = parse_duration(prefix);
                let _ = placeholders(prefix);
                let _ = params().render(prefix);
                let _ = grafana_sql(prefix);
                let _ = Dashboard::parse("x.sql", prefix);
            }
        }
        let oversized = "{from} ".repeat(100_000);
        assert_eq!(params().render(&oversized).unwrap().matches("toDateTime(1795564800)").count(), 100_000);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600);
        assert_eq!(parse_duration("30m").unwrap(), 1_800);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        for bad in ["", "d", "7", "7x", "-7d", "0d", "99999999999999999999d", "7 d", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
