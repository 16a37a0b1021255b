-- One row per Observation (one SMTP connection or delivery attempt), as documented in README
-- "Observation JSON". Portable subset: runs unchanged on ClickHouse 18.16 and 24.x-26.x.
--
-- * ReplacingMergeTree(ingest_ver): a row inserted twice (at-least-once delivery) collapses on
--   merge; query with FINAL or count uniqExact(event_id) for exact numbers.
-- * ORDER BY starts with the endpoint, so one peer's history over time is one range scan.
-- * peer_ip is the IPv6 form of the address in 16 bytes (IPv4 mapped as ::ffff:a.b.c.d);
--   all zeros when the log gave no IP. Display with IPv6NumToString(peer_ip).
-- * Nullable columns keep JSON null apart from empty values; none is in the sorting key.
CREATE TABLE IF NOT EXISTS observations
(
    ts DateTime('UTC'),
    ts_micros UInt32 COMMENT 'microseconds within the second of ts',
    end_ts DateTime('UTC'),
    end_ts_micros UInt32 COMMENT 'microseconds within the second of end_ts',
    mta Enum8('postfix' = 1, 'exim' = 2, 'sendmail' = 3, 'opensmtpd' = 4),
    reporter String,
    instance String,
    direction Enum8('outbound' = 1, 'inbound' = 2),
    peer_hostname Nullable(String),
    peer_ip FixedString(16),
    peer_port Nullable(UInt16),
    domains Array(String),
    queue_ids Array(String),
    outcome Enum8('tls' = 1, 'starttls-not-offered' = 2, 'plaintext' = 3, 'handshake-failed' = 4, 'cert-verify-failed' = 5, 'tls-required-missing' = 6, 'unknown' = 7),
    has_tls UInt8 COMMENT '1 when the observation has a tls object',
    tls_trust Enum8('none' = 0, 'verified' = 1, 'trusted' = 2, 'untrusted' = 3, 'anonymous' = 4),
    tls_protocol Nullable(String),
    tls_cipher Nullable(String),
    tls_bits Nullable(UInt32),
    tls_alg_bits Nullable(UInt32),
    tls_reused UInt8,
    tls_sni Nullable(String),
    tls_key_exchange Nullable(String),
    tls_verify_errors Array(String),
    failure_kind Nullable(String),
    failure_reason Nullable(String),
    delivered Nullable(UInt8),
    tls_feature Nullable(String),
    conn_use Nullable(UInt32),
    local_policy Nullable(String),
    after_tls_failure UInt8,
    replayed UInt8,
    source_kind String,
    source_name String,
    source_trust String,
    lines UInt32,
    event_id String,
    ingest_ver UInt64 COMMENT 'insert time in microseconds: the newest copy of an event wins'
)
ENGINE = ReplacingMergeTree(ingest_ver)
PARTITION BY toYYYYMM(ts)
ORDER BY (peer_ip, direction, ts, event_id);
