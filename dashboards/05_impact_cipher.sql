-- name: impact_cipher
-- title: Who breaks if the cipher {cipher} is disabled
-- chart: bars label=peer y=messages
--
-- Impact analysis: the peers whose every TLS connection in the range negotiated {cipher} (they
-- never agreed on another cipher), with their connections and the messages those carried.
-- Disabling the cipher takes TLS away from exactly these peers. Connections whose cipher the log
-- did not give are left out.
SELECT
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    max(ifNull(peer_hostname, '')) AS hostname,
    arraySort(groupUniqArrayArray(domains)) AS recipient_domains,
    count() AS connections,
    sum(length(queue_ids)) AS messages,
    arraySort(groupUniqArray(ifNull(tls_protocol, ''))) AS protocols,
    max(ts) AS last_seen
FROM observations FINAL
WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls' AND isNotNull(tls_cipher)
GROUP BY direction, peer_ip
HAVING countIf(ifNull(tls_cipher, '') != {cipher}) = 0
ORDER BY messages DESC, connections DESC, peer
