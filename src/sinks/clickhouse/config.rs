//! Where the ClickHouse server is and how to log in: URL, database, credentials.
//!
//! Credentials come from the URL (`http://user:password@host:8123`), the environment
//! (`TLSLEDGER_CLICKHOUSE_USER`, `TLSLEDGER_CLICKHOUSE_PASSWORD`) or a file
//! (`--clickhouse-password-file`, first line), in that order of precedence from last to first:
//! a file beats the environment, which beats the URL. They are never logged or printed:
//! [`ClickhouseConfig::display_url`] has none.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Connection settings.
#[derive(Clone)]
pub struct ClickhouseConfig {
    /// The server URL without credentials, path or query (`http://127.0.0.1:8123`).
    pub url: url::Url,
    /// The database holding tlsledger's tables.
    pub database: String,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for ClickhouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickhouseConfig")
            .field("url", &self.display_url())
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ClickhouseConfig {
    /// Reads `url` (`http://[user[:password]@]host:port[/?database=D]`), `database`
    /// (beats the URL's), the environment and `password_file`.
    pub fn new(url: &str, database: Option<&str>, password_file: Option<&Path>) -> Result<Self> {
        let mut parsed = url::Url::parse(url).context("invalid ClickHouse URL (expected http://host:port)")?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            bail!("ClickHouse URL must start with http:// (got {}://)", parsed.scheme());
        }
        if parsed.scheme() == "https" {
            bail!(
                "https ClickHouse URLs are not supported by this build; use http on a trusted network or a local proxy"
            );
        }
        if parsed.host_str().is_none() {
            bail!("ClickHouse URL has no host");
        }
        let mut user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let mut password = parsed.password().map(decode);
        let url_database = parsed.query_pairs().find(|(k, _)| k == "database").map(|(_, v)| v.into_owned());
        if let Ok(env_user) = std::env::var("TLSLEDGER_CLICKHOUSE_USER") {
            user = Some(env_user);
        }
        if let Ok(env_password) = std::env::var("TLSLEDGER_CLICKHOUSE_PASSWORD") {
            password = Some(env_password);
        }
        if let Some(path) = password_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))?;
            password = Some(text.lines().next().unwrap_or_default().to_owned());
        }
        // Keep only scheme, host and port: credentials live apart and are never displayed.
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        parsed.set_query(None);
        parsed.set_path("");
        let database = database.map(str::to_owned).or(url_database).unwrap_or_else(|| "tlsledger".to_owned());
        if database.is_empty() || !database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("invalid database name {database:?}: use letters, digits and _");
        }
        Ok(ClickhouseConfig { url: parsed, database, user, password })
    }

    /// The URL for messages: scheme, host and port only.
    pub fn display_url(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_owned()
    }

    /// A client for the server (no database selected), with TCP_NODELAY: the crate's default
    /// connector leaves Nagle on and every small INSERT then waits 30-40 ms for a delayed ACK
    /// (research/CLICKHOUSE.md §4).
    pub fn server_client(&self, validation: bool) -> clickhouse::Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            // Below the server's keep-alive timeout (3 s before 23.11), so no request meets a
            // connection the server is closing.
            .pool_idle_timeout(Duration::from_millis(2_500))
            .pool_max_idle_per_host(4)
            .build(connector);
        let mut client =
            clickhouse::Client::with_http_client(http).with_url(self.display_url()).with_validation(validation);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        client
    }

    /// A client with the tlsledger database selected.
    pub fn client(&self, validation: bool) -> clickhouse::Client {
        self.server_client(validation).with_database(&self.database)
    }
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map_or_else(|| text.to_owned(), |(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_from_the_url_and_never_shown() {
        let config = ClickhouseConfig::new("http://alice:s%3Dcret@127.0.0.1:8123/?database=mail", None, None).unwrap();
        assert_eq!(config.display_url(), "http://127.0.0.1:8123");
        assert_eq!(config.database, "mail");
        assert_eq!(config.user.as_deref(), Some("alice"));
        assert_eq!(config.password.as_deref(), Some("s=cret"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s=cret") && !debug.contains("s%3Dcret"), "{debug}");
    }

    #[test]
    fn password_file_and_database_flag_win() {
        let dir = std::env::temp_dir().join(format!("tlsledger-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "fromfile\nignored\n").unwrap();
        let config = ClickhouseConfig::new("http://bob:fromurl@localhost:8123", Some("other"), Some(&file)).unwrap();
        assert_eq!(config.password.as_deref(), Some("fromfile"));
        assert_eq!(config.database, "other");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        for url in ["", "localhost:8123", "ftp://h:1", "https://h:8443", "http://127.0.0.1:8123/?database=x;DROP"] {
            assert!(ClickhouseConfig::new(url, None, None).is_err(), "{url}");
        }
    }
}
