#!/usr/bin/env bash
# Checks that two tlsledger binaries give the same output: the JSON observations byte for byte
# (same order) and the `--stats` report, on every log under tests/data and on two generated
# 30 MB Postfix logs (RFC 3339 and RFC 3164 framing, made once into bench/out/).
#
# Use it with every performance change: a speed-up that changes one observation is a bug.
#
# Usage: bench/same-output.sh OLD_BINARY NEW_BINARY
#   e.g. git stash; cargo build --release; cp target/release/tlsledger /tmp/tlsledger-old
#        git stash pop; cargo build --release
#        bench/same-output.sh /tmp/tlsledger-old target/release/tlsledger
# Exit status: 0 when every log gives the same output, 1 otherwise (the differing logs are
# listed), 2 on a usage error.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -ne 2 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
old=$1 new=$2
mkdir -p bench/out
for framing in 3339 3164; do
    log=bench/out/same-output-$framing.log
    if [ ! -s "$log" ]; then
        echo "==> generating $log" >&2
        python3 bench/gen-postfix-log.py --size-mb 30 --seed 7 --framing "$framing" --out "$log.tmp"
        mv "$log.tmp" "$log"
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
differ=0 checked=0
for log in bench/out/same-output-3339.log bench/out/same-output-3164.log tests/data/*/*.log; do
    "$old" parse --stats "$log" > "$work/old.json" 2> "$work/old.stats" || true
    "$new" parse --stats "$log" > "$work/new.json" 2> "$work/new.stats" || true
    checked=$((checked + 1))
    if ! cmp -s "$work/old.json" "$work/new.json" || ! cmp -s "$work/old.stats" "$work/new.stats"; then
        echo "DIFFERENT: $log" >&2
        differ=1
    fi
done
if [ "$differ" = 0 ]; then
    echo "same output on all $checked logs"
fi
exit "$differ"
