"""Shared fixtures: the embedded ml-100k data, a small trained SASRec, the shared datasets folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("POPSTEER_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def shared_dataset(name: str, filename: str) -> Path:
    """Path of a file in ../shared/datasets/<name>/, or skip the test with the reason."""
    path = SHARED / name / filename
    if not path.exists():
        pytest.skip(f"needs the shared dataset file {path} (absent on this machine)")
    return path


@pytest.fixture(scope="session", autouse=True)
def allowed_tmp_roots(tmp_path_factory):
    """Sweep files written by tests name paths under pytest's temporary folder: allow it."""
    base = str(tmp_path_factory.getbasetemp())
    with pytest.MonkeyPatch.context() as mp:
        old = os.environ.get("POPSTEER_ALLOWED_ROOTS")
        mp.setenv("POPSTEER_ALLOWED_ROOTS", os.pathsep.join(filter(None, [old, base])))
        yield base


@pytest.fixture(scope="session")
def ml100k_small():
    """ml-100k loaded with max length 20 (the CI-sized SASRec's)."""
    from popsteer.data import load_dataset

    return load_dataset("ml-100k", None, max_len=20)


@pytest.fixture(scope="session")
def small_sasrec(ml100k_small, tmp_path_factory):
    """A small SASRec trained 2 epochs with the all-position trainer, saved as a checkpoint."""
    import torch

    from popsteer.models.config import TrainConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.allpos import train_allpos
    from popsteer.models.io import save_recommender
    from popsteer.models.config import SASRecConfig

    torch.manual_seed(0)
    hp = SASRecConfig.small()
    model = build_sasrec(ml100k_small.n_items, hp)
    model, _ = train_allpos(model, ml100k_small, TrainConfig(epochs=3, stride=10))
    path = tmp_path_factory.mktemp("ckpt") / "SASRec-test-ml-100k.safetensors"
    save_recommender(path, model, ml100k_small, hp, None)
    return model, path


@pytest.fixture(scope="module")
def ray_session():
    """A connection to the running Ray head (platform tests), closed after the module."""
    import ray

    from platform_util import connect_ray

    connect_ray()
    yield
    ray.shutdown()
