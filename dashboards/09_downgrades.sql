-- name: downgrades
-- title: Downgrade events with severity
-- chart: bars label=peer y=events
--
-- Observations in the range that regress from the peer's baseline: the reputation engine's
-- downgrade-suspect rules (research/FEEDS.md §3.5, src/reputation/classify.rs `severity`)
-- applied to each decision, as an approximation computed from the observations alone.
--
-- Baseline: the {lookback_days} days before the range. A peer has a TLS baseline with at least 5
-- decisions on 3 days spanning 7 days, TLS in at least 95 % of them and no plaintext;
-- `historically-valid` when it is outbound and at least 95 % of those TLS connections had a
-- trusted or verified certificate and none failed certificate checks, else `tls-unverified`.
-- Its protocol floor and fewest bits are the lowest seen in the baseline. Severity per decision:
--
-- * high: plaintext, STARTTLS not offered, or TLS required but missing (possible STRIPTLS);
-- * medium: handshake failure, certificate rejected, or an untrusted or anonymous certificate
--   where the baseline is historically-valid;
-- * low: TLS with a protocol below the baseline floor, or fewer cipher bits.
--
-- Not modelled: episodes and their clearing, persistent-regression demotion, the decay, the
-- global guard, trusted-source counts, overrides. `tlsledger explain` gives the exact verdict.
SELECT
    ts,
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    hostname,
    multiIf(outcome IN ('plaintext', 'starttls-not-offered', 'tls-required-missing'), 'high',
            outcome IN ('handshake-failed', 'cert-verify-failed'), 'medium',
            baseline = 'historically-valid' AND tls_trust NOT IN ('verified', 'trusted'), 'medium',
            protocol_rank > 0 AND protocol_rank < floor_rank, 'low',
            bits > 0 AND bits < floor_bits, 'low', '') AS severity,
    multiIf(outcome IN ('plaintext', 'starttls-not-offered'), concat(toString(outcome), ' where TLS was the rule'),
            outcome = 'tls-required-missing', 'TLS required but not offered',
            outcome = 'handshake-failed', 'TLS handshake failed',
            outcome = 'cert-verify-failed', 'certificate rejected',
            baseline = 'historically-valid' AND tls_trust NOT IN ('verified', 'trusted'),
                concat('certificate ', toString(tls_trust), ' where it was trusted'),
            protocol_rank > 0 AND protocol_rank < floor_rank, concat(protocol, ' below the floor ', floor_protocol),
            concat(toString(bits), ' bits below the baseline ', toString(floor_bits))) AS reason,
    baseline,
    outcome,
    protocol,
    cipher,
    1 AS events
FROM
(
    SELECT
        ts,
        direction,
        peer_ip,
        ifNull(peer_hostname, '') AS hostname,
        outcome,
        tls_trust,
        ifNull(tls_protocol, '') AS protocol,
        ifNull(tls_cipher, '') AS cipher,
        ifNull(tls_bits, toUInt32(0)) AS bits,
        multiIf(protocol = 'SSLv3', 1, protocol IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                protocol IN ('TLSv1.1', 'TLS1.1'), 3, protocol IN ('TLSv1.2', 'TLS1.2'), 4,
                protocol IN ('TLSv1.3', 'TLS1.3'), 5, 0) AS protocol_rank
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to}
        AND replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
) AS events
ALL INNER JOIN
(
    SELECT
        direction,
        peer_ip,
        if(direction = 'outbound' AND countIf(tls_trust IN ('verified', 'trusted')) >= 0.95 * countIf(outcome = 'tls')
               AND countIf(outcome = 'cert-verify-failed' OR startsWith(ifNull(failure_kind, ''), 'certificate-')) = 0,
           'historically-valid', 'tls-unverified') AS baseline,
        minIf(base_rank, base_rank > 0) AS floor_rank,
        argMinIf(base_protocol, base_rank, base_rank > 0) AS floor_protocol,
        minIf(base_bits, base_bits > 0) AS floor_bits
    FROM
    (
        SELECT
            ts,
            direction,
            peer_ip,
            outcome,
            tls_trust,
            failure_kind,
            ifNull(tls_protocol, '') AS base_protocol,
            if(outcome = 'tls', ifNull(tls_bits, toUInt32(0)), toUInt32(0)) AS base_bits,
            if(outcome = 'tls',
               multiIf(base_protocol = 'SSLv3', 1, base_protocol IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                       base_protocol IN ('TLSv1.1', 'TLS1.1'), 3, base_protocol IN ('TLSv1.2', 'TLS1.2'), 4,
                       base_protocol IN ('TLSv1.3', 'TLS1.3'), 5, 0), 0) AS base_rank
        FROM observations FINAL
        WHERE ts >= {from} - INTERVAL {lookback_days} DAY AND ts < {from}
            AND replayed = 0 AND tls_reused = 0 AND isNull(local_policy) AND outcome != 'unknown'
    ) AS baseline_decisions
    GROUP BY direction, peer_ip
    HAVING count() >= 5 AND uniqExact(toDate(ts)) >= 3 AND toUInt32(max(ts)) - toUInt32(min(ts)) >= 7 * 86400
        AND countIf(outcome = 'tls') >= 0.95 * count()
        AND countIf(outcome IN ('plaintext', 'starttls-not-offered')) = 0
) AS baselines USING (direction, peer_ip)
WHERE severity != ''
ORDER BY ts, peer
