#!/usr/bin/env bash
# Idempotent set-up: a .venv with torch (CPU 2.13.0 when torch is missing) and
# tdopt[dev,bench,tune,peers-light] (peers-light: nevergrad and pycma, so the peer adapters' tests run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
stamp=.venv/.tdopt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".[dev,bench,tune,peers-light]"
  touch "$stamp"
fi
