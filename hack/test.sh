#!/usr/bin/env bash
# The test command: unit tests, and integration tests against a local Kubernetes control plane
# built from source (or your own cluster with USE_EXISTING_CLUSTER=true and KUBECONFIG).
# Extra arguments go to `cargo test`, e.g. `hack/test.sh --test byokkey_lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/prereqs.sh
# The cluster is stopped however the tests end (failure, panic, Ctrl-C).
trap 'bash hack/cluster.sh down' EXIT
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
start=$SECONDS
# With no arguments: the library, binaries and integration tests (benches only run from hack/bench.sh).
# Tests run in parallel, each in its own namespace.
[[ $# -gt 0 ]] || set -- --lib --bins --tests
cargo test --no-fail-fast "$@" -- --test-threads="${BYOK_TEST_THREADS:-4}"
echo "[test] cargo test took $((SECONDS - start))s"
