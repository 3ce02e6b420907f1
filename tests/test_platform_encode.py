"""The encode stage on Ray Data (an actor pool over the frozen SASRec) == the same stage in this process,
and == the direct ``encode_users`` (one row per sequence) / ``encode_prefixes`` (training prefixes
from all-position windows)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_ray_data_encoding_equals_local_encoding(ray_session, ml100k_small, small_sasrec, tmp_path_factory, tmp_path):
    from popsteer.models.encode import encode_prefixes, encode_users
    from popsteer.platform.encode import RayDataEncoder
    from popsteer.stages.config import EncodeConfig
    from popsteer.stages.encode import analysis_parts, ensure_encoded, part_inputs, training_parts
    from popsteer.stages.encoded import Part
    from popsteer.steering.analysis import profile_lengths
    from popsteer.util import checkpoint

    model, path = small_sasrec
    cfg = EncodeConfig(block_rows=8192)
    parts = [*training_parts(cfg, ml100k_small.max_len), Part("test"), *analysis_parts(2020)]
    root = tmp_path_factory.getbasetemp() / "encoded"  # shared with the recovery tests
    ray_store = ensure_encoded(path, ml100k_small, parts, root, cfg, RayDataEncoder(actors=2, cpus_per_actor=0.5))
    local_store = ensure_encoded(path, ml100k_small, parts, tmp_path / "local", cfg)
    for part in parts:
        manifest = ray_store.manifest(part)
        assert manifest["checkpoint_sha256"] == checkpoint.file_sha256(path) and manifest["part"] == part.name
        got = ray_store.read(part)
        np.testing.assert_array_equal(got, local_store.read(part), err_msg=part.name)  # bit-exact on CPU
        if part.kind == "train":  # all-position windows, one row per training (prefix, target) pair
            want = encode_prefixes(model, ml100k_small, stride=10).numpy()
            assert len(want) == len(ml100k_small.train_prefix_pairs()[0])
        else:
            want = encode_users(model, *part_inputs(part, ml100k_small)).numpy()
        assert manifest["rows"] == len(want) and got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=part.name)
    # the synthetic profiles follow the analysis' rule (one per profile_lengths entry)
    assert ray_store.manifest("popular-p2020")["rows"] == len(profile_lengths(ml100k_small))

    # reused, not recomputed, when the manifests match; a new part is encoded alone
    t0 = time.perf_counter()
    again = ensure_encoded(path, ml100k_small, parts, root, cfg, RayDataEncoder())
    assert again.folder == ray_store.folder and time.perf_counter() - t0 < 5
    assert all(again.manifest(p)["created"] == ray_store.manifest(p)["created"] for p in parts)
    more = ensure_encoded(path, ml100k_small, [*parts, Part("popular", seed=7)], root, cfg)
    assert more.manifest("popular-p7")["rows"] == len(profile_lengths(ml100k_small))
    assert more.manifest("valid")["created"] == ray_store.manifest("valid")["created"]
