-- name: weakest_peers
-- title: Peers by the weakest protocol and cipher they used
-- chart: bars label=peer y=connections
--
-- Every peer with TLS connections in the range, weakest first: the lowest protocol it negotiated,
-- the cipher of its weakest connection (lowest protocol, then fewest bits), its best protocol and
-- how many TLS connections it had; `fewest_bits` is the smallest cipher strength of any of them.
-- Connections whose protocol the log did not give are left out.
SELECT
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    max(ifNull(peer_hostname, '')) AS hostname,
    argMin(protocol, strength) AS weakest_protocol,
    argMin(cipher, strength) AS weakest_cipher,
    argMin(bits, strength) AS weakest_bits,
    min(bits) AS fewest_bits,
    argMax(protocol, strength) AS best_protocol,
    count() AS connections,
    max(ts) AS last_seen
FROM
(
    SELECT
        ts,
        direction,
        peer_ip,
        peer_hostname,
        ifNull(tls_protocol, '') AS protocol,
        ifNull(tls_cipher, '') AS cipher,
        ifNull(tls_bits, toUInt32(0)) AS bits,
        multiIf(protocol = 'SSLv3', 1, protocol IN ('TLSv1', 'TLSv1.0', 'TLS1.0'), 2,
                protocol IN ('TLSv1.1', 'TLS1.1'), 3, protocol IN ('TLSv1.2', 'TLS1.2'), 4,
                protocol IN ('TLSv1.3', 'TLS1.3'), 5, 0) AS protocol_rank,
        protocol_rank * 100000 + bits AS strength
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
) AS tls
WHERE protocol_rank > 0
GROUP BY direction, peer_ip
ORDER BY min(strength), connections DESC, peer
LIMIT 200
