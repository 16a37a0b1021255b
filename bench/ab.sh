#!/usr/bin/env bash
# Alternating A/B wall-clock runs of two tlsledger binaries on the parse benchmark log.
#
# This VM's speed drifts by 20-30 % within minutes, so two binaries timed one after the other
# can differ by more than any change between them. Running them in turn, many times, and
# comparing min and median is what bench/RESULTS.md reports as "alternating runs".
#
# Usage: bench/ab.sh RUNS BINARY_A BINARY_B [extra parse arguments...]
#   e.g. bench/ab.sh 8 /tmp/tlsledger-before target/release/tlsledger
#        bench/ab.sh 8 target/release/tlsledger target/release/tlsledger --threads 2
# Environment: LOG=bench/out/postfix-bench.log (made by bench/parse.sh).
# Prints, per binary: min, median and max seconds of `parse --stats --output none LOG`.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -lt 3 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
runs=$1 a=$2 b=$3
shift 3
log=${LOG:-bench/out/postfix-bench.log}
[ -r "$log" ] || { echo "no $log: run bench/parse.sh first" >&2; exit 2; }

for _ in $(seq "$runs"); do
    for label in A B; do
        if [ "$label" = A ]; then bin=$a; else bin=$b; fi
        start=$(date +%s%N)
        "$bin" parse --stats --output none "$@" "$log" 2>/dev/null
        end=$(date +%s%N)
        echo "$label $(( (end - start) / 1000000 ))"
    done
done | sort -k1,1 -k2,2n | awk -v a="$a" -v b="$b" '
    { ms[$1] = ms[$1] " " $2 }
    END {
        for (label in ms) {
            n = split(ms[label], t, " ")
            printf "%s %-40s min %.3f s  median %.3f s  max %.3f s  (%d runs)\n", label, (label == "A" ? a : b),
                t[1] / 1000, t[int((n + 1) / 2)] / 1000, t[n] / 1000, n
        }
    }' | sort
