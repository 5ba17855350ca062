#!/usr/bin/env bash
# A release in one command: the operator image (versioned, pushed to a registry, signed), the
# packaged Helm chart pinning that image by digest, the rendered manifests, an SBOM of the image,
# checksums and signatures that users verify offline (README, "Install").
#
#   hack/release.sh [current]   the work tree's version (Cargo.toml) -> target/release-artifacts/<version>/
#   hack/release.sh previous    the previous release, v$PREVIOUS_VERSION = commit $PREVIOUS_COMMIT, built once in
#                               a git worktree of that commit and cached -> $CACHE/releases/<version>-<commit>/;
#                               later calls only push its image again (a new cluster has an empty registry)
#   hack/release.sh verify DIR [REF]  what a user does: checksums, the checksums' signature, the image's signature
#                               (at REF, default: where this machine pushed it)
#   hack/release.sh tools       build cosign (Go module proxy, hack/cosign) and cargo-cyclonedx (crates.io), cached
#
# A release directory:
#   byok-operator-<v>.tgz        `helm package`: version and appVersion <v>; values.yaml pins
#                                image.repository=$BYOK_PUBLISHED_IMAGE and image.digest=sha256:...
#   byok-operator-<v>.yaml       that chart rendered with its defaults, CRDs and Namespace included (kubectl apply)
#   byok-operator-<v>.oci.tar    the operator image as an OCI archive (skopeo copy it into a private registry)
#   byok-operator-<v>.image      the published image by digest: $BYOK_PUBLISHED_IMAGE@sha256:...
#   .pushed                      where this run pushed (and signed) it: <registry>/byok/byok-operator@sha256:...
#                                (not in SHA256SUMS: a new local cluster has a new registry address)
#   kubectl-byok-v<v>-linux-<arch>.tar.gz  the plugin for this machine's platform (krew archive)
#   byok-operator-<v>.krew.yaml  its krew manifest (plugins/byok.yaml with the archive's sha256)
#   byok-operator-<v>.cdx.json   CycloneDX SBOM of the image: the crates of its binaries (cargo-cyclonedx) and the
#                                Debian packages of the shared libraries copied into it
#   SHA256SUMS, SHA256SUMS.sig   checksums of the files above; their cosign signature
#   cosign.pub                   the key to verify with (no transparency log: verification works offline)
# The image is also signed in the registry (`cosign sign`, signature stored beside it, no transparency log).
#
# Environment:
#   BYOK_RELEASE_REGISTRY   registry (host[:port]) the image is pushed to, as <registry>/byok/byok-operator
#                           (default: the running cluster's, hack/cluster.sh with BYOK_NODE=true)
#   BYOK_PUBLISHED_IMAGE    the image name the packaged chart defaults to (ghcr.io/launchgate-ai/byok-operator)
#   BYOK_COSIGN_KEY         cosign private key file (default: a key pair generated once in $CACHE/cosign)
#   COSIGN_PASSWORD         its password (empty for the generated one)
#   BYOK_RELEASE_DIRTY      "true": allow uncommitted changes (the tests and the demo release the work tree)
#   BYOK_CACHE_DIR, BYOK_CLUSTER_DIR, CARGO_TARGET_DIR as for hack/cluster.sh and hack/image.sh
set -euo pipefail

PREVIOUS_VERSION=0.1.0
PREVIOUS_COMMIT=a2674cdbb31346f25731bbc517cccc35cd8fbba4
CYCLONEDX_VERSION=0.5.9
PUBLISHED_IMAGE=${BYOK_PUBLISHED_IMAGE:-ghcr.io/launchgate-ai/byok-operator}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
STATE=${BYOK_CLUSTER_DIR:-$REPO/target/cluster}
COSIGN_VERSION=$(awk '$1 == "require" && $2 == "github.com/sigstore/cosign/v2" {print $3}' "$REPO/hack/cosign/go.mod")
COSIGN=$CACHE/bin/cosign-$COSIGN_VERSION/cosign
CYCLONEDX=$CACHE/bin/cargo-cyclonedx-$CYCLONEDX_VERSION/bin/cargo-cyclonedx
export COSIGN_PASSWORD=${COSIGN_PASSWORD-}

log() { printf '[release] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

build_tools() {
  if [[ ! -x $COSIGN ]]; then
    local start=$SECONDS dir=${COSIGN%/*}
    log "building cosign $COSIGN_VERSION from the Go module proxy (hack/cosign)"
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$REPO/hack/cosign" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$dir.tmp/cosign" \
      -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" github.com/sigstore/cosign/v2/cmd/cosign)
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    log "built cosign in $((SECONDS - start))s"
  fi
  if [[ ! -x $CYCLONEDX ]]; then
    local start=$SECONDS root=${CYCLONEDX%/bin/*}
    log "building cargo-cyclonedx $CYCLONEDX_VERSION (crates.io)"
    rm -rf "$root.tmp"
    CARGO_TARGET_DIR=$CACHE/cargo-target-tools cargo install --quiet --locked --root "$root.tmp" \
      "cargo-cyclonedx@$CYCLONEDX_VERSION"
    rm -rf "$root" && mv "$root.tmp" "$root"
    rm -rf "$CACHE/cargo-target-tools"
    log "built cargo-cyclonedx in $((SECONDS - start))s"
  fi
}

cosign_key() { # the private key; a local key pair is made once
  if [[ -n "${BYOK_COSIGN_KEY:-}" ]]; then echo "$BYOK_COSIGN_KEY"; return; fi
  if [[ ! -f $CACHE/cosign/cosign.key ]]; then
    mkdir -p "$CACHE/cosign"
    (cd "$CACHE/cosign" && "$COSIGN" generate-key-pair >/dev/null 2>&1)
    log "generated the cosign key pair $CACHE/cosign/cosign.{key,pub}"
  fi
  echo "$CACHE/cosign/cosign.key"
}

registry() {
  if [[ -n "${BYOK_RELEASE_REGISTRY:-}" ]]; then echo "$BYOK_RELEASE_REGISTRY"; return; fi
  [[ -f "$STATE/registry.port" ]] || die "no registry: start one (BYOK_NODE=true hack/cluster.sh up) or set BYOK_RELEASE_REGISTRY"
  echo "127.0.0.1:$(cat "$STATE/registry.port")"
}

helm_() { bash "$REPO/hack/helm.sh" helm "$@"; }

# package_chart CHART-DIR VERSION DIGEST OUT: the chart with version, appVersion and the image pinned.
package_chart() {
  local src=$1 version=$2 digest=$3 out=$4 tmp
  tmp=$(mktemp -d)
  cp -r "$src" "$tmp/byok-operator"
  python3 - "$tmp/byok-operator/values.yaml" "$PUBLISHED_IMAGE" "$digest" <<'PY'
import re, sys
path, repo, digest = sys.argv[1:]
text = open(path).read()
block = re.search(r'^image:\n(?:(?:  .*)?\n)+', text, flags=re.M)
if not block:
    sys.exit('values.yaml has no image: block')
new = re.sub(r'^  repository: .*$', f'  repository: {repo}', block.group(0), count=1, flags=re.M)
new = re.sub(r'^  digest: .*$', f'  digest: "{digest}"', new, count=1, flags=re.M)
if f'digest: "{digest}"' not in new or f'repository: {repo}' not in new:
    sys.exit('values.yaml: image.repository or image.digest not found')
open(path, 'w').write(text.replace(block.group(0), new))
PY
  helm_ package "$tmp/byok-operator" --version "$version" --app-version "$version" --destination "$tmp" >/dev/null
  mv "$tmp/byok-operator-$version.tgz" "$out/"
  helm_ template byok-operator "$out/byok-operator-$version.tgz" --namespace byok-system --include-crds \
    --set namespace.create=true >"$out/byok-operator-$version.yaml"
  rm -rf "$tmp"
}

# sbom SRC-DIR TARGET-DIR VERSION REF OUT: the crates of the image's binaries, and the Debian packages
# of the shared libraries hack/image.sh copies into it (what `ldd` resolves).
sbom() {
  local src=$1 target=$2 version=$3 ref=$4 out=$5 libs
  (cd "$src" && "$CYCLONEDX" cyclonedx --format json --override-filename byok-operator.sbom --no-build-deps \
    --spec-version 1.5 >/dev/null 2>&1) || die "cargo cyclonedx failed in $src"
  libs=$(for b in byok-operator byok-judge; do ldd "$target/release/$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
  python3 - "$src/byok-operator.sbom.json" "$out/byok-operator-$version.cdx.json" "$version" "$ref" $libs <<'PY'
import json, subprocess, sys
src, out, version, ref, *libs = sys.argv[1:]
bom = json.load(open(src))
pkgs = {}
for lib in libs:
    found = subprocess.run(['dpkg', '-S', lib], capture_output=True, text=True)
    if found.returncode != 0:  # /lib64/ld-linux... is /lib/x86_64-linux-gnu/... for dpkg
        real = subprocess.run(['readlink', '-f', lib], capture_output=True, text=True).stdout.strip()
        found = subprocess.run(['dpkg', '-S', real], capture_output=True, text=True)
    pkg = found.stdout.split(':')[0].strip() if found.returncode == 0 else None
    if pkg:
        pkgs.setdefault(pkg, []).append(lib)
for pkg, files in sorted(pkgs.items()):
    ver = subprocess.run(['dpkg-query', '-W', '-f', '${Version}', pkg], capture_output=True, text=True).stdout
    bom.setdefault('components', []).append({
        'type': 'library', 'bom-ref': f'deb:{pkg}@{ver}', 'name': pkg, 'version': ver,
        'purl': f'pkg:deb/debian/{pkg}@{ver}?arch=amd64&distro=debian-12',
        'properties': [{'name': 'byok:image-path', 'value': f} for f in files]})
repo, digest = ref.rsplit('@', 1)
bom['metadata']['component'] = {
    'type': 'container', 'bom-ref': ref, 'name': 'byok-operator', 'version': version,
    'purl': f'pkg:oci/byok-operator@{digest.replace(":", "%3A")}',
    'components': [bom['metadata'].get('component', {})]}
json.dump(bom, open(out, 'w'), indent=1)
PY
  rm -f "$src/byok-operator.sbom.json"
}

# plugin SRC-DIR TARGET-DIR VERSION OUT: kubectl-byok as a krew archive for this machine's platform,
# and the krew manifest (plugins/byok.yaml) with that archive's sha256, listing only what was built.
plugin() {
  local src=$1 target=$2 version=$3 out=$4 platform tmp
  [[ -f "$src/plugins/byok.yaml" ]] || return 0 # releases before 0.2.0 have no krew manifest
  platform=linux-$(dpkg --print-architecture)
  tmp=$(mktemp -d)
  cp "$target/release/kubectl-byok" "$tmp/"
  [[ ! -f "$src/LICENSE" ]] || cp "$src/LICENSE" "$tmp/"
  tar -C "$tmp" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . |
    gzip -n >"$out/kubectl-byok-v$version-$platform.tar.gz"
  rm -rf "$tmp"
  python3 - "$src/plugins/byok.yaml" "$out/byok-operator-$version.krew.yaml" "$platform" \
    "$(sha256sum "$out/kubectl-byok-v$version-$platform.tar.gz" | cut -d' ' -f1)" <<'PY'
import re, sys
src, dst, platform, sha = sys.argv[1:]
head, platforms = open(src).read().split('  platforms:\n', 1)
blocks = re.split(r'(?m)^(?=    - selector:)', platforms)
kept = [re.sub(r'(?m)^(      sha256: ).*$', rf'\g<1>"{sha}"', b) for b in blocks if f'-{platform}.tar.gz' in b]
if len(kept) != 1:
    sys.exit(f'plugins/byok.yaml: {len(kept)} platforms for {platform}, expected 1')
head = re.sub(r'(?m)^# .*\n', '', head)  # the placeholder comment is about the source manifest
open(dst, 'w').write('# Krew manifest of this release: kubectl krew install --manifest=<this> --archive=<its archive>\n'
                     + head + '  platforms:\n' + kept[0])
PY
}

# sign OUT REF: checksums of every file, their signature, the image's signature in the registry.
sign() {
  local out=$1 ref=$2 key
  key=$(cosign_key)
  (cd "$out" && rm -f SHA256SUMS SHA256SUMS.sig cosign.pub &&
    sha256sum -- byok-operator-* $(compgen -G 'kubectl-byok-*') >SHA256SUMS)
  "$COSIGN" sign-blob --yes --key "$key" --tlog-upload=false --output-signature "$out/SHA256SUMS.sig" \
    "$out/SHA256SUMS" >/dev/null 2>&1 || die "cosign sign-blob"
  "$COSIGN" public-key --key "$key" >"$out/cosign.pub" 2>/dev/null
  "$COSIGN" sign --yes --key "$key" --tlog-upload=false --allow-http-registry "$ref" >/dev/null 2>"$out/.sign.log" ||
    { cat "$out/.sign.log" >&2; die "cosign sign $ref"; }
  rm -f "$out/.sign.log"
}

# release SRC-DIR TARGET-DIR VERSION COMMIT OUT: everything but the build itself.
release() {
  local src=$1 target=$2 version=$3 commit=$4 out=$5 archive ref
  mkdir -p "$out"
  archive=$(CARGO_TARGET_DIR=$target bash "$REPO/hack/image.sh" archive)
  cp "$archive" "$out/byok-operator-$version.oci.tar"
  ref=$(BYOK_REGISTRY=$(registry) bash "$REPO/hack/image.sh" push "$archive" byok/byok-operator "$version" "$version-$commit")
  echo "$PUBLISHED_IMAGE@${ref#*@}" >"$out/byok-operator-$version.image"
  echo "$ref" >"$out/.pushed"
  package_chart "$src/charts/byok-operator" "$version" "${ref#*@}" "$out"
  sbom "$src" "$target" "$version" "$ref" "$out"
  plugin "$src" "$target" "$version" "$out"
  sign "$out" "$ref"
  log "release $version ($commit) in $out: $(cd "$out" && ls | tr '\n' ' ')"
}

cmd_current() {
  local version commit out
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -1)
  commit=$(git -C "$REPO" rev-parse --short=12 HEAD)
  if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
    [[ "${BYOK_RELEASE_DIRTY:-}" == "true" ]] || die "uncommitted changes (BYOK_RELEASE_DIRTY=true to release them anyway)"
    commit+=-dirty
  fi
  build_tools
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  (cd "$REPO" && cargo build --quiet --release --locked --bins)
  out=$REPO/target/release-artifacts/$version
  rm -rf "$out"
  release "$REPO" "$target" "$version" "$commit" "$out"
  echo "$out"
}

# The previous release from git history: a worktree of its commit, its own target dir, built once.
cmd_previous() {
  local out=$CACHE/releases/$PREVIOUS_VERSION-${PREVIOUS_COMMIT:0:12}
  if [[ -f $out/SHA256SUMS.sig ]]; then
    local ref
    ref=$(BYOK_REGISTRY=$(registry) bash "$REPO/hack/image.sh" push "$out/byok-operator-$PREVIOUS_VERSION.oci.tar" \
      byok/byok-operator "$PREVIOUS_VERSION" "$PREVIOUS_VERSION-${PREVIOUS_COMMIT:0:12}")
    [[ "${ref#*@}" == "$(cut -d@ -f2 "$out/byok-operator-$PREVIOUS_VERSION.image")" ]] || die "digest of the cached $out changed"
    echo "$ref" >"$out/.pushed"
    build_tools
    "$COSIGN" sign --yes --key "$(cosign_key)" --tlog-upload=false --allow-http-registry "$ref" >/dev/null 2>&1
    echo "$out"
    return 0
  fi
  build_tools
  local src=$CACHE/releases/src-${PREVIOUS_COMMIT:0:12} target=$CACHE/releases/target
  git -C "$REPO" cat-file -e "$PREVIOUS_COMMIT^{commit}" || die "commit $PREVIOUS_COMMIT is not in this clone"
  if [[ ! -d $src ]]; then
    git -C "$REPO" worktree prune
    git -C "$REPO" worktree add --detach "$src" "$PREVIOUS_COMMIT" >/dev/null 2>&1
  fi
  local start=$SECONDS
  log "building v$PREVIOUS_VERSION ($PREVIOUS_COMMIT) in $src (once; cached in $out)"
  (cd "$src" && CARGO_TARGET_DIR=$target cargo build --quiet --release --locked --bins)
  log "built v$PREVIOUS_VERSION in $((SECONDS - start))s"
  rm -rf "$out.tmp"
  release "$src" "$target" "$PREVIOUS_VERSION" "${PREVIOUS_COMMIT:0:12}" "$out.tmp"
  rm -rf "$out" && mv "$out.tmp" "$out"
  # Only the release directory is kept: the build (GBs) and the worktree are not needed again.
  rm -rf "$target" && git -C "$REPO" worktree remove --force "$src"
  echo "$out"
}

# What the README's Install section tells users to run, in a release directory.
cmd_verify() {
  local dir=${1:?release directory} ref
  build_tools
  (cd "$dir" && sha256sum --check --quiet SHA256SUMS) || die "checksums"
  "$COSIGN" verify-blob --key "$dir/cosign.pub" --signature "$dir/SHA256SUMS.sig" --insecure-ignore-tlog=true \
    "$dir/SHA256SUMS" >/dev/null 2>&1 || die "the signature of SHA256SUMS does not verify with cosign.pub"
  local krew
  for krew in "$dir"/byok-operator-*.krew.yaml; do # the plugin archive is the one the krew manifest names
    [[ -f "$krew" ]] || continue
    python3 - "$krew" "$dir" <<'PY' || die "$krew does not match its archive"
import hashlib, re, sys
text, d = open(sys.argv[1]).read(), sys.argv[2]
pairs = re.findall(r'(?m)^      uri: .*/([^/\s]+)\n      sha256: "([0-9a-f]{64})"', text)
if not pairs:
    sys.exit('no platform with uri and sha256')
for name, sha in pairs:
    if hashlib.sha256(open(f'{d}/{name}', 'rb').read()).hexdigest() != sha:
        sys.exit(f'{name}: sha256 differs')
PY
  done
  ref=${2:-$(cat "$dir/.pushed")} # where the image is (the published name, or a mirror holding its signature)
  "$COSIGN" verify --key "$dir/cosign.pub" --insecure-ignore-tlog=true --allow-http-registry "$ref" >/dev/null 2>&1 ||
    die "the signature of $ref does not verify with cosign.pub"
  log "verified $dir: checksums, SHA256SUMS.sig, the signature of $ref"
}

case "${1:-current}" in
  current) cmd_current ;;
  previous) cmd_previous ;;
  verify) cmd_verify "${2:-}" "${3:-}" ;;
  tools) build_tools ;;
  cosign) shift && build_tools && "$COSIGN" "$@" ;;
  *) echo "usage: $0 [current|previous|verify DIR|tools|cosign ARGS]" >&2; exit 2 ;;
esac
