#!/usr/bin/env bash
# Profile-guided release build of tlsledger: the fastest binary we know how to make.
#
# `cargo build --release` compiles every branch as equally likely; with a profile of a
# representative run, LLVM lays out and inlines the hot paths of the parsers and the correlator
# for what they really see. On bench/parse.sh's log this ran 10 % fewer instructions per line
# (callgrind) and took 12-16 % less wall time (bench/ab.sh), with byte-identical output
# (bench/same-output.sh). Figures: bench/RESULTS.md.
#
# Steps:
#   1. Build an instrumented binary (target/pgo-gen).
#   2. Train it: `tlsledger parse` over every log under tests/data and examples (Postfix,
#      Exim, Sendmail, OpenSMTPD; real corpus lines), and over two generated Postfix logs
#      (bench/gen-postfix-log.py with other seeds than bench/parse.sh's, RFC 3339 and RFC 3164
#      framing), once with JSON output. The benchmark's own log is not used.
#   3. Merge the profiles with an llvm-profdata that reads them (LLVM_PROFDATA, rustup's
#      llvm-tools, Debian's llvm-NN packages newest first, PATH; Debian's llvm-19 is installed
#      when none does) and build the final binary (target/pgo) with them.
#
# Usage: bench/pgo-build.sh
# Prints the path of the binary on stdout (progress goes to stderr). A binary built from the
# same sources (src, parsers/src and the manifests, by content) and compiler is reused;
# FORCE=1 rebuilds it. Exits non-zero, with the reason, when no usable llvm-profdata exists
# (its profile format must be readable by rustc's LLVM) or a step fails; `cargo build
# --release` then remains the way to build. The training logs in tests/data are not part of
# the reuse key: a changed sample log does not make the binary stale.
# Environment: LLVM_PROFDATA=path, FORCE=1, TRAIN_MB=60 (size of the generated RFC 3339 log).

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

TRAIN_MB=${TRAIN_MB:-60}
# An explicit target: RUSTFLAGS then apply to tlsledger and its libraries only, not to build
# scripts and proc macros (which would write profiles of their own while the build runs).
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
OUT=target/pgo/$TRIPLE/release/tlsledger
STAMP=target/pgo/tlsledger.source
# What the binary is built from: a digest of the sources (so changes to docs or scripts keep
# it, and a tree without git works too) and the compiler.
source_id() {
    printf '%s %s\n' "$(find src parsers/src Cargo.toml Cargo.lock parsers/Cargo.toml -type f -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)" "$(rustc -V)"
}

if [ "${FORCE:-0}" != "1" ] && [ -x "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(source_id)" ]; then
    log "Reusing $OUT (built from this source; FORCE=1 rebuilds)."
    echo "$OUT"
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A fixed path (LLVM_PROFILE_FILE says where each run writes): the same RUSTFLAGS every time,
# so a second run rebuilds only what changed.
PROFILES=$PWD/target/pgo-gen/profiles
rm -rf "$PROFILES"
mkdir -p "$PROFILES"

# Step 1: the instrumented build.
log "Building the instrumented binary (target/pgo-gen)."
RUSTFLAGS="-Cprofile-generate=$PROFILES" cargo build --release --bin tlsledger \
    --target "$TRIPLE" --target-dir target/pgo-gen >&2
GEN=target/pgo-gen/$TRIPLE/release/tlsledger

# Step 2: training runs.
log "Generating training logs (${TRAIN_MB} MB RFC 3339, 20 MB RFC 3164)."
python3 bench/gen-postfix-log.py --size-mb "$TRAIN_MB" --seed 7 --framing 3339 --out "$WORK/train-3339.log" >&2
python3 bench/gen-postfix-log.py --size-mb 20 --seed 8 --framing 3164 --out "$WORK/train-3164.log" >&2
mapfile -t samples < <(find tests/data examples -type f \( -name '*.log' -o -name '*.maillog' \) | sort)
log "Training on ${#samples[@]} sample logs and the generated ones."
# train ARGS... runs the instrumented binary; its output is shown only when it fails.
train() {
    if ! LLVM_PROFILE_FILE="$PROFILES/%m_%p.profraw" "$GEN" "$@" > /dev/null 2> "$WORK/train.err"; then
        log "Training run failed: tlsledger $*"
        cat "$WORK/train.err" >&2
        exit 1
    fi
}
train parse --stats --output none "${samples[@]}"
train parse --stats --output none "$WORK/train-3339.log"
train parse --output json "$WORK/train-3164.log"
train parse --output json "${samples[@]}"

# Step 3: merge, then the optimised build. llvm-profdata must know the profile format of
# rustc's LLVM: each candidate is tried, newest first, and Debian's llvm-19 is installed when
# none can (Debian 12's default llvm-profdata, from LLVM 14, cannot).
MERGED=$WORK/merged.profdata
candidates() {
    local dir
    [ -n "${LLVM_PROFDATA:-}" ] && echo "$LLVM_PROFDATA"
    echo "$(rustc --print sysroot)/lib/rustlib/$TRIPLE/bin/llvm-profdata"
    for dir in $(printf '%s\n' /usr/lib/llvm-*/bin | sort -V -r); do
        echo "$dir/llvm-profdata"
    done
    command -v llvm-profdata || true
}
merge() {
    local candidate
    while read -r candidate; do
        [ -x "$candidate" ] || continue
        if "$candidate" merge -o "$MERGED" "$PROFILES"/*.profraw 2>/dev/null; then
            log "Profiles merged with $candidate."
            return 0
        fi
        log "$candidate cannot read these profiles."
    done < <(candidates)
    return 1
}
if ! merge; then
    if [ -x /usr/lib/llvm-19/bin/llvm-profdata ]; then
        log "No llvm-profdata reads the profiles of rustc's LLVM $(rustc -vV | sed -n 's/^LLVM version: //p')."
        exit 1
    fi
    log "Installing Debian's llvm-19 for its llvm-profdata."
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q llvm-19 >&2
    merge || { log "llvm-19's llvm-profdata cannot read these profiles either."; exit 1; }
fi
# Kept under a name of its content: a new profile changes RUSTFLAGS, so cargo rebuilds with it.
mkdir -p target/pgo
PROFILE=$PWD/target/pgo/$(sha256sum "$MERGED" | cut -c1-16).profdata
find target/pgo -maxdepth 1 -name '*.profdata' -delete
cp "$MERGED" "$PROFILE"
log "Building the profile-guided binary (target/pgo)."
RUSTFLAGS="-Cprofile-use=$PROFILE" cargo build --release --bin tlsledger \
    --target "$TRIPLE" --target-dir target/pgo >&2
source_id > "$STAMP"
log "Built $OUT."
echo "$OUT"
