//! The Grafana dashboard (`dashboards/grafana/tlsledger.json`), generated from the same
//! `dashboards/*.sql` files `tlsledger report` runs, for the official ClickHouse data source
//! plugin (`grafana-clickhouse-datasource`).
//!
//! One panel per query: `timeseries` panels (plugin format 0, time series) for queries with a
//! `timeseries` chart, `table` panels (format 1) for the others. Every panel and target names
//! the data source through the `${datasource}` variable, so the dashboard works with any
//! ClickHouse data source; the provisioned one (`dashboards/grafana/provisioning/`) has the uid
//! [`DATASOURCE_UID`]. Placeholders become the macros of [`super::grafana_sql`]; the
//! `lookback_days`, `protocol` and `cipher` variables have the same defaults as `report`.
//!
//! The committed file must equal [`dashboard`]'s output (a test checks it; `UPDATE_GOLDEN=1`
//! rewrites it), so the dashboard and the report cannot drift apart.

use anyhow::Result;
use serde_json::{json, Value};

use super::{grafana_sql, Chart, Dashboard, PROTOCOLS};

/// The plugin's type id.
pub const PLUGIN: &str = "grafana-clickhouse-datasource";

/// The uid of the provisioned data source.
pub const DATASOURCE_UID: &str = "tlsledger-clickhouse";

/// The dashboard's uid.
pub const DASHBOARD_UID: &str = "tlsledger-tls";

/// The plugin's `format` for time series and for tables.
const FORMAT_TIME_SERIES: u8 = 0;
const FORMAT_TABLE: u8 = 1;

/// The dashboard JSON for `dashboards`.
pub fn dashboard(dashboards: &[Dashboard]) -> Result<Value> {
    let datasource = json!({ "type": PLUGIN, "uid": "${datasource}" });
    let mut panels = Vec::new();
    let (mut x, mut y) = (0, 0);
    for (i, dashboard) in dashboards.iter().enumerate() {
        let time_series = matches!(dashboard.chart, Chart::TimeSeries { .. });
        let (width, height) = if time_series { (12, 9) } else { (24, 10) };
        if x + width > 24 {
            x = 0;
            y += 10;
        }
        let title = dashboard.title.replace("{protocol}", "${protocol}").replace("{cipher}", "${cipher}");
        panels.push(json!({
            "id": i + 1,
            "type": if time_series { "timeseries" } else { "table" },
            "title": title,
            "description": dashboard.description,
            "datasource": datasource,
            "gridPos": { "x": x, "y": y, "w": width, "h": height },
            "targets": [{
                "refId": "A",
                "datasource": datasource,
                "queryType": "sql",
                "editorType": "sql",
                "format": if time_series { FORMAT_TIME_SERIES } else { FORMAT_TABLE },
                "rawSql": grafana_sql(&dashboard.sql)?,
            }],
            "options": {},
            "fieldConfig": { "defaults": {}, "overrides": [] },
        }));
        x += width;
        if x >= 24 {
            x = 0;
            y += height;
        }
    }
    let protocol_options: Vec<Value> =
        PROTOCOLS.iter().map(|p| json!({ "text": p, "value": p, "selected": *p == "TLSv1.1" })).collect();
    Ok(json!({
        "uid": DASHBOARD_UID,
        "title": "tlsledger: TLS of SMTP connections",
        "description": "Generated from dashboards/*.sql by tlsledger; the same queries as `tlsledger report`.",
        "tags": ["tlsledger", "smtp", "tls"],
        "schemaVersion": 41,
        "version": 1,
        "editable": true,
        "timezone": "utc",
        "time": { "from": "now-7d", "to": "now" },
        "templating": { "list": [
            {
                "name": "datasource",
                "label": "ClickHouse",
                "type": "datasource",
                "query": PLUGIN,
                "current": { "text": "tlsledger ClickHouse", "value": DATASOURCE_UID },
            },
            {
                "name": "lookback_days",
                "label": "Baseline days before the range",
                "type": "textbox",
                "query": "30",
                "current": { "text": "30", "value": "30" },
            },
            {
                "name": "protocol",
                "label": "Impact: protocols up to",
                "type": "custom",
                "query": PROTOCOLS.join(","),
                "current": { "text": "TLSv1.1", "value": "TLSv1.1" },
                "options": protocol_options,
            },
            {
                "name": "cipher",
                "label": "Impact: cipher",
                "type": "textbox",
                "query": "ECDHE-RSA-AES256-SHA",
                "current": { "text": "ECDHE-RSA-AES256-SHA", "value": "ECDHE-RSA-AES256-SHA" },
            },
        ]},
        "panels": panels,
    }))
}

/// The committed file's text for `dashboards`: pretty JSON and a final newline.
pub fn dashboard_text(dashboards: &[Dashboard]) -> Result<String> {
    let mut text = serde_json::to_string_pretty(&dashboard(dashboards)?)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_dashboard_is_generated_from_the_sql_files() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana/tlsledger.json");
        let want = dashboard_text(&crate::dashboards::all().unwrap()).unwrap();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "{} is stale: run UPDATE_GOLDEN=1 cargo test --lib grafana", path.display());
    }
}
