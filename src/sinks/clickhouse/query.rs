//! Read queries whose columns are not known at compile time (the dashboards): the result comes
//! back as `FORMAT JSONCompact` and is returned as column names, types and JSON values.
//!
//! Wire contract: `POST /?database=D` with the query text and ` FORMAT JSONCompact` appended by
//! the crate; the settings `output_format_json_quote_64bit_integers=0` (18.16 quotes 64-bit
//! integers by default, modern servers since 25.8 do not: pinned so both give numbers) and
//! `max_execution_time`. Values keep ClickHouse's text forms: DateTime as `YYYY-MM-DD hh:mm:ss`,
//! Enum as its name, Array as a JSON array; floats always as JSON floats (`1.0`, not `1`).

use anyhow::{Context, Result};
use serde::Deserialize;

/// A result: columns and rows of JSON values, in the server's order.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct ResultTable {
    /// Column names and ClickHouse types.
    pub columns: Vec<Column>,
    /// One value per column per row.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// One column of a [`ResultTable`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Column {
    /// The column name (the query's alias).
    pub name: String,
    /// The ClickHouse type, e.g. `UInt64`, `DateTime('UTC')`, `Array(String)`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl ResultTable {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Deserialize)]
struct JsonCompact {
    meta: Vec<Column>,
    data: Vec<Vec<serde_json::Value>>,
}

/// Runs `sql` (one SELECT, no FORMAT clause, no trailing `;`) and returns its result.
pub async fn select(client: &clickhouse::Client, sql: &str, max_execution_secs: u32) -> Result<ResultTable> {
    let client = client
        .clone()
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .with_setting("max_execution_time", max_execution_secs.to_string());
    let mut cursor = client.query_raw(sql).fetch_bytes("JSONCompact").context("cannot send the query")?;
    let body = cursor.collect().await.context("the query failed")?;
    parse_json_compact(&body)
}

/// Parses a `FORMAT JSONCompact` body; 64-bit integers that came quoted become numbers.
pub fn parse_json_compact(body: &[u8]) -> Result<ResultTable> {
    let parsed: JsonCompact = serde_json::from_slice(body).context("the server's answer is not JSONCompact")?;
    let columns = parsed.meta;
    let mut rows = parsed.data;
    for row in &mut rows {
        for (value, column) in row.iter_mut().zip(&columns) {
            if is_float(&column.kind) {
                // ClickHouse writes 1.0 as `1`: keep floats floats for consumers of the JSON.
                if let Some(n) = value.as_f64() {
                    if let Some(number) = serde_json::Number::from_f64(n) {
                        *value = serde_json::Value::Number(number);
                    }
                }
            } else if is_integer(&column.kind) {
                if let serde_json::Value::String(text) = value {
                    if let Ok(n) = text.parse::<i64>() {
                        *value = n.into();
                    } else if let Ok(n) = text.parse::<u64>() {
                        *value = n.into();
                    }
                }
            }
        }
    }
    Ok(ResultTable { columns, rows })
}

fn is_float(kind: &str) -> bool {
    let kind = kind.strip_prefix("Nullable(").and_then(|k| k.strip_suffix(')')).unwrap_or(kind);
    matches!(kind, "Float64" | "Float32")
}

fn is_integer(kind: &str) -> bool {
    let kind = kind.strip_prefix("Nullable(").and_then(|k| k.strip_suffix(')')).unwrap_or(kind);
    matches!(kind, "UInt64" | "Int64" | "UInt32" | "Int32" | "UInt16" | "Int16" | "UInt8" | "Int8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_64_bit_integers_become_numbers() {
        let body = br#"{"meta":[{"name":"n","type":"UInt64"},{"name":"s","type":"String"},{"name":"a","type":"Array(String)"}],
            "data":[["18446744073709551615","7",["x"]],["3","y",[]]],"rows":2}"#;
        let table = parse_json_compact(body).unwrap();
        assert_eq!(table.columns[0], Column { name: "n".into(), kind: "UInt64".into() });
        assert_eq!(table.rows[0][0], serde_json::json!(18_446_744_073_709_551_615_u64));
        assert_eq!(table.rows[0][1], serde_json::json!("7"));
        assert_eq!(table.rows[1][0], serde_json::json!(3));
        assert_eq!(table.column("a"), Some(2));
        let floats = parse_json_compact(br#"{"meta":[{"name":"f","type":"Float64"}],"data":[[1],[0.5]]}"#).unwrap();
        assert_eq!(serde_json::to_string(&floats.rows).unwrap(), "[[1.0],[0.5]]");
        assert!(parse_json_compact(b"Code: 62. DB::Exception: Syntax error").is_err());
    }
}
