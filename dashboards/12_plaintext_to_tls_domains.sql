-- name: plaintext_to_tls_domains
-- title: Plaintext deliveries to domains that usually get TLS
-- chart: bars label=domain y=messages
--
-- Outbound connections in the range that delivered mail in plaintext (`plaintext` or
-- `starttls-not-offered`, not caused by our own STARTTLS discard) to a recipient domain whose
-- decisions in the {lookback_days} days before the range were TLS at least 95 % of the time
-- (at least 5 of them). `messages` counts the queue ids on those connections.
SELECT
    domain,
    plaintext_connections,
    messages,
    peers,
    last_seen,
    baseline_tls,
    baseline_decisions,
    round(baseline_tls / baseline_decisions, 4) AS baseline_tls_share
FROM
(
    SELECT
        domain,
        count() AS plaintext_connections,
        sum(length(queue_ids)) AS messages,
        arraySort(groupUniqArray(replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', ''))) AS peers,
        max(ts) AS last_seen
    FROM observations FINAL
    ARRAY JOIN domains AS domain
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND direction = 'outbound'
        AND outcome IN ('plaintext', 'starttls-not-offered') AND ifNull(delivered, toUInt8(0)) = 1
        AND isNull(local_policy)
    GROUP BY domain
) AS plaintext
ALL INNER JOIN
(
    SELECT
        domain,
        countIf(outcome = 'tls') AS baseline_tls,
        count() AS baseline_decisions
    FROM observations FINAL
    ARRAY JOIN domains AS domain
    WHERE ts >= {from} - INTERVAL {lookback_days} DAY AND ts < {from} AND replayed = 0
        AND direction = 'outbound' AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
    GROUP BY domain
    HAVING baseline_decisions >= 5 AND baseline_tls >= 0.95 * baseline_decisions
) AS usual USING (domain)
ORDER BY messages DESC, domain
