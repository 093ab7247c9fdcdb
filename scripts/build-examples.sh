#!/usr/bin/env bash
# Builds the example IVRs in every language into target/examples/, installing the language
# toolchains it needs first (idempotently, from the registries):
#
#   target/examples/rust-hours.wasm  (+ .toml)   Rust, wasm-ivr-sdk          cargo
#   target/examples/c-menu.wasm                  C, wit-bindgen c + clang    apt + cargo install
#   target/examples/js-menu.wasm     (+ .toml)   JavaScript, componentize-qjs npm (in the example)
#   target/examples/python-menu.wasm (+ .toml)   Python, componentize-py     pip (venv in target/)
#   target/examples/polyglot/                    main.json + python-sub.wasm (the Python menu)
#
# Tools go under target/ (target/tools/bin for cargo-installed ones, target/py-venv for pip),
# node packages into examples/js-menu/node_modules; Debian packages with apt-get. An example is
# rebuilt only when one of its inputs is newer than its output, so running this again is quick.
# Needs: Rust 1.95 with the wasm32-wasip2 target (scripts/setup.sh), Debian, network for the
# first run. Usage: scripts/build-examples.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/examples
TOOLS=$ROOT/target/tools
VENV=$ROOT/target/py-venv
WIT=$ROOT/wit

# Pinned versions: wit-bindgen matches the workspace's wit-bindgen crate; wasm-tools per
# docs TOOLCHAIN.md; componentize-py and componentize-qjs as checked (the latter in
# examples/js-menu/package-lock.json).
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
COMPONENTIZE_PY_VERSION=0.25.1
ADAPTER_VERSION=48.0.8

FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf '[build-examples] %s\n' "$*"; }
die() { printf '[build-examples] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- toolchains --------------------------------------------------------------------------------

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The archive sometimes refuses the first attempt ("cannot access archive"); a second works.
  for attempt in 1 2 3; do
    if $SUDO apt-get install -y -qq --no-install-recommends "$@"; then return 0; fi
    [ "$attempt" -eq 3 ] && die "apt-get install $* failed three times"
    log "apt-get install failed (attempt $attempt), retrying"
    sleep 2
  done
}

ensure_apt_packages() {
  # clang 14 + wasm-ld + wasi-libc + the wasm32 compiler runtime for C; node/npm for the
  # JavaScript build; python3-venv for the componentize-py venv.
  local wanted=(clang lld wasi-libc libclang-rt-dev-wasm32)
  command -v npm >/dev/null 2>&1 || wanted+=(nodejs npm)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || wanted+=(python3 python3-venv)
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# cargo_tool BINARY CRATE VERSION [extra cargo install args]
cargo_tool() {
  local bin=$1 crate=$2 version=$3
  shift 3
  if "$TOOLS/bin/$bin" --version 2>/dev/null | grep -q " $version"; then return 0; fi
  log "cargo install $crate $version (into target/tools; takes a few minutes once)"
  cargo install --locked --quiet --root "$TOOLS" "$crate" --version "$version" "$@"
}

ensure_cargo_tools() {
  cargo_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION"
  cargo_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" \
    --no-default-features --features component,validate
}

ensure_venv() {
  if ! "$VENV/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
    log "pip install componentize-py==$COMPONENTIZE_PY_VERSION (venv in target/py-venv)"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "componentize-py==$COMPONENTIZE_PY_VERSION"
  fi
}

ensure_node_modules() {
  local dir=$ROOT/examples/js-menu
  if [ ! -x "$dir/node_modules/.bin/componentize-qjs" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    # `npm install` from the lock file, not `npm ci`: componentize-qjs 0.4.5 lists optional
    # native bindings that were never published (linux-arm64-musl, win32-*), so the lock file
    # cannot contain them and npm 11's `ci` refuses it as out of sync.
    log "npm install (from package-lock.json) in examples/js-menu"
    (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error)
  fi
}

# The WASI preview1 adapter, from the crates.io crate that ships it (only needed when a C core
# module imports wasi_snapshot_preview1, e.g. once it uses stdio).
adapter() {
  local fetch=$ROOT/target/adapter-fetch
  mkdir -p "$fetch/src"
  cat > "$fetch/Cargo.toml" <<EOF
[package]
name = "adapter-fetch"
version = "0.0.0"
edition = "2024"
publish = false
[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
[workspace]
EOF
  : > "$fetch/src/lib.rs"
  local src
  src=$(cd "$fetch" && cargo metadata --format-version 1 --quiet |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="wasi-preview1-component-adapter-provider"))')
  echo "$(dirname "$src")/artefacts/wasi_snapshot_preview1.reactor.wasm"
}

# --- builds ------------------------------------------------------------------------------------

# stale OUTPUT INPUT...: true when OUTPUT is missing or older than an input (or --force).
stale() {
  local out=$1
  shift
  [ "$FORCE" -eq 1 ] && return 0
  [ -e "$out" ] || return 0
  local f
  for f in "$@"; do
    if [ -n "$(find "$f" -newer "$out" -print -quit 2>/dev/null)" ]; then return 0; fi
  done
  return 1
}

copy_settings() {
  local name=$1 dir=$2
  if [ -f "$dir/$name.toml" ]; then cp "$dir/$name.toml" "$OUT/$name.toml"; fi
}

build_rust() {
  log "rust-hours (cargo, wasm32-wasip2, profile guest)"
  cargo build --quiet --profile guest --target wasm32-wasip2 -p rust-hours \
    --target-dir "$ROOT/target/guests"
  cp "$ROOT/target/guests/wasm32-wasip2/guest/rust_hours.wasm" "$OUT/rust-hours.wasm"
  copy_settings rust-hours "$ROOT/examples/rust-hours"
}

build_c() {
  local src=$ROOT/examples/c-menu work=$ROOT/target/c-menu
  if ! stale "$OUT/c-menu.wasm" "$src/menu.c" "$WIT"; then
    log "c-menu is up to date"
    return
  fi
  log "c-menu (wit-bindgen c, clang --target=wasm32-wasi, wasm-tools component new)"
  rm -rf "$work" && mkdir -p "$work"
  local gen_log
  if ! gen_log=$("$TOOLS/bin/wit-bindgen" c "$WIT" --world ivr --out-dir "$work/gen" 2>&1); then
    die "wit-bindgen c failed: $gen_log"
  fi
  clang --target=wasm32-wasi -Oz -mexec-model=reactor -Wall -Wextra -Werror \
    -I"$work/gen" -o "$work/core.wasm" \
    "$src/menu.c" "$work/gen/ivr.c" "$work/gen/ivr_component_type.o" -Wl,--strip-debug
  local adapt=()
  # Import module names are plain UTF-8 in the binary.
  if grep -qa wasi_snapshot_preview1 "$work/core.wasm"; then
    adapt=(--adapt "wasi_snapshot_preview1=$(adapter)")
  fi
  "$TOOLS/bin/wasm-tools" component new "$work/core.wasm" "${adapt[@]}" -o "$OUT/c-menu.wasm"
  "$TOOLS/bin/wasm-tools" validate "$OUT/c-menu.wasm"
  copy_settings c-menu "$src"
}

build_js() {
  local src=$ROOT/examples/js-menu
  copy_settings js-menu "$src"
  if ! stale "$OUT/js-menu.wasm" "$src/app.js" "$src/package-lock.json" "$WIT"; then
    log "js-menu is up to date"
    return
  fi
  log "js-menu (componentize-qjs --sync)"
  (cd "$src" && node_modules/.bin/componentize-qjs -w "$WIT" -n ivr -j app.js --sync \
    -o "$OUT/js-menu.wasm" >/dev/null)
}

build_python() {
  local src=$ROOT/examples/python-menu
  copy_settings python-menu "$src"
  if ! stale "$OUT/python-menu.wasm" "$src/app.py" "$WIT"; then
    log "python-menu is up to date"
    return
  fi
  log "python-menu (componentize-py; about half a minute)"
  (cd "$src" && PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/componentize-py" -d "$WIT" -w ivr \
    componentize app -o "$OUT/python-menu.wasm" >/dev/null)
}

build_polyglot() {
  local src=$ROOT/examples/polyglot dest=$OUT/polyglot
  log "polyglot (main.json + the Python menu as python-sub.wasm)"
  mkdir -p "$dest"
  cp "$src/main.json" "$src/python-sub.toml" "$dest/"
  cp "$OUT/python-menu.wasm" "$dest/python-sub.wasm"
}

ensure_apt_packages
ensure_cargo_tools
ensure_venv
ensure_node_modules
mkdir -p "$OUT"
build_rust
build_c
build_js
build_python
build_polyglot
for f in "$OUT"/*.wasm "$OUT"/polyglot/*.wasm; do
  printf '[build-examples] %8d bytes  %s\n' "$(stat -c %s "$f")" "${f#"$ROOT"/}"
done
