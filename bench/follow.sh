#!/usr/bin/env bash
# File-follow benchmark: `tlsledger ingest --follow` end to end into ClickHouse.
#
# This script measures how fast the daemon reads a large synthetic Postfix log
# that it follows (polling, fingerprinted generation, checkpoints), parses and
# correlates it, and loads the observations into a private ClickHouse server
# (issue 6, point 6), in lines per second. There is no anchor to beat; the
# parse alone (`tlsledger parse --output none`, the same file) is printed beside
# it, so the cost of following, checkpointing and loading shows.
#
# Steps:
#   1. Generate the log once with bench/gen-postfix-log.py (reused while size,
#      seed and framing match; other parameters than bench/parse.sh's get their
#      own file) and copy it to a temporary folder as mail.log.
#   2. Build target/release/tlsledger if it is missing.
#   3. Start a private ClickHouse server on loopback with tests/harness/clickhouse.sh
#      in bench/out/clickhouse-follow, on ports of its own (its data folder is
#      wiped first, and the server is stopped when the script ends, whatever happens).
#   4. For each of RUNS runs: apply the schema to a fresh database, then time
#      `tlsledger ingest --follow mail.log --no-state --clickhouse URL --exit-at-end
#      --stats` from start to exit (the checkpoints of earlier runs are removed,
#      so each run reads the whole file). The exit comes once the file has been
#      quiet for 4 polls (at least 0.4 s, included in the time). Check that
#      `SELECT count() FROM observations FINAL` equals the observations it printed.
#   5. Print lines, seconds, lines/s and MB/s of the fastest run, and of the parse alone.
#
# Usage: bench/follow.sh
# Environment:
#   SIZE_MB=100       size of the generated log in 10^6 bytes
#   SEED=1            generator seed
#   FRAMING=3339      3339 (rsyslog RFC 3339 timestamps) or 3164 ("Nov 30 ...")
#   RUNS=1            runs; the fastest one counts
#   POLL_MS=100       --poll-ms of the follower
#   CHECKPOINT_MS=5000   --checkpoint-interval-ms (sync points: ClickHouse flushed, checkpoint written)
#   BUILD=1           set to 0 to skip `cargo build --release` when the binary is missing
#   TLSLEDGER=target/release/tlsledger   the binary to measure
#   CH_HTTP_PORT=31123 CH_TCP_PORT=31900 CH_INTERSERVER_PORT=31909   the private server's ports
# The exit status is 0 when the load was measured and complete, 2 otherwise.

set -euo pipefail

# All paths below are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB=${SIZE_MB:-100}
SEED=${SEED:-1}
FRAMING=${FRAMING:-3339}
RUNS=${RUNS:-1}
POLL_MS=${POLL_MS:-100}
CHECKPOINT_MS=${CHECKPOINT_MS:-5000}
BUILD=${BUILD:-1}
TLSLEDGER=${TLSLEDGER:-target/release/tlsledger}
export CH_HTTP_PORT=${CH_HTTP_PORT:-31123}
export CH_TCP_PORT=${CH_TCP_PORT:-31900}
export CH_INTERSERVER_PORT=${CH_INTERSERVER_PORT:-31909}
OUT_DIR=bench/out
CH_DIR=$OUT_DIR/clickhouse-follow
HARNESS=tests/harness/clickhouse.sh
DB=follow

suffix=""
[ "$SIZE_MB" = "520" ] || suffix="$suffix-${SIZE_MB}mb"
[ "$SEED" = "1" ] || suffix="$suffix-seed$SEED"
[ "$FRAMING" = "3339" ] || suffix="$suffix-$FRAMING"
LOG=$OUT_DIR/postfix-bench$suffix.log
PARAMS=$LOG.params

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
SERVER_STARTED=0

log() { printf '==> %s\n' "$*" >&2; }

# shellcheck disable=SC2317  # cleanup is called by the trap.
cleanup() {
    if [ "$SERVER_STARTED" = "1" ]; then
        bash "$HARNESS" stop "$CH_DIR" >&2 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Step 1: the log.
want_params="size_mb=$SIZE_MB seed=$SEED framing=$FRAMING"
if [ -f "$LOG" ] && [ -f "$PARAMS" ] && [ "$(cat "$PARAMS")" = "$want_params" ]; then
    log "Reusing $LOG ($want_params)."
else
    log "Generating $LOG ($want_params)."
    rm -f "$PARAMS"
    python3 bench/gen-postfix-log.py --size-mb "$SIZE_MB" --seed "$SEED" --framing "$FRAMING" --out "$LOG"
    echo "$want_params" >"$PARAMS"
fi
cp "$LOG" "$WORK/mail.log"
BYTES=$(stat -c %s "$WORK/mail.log")
LINES=$(wc -l <"$WORK/mail.log")

# Step 2: the binary.
if [ ! -x "$TLSLEDGER" ] && [ "$BUILD" = "1" ] && command -v cargo >/dev/null 2>&1; then
    log "Building tlsledger with cargo build --release, because $TLSLEDGER is missing."
    cargo build --release >&2 || log "The release build failed."
fi
if [ ! -x "$TLSLEDGER" ]; then
    log "$TLSLEDGER does not exist (build it with: cargo build --release); nothing to measure."
    exit 2
fi

# Step 3: the private server.
if ! command -v clickhouse-client >/dev/null 2>&1 || ! PATH="$PATH:/usr/sbin" command -v clickhouse-server >/dev/null 2>&1; then
    log "Installing ClickHouse with $HARNESS install, because clickhouse-client or clickhouse-server is missing."
    bash "$HARNESS" install >&2
fi
bash "$HARNESS" stop "$CH_DIR" >/dev/null 2>&1 || true
rm -rf "$CH_DIR/data" "$CH_DIR/tmp"
SERVER_STARTED=1
URL=$(bash "$HARNESS" start "$CH_DIR")
log "ClickHouse runs at $URL."

ch() { clickhouse-client --host 127.0.0.1 --port "$CH_TCP_PORT" --query "$1"; }

# stat_value NAME prints a counter of tlsledger's --stats output.
stat_value() {
    awk -v name="$1" '{ v = $NF; $NF = ""; sub(/ +$/, ""); if ($0 == name) print v }' "$WORK/ingest.stderr"
}

now() { date +%s.%N; }

# Step 4: the runs.
best=""
for run in $(seq 1 "$RUNS"); do
    ch "DROP DATABASE IF EXISTS $DB"
    "$TLSLEDGER" schema apply --clickhouse "$URL" --database "$DB" 2>"$WORK/schema.stderr" || {
        cat "$WORK/schema.stderr" >&2
        exit 2
    }
    rm -rf "$WORK/checkpoints" "$WORK/spool"
    start=$(now)
    "$TLSLEDGER" ingest --follow "$WORK/mail.log" --checkpoint-dir "$WORK/checkpoints" --no-state \
        --clickhouse "$URL" --database "$DB" --spool-dir "$WORK/spool" --exit-at-end --stats \
        --poll-ms "$POLL_MS" --checkpoint-interval-ms "$CHECKPOINT_MS" \
        </dev/null >/dev/null 2>"$WORK/ingest.stderr" || {
        cat "$WORK/ingest.stderr" >&2
        exit 2
    }
    end=$(now)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    observations=$(stat_value observations)
    rows=$(ch "SELECT count() FROM $DB.observations FINAL")
    if [ "$rows" != "$observations" ]; then
        log "run $run: ClickHouse holds $rows rows, tlsledger emitted $observations observations."
        exit 2
    fi
    log "run $run: $secs s, $observations observations, all in ClickHouse."
    best=$(awk -v a="$best" -v b="$secs" 'BEGIN { print (a == "" || b < a) ? b : a }')
done

# The parse alone, for reference.
start=$(now)
"$TLSLEDGER" parse --output none "$WORK/mail.log" </dev/null
end=$(now)
parse_secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')

# Step 5: the report.
report() {
    awk -v name="$1" -v secs="$2" -v n="$LINES" -v bytes="$BYTES" \
        'BEGIN { printf "%-44s %10d lines %8.2f s %12.0f lines/s %8.1f MB/s\n", name, n, secs, n / secs, bytes / secs / 1e6 }'
}
echo "file follow into ClickHouse $(ch 'SELECT version()'), $LINES lines ($BYTES bytes), $observations observations, best of $RUNS"
report "tlsledger ingest --follow -> ClickHouse" "$best"
report "tlsledger parse --output none (reference)" "$parse_secs"
