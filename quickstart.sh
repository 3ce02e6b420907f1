#!/usr/bin/env bash
# Install into a fresh .venv and run the whole pipeline on the embedded ml-100k dataset in about
# 4 minutes on 2 CPU cores: SASRec for at most 1 minute, the SAE (K=32, s=64) for at most 2 minutes,
# then the neuron analysis, steering at N=4096, alpha=1.5 on test and the validation-tuned point.
# Extra flags go to `popsteer pipeline` (they override these budgets).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
result=saved/quickstart-result.json  # the pipeline's full result (JSON); the table below is its summary
mkdir -p saved
.venv/bin/popsteer pipeline --dataset ml-100k --time-budget-min 1 --sae-time-budget-min 2 "$@" > "$result.tmp"
mv "$result.tmp" "$result"
cat >&2 <<'MSG'

Quick-start budgets (SASRec <= 1 min, SAE <= 2 min). The paper's full budget (SASRec to early
stopping, the SAE up to 300 epochs, never stopping before epoch 50; about 7 minutes here):
    .venv/bin/popsteer pipeline --dataset ml-100k
MSG
echo "Full result (JSON): $result"
.venv/bin/python - "$result" <<'PY'
import json, sys

steer = json.load(open(sys.argv[1]))["steer_test"]
cols = ["ndcg@10", "precision@10", "lt_coverage@10", "gini@10", "arp@10"]
print(f"\nTest split, N and alpha of the quick start:\n{'':<10}" + "".join(f"{c:>16}" for c in cols))
for name, metrics in steer.items():
    print(f"{name:<10}" + "".join(f"{metrics[c]:>16.4f}" for c in cols))
PY
