#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of every parser that reads bytes
# from outside the operator: fuzz/fuzz_targets/*.rs, seeds in fuzz/corpus/<target>/ (committed).
#
#   hack/fuzz.sh [SECONDS]      each target for SECONDS (default 30), one after another: the short run
#                               of hack/test.sh. Exits non-zero on the first crash, printing its input.
#   hack/fuzz.sh runs N [T...]  each target (or those named) for N executions (the long run; the
#                               README's figures). BYOK_FUZZ_MAX_LEN caps an input (default 65536).
#   hack/fuzz.sh build          build cargo-fuzz (crates.io, cached) and the targets
#
# BYOK_FUZZ_SANITIZER=none drops AddressSanitizer (about 2-3x the executions per second; the
# properties the targets assert still hold, memory errors would go unseen: safe Rust has none to
# find, the sanitizer is there for the dependencies' unsafe code). BYOK_FUZZ_TARGET_DIR keeps a long
# run's binaries apart from the short run's, so a build in the checkout does not replace them.
#
# Inputs the fuzzer finds go to $CACHE/fuzz/corpus/<target> (not the checkout); a crash is written
# to $CACHE/fuzz/artifacts/<target>/: make it a regression test (see src/broker/results.rs) and
# commit the input under fuzz/corpus/<target>/ as regression-<what>.
# Needs a nightly toolchain (sanitizer flags); this machine's rustup has one.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
CARGO_FUZZ_VERSION=0.13.2
TOOLS=$CACHE/bin/cargo-fuzz-$CARGO_FUZZ_VERSION
WORK=$CACHE/fuzz
SANITIZER=${BYOK_FUZZ_SANITIZER:-address}
TARGET_DIR=${BYOK_FUZZ_TARGET_DIR:-$WORK/target}
export PATH=$TOOLS/bin:$PATH # cargo fuzz
TARGETS=(envelope sealed cases provider_answer verdict wire)

log() { printf '[fuzz] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

build() {
  rustup toolchain list | grep -q '^nightly' || die "a nightly toolchain is needed: rustup toolchain install nightly --profile minimal"
  if [[ ! -x $TOOLS/bin/cargo-fuzz ]]; then
    local start=$SECONDS
    log "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (once)"
    CARGO_TARGET_DIR=$CACHE/cargo-target-tools cargo install --quiet --locked --root "$TOOLS.tmp" "cargo-fuzz@$CARGO_FUZZ_VERSION"
    rm -rf "$TOOLS" && mv "$TOOLS.tmp" "$TOOLS" && rm -rf "$CACHE/cargo-target-tools"
    log "built cargo-fuzz in $((SECONDS - start))s"
  fi
  local start=$SECONDS
  (cd "$REPO/fuzz" && CARGO_TARGET_DIR=$TARGET_DIR cargo +nightly fuzz build --release -s "$SANITIZER" 2>&1 | { grep -v '^\s*Compiling' || true; } >&2) ||
    die "building the fuzz targets failed"
  log "targets built in $((SECONDS - start))s"
}

# run TARGET LIMIT-FLAG: one target, from the committed seeds and what earlier runs found.
run() {
  local target=$1 limit=$2 out line
  mkdir -p "$WORK/corpus/$target" "$WORK/artifacts/$target"
  out=$(mktemp "$WORK/$target.XXXXXX.log") # one per run: two runs at once (CI, by hand) keep their own
  if ! (cd "$REPO/fuzz" && CARGO_TARGET_DIR=$TARGET_DIR cargo +nightly fuzz run --release -s "$SANITIZER" "$target" \
    "$WORK/corpus/$target" "$REPO/fuzz/corpus/$target" -- "$limit" -max_len="${BYOK_FUZZ_MAX_LEN:-65536}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$target/") >"$out" 2>&1; then
    tail -40 "$out" >&2
    die "$target: crash or failure (input in $WORK/artifacts/$target/, log $out)"
  fi
  # libFuzzer's last stats: executions, time, rate, coverage, corpus, memory.
  local runs secs rate cov corpus rss
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$out" | tail -1)
  cov=$(grep -ao 'cov: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
  corpus=$(find "$WORK/corpus/$target" "$REPO/fuzz/corpus/$target" -type f | wc -l)
  line=$(printf '%-16s %10s executions in %5ss (%s/s), coverage %s edges, corpus %s inputs, peak RSS %s MB, sanitizer %s, 0 crashes' \
    "$target" "$runs" "$secs" "$rate" "${cov:-?}" "$corpus" "$rss" "$SANITIZER")
  echo "$line"
  rm -f "$out"
}

case "${1:-30}" in
  build) build ;;
  runs)
    build
    runs=${2:-10000000}
    shift $(($# < 2 ? $# : 2))
    [[ $# -gt 0 ]] || set -- "${TARGETS[@]}"
    for t in "$@"; do run "$t" "-runs=$runs"; done ;;
  *[!0-9]*) log "usage: $0 [SECONDS | runs N | build]"; exit 2 ;;
  *)
    build
    for t in "${TARGETS[@]}"; do run "$t" "-max_total_time=$1"; done ;;
esac
