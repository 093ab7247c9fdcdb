#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component, CPython inside) from app.py with componentize-py.
# Environment:
#   COMPONENTIZE_PY  componentize-py (default: on PATH; `pip install componentize-py=={{componentize_py}}`,
#                    e.g. in a venv: python3 -m venv .venv && .venv/bin/pip install ...)
set -euo pipefail
cd "$(dirname "$0")"
NAME={{name}}
COMPONENTIZE_PY=${COMPONENTIZE_PY:-componentize-py}
if ! command -v "$COMPONENTIZE_PY" >/dev/null 2>&1; then
  if [ -x .venv/bin/componentize-py ]; then
    COMPONENTIZE_PY=.venv/bin/componentize-py
  else
    echo "build.sh: componentize-py not found: pip install componentize-py=={{componentize_py}}, or set COMPONENTIZE_PY" >&2
    exit 1
  fi
fi
PYTHONDONTWRITEBYTECODE=1 "$COMPONENTIZE_PY" -d wit -w ivr componentize app -o "$NAME.wasm" >/dev/null
echo "built $NAME.wasm ($(wc -c < "$NAME.wasm") bytes)"
