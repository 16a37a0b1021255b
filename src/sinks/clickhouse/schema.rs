//! Schema migrations: the DDL files under `schema/`, applied in order and recorded.
//!
//! `schema/portable/NNNN_*.sql` run on every server (ClickHouse 18.16 and 24.x-26.x);
//! `schema/modern/NNNN_*.sql` only when the server's major version is at least
//! [`MODERN_MAJOR`]. Files are append-only: each applied file is recorded in
//! `schema_migrations` with a checksum of its text, a recorded file is never run again, and a
//! recorded file whose text changed is refused (edit the schema with a new file instead).
//! Statements use `IF NOT EXISTS` or are idempotent, so a run cut short is safe to repeat.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The first major version treated as modern (LowCardinality, TTL, codecs, IPv6 without flags).
pub const MODERN_MAJOR: u32 = 22;

/// One DDL file.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// `portable`, `modern` or `cluster`.
    pub set: &'static str,
    /// The file name, e.g. `0001_observations.sql`.
    pub name: &'static str,
    /// Its text.
    pub sql: &'static str,
}

/// Every schema file, in the order they are applied.
pub const FILES: &[SchemaFile] = &[
    SchemaFile {
        set: "portable",
        name: "0001_observations.sql",
        sql: include_str!("../../../schema/portable/0001_observations.sql"),
    },
    SchemaFile {
        set: "portable",
        name: "0002_endpoint_daily.sql",
        sql: include_str!("../../../schema/portable/0002_endpoint_daily.sql"),
    },
    SchemaFile {
        set: "portable",
        name: "0003_endpoint_history.sql",
        sql: include_str!("../../../schema/portable/0003_endpoint_history.sql"),
    },
    SchemaFile {
        set: "portable",
        name: "0004_observation_cert.sql",
        sql: include_str!("../../../schema/portable/0004_observation_cert.sql"),
    },
    SchemaFile {
        set: "modern",
        name: "0001_modern_storage.sql",
        sql: include_str!("../../../schema/modern/0001_modern_storage.sql"),
    },
    SchemaFile {
        set: "cluster",
        name: "0001_observations.sql",
        sql: include_str!("../../../schema/cluster/0001_observations.sql"),
    },
    SchemaFile {
        set: "cluster",
        name: "0002_endpoint_daily.sql",
        sql: include_str!("../../../schema/cluster/0002_endpoint_daily.sql"),
    },
    SchemaFile {
        set: "cluster",
        name: "0003_endpoint_history.sql",
        sql: include_str!("../../../schema/cluster/0003_endpoint_history.sql"),
    },
];

/// The bookkeeping table, created before anything else.
const MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
    (set String, name String, checksum String, applied_at DateTime('UTC')) \
    ENGINE = MergeTree ORDER BY (set, name)";

/// The statements of a file: split at `;` that ends a line, comment lines dropped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// A stable checksum of a file's text (FNV-1a 64, hex), stored with each applied file.
pub fn checksum(sql: &str) -> String {
    crate::observation::event_id(sql, 0)
}

/// What the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `version()`, e.g. `18.16.1`.
    pub version: String,
    /// Its major number.
    pub major: u32,
}

impl ServerInfo {
    /// True when the modern-only schema set and crate validation apply.
    pub fn modern(&self) -> bool {
        self.major >= MODERN_MAJOR
    }
}

/// Asks the server for its version.
pub async fn server_info(client: &clickhouse::Client) -> Result<ServerInfo> {
    let version: String = client.query_raw("SELECT version()").fetch_one().await.context("cannot query version()")?;
    let major = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Ok(ServerInfo { version, major })
}

/// The state of one file on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Applied with the same text.
    Applied,
    /// Not applied yet.
    Pending,
    /// Not for this server (modern set on an old server).
    NotApplicable,
    /// Applied, but the file's text changed since: refused.
    Changed,
}

/// Options of `schema apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Substituted for `{retention_days}` in the modern set.
    pub retention_days: u32,
    /// Apply the cluster set `ON CLUSTER` this cluster instead of the single-node sets.
    pub cluster: Option<String>,
}

/// Which schema a database gets: the single-node sets (`portable`, and `modern` on new servers)
/// or the `cluster` set (Replicated* tables behind Distributed ones, `ON CLUSTER`).
fn applicable(file: &SchemaFile, info: &ServerInfo, cluster: Option<&str>) -> bool {
    match (file.set, cluster) {
        ("cluster", cluster) => cluster.is_some(),
        (_, Some(_)) => false,
        ("modern", None) => info.modern(),
        _ => true,
    }
}

/// A cluster name as `remote_servers` spells it: letters, digits and `_` (it is put into DDL).
pub fn check_cluster_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("invalid cluster name {name:?}: use letters, digits and _");
    }
    Ok(())
}

/// The text of `file` as sent: `{retention_days}`, `{cluster}` and `{database}` filled in;
/// `{shard}` and `{replica}` are left to the server's macros.
pub fn render(file: &SchemaFile, database: &str, options: &ApplyOptions) -> String {
    let mut sql = file.sql.replace("{retention_days}", &options.retention_days.to_string());
    if let Some(cluster) = &options.cluster {
        sql = sql.replace("{cluster}", cluster).replace("{database}", database);
    }
    sql
}

/// Checks that the server knows `cluster` and defines the `shard` and `replica` macros the
/// cluster set's replicated tables need.
async fn check_cluster(server: &clickhouse::Client, cluster: &str) -> Result<()> {
    check_cluster_name(cluster)?;
    let hosts: u64 = server
        .query("SELECT count() FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_one()
        .await
        .context("cannot read system.clusters")?;
    if hosts == 0 {
        bail!("cluster {cluster} is not defined in this server's <remote_servers>");
    }
    let macros: u64 = server
        .query("SELECT count() FROM system.macros WHERE macro IN ('shard', 'replica')")
        .fetch_one()
        .await
        .context("cannot read system.macros")?;
    if macros != 2 {
        bail!("the server defines no <macros> shard and replica; every server of cluster {cluster} needs them");
    }
    Ok(())
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Recorded {
    set: String,
    name: String,
    checksum: String,
}

/// Where every file stands on the server; creates the database (on every server of `cluster`,
/// when given) and the bookkeeping table if needed. The bookkeeping table is local to the server
/// asked: applying the cluster set again through another server re-runs its statements, which
/// are all `IF NOT EXISTS`.
pub async fn status(
    server: &clickhouse::Client,
    database: &str,
    cluster: Option<&str>,
) -> Result<(ServerInfo, Vec<(SchemaFile, FileState)>)> {
    let info = server_info(server).await?;
    let on_cluster = match cluster {
        Some(cluster) => {
            check_cluster(server, cluster).await?;
            format!(" ON CLUSTER {cluster}")
        }
        None => String::new(),
    };
    server
        .query_raw(&format!("CREATE DATABASE IF NOT EXISTS {database}{on_cluster}"))
        .execute()
        .await
        .with_context(|| format!("cannot create database {database}{on_cluster}"))?;
    let client = server.clone().with_database(database);
    client.query_raw(MIGRATIONS_DDL).execute().await.context("cannot create schema_migrations")?;
    let recorded: Vec<Recorded> = client
        .query_raw("SELECT set, name, checksum FROM schema_migrations ORDER BY set, name")
        .fetch_all()
        .await
        .context("cannot read schema_migrations")?;
    let states = FILES
        .iter()
        .map(|file| {
            let state = match recorded.iter().find(|r| r.set == file.set && r.name == file.name) {
                Some(r) if r.checksum == checksum(file.sql) => FileState::Applied,
                Some(_) => FileState::Changed,
                None if !applicable(file, &info, cluster) => FileState::NotApplicable,
                None => FileState::Pending,
            };
            (*file, state)
        })
        .collect();
    Ok((info, states))
}

/// Applies every pending file in order; returns the names applied.
pub async fn apply(server: &clickhouse::Client, database: &str, options: &ApplyOptions) -> Result<Vec<String>> {
    let cluster = options.cluster.as_deref();
    let (_, states) = status(server, database, cluster).await?;
    let applied = |set: &str| states.iter().any(|(file, state)| file.set == set && *state == FileState::Applied);
    match cluster {
        Some(cluster) if applied("portable") => bail!(
            "database {database} holds the single-node schema; the cluster schema (--cluster {cluster}) \
             goes into a new database"
        ),
        None if applied("cluster") => {
            bail!("database {database} holds the cluster schema: apply it with --cluster NAME")
        }
        _ => {}
    }
    if let Some((file, _)) = states.iter().find(|(_, state)| *state == FileState::Changed) {
        bail!(
            "schema/{}/{} changed after it was applied to {database}; schema files are append-only: \
             put the change in a new numbered file",
            file.set,
            file.name
        );
    }
    let client = server.clone().with_database(database);
    let mut applied = Vec::new();
    for (file, state) in states {
        if state != FileState::Pending {
            continue;
        }
        let sql = render(&file, database, options);
        for statement in statements(&sql) {
            client.query_raw(&statement).execute().await.with_context(|| {
                let head: String = statement.chars().take(80).collect();
                format!("schema/{}/{}: statement failed: {head}", file.set, file.name)
            })?;
        }
        client
            .query_raw(&format!(
                "INSERT INTO schema_migrations (set, name, checksum, applied_at) VALUES ('{}', '{}', '{}', now())",
                file.set,
                file.name,
                checksum(file.sql)
            ))
            .execute()
            .await
            .context("cannot record the migration")?;
        applied.push(format!("{}/{}", file.set, file.name));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_line_end_semicolons() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x String DEFAULT 'a;b');\n\nALTER TABLE a\n  ADD COLUMN y UInt8;\nSELECT 1";
        assert_eq!(
            statements(sql),
            ["CREATE TABLE a (x String DEFAULT 'a;b')", "ALTER TABLE a\n  ADD COLUMN y UInt8", "SELECT 1"]
        );
    }

    #[test]
    fn cluster_files_are_rendered_for_one_cluster_and_keep_the_server_macros() {
        let options = ApplyOptions { retention_days: 400, cluster: Some("fleet".to_owned()) };
        for file in FILES.iter().filter(|f| f.set == "cluster") {
            let sql = render(file, "mail", &options);
            assert!(!sql.contains("{cluster}") && !sql.contains("{database}"), "{}", file.name);
            for statement in statements(&sql) {
                if statement.starts_with("CREATE") {
                    assert!(statement.contains(" ON CLUSTER fleet"), "{}: {statement}", file.name);
                }
                if statement.contains("Replicated") {
                    assert!(statement.contains("/{shard}', '{replica}'"), "{}: {statement}", file.name);
                }
                // The sharding key is a function of the row's endpoint, never rand(): a resent row
                // must land on the shard of its first copy for FINAL to collapse them.
                if statement.contains("ENGINE = Distributed(") {
                    assert!(statement.contains(", cityHash64(peer_ip))"), "{}: {statement}", file.name);
                }
                assert!(!statement.contains("rand()"), "{}", file.name);
            }
        }
        assert!(check_cluster_name("fleet_1").is_ok());
        for bad in ["", "a b", "x;DROP", "c{shard}"] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_schema_file_is_listed_in_order() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
        for set in ["portable", "modern", "cluster"] {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(set))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".sql"))
                .collect();
            on_disk.sort();
            let listed: Vec<String> = FILES.iter().filter(|f| f.set == set).map(|f| f.name.to_owned()).collect();
            assert_eq!(on_disk, listed, "schema/{set} and FILES differ");
        }
    }
}
