//! The one place that decides what to do when an insert fails.
//!
//! Two answers, by error class:
//! - [`RetryAction::Retry`]: the server is unreachable, slow, overloaded or restarting
//!   (network errors, timeouts, and the transient codes below), or misconfigured for us (unknown
//!   table or database, authentication): the batch is kept (and spooled to disk after a few
//!   tries) and resent unchanged later. Nothing is dropped for a problem that goes away or that
//!   the operator can fix.
//! - [`RetryAction::RejectRows`]: any other error the server answered with, and the client's
//!   own encoding errors. The server read the request and refused its data, so resending the same
//!   bytes would fail forever: the batch is split until the bad rows are isolated, and those go
//!   to the dead-letter file with the server's message (from where they can be loaded again).
//!   Deciding by "not transient" rather than by a list of data-error codes matters: a misaligned
//!   row makes the server report whatever its bytes happen to look like (33, 32, 27, 117, 131,
//!   128, …), so a fixed list of data codes lets some bad rows retry forever.
//!
//! Transient codes: 3 UNEXPECTED_END_OF_FILE, 159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES,
//! 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR, 241 MEMORY_LIMIT_EXCEEDED, 242 TABLE_IS_READ_ONLY,
//! 252 TOO_MANY_PARTS, 425 SYSTEM_ERROR, and those of a cluster with a server or ZooKeeper away:
//! 225 NO_ZOOKEEPER, 279 ALL_CONNECTION_TRIES_FAILED (a synchronous Distributed insert to a
//! stopped shard), 319 UNKNOWN_STATUS_OF_INSERT (ZooKeeper lost during a replicated insert; a
//! resent block is de-duplicated), 999 KEEPER_EXCEPTION. Configuration codes: 16 NO_SUCH_COLUMN_IN_TABLE,
//! 60 UNKNOWN_TABLE, 62 SYNTAX_ERROR, 81 UNKNOWN_DATABASE, 115 UNKNOWN_SETTING, 192–197 user and
//! password errors, 497 ACCESS_DENIED, 516 AUTHENTICATION_FAILED.

use std::time::Duration;

/// What to do with a failed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// Keep the batch and resend it after a backoff.
    Retry(String),
    /// The rows are invalid: isolate and dead-letter them.
    RejectRows(String),
}

/// Codes of a server that is overloaded, restarting or unreachable: try again later.
const TRANSIENT_CODES: &[u32] = &[3, 159, 202, 209, 210, 225, 241, 242, 252, 279, 319, 425, 999];
/// Codes of a configuration the operator must fix: keep the data until then.
const CONFIG_CODES: &[u32] = &[16, 60, 62, 81, 115, 192, 193, 194, 195, 196, 197, 497, 516];

/// The `Code: N` of a ClickHouse error text (`Code: 27, e.displayText() = …` on 18.16,
/// `Code: 27. DB::Exception: …` on modern servers).
pub fn error_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies an insert error.
pub fn classify(error: &clickhouse::error::Error) -> RetryAction {
    use clickhouse::error::Error;
    let text = error.to_string();
    match error {
        Error::BadResponse(body) => match error_code(body) {
            Some(code) if TRANSIENT_CODES.contains(&code) || CONFIG_CODES.contains(&code) => RetryAction::Retry(text),
            Some(_) => RetryAction::RejectRows(text),
            // An answer without a code (a proxy's error page, an HTTP 5xx): not the data's fault.
            None => RetryAction::Retry(text),
        },
        // The encoder refused a value: it will refuse it again.
        Error::Custom(_) | Error::SequenceMustHaveLength | Error::InvalidUtf8Encoding(_) => {
            RetryAction::RejectRows(text)
        }
        _ => RetryAction::Retry(text),
    }
}

/// Exponential backoff: `initial`, doubled per attempt, capped at `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(16));
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    #[test]
    fn codes_from_both_server_generations() {
        assert_eq!(error_code("Code: 27, e.displayText() = DB::Exception: Cannot parse input"), Some(27));
        assert_eq!(error_code("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"), Some(60));
        assert_eq!(error_code("no code here"), None);
    }

    #[test]
    fn classification() {
        let bad = Error::BadResponse("Code: 33, e.displayText() = DB::Exception: Cannot read all data".into());
        assert!(matches!(classify(&bad), RetryAction::RejectRows(_)));
        let missing = Error::BadResponse("Code: 60. DB::Exception: Table tlsledger.observations doesn't exist".into());
        assert!(matches!(classify(&missing), RetryAction::Retry(_)));
        let auth = Error::BadResponse("Code: 516. DB::Exception: default: Authentication failed".into());
        assert!(matches!(classify(&auth), RetryAction::Retry(_)));
        let parts = Error::BadResponse("Code: 252, e.displayText() = DB::Exception: Too many parts".into());
        assert!(matches!(classify(&parts), RetryAction::Retry(_)));
        // Whatever a misaligned row makes the server say, it is the row's fault.
        let odd = Error::BadResponse("Code: 128, e.displayText() = DB::Exception: Too large array size".into());
        assert!(matches!(classify(&odd), RetryAction::RejectRows(_)));
        // A synchronous insert through the Distributed table while a shard is stopped.
        let shard = Error::BadResponse(
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed. Log: Connection refused (127.0.0.1:30034)".into(),
        );
        assert!(matches!(classify(&shard), RetryAction::Retry(_)));
        let proxy = Error::BadResponse("502 Bad Gateway".into());
        assert!(matches!(classify(&proxy), RetryAction::Retry(_)));
        assert!(matches!(classify(&Error::TimedOut), RetryAction::Retry(_)));
        assert!(matches!(classify(&Error::Custom("bad value".into())), RetryAction::RejectRows(_)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (one, thirty) = (Duration::from_secs(1), Duration::from_secs(30));
        let got: Vec<u64> = (0..7).map(|a| backoff(a, one, thirty).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(u32::MAX, one, thirty), thirty);
    }
}
