-- name: verification
-- title: Certificate verification rate by recipient domain and peer (outbound)
-- chart: bars label=peer y=connections
--
-- Outbound TLS connections in the range per recipient domain and peer: how many verified the
-- peer's certificate (Postfix `Verified`: chain and name match), how many only trusted it (chain
-- only), and how many did neither (`Untrusted`, `Anonymous`). Peers that never verify are at the
-- top (lowest rate first). A connection that delivered to several domains counts for each;
-- connections with no logged recipient domain are listed under ''.
SELECT
    domain,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    max(ifNull(peer_hostname, '')) AS hostname,
    count() AS connections,
    countIf(tls_trust = 'verified') AS verified,
    countIf(tls_trust = 'trusted') AS trusted,
    countIf(tls_trust IN ('untrusted', 'anonymous', 'none')) AS unverified,
    round(verified / connections, 4) AS verified_rate,
    round((verified + trusted) / connections, 4) AS trusted_or_verified_rate
FROM observations FINAL
ARRAY JOIN if(empty(domains), [''], domains) AS domain
WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND direction = 'outbound' AND outcome = 'tls'
GROUP BY domain, peer_ip
ORDER BY trusted_or_verified_rate, verified_rate, connections DESC, domain, peer
