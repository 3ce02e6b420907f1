#!/usr/bin/env bash
# Install into a fresh .venv and run the whole pipeline on the embedded ml-100k dataset.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
exec .venv/bin/popsteer pipeline --dataset ml-100k "$@"
