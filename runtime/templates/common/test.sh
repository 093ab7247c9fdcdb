#!/usr/bin/env bash
# Tests {{name}}.wasm: builds it when a source is newer (./build.sh), then plays scripted calls
# through `wasm-ivr simulate` (a virtual caller and clock, no network) and checks the path each
# call takes and how it ends. Exits non-zero if any call goes elsewhere.
# Environment: WASM_IVR, the wasm-ivr binary (default: wasm-ivr on PATH).
set -euo pipefail
cd "$(dirname "$0")"
NAME={{name}}
WASM_IVR=${WASM_IVR:-wasm-ivr}
if ! command -v "$WASM_IVR" >/dev/null 2>&1; then
  echo "test.sh: wasm-ivr not found: put it on PATH or set WASM_IVR" >&2
  exit 2
fi

stale=0
[ -f "$NAME.wasm" ] || stale=1
for source in {{sources}}; do
  if [ -e "$source" ] && [ -n "$(find "$source" -newer "$NAME.wasm" -print -quit 2>/dev/null)" ]; then
    stale=1
  fi
done
if [ "$stale" -eq 1 ]; then
  ./build.sh
fi

failures=0

# expect KEYS PATH OUTCOME [simulate flags...]
#   KEYS: the caller's script, one token per gather: keys (`1`, `123#`), `timeout`, `hangup`.
#   PATH: the expected step labels as JSON, `["menu","sales"]`.
#   OUTCOME: text the JSON `outcome` must contain (whitespace removed), `"action":"hangup"`.
expect() {
  local keys=$1 path=$2 outcome=$3
  shift 3
  local report flat
  if ! report=$("$WASM_IVR" simulate "$NAME.wasm" --keys "$keys" --json "$@" 2>&1); then
    printf 'FAIL  keys "%s"%s: wasm-ivr simulate failed:\n%s\n' "$keys" "${*:+ $*}" "$report"
    failures=$((failures + 1))
    return
  fi
  flat=$(printf '%s' "$report" | tr -d ' \t\r\n')
  local outcome_part=${flat#*\"outcome\":}
  if [[ $flat != *"\"path\":$path"* ]] || [[ $outcome_part != *"$outcome"* ]]; then
    printf 'FAIL  keys "%s"%s: expected path %s and outcome %s, got:\n%s\n' \
      "$keys" "${*:+ $*}" "$path" "$outcome" "$report"
    failures=$((failures + 1))
    return
  fi
  printf 'ok    keys "%s"%s -> %s\n' "$keys" "${*:+ $*}" "$path"
}

# 1 reaches sales: a transfer to extension 100.
expect "1" '["menu","sales"]' '{"internal":"100"}'
# 2 hears the hours and comes back to the menu; then 1.
expect "2 1" '["menu","hours","menu","sales"]' '"action":"transfer"'
# The transfer fails: an apology, then the IVR hangs up.
expect "1" '["menu","sales","busy"]' '"action":"hangup"' --transfer-fails busy
# An unknown key, then silence twice: two retries, then goodbye.
expect "7 timeout timeout" '["menu","retry","menu","retry","menu","goodbye"]' '"action":"hangup"'

if [ "$failures" -gt 0 ]; then
  echo "$failures call(s) failed"
  exit 1
fi
echo "all calls passed"
