//! The command line (clap derive). Subcommands map one to one onto [`crate::commands`].

use clap::{Parser, Subcommand};

use crate::commands::explain::ExplainArgs;
use crate::commands::feed::FeedArgs;
use crate::commands::ingest::IngestArgs;
use crate::commands::milter::MilterArgs;
use crate::commands::parse::ParseArgs;
use crate::commands::report::ReportArgs;
use crate::commands::reputation::ReputationCommand;
use crate::commands::schema::SchemaCommand;
use crate::commands::serve::ServeArgs;

/// tlsledger: per-host SMTP STARTTLS outcomes from MTA logs.
///
/// Reads Postfix logs (RFC 3164, rsyslog RFC 3339, RFC 5424, Postfix maillog_file) and tells, for
/// every SMTP connection, whether TLS was used, with which trust, protocol and cipher, or why not.
#[derive(Debug, Parser)]
#[command(name = "tlsledger", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse log files and print one Observation JSON object per SMTP connection.
    ///
    /// Example: tlsledger parse --stats /var/log/mail.log /var/log/mail.log.1 > observations.jsonl
    Parse(ParseArgs),
    /// Run the daemon: follow log files, receive syslog, keep the reputation state, ClickHouse
    /// and checkpoints current.
    ///
    /// Example: tlsledger ingest --follow /var/log/mail.log --syslog-listen 127.0.0.1:5514 --state /var/lib/tlsledger
    Ingest(Box<IngestArgs>),
    /// Run the milter: record every inbound SMTP session's TLS live from the MTA, and add the
    /// X-TLSLedger header to each message (never stops mail: every error answers continue).
    ///
    /// Example: tlsledger milter --listen inet:127.0.0.1:10025 --state /var/lib/tlsledger
    Milter(Box<MilterArgs>),
    /// Create, upgrade or inspect the ClickHouse tables.
    ///
    /// Example: tlsledger schema apply --clickhouse http://127.0.0.1:8123
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Show the class and flags of an IP, host name or domain, and the evidence behind them.
    ///
    /// Example: tlsledger explain mx1.example.net --state /var/lib/tlsledger
    Explain(ExplainArgs),
    /// Write the feed files (Postfix, Exim, Sendmail, rspamd, SpamAssassin, canonical JSON) from the state.
    ///
    /// Example: tlsledger feed --state /var/lib/tlsledger --out /etc/postfix/tlsledger
    Feed(FeedArgs),
    /// Serve the feed and the reputation over a read-only HTTP API (loopback by default).
    ///
    /// Example: tlsledger serve --state /var/lib/tlsledger --feed-dir /etc/postfix/tlsledger
    Serve(ServeArgs),
    /// Maintain the reputation state.
    ///
    /// Example: tlsledger reputation rebuild --from-clickhouse http://127.0.0.1:8123 --state /var/lib/tlsledger
    #[command(subcommand)]
    Reputation(ReputationCommand),
    /// Run the dashboard queries (dashboards/*.sql) on ClickHouse: tables, JSON or one HTML page
    /// with charts.
    ///
    /// Example: tlsledger report --clickhouse http://127.0.0.1:8123 --since 7d --format html --out report.html
    Report(Box<ReportArgs>),
}
