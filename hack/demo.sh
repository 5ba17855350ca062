#!/usr/bin/env bash
# The demo: builds what it needs, starts a local control plane, the mock provider and the
# operator, applies deploy/samples/, shows the keys, and proves etcd holds no plaintext key.
# The cluster keeps running afterwards for you to explore; `hack/demo.sh down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=target/demo
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
echo "[demo] building byok-operator"
cargo build --quiet --bins
bash hack/cluster.sh up
eval "$(bash hack/cluster.sh env)"
mkdir -p "$STATE"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/byok-mock-provider --listen "127.0.0.1:$port" --latency-ms 50 >"$STATE/mock.log" 2>&1 &
echo $! >"$STATE/mock.pid"
mock=http://127.0.0.1:$port

kubectl apply --server-side -f deploy/crds/ >/dev/null
kubectl wait --for condition=established crd/byokkeys.launchgate.ai crd/evaljobs.launchgate.ai --timeout=60s >/dev/null
kubectl create namespace byok-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create namespace byok-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null

bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/byok-operator --namespace byok-system --log-format text \
  --broker-listen "127.0.0.1:$bport" --broker-url "https://127.0.0.1:$bport" \
  --openai-base-url "$mock/openai/v1" --anthropic-base-url "$mock/anthropic" \
  --google-base-url "$mock/google" --azure-base-url "$mock/azure" >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/operator.pid"

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
target/debug/byok-operator --namespace byok-system --log-format text kek status
echo
echo "[demo] Secrets left in byok-demo: only ciphertexts (sourcePolicy: Delete removed the plaintext sources):"
kubectl get secrets -n byok-demo -o custom-columns=NAME:.metadata.name,TYPE:.type --no-headers
echo
echo "[demo] searching etcd's whole keyspace for the sample keys (raw and base64):"
keys=$(grep -E '^\s+apiKey: ' deploy/samples/byokkeys.yaml | awk '{print $2}')
# shellcheck disable=SC2086
python3 hack/etcd-scan.py --control launchgate.ai/encrypted-key "$BYOK_ETCD_ENDPOINT" $keys
echo
echo "[demo] done. KUBECONFIG=$KUBECONFIG; operator log: $STATE/operator.log; stop with: hack/demo.sh down"
