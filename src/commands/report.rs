//! `tlsledger report [--since 7d] [--format table|json|html] [--out FILE]`: runs every dashboard
//! query of `dashboards/` against ClickHouse over HTTP and prints the results.
//!
//! The range is `[now - since, now)`; `--now` pins "now" for reproducible reports. Placeholder
//! values are validated and quoted by `dashboards::Params` before any query is sent. Queries run
//! one after the other on one keep-alive connection; the first one that fails stops the report
//! with its dashboard's name and the server's message. `--out` replaces the file atomically.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::clickhouse_args::ClickhouseArgs;
use crate::dashboards::{self, Params};
use crate::report::{html, Report, Section};
use crate::sinks::clickhouse::{query, schema};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text tables.
    Table,
    /// One JSON document: the range, the parameters and one object per dashboard with its rows.
    Json,
    /// One self-contained HTML page with SVG charts.
    Html,
}

/// `tlsledger report` options.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Where ClickHouse is.
    #[command(flatten)]
    pub clickhouse: ClickhouseArgs,

    /// How far back the range starts: a number and s, m, h, d or w (7d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub since: String,

    /// The end of the range (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<DateTime<Utc>>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write to FILE (replaced atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Only these dashboards (by name, e.g. downgrades; repeatable). Default: all.
    #[arg(long = "dashboard", value_name = "NAME")]
    pub dashboards: Vec<String>,

    /// Width of the time buckets (default: 1h for ranges up to 2 days, 1d up to 62 days, else 1w).
    #[arg(long, value_name = "DURATION")]
    pub bucket: Option<String>,

    /// Days before the range that make the baseline of the downgrade, broken-STARTTLS and
    /// "usually TLS" dashboards.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub lookback_days: u32,

    /// Impact analysis: peers that never negotiated a protocol stronger than this.
    #[arg(long, value_name = "PROTOCOL", default_value = "TLSv1.1")]
    pub protocol: String,

    /// Impact analysis: peers that never negotiated another cipher than this.
    #[arg(long, value_name = "CIPHER", default_value = "ECDHE-RSA-AES256-SHA")]
    pub cipher: String,

    /// Most rows per dashboard in table and HTML output (JSON has every row).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_rows: usize,

    /// Seconds each query may run on the server.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub timeout_secs: u32,
}

impl ReportArgs {
    /// The placeholder values, validated.
    pub fn params(&self) -> Result<Params> {
        let to = self.now.unwrap_or_else(Utc::now).timestamp();
        let since = dashboards::parse_duration(&self.since).context("--since")?;
        let from = to.checked_sub(since).filter(|f| *f >= 0).context("--since reaches before 1970")?;
        let bucket_s = match &self.bucket {
            Some(text) => dashboards::parse_duration(text).context("--bucket")?,
            None if since <= 2 * 86_400 => 3_600,
            None if since <= 62 * 86_400 => 86_400,
            None => 7 * 86_400,
        };
        let params = Params {
            from,
            to,
            bucket_s: u32::try_from(bucket_s).unwrap_or(u32::MAX),
            lookback_days: self.lookback_days,
            protocol: self.protocol.clone(),
            cipher: self.cipher.clone(),
        };
        params.validate()?;
        Ok(params)
    }
}

/// Runs `tlsledger report`.
pub fn run(args: &ReportArgs) -> Result<()> {
    let params = args.params()?;
    let mut selected = dashboards::all()?;
    if !args.dashboards.is_empty() {
        for name in &args.dashboards {
            if !selected.iter().any(|d| &d.name == name) {
                let known: Vec<&str> = selected.iter().map(|d| d.name.as_str()).collect();
                bail!("unknown dashboard {name:?} (known: {})", known.join(", "));
            }
        }
        selected.retain(|d| args.dashboards.contains(&d.name));
    }
    let config = args.clickhouse.config()?.context("--clickhouse URL is required")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let server = config.server_client(false);
        let info = schema::server_info(&server)
            .await
            .with_context(|| format!("cannot reach ClickHouse at {}", config.display_url()))?;
        let client = config.client(false);
        let mut sections = Vec::with_capacity(selected.len());
        for dashboard in selected {
            let sql = params.render(&dashboard.sql)?;
            let table = query::select(&client, &sql, args.timeout_secs).await.with_context(|| {
                format!("dashboard {} (dashboards/{}) failed on {}", dashboard.name, dashboard.file, config.database)
            })?;
            sections.push(Section {
                title: dashboard.display_title(&params),
                description: dashboard.display_description(&params),
                dashboard,
                table,
            });
        }
        anyhow::Ok(Report {
            generated_at: Utc::now().timestamp(),
            params: params.clone(),
            server_version: info.version,
            database: config.database.clone(),
            sections,
        })
    })?;
    let text = match args.format {
        Format::Table => report.to_table(args.max_rows),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report.to_json())?;
            text.push('\n');
            text
        }
        Format::Html => html::page(&report, args.max_rows),
    };
    match &args.out {
        Some(path) => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let name = path.file_name().and_then(|n| n.to_str()).context("--out must name a file")?;
            crate::feeds::write_atomically(dir, name, text.as_bytes())
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}
