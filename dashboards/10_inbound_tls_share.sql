-- name: inbound_tls_share
-- title: Inbound TLS share over time
-- chart: timeseries x=bucket y=share
--
-- Inbound SMTP sessions per time bucket: how many were decided (outcome known), how many used
-- TLS, and the TLS share of the decided ones. Sessions whose outcome the log cannot tell
-- (`unknown`) are counted apart and left out of the share.
SELECT
    toDateTime(intDiv(toUInt32(ts), {bucket_s}) * {bucket_s}, 'UTC') AS bucket,
    countIf(outcome != 'unknown') AS sessions,
    countIf(outcome = 'tls') AS tls_sessions,
    countIf(outcome = 'unknown') AS unknown_sessions,
    if(sessions = 0, 0, round(tls_sessions / sessions, 4)) AS share
FROM observations FINAL
WHERE ts >= {from} AND ts < {to} AND replayed = 0 AND direction = 'inbound'
GROUP BY bucket
ORDER BY bucket
