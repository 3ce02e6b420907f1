"""Ray Data encoding (an actor pool over the frozen SASRec) == the single-process ``encode_users``
(one row per sequence) and ``encode_prefixes`` (training prefixes from all-position windows)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_ray_data_encoding_equals_encode_users(ray_session, ml100k_small, small_sasrec, tmp_path_factory):
    from popsteer.util import checkpoint
    from popsteer.steering.analysis import profile_lengths
    from popsteer.platform.encode import SPLITS, encode_inputs, ensure_encoded
    from popsteer.models.encode import encode_prefixes, encode_users

    model, path = small_sasrec
    root = tmp_path_factory.getbasetemp() / "encoded"  # shared with the recovery tests
    encoded = ensure_encoded(path, ml100k_small, root, actors=2, cpus_per_actor=0.5, block_rows=8192)
    manifest = json.loads((encoded.folder / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == checkpoint.file_sha256(path)
    inputs = encode_inputs(ml100k_small, 2020)
    assert manifest["prefix_stride"] == 10
    for split in SPLITS:
        if split == "train":  # all-position windows, one row per training (prefix, target) pair
            want = encode_prefixes(model, ml100k_small, stride=10).numpy()
            assert len(want) == len(ml100k_small.train_prefix_pairs()[0])
        else:
            want = encode_users(model, *inputs[split]).numpy()
        got = encoded.read(split)
        assert manifest["splits"][split]["shape"] == list(want.shape)
        np.testing.assert_array_equal(got, want, err_msg=split)  # bit-exact on CPU
    # the synthetic profiles follow analyze_neurons' rule (one per profile_lengths entry)
    assert manifest["splits"]["popular"]["rows"] == len(profile_lengths(ml100k_small))

    # reused, not recomputed, when the manifest matches
    t0 = time.perf_counter()
    again = ensure_encoded(path, ml100k_small, root)
    assert again.folder == encoded.folder and time.perf_counter() - t0 < 5
    assert json.loads((again.folder / "manifest.json").read_text())["created"] == manifest["created"]
