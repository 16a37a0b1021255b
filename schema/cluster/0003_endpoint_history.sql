-- The cluster variant of schema/portable/0003_endpoint_history.sql (definitions there): each
-- shard rolls up its own observations_local rows, and a Distributed table named
-- `endpoint_history` reads every shard, so `tlsledger reputation rebuild --from-clickhouse`
-- runs unchanged against any server of the cluster. Its GROUP BY is a two-stage distributed
-- aggregation: every shard merges the states of its endpoints, the server that was asked merges
-- the partial states of all shards (uniqExact unions event ids, so a count is exact even when an
-- endpoint's rows sit on two shards, as with `ingest --cluster-insert local`).
-- No backfill: a cluster schema starts empty.
CREATE TABLE IF NOT EXISTS {database}.endpoint_history_local ON CLUSTER {cluster}
(
    day Date,
    peer_ip FixedString(16),
    direction Enum8('outbound' = 1, 'inbound' = 2),
    first_seen AggregateFunction(min, DateTime('UTC')),
    last_seen AggregateFunction(max, DateTime('UTC')),
    reused AggregateFunction(uniqExactIf, String, UInt8),
    o_tls AggregateFunction(uniqExactIf, String, UInt8),
    o_starttls_not_offered AggregateFunction(uniqExactIf, String, UInt8),
    o_plaintext AggregateFunction(uniqExactIf, String, UInt8),
    o_handshake_failed AggregateFunction(uniqExactIf, String, UInt8),
    o_cert_verify_failed AggregateFunction(uniqExactIf, String, UInt8),
    o_tls_required_missing AggregateFunction(uniqExactIf, String, UInt8),
    t_verified AggregateFunction(uniqExactIf, String, UInt8),
    t_trusted AggregateFunction(uniqExactIf, String, UInt8),
    t_untrusted AggregateFunction(uniqExactIf, String, UInt8),
    t_anonymous AggregateFunction(uniqExactIf, String, UInt8),
    s_milter AggregateFunction(uniqExactIf, String, UInt8),
    s_journald_trusted AggregateFunction(uniqExactIf, String, UInt8),
    s_local AggregateFunction(uniqExactIf, String, UInt8),
    cert_failures AggregateFunction(uniqExactIf, String, UInt8),
    min_protocol AggregateFunction(minIf, UInt8, UInt8),
    max_protocol AggregateFunction(maxIf, UInt8, UInt8),
    min_bits AggregateFunction(minIf, UInt32, UInt8),
    hostnames AggregateFunction(groupUniqArrayArray, Array(String)),
    domains AggregateFunction(groupUniqArrayArray, Array(String)),
    ports AggregateFunction(groupUniqArrayArray, Array(UInt16))
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{cluster}/{database}/endpoint_history/{shard}', '{replica}')
PARTITION BY toYYYYMM(day)
ORDER BY (peer_ip, direction, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.endpoint_history_mv ON CLUSTER {cluster} TO {database}.endpoint_history_local AS
SELECT
    toDate(ts) AS day,
    peer_ip,
    direction,
    minState(ts) AS first_seen,
    maxState(ts) AS last_seen,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 1) AS reused,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls') AS o_tls,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'starttls-not-offered') AS o_starttls_not_offered,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'plaintext') AS o_plaintext,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'handshake-failed') AS o_handshake_failed,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'cert-verify-failed') AS o_cert_verify_failed,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls-required-missing') AS o_tls_required_missing,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'verified') AS t_verified,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'trusted') AS t_trusted,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'untrusted') AS t_untrusted,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'anonymous') AS t_anonymous,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'milter') AS s_milter,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'journald-trusted') AS s_journald_trusted,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'local') AS s_local,
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
        AND (outcome = 'cert-verify-failed' OR startsWith(ifNull(failure_kind, ''), 'certificate-'))) AS cert_failures,
    minIfState(
        toUInt8(multiIf(ifNull(tls_protocol, '') = 'SSLv3', 1,
                        ifNull(tls_protocol, '') IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                        ifNull(tls_protocol, '') IN ('TLSv1.1', 'TLS1.1'), 3,
                        ifNull(tls_protocol, '') IN ('TLSv1.2', 'TLS1.2'), 4,
                        ifNull(tls_protocol, '') IN ('TLSv1.3', 'TLS1.3'), 5, 0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls'
            AND ifNull(tls_protocol, '') IN ('SSLv3', 'TLSv1', 'TLSv1.0', 'TLS1.0', 'TLSv1.1', 'TLS1.1', 'TLSv1.2', 'TLS1.2', 'TLSv1.3', 'TLS1.3')) AS min_protocol,
    maxIfState(
        toUInt8(multiIf(ifNull(tls_protocol, '') = 'SSLv3', 1,
                        ifNull(tls_protocol, '') IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                        ifNull(tls_protocol, '') IN ('TLSv1.1', 'TLS1.1'), 3,
                        ifNull(tls_protocol, '') IN ('TLSv1.2', 'TLS1.2'), 4,
                        ifNull(tls_protocol, '') IN ('TLSv1.3', 'TLS1.3'), 5, 0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls') AS max_protocol,
    minIfState(ifNull(tls_bits, toUInt32(0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND ifNull(tls_bits, toUInt32(0)) > 0) AS min_bits,
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0 AND isNotNull(peer_hostname),
        [ifNull(peer_hostname, '')], emptyArrayString())) AS hostnames,
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0, domains, emptyArrayString())) AS domains,
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0 AND isNotNull(peer_port),
        [ifNull(peer_port, toUInt16(0))], emptyArrayUInt16())) AS ports
FROM {database}.observations_local
GROUP BY day, peer_ip, direction;

CREATE TABLE IF NOT EXISTS {database}.endpoint_history ON CLUSTER {cluster} AS {database}.endpoint_history_local
ENGINE = Distributed({cluster}, {database}, endpoint_history_local, cityHash64(peer_ip));
