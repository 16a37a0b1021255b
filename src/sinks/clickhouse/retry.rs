//! The one place that decides what to do when an insert fails.
//!
//! Three answers, by error class:
//! - [`RetryAction::Retry`]: the server is unreachable, slow, restarting, or misconfigured for
//!   us (unknown table, authentication): the batch is kept (and spooled to disk after a few tries)
//!   and resent unchanged later. Nothing is dropped for a problem the operator can fix.
//! - [`RetryAction::RejectRows`]: the server (or the client's encoder) says the data itself is
//!   invalid. Resending the same bytes would fail forever, so the batch is split until the bad
//!   rows are isolated, and those go to the dead-letter file with the server's message.
//!
//! ClickHouse error codes (`Code: N` in the response) for invalid data, as in Vector's
//! ClickHouse sink: 6 CANNOT_PARSE_TEXT, 26 CANNOT_PARSE_QUOTED_STRING, 27
//! CANNOT_PARSE_INPUT_ASSERTION_FAILED, 32 ATTEMPT_TO_READ_AFTER_EOF, 33 CANNOT_READ_ALL_DATA, 38 CANNOT_PARSE_DATE,
//! 41 CANNOT_PARSE_DATETIME, 53 TYPE_MISMATCH, 69 ARGUMENT_OUT_OF_BOUND, 70 CANNOT_CONVERT_TYPE,
//! 72 CANNOT_PARSE_NUMBER, 117 INCORRECT_DATA, 131 TOO_LARGE_STRING_SIZE, 252 TOO_MANY_PARTS is
//! *not* one of them (it is back-pressure: retry).

use std::time::Duration;

/// What to do with a failed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAction {
    /// Keep the batch and resend it after a backoff.
    Retry(String),
    /// The rows are invalid: isolate and dead-letter them.
    RejectRows(String),
}

/// Codes that mean "this data can never be inserted".
const INVALID_DATA_CODES: &[u32] = &[6, 26, 27, 32, 33, 38, 41, 49, 53, 69, 70, 72, 117, 131];

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
            Some(code) if INVALID_DATA_CODES.contains(&code) => RetryAction::RejectRows(text),
            _ => RetryAction::Retry(text),
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
