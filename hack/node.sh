#!/usr/bin/env bash
# A real node for the local control plane of hack/cluster.sh, on this machine, no Docker:
# containerd + runc (Debian packages) with a CNI bridge, kubelet, kube-proxy (iptables mode),
# kube-scheduler, and CoreDNS as a host process serving cluster.local behind the kube-dns Service.
#
#   hack/node.sh prereqs   install the Debian packages the node needs (idempotent)
#   hack/node.sh build     build kube-scheduler, kube-proxy, kubelet (hack/cluster.sh) and CoreDNS (cached)
#   hack/node.sh up        start the node against the running control plane (same BYOK_CLUSTER_DIR)
#   hack/node.sh down      stop pods, containers, every process `up` started (by pid), unmount, remove
#                          the bridge, iptables rules and cgroups it made
#   hack/node.sh smoke     run pods: emptyDir tmpfs, logs, exec, a Service name through the cluster DNS
#
# Usually driven by `BYOK_NODE=true hack/cluster.sh up` / `hack/cluster.sh up --node` and `hack/cluster.sh down`.
#
# Addresses (none overlaps the machine's own interfaces; all of them live on the bridge this script makes):
#   pod CIDR 10.244.0.0/24 on bridge byok0; 10.244.0.1 is the bridge, the node IP, kubelet and CoreDNS
#   service CIDR 10.0.0.0/24 (kube-apiserver's), cluster DNS 10.0.0.10 -> CoreDNS on 10.244.0.1:53
# Pods can reach each other, the node and Services; a FORWARD guard drops anything else they send.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_VERSION=$(sed -n 's/^K8S_VERSION=//p' "$REPO/hack/cluster.sh")
ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' "$REPO/hack/cluster.sh")
COREDNS_VERSION=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$REPO/hack/coredns/go.mod")
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
STATE=${BYOK_CLUSTER_DIR:-$REPO/target/cluster}
NODE=$STATE/node
NODE_NAME=byok-node
POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
BRIDGE=byok0
DNS_IP=10.0.0.10
GUARD=BYOK-NODE-GUARD
PAUSE_IMAGE=localhost/byok/pause:3.10
SOCK=$NODE/run/containerd.sock
PROCS=(coredns kube-proxy kubelet kube-scheduler containerd) # stop order
# One node per machine (fixed bridge, addresses, kubepods cgroups): the state dir owning it is written here.
OWNER=/run/byok-node.state

log() { printf '[node] %s\n' "$*" >&2; }

BIN=$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION # kubelet & co. live in hack/cluster.sh's cache dir
# CoreDNS: rebuilt when its wrapper module (plugin list, pins) changes
COREDNS_BIN=$CACHE/bin/coredns-$COREDNS_VERSION-$(cat "$REPO"/hack/coredns/{main.go,go.mod,go.sum} | sha256sum | cut -c1-12)

kubectl() {
  local k=$BIN/kubectl
  [[ -x $k ]] || k=$("$REPO/hack/cluster.sh" bin)/kubectl # KUBEBUILDER_ASSETS
  "$k" --kubeconfig="$STATE/kubeconfig" "$@"
}

cmd_prereqs() {
  local want=(containerd runc containernetworking-plugins iptables conntrack buildah busybox-static iproute2 util-linux gcc libc6-dev)
  local missing=() p
  for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_build() {
  BYOK_NODE=true "$REPO/hack/cluster.sh" build
  if [[ ! -x "$COREDNS_BIN/coredns" ]]; then
    local start=$SECONDS
    log "building CoreDNS $COREDNS_VERSION (hack/coredns)"
    rm -rf "$COREDNS_BIN.tmp" && mkdir -p "$COREDNS_BIN.tmp"
    (cd "$REPO/hack/coredns" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
      go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN.tmp/coredns" .)
    rm -rf "$COREDNS_BIN" && mv "$COREDNS_BIN.tmp" "$COREDNS_BIN"
    log "built CoreDNS in $((SECONDS - start))s"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name cmd... ; own session so that a terminal's signals do not reach it
  local name=$1
  shift
  setsid "$@" >"$NODE/$name.log" 2>&1 </dev/null &
  echo $! >"$NODE/$name.pid"
}

wait_for() { # what seconds cmd...
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then log "timed out waiting for $what (logs in $NODE)"; return 1; fi
    sleep 0.2
  done
}

node_certs() {
  local d=$STATE/pki
  (
    cd "$d"
    client_cert() { # name CN O
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2/O=$3" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
        -extfile client.ext 2>/dev/null
    }
    [[ -f kube-scheduler.crt ]] || client_cert kube-scheduler system:kube-scheduler system:kube-scheduler
    [[ -f kube-proxy.crt ]] || client_cert kube-proxy system:kube-proxy system:node-proxier
    [[ -f kubelet.crt ]] || client_cert kubelet "system:node:$NODE_NAME" system:nodes
    [[ -f coredns.crt ]] || client_cert coredns system:coredns byok:coredns
    if [[ ! -f kubelet-serving.crt ]]; then
      printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' \
        "$NODE_IP" "$NODE_NAME" >kubelet-serving.ext
      openssl req -newkey rsa:2048 -nodes -keyout kubelet-serving.key -out kubelet-serving.csr \
        -subj "/CN=$NODE_NAME" 2>/dev/null
      openssl x509 -req -in kubelet-serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out kubelet-serving.crt -days 3650 -extfile kubelet-serving.ext 2>/dev/null
    fi
    rm -f ./*.csr
  )
}

write_kubeconfig() { # file user
  cat >"$1" <<EOF
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

snapshotter() { # overlayfs where the kernel and the state dir's filesystem allow it, else native
  if [[ -n "${BYOK_SNAPSHOTTER:-}" ]]; then echo "$BYOK_SNAPSHOTTER"; return; fi
  local t=$NODE/overlay-check
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"; rm -rf "$t"; echo overlayfs
  else
    rm -rf "$t"; echo native
  fi
}

write_configs() {
  local snap=$1 kubelet_port=$2 kubelet_healthz=$3 proxy_healthz=$4 proxy_metrics=$5 dns_health=$6 dns_ready=$7
  mkdir -p "$NODE/cni" "$NODE/run" "$NODE/containerd" "$NODE/kubelet" "$NODE/pod-logs"
  cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$NODE/run/containerd.sock.ttrpc"
[debug]
  address = "$NODE/run/containerd-debug.sock"
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This sandbox denies CAP_SYS_RESOURCE: lowering oom_score_adj (the pause container's -998) fails in runc
  # ("failed to update /proc/self/oom_score_adj: Permission denied"); keep scores >= containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$snap"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE/certs.d"
EOF
  write_registry_hosts
  cat >"$NODE/cni/10-byok.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "byok",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE/cni-ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  : >"$NODE/resolv.conf" # pods get only the cluster DNS, none of the host's resolvers or search domains
  cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $NODE/resolv.conf
registerNode: true
podLogsDir: $NODE/pod-logs
volumePluginDir: $NODE/kubelet/volume-plugins
rotateCertificates: false
serverTLSBootstrap: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
maxPods: 50
EOF
  cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, syncPeriod: 10s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat >"$NODE/Corefile" <<EOF
cluster.local:53 {
  bind $NODE_IP
  errors
  health 127.0.0.1:$dns_health
  ready 127.0.0.1:$dns_ready
  kubernetes cluster.local {
    kubeconfig $STATE/coredns.kubeconfig byok-local
    pods insecure
    ttl 5
  }
  cache 5
}
.:53 {
  bind $NODE_IP
  errors
  template ANY ANY {
    rcode NXDOMAIN
  }
}
EOF
}

# registry: containerd pulls images named <registry host:port>/... from the cluster's registry
# (hack/cluster.sh) over plain HTTP; it listens on loopback only, and containerd is a host process.
write_registry_hosts() {
  rm -rf "$NODE/certs.d"
  [[ -f "$STATE/registry.port" ]] || return 0
  local host
  host=127.0.0.1:$(cat "$STATE/registry.port")
  mkdir -p "$NODE/certs.d/$host"
  cat >"$NODE/certs.d/$host/hosts.toml" <<EOF
server = "http://$host"

[host."http://$host"]
  capabilities = ["pull", "resolve"]
EOF
}

# RBAC for CoreDNS, and the kube-dns Service whose endpoint is the CoreDNS host process on the bridge.
apply_dns_objects() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "byok:coredns"}
rules:
- apiGroups: [""]
  resources: [services, pods, namespaces, endpoints]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "byok:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "byok:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $DNS_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: byok-node.sh}
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
  nodeName: $NODE_NAME
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

guard_rules() { # add|del: keep pods from sending anything beyond the bridge
  local op=$1
  if [[ $op == add ]]; then
    iptables -w -N "$GUARD" 2>/dev/null || iptables -w -F "$GUARD"
    iptables -w -A "$GUARD" -i "$BRIDGE" -o "$BRIDGE" -j RETURN
    iptables -w -A "$GUARD" -s "$POD_CIDR" -j DROP
    iptables -w -A "$GUARD" -d "$POD_CIDR" -j DROP
    while iptables -w -D FORWARD -j "$GUARD" 2>/dev/null; do :; done
    iptables -w -I FORWARD 1 -j "$GUARD" # first, before kube-proxy's chains
  else
    while iptables -w -D FORWARD -j "$GUARD" 2>/dev/null; do :; done
    iptables -w -F "$GUARD" 2>/dev/null || true
    iptables -w -X "$GUARD" 2>/dev/null || true
  fi
}

import_image() { # archive
  ctr --address "$SOCK" -n k8s.io images import --snapshotter "$(cat "$NODE/snapshotter")" "$1" >/dev/null
}

cmd_up() {
  if ! { [[ -f "$STATE/kube-apiserver.pid" ]] && kill -0 "$(cat "$STATE/kube-apiserver.pid")" 2>/dev/null; }; then
    log "no control plane in $STATE: hack/cluster.sh up first"
    exit 1
  fi
  if [[ -f "$NODE/kubelet.pid" ]] && kill -0 "$(cat "$NODE/kubelet.pid")" 2>/dev/null; then
    log "already running (hack/node.sh down first)"
    return 0
  fi
  if [[ -f $OWNER && "$(cat "$OWNER")" != "$STATE" ]] && [[ -f "$(cat "$OWNER")/node/kubelet.pid" ]] &&
     kill -0 "$(cat "$(cat "$OWNER")/node/kubelet.pid")" 2>/dev/null; then
    log "a node of $(cat "$OWNER") runs on this machine: BYOK_CLUSTER_DIR=$(cat "$OWNER") hack/node.sh down first"
    exit 1
  fi
  cmd_prereqs
  cmd_build
  local start=$SECONDS
  cmd_down_quiet # what a killed node left behind
  echo "$STATE" >"$OWNER"
  "$REPO/hack/image.sh" pause >/dev/null 2>&1 || "$REPO/hack/image.sh" pause # builds once, cached
  mkdir -p "$NODE"
  node_certs
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$STATE/kube-proxy.kubeconfig" kube-proxy
  write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet
  write_kubeconfig "$STATE/coredns.kubeconfig" coredns
  local snap kubelet_port kubelet_healthz proxy_healthz proxy_metrics dns_health dns_ready sched_port
  snap=$(snapshotter)
  echo "$snap" >"$NODE/snapshotter"
  kubelet_port=$(free_port); kubelet_healthz=$(free_port); proxy_healthz=$(free_port); proxy_metrics=$(free_port)
  dns_health=$(free_port); dns_ready=$(free_port); sched_port=$(free_port)
  echo "$kubelet_port $kubelet_healthz $proxy_healthz $proxy_metrics $dns_health $dns_ready $sched_port" >"$NODE/ports"
  write_configs "$snap" "$kubelet_port" "$kubelet_healthz" "$proxy_healthz" "$proxy_metrics" "$dns_health" "$dns_ready"

  # The bridge exists before CNI's first pod: it carries the node IP that kubelet and CoreDNS bind.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  [[ -f "$NODE/ip_forward.orig" ]] || cat /proc/sys/net/ipv4/ip_forward >"$NODE/ip_forward.orig"
  echo 1 >/proc/sys/net/ipv4/ip_forward # Service -> pod DNAT on the bridge is routed
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || true
  guard_rules add

  start containerd containerd --config "$NODE/containerd.toml"
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false
  wait_for containerd 30 ctr --address "$SOCK" version
  import_image "$(cat "$CACHE/images/pause.latest")"
  local f
  for f in busybox; do # the node's test image; the operator image is pulled from the registry
    [[ -f "$CACHE/images/$f.latest" && -f "$(cat "$CACHE/images/$f.latest")" ]] && import_image "$(cat "$CACHE/images/$f.latest")"
  done
  start kubelet "$BIN/kubelet" --config="$NODE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$NODE/kubelet" --cert-dir="$NODE/kubelet/pki" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$NODE/kube-proxy.yaml" --v=1
  apply_dns_objects
  start coredns "$COREDNS_BIN/coredns" -conf "$NODE/Corefile"
  wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  wait_for kube-proxy 60 curl -fsS "http://127.0.0.1:$proxy_healthz/healthz"
  wait_for coredns 60 curl -fsS "http://127.0.0.1:$dns_ready/ready"
  wait_for "node $NODE_NAME Ready" 90 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  # kubelet registers the node with the not-ready taint; the node lifecycle controller that would lift it
  # once Ready is off in hack/cluster.sh's controller-manager, so it is lifted here.
  kubectl taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  guard_rules add # first in FORWARD again, after kube-proxy's own jump
  log "node $NODE_NAME up in $((SECONDS - start))s (snapshotter $snap)"
}

pids_of_shims() { # containerd shims serving our containerd (their command line names our socket)
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "-address $SOCK " && echo "${p#/proc/}"
  done
  return 0
}

stop_pid() { # pid...: TERM, then KILL after 15 s
  local pid deadline=$((SECONDS + 15))
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS > deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
      sleep 0.1
    done
  done
}

# What the node set up machine-wide: pods' network namespaces, the bridge, iptables, ip_forward, cgroups and
# the fixed paths of kubelet, libcni and the shims. Only by the state dir that owns the machine's node.
cleanup_machine() {
  local id
  # 5. Network namespaces CNI made for our pods (their interface is in the pod CIDR), the bridge.
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    if ip netns exec "$ns" ip -4 -o addr 2>/dev/null | grep -q " ${POD_CIDR%.*}\."; then ip netns delete "$ns"; fi
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  # 6. iptables: kube-proxy's rules, kubelet's chains, the guard.
  if [[ -x "$BIN/kube-proxy" ]] && iptables -w -t nat -S 2>/dev/null | grep -q '^-N KUBE-'; then
    "$BIN/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
  fi
  local tbl chain
  for tbl in filter nat mangle; do
    for chain in $(iptables -w -t "$tbl" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      iptables -w -t "$tbl" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && $0 ~ ("-j " c "( |$)") {sub(/^-A/, "-D"); print}' |
        while read -r rule; do eval "iptables -w -t $tbl $rule" 2>/dev/null || true; done
    done
    for chain in $(iptables -w -t "$tbl" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      iptables -w -t "$tbl" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "$tbl" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
      iptables -w -t "$tbl" -X "$chain" 2>/dev/null || true
    done
  done
  guard_rules del
  [[ -f "$NODE/ip_forward.orig" ]] && cat "$NODE/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward && rm -f "$NODE/ip_forward.orig"
  # 7. cgroups kubelet and runc made (cgroup v1: one tree per controller), deepest first.
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$c" ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # 8. What kubelet, libcni and the shims keep at fixed paths: kubelet's log symlinks into our state dir and
  # its device-plugin socket, libcni's cached results for our network, the shims' directories; each
  # directory only when nothing else is left in it.
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
  rmdir /var/log/containers 2>/dev/null || true
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  local r
  for r in /var/lib/cni/results/byok-*; do
    [[ -e $r ]] || continue
    id=${r#/var/lib/cni/results/byok-}; id=${id%-eth0}
    rm -f "$r" "/var/lib/cni/results/cni-loopback-$id-lo"
  done
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # the shims' and runc's fixed directories, when nothing else uses them
  rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null || true
}

cmd_down_quiet() { cmd_down >/dev/null 2>&1 || true; }

cmd_down() {
  [[ -d "$NODE" ]] || return 0
  # 1. Pods: deleted through the API while kubelet runs, so that it stops them and CNI releases their IPs.
  if [[ -f "$NODE/kubelet.pid" ]] && kill -0 "$(cat "$NODE/kubelet.pid")" 2>/dev/null &&
     kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && ctr --address "$SOCK" -n k8s.io tasks ls 2>/dev/null | grep -q ' RUNNING$'; do
      sleep 0.3
    done
    kubectl delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  # 2. The node's processes, by pid.
  local n pid pids=()
  for n in "${PROCS[@]}"; do
    [[ $n == containerd ]] && continue
    [[ -f "$NODE/$n.pid" ]] || continue
    pid=$(cat "$NODE/$n.pid")
    kill -0 "$pid" 2>/dev/null && pids+=("$pid")
  done
  stop_pid "${pids[@]}"
  # 3. Containers kubelet did not stop: killed through containerd, then containerd and its shims.
  if [[ -S "$SOCK" ]] && ctr --address "$SOCK" version >/dev/null 2>&1; then
    local t
    for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for t in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
    done
  fi
  pids=()
  [[ -f "$NODE/containerd.pid" ]] && kill -0 "$(cat "$NODE/containerd.pid")" 2>/dev/null && pids+=("$(cat "$NODE/containerd.pid")")
  stop_pid "${pids[@]}"
  # Containers whose containerd was gone (killed, crashed): runc kills them by id, the ids being those of
  # our state dir (the shims run runc with this root), then the shims themselves.
  local id
  for id in "$NODE"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*; do
    [[ -d $id ]] && { runc --root /run/containerd/runc/k8s.io delete -f "${id##*/}" >/dev/null 2>&1 || true; }
  done
  # shellcheck disable=SC2046
  stop_pid $(pids_of_shims)
  rm -f "$NODE"/*.pid
  rm -rf "$NODE/run" # sockets
  # 4. Mounts under the state dir (pod volumes, rootfs, shm), deepest first.
  local m
  awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  # 5.-8. machine-wide: only when no other state dir's node owns the machine
  if [[ ! -f $OWNER || "$(cat "$OWNER")" == "$STATE" ]]; then cleanup_machine; fi
  # check: nothing of ours is left
  local left=""
  [[ -z "$(pids_of_shims)" ]] || left+=" shims"
  awk -v s="$STATE/" 'index($2, s) == 1' /proc/mounts | grep -q . && left+=" mounts"
  [[ "$(cat "$OWNER" 2>/dev/null)" == "$STATE" ]] && ip link show "$BRIDGE" >/dev/null 2>&1 && left+=" bridge"
  if [[ -n "$left" ]]; then log "left behind:$left"; return 1; fi
  [[ -f $OWNER && "$(cat "$OWNER")" == "$STATE" ]] && rm -f "$OWNER"
  log "down"
}

wait_phase() { # ns pod seconds: until Succeeded (0) or Failed (1)
  local deadline=$((SECONDS + $3)) phase
  while ((SECONDS < deadline)); do
    phase=$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [[ $phase == Succeeded ]] && return 0
    [[ $phase == Failed ]] && return 1
    sleep 0.3
  done
  return 1
}

cmd_smoke() {
  local start=$SECONDS ns=byok-smoke
  "$REPO/hack/image.sh" busybox >/dev/null
  kubectl delete namespace "$ns" --ignore-not-found --timeout=90s >/dev/null # a previous run's
  kubectl create namespace "$ns" >/dev/null
  local t0=$SECONDS
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: tmpfs, labels: {app: smoke}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, runAsUser: 65534, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    image: localhost/byok/busybox:dev
    command: [sh, -c, 'echo hello from \$(hostname); grep /scratch /proc/mounts; echo ok > /scratch/f; exec httpd -f -p 8080 -h /scratch']
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    ports: [{containerPort: 8080, name: http}]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 16Mi}
---
apiVersion: v1
kind: Service
metadata: {name: smoke}
spec:
  selector: {app: smoke}
  ports: [{port: 80, targetPort: 8080}]
EOF
  kubectl -n "$ns" wait --for=condition=Ready pod/tmpfs --timeout=120s >/dev/null
  log "pod tmpfs Running $((SECONDS - t0))s after creation"
  echo "--- kubectl logs tmpfs"
  kubectl -n "$ns" logs tmpfs
  echo "--- kubectl exec tmpfs -- sh -c 'id; cat /scratch/f; grep scratch /proc/mounts; grep -E ^(Seccomp|CapEff): /proc/self/status'"
  kubectl -n "$ns" exec tmpfs -- sh -c 'id; cat /scratch/f; grep scratch /proc/mounts; grep -E "^(Seccomp|CapEff):" /proc/self/status'
  kubectl -n "$ns" exec tmpfs -- grep -q ' /scratch tmpfs ' /proc/mounts
  echo "--- a second pod resolves the Service smoke.$ns.svc.cluster.local through the cluster DNS and fetches"
  echo "    a file through it (kube-proxy DNAT to the first pod); the short name goes through the search list"
  kubectl -n "$ns" run dns --image=localhost/byok/busybox:dev --restart=Never --command -- \
    sh -c "cat /etc/resolv.conf; nslookup smoke.$ns.svc.cluster.local && nslookup kubernetes.default.svc.cluster.local &&
      echo wget: \$(wget -q -O- http://smoke.$ns.svc.cluster.local/f) && echo wget short name: \$(wget -q -O- http://smoke/f)" >/dev/null
  if ! wait_phase "$ns" dns 60; then kubectl -n "$ns" logs dns; kubectl -n "$ns" describe pod dns | tail -20; exit 1; fi
  kubectl -n "$ns" logs dns
  local want
  want=$(kubectl -n "$ns" get service smoke -o jsonpath='{.spec.clusterIP}')
  kubectl -n "$ns" logs dns | grep -q "Address: $want" || { log "smoke.$ns did not resolve to $want"; exit 1; }
  kubectl -n "$ns" logs dns | grep -q "^wget short name: ok" || { log "no HTTP answer through the Service"; exit 1; }
  echo "--- the operator image, if pushed (hack/image.sh operator), pulled from the registry: byok-judge --help as uid 65532"
  if [[ -f "$STATE/operator.image" ]]; then
    kubectl -n "$ns" run judge --image="$(cat "$STATE/operator.image")" --restart=Never \
      --overrides='{"spec":{"securityContext":{"runAsNonRoot":true}}}' --command -- byok-judge --help >/dev/null
    local tj=$SECONDS
    wait_phase "$ns" judge 60 || { kubectl -n "$ns" describe pod judge | tail -20; exit 1; }
    log "pod judge Succeeded $((SECONDS - tj))s after creation"
    kubectl -n "$ns" logs judge | head -5
  fi
  kubectl delete namespace "$ns" --wait=false >/dev/null
  log "smoke passed in $((SECONDS - start))s"
}

case "${1:-}" in
  prereqs) cmd_prereqs ;;
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  smoke) cmd_smoke ;;
  *) echo "usage: $0 prereqs|build|up|down|smoke" >&2; exit 2 ;;
esac
