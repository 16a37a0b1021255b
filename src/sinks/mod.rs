//! Sinks: where observations go. Only `clickhouse` talks to ClickHouse.

pub mod clickhouse;
