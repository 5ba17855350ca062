#!/usr/bin/env bash
# Benchmarks against the local control plane: `hack/bench.sh` runs the import benchmark
# (BENCH_KEYS, BENCH_LATENCY_MS, BENCH_CLIENT_CONCURRENCY tune it). Prints figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/prereqs.sh
cargo build --release --bins --benches --quiet
trap 'bash hack/cluster.sh down' EXIT
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
cargo bench --quiet --bench import
