#!/usr/bin/env bash
# promtool of a pinned Prometheus release, built from the Go module proxy (hack/promtool) and cached
# like hack/cluster.sh's binaries, to check the chart's alerting rules.
#
#   hack/promtool.sh          check: `promtool check rules` on charts/byok-operator/rules/*.yaml, then
#                             `promtool test rules` on hack/promtool/rules_test.yaml (the alerts fire,
#                             and stay quiet, on made-up series)
#   hack/promtool.sh build    build promtool (cached by version); prints its path
#
# Environment:
#   BYOK_CACHE_DIR   where promtool is cached (default ~/.cache/byok-operator), as hack/cluster.sh
set -euo pipefail

# Prometheus 3.16.0: its Go module versions are v0.3MM.P for release 3.MM.P.
PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
DIR=$CACHE/bin/promtool-$PROMETHEUS_VERSION
PROMTOOL=$DIR/promtool

log() { printf '[promtool] %s\n' "$*" >&2; }

cmd_build() {
  if [[ -x "$PROMTOOL" ]]; then echo "$PROMTOOL"; return 0; fi
  command -v go >/dev/null || { log "go is required to build promtool"; exit 1; }
  local start=$SECONDS v=github.com/prometheus/common/version
  log "building promtool $PROMETHEUS_VERSION from the Go module proxy (hack/promtool; a cold build takes minutes)"
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
  # The committed go.sum pins every module; GONOSUMDB lets a machine that cannot reach the
  # checksum database still build from it.
  (cd "$REPO/hack/promtool" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GONOSUMDB='github.com/prometheus' \
    go build -trimpath -o "$DIR.tmp/promtool" -ldflags "-s -w -X $v.Version=$PROMETHEUS_VERSION" \
    github.com/prometheus/prometheus/cmd/promtool)
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
  log "built in $((SECONDS - start))s into $DIR"
  echo "$PROMTOOL"
}

cmd_check() {
  cmd_build >/dev/null
  "$PROMTOOL" check rules "$REPO"/charts/byok-operator/rules/*.yaml
  (cd "$REPO/hack/promtool" && "$PROMTOOL" test rules rules_test.yaml)
  log "rules ok"
}

case "${1:-check}" in
  build) cmd_build ;;
  check) cmd_check ;;
  *) log "usage: $0 [check|build]"; exit 2 ;;
esac
