#!/usr/bin/env bash
# Syslog receive benchmark: `tlsledger ingest --syslog-tcp` against rsyslog (imtcp -> omfile).
#
# This script sends the same large RFC 6587 octet-counted stream over loopback TCP
# to two receivers, one after the other, and compares messages per second end to
# end (issue 6, point 6):
#   * a private rsyslogd (Debian's rsyslog, own configuration, pid file and work
#     folder, no imuxsock/imklog) with one imtcp input whose ruleset writes each
#     raw message to a file (omfile, template "%rawmsg%\n"): the least work a
#     syslog daemon can do with a message;
#   * `tlsledger ingest --syslog-tcp ADDR --no-state --stdout` with stdout to
#     /dev/null: receive, parse, correlate, and print the observations as JSON.
# Target: tlsledger is at least as fast as rsyslog writing the raw messages to a
# file, i.e. tlsledger msg/s / rsyslog msg/s >= 1.0.
#
# Steps:
#   1. Generate the log once with bench/gen-postfix-log.py (reused while size,
#      seed and framing match) and turn it into the stream once: each line gets
#      the PRI <22> (mail.info) and an octet count, "LEN <22>TIMESTAMP HOST TAG: MSG".
#   2. Build target/release/tlsledger if it is missing.
#   3. For each of RUNS runs: start the receiver, wait until its port accepts,
#      start the clock, send the stream with bash's /dev/tcp (`cat STREAM >
#      /dev/tcp/127.0.0.1/PORT`), and stop the clock when the last message is
#      processed:
#      - rsyslog: the output file has all the bytes (every message and its newline);
#      - tlsledger: /metrics `tlsledger_lines_total` equals the number of messages.
#      Completion is polled every POLL_SECS (it bounds the timing error); the
#      receiver is stopped after each run.
#   4. Print messages, seconds, msg/s, MB/s for each receiver (fastest run), the
#      ratio and PASS/FAIL.
#
# Usage: bench/syslog.sh
# Environment:
#   SIZE_MB=100       size of the generated log in 10^6 bytes
#   SEED=1            generator seed
#   FRAMING=3339      3339 (rsyslog RFC 3339 timestamps) or 3164 ("Nov 30 ...")
#   RUNS=3            runs per receiver; the fastest one counts
#   POLL_SECS=0.02    how often completion is checked
#   BUILD=1           set to 0 to skip `cargo build --release` when the binary is missing
#   TLSLEDGER=target/release/tlsledger   the binary to measure
#   RSYSLOG_PORT=31514 TLSLEDGER_PORT=31515 METRICS_PORT=31516   loopback ports
# The exit status is 0 when the target passes, 1 when it fails, and 2 when a
# receiver could not be measured (missing, failing, or losing messages).

set -euo pipefail

# All paths below are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB=${SIZE_MB:-100}
SEED=${SEED:-1}
FRAMING=${FRAMING:-3339}
RUNS=${RUNS:-3}
POLL_SECS=${POLL_SECS:-0.02}
BUILD=${BUILD:-1}
TLSLEDGER=${TLSLEDGER:-target/release/tlsledger}
RSYSLOG_PORT=${RSYSLOG_PORT:-31514}
TLSLEDGER_PORT=${TLSLEDGER_PORT:-31515}
METRICS_PORT=${METRICS_PORT:-31516}
OUT_DIR=bench/out
TARGET_RATIO=1.0

suffix=""
[ "$SIZE_MB" = "520" ] || suffix="$suffix-${SIZE_MB}mb"
[ "$SEED" = "1" ] || suffix="$suffix-seed$SEED"
[ "$FRAMING" = "3339" ] || suffix="$suffix-$FRAMING"
LOG=$OUT_DIR/postfix-bench$suffix.log
PARAMS=$LOG.params
STREAM=$LOG.octet-counted

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
RECEIVER_PID=""

log() { printf '==> %s\n' "$*" >&2; }

# The EXIT trap stops a receiver still running and removes the temporary folder;
# INT and TERM become an exit, so that the EXIT trap runs too.
# shellcheck disable=SC2317  # stop_receiver and cleanup are called by traps.
stop_receiver() {
    if [ -n "$RECEIVER_PID" ]; then
        kill -TERM "$RECEIVER_PID" 2>/dev/null || true
        wait "$RECEIVER_PID" 2>/dev/null || true
        RECEIVER_PID=""
    fi
}
# shellcheck disable=SC2317
cleanup() {
    stop_receiver
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Step 1: the log and its octet-counted form.
want_params="size_mb=$SIZE_MB seed=$SEED framing=$FRAMING"
if [ -f "$LOG" ] && [ -f "$PARAMS" ] && [ "$(cat "$PARAMS")" = "$want_params" ]; then
    log "Reusing $LOG ($want_params)."
else
    log "Generating $LOG ($want_params)."
    rm -f "$PARAMS" "$STREAM" "$STREAM.count"
    python3 bench/gen-postfix-log.py --size-mb "$SIZE_MB" --seed "$SEED" --framing "$FRAMING" --out "$LOG"
    echo "$want_params" >"$PARAMS"
fi
if [ ! -f "$STREAM" ] || [ ! -f "$STREAM.count" ] || [ "$STREAM" -ot "$LOG" ]; then
    log "Writing the octet-counted stream $STREAM."
    python3 - "$LOG" "$STREAM" <<'EOF'
import sys
n_messages = 0
n_bytes = 0
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    for line in src:
        message = b"<22>" + line.rstrip(b"\n")
        dst.write(b"%d %s" % (len(message), message))
        n_messages += 1
        n_bytes += len(message) + 1
with open(sys.argv[2] + ".count", "w") as out:
    # Messages, then the bytes of rsyslog's output file ("%rawmsg%\n" per message).
    out.write(f"{n_messages} {n_bytes}\n")
EOF
fi
read -r MESSAGES RAW_BYTES <"$STREAM.count"
STREAM_BYTES=$(stat -c %s "$STREAM")
log "$MESSAGES messages, $STREAM_BYTES bytes on the wire."

# Step 2: the binaries.
if [ ! -x "$TLSLEDGER" ] && [ "$BUILD" = "1" ] && command -v cargo >/dev/null 2>&1; then
    log "Building tlsledger with cargo build --release, because $TLSLEDGER is missing."
    cargo build --release >&2 || log "The release build failed."
fi
if [ ! -x "$TLSLEDGER" ]; then
    log "$TLSLEDGER does not exist (build it with: cargo build --release); nothing to measure."
    exit 2
fi
RSYSLOGD=$(PATH="$PATH:/usr/sbin" command -v rsyslogd || true)
if [ -z "$RSYSLOGD" ]; then
    log "rsyslogd is missing (install it with: tests/harness/install-deps.sh ingest); nothing to compare."
    exit 2
fi
if ! command -v curl >/dev/null 2>&1; then
    log "curl is missing (it reads tlsledger's /metrics); nothing is measured."
    exit 2
fi

now() { date +%s.%N; }

# wait_port PORT waits (at most 30 s) until 127.0.0.1:PORT accepts a connection.
wait_port() {
    local tries=0
    until (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -ge 1500 ]; then
            log "Nothing listens on 127.0.0.1:$1."
            return 1
        fi
        sleep 0.02
    done
}

# wait_until COMMAND... polls until COMMAND succeeds, failing after 600 s or when
# the receiver died.
wait_until() {
    local deadline
    deadline=$(($(date +%s) + 600))
    until "$@"; do
        if ! kill -0 "$RECEIVER_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            return 1
        fi
        sleep "$POLL_SECS"
    done
}

rsyslog_done() { [ "$(stat -c %s "$WORK/rsyslog.out" 2>/dev/null || echo 0)" -ge "$RAW_BYTES" ]; }
tlsledger_lines() {
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "tlsledger_lines_total" { print $2 }'
}
tlsledger_done() { [ "$(tlsledger_lines)" = "$MESSAGES" ]; }

# run_rsyslog prints the seconds of one run.
run_rsyslog() {
    rm -rf "$WORK/rsyslog.out" "$WORK/rsyslog-work"
    mkdir -p "$WORK/rsyslog-work"
    cat >"$WORK/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rsyslog-work" maxMessageSize="64k")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="bench") { action(type="omfile" file="$WORK/rsyslog.out" template="raw") }
input(type="imtcp" port="$RSYSLOG_PORT" address="127.0.0.1" ruleset="bench")
EOF
    "$RSYSLOGD" -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslogd.pid" 2>"$WORK/rsyslogd.stderr" &
    RECEIVER_PID=$!
    wait_port "$RSYSLOG_PORT"
    local start end
    start=$(now)
    cat "$STREAM" >"/dev/tcp/127.0.0.1/$RSYSLOG_PORT"
    if ! wait_until rsyslog_done; then
        log "rsyslog wrote $(stat -c %s "$WORK/rsyslog.out" 2>/dev/null || echo 0) of $RAW_BYTES bytes."
        cat "$WORK/rsyslogd.stderr" >&2
        return 2
    fi
    end=$(now)
    stop_receiver
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# run_tlsledger prints the seconds of one run.
run_tlsledger() {
    "$TLSLEDGER" ingest --syslog-tcp "127.0.0.1:$TLSLEDGER_PORT" --no-state --stdout \
        --metrics-listen "127.0.0.1:$METRICS_PORT" >/dev/null 2>"$WORK/tlsledger.stderr" &
    RECEIVER_PID=$!
    wait_port "$TLSLEDGER_PORT"
    wait_port "$METRICS_PORT"
    local start end
    start=$(now)
    cat "$STREAM" >"/dev/tcp/127.0.0.1/$TLSLEDGER_PORT"
    if ! wait_until tlsledger_done; then
        log "tlsledger counted $(tlsledger_lines) of $MESSAGES messages."
        cat "$WORK/tlsledger.stderr" >&2
        return 2
    fi
    end=$(now)
    stop_receiver
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

# Step 3: the runs, alternating receivers.
best_rsyslog=""
best_tlsledger=""
faster() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
for run in $(seq 1 "$RUNS"); do
    secs=$(run_rsyslog) || exit 2
    log "run $run: rsyslog $secs s"
    best_rsyslog=$(faster "$best_rsyslog" "$secs")
    secs=$(run_tlsledger) || exit 2
    log "run $run: tlsledger $secs s"
    best_tlsledger=$(faster "$best_tlsledger" "$secs")
done

# Step 4: the report.
report() {
    awk -v name="$1" -v secs="$2" -v n="$MESSAGES" -v bytes="$STREAM_BYTES" \
        'BEGIN { printf "%-32s %10d msgs %8.2f s %12.0f msg/s %8.1f MB/s\n", name, n, secs, n / secs, bytes / secs / 1e6 }'
}
echo "syslog over loopback TCP, octet-counted, $MESSAGES messages ($STREAM_BYTES bytes), best of $RUNS"
report "rsyslog $("$RSYSLOGD" -v | awk 'NR == 1 { print $2 }' | tr -d ',') imtcp -> omfile" "$best_rsyslog"
report "tlsledger ingest -> /dev/null" "$best_tlsledger"
ratio=$(awk -v r="$best_rsyslog" -v t="$best_tlsledger" 'BEGIN { printf "%.2f", r / t }')
if awk -v x="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(x >= t) }'; then
    echo "ratio tlsledger/rsyslog msg/s: $ratio (target >= $TARGET_RATIO): PASS"
else
    echo "ratio tlsledger/rsyslog msg/s: $ratio (target >= $TARGET_RATIO): FAIL"
    exit 1
fi
