#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), builds wasm-ivr and serves the demo IVR folder
# (examples/plumber-qualifier). Extra arguments go to `wasm-ivr serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin wasm-ivr
exec target/release/wasm-ivr serve --dir examples/plumber-qualifier "$@"
