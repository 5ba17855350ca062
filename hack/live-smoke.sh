#!/usr/bin/env bash
# Live smoke test against the real provider APIs (opt-in; never run in CI).
#
# For each provider whose key is in the environment, runs `byok-judge smoke`: the key is validated
# exactly as the operator validates a ByokKey, then three fixed cases (a right answer, a wrong one,
# a borderline one) are scored by llm_judge through the judge pod's own code. Prints a table:
# provider | model | key prefix | validation | cases (pass/fail/error) | scores | tokens | time.
# Costs a few cents of tokens per provider.
#
# Keys (any subset; a provider without one is skipped):
#   OPENAI_API_KEY
#   ANTHROPIC_API_KEY
#   GEMINI_API_KEY (or GOOGLE_API_KEY)
#   AZURE_OPENAI_API_KEY with AZURE_OPENAI_ENDPOINT (https://<resource>.openai.azure.com) and
#     AZURE_OPENAI_DEPLOYMENT, optionally AZURE_OPENAI_API_VERSION (the v1 API when unset)
# Models (optional; the operator's defaults otherwise):
#   BYOK_SMOKE_OPENAI_MODEL, BYOK_SMOKE_ANTHROPIC_MODEL, BYOK_SMOKE_GOOGLE_MODEL
#
# Usage: hack/live-smoke.sh [--require-keys] [--release] [--mock[=URL]]
#   --require-keys  exit 2 when no key at all is set (release checks), instead of skipping
#   --release       build byok-judge with --release (default: the debug build)
#   --mock[=URL]    point every provider at a running byok-mock-provider on loopback (default
#                   $BYOK_SMOKE_MOCK_URL, else http://127.0.0.1:8090): tests this script offline.
#                   Setting BYOK_SMOKE_MOCK_URL alone does the same.
# BYOK_JUDGE_BIN: use this byok-judge binary instead of building one (CARGO_TARGET_DIR is honoured
# when building).
# Exit: 0 every provider with a key passed (or none had a key), 1 a provider failed, 2 usage
# error or --require-keys without keys.
#
# Keys never appear on a command line (the judge reads its key from BYOK_SMOKE_KEY, set in its own
# environment only), in the output (only 8-character prefixes) or in a trace.
set +x # `bash -x hack/live-smoke.sh` would print the keys: tracing is off whatever the caller says
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEY_VARS=(OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY GOOGLE_API_KEY AZURE_OPENAI_API_KEY BYOK_SMOKE_KEY)
PROVIDERS=(openai anthropic google azure_openai)

usage() {
  sed -n '2,/^set +x/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

require_keys=false
profile=debug
mock_url=${BYOK_SMOKE_MOCK_URL:-}
for arg in "$@"; do
  case $arg in
    --require-keys) require_keys=true ;;
    --release) profile=release ;;
    --mock) mock_url=${BYOK_SMOKE_MOCK_URL:-http://127.0.0.1:8090} ;;
    --mock=*) mock_url=${arg#--mock=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "live-smoke: unknown argument (see --help)" >&2; exit 2 ;;
  esac
done

# The variable holding each provider's key ("" when none is set).
key_var() {
  local name
  case $1 in
    openai) name=OPENAI_API_KEY ;;
    anthropic) name=ANTHROPIC_API_KEY ;;
    google) if [[ -n ${GEMINI_API_KEY:-} ]]; then name=GEMINI_API_KEY; else name=GOOGLE_API_KEY; fi ;;
    azure_openai) name=AZURE_OPENAI_API_KEY ;;
  esac
  if [[ -n ${!name:-} ]]; then echo "$name"; fi
}

key_hint() {
  case $1 in
    google) echo "GEMINI_API_KEY or GOOGLE_API_KEY" ;;
    *) echo "$(tr '[:lower:]' '[:upper:]' <<<"$1")_API_KEY" ;;
  esac
}

have_keys=false
for provider in "${PROVIDERS[@]}"; do
  if [[ -n $(key_var "$provider") ]]; then have_keys=true; fi
done
if [[ $have_keys == false ]]; then
  {
    echo "================================================================================"
    echo "SKIPPED: no provider keys in the environment (set OPENAI_API_KEY, ANTHROPIC_API_KEY,"
    echo "GEMINI_API_KEY or GOOGLE_API_KEY, and/or AZURE_OPENAI_API_KEY with AZURE_OPENAI_ENDPOINT"
    echo "and AZURE_OPENAI_DEPLOYMENT). Nothing was checked against the provider APIs."
    echo "================================================================================"
  } >&2
  if [[ $require_keys == true ]]; then
    echo "live-smoke: --require-keys: failing" >&2
    exit 2
  fi
  exit 0
fi

base_urls=()
if [[ -n $mock_url ]]; then
  mock_url=${mock_url%/}
  # Real keys may be in the environment: they go nowhere but to this machine.
  loopback='^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])(:[0-9]+)?$'
  if [[ ! $mock_url =~ $loopback ]]; then
    echo "live-smoke: the mock URL must be http://<loopback address>[:port]" >&2
    exit 2
  fi
  base_urls=(--openai-base-url "$mock_url/openai/v1" --anthropic-base-url "$mock_url/anthropic"
    --google-base-url "$mock_url/google" --azure-base-url "$mock_url/azure")
  echo "live-smoke: MOCK MODE: every provider points at $mock_url, not at the real APIs" >&2
else
  echo "live-smoke: calling the real provider APIs (a few cents of tokens per provider)" >&2
fi

if [[ -n ${BYOK_JUDGE_BIN:-} ]]; then
  bin=$BYOK_JUDGE_BIN
else
  flags=()
  if [[ $profile == release ]]; then flags=(--release); fi
  # Built without the keys in its environment (build scripts run code from dependencies).
  (cd "$ROOT" && unset "${KEY_VARS[@]}" && cargo build ${flags[@]+"${flags[@]}"} --bin byok-judge)
  target=${CARGO_TARGET_DIR:-target}
  if [[ $target != /* ]]; then target=$ROOT/$target; fi
  bin=$target/$profile/byok-judge
fi
if [[ ! -x $bin ]]; then
  echo "live-smoke: $bin is not an executable byok-judge" >&2
  exit 2
fi

rows=$(mktemp "${TMPDIR:-/tmp}/byok-live-smoke.XXXXXX")
trap 'rm -f "$rows"' EXIT

note() { # provider skipped message (message: fixed text only, it is not JSON-escaped)
  printf '{"provider":"%s","skipped":%s,"message":"%s"}\n' "$1" "$2" "$3" >>"$rows"
}

for provider in "${PROVIDERS[@]}"; do
  var=$(key_var "$provider")
  if [[ -z $var ]]; then
    note "$provider" true "no $(key_hint "$provider") in the environment"
    continue
  fi
  args=(smoke --provider "$provider" ${base_urls[@]+"${base_urls[@]}"})
  case $provider in
    openai) model=${BYOK_SMOKE_OPENAI_MODEL:-} ;;
    anthropic) model=${BYOK_SMOKE_ANTHROPIC_MODEL:-} ;;
    google) model=${BYOK_SMOKE_GOOGLE_MODEL:-} ;;
    azure_openai)
      model=
      if [[ -z ${AZURE_OPENAI_ENDPOINT:-} || -z ${AZURE_OPENAI_DEPLOYMENT:-} ]]; then
        note "$provider" false "AZURE_OPENAI_API_KEY is set but AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_DEPLOYMENT are not both set"
        continue
      fi
      args+=(--azure-endpoint "$AZURE_OPENAI_ENDPOINT" --azure-deployment "$AZURE_OPENAI_DEPLOYMENT")
      if [[ -n ${AZURE_OPENAI_API_VERSION:-} ]]; then args+=(--azure-api-version "$AZURE_OPENAI_API_VERSION"); fi
      ;;
  esac
  if [[ -n $model ]]; then args+=(--model "$model"); fi
  echo "live-smoke: $provider: validating the key in $var and judging 3 cases..." >&2
  status=0
  # The judge gets this one key, in its environment only: no other provider's key, no argv.
  out=$(
    key=${!var}
    unset "${KEY_VARS[@]}"
    export BYOK_SMOKE_KEY=$key
    unset key
    exec "$bin" "${args[@]}"
  ) || status=$?
  line=$(tail -n 1 <<<"$out")
  if [[ $line == "{"* ]]; then
    printf '%s\n' "$line" >>"$rows"
  else
    note "$provider" false "byok-judge smoke exited with status $status without a result (its error is above)"
  fi
done

echo >&2
"$bin" smoke-table <"$rows"
