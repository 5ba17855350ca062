#!/usr/bin/env bash
# The demo: builds what it needs, starts a local control plane (as root, with a real node), the
# mock provider and the operator, applies deploy/samples/, shows the keys, proves etcd holds no
# plaintext key, and runs a 20-case EvalJob whose judge pod runs on the node. BYOK_NODE=false (or
# not root): no node, and the judge pod's containers run as local processes instead.
# The cluster keeps running afterwards for you to explore; `hack/demo.sh down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=target/demo
# Where cargo puts the binaries (CARGO_TARGET_DIR when set).
BIN=${CARGO_TARGET_DIR:-target}/debug
stop() {
  for p in operator mock; do
    [[ -f $STATE/$p.pid ]] && kill "$(cat "$STATE/$p.pid")" 2>/dev/null || true
    rm -f "$STATE/$p.pid"
  done
  bash hack/cluster.sh down
}
if [[ "${1:-}" == "down" ]]; then stop; exit 0; fi
trap 'echo "[demo] failed; stopping"; stop' ERR

bash hack/prereqs.sh
if [[ -z "${BYOK_NODE:-}" && "$(id -u)" == 0 ]]; then BYOK_NODE=true; fi
export BYOK_NODE=${BYOK_NODE:-false}
echo "[demo] building byok-operator and the mock provider"
cargo build --quiet --bins --features mock # the mock provider is a test double, behind a feature
if [[ "$BYOK_NODE" == "true" ]]; then
  cargo build --quiet --release --bins # what the judge image packages
  bash hack/image.sh pause
fi
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
mkdir -p "$STATE"
# Judge pods reach the broker and the mock provider on the node's bridge address.
host=127.0.0.1
if [[ "$BYOK_NODE" == "true" ]]; then
  # A release as users get it (README, Install): the image pushed to the cluster's registry and
  # signed, the packaged chart pinning it by digest, checksums and signatures, verified here.
  echo "[demo] making a release of this tree (hack/release.sh) and verifying it"
  release=$(BYOK_RELEASE_DIRTY=true bash hack/release.sh | tail -1)
  bash hack/release.sh verify "$release"
  host=10.244.0.1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("'"$host"'",0)); print(s.getsockname()[1])'; }
port=$(free_port)
"$BIN"/byok-mock-provider --listen "$host:$port" --latency-ms 50 >"$STATE/mock.log" 2>&1 &
echo $! >"$STATE/mock.pid"
mock=http://$host:$port

kubectl apply --server-side -f deploy/crds/ >/dev/null
kubectl wait --for condition=established crd/byokkeys.launchgate.ai crd/evaljobs.launchgate.ai --timeout=60s >/dev/null
kubectl create namespace byok-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create namespace byok-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace byok-demo launchgate.ai/evaljobs=enabled --overwrite >/dev/null # judge Jobs (byok-operator-jobs)

if [[ "$BYOK_NODE" == "true" ]]; then
  # The operator runs in the cluster: `helm install` of the packaged chart (2 replicas, one leader);
  # the image from the cluster's registry (a "private mirror": the chart's digest pins it).
  chart=$(ls "$release"/byok-operator-*.tgz)
  bash hack/helm.sh helm upgrade --install byok-operator "$chart" -n byok-system \
    --set image.repository="$BYOK_REGISTRY/byok/byok-operator" \
    --set logFormat=text --set providers.openai.baseURL="$mock/openai/v1" \
    --set providers.anthropic.baseURL="$mock/anthropic" --set providers.google.baseURL="$mock/google" \
    --set providers.azureOpenAI.baseURL="$mock/azure" >/dev/null
  echo "[demo] helm install $(basename "$chart") (image $(cut -d@ -f2 "$release/.pushed" | cut -c1-19)...); waiting for the leader to be Ready"
  for _ in $(seq 1 120); do
    [[ "$(kubectl get deploy byok-operator -n byok-system -o jsonpath='{.status.readyReplicas}')" == "1" ]] && break
    sleep 1
  done
  kubectl get pods -n byok-system -o wide
else
  bport=$(free_port)
  "$BIN"/byok-operator --namespace byok-system --log-format text --judge-image localhost/byok/byok-operator:dev \
    --broker-listen "$host:$bport" --broker-url "https://$host:$bport" \
    --openai-base-url "$mock/openai/v1" --anthropic-base-url "$mock/anthropic" \
    --google-base-url "$mock/google" --azure-base-url "$mock/azure" >"$STATE/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
fi

echo "[demo] applying deploy/samples/byokkeys.yaml (4 providers, one invalid key)"
kubectl apply -f deploy/samples/byokkeys.yaml >/dev/null
for _ in $(seq 1 300); do
  settled=$(kubectl get byokkeys -n byok-demo -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -cE '^(Ready|Invalid)$' || true)
  [[ "$settled" -ge 5 ]] && break
  sleep 0.2
done
echo
kubectl get byokkeys -n byok-demo
echo
echo "[demo] why openai-old is Invalid (its Events):"
kubectl get events -n byok-demo --field-selector involvedObject.name=openai-old \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message --no-headers | head -5
echo
echo "[demo] testing openai-main on demand (annotation launchgate.ai/test-requested):"
kubectl annotate byok -n byok-demo openai-main launchgate.ai/test-requested=demo-1 --overwrite >/dev/null
kubectl wait byok/openai-main -n byok-demo --for=jsonpath='{.status.lastTest.requestToken}'=demo-1 --timeout=60s >/dev/null
kubectl get byok -n byok-demo openai-main -o jsonpath='{.status.lastTest}'; echo
echo
echo "[demo] which KEK each key is sealed under:"
"$BIN"/byok-operator --namespace byok-system --log-format text kek status
echo
echo "[demo] Secrets left in byok-demo: only ciphertexts (sourcePolicy: Delete removed the plaintext sources):"
kubectl get secrets -n byok-demo -o custom-columns=NAME:.metadata.name,TYPE:.type --no-headers
echo
echo "[demo] searching etcd's whole keyspace for the sample keys (raw and base64):"
keys=$(grep -E '^\s+apiKey: ' deploy/samples/byokkeys.yaml | awk '{print $2}')
# shellcheck disable=SC2086
python3 hack/etcd-scan.py --control launchgate.ai/encrypted-key "$BYOK_ETCD_ENDPOINT" $keys
echo
echo "[demo] applying deploy/samples/evaljob.yaml (20 cases: an LLM judge and a contains check)"
kubectl apply -f deploy/samples/evaljob.yaml >/dev/null
kubectl wait evaljob/qa-smoke -n byok-demo --for=jsonpath='{.status.phase}'=Running --timeout=60s >/dev/null
job=$(kubectl get evaljob qa-smoke -n byok-demo -o jsonpath='{.status.jobName}')
for _ in $(seq 1 100); do
  pod=$(kubectl get pods -n byok-demo -l "batch.kubernetes.io/job-name=$job" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [[ -n "$pod" ]] && break
  sleep 0.2
done
if [[ "$BYOK_NODE" == "true" ]]; then
  echo "[demo] Job $job created judge pod $pod; it runs on node byok-node (kubelet, containerd, runc):"
  for _ in $(seq 1 120); do
    kubectl get evaljob qa-smoke -n byok-demo --no-headers 2>/dev/null | sed 's/^/  progress: /'
    phase=$(kubectl get evaljob qa-smoke -n byok-demo -o jsonpath='{.status.phase}')
    [[ "$phase" == "Succeeded" || "$phase" == "Failed" ]] && break
    sleep 1
  done
  kubectl get pods -n byok-demo -l "batch.kubernetes.io/job-name=$job" -o wide
else
  echo "[demo] Job $job created judge pod $pod (Pending: this local cluster has no node yet)."
  echo "[demo] Standing in for the kubelet: the pod's volumes are laid out in $STATE/pod, its tokens come from the"
  echo "       TokenRequest API bound to the real Pod, and its two containers run as local processes with the pod spec's commands."
  uid=$(kubectl get pod "$pod" -n byok-demo -o jsonpath='{.metadata.uid}')
  # The broker hands a key only to requests from the pod's own address, as the kubelet reports it.
  kubectl patch pod "$pod" -n byok-demo --subresource=status --type=merge \
    -p '{"status":{"podIP":"'"$host"'","podIPs":[{"ip":"'"$host"'"}]}}' >/dev/null
  P=$STATE/pod; rm -rf "$P"; mkdir -p "$P"/{key,cases,ca,broker-token,results-token}
  cm=$(kubectl get pod "$pod" -n byok-demo -o jsonpath='{.spec.volumes[?(@.name=="cases")].configMap.name}')
  kubectl get cm "$cm" -n byok-demo -o jsonpath='{.data.cases\.jsonl}' >"$P/cases/cases.jsonl"
  kubectl get cm "$cm" -n byok-demo -o jsonpath='{.data.config\.json}' >"$P/cases/config.json"
  kubectl get cm byok-broker-ca -n byok-demo -o jsonpath='{.data.ca\.crt}' >"$P/ca/ca.crt"
  for aud in broker:byok-broker.launchgate.ai results:byok-results.launchgate.ai; do
    kubectl create token default -n byok-demo --audience "${aud#*:}" --duration 10m \
      --bound-object-kind Pod --bound-object-name "$pod" --bound-object-uid "$uid" >"$P/${aud%%:*}-token/token"
  done
  # The pod's commands, with /var/run/byok/ mapped to $P.
  podcmd() { kubectl get pod "$pod" -n byok-demo -o json | python3 -c '
  import json, sys
  pod = json.load(sys.stdin); name, root = sys.argv[1], sys.argv[2]
  cs = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
  cmd = next(c["command"] for c in cs if c["name"] == name)
  print("\n".join(a.replace("/var/run/byok/", root + "/") for a in cmd[1:]))' "$1" "$P"; }
  mapfile -t fetch_args < <(podcmd fetch-key)
  mapfile -t judge_args < <(podcmd judge)
  POD_UID=$uid "$BIN"/byok-judge "${fetch_args[@]}"
  echo "[demo] key file: $(stat -c '%A %s bytes' "$P/key/key") (the pod mounts it from a memory-backed emptyDir)"
  POD_UID=$uid JOB_COMPLETION_INDEX=0 RUST_LOG=warn "$BIN"/byok-judge "${judge_args[@]}" &
  judge_pid=$!
  while kill -0 "$judge_pid" 2>/dev/null; do
    kubectl get evaljob qa-smoke -n byok-demo --no-headers 2>/dev/null | sed 's/^/  progress: /'
    sleep 1
  done
  wait "$judge_pid"
fi
kubectl wait evaljob/qa-smoke -n byok-demo --for=jsonpath='{.status.phase}'=Succeeded --timeout=60s >/dev/null
echo
kubectl get evaljobs -n byok-demo
echo
echo "[demo] summary:"
kubectl get evaljob qa-smoke -n byok-demo -o jsonpath='{.status.summary}' | python3 -m json.tool
echo "[demo] etcd after the evaluation (the key went to the pod only through the broker):"
# shellcheck disable=SC2086
python3 hack/etcd-scan.py --control launchgate.ai/encrypted-key "$BYOK_ETCD_ENDPOINT" $keys | tail -2
echo "[demo] per-case results: kubectl get cm -n byok-demo $(kubectl get evaljob qa-smoke -n byok-demo -o jsonpath='{range .status.resultsRef.configMaps[*]}{@} {end}')"
echo "[demo] the gate (spec.passCriteria, condition Passed; a pipeline uses kubectl byok eval run --wait, docs/ci.md):"
kubectl get evaljob qa-smoke -n byok-demo \
  -o jsonpath='{range .status.conditions[?(@.type=="Passed")]}  Passed={.status} ({.reason}): {.message}{"\n"}{end}'
"$BIN"/kubectl-byok -n byok-demo --operator-namespace byok-system eval report qa-smoke -o "$STATE/qa-smoke-report.html"
echo "[demo] report: $STATE/qa-smoke-report.html (one self-contained HTML file; open it in a browser)"
echo
if [[ "$BYOK_NODE" == "true" ]]; then oplog="kubectl logs -n byok-system deploy/byok-operator"; else oplog=$STATE/operator.log; fi
echo "[demo] done. KUBECONFIG=$KUBECONFIG; operator log: $oplog; stop with: hack/demo.sh down"
