#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from menu.c:
#   wit-bindgen c          wit/ivr.wit -> build/gen/ivr.h, ivr.c, ivr_component_type.o
#   clang (wasm32-wasi)    -> build/core.wasm, a core module
#   wasm-tools component   -> {{name}}.wasm
# Environment (defaults: found on PATH):
#   WIT_BINDGEN   wit-bindgen (crates.io wit-bindgen-cli {{wit_bindgen_cli}})
#   WASM_TOOLS    wasm-tools (crates.io wasm-tools)
#   CC            clang with the wasm32-wasi target (Debian: clang lld wasi-libc libclang-rt-dev-wasm32)
#   WASI_ADAPTER  wasi_snapshot_preview1.reactor.wasm, only needed once menu.c uses libc I/O
#                 (crates.io wasi-preview1-component-adapter-provider, artefacts/)
set -euo pipefail
cd "$(dirname "$0")"
NAME={{name}}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
CC=${CC:-clang}

die() { echo "build.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need "$WIT_BINDGEN" "cargo install wit-bindgen-cli --version {{wit_bindgen_cli}}, or set WIT_BINDGEN"
need "$WASM_TOOLS" "cargo install wasm-tools, or set WASM_TOOLS"
need "$CC" "install clang with the wasm32-wasi target, or set CC"

rm -rf build
mkdir -p build
gen_log=$("$WIT_BINDGEN" c wit --world ivr --out-dir build/gen 2>&1) || die "wit-bindgen c failed: $gen_log"
"$CC" --target=wasm32-wasi -Oz -mexec-model=reactor -Wall -Wextra \
  -Ibuild/gen -o build/core.wasm \
  menu.c build/gen/ivr.c build/gen/ivr_component_type.o -Wl,--strip-debug
adapt=()
# A core module that uses libc I/O imports WASI preview 1, which the adapter maps onto the
# component model (the runtime grants no files or network either way).
if grep -qa wasi_snapshot_preview1 build/core.wasm; then
  [ -n "${WASI_ADAPTER:-}" ] && [ -f "$WASI_ADAPTER" ] ||
    die "build/core.wasm imports wasi_snapshot_preview1: set WASI_ADAPTER to wasi_snapshot_preview1.reactor.wasm"
  adapt=(--adapt "wasi_snapshot_preview1=$WASI_ADAPTER")
fi
"$WASM_TOOLS" component new build/core.wasm "${adapt[@]}" -o "$NAME.wasm"
"$WASM_TOOLS" validate "$NAME.wasm"
echo "built $NAME.wasm ($(wc -c < "$NAME.wasm") bytes)"
