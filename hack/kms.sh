#!/usr/bin/env bash
# The external KMSes tests/kms.rs runs against, built from the Go module proxy and cached (by
# version) like hack/cluster.sh's binaries:
#
#   hack/kms.sh plugin   the KMS v2 plugin of hack/kms-plugin (k8s.io/kms's gRPC service, keys from
#                        a file); prints its path
#   hack/kms.sh vault    Vault (server, Transit engine, Kubernetes auth) at a pinned release; prints
#                        its path. A cold build takes about 10 minutes on 2 cores.
#   hack/kms.sh env      both, as `export BYOK_KMS_PLUGIN=... BYOK_VAULT=...` lines (hack/test.sh)
#
# Environment: BYOK_CACHE_DIR (default ~/.cache/byok-operator), as hack/cluster.sh.
set -euo pipefail

VAULT_VERSION=v1.21.4
# The Vault module's go.mod points its api and sdk modules at directories of Vault's repository,
# which the module proxy does not serve with it: the build takes the published releases instead.
# sdk v0.21.0 is the one published closest to v1.21.4's tree; the two signatures between them that
# differ are adapted below (two lines of Vault's source, checked to apply).
VAULT_API_VERSION=v1.22.0
VAULT_SDK_VERSION=v0.21.0
KMS_VERSION=v0.35.4 # k8s.io/kms, at the release of the local control plane (hack/cluster.sh)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GONOSUMDB='github.com/hashicorp,k8s.io'

log() { printf '[kms] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

plugin() {
  local dir=$CACHE/bin/kms-plugin-$KMS_VERSION-$(sha256sum "$REPO/hack/kms-plugin/main.go" | cut -c1-12)
  if [[ ! -x $dir/kms-plugin ]]; then
    command -v go >/dev/null || die "go is required to build the KMS v2 plugin"
    log "building the KMS v2 plugin (k8s.io/kms $KMS_VERSION)"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$REPO/hack/kms-plugin" && go build -trimpath -ldflags "-s -w" -o "$dir.tmp/kms-plugin" .)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/kms-plugin"
}

vault() {
  local dir=$CACHE/bin/vault-$VAULT_VERSION
  if [[ ! -x $dir/vault ]]; then
    command -v go >/dev/null || die "go is required to build Vault"
    local start=$SECONDS src work
    log "building Vault $VAULT_VERSION from the Go module proxy (once; about 10 minutes on 2 cores)"
    src=$(cd /tmp && go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    work=$CACHE/src/vault-$VAULT_VERSION
    rm -rf "$work" && mkdir -p "$CACHE/src" && cp -r "$src" "$work" && chmod -R u+w "$work"
    (
      cd "$work"
      sed -i -E '/^replace github.com\/hashicorp\/vault\/(api|sdk)( |\/)/d' go.mod
      go mod edit -require="github.com/hashicorp/vault/api@$VAULT_API_VERSION" \
        -require="github.com/hashicorp/vault/sdk@$VAULT_SDK_VERSION"
      sed -i 's/^\t\tActivationFunc: iStore.activateDeduplication,$/\t\tActivationFunc: func(ctx context.Context, req *logical.Request, _ string) error { return iStore.activateDeduplication(ctx, req) },/' \
        vault/identity_store.go
      sed -i 's/b.idStoreBackend.ActivationFunc(ctx, nil)/b.idStoreBackend.ActivationFunc(ctx, nil, "")/' \
        vault/logical_system_activation_flags.go
      # ... and keysutil's RestorePolicy returns no key name in sdk v0.21.0 (the restored key's
      # name is the one asked for; Transit only records it in an observation).
      sed -i 's/restoredKeyName, err := b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)/restoredKeyName, err := keyName, b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)/' \
        builtin/logical/transit/path_restore.go
      grep -q 'req \*logical.Request, _ string) error { return iStore.activateDeduplication' vault/identity_store.go &&
        grep -q 'restoredKeyName, err := keyName, b.lm.RestorePolicy' builtin/logical/transit/path_restore.go ||
        die "Vault $VAULT_VERSION's source is not what this script adapts"
      rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
      nice go build -trimpath -ldflags "-s -w" -o "$dir.tmp/vault" .
    )
    rm -rf "$dir" && mv "$dir.tmp" "$dir" && rm -rf "$work"
    log "built Vault in $((SECONDS - start))s into $dir"
  fi
  echo "$dir/vault"
}

case "${1:-env}" in
  plugin) plugin ;;
  vault) vault ;;
  env)
    p=$(plugin)
    v=$(vault)
    echo "export BYOK_KMS_PLUGIN=$p BYOK_VAULT=$v" ;;
  *) log "usage: $0 [plugin|vault|env]"; exit 2 ;;
esac
