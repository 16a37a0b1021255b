#!/usr/bin/env bash
# Reputation store benchmark (issue 4, point 8): a million endpoints in an IndraStore.
#
# This script builds a store of synthetic endpoints with realistic histories
# (examples/reputation_bench.rs: deterministic generator, 5-30 active days, a
# full ring of 16 recent observations with 16-hex event ids, 1-2 host names,
# 0-3 domains, the name graph record() would make), saves it, and then measures
# in a fresh process, as after a restart:
#   * load time: IndraStore::open of the saved folder (target <= 5 s);
#   * classify-all time: the pure classify() with default thresholds over every
#     endpoint, walked with for_each_endpoint (target <= 5 s);
#   * peak RSS of that process, from /usr/bin/time -f %M (target <= 1 GB, 10^9 bytes).
# It also prints the CPU seconds each load took (all threads) and the load average,
# because on a busy machine other processes stretch the wall-clock times.
#
# Steps:
#   1. Build the driver with `cargo build --release --example reputation_bench`.
#   2. Build and save the store in bench/out/reputation-ENDPOINTS-SEED once; a
#      later run reuses it when the parameters still match.
#   3. Run `reputation_bench measure` RUNS times under /usr/bin/time; the fastest
#      load and classify times and the highest peak RSS count.
#   4. Print the figures and PASS/FAIL against the targets.
#
# Usage: bench/reputation.sh
# Environment:
#   ENDPOINTS=1000000  endpoints to generate
#   SEED=1             generator seed
#   RUNS=3             measuring runs
#   BUILD=1            set to 0 to skip the cargo build (the binary must exist)
#   DRIVER=$CARGO_TARGET_DIR/release/examples/reputation_bench (default target/…)
# The exit status is 0 when all three targets pass, 1 when one fails, and 2 when
# nothing could be measured.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENDPOINTS=${ENDPOINTS:-1000000}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
BUILD=${BUILD:-1}
DRIVER=${DRIVER:-${CARGO_TARGET_DIR:-target}/release/examples/reputation_bench}
STORE=bench/out/reputation-$ENDPOINTS-$SEED
PARAMS=$STORE.params

TARGET_LOAD_SECS=5
TARGET_CLASSIFY_SECS=5
TARGET_RSS_BYTES=1000000000

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x /usr/bin/time ]; then
    log "Installing GNU time, because /usr/bin/time is missing."
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2
fi

# Step 1.
if [ "$BUILD" = "1" ]; then
    log "Building the driver (cargo build --release --example reputation_bench)."
    cargo build --release --example reputation_bench >&2
fi
if [ ! -x "$DRIVER" ]; then
    log "$DRIVER does not exist (build it with: cargo build --release --example reputation_bench)."
    exit 2
fi

# Step 2.  The parameters file also holds the build figures, so a reused store still reports them.
want_params="endpoints=$ENDPOINTS seed=$SEED"
if [ -f "$STORE/graph.bin" ] && [ -f "$PARAMS" ] && [ "$(head -n 1 "$PARAMS")" = "$want_params" ]; then
    log "Reusing $STORE ($want_params)."
else
    log "Building $STORE ($want_params)."
    rm -rf "$STORE" "$PARAMS"
    mkdir -p bench/out
    build_out=$(/usr/bin/time -f "build_peak_rss_kb=%M" "$DRIVER" build "$STORE" "$ENDPOINTS" "$SEED" 2>&1)
    { echo "$want_params"; echo "$build_out"; } > "$PARAMS"
fi
build_figures=$(tail -n +2 "$PARAMS")

# Step 3.
best_load="" best_classify="" peak_kb=0 classes="" load_cpu="" load_avg=""
for run in $(seq "$RUNS"); do
    log "Measuring, run $run of $RUNS."
    if ! out=$(/usr/bin/time -f "peak_rss_kb=%M" "$DRIVER" measure "$STORE" 2>&1); then
        log "The measuring run failed:"
        echo "$out" >&2
        exit 2
    fi
    field() { echo "$out" | sed -n "s/^$1=//p"; }
    load=$(field load_secs)
    classify=$(field classify_secs)
    kb=$(field peak_rss_kb)
    classes=$(field classes)
    load_cpu="$load_cpu $(field load_cpu_secs)"
    load_avg="$load_avg $(cut -d ' ' -f 1 /proc/loadavg)"
    best_load=$(awk -v b="$best_load" -v t="$load" 'BEGIN { if (b == "" || t < b) b = t; print b }')
    best_classify=$(awk -v b="$best_classify" -v t="$classify" 'BEGIN { if (b == "" || t < b) b = t; print b }')
    if [ "$kb" -gt "$peak_kb" ]; then
        peak_kb=$kb
    fi
done

# Step 4.
printf '\nstore: %s (%s)\n' "$STORE" "$want_params"
echo "$build_figures" | sed 's/^/  /'
printf '  classes at NOW: %s\n' "$classes"
printf '  load CPU seconds per run (all threads):%s; load average at each run end:%s\n\n' "$load_cpu" "$load_avg"
status=0
verdict() {
    awk -v name="$1" -v value="$2" -v target="$3" -v unit="$4" \
        'BEGIN { ok = value <= target; printf "%-28s %12.3f %s (target <= %s) %s\n", name, value, unit, target, (ok ? "PASS" : "FAIL"); exit (ok ? 0 : 1) }'
}
verdict "load (best of $RUNS)" "$best_load" "$TARGET_LOAD_SECS" s || status=1
verdict "classify all (best of $RUNS)" "$best_classify" "$TARGET_CLASSIFY_SECS" s || status=1
verdict "peak RSS (highest of $RUNS)" "$(awk -v kb="$peak_kb" 'BEGIN { print kb * 1024 / 1e9 }')" \
    "$(awk -v b="$TARGET_RSS_BYTES" 'BEGIN { print b / 1e9 }')" GB || status=1
exit "$status"
