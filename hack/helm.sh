#!/usr/bin/env bash
# The Helm chart (charts/byok-operator) and the plain manifests generated from it (deploy/manifests).
#
#   hack/helm.sh            all checks: build helm, CRD copies, lint, template, manifests drift,
#                           server-side dry-run + RBAC checks against a local Kubernetes 1.35
#   hack/helm.sh build      build helm from the Go module proxy (cached by version); prints its path
#   hack/helm.sh lint       helm lint --strict, default and namespaced values
#   hack/helm.sh template   render default, namespaced and all-options into target/helm/
#   hack/helm.sh manifests  copy deploy/crds into the chart and regenerate deploy/manifests
#   hack/helm.sh check      fail when the chart's CRDs or deploy/manifests differ from what they should be
#   hack/helm.sh validate   server-side dry-run of the renders on the local control plane, then RBAC checks
#   hack/helm.sh smoke      run target/debug/byok-operator as the chart's ServiceAccount (both RBAC
#                           modes) against the mock provider: keys imported, EvalJob started, no 403
#   hack/helm.sh helm ARGS  run the pinned helm
#
# Environment:
#   BYOK_CACHE_DIR      where helm is cached (default ~/.cache/byok-operator), as hack/cluster.sh
#   BYOK_CLUSTER_DIR    the control plane `validate` uses (default <repo>/target/helm-cluster, not the
#                       default cluster of hack/cluster.sh). Started when not running, stopped again
#                       at the end if this script started it. KEEP_CLUSTER=1 leaves it running.
#   USE_EXISTING_CLUSTER=true with KUBECONFIG: validate against that cluster (dry-run only, no RBAC checks).
set -euo pipefail

HELM_VERSION=v3.22.0
KUBE_VERSION=1.35.4
RELEASE=byok-operator
NAMESPACE=byok-system
WATCH_NS=team-a
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOK_CACHE_DIR:-$HOME/.cache/byok-operator}
HELM_DIR=$CACHE/bin/helm-$HELM_VERSION
HELM=$HELM_DIR/helm
CHART=${BYOK_HELM_CHART:-$REPO/charts/byok-operator} # override: tests of the checks themselves
OUT=$REPO/target/helm
MANIFESTS=$REPO/deploy/manifests
export BYOK_CLUSTER_DIR=${BYOK_CLUSTER_DIR:-$REPO/target/helm-cluster}

log() { printf '[helm] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

cmd_build() {
  if [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then return 0; fi
  command -v go >/dev/null || die "go is required to build helm"
  local start=$SECONDS k8s_minor
  log "building helm $HELM_VERSION from the Go module proxy (hack/helm)"
  # The committed go.sum pins every module; GONOSUMDB lets a machine that cannot reach the
  # checksum database still build from it.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GONOSUMDB='helm.sh,k8s.io,sigs.k8s.io,oras.land'
  # helm's Makefile: the Kubernetes version lint/template default to is its client-go minor.
  k8s_minor=$(cd "$REPO/hack/helm" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
  local v=helm.sh/helm/v3
  local ld="-s -w -X $v/internal/version.version=$HELM_VERSION -X $v/internal/version.gitTreeState=clean"
  ld+=" -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
  ld+=" -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$k8s_minor"
  rm -rf "$HELM_DIR.tmp" && mkdir -p "$HELM_DIR.tmp"
  (cd "$REPO/hack/helm" && go build -trimpath -o "$HELM_DIR.tmp/helm" -ldflags "$ld" helm.sh/helm/v3/cmd/helm)
  rm -rf "$HELM_DIR" && mv "$HELM_DIR.tmp" "$HELM_DIR"
  log "built $("$HELM" version --short) in $((SECONDS - start))s into $HELM_DIR"
}

# helm with its own config/cache/data dirs: no repositories, nothing from the user's setup.
helm_() {
  HELM_CONFIG_HOME=$OUT/.helm/config HELM_CACHE_HOME=$OUT/.helm/cache HELM_DATA_HOME=$OUT/.helm/data "$HELM" "$@"
}

render_no_crds() { # name args...
  local name=$1
  shift
  helm_ template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" >"$OUT/$name.yaml"
}

render() { # name args... : writes $OUT/<name>.yaml
  local name=$1
  shift
  mkdir -p "$OUT"
  helm_ template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" --include-crds "$@" \
    >"$OUT/$name.yaml"
}

# Every value the chart has, set to something other than its default (ServiceMonitor included).
ALL_OPTIONS=(
  --set replicaCount=2 --set image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000
  --set judge.image=registry.example/byok-judge:0.1.0 --set keyring.existingSecret=my-kek
  --set broker.ca.existingSecret=my-ca --set broker.url=https://byok-broker.byok-system.svc.cluster.local:8443
  --set providers.azureOpenAI.baseURL=https://gateway.example/azure --set providers.openai.defaultModel=gpt-4.1
  --set networkPolicy.judge.namespaces='{team-a,team-b}' --set networkPolicy.judge.providerCIDRs='{203.0.113.0/24}'
  --set podDisruptionBudget.minAvailable=1 --set serviceMonitor.enabled=true --set logFormat=text
  --set priorityClassName=system-cluster-critical --set extraArgs='{--concurrency=32}'
  --set namespace.create=true
)

cmd_lint() {
  cmd_build
  log "helm lint --strict (default, namespaced, all options)"
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" >/dev/null
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" --set watchNamespace=$WATCH_NS >/dev/null
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" "${ALL_OPTIONS[@]}" >/dev/null
  # The schema refuses unknown values and bad enums.
  if helm_ template x "$CHART" --set no.such.value=1 >/dev/null 2>&1; then die "values.schema.json accepted an unknown value"; fi
  if helm_ template x "$CHART" --set logFormat=xml >/dev/null 2>&1; then die "values.schema.json accepted logFormat=xml"; fi
  log "lint ok"
}

cmd_template() {
  cmd_build
  render default
  render namespaced --set watchNamespace=$WATCH_NS
  render all-options "${ALL_OPTIONS[@]}"
  render manifests --set namespace.create=true
  for f in default namespaced all-options; do
    log "rendered $f: $(grep -c '^kind:' "$OUT/$f.yaml") objects ($(grep '^kind:' "$OUT/$f.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//'))"
  done
}

# Splits a render into one file per template (CRDs: one per CRD) plus a kustomization.yaml.
split_manifests() { # render dir
  python3 - "$1" "$2" <<'EOF'
import os, re, sys
src, out = sys.argv[1], sys.argv[2]
docs = re.split(r'^---\s*$', open(src).read(), flags=re.M)
files = {}
for d in docs:
    m = re.search(r'^# Source: [^/]+/(crds|templates)/(\S+)\.yaml$', d, flags=re.M)
    if not m or not re.search(r'^kind:', d, flags=re.M):
        continue
    name = ('crd-' if m.group(1) == 'crds' else '') + m.group(2).replace('/', '-') + '.yaml'
    body = re.sub(r'^# Source: .*\n', '', d.strip('\n') + '\n', flags=re.M)
    files.setdefault(name, []).append(body)
order = ['namespace.yaml']
order += sorted(n for n in files if n.startswith('crd-'))
order += [n for n in ['serviceaccount.yaml', 'rbac.yaml', 'service.yaml', 'deployment.yaml', 'pdb.yaml'] if n in files]
order += sorted(n for n in files if n not in order)
header = '# Generated by `hack/helm.sh manifests` from charts/byok-operator (defaults, namespace byok-system): do not edit.\n'
os.makedirs(out, exist_ok=True)
for n in order:
    with open(os.path.join(out, n), 'w') as f:
        f.write(header + '---\n'.join(files[n]))
with open(os.path.join(out, 'kustomization.yaml'), 'w') as f:
    f.write(header + 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n')
    f.writelines(f'  - {n}\n' for n in order)
EOF
}

sync_crds() { # dest dir
  mkdir -p "$1"
  cp "$REPO"/deploy/crds/*.yaml "$1/"
}

cmd_manifests() {
  cmd_build
  sync_crds "$CHART/crds"
  render manifests --set namespace.create=true
  rm -rf "$MANIFESTS" && split_manifests "$OUT/manifests.yaml" "$MANIFESTS"
  log "wrote $MANIFESTS: $(cd "$MANIFESTS" && ls | tr '\n' ' ')"
}

cmd_check() {
  cmd_build
  local tmp=$OUT/check
  rm -rf "$tmp" && mkdir -p "$tmp"
  # Same file set and same content: the chart's crds/ must be the generated deploy/crds.
  if ! diff -r "$REPO/deploy/crds" "$CHART/crds" >"$tmp/crds.diff"; then
    cat "$tmp/crds.diff" >&2
    die "charts/byok-operator/crds differs from deploy/crds: run hack/helm.sh manifests"
  fi
  render manifests --set namespace.create=true
  split_manifests "$OUT/manifests.yaml" "$tmp/manifests"
  if ! diff -r "$tmp/manifests" "$MANIFESTS" >"$tmp/manifests.diff"; then
    head -50 "$tmp/manifests.diff" >&2
    die "deploy/manifests differs from what the chart renders: run hack/helm.sh manifests"
  fi
  log "check ok: chart CRDs == deploy/crds, deploy/manifests == chart defaults"
}

STARTED_CLUSTER=0
cluster_up() {
  if [[ "${USE_EXISTING_CLUSTER:-}" == "true" ]]; then
    [[ -n "${KUBECONFIG:-}" ]] || die "USE_EXISTING_CLUSTER=true needs KUBECONFIG"
    KUBECTL=$(command -v kubectl) || die "kubectl not found"
    return 0
  fi
  local pidf=$BYOK_CLUSTER_DIR/kube-apiserver.pid
  if ! { [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; }; then
    log "starting a local control plane in $BYOK_CLUSTER_DIR"
    "$REPO/hack/cluster.sh" up
    STARTED_CLUSTER=1
  fi
  export KUBECONFIG=$BYOK_CLUSTER_DIR/kubeconfig
  KUBECTL=$("$REPO/hack/cluster.sh" bin)/kubectl
}

cluster_down() {
  if [[ $STARTED_CLUSTER == 1 && -z "${KEEP_CLUSTER:-}" ]]; then "$REPO/hack/cluster.sh" down; fi
}

k() { "$KUBECTL" "$@"; }

dry_run() { # what args...
  local what=$1
  shift
  local err=$OUT/dry-run-$what.err
  if ! k apply --dry-run=server "$@" >"$OUT/dry-run-$what.out" 2>"$err"; then
    cat "$err" >&2
    die "server-side dry-run of $what"
  fi
  if grep -q 'violate PodSecurity' "$err"; then cat "$err" >&2; die "$what violates the namespace's Pod Security level"; fi
  [[ -s "$err" ]] && sed 's/^/  /' "$err" >&2
  log "dry-run $what: $(wc -l <"$OUT/dry-run-$what.out") objects accepted by the API server ($(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
}

# `kubectl auth can-i` as the operator's ServiceAccount: can yes|no VERB RESOURCE [NAMESPACE|-A]
can() {
  local expect=$1 verb=$2 res=$3 ns=${4:-}
  local args=(auth can-i "$verb" --as="system:serviceaccount:$NAMESPACE:$RELEASE")
  # RESOURCE/status is the status subresource; any other RESOURCE/NAME names one object.
  if [[ $res == */status ]]; then args+=("${res%/status}" --subresource=status); else args+=("$res"); fi
  case $ns in
    "") ;;
    -A) args+=(--all-namespaces) ;;
    *) args+=(-n "$ns") ;;
  esac
  local got
  got=$(k "${args[@]}" 2>/dev/null || true)
  [[ $got == "$expect" ]] || die "RBAC: auth can-i $verb $res ${ns:+($ns)} = '$got', expected $expect"
  CHECKS=$((CHECKS + 1))
}

# Only the identity and RBAC objects of a render, for the real apply of the RBAC checks.
rbac_only() { # render
  python3 -c '
import re,sys
docs=[d for d in re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M)
      if re.search(r"^kind: (ServiceAccount|ClusterRole|ClusterRoleBinding|Role|RoleBinding)$", d, flags=re.M)]
print("---".join(docs))' "$1"
}

CHECKS=0
rbac_checks() { # mode
  local mode=$1 n=$WATCH_NS
  CHECKS=0
  local other=elsewhere
  # Used by the operator: the watch namespace (and, in cluster mode, any namespace).
  for ns in $n $([[ $mode == cluster ]] && echo $other); do
    for v in list watch patch; do can yes $v byokkeys.launchgate.ai "$ns"; done
    can yes patch byokkeys.launchgate.ai/status "$ns"
    for v in list watch; do can yes $v evaljobs.launchgate.ai "$ns"; done
    can yes patch evaljobs.launchgate.ai/status "$ns"
    for v in get list watch create patch delete; do can yes $v secrets "$ns"; done
    for v in get list watch create patch; do can yes $v configmaps "$ns"; done
    for v in list watch create patch; do can yes $v jobs.batch "$ns"; done
    can yes get pods "$ns"
    for v in create patch; do can yes $v events.events.k8s.io "$ns"; done
    # Not used, so not granted.
    can no update secrets "$ns"; can no delete configmaps "$ns"; can no delete jobs.batch "$ns"
    can no update byokkeys.launchgate.ai "$ns"; can no delete byokkeys.launchgate.ai "$ns"
    can no create byokkeys.launchgate.ai "$ns"; can no list pods "$ns"; can no create pods "$ns"
    can no update byokkeys.launchgate.ai/status "$ns"; can no patch evaljobs.launchgate.ai "$ns"
    can no create events "$ns"
  done
  can yes create tokenreviews.authentication.k8s.io
  can no create subjectaccessreviews.authorization.k8s.io
  can no list namespaces; can no list nodes
  if [[ $mode == namespaced ]]; then
    # Nothing outside the watch namespace and the keyring/CA Secrets of the operator namespace.
    can no list secrets $other; can no get secrets $other; can no list byokkeys.launchgate.ai $other
    can no get pods $other; can no list secrets -A; can no list byokkeys.launchgate.ai -A
    can yes get secrets/byok-operator-kek $NAMESPACE; can yes watch secrets/byok-broker-ca $NAMESPACE
    can yes create secrets $NAMESPACE
    can no get secrets/some-other-secret $NAMESPACE; can no list secrets $NAMESPACE
    can no delete secrets/byok-operator-kek $NAMESPACE; can no update secrets/byok-operator-kek $NAMESPACE
  else
    can yes list secrets -A; can yes list byokkeys.launchgate.ai -A
  fi
  log "RBAC $mode mode: $CHECKS auth can-i checks as system:serviceaccount:$NAMESPACE:$RELEASE passed"
}

cmd_validate() {
  cmd_template
  render manifests --set namespace.create=true
  cluster_up
  trap cluster_down EXIT
  log "CRDs applied for real, then waited for Established"
  k apply -f "$REPO/deploy/crds/" >/dev/null
  k wait --for=condition=Established --timeout=60s crd/byokkeys.launchgate.ai crd/evaljobs.launchgate.ai >/dev/null
  # Namespaces must exist for a dry-run of what goes into them. The release Namespace as rendered
  # (Pod Security restricted), so the Deployment is checked against that level.
  python3 -c '
import re,sys
for d in re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M):
    if re.search(r"^kind: Namespace$", d, flags=re.M): print(d)' "$OUT/manifests.yaml" | k apply -f - >/dev/null
  for ns in $WATCH_NS team-b elsewhere; do
    k get namespace "$ns" >/dev/null 2>&1 || k create namespace "$ns" >/dev/null
  done
  [[ $(k get namespace "$NAMESPACE" -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}') == restricted ]] ||
    die "namespace $NAMESPACE is not labelled pod-security.kubernetes.io/enforce=restricted"
  dry_run default -f "$OUT/default.yaml"
  dry_run namespaced -f "$OUT/namespaced.yaml"
  # The ServiceMonitor CRD (Prometheus Operator) is not on this cluster: rendered and linted only.
  python3 -c '
import re,sys
docs=[d for d in re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M) if re.search(r"^kind:", d, flags=re.M)]
print("---".join(d for d in docs if not re.search(r"^kind: ServiceMonitor$", d, flags=re.M)))' \
    "$OUT/all-options.yaml" >"$OUT/all-options-no-servicemonitor.yaml"
  grep -q '^kind: ServiceMonitor$' "$OUT/all-options.yaml" || die "all-options render has no ServiceMonitor"
  dry_run all-options -f "$OUT/all-options-no-servicemonitor.yaml"
  dry_run kustomize -k "$MANIFESTS"
  # The Pod Security check above is live: a non-restricted pod template is reported.
  render_no_crds not-restricted --set podSecurityContext.runAsNonRoot=false --set securityContext.allowPrivilegeEscalation=true
  k apply --dry-run=server -f "$OUT/not-restricted.yaml" 2>&1 >/dev/null | grep -q 'violate PodSecurity' ||
    die "a non-restricted Deployment was not reported by Pod Security admission"
  log "Pod Security admission reports a non-restricted Deployment (the check is live)"

  if [[ "${USE_EXISTING_CLUSTER:-}" == "true" ]]; then
    log "existing cluster: RBAC checks skipped (they apply the RBAC objects for real)"
    return 0
  fi
  # RBAC, for real on the local control plane: apply the objects, ask `auth can-i` as the
  # operator's ServiceAccount. (No scheduler runs here: the Deployment's pod stays Pending.)
  rbac_only "$OUT/default.yaml" >"$OUT/rbac-default.yaml"
  rbac_only "$OUT/namespaced.yaml" >"$OUT/rbac-namespaced.yaml"
  k delete -f "$OUT/rbac-namespaced.yaml" --ignore-not-found >/dev/null
  k apply -f "$OUT/rbac-default.yaml" >/dev/null
  rbac_checks cluster
  k delete -f "$OUT/rbac-default.yaml" --ignore-not-found >/dev/null
  k apply -f "$OUT/rbac-namespaced.yaml" >/dev/null
  rbac_checks namespaced
}

# The real operator (target/debug, built by `cargo build --bins`) run on this machine as the chart's
# ServiceAccount (a token kubeconfig), in each RBAC mode, against the mock provider: it must import
# and validate the sample keys, start an EvalJob's Job, run a finalizer, serve /healthz, and never be
# refused by the API server. (No node runs judge pods here: the Job is created, its pods stay Pending.)
cmd_smoke() {
  local bin=${CARGO_TARGET_DIR:-$REPO/target}/debug
  [[ -x $bin/byok-operator && -x $bin/byok-mock-provider ]] || die "target/debug/byok-operator missing: cargo build --bins"
  [[ "${USE_EXISTING_CLUSTER:-}" != "true" ]] || die "smoke runs on the local control plane only"
  cmd_template
  cluster_up
  trap 'smoke_stop; cluster_down' EXIT
  local st=$OUT/smoke
  rm -rf "$st" && mkdir -p "$st"
  rbac_only "$OUT/default.yaml" >"$OUT/rbac-default.yaml"
  rbac_only "$OUT/namespaced.yaml" >"$OUT/rbac-namespaced.yaml"
  k apply -f "$REPO/deploy/crds/" >/dev/null
  k wait --for=condition=Established --timeout=60s crd/byokkeys.launchgate.ai crd/evaljobs.launchgate.ai >/dev/null
  local port
  port=$(free_port)
  "$bin/byok-mock-provider" --listen "127.0.0.1:$port" >"$st/mock.log" 2>&1 &
  echo $! >"$st/mock.pid"
  MOCK=http://127.0.0.1:$port
  smoke_mode cluster
  smoke_mode namespaced
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

smoke_stop() {
  local f
  for f in "$OUT"/smoke/*.pid; do
    [[ -f $f ]] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

smoke_mode() { # cluster|namespaced
  local mode=$1 st=$OUT/smoke ns render=default
  # A new namespace each run (an earlier run's ByokKeys keep their finalizer once no operator runs).
  ns=smoke-$mode-$(date +%s)
  if [[ $mode == namespaced ]]; then
    render=smoke-namespaced
    render_no_crds "$render" --set watchNamespace="$ns"
    rbac_only "$OUT/$render.yaml" >"$OUT/rbac-$render.yaml"
  fi
  # A clean slate: no RBAC of the other mode, no keyring/CA (so creating them is exercised too).
  k delete -f "$OUT/rbac-default.yaml" -f "$OUT/rbac-namespaced.yaml" --ignore-not-found >/dev/null 2>&1 || true
  k get namespace "$NAMESPACE" >/dev/null 2>&1 || k create namespace "$NAMESPACE" >/dev/null
  k create namespace "$ns" >/dev/null
  k -n "$NAMESPACE" delete secret byok-operator-kek byok-broker-ca --ignore-not-found >/dev/null
  k apply -f "$OUT/rbac-$render.yaml" >/dev/null
  local token server
  token=$(k -n "$NAMESPACE" create token "$RELEASE" --duration=1h)
  server=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  printf '%s\n' "apiVersion: v1" "kind: Config" \
    "clusters: [{name: c, cluster: {server: \"$server\", certificate-authority: \"$BYOK_CLUSTER_DIR/pki/ca.crt\"}}]" \
    "users: [{name: sa, user: {token: \"$token\"}}]" \
    "contexts: [{name: c, context: {cluster: c, user: sa}}]" "current-context: c" >"$st/sa.kubeconfig"
  local bport args=()
  bport=$(free_port)
  [[ $mode == namespaced ]] && args+=(--watch-namespace "$ns")
  KUBECONFIG=$st/sa.kubeconfig POD_NAMESPACE=$NAMESPACE POD_NAME=smoke-$mode RUST_LOG=info,byok_operator=debug,kube=warn \
    "$bin/byok-operator" --log-format text --broker-listen "127.0.0.1:$bport" "${args[@]}" \
    --openai-base-url "$MOCK/openai/v1" --anthropic-base-url "$MOCK/anthropic" --google-base-url "$MOCK/google" \
    --azure-base-url "$MOCK/azure" >"$st/operator-$mode.log" 2>&1 &
  echo $! >"$st/operator.pid"
  sed "s/namespace: byok-demo/namespace: $ns/" "$REPO/deploy/samples/byokkeys.yaml" | k apply -f - >/dev/null
  local i settled=0 total
  total=$(k -n "$ns" get byokkeys -o name | wc -l)
  for i in $(seq 1 120); do
    settled=$(k -n "$ns" get byokkeys -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -cE '^(Ready|Invalid)$' || true)
    [[ $settled == "$total" ]] && break
    sleep 0.5
  done
  [[ $settled == "$total" ]] || { tail -20 "$st/operator-$mode.log" >&2; die "smoke $mode: $settled of $total ByokKeys settled"; }
  sed "s/namespace: byok-demo/namespace: $ns/" "$REPO/deploy/samples/evaljob.yaml" | k apply -f - >/dev/null
  local phase=""
  for i in $(seq 1 60); do
    phase=$(k -n "$ns" get evaljob qa-smoke -o jsonpath='{.status.phase}')
    [[ $phase == Running ]] && break
    sleep 0.5
  done
  [[ $phase == Running ]] || { tail -20 "$st/operator-$mode.log" >&2; die "smoke $mode: EvalJob phase '$phase', not Running"; }
  k -n "$ns" delete byokkey anthropic-main --wait=true --timeout=30s >/dev/null # the finalizer path
  # The broker answers once the keyring, the CA and the caches are loaded.
  k -n "$NAMESPACE" get secret byok-broker-ca -o jsonpath='{.data.ca\.crt}' | base64 -d >"$st/ca.crt"
  curl -fsS --cacert "$st/ca.crt" "https://localhost:$bport/healthz" >/dev/null || die "smoke $mode: broker /healthz"
  kill "$(cat "$st/operator.pid")" && rm -f "$st/operator.pid"
  # An RBAC denial reads: ... is forbidden: User "system:serviceaccount:..." cannot VERB resource ...
  if grep -E 'forbidden: User \\?"system:serviceaccount' "$st/operator-$mode.log" >&2; then
    die "smoke $mode: the API server refused the operator (RBAC too narrow)"
  fi
  local events
  events=$(k get events.events.k8s.io -A -o name | wc -l)
  log "smoke $mode mode: $total ByokKeys settled, EvalJob Running with $(k -n "$ns" get jobs -o name | wc -l) Job," \
    "keyring+CA created, finalizer ran, $events Events, /healthz ok, no RBAC refusal in the operator log"
}

cmd_all() {
  local start=$SECONDS
  cmd_build
  cmd_lint
  cmd_check
  cmd_validate
  log "all ok in $((SECONDS - start))s (helm $("$HELM" version --short), Kubernetes $KUBE_VERSION)"
}

case "${1:-all}" in
  all) cmd_all ;;
  build) cmd_build && echo "$HELM" ;;
  lint) cmd_lint ;;
  template) cmd_template ;;
  manifests) cmd_manifests ;;
  check) cmd_check ;;
  validate) cmd_validate ;;
  smoke) cmd_smoke ;;
  helm) shift && cmd_build && helm_ "$@" ;;
  *) echo "usage: $0 [all|build|lint|template|manifests|check|validate|smoke|helm ARGS]" >&2; exit 2 ;;
esac
