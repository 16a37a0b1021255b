-- name: handshake_failures
-- title: TLS handshake and certificate failures by reason and peer
-- chart: bars label=peer y=failures
--
-- Connections in the range whose TLS failed: `handshake-failed` (the handshake broke off) and
-- `cert-verify-failed` (our policy rejected the certificate), per peer and reason. `kind` is the
-- RFC 8460 result type where one fits; `reason` is the logged text (the OpenSSL reason when
-- Postfix logged one).
SELECT
    direction,
    replaceRegexpOne(IPv6NumToString(peer_ip), '^::ffff:', '') AS peer,
    max(ifNull(peer_hostname, '')) AS hostname,
    outcome,
    ifNull(failure_kind, '') AS kind,
    ifNull(failure_reason, '') AS reason,
    count() AS failures,
    min(ts) AS first_seen,
    max(ts) AS last_seen
FROM observations FINAL
WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome IN ('handshake-failed', 'cert-verify-failed')
GROUP BY direction, peer_ip, outcome, kind, reason
ORDER BY failures DESC, last_seen DESC, peer, reason
