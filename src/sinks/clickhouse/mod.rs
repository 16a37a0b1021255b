//! The ClickHouse sink: schema migrations, row mapping, batching, retries, spool.
//!
//! **Architecture Invariant:** this module is the only code that talks to ClickHouse.
//!
//! - `config.rs`: URL, database and credentials (never logged), the HTTP client with TCP_NODELAY.
//! - `schema.rs`: the `schema/` DDL files, applied in order and recorded in `schema_migrations`.
//! - `row.rs`: [`row::ObservationRow`], one `observations` row per Observation.
//! - `sink.rs`: [`sink::ClickhouseSink`], batches with at-least-once delivery.
//! - `query.rs`: [`query::select`], a read-only query whose result comes back as JSON values
//!   (the dashboards of `tlsledger report`).
//! - `retry.rs`: the one function that classifies insert errors.
//! - `spool.rs`: the on-disk spool and dead-letter file.

pub mod config;
pub mod query;
pub mod retry;
pub mod row;
pub mod schema;
pub mod sink;
pub mod spool;

pub use config::ClickhouseConfig;
pub use sink::{ClickhouseSink, InsertCompression, InsertTarget, SinkConfig, SinkCounters, SinkInput};
