//! tlsledger: what every SMTP connection of a mail system negotiated for TLS, per remote host.
//!
//! # Brief overview
//!
//! Data flows top to bottom (see ARCHITECTURE.md):
//!
//! ```text
//! sources/     bytes: files, stdin (lines.rs frames them)
//!    │ &[u8] lines
//! parsers      (crate) syslog envelope → MTA grammar → parsers::Record<'_> (borrowed)
//!    │ Record
//! correlate/   joins the lines of one SMTP connection → Observation (owned)
//!    │ Observation
//! commands/    parse: JSON lines on stdout, counters on stderr
//!    └──► sinks/clickhouse   batched RowBinary inserts, retries, spool (schema/ DDL)
//!           └──► dashboards   the dashboards/*.sql queries, run by `report` (tables, JSON, HTML)
//! ```
//!
//! [`observation::Observation`] is the product's stable data model; [`correlate::Correlator`]
//! is the only stateful stage; [`clock`] turns logged timestamps into UTC.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod correlate;
pub mod dashboards;
pub mod feeds;
pub mod observation;
pub mod parallel;
pub mod report;
pub mod reputation;
pub mod sinks;
pub mod sources;
