#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from src/lib.rs.
# Needs Rust with the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
# Environment: CARGO (default: cargo), CARGO_TARGET_DIR (default: ./target).
set -euo pipefail
cd "$(dirname "$0")"
NAME={{name}}
CARGO=${CARGO:-cargo}
command -v "$CARGO" >/dev/null 2>&1 || { echo "build.sh: cargo not found (install Rust, or set CARGO)" >&2; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-target}
"$CARGO" build --quiet --release --target wasm32-wasip2 --target-dir "$TARGET_DIR"
cp "$TARGET_DIR/wasm32-wasip2/release/{{crate}}.wasm" "$NAME.wasm"
echo "built $NAME.wasm ($(wc -c < "$NAME.wasm") bytes)"
