#!/usr/bin/env bash
# The load benchmark (not a test): builds the release binary and the load generator, then runs
# N concurrent calls with prompt playback on loopback and prints setup latency, RTP
# inter-packet delta and jitter (p50/p99/max), server CPU per call-second and RSS per call.
# Usage: bash scripts/bench.sh [--calls 1000] [--rate 100] [--hold 20]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin wasm-ivr --example loadgen
# Each call holds a socket on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/examples/loadgen "$@"
