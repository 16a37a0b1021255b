//! One module per subcommand: each takes its clap `Args` and runs the pipeline pieces it needs.

pub mod clickhouse_args;
pub mod explain;
pub mod feed;
pub mod ingest;
pub mod ingest_metrics;
pub mod ingest_milter;
pub mod milter;
pub mod parse;
pub mod report;
pub mod reputation;
pub mod schema;
pub mod serve;
