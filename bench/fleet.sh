#!/usr/bin/env bash
# Fleet sizing benchmark (issue 10, point 5): many MTAs writing to a ClickHouse cluster, scaled
# down to this machine and extrapolated.
#
# A provider's fleet (default 50 MTAs x 200,000 connections a day x 30 days = 300 M
# observations) does not fit a 2-core test machine, so this script measures the three figures
# that sizing needs on a real two-shard cluster and extrapolates them linearly:
#   * insert rate: INGESTERS `tlsledger parse --clickhouse ... --cluster-insert MODE` processes
#     load one synthetic MTA log each (bench/gen-postfix-log.py, a different seed per MTA), at
#     the same time, each through a different server of the cluster; timed from start to the
#     last exit, for MODE `distributed` (the Distributed table, insert_distributed_sync=1),
#     `distributed-async` (the server forwards later; "all stored at" is when a count through the
#     Distributed table first shows every row) and `local` (each ingester into its server's
#     shard), each into a fresh database;
#   * storage per million observations: bytes_on_disk of the active parts of every table
#     (observations_local and the two rollups) on both servers after OPTIMIZE ... FINAL, per row
#     stored;
#   * rebuild time: `tlsledger reputation rebuild --from-clickhouse` (full), then one more MTA
#     log of INCREMENT_MB loaded and `--incremental --overlap-secs 0` timed.
# The cluster is tests/harness/cluster.sh's: one private ZooKeeper and two clickhouse-server
# 18.16 instances on 127.0.0.1 as two shards of cluster `fleet` (data wiped first, everything
# stopped when the script ends, whatever happens).
#
# Usage: bench/fleet.sh
# Environment:
#   SIZE_MB=60          size of each MTA's log in 10^6 bytes
#   INGESTERS=2         MTA logs loaded at once (one ingester each, alternating servers)
#   INCREMENT_MB=5      size of the extra log for the incremental rebuild
#   FLEET_MTAS=50 FLEET_CONNECTIONS_PER_DAY=200000 FLEET_DAYS=30   the fleet to extrapolate to
#   TLSLEDGER=target/release/tlsledger   the binary (CARGO_TARGET_DIR is honoured)
#   BUILD=1             set to 0 to skip `cargo build --release` when the binary is missing
#   PORT_BASE=31300     ports PORT_BASE+1..+3 (server 1), +4..+6 (server 2), +7 (ZooKeeper)
# The exit status is 0 when every load stored exactly the observations the ingesters reported,
# 2 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB=${SIZE_MB:-60}
INGESTERS=${INGESTERS:-2}
INCREMENT_MB=${INCREMENT_MB:-5}
FLEET_MTAS=${FLEET_MTAS:-50}
FLEET_CONNECTIONS_PER_DAY=${FLEET_CONNECTIONS_PER_DAY:-200000}
FLEET_DAYS=${FLEET_DAYS:-30}
BUILD=${BUILD:-1}
PORT_BASE=${PORT_BASE:-31300}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
TLSLEDGER=${TLSLEDGER:-$TARGET_DIR/release/tlsledger}
OUT_DIR=bench/out
WORK=$OUT_DIR/fleet
H=tests/harness

die() {
    echo "fleet.sh: $*" >&2
    exit 2
}

now_ms() {
    date +%s%3N
}

if [[ ! -x "$TLSLEDGER" ]]; then
    [[ "$BUILD" == 1 ]] || die "$TLSLEDGER is missing (BUILD=0)"
    cargo build --release --locked
fi
bash $H/cluster.sh install >/dev/null

mkdir -p "$OUT_DIR"
logs=()
for i in $(seq 1 "$INGESTERS") inc; do
    size=$SIZE_MB
    seed=$((100 + ${i/inc/99}))
    [[ "$i" == inc ]] && size=$INCREMENT_MB
    log="$OUT_DIR/fleet-mta$i-${size}mb.log"
    [[ -s "$log" ]] || python3 bench/gen-postfix-log.py --size-mb "$size" --seed "$seed" --out "$log"
    logs+=("$log")
done
increment_log=${logs[-1]}
unset 'logs[-1]'

export ZK_PORT=$((PORT_BASE + 7))
ch1=$WORK/ch1
ch2=$WORK/ch2
ports1=(CH_HTTP_PORT=$((PORT_BASE + 1)) CH_TCP_PORT=$((PORT_BASE + 2)) CH_INTERSERVER_PORT=$((PORT_BASE + 3)))
ports2=(CH_HTTP_PORT=$((PORT_BASE + 4)) CH_TCP_PORT=$((PORT_BASE + 5)) CH_INTERSERVER_PORT=$((PORT_BASE + 6)))
urls=("http://127.0.0.1:$((PORT_BASE + 1))" "http://127.0.0.1:$((PORT_BASE + 4))")

cleanup() {
    env "${ports1[@]}" bash $H/clickhouse.sh stop "$ch1" >/dev/null 2>&1 || true
    env "${ports2[@]}" bash $H/clickhouse.sh stop "$ch2" >/dev/null 2>&1 || true
    bash $H/cluster.sh zk-stop "$WORK/zk" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
rm -rf "$WORK"
mkdir -p "$WORK"

shards="$((PORT_BASE + 2)) $((PORT_BASE + 5))"
bash $H/cluster.sh zk-start "$WORK/zk"
CLUSTER=fleet SHARDS="$shards" SHARD=01 REPLICA=ch1 bash $H/cluster.sh configure "$ch1"
CLUSTER=fleet SHARDS="$shards" SHARD=02 REPLICA=ch2 bash $H/cluster.sh configure "$ch2"
env "${ports1[@]}" bash $H/clickhouse.sh start "$ch1" >/dev/null
env "${ports2[@]}" bash $H/clickhouse.sh start "$ch2" >/dev/null

# Runs $2 on server $1 (0 or 1) and prints the TSV answer.
query() {
    curl -sS --fail-with-body --data-binary "$2" "${urls[$1]}/"
}

wait_merges() {
    local deadline=$(($(now_ms) + 300000))
    while [[ $(query 0 "SELECT count() FROM system.merges") != 0 || $(query 1 "SELECT count() FROM system.merges") != 0 ]]; do
        [[ $(now_ms) -lt $deadline ]] || break
        sleep 0.2
    done
}

declare -A seconds rows visible
status=0
for mode in distributed distributed-async local; do
    db="fleet_${mode//-/_}"
    "$TLSLEDGER" schema apply --clickhouse "${urls[0]}" --database "$db" --cluster fleet 2>/dev/null
    pids=()
    t0=$(now_ms)
    for i in "${!logs[@]}"; do
        "$TLSLEDGER" parse --output none --stats --log-zone utc --clickhouse "${urls[$((i % 2))]}" --database "$db" \
            --cluster-insert "$mode" --spool-dir "$WORK/spool-$mode-$i" "${logs[$i]}" 2>"$WORK/parse-$mode-$i.err" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || die "an ingester failed (see $WORK/parse-$mode-*.err)"
    done
    seconds[$mode]=$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN { printf "%.2f", ms / 1000 }')
    emitted=0
    for i in "${!logs[@]}"; do
        n=$(awk '$1 == "observations" { print $2 }' "$WORK/parse-$mode-$i.err")
        emitted=$((emitted + n))
    done
    # distributed-async: the server forwards to the shards after it answered; wait for it.
    deadline=$(($(now_ms) + 300000))
    while true; do
        stored=$(query 0 "SELECT count() FROM (SELECT event_id, peer_ip, direction, ts, ingest_ver FROM $db.observations FINAL)")
        [[ "$stored" -lt "$emitted" && $(now_ms) -lt $deadline ]] || break
        sleep 0.1
    done
    visible[$mode]=$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN { printf "%.2f", ms / 1000 }')
    rows[$mode]=$stored
    if [[ "$stored" != "$emitted" ]]; then
        echo "fleet.sh: $mode: $emitted observations emitted, $stored stored" >&2
        status=2
    fi
done

db=fleet_distributed
# Storage is measured fully merged (rollup rows collapse per endpoint and day on merge):
# OPTIMIZE ... FINAL on every local table of both shards (never DEDUPLICATE, which crashes 18.16).
for s in 0 1; do
    for table in observations_local endpoint_daily_local endpoint_history_local; do
        query $s "OPTIMIZE TABLE $db.$table FINAL" >/dev/null
    done
done
wait_merges
storage=$(for s in 0 1; do
    query $s "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = '$db' AND table != 'schema_migrations' GROUP BY table FORMAT TSV"
done | awk '{ r[$1] += $2; b[$1] += $3 } END { for (t in b) printf "%s\t%d\t%d\n", t, r[t], b[t] }' | sort)
obs_rows=${rows[distributed]}
total_bytes=$(awk '{ s += $3 } END { print s }' <<<"$storage")
split=$(for s in 0 1; do query $s "SELECT count() FROM $db.observations_local"; done | paste -sd/)
endpoints=$(query 0 "SELECT uniqExact(peer_ip, direction) FROM $db.observations")

state=$WORK/state
t0=$(now_ms)
"$TLSLEDGER" reputation rebuild --from-clickhouse "${urls[0]}" --database "$db" --state "$state" 2>"$WORK/rebuild.err"
rebuild_s=$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN { printf "%.2f", ms / 1000 }')
"$TLSLEDGER" parse --output none --log-zone utc --clickhouse "${urls[1]}" --database "$db" --cluster-insert distributed \
    --spool-dir "$WORK/spool-increment" "$increment_log" 2>/dev/null
t0=$(now_ms)
"$TLSLEDGER" reputation rebuild --from-clickhouse "${urls[0]}" --database "$db" --state "$state" \
    --incremental --overlap-secs 0 2>"$WORK/incremental.err"
incremental_s=$(awk -v ms=$(($(now_ms) - t0)) 'BEGIN { printf "%.2f", ms / 1000 }')

fleet_rows=$((FLEET_MTAS * FLEET_CONNECTIONS_PER_DAY * FLEET_DAYS))
echo
echo "== fleet.sh: $INGESTERS ingesters x ${SIZE_MB} MB Postfix logs, 2 shards (ClickHouse $(query 0 'SELECT version()')), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-40s %10s %10s %10s %14s\n' "load" "rows" "seconds" "rows/s" "all stored at"
for mode in distributed distributed-async local; do
    printf '%-40s %10s %10s %10s %12s s\n' "parse --cluster-insert $mode" "${rows[$mode]}" "${seconds[$mode]}" \
        "$(awk -v r="${rows[$mode]}" -v s="${seconds[$mode]}" 'BEGIN { printf "%.0f", r / s }')" "${visible[$mode]}"
done
echo "rows per shard (distributed): $split; endpoints: $endpoints"
echo
printf '%-24s %12s %14s %18s\n' "table" "rows" "bytes on disk" "MB per M obs."
while IFS=$'\t' read -r table n bytes; do
    printf '%-24s %12s %14s %18s\n' "$table" "$n" "$bytes" "$(awk -v b="$bytes" -v r="$obs_rows" 'BEGIN { printf "%.1f", b / r }')"
done <<<"$storage"
mb_per_million=$(awk -v b="$total_bytes" -v r="$obs_rows" 'BEGIN { printf "%.1f", b / r }')
printf '%-24s %12s %14s %18s\n' "all" "" "$total_bytes" "$mb_per_million"
echo
echo "reputation rebuild (full, $endpoints endpoints): ${rebuild_s} s; $(tail -n 1 "$WORK/rebuild.err")"
echo "reputation rebuild --incremental after ${INCREMENT_MB} MB more: ${incremental_s} s; $(tail -n 1 "$WORK/incremental.err")"
echo
echo "== extrapolated to $FLEET_MTAS MTAs x $FLEET_CONNECTIONS_PER_DAY connections/day x $FLEET_DAYS days = $fleet_rows observations"
awk -v rows="$fleet_rows" -v days="$FLEET_DAYS" -v mb="$mb_per_million" -v rate="$(awk -v r="${rows[distributed]}" -v s="${seconds[distributed]}" 'BEGIN { print r / s }')" \
    -v obs="$obs_rows" -v rebuild="$rebuild_s" -v endpoints="$endpoints" -v days_rows="$(awk '$1 == "endpoint_history_local" { print $2 }' <<<"$storage")" 'BEGIN {
    per_day = rows / days
    printf "storage: %.1f GB on disk in all (%.1f MB per million observations), before replication\n", rows / 1e6 * mb / 1024, mb
    printf "insert: %.0f observations/s on average needed; measured %.0f/s through the Distributed table (%.0fx headroom)\n", per_day / 86400, rate, rate / (per_day / 86400)
    printf "full rebuild: %.0f ms per 1,000 endpoints (%d endpoints, %d endpoint-days here); it reads the rollup (one row per endpoint and day) and 16 latest rows per endpoint, so it grows with endpoints x active days, not with observations; at most %.0f s if it grew with the observations\n", rebuild * 1e6 / endpoints, endpoints, days_rows, rebuild * rows / obs
}'
exit $status
