#!/usr/bin/env bash
# Create .venv (Python 3.11) and install PopSteer with the exact versions of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
