#!/usr/bin/env bash
# Container images without Docker: built with buildah (Debian package), saved as OCI archives in the
# cache. The operator image is pushed (skopeo, Debian package) to the cluster's registry (hack/cluster.sh
# starts one with the node), from which the node's containerd pulls it like any cluster; pause and
# busybox, the node's own images, are imported into its containerd (namespace k8s.io).
#
#   hack/image.sh pause       static pause program (hack/pause/pause.c) -> localhost/byok/pause:3.10
#   hack/image.sh operator    target/release/{byok-operator,byok-judge} -> <registry>/byok/byok-operator,
#                             tagged <version> and <version>-<commit>[-dirty] (Cargo.toml, git), pushed to
#                             the running cluster's registry; its reference by digest is written to
#                             $BYOK_CLUSTER_DIR/operator.image (the tests and the demo read it)
#                             (uid 65532, no shell); same layout as the repo's Dockerfile, which builds
#                             it for users with Docker. The production image: build the binaries
#                             with `cargo build --release --bins` (no `mock` feature), then run this.
#                             The mock provider is a test double and is never in it (the tests run
#                             it in process, listening on the node's bridge).
#   hack/image.sh archive     the operator image's OCI archive only (built from $CARGO_TARGET_DIR/release); prints its path
#   hack/image.sh busybox     Debian's static busybox (package busybox-static) -> localhost/byok/busybox:dev,
#                             a test image with sh, nslookup, wget for hack/node.sh smoke
#   hack/image.sh import F    import the OCI archive F into the running node's containerd
#   hack/image.sh push F REPO TAG...   push the OCI archive F to <registry>/REPO:TAG for each TAG; prints
#                             REPO@sha256:... (REPO may name its registry: host[:port]/path)
#
# Environment: BYOK_CACHE_DIR (default ~/.cache/byok-operator), BYOK_CLUSTER_DIR (default
# <repo>/target/cluster; the node's containerd socket is $BYOK_CLUSTER_DIR/node/run/containerd.sock),
# BYOK_REGISTRY (host:port of the registry to push to; default: the running cluster's, hack/cluster.sh env).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
# Where cargo put the release binaries (CARGO_TARGET_DIR when set, as in CI).
RELEASE_DIR=${CARGO_TARGET_DIR:-$REPO/target}/release
STATE=${BYOK_CLUSTER_DIR:-$REPO/target/cluster}
IMAGES=$CACHE/images
PAUSE_IMAGE=localhost/byok/pause:3.10
OPERATOR_IMAGE=localhost/byok/byok-operator:dev
BUSYBOX_IMAGE=localhost/byok/busybox:dev
SOCK=$STATE/node/run/containerd.sock
OPERATOR_REPO=byok/byok-operator

log() { printf '[image] %s\n' "$*" >&2; }

# buildah keeps its own storage in the cache (vfs: plain directories, no mounts left behind), so
# nothing is written to /var/lib/containers.
bh() { buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver vfs "$@"; }

apt_install() { # packages... (idempotent: only the missing ones)
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
need_buildah() { apt_install buildah; }

registry() { # host:port of the registry to push to
  if [[ -n "${BYOK_REGISTRY:-}" ]]; then echo "$BYOK_REGISTRY"; return; fi
  [[ -f "$STATE/registry.port" ]] || return 1
  echo "127.0.0.1:$(cat "$STATE/registry.port")"
}

# The version (Cargo.toml) and the commit the image is built from; -dirty when the work tree differs.
version_tags() {
  local version commit
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -1)
  commit=$(git -C "$REPO" rev-parse --short=12 HEAD)
  [[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]] || commit+=-dirty
  echo "$version $version-$commit"
}

# push ARCHIVE REPO TAG...: to the registry (plain HTTP only on loopback), then prints REPO@digest.
push() {
  local archive=$1 repo=$2 digest tag
  shift 2
  apt_install skopeo
  local first=${repo%%/*} reg
  if [[ $repo != */* || ($first != *.* && $first != *:* && $first != localhost) ]]; then # no registry named
    reg=$(registry) || { log "no registry: hack/cluster.sh up with BYOK_NODE=true (or set BYOK_REGISTRY)"; exit 1; }
    repo=$reg/$repo
  fi
  local tls=true
  [[ $repo == 127.0.0.1:* || $repo == localhost:* ]] && tls=false
  for tag in "$@"; do
    skopeo copy --quiet --dest-tls-verify="$tls" --digestfile "$archive.digest" "oci-archive:$archive" \
      "docker://$repo:$tag" >&2
  done
  digest=$(cat "$archive.digest") && rm -f "$archive.digest"
  log "pushed $repo:{$(IFS=,; echo "$*")} ($digest)"
  echo "$repo@$digest"
}

import() { # archive: into the node's containerd if it runs
  if [[ ! -S "$SOCK" ]] || ! ctr --address "$SOCK" version >/dev/null 2>&1; then
    log "no containerd at $SOCK: $1 is kept, hack/node.sh up imports it"
    return 0
  fi
  # --snapshotter must match the CRI plugin's (hack/node.sh writes it to $STATE/node/snapshotter).
  ctr --address "$SOCK" -n k8s.io images import --snapshotter "$(cat "$STATE/node/snapshotter")" \
    --no-unpack=false "$1" >/dev/null
  log "imported $1 into containerd (k8s.io)"
}

# archive path for an image name and a hash of its inputs: rebuilt only when the inputs change
archive_for() { echo "$IMAGES/$1-$2.oci.tar"; }

# after a build: drop older archives of the same image and buildah's copy (the archive is what is kept)
prune() { # name-prefix kept-archive image
  find "$IMAGES" -name "$1-*.oci.tar" ! -path "$2" -delete
  bh rmi "$3" >/dev/null 2>&1 || true
}

build_pause() {
  local src=$REPO/hack/pause/pause.c hash
  hash=$(sha256sum "$src" | cut -c1-16)
  local out
  out=$(archive_for pause-3.10 "$hash")
  if [[ ! -f "$out" ]]; then
    need_buildah
    mkdir -p "$IMAGES"
    local tmp
    tmp=$(mktemp -d)
    cc -Os -static -s -o "$tmp/pause" "$src"
    local c
    c=$(bh from scratch)
    bh copy --chmod 0755 "$c" "$tmp/pause" /pause >/dev/null
    bh config --entrypoint '["/pause"]' --user 65535:65535 --stop-signal SIGTERM \
      --label org.opencontainers.image.source=hack/pause/pause.c "$c"
    bh commit --quiet --timestamp 0 --rm "$c" "$PAUSE_IMAGE" >/dev/null
    rm -f "$out.tmp"
    bh push --quiet "$PAUSE_IMAGE" "oci-archive:$out.tmp:$PAUSE_IMAGE"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
    prune pause-3.10 "$out" "$PAUSE_IMAGE"
    log "built $PAUSE_IMAGE -> $out"
  fi
  echo "$out" >"$IMAGES/pause.latest"
  import "$out"
}

# Operator image. Layout (kept in step with ../Dockerfile, whose runtime stage is distroless
# cc-debian12:nonroot: glibc + libgcc, /etc/passwd with nonroot=65532, CA certificates, no shell):
#   /usr/local/bin/byok-operator, byok-judge   (release binaries, debug info stripped)
#   the shared libraries `ldd` lists for them, copied from this Debian 12 host (glibc 2.36,
#   the same as distroless cc-debian12), at the paths ldd resolves
#   /etc/passwd, /etc/group (root, nonroot 65532), /etc/nsswitch.conf, /etc/ssl/certs/ca-certificates.crt
#   /tmp (1777), /home/nonroot (65532); USER 65532:65532; ENTRYPOINT byok-operator
operator_archive() { # builds the OCI archive (when its binaries changed) and prints its path
  local bins=(byok-operator byok-judge) b
  for b in "${bins[@]}"; do
    [[ -x "$RELEASE_DIR/$b" ]] || { log "target/release/$b missing: cargo build --release --bins"; exit 1; }
  done
  need_buildah
  local hash
  hash=$(cd "$RELEASE_DIR" && sha256sum "${bins[@]}" | sha256sum | cut -c1-16)
  local out
  out=$(archive_for byok-operator-dev "$hash")
  if [[ ! -f "$out" ]]; then
    mkdir -p "$IMAGES"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/root/usr/local/bin" "$tmp/root/etc/ssl/certs" "$tmp/root/tmp" "$tmp/root/home/nonroot"
    for b in "${bins[@]}"; do
      strip --strip-debug -o "$tmp/root/usr/local/bin/$b" "$RELEASE_DIR/$b"
    done
    # glibc-linked (the machine has no musl target installed): ship exactly what ldd resolves.
    local lib
    for lib in $(for b in "${bins[@]}"; do ldd "$RELEASE_DIR/$b"; done |
      awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
      mkdir -p "$tmp/root$(dirname "$lib")"
      cp -L "$lib" "$tmp/root$lib"
    done
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
      >"$tmp/root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$tmp/root/etc/group"
    printf 'hosts: files dns\n' >"$tmp/root/etc/nsswitch.conf"
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
      cp /etc/ssl/certs/ca-certificates.crt "$tmp/root/etc/ssl/certs/"
    fi
    chmod 1777 "$tmp/root/tmp"
    local c
    c=$(bh from scratch)
    bh copy "$c" "$tmp/root/" / >/dev/null
    bh copy --chown 65532:65532 "$c" "$tmp/root/home/nonroot" /home/nonroot >/dev/null
    bh config --user 65532:65532 --workingdir /home/nonroot --entrypoint '["/usr/local/bin/byok-operator"]' \
      --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
    bh commit --quiet --timestamp 0 --rm "$c" "$OPERATOR_IMAGE" >/dev/null
    rm -f "$out.tmp"
    bh push --quiet "$OPERATOR_IMAGE" "oci-archive:$out.tmp:$OPERATOR_IMAGE"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
    prune byok-operator-dev "$out" "$OPERATOR_IMAGE"
    log "built $OPERATOR_IMAGE -> $out ($(du -h "$out" | cut -f1))"
  fi
  echo "$out"
}

build_operator() {
  local out
  out=$(operator_archive)
  echo "$out" >"$IMAGES/operator.latest"
  if ! registry >/dev/null; then
    log "no registry running: $out is kept (hack/cluster.sh up with BYOK_NODE=true starts one)"
    return 0
  fi
  local tags ref
  read -r -a tags <<<"$(version_tags)"
  ref=$(push "$out" "$OPERATOR_REPO" "${tags[@]}")
  echo "$ref" >"$STATE/operator.image"
  echo "$ref"
}

build_busybox() {
  apt_install busybox-static
  # applets the smoke test uses, one hard link each (`busybox --install` would need /proc of the image)
  local applets=(sh cat ls nslookup wget httpd sleep echo grep mount id hostname) hash
  hash=$( (sha256sum /bin/busybox; echo "${applets[*]}") | sha256sum | cut -c1-16)
  local out
  out=$(archive_for busybox-dev "$hash")
  if [[ ! -f "$out" ]]; then
    need_buildah
    mkdir -p "$IMAGES"
    local tmp c
    tmp=$(mktemp -d)
    mkdir -p "$tmp/root/bin" "$tmp/root/tmp" "$tmp/root/etc"
    cp /bin/busybox "$tmp/root/bin/busybox"
    for a in "${applets[@]}"; do ln "$tmp/root/bin/busybox" "$tmp/root/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/root/etc/passwd"
    chmod 1777 "$tmp/root/tmp"
    c=$(bh from scratch)
    bh copy "$c" "$tmp/root/" / >/dev/null
    bh config --cmd '["/bin/sh"]' --env PATH=/bin "$c"
    bh commit --quiet --timestamp 0 --rm "$c" "$BUSYBOX_IMAGE" >/dev/null
    rm -f "$out.tmp"
    bh push --quiet "$BUSYBOX_IMAGE" "oci-archive:$out.tmp:$BUSYBOX_IMAGE"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
    prune busybox-dev "$out" "$BUSYBOX_IMAGE"
    log "built $BUSYBOX_IMAGE -> $out"
  fi
  echo "$out" >"$IMAGES/busybox.latest"
  import "$out"
}

case "${1:-}" in
  pause) build_pause ;;
  busybox) build_busybox ;;
  operator) build_operator ;;
  archive) operator_archive ;;
  import) import "${2:?archive}" ;;
  push) shift && push "${1:?archive}" "${2:?repository}" "${@:3}" ;;
  *) echo "usage: $0 pause|operator|busybox|import ARCHIVE|push ARCHIVE REPO TAG..." >&2; exit 2 ;;
esac
