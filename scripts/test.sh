#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and runs every check: formatting, clippy, and the
# whole test suite (unit tests, engine tests with real components, the CLI end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-examples.sh  # Rust, C, JavaScript and Python IVRs into target/examples (tests/languages.rs)
export CARGO_TERM_COLOR=never
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "[test] cargo test"
cargo test --workspace --exclude ivr-testbed-guest --exclude ivr-tree-guest
