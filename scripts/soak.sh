#!/usr/bin/env bash
# The soak (not a test): `wasm-ivr serve` with the seed tree takes a steady churn of real SIPp
# calls for N minutes while its RSS, open descriptors, threads, tokio tasks, call records written
# and RTP sent are sampled every 10 s; prints the series and fails on growth (the rule is in
# scripts/soak/series.py and docs/RELIABILITY.md, "Soak").
#
# Four SIPp callers run side by side, each a share of the concurrent calls, every caller talking
# (rtp_stream) and pausing a random while before each key (scripts/soak/*.xml):
#   transfer     1 1 1 -> REFER, answered 202, NOTIFY 100 / 200, the IVR's BYE      30 %
#   suppress     9 -> do-not-call, the IVR's BYE                                    15 %
#   unqualified  1 2 -> the goodbye prompt, the IVR's BYE                           20 %
#   hangup       the caller's BYE at a random point (welcome, or after 1)           35 %
# SIPp keeps each share at its limit (-l), so calls start as fast as others end.
#
# Usage: bash scripts/soak.sh [--minutes 60] [--calls 200] [--bin PATH] [--interval 10]
#                             [--rss-pct 10] [--max-failed-pct 5] [--out DIR] [--self-test]
#   --bin PATH     the wasm-ivr binary to soak (default: `cargo build --release`, then
#                  target/release/wasm-ivr; pass target/debug/wasm-ivr for a quick run)
#   --out DIR      keep the run's files there (default: a temporary folder, removed on success)
#   --self-test    only check the growth rule against synthetic series (seconds, no server)
# Everything runs on 127.0.0.1 with free ports; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SERIES="$ROOT/scripts/soak/series.py"

MINUTES=60
CALLS=200
BIN=""
INTERVAL=10
RSS_PCT=10
MAX_FAILED_PCT=5
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --interval) INTERVAL=$2; shift 2 ;;
        --rss-pct) RSS_PCT=$2; shift 2 ;;
        --max-failed-pct) MAX_FAILED_PCT=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --self-test) exec python3 "$SERIES" self-test ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$MINUTES$CALLS" in *[!0-9]*) echo "soak: --minutes and --calls take whole numbers" >&2; exit 2 ;; esac
if [ "$MINUTES" -lt 1 ] || [ "$CALLS" -lt 4 ]; then
    echo "soak: at least --minutes 1 and --calls 4 (one per caller scenario)" >&2
    exit 2
fi
for tool in sipp sox python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is needed (scripts/setup.sh)" >&2; exit 2; }
done
# A broken judge would make the whole run meaningless: check it first.
python3 "$SERIES" self-test >/dev/null || { echo "soak: the growth rule fails its self-test" >&2; exit 1; }

if [ -z "$BIN" ]; then
    cargo build --release --bin wasm-ivr
    BIN=target/release/wasm-ivr
fi
BIN=$(realpath "$BIN")
[ -x "$BIN" ] || { echo "soak: $BIN is not an executable" >&2; exit 2; }

if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    WORK=$(realpath "$OUT")
else
    WORK=$(mktemp -d /tmp/wasm-ivr-soak.XXXXXX)
fi
# Every call holds sockets on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PIDS=()
LIMITS=()
SERVER=""
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}" $SERVER; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}" $SERVER; do
        # SIPp and the server stop on SIGTERM within a second or two; then they are made to.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "$rc" -eq 0 ] && [ -z "$OUT" ]; then
        rm -rf "$WORK"
    else
        echo "soak: the run's files are in $WORK" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: the SIP listener (UDP), the HTTP API, and 4 SIPp signalling ports.
read -r SIP_PORT HTTP_PORT P1 P2 P3 P4 < <(python3 - <<'EOF'
import socket
socks, ports = [], []
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM) + (socket.SOCK_DGRAM,) * 4:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
print(*ports)
EOF
)
SIPP_PORTS=("$P1" "$P2" "$P3" "$P4")

mkdir -p "$WORK/ivrs" "$WORK/traces" "$WORK/cache"
cp examples/plumber-qualifier/plumber-qualifier.json examples/plumber-qualifier/routes.toml "$WORK/ivrs/"
cp -r examples/plumber-qualifier/audio "$WORK/ivrs/audio"
# The callers' voice: a seed prompt as raw mu-law (-D: no dither, the same bytes every run).
sox -D examples/plumber-qualifier/audio/welcome.wav -r 8000 -c 1 -t ul "$WORK/talk.ulaw"

# Retention is on with small caps so the soak also exercises pruning; records_max stays high so
# the records written keep rising (the judge checks that the churn never stalled).
cat > "$WORK/wasm-ivr.toml" <<EOF
[sip]
listen = ["udp:127.0.0.1:$SIP_PORT"]
rtp_ports = "20000-29999"
max_calls = $((CALLS * 2 + 10))
rate_limit = 0

[ivrs]
dir = "$WORK/ivrs"

[calls]
traces_dir = "$WORK/traces"
traces_keep = 500

[store]
path = "$WORK/wasm-ivr.db"

[transfer]
mode = "refer"
default = "sip:agent@127.0.0.1:5085"
timeout_s = 30

[http]
listen = "127.0.0.1:$HTTP_PORT"
EOF

echo "soak: $BIN, $MINUTES min, $CALLS calls at once, samples every ${INTERVAL}s, files in $WORK"
RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$WORK/wasm-ivr.toml" --cache-dir "$WORK/cache" \
    >"$WORK/server.log" 2>&1 &
SERVER=$!
METRICS="http://127.0.0.1:$HTTP_PORT/metrics"
for _ in $(seq 1 240); do
    kill -0 "$SERVER" 2>/dev/null || { echo "soak: the server exited" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$METRICS" 2>/dev/null && break
    sleep 0.5
done
sample() {
    python3 "$SERIES" sample --pid "$SERVER" --metrics "$METRICS" --store "$WORK/wasm-ivr.db" \
        --out "$WORK/series.csv" --t0-file "$WORK/t0" --interval "$INTERVAL" "$@"
}
sample --phase idle --once

# The shares of the concurrent calls; SIPp starts calls at up to half its limit per second
# and never holds more than the limit.
NAMES=(transfer suppress unqualified hangup)
SHARES=(30 15 20 35)
MEDIA=(30000 36000 42000 48000)
for i in 0 1 2 3; do
    name=${NAMES[$i]}
    if [ "$i" -lt 3 ]; then
        limit=$(( (CALLS * SHARES[i] + 50) / 100 ))
    else
        limit=$(( CALLS - ${LIMITS[0]} - ${LIMITS[1]} - ${LIMITS[2]} ))
    fi
    [ "$limit" -ge 1 ] || limit=1
    LIMITS[$i]=$limit
    rate=$(( (limit + 1) / 2 ))
    (
        cd "$WORK"
        exec sipp "127.0.0.1:$SIP_PORT" -sf "$ROOT/scripts/soak/$name.xml" -s +14155559876 \
            -i 127.0.0.1 -mi 127.0.0.1 -p "${SIPP_PORTS[$i]}" -mp "${MEDIA[$i]}" \
            -l "$limit" -r "$rate" -aa -nostdin -cid_str "soak-$name-%u@%s" \
            -trace_stat -stf "$WORK/${name}_stat.csv" -fd "$INTERVAL" \
            -trace_err -error_file "$WORK/${name}_errors.log" \
            -trace_screen -screen_file "$WORK/${name}_screen.log" \
            >"$WORK/${name}_sipp.out" 2>&1
    ) &
    PIDS+=($!)
    echo "soak: caller $name: at most $limit calls, up to $rate new per second"
done

sample --phase churn --stop "$WORK/stop" &
SAMPLER=$!
PIDS+=("$SAMPLER")
END=$(( $(date +%s) + MINUTES * 60 ))
while [ "$(date +%s)" -lt "$END" ]; do
    kill -0 "$SERVER" 2>/dev/null || { echo "soak: the server died during the churn" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    for i in 0 1 2 3; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            echo "soak: SIPp (${NAMES[$i]}) stopped early:" >&2
            tail -20 "$WORK/${NAMES[$i]}_sipp.out" "$WORK/${NAMES[$i]}_errors.log" >&2 || true
            exit 1
        fi
    done
    sleep 5
done
touch "$WORK/stop"
wait "$SAMPLER" || true

# SIGUSR1 makes SIPp stop placing calls and leave when its calls are done (the longest lasts
# well under a minute); the stragglers get SIGINT (SIPp then aborts its calls and writes its
# statistics).
for i in 0 1 2 3; do kill -USR1 "${PIDS[$i]}" 2>/dev/null || true; done
for _ in $(seq 1 120); do
    alive=0
    for i in 0 1 2 3; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 1
done
for i in 0 1 2 3; do kill -INT "${PIDS[$i]}" 2>/dev/null || true; done
sleep 2

# Drained: no call active, then a moment for the last tasks (retention, trace writes) to finish.
for _ in $(seq 1 120); do
    active=$(python3 -c "
import re,sys,urllib.request
t=urllib.request.urlopen(sys.argv[1],timeout=5).read().decode()
m=re.search(r'^wasm_ivr_calls_active (\d+)$',t,re.M); print(m.group(1) if m else -1)" "$METRICS" 2>/dev/null || echo -1)
    [ "$active" = "0" ] && break
    sleep 1
done
sleep 5
sample --phase drain --once >/dev/null

echo
echo "soak: the series ($MINUTES min, $CALLS calls at once)"
status=0
python3 "$SERIES" analyze "$WORK/series.csv" --calls "$CALLS" --rss-pct "$RSS_PCT" || status=1
stats=()
for name in "${NAMES[@]}"; do stats+=("$WORK/${name}_stat.csv"); done
python3 "$SERIES" sipp "${stats[@]}" --max-failed-pct "$MAX_FAILED_PCT" || status=1
warnings=$(grep -c -E ' (WARN|ERROR) ' "$WORK/server.log" || true)
echo "  server log: $warnings warning/error lines"
if [ "$warnings" -gt 0 ]; then
    # The distinct messages, without the call ids and times that make every line unique.
    sed -E 's/^[^ ]+ +//; s/call_id=[^ ]+//g' "$WORK/server.log" | grep -E '^(WARN|ERROR)' \
        | sort | uniq -c | sort -rn | head -8 | sed 's/^/    /'
fi
if [ "$status" -ne 0 ]; then
    echo "soak: FAILED"
    exit 1
fi
echo "soak: passed"
