-- Sample rows and the queries that read them, run after schema/ on both engines: ClickHouse 18.16
-- (tests/it/clickhouse.rs) and ClickHouse 26 in process (chdb, tests/run.sh). The same event is
-- inserted twice, as an at-least-once resend would, to check that FINAL and the rollup count it once.
INSERT INTO observations (ts, ts_micros, end_ts, end_ts_micros, mta, reporter, instance, direction, peer_hostname, peer_ip, peer_port, domains, queue_ids, outcome, has_tls, tls_trust, tls_protocol, tls_cipher, tls_bits, tls_alg_bits, tls_reused, tls_sni, tls_key_exchange, tls_verify_errors, failure_kind, failure_reason, delivered, tls_feature, conn_use, local_policy, after_tls_failure, replayed, source_kind, source_name, source_trust, lines, event_id, ingest_ver)
VALUES
    ('2026-11-30 10:00:00', 123456, '2026-11-30 10:00:01', 0, 'postfix', 'mx1', 'postfix', 'outbound', 'mx.example.net', IPv6StringToNum('::ffff:192.0.2.25'), 25, ['example.net'], ['4XyZ1234ABC'], 'tls', 1, 'verified', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', 256, 256, 0, NULL, 'X25519', [], NULL, NULL, 1, NULL, NULL, NULL, 0, 0, 'file', '/var/log/mail.log', 'local', 2, 'a1', 1),
    ('2026-11-30 10:00:00', 123456, '2026-11-30 10:00:01', 0, 'postfix', 'mx1', 'postfix', 'outbound', 'mx.example.net', IPv6StringToNum('::ffff:192.0.2.25'), 25, ['example.net'], ['4XyZ1234ABC'], 'tls', 1, 'verified', 'TLSv1.3', 'TLS_AES_256_GCM_SHA384', 256, 256, 0, NULL, 'X25519', [], NULL, NULL, 1, NULL, NULL, NULL, 0, 0, 'file', '/var/log/mail.log', 'local', 2, 'a1', 2),
    ('2026-11-30 11:00:00', 0, '2026-11-30 11:00:00', 0, 'postfix', 'mx1', 'postfix', 'outbound', 'mx.example.net', IPv6StringToNum('::ffff:192.0.2.25'), 25, ['example.net'], ['5ABCDE12345'], 'handshake-failed', 0, 'none', NULL, NULL, NULL, NULL, 0, NULL, NULL, [], 'validation-failure', 'SSL_connect error: -1', 0, NULL, NULL, NULL, 0, 0, 'file', '/var/log/mail.log', 'local', 3, 'a2', 1),
    ('2026-11-30 12:00:00', 0, '2026-11-30 12:00:02', 0, 'postfix', 'mx1', 'postfix/submission', 'inbound', NULL, IPv6StringToNum('2001:db8::7'), NULL, [], ['6ABCDE12345'], 'plaintext', 0, 'none', NULL, NULL, NULL, NULL, 0, NULL, NULL, [], NULL, NULL, 1, NULL, NULL, NULL, 0, 0, 'file', '/var/log/mail.log', 'local', 4, 'a3', 1);

SELECT count(), uniqExact(event_id) FROM observations FINAL;

SELECT
    IPv6NumToString(peer_ip) AS ip,
    direction,
    uniqExactMerge(observations) AS n,
    uniqExactIfMerge(tls) AS n_tls,
    uniqExactIfMerge(handshake_failed) AS n_failed,
    uniqExactIfMerge(verified) AS n_verified,
    minMerge(first_seen) AS first_seen,
    maxMerge(last_seen) AS last_seen,
    argMaxMerge(last_outcome) AS last_outcome,
    groupUniqArrayArrayMerge(domains) AS domains
FROM endpoint_daily
GROUP BY peer_ip, direction
ORDER BY ip, direction;

-- The reputation rollup (0003_endpoint_history.sql), merged as `reputation rebuild` reads it.
SELECT
    IPv6NumToString(peer_ip) AS ip,
    direction,
    toUInt32(day) AS day_number,
    uniqExactIfMerge(o_tls),
    uniqExactIfMerge(o_plaintext),
    uniqExactIfMerge(o_handshake_failed),
    uniqExactIfMerge(t_verified),
    uniqExactIfMerge(s_local),
    uniqExactIfMerge(cert_failures),
    minIfMerge(min_protocol),
    maxIfMerge(max_protocol),
    minIfMerge(min_bits),
    groupUniqArrayArrayMerge(hostnames),
    groupUniqArrayArrayMerge(domains)
FROM endpoint_history
GROUP BY peer_ip, direction, day
ORDER BY ip, direction;
