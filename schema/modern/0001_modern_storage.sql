-- Modern-only upgrades (ClickHouse >= 22; users run 24.x-26.x), applied by `tlsledger schema
-- apply` only when the server is new enough. Each statement is idempotent, so a re-run is safe.
-- {retention_days} is substituted by `schema apply --retention-days` (default 400).

-- Retention without a cron job (18.16: drop old partitions instead).
ALTER TABLE observations MODIFY TTL ts + INTERVAL {retention_days} DAY;

-- Few distinct values: dictionary-encode them.
ALTER TABLE observations MODIFY COLUMN reporter LowCardinality(String);
ALTER TABLE observations MODIFY COLUMN instance LowCardinality(String);
ALTER TABLE observations MODIFY COLUMN source_kind LowCardinality(String);
ALTER TABLE observations MODIFY COLUMN source_trust LowCardinality(String);
ALTER TABLE observations MODIFY COLUMN tls_protocol LowCardinality(Nullable(String));
ALTER TABLE observations MODIFY COLUMN tls_cipher LowCardinality(Nullable(String));
ALTER TABLE observations MODIFY COLUMN failure_kind LowCardinality(Nullable(String));

-- Compression codecs for the bulky columns.
ALTER TABLE observations MODIFY COLUMN end_ts DateTime('UTC') CODEC(Delta, ZSTD(1));
ALTER TABLE observations MODIFY COLUMN failure_reason Nullable(String) CODEC(ZSTD(3));
ALTER TABLE observations MODIFY COLUMN source_name String CODEC(ZSTD(3));

-- The address as the IPv6 type, for readable queries (`WHERE peer_ip6 = toIPv6('192.0.2.1')`).
ALTER TABLE observations ADD COLUMN IF NOT EXISTS peer_ip6 IPv6 ALIAS CAST(peer_ip AS IPv6);

-- Skip indexes for the dashboards' domain and host lookups.
ALTER TABLE observations ADD INDEX IF NOT EXISTS idx_domains domains TYPE bloom_filter GRANULARITY 4;
ALTER TABLE observations ADD INDEX IF NOT EXISTS idx_peer_hostname peer_hostname TYPE bloom_filter GRANULARITY 4;
