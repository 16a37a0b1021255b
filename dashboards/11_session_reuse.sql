-- name: session_reuse
-- title: TLS session reuse rate over time
-- chart: timeseries x=bucket y=rate facet=direction
--
-- TLS connections per time bucket and direction: how many resumed a cached TLS session (Postfix
-- `TLS connection reused`), the rate, and how many deliveries rode a cached SMTP connection
-- (`conn_use` >= 2, Postfix's connection cache).
SELECT
    toDateTime(intDiv(toUInt32(ts), {bucket_s}) * {bucket_s}, 'UTC') AS bucket,
    direction,
    count() AS tls_connections,
    countIf(tls_reused = 1) AS reused,
    round(reused / tls_connections, 4) AS rate,
    countIf(ifNull(conn_use, toUInt32(0)) >= 2) AS cached_connections
FROM observations FINAL
WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
GROUP BY bucket, direction
ORDER BY bucket, direction
