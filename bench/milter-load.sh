#!/usr/bin/env bash
# milter-load.sh: tlsledger's milter against a no-op milter on the same library (indymilter),
# under the same load, in one go (issue 7, point 6).
#
# Usage: bench/milter-load.sh
# Environment:
#   SESSIONS=20000     SMTP sessions per round and milter
#   CONCURRENCY=50     sessions at a time (one milter connection each, as Postfix's smtpd): the
#                      throughput phase
#   LATENCY_SESSIONS=5000  sessions one at a time: the latency phase (no queueing in either milter)
#   ROUNDS=3           rounds; the milters take turns within a round, the median round is reported
#   IDLE=1000          idle connections for the memory figure
#   PORT_BASE=13980    the no-op milter listens on 127.0.0.1:PORT_BASE, tlsledger on PORT_BASE+1
#   STATE=1            1: tlsledger keeps a reputation state (--state) and classifies every sender
#                      from it for the header, as in production; 0: no state
#   BUILD=1            0: use the binaries already built (TLSLEDGER and DRIVER override their paths)
#
# The load client is examples/milter_load.rs (`load`): Postfix's side of the protocol with its
# macros (connect, HELO after STARTTLS with the TLS macros, MAIL with the queue id, RCPT, DATA,
# five headers, a body chunk, end of message, QUIT), skipping the stages each milter skipped
# and not waiting where it negotiated "no reply". Session time = connect to the end-of-message
# reply; "added" = tlsledger's minus the no-op's. Memory per idle connection = the growth of the
# milter's VmRSS with IDLE negotiated connections inside a session, divided by IDLE.
# Everything runs on 127.0.0.1; both milters are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS=${SESSIONS:-20000}
CONCURRENCY=${CONCURRENCY:-50}
ROUNDS=${ROUNDS:-3}
LATENCY_SESSIONS=${LATENCY_SESSIONS:-5000}
IDLE=${IDLE:-1000}
PORT_BASE=${PORT_BASE:-13980}
STATE=${STATE:-1}
NOOP_ADDR=127.0.0.1:$PORT_BASE
OURS_ADDR=127.0.0.1:$((PORT_BASE + 1))

target=${CARGO_TARGET_DIR:-target}/release
if [[ "${BUILD:-1}" == 1 ]]; then
    echo "== building (release)"
    cargo build --release --bin tlsledger --example milter_load >/dev/null
fi
tlsledger=${TLSLEDGER:-$target/tlsledger}
driver=${DRIVER:-$target/examples/milter_load}

work=$(mktemp -d /tmp/milter-load.XXXXXX)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$driver" noop "$NOOP_ADDR" $((IDLE + 100)) >"$work/noop.log" 2>&1 &
noop_pid=$!
pids+=("$noop_pid")
state_args=()
if [[ "$STATE" == 1 ]]; then
    state_args=(--state "$work/state")
fi
"$tlsledger" milter --listen "inet:$OURS_ADDR" --max-connections $((IDLE + 100)) "${state_args[@]}" \
    >/dev/null 2>"$work/ours.log" &
ours_pid=$!
pids+=("$ours_pid")

# Both must listen before the load starts.
for log in "$work/noop.log" "$work/ours.log"; do
    for _ in $(seq 100); do
        grep -q "listening on" "$log" && break
        sleep 0.05
    done
    grep -q "listening on" "$log" || { echo "a milter did not start: $(cat "$log")" >&2; exit 1; }
done

value() { sed -n "s/^$1=//p" "$2"; }

echo "== load: $SESSIONS sessions per round, $CONCURRENCY concurrent, then $LATENCY_SESSIONS one at a time; $ROUNDS rounds (state: $STATE)"
for round in $(seq "$ROUNDS"); do
    for phase in load latency; do
        for who in noop ours; do
            addr=$NOOP_ADDR
            [[ $who == ours ]] && addr=$OURS_ADDR
            out=$work/$who-$phase-$round.txt
            if [[ $phase == load ]]; then
                "$driver" load "$addr" "$SESSIONS" "$CONCURRENCY" >"$out"
            else
                "$driver" load "$addr" "$LATENCY_SESSIONS" 1 >"$out"
            fi
            printf '  round %s %-7s %-5s %6s sessions/s  p50 %6s us  p99 %6s us\n' "$round" "$phase" "$who" \
                "$(value sessions_per_sec "$out")" "$(value p50_us "$out")" "$(value p99_us "$out")"
        done
    done
done

# The median round by tlsledger's throughput ratio.
best=$(for round in $(seq "$ROUNDS"); do
    n=$(value sessions_per_sec "$work/noop-load-$round.txt")
    o=$(value sessions_per_sec "$work/ours-load-$round.txt")
    echo "$(awk -v o="$o" -v n="$n" 'BEGIN { printf "%.4f", o / n }') $round"
done | sort -n | awk -v r="$ROUNDS" 'NR == int((r + 1) / 2) { print $2 }')

echo "== idle connections: $IDLE"
"$driver" idle "$NOOP_ADDR" "$IDLE" "$noop_pid" >"$work/noop-idle.txt"
"$driver" idle "$OURS_ADDR" "$IDLE" "$ours_pid" >"$work/ours-idle.txt"

n=$work/noop-load-$best.txt
o=$work/ours-load-$best.txt
nl=$work/noop-latency-$best.txt
ol=$work/ours-latency-$best.txt
echo "== result (median round $best)"
awk -v nr="$(value sessions_per_sec "$n")" -v or="$(value sessions_per_sec "$o")" \
    -v n50="$(value p50_us "$nl")" -v o50="$(value p50_us "$ol")" \
    -v n99="$(value p99_us "$nl")" -v o99="$(value p99_us "$ol")" \
    -v c50="$(value p50_us "$n")" -v d50="$(value p50_us "$o")" \
    -v c99="$(value p99_us "$n")" -v d99="$(value p99_us "$o")" \
    -v nm="$(value bytes_per_idle_connection "$work/noop-idle.txt")" \
    -v om="$(value bytes_per_idle_connection "$work/ours-idle.txt")" 'BEGIN {
    printf "  %-28s %12s %12s\n", "", "no-op", "tlsledger"
    printf "  %-28s %12d %12d   ratio %.2f (target >= 0.80)\n", "sessions/s (concurrent)", nr, or, or / nr
    printf "  %-28s %12d %12d   added %d us\n", "p50 one at a time (us)", n50, o50, o50 - n50
    printf "  %-28s %12d %12d   added %d us (target <= 1000)\n", "p99 one at a time (us)", n99, o99, o99 - n99
    printf "  %-28s %12d %12d   added %d us\n", "p50 concurrent (us)", c50, d50, d50 - c50
    printf "  %-28s %12d %12d   added %d us\n", "p99 concurrent (us)", c99, d99, d99 - c99
    printf "  %-28s %12d %12d\n", "bytes per idle connection", nm, om
}'
# tlsledger's own account: sessions, observations written or dropped, classification timeouts.
kill "$ours_pid"
wait "$ours_pid" || true
grep "milter stopped" "$work/ours.log" | sed 's/^/  /'
