//! `tlsledger report`'s output: the results of the dashboard queries as terminal tables, as one
//! JSON document, or as one self-contained HTML page with SVG charts (`html.rs`).
//!
//! A [`Report`] is built by `commands/report.rs` (which runs the queries through
//! `sinks::clickhouse::query`); everything here is pure formatting. Cell values come from the
//! database and ultimately from log lines, so they are hostile text: terminal output replaces
//! control characters, HTML output escapes everything.
//!
//! The JSON form is a documented interface (README "tlsledger report"): one object with the
//! range, the parameters and `dashboards`, an array with one object per dashboard
//! (`name`, `title`, `description`, `file`, `columns`, `rows`; each row an object keyed by
//! column name).
//! Fields are only ever added.

pub mod html;

use serde_json::{json, Map, Value};

use crate::dashboards::{Dashboard, Params};
use crate::sinks::clickhouse::query::ResultTable;

/// One dashboard's result.
#[derive(Debug, Clone)]
pub struct Section {
    /// The query.
    pub dashboard: Dashboard,
    /// Its title with the parameter values filled in.
    pub title: String,
    /// Its description with the parameter values filled in.
    pub description: String,
    /// Its rows.
    pub table: ResultTable,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// When the report was made (Unix seconds).
    pub generated_at: i64,
    /// The placeholders' values (range, bucket, lookback, impact protocol and cipher).
    pub params: Params,
    /// `version()` of the server.
    pub server_version: String,
    /// The database read.
    pub database: String,
    /// One section per dashboard, in file order.
    pub sections: Vec<Section>,
}

/// RFC 3339 text of Unix seconds.
pub fn time_text(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(|| seconds.to_string(), |t| t.to_rfc3339())
}

impl Report {
    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let dashboards: Vec<Value> = self
            .sections
            .iter()
            .map(|section| {
                let rows: Vec<Value> = section
                    .table
                    .rows
                    .iter()
                    .map(|row| {
                        let object: Map<String, Value> = section
                            .table
                            .columns
                            .iter()
                            .zip(row)
                            .map(|(column, value)| (column.name.clone(), value.clone()))
                            .collect();
                        Value::Object(object)
                    })
                    .collect();
                json!({
                    "name": section.dashboard.name,
                    "title": section.title,
                    "description": section.description,
                    "file": format!("dashboards/{}", section.dashboard.file),
                    "columns": section.table.columns,
                    "rows": rows,
                })
            })
            .collect();
        json!({
            "generated_at": time_text(self.generated_at),
            "from": time_text(self.params.from),
            "to": time_text(self.params.to),
            "server": self.server_version,
            "database": self.database,
            "params": {
                "bucket_s": self.params.bucket_s,
                "lookback_days": self.params.lookback_days,
                "protocol": self.params.protocol,
                "cipher": self.params.cipher,
            },
            "dashboards": dashboards,
        })
    }

    /// Plain-text tables, at most `max_rows` rows per dashboard.
    pub fn to_table(&self, max_rows: usize) -> String {
        let mut out = format!(
            "tlsledger report: {} to {} (ClickHouse {}, database {})\n",
            time_text(self.params.from),
            time_text(self.params.to),
            self.server_version,
            self.database
        );
        for section in &self.sections {
            out.push_str(&format!("\n== {} ({})\n", terminal_safe(&section.title), section.dashboard.name));
            out.push_str(&text_table(&section.table, max_rows));
        }
        out
    }
}

/// A cell as text: strings as they are, arrays joined with `, `, null empty.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `text` without control characters (escape sequences in log-derived text must not reach a
/// terminal), cut to `max` characters.
fn terminal_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The width limit of one cell in the terminal.
const MAX_CELL: usize = 48;

fn text_table(table: &ResultTable, max_rows: usize) -> String {
    if table.rows.is_empty() {
        return "(no rows)\n".to_owned();
    }
    let header: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let cells: Vec<Vec<String>> = table
        .rows
        .iter()
        .take(max_rows)
        .map(|row| row.iter().map(|v| cut(&terminal_safe(&cell_text(v)), MAX_CELL)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = table.rows.first().map_or_else(Vec::new, |row| row.iter().map(Value::is_number).collect());
    let line = |row: &[String]| {
        let parts: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&header);
    out.push_str(&line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>()));
    for row in &cells {
        out.push_str(&line(row));
    }
    if table.rows.len() > max_rows {
        out.push_str(&format!("({} more rows; --max-rows or --format json shows them)\n", table.rows.len() - max_rows));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sinks::clickhouse::query::Column;

    pub(crate) fn sample() -> Report {
        let dashboards = crate::dashboards::all().unwrap();
        let params = Params {
            from: 1_795_564_800,
            to: 1_796_169_600,
            bucket_s: 86_400,
            lookback_days: 30,
            protocol: "TLSv1.1".into(),
            cipher: "ECDHE-RSA-AES256-SHA".into(),
        };
        let column = |name: &str, kind: &str| Column { name: name.into(), kind: kind.into() };
        let share = ResultTable {
            columns: vec![
                column("bucket", "DateTime('UTC')"),
                column("direction", "Enum8"),
                column("protocol", "String"),
                column("connections", "UInt64"),
                column("share", "Float64"),
            ],
            rows: vec![
                vec![json!("2026-11-23 00:00:00"), json!("outbound"), json!("TLSv1.3"), json!(3), json!(0.75)],
                vec![json!("2026-11-23 00:00:00"), json!("outbound"), json!("TLSv1"), json!(1), json!(0.25)],
                vec![json!("2026-11-24 00:00:00"), json!("inbound"), json!("TLSv1.3"), json!(2), json!(1)],
            ],
        };
        let peers = ResultTable {
            columns: vec![column("peer", "String"), column("hostname", "String"), column("messages", "UInt64")],
            rows: vec![
                vec![json!("192.0.2.20"), json!("<script>alert(1)</script>\u{1b}[2J"), json!(5)],
                vec![json!("192.0.2.30"), json!("mx & co"), json!(2)],
            ],
        };
        let sections = dashboards
            .into_iter()
            .map(|dashboard| {
                let table = match dashboard.name.as_str() {
                    "protocol_share" => share.clone(),
                    "impact_protocol" => peers.clone(),
                    _ => ResultTable::default(),
                };
                Section {
                    title: dashboard.display_title(&params),
                    description: dashboard.display_description(&params),
                    dashboard,
                    table,
                }
            })
            .collect();
        Report {
            generated_at: 1_796_169_600,
            params,
            server_version: "18.16.1".into(),
            database: "tlsledger".into(),
            sections,
        }
    }

    #[test]
    fn json_has_one_object_per_dashboard_with_rows_by_column() {
        let value = sample().to_json();
        let dashboards = value["dashboards"].as_array().unwrap();
        assert_eq!(dashboards.len(), crate::dashboards::FILES.len());
        let share = dashboards.iter().find(|d| d["name"] == "protocol_share").unwrap();
        assert_eq!(share["rows"][0]["protocol"], "TLSv1.3");
        assert_eq!(share["rows"][0]["connections"], 3);
        assert_eq!(value["params"]["protocol"], "TLSv1.1");
        assert_eq!(value["from"], "2026-11-25T00:00:00+00:00");
        let impact = dashboards.iter().find(|d| d["name"] == "impact_protocol").unwrap();
        assert_eq!(impact["title"], "Who breaks if protocols up to TLSv1.1 are disabled");
    }

    #[test]
    fn tables_align_cut_and_strip_control_characters() {
        let text = sample().to_table(1);
        assert!(text.contains("== TLS protocol share over time (protocol_share)"), "{text}");
        assert!(text.contains("(2 more rows;"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("(no rows)"), "{text}");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cell_text(&json!(["a", "b"])), "a, b");
    }
}
