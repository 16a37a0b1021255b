-- name: cipher_share
-- title: Cipher share over time
-- chart: timeseries x=bucket y=connections series=cipher facet=direction
--
-- TLS connections per time bucket, direction (outbound: we were the client; inbound: the server)
-- and negotiated cipher, with each cipher's share of that bucket's TLS connections.
-- `unknown` is TLS proven without a summary line (e.g. the smtpd counters only).
SELECT
    bucket,
    direction,
    cipher,
    connections,
    round(connections / total, 4) AS share
FROM
(
    SELECT
        toDateTime(intDiv(toUInt32(ts), {bucket_s}) * {bucket_s}, 'UTC') AS bucket,
        direction,
        ifNull(tls_cipher, 'unknown') AS cipher,
        count() AS connections
    FROM observations FINAL
    WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND outcome = 'tls'
    GROUP BY bucket, direction, cipher
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
ORDER BY bucket, direction, cipher
