//! The HTML report: one self-contained page (inline CSS, inline SVG charts, no script, no
//! external resource), one section per dashboard with its chart and its table.
//!
//! Charts are hand-written SVG, not a plotting crate: two shapes cover every dashboard (stacked
//! bars over time buckets, horizontal bars per row). `plotters` with only its SVG backend was
//! measured here (5 crates, 11 s for a clean debug build of a probe crate): cheap, but its labels
//! would be log-derived text (peer names, failure reasons) going through an escaping we do not
//! own. Here every text that reaches the page goes through [`escape`], which is tested with
//! hostile input; numbers are formatted here, never taken as text from the data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::{cell_text, time_text, Report, Section};
use crate::dashboards::Chart;
use crate::sinks::clickhouse::query::ResultTable;

/// Colours of the series, in order; the last is for "other".
const PALETTE: &[&str] =
    &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

/// Series beyond this many are summed into "other".
const MAX_SERIES: usize = 9;

/// Rows drawn in a bar chart.
const MAX_BARS: usize = 15;

/// Text safe in HTML content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(text) => text.parse().unwrap_or(0.0),
        _ => 0.0,
    }
    .max(0.0)
}

/// A number for people: integers without decimals, others with up to 4 significant decimals.
fn number_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;background:#fff}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}\
p.desc{color:#444;max-width:60em;font-size:.9em;white-space:pre-line}\
table{border-collapse:collapse;font-size:.85em;margin-top:.5em}\
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}\
td.num{text-align:right}th{background:#f4f4f4}\
svg.chart{display:block;margin:.5em 0}svg.chart text{font-size:11px;fill:#333}\
.empty{color:#777;font-style:italic}";

/// The page, at most `max_rows` table rows per dashboard (charts use every row).
pub fn page(report: &Report, max_rows: usize) -> String {
    let mut out = String::new();
    let range = format!("{} to {}", time_text(report.params.from), time_text(report.params.to));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tlsledger report {range}</title><style>{STYLE}</style></head><body>\n\
         <h1>tlsledger report</h1><p>{range}; ClickHouse {version}, database {database}; \
         bucket {bucket} s, baseline {lookback} days before the range; generated {generated}.</p>\n",
        range = escape(&range),
        version = escape(&report.server_version),
        database = escape(&report.database),
        bucket = report.params.bucket_s,
        lookback = report.params.lookback_days,
        generated = escape(&time_text(report.generated_at)),
    );
    let buckets = bucket_labels(&report.params);
    for section in &report.sections {
        section_html(&mut out, section, max_rows, &buckets);
    }
    out.push_str("</body></html>\n");
    out
}

/// Every time bucket of the range as ClickHouse prints it (`toDateTime(intDiv(ts, b) * b)`), so
/// that buckets without rows show as gaps; empty when there would be more than [`MAX_BUCKETS`].
fn bucket_labels(params: &crate::dashboards::Params) -> Vec<String> {
    let step = i64::from(params.bucket_s.max(1));
    let first = params.from.div_euclid(step) * step;
    if (params.to - first) / step > MAX_BUCKETS {
        return Vec::new();
    }
    (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t < params.to)
        .filter_map(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .collect()
}

/// Most buckets drawn with gaps; beyond, only the buckets that have rows.
const MAX_BUCKETS: i64 = 400;

fn section_html(out: &mut String, section: &Section, max_rows: usize, buckets: &[String]) {
    let _ = writeln!(
        out,
        "<section id=\"{id}\"><h2>{title}</h2><p class=\"desc\">{desc}</p>",
        id = escape(&section.dashboard.name),
        title = escape(&section.title),
        desc = escape(&section.description),
    );
    if section.table.rows.is_empty() {
        out.push_str("<p class=\"empty\">No rows in this range.</p></section>\n");
        return;
    }
    match &section.dashboard.chart {
        Chart::None => {}
        Chart::TimeSeries { x, y, series, facet } => {
            let spec = TimeSeriesSpec { x, y, series: series.as_deref(), facet: facet.as_deref(), buckets };
            time_series(out, &section.table, &spec, &section.title)
        }
        Chart::Bars { label, y } => bars(out, &section.table, label, y, &section.title),
    }
    table_html(out, &section.table, max_rows);
    out.push_str("</section>\n");
}

fn table_html(out: &mut String, table: &ResultTable, max_rows: usize) {
    out.push_str("<table><thead><tr>");
    for column in &table.columns {
        let _ = write!(out, "<th>{}</th>", escape(&column.name));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in table.rows.iter().take(max_rows) {
        out.push_str("<tr>");
        for value in row {
            let class = if value.is_number() { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(&cell_text(value)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    if table.rows.len() > max_rows {
        let _ = writeln!(out, "<p class=\"empty\">{} more rows (see --format json).</p>", table.rows.len() - max_rows);
    }
}

/// What a time-series chart draws.
struct TimeSeriesSpec<'a> {
    x: &'a str,
    y: &'a str,
    series: Option<&'a str>,
    facet: Option<&'a str>,
    /// Every bucket of the range (gaps included), when `x` is the time bucket.
    buckets: &'a [String],
}

/// Stacked bars per x value (time bucket), one chart per facet value.
fn time_series(out: &mut String, table: &ResultTable, spec: &TimeSeriesSpec<'_>, title: &str) {
    let TimeSeriesSpec { x, y, series, facet, buckets } = *spec;
    let (Some(x_idx), Some(y_idx)) = (table.column(x), table.column(y)) else {
        let _ = write!(out, "<p class=\"empty\">Chart columns {} / {} missing.</p>", escape(x), escape(y));
        return;
    };
    let series_idx = series.and_then(|s| table.column(s));
    let facet_idx = facet.and_then(|f| table.column(f));
    let mut facets: BTreeMap<String, Vec<&Vec<Value>>> = BTreeMap::new();
    for row in &table.rows {
        let key = facet_idx.and_then(|i| row.get(i)).map(cell_text).unwrap_or_default();
        facets.entry(key).or_default().push(row);
    }
    for (facet_value, rows) in facets {
        let mut xs: BTreeSet<String> = rows.iter().filter_map(|r| r.get(x_idx)).map(cell_text).collect();
        if x == "bucket" {
            xs.extend(buckets.iter().cloned());
        }
        let xs: Vec<String> = xs.into_iter().collect();
        // Series by total, the largest first; the rest become "other".
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        for row in &rows {
            let name = series_idx.and_then(|i| row.get(i)).map(cell_text).unwrap_or_else(|| y.to_owned());
            *totals.entry(name).or_default() += row.get(y_idx).map_or(0.0, number);
        }
        let mut names: Vec<(String, f64)> = totals.into_iter().collect();
        names.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = names.len() > MAX_SERIES;
        let mut legend: Vec<String> = names.iter().take(MAX_SERIES).map(|(n, _)| n.clone()).collect();
        if other {
            legend.push("other".to_owned());
        }
        let mut stacks = vec![vec![0.0; legend.len()]; xs.len()];
        for row in &rows {
            let Some(xi) = row.get(x_idx).map(cell_text).and_then(|v| xs.iter().position(|x| *x == v)) else {
                continue;
            };
            let name = series_idx.and_then(|i| row.get(i)).map(cell_text).unwrap_or_else(|| y.to_owned());
            let si = legend.iter().position(|n| *n == name).unwrap_or(legend.len() - 1);
            stacks[xi][si] += row.get(y_idx).map_or(0.0, number);
        }
        let caption = if facet_value.is_empty() { title.to_owned() } else { format!("{title}: {facet_value}") };
        stacked_svg(out, &caption, &xs, &legend, &stacks);
    }
}

fn stacked_svg(out: &mut String, caption: &str, xs: &[String], legend: &[String], stacks: &[Vec<f64>]) {
    let (width, plot_h, left, top) = (760.0_f64, 180.0_f64, 56.0_f64, 24.0_f64);
    let plot_w = width - left - 12.0;
    let legend_rows = legend.len().div_ceil(3) as f64;
    let height = top + plot_h + 34.0 + legend_rows * 16.0;
    let max = stacks.iter().map(|s| s.iter().sum::<f64>()).fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let _ = write!(
        out,
        "<svg class=\"chart\" role=\"img\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
         <title>{caption}</title><text x=\"{left}\" y=\"14\" font-weight=\"bold\">{caption}</text>",
        caption = escape(caption)
    );
    // Axes and y ticks.
    let bottom = top + plot_h;
    let _ = write!(
        out,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#999\"/>\
         <line x1=\"{left}\" y1=\"{bottom}\" x2=\"{r}\" y2=\"{bottom}\" stroke=\"#999\"/>",
        r = left + plot_w
    );
    for fraction in [0.0, 0.5, 1.0] {
        let y = bottom - fraction * plot_h;
        let _ = write!(
            out,
            "<text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            tx = left - 4.0,
            ty = y + 4.0,
            label = escape(&number_text(max * fraction))
        );
    }
    let slot = plot_w / xs.len().max(1) as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let label_every = xs.len().div_ceil(8).max(1);
    for (i, (x, stack)) in xs.iter().zip(stacks).enumerate() {
        let bar_x = left + i as f64 * slot + (slot - bar_w) / 2.0;
        let mut y = bottom;
        for (si, value) in stack.iter().enumerate() {
            if *value <= 0.0 {
                continue;
            }
            let h = value / max * plot_h;
            y -= h;
            let _ = write!(
                out,
                "<rect x=\"{bar_x:.1}\" y=\"{y:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{x}: {name} {v}</title></rect>",
                color = PALETTE[si.min(PALETTE.len() - 1)],
                x = escape(x),
                name = escape(&legend[si]),
                v = escape(&number_text(*value))
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                "<text x=\"{cx:.1}\" y=\"{ly}\" text-anchor=\"middle\">{label}</text>",
                cx = left + i as f64 * slot + slot / 2.0,
                ly = bottom + 14.0,
                label = escape(&short_time(x))
            );
        }
    }
    for (i, name) in legend.iter().enumerate() {
        let lx = left + (i % 3) as f64 * 230.0;
        let ly = bottom + 30.0 + (i / 3) as f64 * 16.0;
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"{ry}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{tx}\" y=\"{ty}\">{name}</text>",
            ry = ly - 9.0,
            color = PALETTE[i.min(PALETTE.len() - 1)],
            tx = lx + 14.0,
            ty = ly,
            name = escape(&cut_chars(name, 34))
        );
    }
    out.push_str("</svg>\n");
}

/// `2026-11-23 00:00:00` → `11-23`, `2026-11-23 10:00:00` → `11-23 10:00`.
fn short_time(text: &str) -> String {
    match (text.get(5..10), text.get(11..16)) {
        (Some(day), Some("00:00")) => day.to_owned(),
        (Some(day), Some(time)) => format!("{day} {time}"),
        _ => cut_chars(text, 16),
    }
}

fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        text.chars().take(max.saturating_sub(1)).chain(['…']).collect()
    }
}

/// One horizontal bar per row, the first [`MAX_BARS`] rows.
fn bars(out: &mut String, table: &ResultTable, label: &str, y: &str, title: &str) {
    let (Some(label_idx), Some(y_idx)) = (table.column(label), table.column(y)) else {
        let _ = write!(out, "<p class=\"empty\">Chart columns {} / {} missing.</p>", escape(label), escape(y));
        return;
    };
    // Rows of the same label (a peer under several reasons or domains) share one bar.
    let mut bars: Vec<(String, f64)> = Vec::new();
    for row in &table.rows {
        let name = row.get(label_idx).map(cell_text).unwrap_or_default();
        let value = row.get(y_idx).map_or(0.0, number);
        match bars.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += value,
            None => bars.push((name, value)),
        }
    }
    bars.truncate(MAX_BARS);
    let (width, left, row_h, top) = (760.0_f64, 190.0_f64, 20.0_f64, 24.0_f64);
    let plot_w = width - left - 70.0;
    let height = top + bars.len() as f64 * row_h + 8.0;
    let max = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let _ = write!(
        out,
        "<svg class=\"chart\" role=\"img\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
         <title>{caption}</title><text x=\"0\" y=\"14\" font-weight=\"bold\">{caption} ({y})</text>",
        caption = escape(title),
        y = escape(y)
    );
    for (i, (name, value)) in bars.iter().enumerate() {
        let by = top + i as f64 * row_h;
        let w = (value / max * plot_w).max(if *value > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            out,
            "<text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{name}</text>\
             <rect x=\"{left}\" y=\"{by}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{color}\"><title>{name}: {v}</title></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\">{v}</text>",
            tx = left - 6.0,
            ty = by + 13.0,
            name = escape(&cut_chars(name, 30)),
            h = row_h - 5.0,
            color = PALETTE[0],
            vx = left + w + 4.0,
            v = escape(&number_text(*value))
        );
    }
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_escapes_everything() {
        let page = page(&super::super::tests::sample(), 50);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"), "no script may reach the page");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("mx &amp; co"));
        assert!(!page.contains('\u{1b}'));
        for external in ["src=", "href=", "url(", "@import", "http://", "https://"] {
            assert!(!page.contains(external), "{external}");
        }
        // protocol_share: one stacked chart per direction; impact_protocol: a bar chart.
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 3, "{page}");
        assert!(page.contains("TLS protocol share over time: outbound"));
        assert!(page.contains(">11-23</text>"));
        // Every day of the range is a slot, rows or not (2026-11-25 to 2026-12-02: 7 buckets).
        assert_eq!(bucket_labels(&super::super::tests::sample().params).len(), 7);
        assert!(page.contains(">12-01</text>"), "{page}");
        assert_eq!(page.matches("No rows in this range.").count(), crate::dashboards::FILES.len() - 2);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(number_text(3.0), "3");
        assert_eq!(number_text(0.75), "0.75");
        assert_eq!(number_text(1.0 / 3.0), "0.3333");
        assert_eq!(short_time("2026-11-23 10:00:00"), "11-23 10:00");
        assert_eq!(escape("a\u{0}b\"'"), "a\u{fffd}b&quot;&#39;");
    }
}
