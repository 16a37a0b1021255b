#!/usr/bin/env bash
# Parser throughput benchmark: tlsledger against `wc -l` and liblognorm.
#
# This script measures how fast `tlsledger parse` reads a large synthetic
# Postfix log, and compares it with two anchors (research notes PIPELINE.md, section 5):
#   * `wc -l`, the cost of only finding line ends (target: tlsledger reaches at
#     least 0.25 of its throughput);
#   * `lognormalizer` with bench/tls.rulebase, a liblognorm v2 rulebase for the
#     same TLS lines that tlsledger extracts (target: tlsledger is at least
#     10 times faster).
#
# Steps:
#   1. Install liblognorm-utils with apt-get if lognormalizer is missing.
#   2. Generate bench/out/postfix-bench.log once with bench/gen-postfix-log.py;
#      a later run reuses it when the size, seed and framing still match.
#   3. Check on a sample how many lines the rulebase matches.
#   4. Warm the page cache, then time each tool (best of RUNS runs; hyperfine is
#      used for lognormalizer when it is installed; wc -l and tlsledger run in
#      turn, so that both are timed under the same load) and print seconds,
#      lines/s, MB/s, the ratios and PASS/FAIL against the targets.
#
# Usage: bench/parse.sh
# Environment:
#   SIZE_MB=520       size of the generated log in 10^6 bytes
#   SEED=1            generator seed
#   FRAMING=3339      3339 (rsyslog RFC 3339 timestamps) or 3164 ("Nov 30 ...")
#   RUNS=3            runs per tool; the fastest one counts
#   BUILD=1           set to 0 to build nothing (by default the binary is built, see PGO)
#   PGO=1             measure the profile-guided build of bench/pgo-build.sh (built or reused
#                     when BUILD=1; a plain `cargo build --release` binary when that fails);
#                     PGO=0 measures target/release/tlsledger (built with cargo when missing)
#   HYPERFINE=1       set to 0 to time with the shell even if hyperfine exists
#   TLSLEDGER=path    the binary to measure (overrides PGO)
# The exit status is 0 when both targets pass, 1 when one fails, and 2 when
# tlsledger could not be measured (missing, failing, or printing no statistics).

set -euo pipefail

# All paths below are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZE_MB=${SIZE_MB:-520}
SEED=${SEED:-1}
FRAMING=${FRAMING:-3339}
RUNS=${RUNS:-3}
BUILD=${BUILD:-1}
PGO=${PGO:-1}
HYPERFINE=${HYPERFINE:-1}
RULEBASE=bench/tls.rulebase
OUT_DIR=bench/out
LOG=$OUT_DIR/postfix-bench.log
PARAMS=$LOG.params

# The targets, as fractions of the anchors' throughput.
TARGET_VS_WC=0.25
TARGET_VS_LOGNORM=10

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf '==> %s\n' "$*" >&2; }

# Step 1: lognormalizer comes from Debian's liblognorm-utils package.
if ! command -v lognormalizer >/dev/null 2>&1; then
    log "Installing liblognorm-utils, because lognormalizer is missing."
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q liblognorm-utils >&2
fi

# Step 2: generate the log unless a file made with the same parameters exists.
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

# Step 3: a rulebase that silently matches nothing would make lognormalizer look
# fast, so report its match rate on the first 200,000 lines.
head -n 200000 "$LOG" > "$WORK/sample.log"
sample_lines=$(wc -l < "$WORK/sample.log")
sample_unparsed=$(lognormalizer -r "$RULEBASE" -e json < "$WORK/sample.log" | grep -c '"unparsed-data"' || true)
log "Rulebase check: $((sample_lines - sample_unparsed)) of $sample_lines sample lines matched, $sample_unparsed left unparsed (qmgr, cleanup and other non-TLS lines are unparsed by design)."

# Step 4a: find or build the tlsledger binary.  Its absence is reported, not fatal,
# so that the anchors can still be measured.
if [ -z "${TLSLEDGER:-}" ] && [ "$PGO" = "1" ]; then
    if [ "$BUILD" = "1" ] && command -v cargo >/dev/null 2>&1; then
        log "Building (or reusing) the profile-guided binary with bench/pgo-build.sh."
        TLSLEDGER=$(bash bench/pgo-build.sh) || {
            log "The profile-guided build failed; measuring a plain release build instead."
            TLSLEDGER=""
        }
    else
        for candidate in target/pgo/*/release/tlsledger; do
            [ -x "$candidate" ] && TLSLEDGER=$candidate
        done
    fi
fi
TLSLEDGER=${TLSLEDGER:-target/release/tlsledger}
log "Measuring $TLSLEDGER."
have_tlsledger=1
if [ ! -x "$TLSLEDGER" ]; then
    if [ "$BUILD" = "1" ] && command -v cargo >/dev/null 2>&1; then
        log "Building tlsledger with cargo build --release, because $TLSLEDGER is missing."
        if ! cargo build --release >&2; then
            log "The release build failed; tlsledger will not be measured."
            have_tlsledger=0
        fi
    fi
    if [ ! -x "$TLSLEDGER" ]; then
        log "$TLSLEDGER does not exist (build it with: cargo build --release); tlsledger will not be measured."
        have_tlsledger=0
    fi
fi

# Step 4b: warm the page cache, so that every tool reads the log from memory.
log "Warming the page cache."
cat "$LOG" > /dev/null

# time_best NAME COMMAND prints the fastest wall-clock time of RUNS runs of
# COMMAND, in seconds.  COMMAND is a shell string; its stdout must already be
# redirected by the caller.  It returns non-zero if any run fails.
time_best() {
    local name=$1 cmd=$2
    if [ "$HYPERFINE" = "1" ] && command -v hyperfine >/dev/null 2>&1; then
        hyperfine --runs "$RUNS" --style none --export-json "$WORK/$name.json" "$cmd" >&2 || return 1
        python3 -c 'import json, sys; print("%.6f" % json.load(open(sys.argv[1]))["results"][0]["min"])' \
            "$WORK/$name.json"
        return 0
    fi
    local best="" start end
    for _ in $(seq "$RUNS"); do
        start=$(date +%s%N)
        bash -c "$cmd" || return 1
        end=$(date +%s%N)
        best=$(awk -v b="$best" -v t="$(( end - start ))" 'BEGIN { t /= 1e9; if (b == "" || t < b) b = t; printf "%.6f", b }')
    done
    echo "$best"
}

LINES=$(wc -l < "$LOG")
log "Timing lognormalizer."
t_ln=$(time_best lognormalizer "lognormalizer -r '$RULEBASE' -e json < '$LOG' > /dev/null")

# wc -l and tlsledger are timed in turn (wc, tlsledger, wc, tlsledger, ...), best of RUNS each:
# this VM's speed drifts by 20-40 % within minutes, and timing one tool after the other (half a
# minute apart, with lognormalizer in between) made their ratio swing with it.
# elapsed COMMAND prints the wall-clock seconds of one run of COMMAND (a shell string).
elapsed() {
    local start end
    start=$(date +%s%N)
    bash -c "$1" || return 1
    end=$(date +%s%N)
    awk -v t="$(( end - start ))" 'BEGIN { printf "%.6f", t / 1e9 }'
}
best_of() { awk -v b="$1" -v t="$2" 'BEGIN { if (b == "" || t < b) b = t; printf "%.6f", b }'; }
t_wc="" t_tl=""
tl_ok=$have_tlsledger
if [ "$tl_ok" = "1" ]; then log "Timing wc -l and tlsledger in turn."; else log "Timing wc -l."; fi
for _ in $(seq "$RUNS"); do
    t_wc=$(best_of "$t_wc" "$(elapsed "wc -l < '$LOG' > /dev/null")")
    if [ "$tl_ok" = "1" ]; then
        # tlsledger prints its statistics on stderr; the last run's copy is kept.
        if t=$(elapsed "'$TLSLEDGER' parse --stats --output none '$LOG' 2> '$WORK/tlsledger.stderr'"); then
            t_tl=$(best_of "$t_tl" "$t")
        else
            log "tlsledger parse failed; its stderr follows."
            cat "$WORK/tlsledger.stderr" >&2 || true
            tl_ok=0 t_tl=""
        fi
    fi
done

# Step 4c: the report.
printf '\nlog: %s, %d bytes (%.1f MB), %d lines, average %.0f B/line, best of %d runs\n' \
    "$LOG" "$BYTES" "$(awk -v b="$BYTES" 'BEGIN { print b / 1e6 }')" "$LINES" \
    "$(awk -v b="$BYTES" -v l="$LINES" 'BEGIN { print b / l }')" "$RUNS"
printf 'tlsledger binary: %s\n\n' "$TLSLEDGER"
row() {
    awk -v n="$1" -v t="$2" -v b="$BYTES" -v l="$LINES" \
        'BEGIN { printf "%-15s %9.3f s %12.0f lines/s %9.1f MB/s\n", n, t, l / t, b / 1e6 / t }'
}
row "wc -l" "$t_wc"
row "lognormalizer" "$t_ln"
status=0
if [ -n "$t_tl" ]; then
    row "tlsledger" "$t_tl"
    echo
    if [ -s "$WORK/tlsledger.stderr" ]; then
        echo "tlsledger --stats (last run):"
        sed 's/^/  /' "$WORK/tlsledger.stderr"
        echo
    fi
    # A ratio of throughputs is the inverse ratio of times.
    verdict() {
        awk -v name="$1" -v num="$2" -v den="$3" -v target="$4" \
            'BEGIN { r = num / den; printf "%-36s %8.3f (target >= %s) %s\n", name, r, target, (r >= target ? "PASS" : "FAIL"); exit (r >= target ? 0 : 1) }'
    }
    verdict "tlsledger / wc -l throughput" "$t_wc" "$t_tl" "$TARGET_VS_WC" || status=1
    verdict "tlsledger / lognormalizer throughput" "$t_ln" "$t_tl" "$TARGET_VS_LOGNORM" || status=1
    # A real parse prints its statistics, so silence means that the binary is a
    # stub or ignored the log, and a PASS above would mean nothing.
    if [ ! -s "$WORK/tlsledger.stderr" ]; then
        echo
        echo "INVALID: tlsledger printed no statistics on stderr, so it probably parsed nothing; the verdicts above do not count."
        status=2
    fi
else
    echo
    echo "tlsledger: NOT MEASURED ($TLSLEDGER is missing or failed); both targets are unchecked."
    awk -v a="$t_wc" -v b="$t_ln" 'BEGIN { printf "lognormalizer / wc -l throughput: %.3f\n", a / b }'
    status=2
fi
exit "$status"
