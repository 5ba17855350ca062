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
#   hack/helm.sh validate   server-side dry-run of the renders on the local control plane, then RBAC checks,
#                           then the admission policies (byok-judge-pods, byok-operator-jobs) applied and
#                           exercised for real: a Job's pods are created; a judge pod made by admin, an
#                           image patch, a label change, kubectl debug, exec, and off-policy Jobs of the
#                           operator's ServiceAccount are refused
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
  --set azure.allowedEndpointHosts='{gw.example.com,*.openai.azure.com}'
  --set serviceMonitor.bearerTokenSecret.name=prometheus-token --set serviceMonitor.bearerTokenSecret.key=tok
  --set judgePolicy.jobControllerUsers='{system:kube-controller-manager}' --set judgePolicy.requireNamespaceOptIn=false
  --set kms.provider=vault-transit --set kms.vault.address=https://vault.vault.svc:8200 --set kms.vault.caSecret=vault-ca
  --set kms.vault.transitKey=byok --set kms.vault.role=byok --set kms.pollSeconds=60 --set kms.dekTtlSeconds=600
)
# The other external KMS: a node-level KMS v2 plugin's socket.
KMS_V2_OPTIONS=(--set kms.provider=kms-v2 --set kms.kmsV2.socket=kms.sock --set kms.kmsV2.sidecar.name=kms-plugin
  --set kms.kmsV2.sidecar.image=registry.example/kms-plugin:1.0 --set 'kms.kmsV2.sidecar.args={--listen=/var/run/kmsplugin/kms.sock}')
# What the defaults and all-options leave out: the chart-made metrics scraper identity (scraper),
# and everything optional switched off (off).
SCRAPER_OPTIONS=(--set serviceMonitor.enabled=true)
OFF_OPTIONS=(--set judgePolicy.enabled=false --set metrics.authorization=false --set rbac.create=false
  --set serviceAccount.create=false --set serviceAccount.name=byok-operator --set networkPolicy.judge.enabled=false
  --set podDisruptionBudget.enabled=false)

cmd_lint() {
  cmd_build
  log "helm lint --strict (default, namespaced, all options)"
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" >/dev/null
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" --set watchNamespace=$WATCH_NS >/dev/null
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" "${ALL_OPTIONS[@]}" >/dev/null
  # The schema refuses unknown values and bad enums.
  if helm_ template x "$CHART" --set no.such.value=1 >/dev/null 2>&1; then die "values.schema.json accepted an unknown value"; fi
  if helm_ template x "$CHART" --set logFormat=xml >/dev/null 2>&1; then die "values.schema.json accepted logFormat=xml"; fi
  if helm_ template x "$CHART" --set 'azure.allowedEndpointHosts=' >/dev/null 2>&1 ||
    helm_ template x "$CHART" --set 'azure.allowedEndpointHosts={https://x.example}' >/dev/null 2>&1; then
    die "values.schema.json accepted an empty or malformed azure.allowedEndpointHosts"
  fi
  helm_ lint --strict "$CHART" --kube-version "$KUBE_VERSION" --namespace "$NAMESPACE" "${KMS_V2_OPTIONS[@]}" >/dev/null
  if helm_ template x "$CHART" --set kms.provider=vault-transit >/dev/null 2>&1; then
    die "the chart rendered kms.provider=vault-transit without kms.vault.address"
  fi
  if helm_ template x "$CHART" --set kms.provider=aws >/dev/null 2>&1; then die "values.schema.json accepted kms.provider=aws"; fi
  # The operator refuses to import keys from its own namespace: the chart refuses to render that.
  if helm_ template x "$CHART" --namespace "$NAMESPACE" --set watchNamespace="$NAMESPACE" >/dev/null 2>&1; then
    die "the chart rendered with watchNamespace == the release namespace"
  fi
  log "lint ok"
}

cmd_template() {
  cmd_build
  render default
  render namespaced --set watchNamespace=$WATCH_NS
  render all-options "${ALL_OPTIONS[@]}"
  render kms-v2 "${KMS_V2_OPTIONS[@]}"
  render scraper "${SCRAPER_OPTIONS[@]}"
  render off "${OFF_OPTIONS[@]}"
  render manifests --set namespace.create=true
  render_checks
  for f in default namespaced all-options scraper off; do
    log "rendered $f: $(grep -c '^kind:' "$OUT/$f.yaml") objects ($(grep '^kind:' "$OUT/$f.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//'))"
  done
}

# What the renders must hold that a dry-run cannot tell: the policies, the new settings, the
# metrics RBAC, and the judge image the policy enforces being the one the operator is given.
render_checks() {
  python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
def text(name):
    return open(f'{out}/{name}.yaml').read()
def docs(name):
    return [d for d in re.split(r'^---\s*$', text(name), flags=re.M) if re.search(r'^kind:', d, flags=re.M)]
def doc(name, kind, obj):
    for d in docs(name):
        if re.search(rf'^kind: {kind}$', d, flags=re.M) and re.search(rf'^  name: {obj}$', d, flags=re.M):
            return d
    return None
def env(name, var):
    m = re.search(r'- name: ' + var + r'\n\s+value: (.*)', text(name))
    return m and m.group(1)
def fail(msg):
    print(f'[helm] FAIL: render {msg}', file=sys.stderr)
    sys.exit(1)
for name in ['default', 'namespaced', 'all-options', 'scraper']:
    for kind in ['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']:
        for obj in ['byok-judge-pods', 'byok-operator-jobs']:
            if not doc(name, kind, obj):
                fail(f'{name}: no {kind} {obj}')
    if 'subjectaccessreviews' not in text(name) or not doc(name, 'ClusterRole', 'byok-operator-metrics-reader'):
        fail(f'{name}: no subjectaccessreviews rule or no ClusterRole byok-operator-metrics-reader')
    if not doc(name, 'Role', 'byok-operator-grants'):
        fail(f'{name}: no Role byok-operator-grants (grant record ConfigMaps)')
    if env(name, 'BYOK_METRICS_AUTH') != '"true"':
        fail(f'{name}: BYOK_METRICS_AUTH is {env(name, "BYOK_METRICS_AUTH")}')
    # The judge image byok-operator-jobs enforces is BYOK_JUDGE_IMAGE (the full reference by digest when pinned).
    if f"expression: '{env(name, 'BYOK_JUDGE_IMAGE')}'" not in doc(name, 'ValidatingAdmissionPolicy', 'byok-operator-jobs'):
        fail(f'{name}: byok-operator-jobs does not compare images with BYOK_JUDGE_IMAGE {env(name, "BYOK_JUDGE_IMAGE")}')
    jobs = doc(name, 'ValidatingAdmissionPolicy', 'byok-operator-jobs')
    if 'request.userInfo.username == "system:serviceaccount:byok-system:byok-operator"' not in jobs:
        fail(f'{name}: byok-operator-jobs does not match the operator ServiceAccount')
    optin = 'launchgate.ai/evaljobs"] == "enabled"' in jobs
    if optin != (name != 'all-options'):
        fail(f'{name}: namespace opt-in check {"present" if optin else "missing"}')
if env('all-options', 'BYOK_JUDGE_IMAGE') != '"registry.example/byok-judge:0.1.0"':
    fail('all-options: judge.image not passed as BYOK_JUDGE_IMAGE')
if env('default', 'BYOK_AZURE_ENDPOINT_ALLOW') != '"*.openai.azure.com,*.cognitiveservices.azure.com"':
    fail(f'default: BYOK_AZURE_ENDPOINT_ALLOW is {env("default", "BYOK_AZURE_ENDPOINT_ALLOW")}')
if env('all-options', 'BYOK_AZURE_ENDPOINT_ALLOW') != '"gw.example.com,*.openai.azure.com"':
    fail(f'all-options: BYOK_AZURE_ENDPOINT_ALLOW is {env("all-options", "BYOK_AZURE_ENDPOINT_ALLOW")}')
if 'in ["system:kube-controller-manager"]' not in doc('all-options', 'ValidatingAdmissionPolicy', 'byok-judge-pods'):
    fail('all-options: judgePolicy.jobControllerUsers not in byok-judge-pods')
if env('all-options', 'BYOK_KMS') != '"vault-transit"' or env('all-options', 'BYOK_VAULT_ADDR') != '"https://vault.vault.svc:8200"':
    fail('all-options: kms.provider / kms.vault.address not passed as BYOK_KMS / BYOK_VAULT_ADDR')
if 'audience: "vault"' not in text('all-options') or 'secretName: vault-ca' not in text('all-options'):
    fail('all-options: no projected token with audience vault, or no Vault CA volume')
if env('kms-v2', 'BYOK_KMS_SOCKET') != '"/var/run/kmsplugin/kms.sock"' or 'medium: Memory' not in text('kms-v2') \
        or 'image: registry.example/kms-plugin:1.0' not in text('kms-v2') or text('kms-v2').count('mountPath: /var/run/kmsplugin') != 2:
    fail('kms-v2: the plugin sidecar and the operator do not share /var/run/kmsplugin')
if env('default', 'BYOK_KMS') != '"keyring"' or 'volumes:' in text('default'):
    fail('default: BYOK_KMS is not keyring, or volumes rendered without an external KMS')
off = text('off')
if 'ValidatingAdmissionPolicy' in off or 'subjectaccessreviews' in off or env('off', 'BYOK_METRICS_AUTH') != '"false"':
    fail('off: judgePolicy.enabled=false / metrics.authorization=false still render policies or SubjectAccessReview')
sm = text('scraper')
for want in ['type: kubernetes.io/service-account-token', 'kubernetes.io/service-account.name: byok-operator-metrics',
             'type: Bearer', 'name: byok-operator-metrics-token\n          key: token']:
    if want not in sm:
        fail(f'scraper: missing {want!r}')
if not doc('scraper', 'ClusterRoleBinding', 'byok-operator-metrics-reader'):
    fail('scraper: no ClusterRoleBinding byok-operator-metrics-reader')
opts = text('all-options')
if 'name: prometheus-token\n          key: tok' not in opts or 'service-account-token' in opts:
    fail('all-options: the ServiceMonitor does not use serviceMonitor.bearerTokenSecret')
PY
  log "render checks ok: admission policies (judge image == BYOK_JUDGE_IMAGE), BYOK_AZURE_ENDPOINT_ALLOW, BYOK_METRICS_AUTH, metrics and grant RBAC"
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
  # Tests `kubectl apply` this file as it is: cluster-scoped objects only, no namespace named.
  local vap=$MANIFESTS/admission-judge-pods.yaml
  [[ -f $vap ]] || die "$vap missing"
  if grep -Eq '^\s*namespace:' "$vap"; then die "$vap names a namespace"; fi
  [[ $(grep -c '^kind: ValidatingAdmissionPolicy$' "$vap") == 1 && $(grep -c '^kind: ValidatingAdmissionPolicyBinding$' "$vap") == 1 ]] ||
    die "$vap: expected one ValidatingAdmissionPolicy and one ValidatingAdmissionPolicyBinding"
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
  can yes create subjectaccessreviews.authorization.k8s.io # GET /metrics (metrics.authorization)
  # Grant records (ConfigMaps byok-grant-*) in the operator's own namespace, both modes.
  for v in get list watch create delete; do can yes $v configmaps $NAMESPACE; done
  can no update configmaps $NAMESPACE; can no delete configmaps $other
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
  for f in all-options scraper; do
    python3 -c '
import re,sys
docs=[d for d in re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M) if re.search(r"^kind:", d, flags=re.M)]
print("---".join(d for d in docs if not re.search(r"^kind: ServiceMonitor$", d, flags=re.M)))' \
      "$OUT/$f.yaml" >"$OUT/$f-no-servicemonitor.yaml"
    grep -q '^kind: ServiceMonitor$' "$OUT/$f.yaml" || die "$f render has no ServiceMonitor"
    dry_run "$f" -f "$OUT/$f-no-servicemonitor.yaml"
  done
  dry_run off -f "$OUT/off.yaml"
  dry_run kms-v2 -f "$OUT/kms-v2.yaml"
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
  # The chart-made scraper identity may GET /metrics; the operator itself may not.
  rbac_only "$OUT/scraper.yaml" >"$OUT/rbac-scraper.yaml"
  k apply -f "$OUT/rbac-scraper.yaml" >/dev/null
  [[ $(k auth can-i get /metrics --as="system:serviceaccount:$NAMESPACE:$RELEASE-metrics" 2>/dev/null) == yes ]] ||
    die "RBAC: the ServiceMonitor's ServiceAccount $RELEASE-metrics cannot get /metrics"
  [[ $(k auth can-i get /metrics --as="system:serviceaccount:$NAMESPACE:$RELEASE" 2>/dev/null) == no ]] ||
    die "RBAC: the operator's ServiceAccount can get /metrics"
  k delete -f "$OUT/rbac-scraper.yaml" --ignore-not-found >/dev/null
  log "RBAC metrics: ClusterRole $RELEASE-metrics-reader lets the ServiceMonitor's token get /metrics"
  k delete -f "$OUT/rbac-namespaced.yaml" --ignore-not-found >/dev/null
  k apply -f "$OUT/rbac-default.yaml" >/dev/null
  trap 'policy_cleanup; cluster_down' EXIT
  policy_checks
  policy_cleanup
}

# The admission policies, for real on the local control plane: byok-judge-pods from
# deploy/manifests/admission-judge-pods.yaml (the file tests apply), byok-operator-jobs from the
# default render. In namespaces of their own; policies and namespaces are deleted afterwards.
POLICY_NS=chart-chk-policy
POLICY_OPTIN_NS=chart-chk-optin
PCHECKS=0

policy_cleanup() {
  [[ -n "${KUBECTL:-}" && -f "$OUT/policy-operator-jobs.yaml" ]] || return 0
  k delete -f "$MANIFESTS/admission-judge-pods.yaml" -f "$OUT/policy-operator-jobs.yaml" --ignore-not-found >/dev/null 2>&1 || true
  k delete namespace $POLICY_NS $POLICY_OPTIN_NS --ignore-not-found --wait=false >/dev/null 2>&1 || true
}

# refused WHAT MESSAGE-PART kubectl-args...: the request fails, with the policy's message.
refused() {
  local what=$1 msg=$2 err
  shift 2
  if err=$(k "$@" 2>&1 </dev/null); then die "policy: $what was allowed"; fi
  [[ $err == *"$msg"* ]] || { printf '%s\n' "$err" >&2; die "policy: $what was refused, but not with: $msg"; }
  PCHECKS=$((PCHECKS + 1))
}

allowed() { # WHAT kubectl-args...
  local what=$1 err
  shift
  err=$(k "$@" 2>&1 </dev/null) || { printf '%s\n' "$err" >&2; die "policy: $what was refused"; }
  PCHECKS=$((PCHECKS + 1))
}

# A judge-like Job: judge_job NAME NAMESPACE IMAGE [POD-SPEC-YAML-LINES...] (spec lines at 6 spaces);
# JUDGE_EXTRA is appended to the judge container's fields (e.g. ", securityContext: {...}").
judge_job() {
  local name=$1 ns=$2 image=$3
  shift 3
  printf '%s\n' "apiVersion: batch/v1" "kind: Job" "metadata: {name: $name, namespace: $ns}" "spec:" \
    "  completionMode: Indexed" "  completions: 1" "  template:" \
    "    metadata: {labels: {launchgate.ai/evaljob-uid: $name}}" "    spec:" "      restartPolicy: Never" \
    "      initContainers: [{name: fetch-key, image: \"$image\"}]" "      containers: [{name: judge, image: \"$image\"${JUDGE_EXTRA:-}}]" "$@"
}

policy_checks() {
  local ns=$POLICY_NS optin=$POLICY_OPTIN_NS sa="system:serviceaccount:$NAMESPACE:$RELEASE" img pod i
  PCHECKS=0
  python3 -c '
import re,sys
print("---".join(d for d in re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M)
      if re.search(r"^kind: ValidatingAdmissionPolicy(Binding)?$", d, flags=re.M) and re.search(r"^  name: byok-operator-jobs$", d, flags=re.M)))' \
    "$OUT/default.yaml" >"$OUT/policy-operator-jobs.yaml"
  img=$(python3 -c 'import re,sys; print(re.search(r"name: BYOK_JUDGE_IMAGE\n\s+value: \"(.*)\"", open(sys.argv[1]).read()).group(1))' "$OUT/default.yaml")
  k delete namespace $ns $optin --ignore-not-found --wait=true --timeout=60s >/dev/null
  k create namespace $ns >/dev/null
  k create namespace $optin >/dev/null
  k label namespace $optin launchgate.ai/evaljobs=enabled >/dev/null
  k apply -f "$MANIFESTS/admission-judge-pods.yaml" -f "$OUT/policy-operator-jobs.yaml" >/dev/null
  # A new policy takes effect once the API server has loaded (and type-checked) it.
  for i in $(seq 1 60); do
    if ! k -n $ns run probe --image=x --restart=Never --labels=launchgate.ai/evaljob-uid=x --dry-run=server >/dev/null 2>&1 &&
      ! judge_job probe $ns "$img" | k create --as="$sa" --dry-run=server -f - >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  local typewarn
  typewarn=$(k get validatingadmissionpolicy byok-judge-pods byok-operator-jobs -o jsonpath='{.items[*].status.typeChecking.expressionWarnings}')
  [[ -z $typewarn ]] || { printf '%s\n' "$typewarn" >&2; die "policy: type-checking warnings"; }

  # byok-judge-pods: only the Job controller makes judge pods, and they stay as it made them.
  refused "admin creating a judge pod" "only the Job controller may create judge pods" \
    -n $ns run fake-judge-0-abcde --image=x --restart=Never --labels=launchgate.ai/evaljob-uid=x
  allowed "admin creating an ordinary pod" -n $ns run plain --image=x --restart=Never
  judge_job chk-judge $ns registry.example/judge:1 "      automountServiceAccountToken: false" | k apply -f - >/dev/null
  pod=""
  for i in $(seq 1 120); do
    pod=$(k -n $ns get pods -l batch.kubernetes.io/job-name=chk-judge -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
    [[ -n $pod ]] && break
    sleep 0.5
  done
  [[ -n $pod ]] || die "policy: the Job controller did not create chk-judge's pod (byok-judge-pods refused it?)"
  [[ $pod =~ -judge-[0-9]+-[a-z0-9]{5}$ ]] || die "policy: judge pod name $pod does not match -judge-<index>-<5>"
  PCHECKS=$((PCHECKS + 1))
  refused "changing a judge pod's image" "images of a judge pod's containers and init containers cannot be changed" \
    -n $ns set image "pod/$pod" judge=registry.example/other:1
  refused "changing a judge pod's init container image" "images of a judge pod's containers and init containers cannot be changed" \
    -n $ns patch pod "$pod" --type=json -p '[{"op":"replace","path":"/spec/initContainers/0/image","value":"registry.example/other:1"}]'
  refused "changing a judge pod's label" "launchgate.ai/evaljob-uid label cannot be added" \
    -n $ns label pod "$pod" launchgate.ai/evaljob-uid=other --overwrite
  refused "removing a judge pod's label" "launchgate.ai/evaljob-uid label cannot be added" \
    -n $ns label pod "$pod" launchgate.ai/evaljob-uid-
  refused "labelling an ordinary pod as a judge pod" "launchgate.ai/evaljob-uid label cannot be added" \
    -n $ns label pod plain launchgate.ai/evaljob-uid=x
  allowed "annotating a judge pod" -n $ns annotate pod "$pod" chart-chk=1
  refused "kubectl debug (an ephemeral container) on a judge pod" "ephemeral containers cannot be added to a judge pod" \
    -n $ns debug "$pod" --image=x -c debugger --profile=general
  refused "kubectl exec into a judge pod" "exec/attach/port-forward are refused" -n $ns exec "$pod" -c judge -- true
  refused "attach to a judge pod" "exec/attach/port-forward are refused" \
    create --raw "/api/v1/namespaces/$ns/pods/$pod/attach?container=judge&stdout=true" -f /dev/null
  refused "port-forward to a judge pod" "exec/attach/port-forward are refused" \
    create --raw "/api/v1/namespaces/$ns/pods/$pod/portforward?ports=8080" -f /dev/null

  # byok-operator-jobs: what the operator's ServiceAccount may create.
  local ok=("      automountServiceAccountToken: false")
  allowed "the operator's judge Job in an opted-in namespace" create --as="$sa" --dry-run=server -f <(judge_job ok $optin "$img" "${ok[@]}")
  refused "the operator's Job in a namespace that did not opt in" "label the namespace launchgate.ai/evaljobs=enabled" \
    create --as="$sa" --dry-run=server -f <(judge_job no-optin $ns "$img" "${ok[@]}")
  refused "the operator's Job in kube-system" "never run in kube-system" \
    create --as="$sa" --dry-run=server -f <(judge_job ks kube-system "$img" "${ok[@]}")
  refused "the operator's Job with another image" "judge Jobs run only the judge image $img" \
    create --as="$sa" --dry-run=server -f <(judge_job other-image $optin registry.example/other:1 "${ok[@]}")
  refused "the operator's Job with a service-account token" "automountServiceAccountToken: false" \
    create --as="$sa" --dry-run=server -f <(judge_job token $optin "$img")
  refused "the operator's Job with a hostPath volume" "may not mount hostPath volumes" \
    create --as="$sa" --dry-run=server -f <(judge_job hostpath $optin "$img" "${ok[@]}" "      volumes: [{name: h, hostPath: {path: /}}]")
  refused "the operator's Job on the host network" "may not use hostNetwork, hostPID or hostIPC" \
    create --as="$sa" --dry-run=server -f <(judge_job hostnet $optin "$img" "${ok[@]}" "      hostPID: true")
  refused "the operator's Job with a privileged container" "may not run privileged containers" \
    create --as="$sa" --dry-run=server -f <(JUDGE_EXTRA=", securityContext: {privileged: true}" judge_job priv $optin "$img" "${ok[@]}")
  allowed "someone else's Job (not the operator's ServiceAccount)" create --dry-run=server -f <(judge_job other $ns registry.example/other:1)
  log "admission policies: $PCHECKS live checks passed (byok-judge-pods: a Job's pods created, admin's judge pod," \
    "image/label changes, kubectl debug, exec, attach, port-forward refused; byok-operator-jobs: image, token, host," \
    "privileged, namespace opt-in, kube-system)"
}

# The real operator (target/debug, built by `cargo build --bins --features mock`) run on this machine as the chart's
# ServiceAccount (a token kubeconfig), in each RBAC mode, against the mock provider: it must import
# and validate the sample keys, start an EvalJob's Job, run a finalizer, serve /healthz, and never be
# refused by the API server. (No node runs judge pods here: the Job is created, its pods stay Pending.)
cmd_smoke() {
  local bin=${CARGO_TARGET_DIR:-$REPO/target}/debug
  [[ -x $bin/byok-operator && -x $bin/byok-mock-provider ]] || die "target/debug/byok-operator or byok-mock-provider missing: cargo build --bins --features mock"
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
  k label namespace "$ns" launchgate.ai/evaljobs=enabled >/dev/null # byok-operator-jobs, when installed
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
