#!/usr/bin/env bash
# The test command: unit tests, integration tests against a local Kubernetes control plane built
# from source, and end-to-end tests whose judge pods run on a real local node (kubelet,
# containerd, runc). The node needs root; it is on by default as root (BYOK_NODE=false turns it
# off, and the end-to-end tests then say they were skipped). Your own cluster instead:
# USE_EXISTING_CLUSTER=true KUBECONFIG=... BYOK_NODE=false hack/test.sh.
# Extra arguments go to `cargo test`, e.g. `hack/test.sh --test byokkey_lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/prereqs.sh
if [[ -z "${BYOK_NODE:-}" && "$(id -u)" == 0 && "${USE_EXISTING_CLUSTER:-}" != "true" ]]; then
  BYOK_NODE=true
fi
[[ "${BYOK_NODE:-}" == "true" ]] || echo "[test] BYOK_NODE is not true: the end-to-end node tests will report SKIPPED" >&2
if [[ "${BYOK_NODE:-}" == "true" ]]; then # node e2e: judge pods run on a real node (tests/e2e_node.rs)
  export BYOK_NODE # node e2e: hack/cluster.sh starts the node; the tests see it
  cargo build --release --bins # node e2e: what hack/image.sh operator packages (no mock: the production binaries)
  bash hack/image.sh pause # node e2e: cached after the first build
fi # node e2e
# The cluster is stopped however the tests end (failure, panic, Ctrl-C).
trap 'bash hack/cluster.sh down' EXIT
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
# tests/kms.rs: a KMS v2 plugin and Vault, built from the Go module proxy (cached; Vault's cold
# build takes about 10 minutes on 2 cores).
eval "$(bash hack/kms.sh env)"
if [[ "${BYOK_NODE:-}" == "true" ]]; then # node e2e: the image pushed to the cluster's registry, rebuilt when binaries change
  bash hack/image.sh operator
  # release e2e (tests/e2e_upgrade.rs): this tree's release and the previous one (built once, cached)
  BYOK_RELEASE_DIRTY=true bash hack/release.sh >/dev/null
  bash hack/release.sh previous >/dev/null
fi
start=$SECONDS
# With no arguments: the library, binaries and integration tests (benches only run from hack/bench.sh).
# Tests run in parallel, each in its own namespace, against the mock provider (the `mock` feature);
# `failpoints` arms the operator's crash points for tests/crash.rs (never in a release build).
# The upgrade test swaps the cluster's CRDs for the previous release's: it runs alone, afterwards.
skip=()
[[ $# -gt 0 ]] || { set -- --lib --bins --tests; skip=(--skip release_upgrade); }
cargo test --no-fail-fast --features mock,failpoints "$@" -- --test-threads="${BYOK_TEST_THREADS:-4}" "${skip[@]}"
if [[ ${#skip[@]} -gt 0 ]]; then cargo test --features mock,failpoints --test e2e_upgrade; fi # one build for every step
# The whole suite: then the control-plane restarts (tests/controlplane.rs), alone and last, since they
# restart this cluster's kube-apiserver and etcd (they say SKIPPED in the run above).
if [[ "$*" == "--lib --bins --tests" ]]; then
  BYOK_RESTART_CLUSTER=1 cargo test --features mock,failpoints --test controlplane -- --test-threads=1
fi
echo "[test] cargo test took $((SECONDS - start))s"
# The whole suite: then each fuzz target for a bounded time (BYOK_FUZZ_SECONDS, default 30; 0 skips).
if [[ "$*" == "--lib --bins --tests" && "${BYOK_FUZZ_SECONDS:-30}" != 0 ]]; then
  bash hack/fuzz.sh "${BYOK_FUZZ_SECONDS:-30}"
fi
