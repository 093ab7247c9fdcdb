#!/usr/bin/env bash
# The trusted-trunk benchmark (not a test): a release build of wasm-ivr serves the seed IVR on
# loopback with [sip] trusted = ["127.0.0.1/32"] and a low rate_limit, and SIPp places short
# calls (tests/sipp/uac_load_call.xml: INVITE, 200, ACK, BYE) from 127.0.0.1 at RATE calls/s.
# Prints SIPp's totals, whether the server ever banned the trunk, and the server's CPU time.
# Usage: bash scripts/bench-trunk.sh [RATE=800] [COUNT=4000]
# Passes when every call succeeded and the trunk was never banned.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-800}
count=${2:-4000}
cargo build --release --bin wasm-ivr
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r examples/plumber-qualifier "$work/ivrs"
cat > "$work/wasm-ivr.toml" <<TOML
[sip]
max_calls = 2000
trusted = ["127.0.0.1/32"]
rate_limit = 50

[store]
path = "$work/wasm-ivr.db"

[http]
listen = "off"
TOML
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=info target/release/wasm-ivr serve --config "$work/wasm-ivr.toml" --dir "$work/ivrs" \
  --sip-listen udp:127.0.0.1:0 --rtp-ports 30000-31999 >"$work/ready" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 600); do grep -q ready "$work/ready" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o 'udp:127.0.0.1:[0-9]*' "$work/ready" | head -1 | cut -d: -f3)
[ -n "$port" ] || { echo "the server did not start"; cat "$work/server.log"; exit 1; }
echo "wasm-ivr (pid $server) on udp 127.0.0.1:$port; SIPp: $count calls at $rate calls/s"
set +e
sipp "127.0.0.1:$port" -sf tests/sipp/uac_load_call.xml -s +14155559876 -i 127.0.0.1 \
  -r "$rate" -m "$count" -l $((rate * 4)) -recv_timeout 10000 -nostdin \
  -timeout $((count / rate + 60))s -timeout_error \
  -trace_stat -fd 1 -stf "$work/stats.csv" >/dev/null 2>&1
sipp_exit=$?
set -e
cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$server/stat")
python3 - "$work/stats.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
head, last = rows[0], rows[-1]
get = lambda n: last[head.index(n)]
print(f"created {get('TotalCallCreated')}, successful {get('SuccessfulCall(C)')}, "
      f"failed {get('FailedCall(C)')}, elapsed {get('ElapsedTime(C)')}")
PY
echo "server CPU: ${cpu} s"
if grep -q "source banned" "$work/server.log"; then echo "the trunk was BANNED"; exit 1; fi
echo "never banned; SIPp exit $sipp_exit"
exit "$sipp_exit"
