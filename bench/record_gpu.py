"""Record bench/gpu_kernels.py's JSON output (fetched from the GPU machine) in results.json.

    .venv/bin/python bench/record_gpu.py bench/gpu_results_h200.json
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402

res = json.loads(Path(sys.argv[1]).read_text())
where = f"{res['device']}, torch {res['torch']}"
fp32 = next(r for r in res["kernels"] if r["dtype"] == "float32")
bf16 = next(r for r in res["kernels"] if r["dtype"] == "bfloat16")
cmd = "bash bench/gpu_session.sh  (on the GPU machine; runs bench/gpu_kernels.py)"
record("triton_topk_speedup_gpu", round(fp32["speedup_act_decode"], 2), "x vs torch", ">= 2", fp32["speedup_act_decode"] >= 2,
       cmd, f"[65536 x 4096], k=32, ReLU+top-k+decode: fp32 {fp32['act_decode_ms_torch']:.2f} ms torch vs "
       f"{fp32['act_decode_ms_triton']:.2f} ms Triton; bf16 {bf16['speedup_act_decode']:.2f}x; top-k alone fp32 "
       f"{fp32['speedup_topk']:.2f}x, bf16 {bf16['speedup_topk']:.2f}x; parity: values equal "
       f"{fp32['values_equal'] and bf16['values_equal']}, index sets equal {fp32['index_sets_equal'] and bf16['index_sets_equal']}, "
       f"indices equal PopSteer's eager order {fp32.get('indices_equal_eager') and bf16.get('indices_equal_eager')}",
       where)
sae = {r["mode"]: r["samples_per_s"] for r in res["sae_training"]}
record("sae_train_samples_per_s_gpu", round(sae["triton-sparse"]), "samples/s", "report (eager vs sparse vs Triton)", None, cmd,
       "K=32, s=64, d=64, batch 4096, synthetic x: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in sae.items()), where)
