"""All-position encodings equal RecBole's per-prefix forward where the contexts agree."""

from __future__ import annotations

import numpy as np
import torch

from popsteer.recommender import encode_prefixes, encode_users


def test_encode_prefixes_matches_per_prefix_forward(small_sasrec, ml100k_small):
    model, _ = small_sasrec
    data = ml100k_small
    seq, ln, _ = data.train_prefix_pairs()
    exact = encode_users(model, seq, ln)  # RecBole's forward, one prefix at a time
    assert torch.allclose(encode_prefixes(model, data, stride=1), exact, atol=1e-5)
    target_pos = np.concatenate([np.arange(1, t) for t in data.lengths - 2 if t > 1])
    whole_history = torch.as_tensor(target_pos <= data.max_len)
    for stride in (5, data.max_len):
        approx = encode_prefixes(model, data, stride=stride)
        assert approx.shape == exact.shape
        assert torch.allclose(approx[whole_history], exact[whole_history], atol=1e-5)


def test_recbole_import_leaves_anomaly_mode_off():
    """RecBole's sine.py turns torch's anomaly mode on at import (~1.5x slower training); the adapter undoes it."""
    import subprocess
    import sys

    raw = ("import numpy as np, torch; np.float_ = np.float64; np.complex_ = np.complex128; np.unicode_ = np.str_;"
           "import recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())")
    fenced = ("import torch; from popsteer.config import SASRecConfig; from popsteer.data import find_inter_file;"
              "from popsteer.recbole_adapter import RecBolePipeline, build_sasrec;"
              "build_sasrec(10, SASRecConfig()); print(torch.is_anomaly_enabled());"
              "p = RecBolePipeline('ml-100k', find_inter_file('ml-100k', None), SASRecConfig());"
              "p.trainer(p.new_model()); print(torch.is_anomaly_enabled()); p.close()")
    out = [subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, check=True).stdout.split()
           for c in (raw, fenced)]
    assert out[0][-1:] == ["True"] and out[1][-2:] == ["False", "False"]
