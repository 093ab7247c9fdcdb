#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz + libFuzzer) for SECONDS each (default 60) and
# prints, per target: seconds, executions, corpus size and crashes. Long runs belong here, not
# in CI; record the figures of a real run in docs/RELIABILITY.md.
#
#   bash scripts/fuzz.sh            # 60 s per target
#   bash scripts/fuzz.sh 600        # the 10-minute run the reliability notes ask for
#   bash scripts/fuzz.sh 30 sdp     # one target
#   FUZZ_DEV=1 bash scripts/fuzz.sh 20   # unoptimised build: much quicker to build, slower to run
#
# Set-up: installs cargo-fuzz into target/tools (once). It builds on the stable toolchain with
# `--sanitizer none` (libFuzzer's coverage instrumentation needs no nightly); the targets
# assert their own invariants, so a broken invariant is a crash like a panic is.
# Seed corpora are made from the repository and ../shared: the RFC 4475/5118 torture messages,
# the example trees, prompts and routes, SIPp's RFC 2833 pcaps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-60}
ONLY=${2:-}
TOOLS=$ROOT/target/tools
export PATH="$TOOLS/bin:$PATH"
log() { printf '[fuzz] %s\n' "$*"; }

bash scripts/setup.sh >/dev/null
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  log "installing cargo-fuzz into target/tools (once)"
  cargo install --quiet --locked cargo-fuzz --root "$TOOLS"
fi

SHARED=$ROOT/../shared
[ -d "$SHARED/sip-torture" ] || SHARED=/work/shared
[ -d "$SHARED/sip-torture" ] || { log "no shared/sip-torture beside the repository"; exit 1; }

CORPUS=$ROOT/fuzz/corpus
seed() { # seed TARGET FILE...
  local dir=$CORPUS/$1; shift
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] && cp -f "$f" "$dir/$(basename "$(dirname "$f")")-$(basename "$f")"
  done
}
torture=("$SHARED"/sip-torture/rfc4475/* "$SHARED"/sip-torture/rfc5118/*)
seed sip_datagrams "${torture[@]}"
seed sip_stream "${torture[@]}"
python3 - "$CORPUS" "${torture[@]}" <<'EOF'
import sys, pathlib, struct, glob
corpus = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    data = pathlib.Path(name).read_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"v=0" in body:
        d = corpus / "sdp"; d.mkdir(parents=True, exist_ok=True)
        (d / pathlib.Path(name).name).write_bytes(body)
# RTP packets from SIPp's RFC 2833 pcaps (Ethernet + IPv4 + UDP = 42 bytes of headers).
d = corpus / "rtp_receive"; d.mkdir(parents=True, exist_ok=True)
for pcap in sorted(glob.glob("/usr/share/sip-tester/dtmf_2833_*.pcap")):
    raw = pathlib.Path(pcap).read_bytes()
    off, packets = 24, []
    while off + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, off + 8)[0]
        frame = raw[off + 16: off + 16 + incl]
        if len(frame) > 42:
            packets.append(frame[42:])
        off += 16 + incl
    (d / pathlib.Path(pcap).stem).write_bytes(b"\x00\xff\x00\xff".join(packets))
d = corpus / "sip_info"; d.mkdir(parents=True, exist_ok=True)
(d / "relay").write_bytes(b"\x00Signal=5\r\nDuration=160\r\n")
(d / "dtmf").write_bytes(b"\x01" + b"#")
EOF
seed prompt_load examples/carrier-menu/audio/invalid.wav
mkdir -p "$CORPUS/inband_dtmf"
head -c 16044 examples/carrier-menu/audio/invalid.wav | tail -c 16000 | { printf '\x9f'; cat; } \
  > "$CORPUS/inband_dtmf/invalid-wav-samples"
seed tree_json examples/*/*.json tests/fixtures/calls/*/*.json
seed routes_toml examples/*/routes.toml tests/fixtures/calls/*/routes.toml

cd fuzz
profile=-O
[ -n "${FUZZ_DEV:-}" ] && profile=--dev
# The main workspace's lock file, so the targets build the same dependency versions.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
targets=$(cargo fuzz list)
[ -n "$ONLY" ] && targets=$ONLY
log "building targets: $(echo $targets | tr '\n' ' ')"
for t in $targets; do cargo fuzz build --sanitizer none $profile "$t" 2>&1 | tail -3; done

printf '%-16s %8s %12s %8s %8s\n' target seconds executions corpus crashes
failed=0
for t in $targets; do
  mkdir -p "artifacts/$t"
  out=$(mktemp)
  set +e
  cargo fuzz run --sanitizer none $profile "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=70000 \
    -print_final_stats=1 >"$out" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo 0)
  size=$(ls "corpus/$t" | wc -l)
  crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  printf '%-16s %8s %12s %8s %8s\n' "$t" "$SECONDS_PER_TARGET" "${execs:-0}" "$size" "$crashes"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    log "$t failed (exit $rc); its log:"
    tail -40 "$out"
  fi
  rm -f "$out"
done
exit $failed
