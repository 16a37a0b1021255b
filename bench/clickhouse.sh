#!/usr/bin/env bash
# ClickHouse load benchmark: tlsledger end to end against clickhouse-client.
#
# This script measures how fast `tlsledger parse --clickhouse` turns a large
# synthetic Postfix log into rows of the `observations` table, and compares it
# with one anchor (issue 3, point 7):
#   * `clickhouse-client ... INSERT INTO observations FORMAT TSV` fed with the
#     very same rows, already rendered as TSV, so that the client only has to
#     read them and send them (target: tlsledger's whole pipeline, reading,
#     parsing, correlating and inserting, takes no longer than the client does
#     for the ready rows, i.e. client time / tlsledger time >= 1.0).
# Both loads go to the same private ClickHouse server, each into a fresh
# database with the same schema (`tlsledger schema apply`, including the
# endpoint_daily materialized view); creating the tables is not timed on either
# side.  How the rows reach the server differs: tlsledger sends RowBinary over
# HTTP in requests of 100,000 rows (--batch-rows, each sorted by the table's key),
# the client sends native blocks over TCP.  The
# server CPU column of the report shows what each way costs the server.
#
# Steps:
#   1. Generate the log once with bench/gen-postfix-log.py; a later run reuses it
#      when the size, seed and framing still match.  The default 520 MB log is
#      bench/out/postfix-bench.log, shared with bench/parse.sh; other parameters
#      get their own file, e.g. bench/out/postfix-bench-100mb.log.
#   2. Build target/release/tlsledger if it is missing.
#   3. Start a private ClickHouse server on loopback with tests/harness/clickhouse.sh
#      in bench/out/clickhouse (its data folder is wiped first, and the server is
#      stopped when the script ends, whatever happens).
#   4. For each of RUNS runs:
#      a. drop the databases, run `tlsledger schema apply --database bench`, wait
#         until the server merges nothing, then time `tlsledger parse --output none
#         --stats --clickhouse URL --database bench`, and check that
#         `SELECT count() FROM bench.observations` equals the observations it printed;
#      b. in the first run only, dump the rows with `SELECT * ... FORMAT TSV`
#         (untimed);
#      c. apply the schema to a fresh database bench2, wait for merges again, time
#         `clickhouse-client --query "INSERT INTO bench2.observations FORMAT TSV" < rows.tsv`
#         and check its count; in the first run also check that both tables hold
#         exactly the same rows.
#      The parse alone (`--output none` without --clickhouse) is timed as well, as a
#      reference that shows what the load adds.
#   5. Print rows, seconds, rows/s, MB/s, the CPU and memory of each side, the
#      ratio and PASS/FAIL against the target.
#
# Usage: bench/clickhouse.sh
# Environment:
#   SIZE_MB=520       size of the generated log in 10^6 bytes
#   SEED=1            generator seed
#   FRAMING=3339      3339 (rsyslog RFC 3339 timestamps) or 3164 ("Nov 30 ...")
#   RUNS=1            runs of each load; the fastest one counts (loads are slow)
#   BUILD=1           set to 0 to skip `cargo build --release` when the binary is missing
#   PARSE_ONLY=1      set to 0 to skip the reference timing of the parse without ClickHouse
#   TLSLEDGER=target/release/tlsledger   the binary to measure
#   LOAD_ARGS=        extra flags for the timed `tlsledger parse --clickhouse` (e.g. --batch-rows N)
#   CH_HTTP_PORT=38123 CH_TCP_PORT=39000 CH_INTERSERVER_PORT=39009   the private server's ports
#   MERGE_WAIT=600    most seconds to wait for background merges before a timed load
#   TSV_ORDER=time    order of the rows in rows.tsv: `time` (the default) adds
#                     `ORDER BY end_ts, end_ts_micros, event_id`, the order in which a log
#                     produces them and tlsledger sends them: what a tool pre-rendering the
#                     same log would hand the client. `table` is a plain `SELECT * ... FORMAT
#                     TSV`, rows already sorted by the table's key (by peer), which spares the
#                     server its sort and makes the materialized views cheaper: a head start
#                     the dump got from the server (the client is about 20 % faster with it).
# The exit status is 0 when the target passes, 1 when it fails, and 2 when a
# load could not be measured (a command failed or a row count does not match).

set -euo pipefail

# All paths below are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB=${SIZE_MB:-520}
SEED=${SEED:-1}
FRAMING=${FRAMING:-3339}
RUNS=${RUNS:-1}
BUILD=${BUILD:-1}
PARSE_ONLY=${PARSE_ONLY:-1}
TLSLEDGER=${TLSLEDGER:-target/release/tlsledger}
LOAD_ARGS=${LOAD_ARGS:-}
MERGE_WAIT=${MERGE_WAIT:-600}
TSV_ORDER=${TSV_ORDER:-time}
export CH_HTTP_PORT=${CH_HTTP_PORT:-38123}
export CH_TCP_PORT=${CH_TCP_PORT:-39000}
export CH_INTERSERVER_PORT=${CH_INTERSERVER_PORT:-39009}
OUT_DIR=bench/out
# The server's folder is fixed (not taken from the environment), because its
# data folder is deleted at every start.
CH_DIR=$OUT_DIR/clickhouse
HARNESS=tests/harness/clickhouse.sh
DB_A=bench
DB_B=bench2

# The target: ClickHouse client time divided by tlsledger time.
TARGET_RATIO=1.0

# The default parameters use the log of bench/parse.sh; any other parameter
# gets its own file, so that a quick run never replaces the big shared log.
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

# The EXIT trap stops the private server and removes the temporary folder; the
# INT and TERM traps turn a signal into an exit, so that the EXIT trap runs too.
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

case "$TSV_ORDER" in
    table) ORDER_BY="" ;;
    time) ORDER_BY=" ORDER BY end_ts, end_ts_micros, event_id" ;;
    *)
        log "TSV_ORDER must be table or time, not $TSV_ORDER."
        exit 2
        ;;
esac

# Step 1: generate the log unless a file made with the same parameters exists.
# The parameters are stored next to the log, because the size alone does not
# tell a seed-1 file from a seed-2 file.
want_params="size_mb=$SIZE_MB seed=$SEED framing=$FRAMING"
want_bytes=$(awk -v mb="$SIZE_MB" 'BEGIN { printf "%d", mb * 1000000 }')
have_bytes=0
if [ -f "$LOG" ]; then
    have_bytes=$(stat -c %s "$LOG")
fi
if [ "$have_bytes" -ge "$want_bytes" ] && [ -f "$PARAMS" ] && [ "$(cat "$PARAMS")" = "$want_params" ]; then
    log "Reusing $LOG ($have_bytes bytes, $want_params)."
else
    log "Generating $LOG ($want_params)."
    rm -f "$PARAMS"
    gen_start=$(date +%s.%N)
    python3 bench/gen-postfix-log.py --size-mb "$SIZE_MB" --seed "$SEED" \
        --framing "$FRAMING" --out "$LOG"
    gen_end=$(date +%s.%N)
    echo "$want_params" > "$PARAMS"
    log "Generation took $(awk -v a="$gen_start" -v b="$gen_end" 'BEGIN { printf "%.1f", b - a }') s."
fi
BYTES=$(stat -c %s "$LOG")

# Step 2: find or build the tlsledger binary.  Without it there is nothing to
# compare, so its absence ends the run.
if [ ! -x "$TLSLEDGER" ] && [ "$BUILD" = "1" ] && command -v cargo >/dev/null 2>&1; then
    log "Building tlsledger with cargo build --release, because $TLSLEDGER is missing."
    cargo build --release >&2 || log "The release build failed."
fi
if [ ! -x "$TLSLEDGER" ]; then
    log "$TLSLEDGER does not exist (build it with: cargo build --release); nothing to measure."
    exit 2
fi

# The CPU time and peak memory of each load come from GNU time.
if [ ! -x /usr/bin/time ]; then
    log "/usr/bin/time is missing (install the Debian package time); nothing is measured."
    exit 2
fi

# Step 3: the private server.  A server left running by an interrupted run is
# stopped (the harness signals only the pid recorded in this folder), and the
# old data is deleted, because ClickHouse 18.16 can bring back dropped or
# truncated parts after a restart.
if ! command -v clickhouse-client >/dev/null 2>&1 || ! PATH="$PATH:/usr/sbin" command -v clickhouse-server >/dev/null 2>&1; then
    log "Installing ClickHouse with $HARNESS install, because clickhouse-client or clickhouse-server is missing."
    bash "$HARNESS" install >&2
fi
bash "$HARNESS" stop "$CH_DIR" >/dev/null 2>&1 || true
rm -rf "$CH_DIR/data" "$CH_DIR/tmp"
SERVER_STARTED=1
URL=$(bash "$HARNESS" start "$CH_DIR")
SERVER_PID=$(cat "$CH_DIR/clickhouse.pid")
log "ClickHouse runs at $URL (native port $CH_TCP_PORT, pid $SERVER_PID, data in $CH_DIR/data)."

# ch QUERY runs one query with the native client and prints its result.
ch() {
    clickhouse-client --host 127.0.0.1 --port "$CH_TCP_PORT" --query "$1"
}
SERVER_VERSION=$(ch "SELECT version()")

# fresh_schema DB drops DB and creates it again with tlsledger's schema.
fresh_schema() {
    ch "DROP DATABASE IF EXISTS $1"
    "$TLSLEDGER" schema apply --clickhouse "$URL" --database "$1" 2> "$WORK/schema-$1.stderr" || {
        cat "$WORK/schema-$1.stderr" >&2
        return 1
    }
}

# wait_merges waits until the server runs no background merge, so that a timed
# load does not share the two cores with the merges of the previous one.
wait_merges() {
    local waited=0
    while [ "$(ch "SELECT count() FROM system.merges")" != "0" ]; do
        if [ "$waited" -ge $((MERGE_WAIT * 2)) ]; then
            log "Merges are still running after ${MERGE_WAIT} s; timing anyway."
            return 0
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
}

# server_cpu prints the CPU seconds (user + system) the server used so far.
server_cpu() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the command name.
    sed 's/^.*) //' "/proc/$SERVER_PID/stat" |
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'
}

# server_peak_reset and server_peak_mb measure the server's peak resident
# memory during one load: writing 5 to clear_refs resets VmHWM (Linux >= 4.0).
server_peak_reset() {
    echo 5 > "/proc/$SERVER_PID/clear_refs" 2>/dev/null || true
}
server_peak_mb() {
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER_PID/status"
}

# timed NAME COMMAND... runs COMMAND once with stderr in $WORK/NAME.stderr and
# prints one line: wall seconds, client CPU seconds, client peak RSS in MB,
# server CPU seconds and server peak RSS in MB during the run.  The caller sets
# up stdin; COMMAND's stdout is discarded, because the function's own stdout
# carries the result.  It returns COMMAND's status.
timed() {
    local name=$1 start end cpu0 cpu1 status=0
    shift
    server_peak_reset
    cpu0=$(server_cpu)
    start=$(date +%s%N)
    /usr/bin/time -f '%U %S %M' -o "$WORK/$name.rusage" "$@" > /dev/null 2> "$WORK/$name.stderr" || status=$?
    end=$(date +%s%N)
    cpu1=$(server_cpu)
    [ "$status" = "0" ] || return "$status"
    awk -v t="$((end - start))" -v c0="$cpu0" -v c1="$cpu1" -v peak="$(server_peak_mb)" \
        '{ printf "%.6f %.2f %.0f %.2f %s\n", t / 1e9, $1 + $2, $3 / 1024, c1 - c0, peak }' \
        "$WORK/$name.rusage"
}

# best OLD NEW keeps the line with the shorter wall time.
best() {
    if [ -z "$1" ] || awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); exit !(y[1] < x[1]) }'; then
        echo "$2"
    else
        echo "$1"
    fi
}

# stat_value NAME prints a counter of tlsledger's --stats output.
stat_value() {
    awk -v name="$1" '{ v = $NF; $NF = ""; sub(/ +$/, ""); if ($0 == name) print v }' "$WORK/load.stderr"
}

log "Warming the page cache."
cat "$LOG" > /dev/null
LINES=$(wc -l < "$LOG")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "Load average before the runs: $LOAD_BEFORE."

ROWS_TSV=$WORK/rows.tsv
status=0
invalid=""
r_parse="" r_load="" r_client=""
OBSERVATIONS=""
CONTENT="not checked"

for run in $(seq "$RUNS"); do
    # The reference: the same parse without ClickHouse.
    if [ "$PARSE_ONLY" = "1" ]; then
        log "Run $run/$RUNS: timing tlsledger parse without ClickHouse (reference)."
        r=$(timed parse "$TLSLEDGER" parse --output none --stats "$LOG" < /dev/null) || {
            cat "$WORK/parse.stderr" >&2
            invalid="tlsledger parse failed"
            break
        }
        r_parse=$(best "$r_parse" "$r")
    fi

    # Step 4a: tlsledger loads the log into a fresh database.
    fresh_schema "$DB_A"
    wait_merges
    rm -rf "$WORK/spool"
    log "Run $run/$RUNS: timing tlsledger parse --clickhouse $URL --database $DB_A."
    r=$(timed load "$TLSLEDGER" parse --output none --stats --clickhouse "$URL" --database "$DB_A" \
        --spool-dir "$WORK/spool" $LOAD_ARGS "$LOG" < /dev/null) || {
        cat "$WORK/load.stderr" >&2
        invalid="tlsledger parse --clickhouse failed"
        break
    }
    r_load=$(best "$r_load" "$r")
    OBSERVATIONS=$(stat_value observations)
    inserted=$(stat_value "clickhouse rows inserted")
    count_a=$(ch "SELECT count() FROM $DB_A.observations")
    log "tlsledger printed $OBSERVATIONS observations and $inserted rows inserted; $DB_A.observations holds $count_a rows."
    if [ -z "$OBSERVATIONS" ] || [ "$count_a" != "$OBSERVATIONS" ] || [ "$inserted" != "$OBSERVATIONS" ]; then
        cat "$WORK/load.stderr" >&2
        invalid="count mismatch after tlsledger: printed ${OBSERVATIONS:-nothing}, inserted ${inserted:-?}, table $count_a"
        break
    fi

    # Step 4b: the same rows as TSV, once.
    if [ "$run" = "1" ]; then
        log "Dumping $DB_A.observations as TSV in $TSV_ORDER order (untimed)."
        ch "SELECT * FROM $DB_A.observations$ORDER_BY FORMAT TSV" > "$ROWS_TSV"
        TSV_BYTES=$(stat -c %s "$ROWS_TSV")
        TSV_ROWS=$(wc -l < "$ROWS_TSV")
        if [ "$TSV_ROWS" != "$OBSERVATIONS" ]; then
            invalid="the TSV dump has $TSV_ROWS rows, not $OBSERVATIONS"
            break
        fi
    fi

    # Step 4c: clickhouse-client loads the ready rows into another fresh database.
    fresh_schema "$DB_B"
    wait_merges
    cat "$ROWS_TSV" > /dev/null
    log "Run $run/$RUNS: timing clickhouse-client INSERT INTO $DB_B.observations FORMAT TSV."
    r=$(timed client clickhouse-client --host 127.0.0.1 --port "$CH_TCP_PORT" \
        --query "INSERT INTO $DB_B.observations FORMAT TSV" < "$ROWS_TSV") || {
        cat "$WORK/client.stderr" >&2
        invalid="clickhouse-client INSERT failed"
        break
    }
    r_client=$(best "$r_client" "$r")
    count_b=$(ch "SELECT count() FROM $DB_B.observations")
    log "$DB_B.observations holds $count_b rows."
    if [ "$count_b" != "$TSV_ROWS" ]; then
        invalid="count mismatch after clickhouse-client: $TSV_ROWS rows sent, table $count_b"
        break
    fi

    # In the first run, both tables must hold the same rows, byte for byte in
    # TSV, including ingest_ver; event_id is unique, so it orders them.
    if [ "$run" = "1" ]; then
        sum_a=$(ch "SELECT * FROM $DB_A.observations ORDER BY event_id, ingest_ver FORMAT TSV" | md5sum)
        sum_b=$(ch "SELECT * FROM $DB_B.observations ORDER BY event_id, ingest_ver FORMAT TSV" | md5sum)
        if [ "$sum_a" = "$sum_b" ]; then
            CONTENT="identical (md5 of the sorted TSV dumps)"
        else
            invalid="$DB_A and $DB_B hold different rows"
            break
        fi
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# A load without a positive time was not measured, and a verdict on it would
# mean nothing.
for r in "$r_load" "$r_client"; do
    if [ -z "$invalid" ] && ! awk -v r="$r" 'BEGIN { split(r, x, " "); exit !(x[1] > 0) }'; then
        invalid="a load has no positive wall time"
    fi
done
ch "SELECT database, table, count() AS parts, sum(rows) AS rows FROM system.parts WHERE active AND database IN ('$DB_A', '$DB_B') GROUP BY database, table ORDER BY database, table" > "$WORK/parts.txt" 2>/dev/null || true

# Step 5: the report.
printf '\nlog: %s, %d bytes (%.1f MB), %d lines; best of %d run(s)\n' \
    "$LOG" "$BYTES" "$(awk -v b="$BYTES" 'BEGIN { print b / 1e6 }')" "$LINES" "$RUNS"
printf 'server: ClickHouse %s at %s (native port %s), folder %s\n' "$SERVER_VERSION" "$URL" "$CH_TCP_PORT" "$CH_DIR"
printf 'load average (1, 5, 15 min): %s before, %s after; %s CPUs\n' "$LOAD_BEFORE" "$LOAD_AFTER" "$(nproc)"
if [ -n "$invalid" ]; then
    echo
    echo "INVALID: $invalid; no verdict."
    exit 2
fi
printf 'rows: %d observations; rows.tsv: %d bytes (%.1f MB, %.0f B/row, %s order); content of %s and %s: %s\n\n' \
    "$OBSERVATIONS" "$TSV_BYTES" "$(awk -v b="$TSV_BYTES" 'BEGIN { print b / 1e6 }')" \
    "$(awk -v b="$TSV_BYTES" -v r="$OBSERVATIONS" 'BEGIN { print b / r }')" "$TSV_ORDER" "$DB_A" "$DB_B" "$CONTENT"

# row NAME RESULT INPUT_BYTES INPUT_NAME prints one line of the table.
printf '%-34s %9s %10s %11s %8s %-9s %8s %8s %8s %8s\n' \
    "" rows seconds rows/s MB/s "of" "cli CPU" "cli MB" "srv CPU" "srv MB"
row() {
    echo "$2" | awk -v n="$1" -v rows="$OBSERVATIONS" -v b="$3" -v what="$4" \
        '{ printf "%-34s %9d %10.3f %11.0f %8.1f %-9s %8.2f %8d %8.2f %8d\n", n, rows, $1, rows / $1, b / 1e6 / $1, what, $2, $3, $4, $5 }'
}
if [ -n "$r_parse" ]; then
    row "tlsledger parse (no ClickHouse)" "$r_parse" "$BYTES" "log"
fi
row "tlsledger parse --clickhouse" "$r_load" "$BYTES" "log"
row "clickhouse-client INSERT ... TSV" "$r_client" "$TSV_BYTES" "rows.tsv"
echo "(cli CPU / cli MB: user+system seconds and peak RSS of the client process; srv CPU / srv MB:"
echo " the server's CPU seconds and peak RSS during that load; wall seconds are the best run's)"
echo
if [ -s "$WORK/parts.txt" ]; then
    echo "active parts at the end (database, table, parts, rows):"
    sed 's/^/  /' "$WORK/parts.txt"
    echo
fi
echo "tlsledger --stats (last load):"
sed 's/^/  /' "$WORK/load.stderr"
echo
t_load=$(echo "$r_load" | cut -d' ' -f1)
t_client=$(echo "$r_client" | cut -d' ' -f1)
if [ -n "$r_parse" ]; then
    awk -v a="$t_load" -v p="$(echo "$r_parse" | cut -d' ' -f1)" \
        'BEGIN { printf "%-44s %8.3f s (%.0f%% of the load time)\n", "ClickHouse load adds to the parse", a - p, 100 * (a - p) / a }'
fi
awk -v c="$t_client" -v t="$t_load" -v target="$TARGET_RATIO" \
    'BEGIN { r = c / t; printf "%-44s %8.3f (target >= %s) %s\n", "clickhouse-client time / tlsledger time", r, target, (r >= target ? "PASS" : "FAIL"); exit (r >= target ? 0 : 1) }' ||
    status=1
exit "$status"
