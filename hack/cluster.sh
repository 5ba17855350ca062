#!/usr/bin/env bash
# Local Kubernetes control plane built from source (Go module proxy), no Docker.
#
#   hack/cluster.sh build   build etcd, kube-apiserver, kube-controller-manager, kubectl (cached by version)
#   hack/cluster.sh up      build if needed, start etcd + apiserver + controller-manager, write a kubeconfig
#   hack/cluster.sh down    stop every process `up` started (by pid), check no port is left listening
#   hack/cluster.sh restart-apiserver | restart-etcd
#                           stop that one process (SIGTERM) and start it again with the same ports, flags and
#                           data; returns once it serves again (BYOK_DOWN_SECONDS: stay down that long first;
#                           BYOK_RESTART_SIGNAL=KILL: a crash instead of a graceful stop, which takes the API server ~20 s)
#   hack/cluster.sh env     print `export KUBECONFIG=...` and friends for the running cluster
#   hack/cluster.sh bin     print the directory holding the binaries
#
# Environment:
#   KUBEBUILDER_ASSETS     a directory with etcd, kube-apiserver, kube-controller-manager, kubectl: used instead of building
#   BYOK_CACHE_DIR         where built binaries are cached (default ~/.cache/byok-operator)
#   BYOK_CLUSTER_DIR       state of the running cluster (default <repo>/target/cluster)
#   USE_EXISTING_CLUSTER   "true": `up` starts nothing and writes the env for $KUBECONFIG (a user's own cluster)
#   BYOK_NODE              "true" (or `up --node`): also build and start a node, hack/node.sh (kubelet, containerd, ...)
#                          and an OCI registry (the CNCF distribution registry, hack/registry) on 127.0.0.1 that
#                          the node's containerd pulls from over plain HTTP (`env` prints BYOK_REGISTRY=host:port)
#   BYOK_REGISTRY_START    "true": start the registry without a node
set -euo pipefail

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.16
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
STATE=${BYOK_CLUSTER_DIR:-$REPO/target/cluster}
BIN=$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
REGISTRY_VERSION=$(awk '$1 == "require" && $2 == "github.com/distribution/distribution/v3" {print $3}' "$REPO/hack/registry/go.mod")
REGISTRY_BIN=$CACHE/bin/registry-$REGISTRY_VERSION/registry

log() { printf '[cluster] %s\n' "$*" >&2; }

bin_dir() {
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" \
        && -x "$KUBEBUILDER_ASSETS/kube-controller-manager" ]]; then
    echo "$KUBEBUILDER_ASSETS"
  else
    echo "$BIN"
  fi
}

go_build() { # module-dir out-dir ldflags packages...
  local dir=$1 out=$2 ldflags=$3
  shift 3
  # The committed go.sum pins every module; GONOSUMDB lets a machine that cannot
  # reach the checksum database still build from it.
  (cd "$dir" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GONOSUMDB='k8s.io,go.etcd.io,sigs.k8s.io' \
    go build -trimpath -o "$out/" -ldflags "-s -w $ldflags" "$@")
}

cmd_build() {
  local dir
  dir=$(bin_dir)
  local want=(etcd kube-apiserver kube-controller-manager kubectl)
  local missing=()
  for b in "${want[@]}"; do [[ -x "$dir/$b" ]] || missing+=("$b"); done
  if [[ ${#missing[@]} -eq 0 ]]; then build_node; build_registry; return 0; fi # node: build_node
  command -v go >/dev/null || { log "go is required to build Kubernetes from source"; exit 1; }
  mkdir -p "$BIN.tmp"
  local start=$SECONDS
  local vpkg=k8s.io/component-base/version
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  ld+=" -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  log "building etcd $ETCD_VERSION (cold builds take a while on 2 cores)"
  go_build "$REPO/hack/etcd" "$BIN.tmp" "" .
  log "building Kubernetes $K8S_VERSION: kube-apiserver kube-controller-manager kubectl"
  go_build "$REPO/hack/k8s" "$BIN.tmp" "$ld" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  # node: keep node binaries already built (hack/node.sh) across a control-plane rebuild
  for b in kube-scheduler kube-proxy kubelet; do [[ -x "$BIN/$b" ]] && mv "$BIN/$b" "$BIN.tmp/"; done
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  log "built in $((SECONDS - start))s into $BIN"
  build_node # node
  build_registry
}

registry_wanted() { [[ "${BYOK_NODE:-}" == "true" || "${BYOK_REGISTRY_START:-}" == "true" ]]; }

# registry: the CNCF distribution registry of hack/registry/go.mod's pin, cached by version.
build_registry() {
  registry_wanted || return 0
  [[ -x "$REGISTRY_BIN" ]] && return 0
  command -v go >/dev/null || { log "go is required to build the registry"; exit 1; }
  local start=$SECONDS dir=${REGISTRY_BIN%/*}
  log "building the distribution registry $REGISTRY_VERSION (hack/registry)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (cd "$REPO/hack/registry" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$dir.tmp/registry" \
    -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" \
    github.com/distribution/distribution/v3/cmd/registry)
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "built the registry in $((SECONDS - start))s into $dir"
}

# registry: plain HTTP on loopback only (the containerd of hack/node.sh is a host process and pulls
# from it; hack/node.sh writes its hosts.toml). Storage in the state dir: a new cluster, an empty registry.
start_registry() {
  registry_wanted || return 0
  local port
  port=$(free_port)
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
EOF
  echo "$port" >"$STATE/registry.port"
  start registry env OTEL_TRACES_EXPORTER=none "$REGISTRY_BIN" serve "$STATE/registry/config.yml"
  wait_for registry 30 curl -fsS "http://127.0.0.1:$port/v2/"
  log "registry on 127.0.0.1:$port (plain HTTP, loopback)"
}

# node: with BYOK_NODE=true (or `up --node`), also build kube-scheduler, kube-proxy and kubelet of the
# same release into $BIN, and `up`/`down` start/stop a node with hack/node.sh.
build_node() {
  [[ "${BYOK_NODE:-}" == "true" ]] || return 0
  local pkgs=()
  for b in kube-scheduler kube-proxy kubelet; do [[ -x "$BIN/$b" ]] || pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  command -v go >/dev/null || { log "go is required to build Kubernetes from source"; exit 1; }
  local start=$SECONDS vpkg=k8s.io/component-base/version minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ld="-X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
  ld+=" -X $vpkg.buildDate=1970-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  log "building Kubernetes $K8S_VERSION node: ${pkgs[*]##*/} (kubelet takes minutes on 2 cores)"
  rm -rf "$BIN.node.tmp" && mkdir -p "$BIN" "$BIN.node.tmp"
  go_build "$REPO/hack/k8s" "$BIN.node.tmp" "$ld" "${pkgs[@]}"
  mv "$BIN.node.tmp"/* "$BIN/" && rmdir "$BIN.node.tmp"
  log "built node binaries in $((SECONDS - start))s into $BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

gen_certs() {
  local d=$STATE/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=byok-local-ca" 2>/dev/null
    cat > server.ext <<EOF
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1,IP:10.244.0.1
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 \
      -extfile server.ext 2>/dev/null
    echo "extendedKeyUsage=clientAuth" > client.ext
    client_cert() { # name CN O
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2/O=$3" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
        -extfile client.ext 2>/dev/null
    }
    client_cert admin admin system:masters
    client_cert controller-manager system:kube-controller-manager system:kube-controller-manager
    client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters # node: logs/exec via kubelet
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
}

write_kubeconfig() { # file user
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: byok-local
  cluster:
    server: https://127.0.0.1:$(cat "$STATE/apiserver.port")
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $STATE/pki/$2.crt
    client-key: $STATE/pki/$2.key
contexts:
- name: byok-local
  context: {cluster: byok-local, user: $2}
current-context: byok-local
EOF
}

start() { # name cmd...
  local name=$1
  shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then log "timed out waiting for $what"; cmd_down; exit 1; fi
    sleep 0.2
  done
}

# etcd and the API server, from the ports and settings `up` wrote under $STATE (so a restart is the same process).
start_etcd() {
  local dir etcd_port peer_port
  dir=$(bin_dir); etcd_port=$(cat "$STATE/etcd.port"); read -r peer_port _ <"$STATE/other.ports"
  start etcd "$dir/etcd" --name=byok-local --data-dir="$STATE/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="byok-local=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
}

start_apiserver() {
  local dir pki=$STATE/pki etcd_port api_port bind advertise reconciler
  dir=$(bin_dir); etcd_port=$(cat "$STATE/etcd.port"); api_port=$(cat "$STATE/apiserver.port")
  read -r bind advertise reconciler <"$STATE/apiserver.net"
  start kube-apiserver "$dir/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="$bind" --secure-port="$api_port" --advertise-address="$advertise" \
    --cert-dir="$STATE/apiserver-certs" --tls-cert-file="$pki/server.crt" --tls-private-key-file="$pki/server.key" \
    --client-ca-file="$pki/ca.crt" --authorization-mode=RBAC,Node \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" --api-audiences=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --endpoint-reconciler-type="$reconciler" \
    --enable-priority-and-fairness=false --storage-media-type=application/json \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP # node: hack/node.sh
}

apiserver_ready() {
  local pki=$STATE/pki
  curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$(cat "$STATE/apiserver.port")/readyz"
}

# Stops one process of the control plane by its pid and starts it again: same ports, flags and data.
cmd_restart() { # etcd | kube-apiserver
  local name=$1 pid start=$SECONDS
  [[ -f "$STATE/$name.pid" ]] || { log "$name is not running under $STATE"; exit 1; }
  pid=$(cat "$STATE/$name.pid")
  kill -"${BYOK_RESTART_SIGNAL:-TERM}" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS > deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
  sleep "${BYOK_DOWN_SECONDS:-0}"
  if [[ "$name" == etcd ]]; then
    start_etcd
    wait_for etcd 30 curl -fsS "http://127.0.0.1:$(cat "$STATE/etcd.port")/health"
  else
    start_apiserver
  fi
  wait_for kube-apiserver 90 apiserver_ready
  log "$name restarted: serving again $((SECONDS - start))s after the stop"
}

cmd_up() {
  if [[ "${USE_EXISTING_CLUSTER:-}" == "true" ]]; then
    [[ -n "${KUBECONFIG:-}" ]] || { log "USE_EXISTING_CLUSTER=true needs KUBECONFIG"; exit 1; }
    mkdir -p "$STATE"
    echo "$KUBECONFIG" >"$STATE/existing"
    log "using the existing cluster of $KUBECONFIG"
    return 0
  fi
  if [[ -f "$STATE/kube-apiserver.pid" ]] && kill -0 "$(cat "$STATE/kube-apiserver.pid")" 2>/dev/null; then
    log "already running (hack/cluster.sh down first)"
    if [[ "${BYOK_NODE:-}" == "true" ]]; then "$REPO/hack/node.sh" up; fi # node: idempotent
    return 0
  fi
  cmd_build
  local dir start=$SECONDS
  dir=$(bin_dir)
  if [[ -d "$STATE/node" ]]; then "$REPO/hack/node.sh" down; fi # node: no mount or container under $STATE
  rm -rf "$STATE" && mkdir -p "$STATE"
  gen_certs
  local etcd_port peer_port api_port kcm_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
  echo "$etcd_port" >"$STATE/etcd.port"; echo "$api_port" >"$STATE/apiserver.port"
  echo "$peer_port $kcm_port" >"$STATE/other.ports"
  start_etcd
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
  local pki=$STATE/pki
  # in-cluster: with a node, pods reach the API server through the `kubernetes` Service, whose
  # endpoint is the node's bridge address (10.244.0.1, the host); so listen beyond loopback.
  if [[ "${BYOK_NODE:-}" == "true" ]]; then echo "0.0.0.0 10.244.0.1 lease"; else echo "127.0.0.1 127.0.0.1 none"; fi \
    >"$STATE/apiserver.net"
  start_apiserver
  write_kubeconfig "$STATE/kubeconfig" admin
  write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
  wait_for kube-apiserver 90 apiserver_ready
  start kube-controller-manager "$dir/kube-controller-manager" --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route,-persistentvolume-binder'
  wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  # The default ServiceAccount appearing shows the controllers are really working.
  wait_for "default ServiceAccount" 60 "$dir/kubectl" --kubeconfig="$STATE/kubeconfig" -n default get serviceaccount default
  start_registry # before the node: its containerd is configured for the registry's port
  log "up in $((SECONDS - start))s: export KUBECONFIG=$STATE/kubeconfig"
  if [[ "${BYOK_NODE:-}" == "true" ]]; then "$REPO/hack/node.sh" up; fi # node
}

cmd_down() {
  [[ -d "$STATE" ]] || return 0
  if [[ -d "$STATE/node" ]]; then "$REPO/hack/node.sh" down; fi # node: pods and node processes first
  rm -f "$STATE/existing"
  local pids=()
  for n in registry kube-controller-manager kube-apiserver etcd; do
    [[ -f "$STATE/$n.pid" ]] || continue
    local pid
    pid=$(cat "$STATE/$n.pid")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    rm -f "$STATE/$n.pid"
  done
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS > deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
      sleep 0.1
    done
  done
  local ports=""
  for f in etcd.port apiserver.port other.ports registry.port; do [[ -f "$STATE/$f" ]] && ports+=" $(cat "$STATE/$f")"; done
  for p in $ports; do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1',$p))==0 else 1)"; then
      log "port $p is still listening after down"; exit 1
    fi
  done
  log "down"
}

cmd_env() {
  if [[ -f "$STATE/existing" ]]; then
    echo "export KUBECONFIG=$(cat "$STATE/existing")"
  else
    echo "export KUBECONFIG=$STATE/kubeconfig"
    echo "export BYOK_ETCD_ENDPOINT=http://127.0.0.1:$(cat "$STATE/etcd.port")"
    if [[ -f "$STATE/registry.port" ]]; then echo "export BYOK_REGISTRY=127.0.0.1:$(cat "$STATE/registry.port")"; fi
  fi
  echo "export PATH=$(bin_dir):\$PATH"
}

if [[ "${2:-}" == "--node" ]]; then export BYOK_NODE=true; fi # node: `up --node`, `build --node`
case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  bin) bin_dir ;;
  restart-apiserver) cmd_restart kube-apiserver ;;
  restart-etcd) cmd_restart etcd ;;
  *) echo "usage: $0 build|up|down|env|bin|restart-apiserver|restart-etcd" >&2; exit 2 ;;
esac
