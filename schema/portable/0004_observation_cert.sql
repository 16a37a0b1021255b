-- The peer certificate of an observation (README "Observation JSON", `tls.cert`), where the MTA
-- logged it: Postfix at TLS log level 2 (subject and issuer CN, fingerprints), Exim `DN=`, the
-- milter's `{cert_subject}`/`{cert_issuer}`. NULL when not logged. Added columns go to the end of
-- the table, after ingest_ver, on 18.16 and on 26.x alike; old rows read NULL.
ALTER TABLE observations
    ADD COLUMN cert_subject Nullable(String),
    ADD COLUMN cert_issuer Nullable(String),
    ADD COLUMN cert_fingerprint Nullable(String),
    ADD COLUMN cert_pkey_fingerprint Nullable(String);
