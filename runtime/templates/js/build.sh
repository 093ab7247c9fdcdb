#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) from app.js with componentize-qjs, which npm
# installs into node_modules/ on the first build (the version is pinned in package.json).
# Environment:
#   NPM               npm (default: npm on PATH; needs Node.js 18 or later)
#   COMPONENTIZE_QJS  an installed componentize-qjs to use instead of node_modules/.bin's
set -euo pipefail
cd "$(dirname "$0")"
NAME={{name}}
NPM=${NPM:-npm}
QJS=${COMPONENTIZE_QJS:-}
if [ -z "$QJS" ]; then
  if [ ! -x node_modules/.bin/componentize-qjs ]; then
    command -v "$NPM" >/dev/null 2>&1 || { echo "build.sh: npm not found (install Node.js, or set NPM)" >&2; exit 1; }
    echo "npm install (componentize-qjs, once)"
    "$NPM" install --no-audit --no-fund --loglevel=error
  fi
  QJS=node_modules/.bin/componentize-qjs
fi
# --sync: the ivr world's functions are synchronous.
"$QJS" -w wit -n ivr -j app.js --sync -o "$NAME.wasm" >/dev/null
echo "built $NAME.wasm ($(wc -c < "$NAME.wasm") bytes)"
