#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls exactly this).
#
# On a Debian 12 machine with Rust stable it installs the Debian packages the real-MTA
# tests need (Postfix, swaks, openssl, ClickHouse and ZooKeeper for the cluster test, rspamd, SpamAssassin, Exim's libraries,
# Sendmail's libraries and m4, OpenSMTPD's libraries, rsyslog and logrotate for the ingest tests:
# tests/harness/install-deps.sh, idempotent; Sendmail's makemap, Exim and OpenSMTPD are unpacked
# privately by tests/harness/unpack.sh), then runs
# every check CI runs, fastest first, and ends with cargo's normal test summary:
#   1. cargo fmt --check
#   2. cargo clippy on every target, warnings denied
#   3. a compile check of the cargo-fuzz targets (parsers/fuzz)
#   4. the modern-engine SQL check: every schema/ file, the sample queries and dashboards/ on ClickHouse 26
#      in process (chdb, in a virtualenv under .ci-work/ that this script creates)
#   5. cargo test for the whole workspace; the integration tests start their own private
#      Postfix and Sendmail instances and ClickHouse 18.16 servers on high 127.0.0.x ports and stop them
#      when they finish.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "tests/run.sh: cargo not found; install Rust stable with rustup first (see README)" >&2
    exit 1
fi

echo "== installing test dependencies (Debian packages)"
bash tests/harness/install-deps.sh postfix clickhouse cluster rspamd spamassassin exim sendmail opensmtpd journald milter ingest report
# Sendmail, Exim and OpenSMTPD conflict with Postfix: makemap, sendmail, exim and smtpd are used from
# private unpacks (sendmail-cf gives the m4 files the Sendmail lab builds its sendmail.cf from).
bash tests/harness/unpack.sh sendmail-bin .ci-work/pkgs/sendmail-bin
bash tests/harness/unpack.sh sendmail-cf .ci-work/pkgs/sendmail-cf
bash tests/harness/unpack.sh exim4-daemon-light .ci-work/pkgs/exim4-daemon-light
bash tests/harness/unpack.sh opensmtpd .ci-work/pkgs/opensmtpd
# Debian's own python3 lacks ensurepip until python3-venv is installed; the chdb check needs a venv.
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [[ -f parsers/fuzz/Cargo.toml ]]; then
    echo "== fuzz targets compile"
    cargo check --manifest-path parsers/fuzz/Cargo.toml --bins --locked
fi

echo "== schema, sample queries and dashboards on ClickHouse 26 (chdb)"
# The dashboards' placeholders (dashboards/README.md) get a range around the sample rows
# (2026-11-25 to 2026-12-02); tests/it/report.rs runs them on 18.16 and their Grafana form on both.
python3 tests/harness/chdb_check.py --params retention_days=400 \
    --params 'from=toDateTime(1795564800)' --params 'to=toDateTime(1796169600)' \
    --params bucket_s=3600 --params lookback_days=30 \
    --params "protocol='TLSv1.3'" --params "cipher='TLS_AES_256_GCM_SHA384'" \
    schema/portable tests/data/clickhouse/sample.sql schema/modern dashboards

echo "== cargo test"
cargo test --workspace --locked
