-- Per-endpoint daily rollup that mirrors the reputation engine's HostHistory day statistics
-- exactly (src/reputation/history.rs: DayStats, reused, first/last seen, host names, domains,
-- ports).
-- `tlsledger reputation rebuild --from-clickhouse` rebuilds every history from it with the
-- -Merge functions, plus the ring of the 16 latest observations per endpoint read from
-- `observations` with LIMIT 16 BY; the classes it computes are those of the streaming path.
--
-- Definitions (same as HostHistory::observe):
--   counted  = not a replay (postfix/error) and not a reused TLS session
--   decision = counted, outcome is not 'unknown', and no local policy decided it
-- Counts are uniqExact over event_id so resent batches do not count twice.
-- Source trust is kept per source kind so `--trusted-files` can be decided at rebuild time.
CREATE TABLE IF NOT EXISTS endpoint_history
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
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (peer_ip, direction, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS endpoint_history_mv TO endpoint_history AS
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
FROM observations
GROUP BY day, peer_ip, direction;

-- Backfill what was stored before this rollup existed. Rows inserted while this runs may be
-- counted by both the view and this statement: uniqExact and min/max/groupUniqArray make that
-- harmless.
INSERT INTO endpoint_history
SELECT
    toDate(ts) AS day,
    peer_ip,
    direction,
    minState(ts),
    maxState(ts),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 1),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'starttls-not-offered'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'plaintext'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'handshake-failed'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'cert-verify-failed'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls-required-missing'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'verified'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'trusted'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'untrusted'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND tls_trust = 'anonymous'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'milter'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'journald-trusted'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown' AND source_trust = 'local'),
    uniqExactIfState(event_id, replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
        AND (outcome = 'cert-verify-failed' OR startsWith(ifNull(failure_kind, ''), 'certificate-'))),
    minIfState(
        toUInt8(multiIf(ifNull(tls_protocol, '') = 'SSLv3', 1,
                        ifNull(tls_protocol, '') IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                        ifNull(tls_protocol, '') IN ('TLSv1.1', 'TLS1.1'), 3,
                        ifNull(tls_protocol, '') IN ('TLSv1.2', 'TLS1.2'), 4,
                        ifNull(tls_protocol, '') IN ('TLSv1.3', 'TLS1.3'), 5, 0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls'
            AND ifNull(tls_protocol, '') IN ('SSLv3', 'TLSv1', 'TLSv1.0', 'TLS1.0', 'TLSv1.1', 'TLS1.1', 'TLSv1.2', 'TLS1.2', 'TLSv1.3', 'TLS1.3')),
    maxIfState(
        toUInt8(multiIf(ifNull(tls_protocol, '') = 'SSLv3', 1,
                        ifNull(tls_protocol, '') IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                        ifNull(tls_protocol, '') IN ('TLSv1.1', 'TLS1.1'), 3,
                        ifNull(tls_protocol, '') IN ('TLSv1.2', 'TLS1.2'), 4,
                        ifNull(tls_protocol, '') IN ('TLSv1.3', 'TLS1.3'), 5, 0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls'),
    minIfState(ifNull(tls_bits, toUInt32(0)),
        replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome = 'tls' AND ifNull(tls_bits, toUInt32(0)) > 0),
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0 AND isNotNull(peer_hostname),
        [ifNull(peer_hostname, '')], emptyArrayString())),
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0, domains, emptyArrayString())),
    groupUniqArrayArrayState(if(replayed = 0 AND tls_reused = 0 AND isNotNull(peer_port),
        [ifNull(peer_port, toUInt16(0))], emptyArrayUInt16()))
FROM observations
GROUP BY day, peer_ip, direction;
