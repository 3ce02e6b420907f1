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
