#!/usr/bin/env bash
# The GPU checks of one lent device session, in one call (about 7 minutes):
#   1. the CUDA tests (Triton top-k == eager, exact; fused cross-entropy; byte-mask dropout);
#   2. bench/gpu_kernels.py: kernel parity + timing vs torch, SAE training throughput;
#   3. bench/sasrec_probe.py: learning-rate schedules for the 30-minute ML-1M SASRec run.
# Needs in .gpu/ (git-ignored, carried): site/ with recbole, colorlog, texttable, wcwidth, pytz
# (the image lacks them) and data/ml-1m/ml-1m.inter.gz. Results land in $OUT.
set -u
export PYTHONPATH="$PWD/.gpu/site:$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/popsteer-gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
[ -n "${SKIP_TESTS:-}" ] || timeout 240 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_kernels.py tests/test_fused_ce.py \
  tests/test_recommender.py::test_fast_dropout_mask_is_an_unbiased_independent_bernoulli 2>&1 | tail -15 | tee "$OUT/kernel_tests.log"
timeout 180 python3 bench/gpu_kernels.py --out "$OUT/gpu_results.json"
timeout "${PROBE_TIMEOUT:-330}" python3 bench/sasrec_probe.py --data-dir .gpu/data --device cuda \
  --deadline-s "${PROBE_DEADLINE:-270}" ${PROBE_CONFIGS:+--configs "$PROBE_CONFIGS"} --out "$OUT/sasrec_probe.json"
