-- name: impact_protocol
-- title: Who breaks if protocols up to {protocol} are disabled
-- chart: bars label=peer y=messages
--
-- Impact analysis: the peers that, in the range, negotiated only protocols at or below
-- {protocol} (never anything stronger), with their TLS connections and the messages those
-- carried (queue ids on the connections). Disabling those protocols takes TLS away from exactly
-- these peers: with opportunistic TLS they fall back to plaintext, with mandatory TLS mail to or
-- from them stops. Connections whose protocol the log did not give are left out.
SELECT
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    max(ifNull(peer_hostname, '')) AS hostname,
    arraySort(groupUniqArrayArray(domains)) AS recipient_domains,
    count() AS connections,
    sum(length(queue_ids)) AS messages,
    argMax(protocol, protocol_rank) AS best_protocol,
    max(ts) AS last_seen
FROM
(
    SELECT
        ts,
        direction,
        peer_ip,
        peer_hostname,
        domains,
        queue_ids,
        ifNull(tls_protocol, '') AS protocol,
        multiIf(protocol = 'SSLv3', 1, protocol IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                protocol IN ('TLSv1.1', 'TLS1.1'), 3, protocol IN ('TLSv1.2', 'TLS1.2'), 4,
                protocol IN ('TLSv1.3', 'TLS1.3'), 5, 0) AS protocol_rank
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
) AS tls
WHERE protocol_rank > 0
GROUP BY direction, peer_ip
HAVING max(protocol_rank) <= multiIf({protocol} = 'SSLv3', 1, {protocol} IN ('TLSv1', 'TLSv1.0'), 2,
                                     {protocol} = 'TLSv1.1', 3, {protocol} = 'TLSv1.2', 4,
                                     {protocol} = 'TLSv1.3', 5, 0)
ORDER BY messages DESC, connections DESC, peer
