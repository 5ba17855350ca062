#!/usr/bin/env bash
# Builds the peers `hack/bench.sh compare` measures byok-operator against, once, cached outside the
# repo, and prints their paths as shell assignments (eval "$(bash hack/peers.sh)"):
#   sealed-secrets controller + kubeseal, from the Go module proxy, with the release's CRD
#   promptfoo, from npm, pinned exact
# A peer that does not build fails this script loudly: a benchmark without its peer is no comparison.
set -euo pipefail
SEALED_SECRETS_VERSION=${SEALED_SECRETS_VERSION:-v0.27.1}
# 0.121.x is the last line whose engines accept node 20 (0.122 needs node >= 22.22).
PROMPTFOO_VERSION=${PROMPTFOO_VERSION:-0.121.20}
GO=${GO:-/usr/local/go/bin/go}
cache=$HOME/.cache/byok-operator
ss=$cache/bin/sealed-secrets-$SEALED_SECRETS_VERSION
pf=$cache/promptfoo-$PROMPTFOO_VERSION
fail() { echo "[peers] FAILED: $*" >&2; exit 1; }

if [[ ! -x $ss/controller || ! -x $ss/kubeseal || ! -f $ss/sealedsecrets-crd.yaml ]]; then
  echo "[peers] building sealed-secrets $SEALED_SECRETS_VERSION from the Go module proxy" >&2
  mod=github.com/bitnami-labs/sealed-secrets
  mkdir -p "$cache/bin"
  tmp=$(mktemp -d "$cache/bin/.sealed-secrets-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  export GOFLAGS=-mod=mod
  # `go install pkg@version`: the module's own go.mod and go.sum, no replace to honour (it has none).
  for cmd in controller kubeseal; do
    GOBIN=$tmp "$GO" install -ldflags "-X main.VERSION=$SEALED_SECRETS_VERSION" "$mod/cmd/$cmd@$SEALED_SECRETS_VERSION" \
      || fail "sealed-secrets $SEALED_SECRETS_VERSION cmd/$cmd did not build (set SEALED_SECRETS_VERSION to the nearest that does)"
  done
  dir=$("$GO" mod download -json "$mod@$SEALED_SECRETS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f $dir/helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml ]] || fail "no CRD in $mod@$SEALED_SECRETS_VERSION"
  cp "$dir/helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml" "$tmp/sealedsecrets-crd.yaml"
  mkdir -p "$ss"
  mv "$tmp/controller" "$tmp/kubeseal" "$tmp/sealedsecrets-crd.yaml" "$ss/"
fi

if [[ ! -x $pf/node_modules/.bin/promptfoo ]]; then
  echo "[peers] installing promptfoo $PROMPTFOO_VERSION from npm" >&2
  mkdir -p "$pf"
  npm install --prefix "$pf" --save-exact --no-audit --no-fund --loglevel=error "promptfoo@$PROMPTFOO_VERSION" >&2 \
    || fail "promptfoo $PROMPTFOO_VERSION did not install"
  [[ -x $pf/node_modules/.bin/promptfoo ]] || fail "promptfoo $PROMPTFOO_VERSION installed no bin/promptfoo"
fi

echo "export PEER_SEALED_SECRETS_VERSION=$SEALED_SECRETS_VERSION"
echo "export PEER_SEALED_SECRETS_CONTROLLER=$ss/controller"
echo "export PEER_KUBESEAL=$ss/kubeseal"
echo "export PEER_SEALED_SECRETS_CRD=$ss/sealedsecrets-crd.yaml"
echo "export PEER_PROMPTFOO_VERSION=$PROMPTFOO_VERSION"
echo "export PEER_PROMPTFOO=$pf/node_modules/.bin/promptfoo"
