-- name: broken_starttls
-- title: Broken-STARTTLS hosts
-- chart: bars label=peer y=failures
--
-- Peers whose STARTTLS is broken: the handshake fails, so the MTA must retry in plaintext or
-- defer. This is the reputation engine's broken-starttls flag (research/FEEDS.md §3.4,
-- src/reputation/classify.rs) computed from the observations alone, as an approximation:
--
-- * failures are `handshake-failed` decisions in the range after the peer's last TLS success
--   (a success clears the flag);
-- * flagged with at least 2 such failures, the latest two within 24 hours, when the peer had a
--   TLS success in the range or the {lookback_days} days before it; with 1 failure when it had none;
-- * never for a peer whose baseline (the {lookback_days} days before the range) is a TLS class:
--   at least 5 decisions on 3 days spanning 7 days, TLS in at least 95 % of them and no plaintext.
--   There, failures are downgrades (see downgrades.sql);
-- * not modelled: the hold/retry cycle (`level`, `retry_after`), trusted sources, overrides.
SELECT
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    hostname,
    length(failures_after_tls) AS failures,
    toDateTime(failures_after_tls[1], 'UTC') AS last_failure,
    tls_connections AS tls_successes,
    if(last_tls_seconds = 0, '', toString(toDateTime(last_tls_seconds, 'UTC'))) AS last_tls_success
FROM
(
    SELECT
        direction,
        peer_ip,
        max(ifNull(peer_hostname, '')) AS hostname,
        countIf(outcome = 'tls') AS tls_connections,
        toUInt32(maxIf(ts, outcome = 'tls')) AS last_tls_seconds,
        arrayFilter(t -> t > last_tls_seconds,
            arrayReverseSort(groupArrayIf(toUInt32(ts), outcome = 'handshake-failed' AND ts >= {from}))) AS failures_after_tls,
        countIf(ts < {from}) AS baseline_decisions,
        countIf(ts < {from} AND outcome = 'tls') AS baseline_tls,
        countIf(ts < {from} AND outcome IN ('plaintext', 'starttls-not-offered')) AS baseline_plaintext,
        uniqExactIf(toDate(ts), ts < {from}) AS baseline_days,
        toUInt32(maxIf(ts, ts < {from})) - toUInt32(minIf(ts, ts < {from})) AS baseline_span_s
    FROM observations FINAL
    WHERE ts >= {from} - INTERVAL {lookback_days} DAY AND ts < {to}
        AND replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
    GROUP BY direction, peer_ip
) AS per_peer
WHERE NOT (baseline_decisions >= 5 AND baseline_days >= 3 AND baseline_span_s >= 7 * 86400
           AND baseline_tls >= 0.95 * baseline_decisions AND baseline_plaintext = 0)
    AND ((tls_connections > 0 AND length(failures_after_tls) >= 2
          AND failures_after_tls[1] - failures_after_tls[2] <= 86400)
      OR (tls_connections = 0 AND length(failures_after_tls) >= 1))
ORDER BY failures DESC, last_failure DESC, peer
