#!/usr/bin/env bash
# Benchmarks; each prints figures and asserts nothing.
#   hack/bench.sh [import]   1,000 ByokKeys imported (BENCH_KEYS, BENCH_LATENCY_MS, BENCH_CLIENT_CONCURRENCY)
#   hack/bench.sh evaljob    EvalJob applied -> judge Job created, p50/p99 over 200 (BENCH_EVALJOBS)
#   hack/bench.sh judge      the judge, mock latency 200 ms, concurrency 32, 256, 1,024 (BENCH_CONCURRENCY, BENCH_CASES; no cluster)
#   hack/bench.sh kms        1,000 ByokKeys under the keyring Secret, then under Vault Transit: the ratio
#   hack/bench.sh compare    against the peers (hack/peers.sh builds them): sealed-secrets importing, promptfoo judging
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/prereqs.sh
bench=${1:-import}
if [[ "$bench" == "compare" ]]; then
  peers=$(bash hack/peers.sh) # a peer that does not build fails the command here
  eval "$peers"
  # A cluster of its own: another bench's cluster is neither reused nor stopped.
  export BYOK_CLUSTER_DIR=${BYOK_CLUSTER_DIR:-$PWD/target/cluster-compare}
fi
# The benches drive the mock provider, a test double behind the `mock` feature.
cargo build --release --bins --benches --features mock --quiet
if [[ "$bench" == "judge" ]]; then exec cargo bench --quiet --features mock --bench judge; fi
trap 'bash hack/cluster.sh down' EXIT
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
if [[ "$bench" == "kms" ]]; then eval "$(bash hack/kms.sh env)"; fi
cargo bench --quiet --features mock --bench "$bench"
