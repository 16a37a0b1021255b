-- The cluster variant of schema/portable/0001_observations.sql (`tlsledger schema apply --cluster
-- NAME`): the same columns, in a replicated local table on every server of the cluster, with a
-- Distributed table named `observations` in front, so every query and insert that names
-- `observations` works unchanged.
--
-- Placeholders: {cluster} and {database} are filled in by `schema apply`; {shard} and {replica}
-- are the server's own <macros> (each server of the cluster defines them in its configuration).
--
-- * No column COMMENTs (they are SQL comments here): 18.16 refuses a Replicated* table with
--   column comments ("Table structure in ZooKeeper is too different from local table structure").
-- * ReplicatedReplacingMergeTree(ingest_ver): replicas of one shard share one ZooKeeper path and
--   hold the same rows; a row inserted twice collapses on merge, and FINAL collapses it in
--   queries, as on a single node. This holds only when both copies are on the same shard.
-- * Sharding key cityHash64(peer_ip): a function of the row's endpoint address, never rand(), so
--   a resent row goes to the shard of its first copy (event_id de-duplication holds across the
--   cluster) and one address's whole history, in both directions, lives on one shard.
CREATE TABLE IF NOT EXISTS {database}.observations_local ON CLUSTER {cluster}
(
    ts DateTime('UTC'),
    ts_micros UInt32,  -- microseconds within the second of ts
    end_ts DateTime('UTC'),
    end_ts_micros UInt32,  -- microseconds within the second of end_ts
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
    has_tls UInt8,  -- 1 when the observation has a tls object
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
    ingest_ver UInt64,  -- insert time in microseconds: the newest copy of an event wins
    -- The peer certificate (portable/0004_observation_cert.sql adds these on a single node).
    cert_subject Nullable(String),
    cert_issuer Nullable(String),
    cert_fingerprint Nullable(String),
    cert_pkey_fingerprint Nullable(String)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{cluster}/{database}/observations/{shard}', '{replica}', ingest_ver)
PARTITION BY toYYYYMM(ts)
ORDER BY (peer_ip, direction, ts, event_id);

-- Reads fan out to every shard; inserts are routed by the endpoint (`ingest --cluster-insert`).
CREATE TABLE IF NOT EXISTS {database}.observations ON CLUSTER {cluster} AS {database}.observations_local
ENGINE = Distributed({cluster}, {database}, observations_local, cityHash64(peer_ip));
