-- name: protocol_share
-- title: TLS protocol share over time
-- chart: timeseries x=bucket y=connections series=protocol facet=direction
--
-- TLS connections per time bucket, direction (outbound: we were the client; inbound: the server)
-- and negotiated protocol, with each protocol's share of that bucket's TLS connections.
-- `unknown` is TLS proven without a summary line (e.g. the smtpd counters only).
SELECT
    bucket,
    direction,
    protocol,
    connections,
    round(connections / total, 4) AS share
FROM
(
    SELECT
        toDateTime(intDiv(toUInt32(ts), {bucket_s}) * {bucket_s}, 'UTC') AS bucket,
        direction,
        ifNull(tls_protocol, 'unknown') AS protocol,
        count() AS connections
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
    GROUP BY bucket, direction, protocol
) AS per_protocol
ANY LEFT JOIN
(
    SELECT
        toDateTime(intDiv(toUInt32(ts), {bucket_s}) * {bucket_s}, 'UTC') AS bucket,
        direction,
        count() AS total
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
    GROUP BY bucket, direction
) AS per_bucket USING (bucket, direction)
ORDER BY bucket, direction, protocol
