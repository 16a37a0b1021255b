-- The cluster variant of schema/portable/0002_endpoint_daily.sql: each shard rolls up its own
-- observations_local rows (the view runs where the rows land), and a Distributed table named
-- `endpoint_daily` reads every shard. Because observations are sharded by endpoint, one
-- endpoint's days are on one shard; the -Merge functions give the right answer either way.
CREATE TABLE IF NOT EXISTS {database}.endpoint_daily_local ON CLUSTER {cluster}
(
    day Date,
    peer_ip FixedString(16),
    direction Enum8('outbound' = 1, 'inbound' = 2),
    observations AggregateFunction(uniqExact, String),
    tls AggregateFunction(uniqExactIf, String, UInt8),
    starttls_not_offered AggregateFunction(uniqExactIf, String, UInt8),
    plaintext AggregateFunction(uniqExactIf, String, UInt8),
    handshake_failed AggregateFunction(uniqExactIf, String, UInt8),
    cert_verify_failed AggregateFunction(uniqExactIf, String, UInt8),
    tls_required_missing AggregateFunction(uniqExactIf, String, UInt8),
    unknown AggregateFunction(uniqExactIf, String, UInt8),
    verified AggregateFunction(uniqExactIf, String, UInt8),
    trusted AggregateFunction(uniqExactIf, String, UInt8),
    untrusted AggregateFunction(uniqExactIf, String, UInt8),
    anonymous AggregateFunction(uniqExactIf, String, UInt8),
    first_seen AggregateFunction(min, DateTime('UTC')),
    last_seen AggregateFunction(max, DateTime('UTC')),
    last_outcome AggregateFunction(argMax, Enum8('tls' = 1, 'starttls-not-offered' = 2, 'plaintext' = 3, 'handshake-failed' = 4, 'cert-verify-failed' = 5, 'tls-required-missing' = 6, 'unknown' = 7), DateTime('UTC')),
    protocols AggregateFunction(groupUniqArray, String),
    ciphers AggregateFunction(groupUniqArray, String),
    min_bits AggregateFunction(min, UInt32),
    max_bits AggregateFunction(max, UInt32),
    hostnames AggregateFunction(groupUniqArray, String),
    domains AggregateFunction(groupUniqArrayArray, Array(String))
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{cluster}/{database}/endpoint_daily/{shard}', '{replica}')
PARTITION BY toYYYYMM(day)
ORDER BY (peer_ip, direction, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.endpoint_daily_mv ON CLUSTER {cluster} TO {database}.endpoint_daily_local AS
SELECT
    toDate(ts) AS day,
    peer_ip,
    direction,
    uniqExactState(event_id) AS observations,
    uniqExactIfState(event_id, outcome = 'tls') AS tls,
    uniqExactIfState(event_id, outcome = 'starttls-not-offered') AS starttls_not_offered,
    uniqExactIfState(event_id, outcome = 'plaintext') AS plaintext,
    uniqExactIfState(event_id, outcome = 'handshake-failed') AS handshake_failed,
    uniqExactIfState(event_id, outcome = 'cert-verify-failed') AS cert_verify_failed,
    uniqExactIfState(event_id, outcome = 'tls-required-missing') AS tls_required_missing,
    uniqExactIfState(event_id, outcome = 'unknown') AS unknown,
    uniqExactIfState(event_id, tls_trust = 'verified') AS verified,
    uniqExactIfState(event_id, tls_trust = 'trusted') AS trusted,
    uniqExactIfState(event_id, tls_trust = 'untrusted') AS untrusted,
    uniqExactIfState(event_id, tls_trust = 'anonymous') AS anonymous,
    minState(ts) AS first_seen,
    maxState(ts) AS last_seen,
    argMaxState(outcome, ts) AS last_outcome,
    groupUniqArrayState(ifNull(tls_protocol, '')) AS protocols,
    groupUniqArrayState(ifNull(tls_cipher, '')) AS ciphers,
    minState(ifNull(tls_bits, toUInt32(0))) AS min_bits,
    maxState(ifNull(tls_bits, toUInt32(0))) AS max_bits,
    groupUniqArrayState(ifNull(peer_hostname, '')) AS hostnames,
    groupUniqArrayArrayState(domains) AS domains
FROM {database}.observations_local
GROUP BY day, peer_ip, direction;

CREATE TABLE IF NOT EXISTS {database}.endpoint_daily ON CLUSTER {cluster} AS {database}.endpoint_daily_local
ENGINE = Distributed({cluster}, {database}, endpoint_daily_local, cityHash64(peer_ip));
