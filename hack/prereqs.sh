#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine: the commands below from
# Debian's packages (chromium: the report test renders `kubectl byok eval report` in a headless
# browser), and checks for the Go and Rust toolchains (Kubernetes is built from source).
set -euo pipefail
missing=()
for cmd in openssl curl python3 git chromium; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "[prereqs] installing ${missing[*]}" >&2
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" ca-certificates >/dev/null
fi
if ! command -v go >/dev/null; then
  echo "[prereqs] Go >= 1.25 is required to build Kubernetes from source (or set KUBEBUILDER_ASSETS)" >&2
  [[ -n "${KUBEBUILDER_ASSETS:-}" ]] || exit 1
fi
command -v cargo >/dev/null || { echo "[prereqs] Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
