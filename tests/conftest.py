"""Shared fixtures: the embedded ml-100k data, a small trained SASRec, the shared datasets folder, and the
platform's services (a Ray head with a second node, an MLflow server; tests/services.py), started only
for the tests that use them and only where missing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import popsteer  # noqa: F401  before any test imports torch: sets OMP_WAIT_POLICY (popsteer/__init__.py)

# Before any test imports ray (Ray reads it at import): every Ray address of this process on 127.0.0.1,
# where the head of tests/services.py listens (.ci/run used to export it)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the test cluster's processes (tests/services.py)

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


@pytest.fixture(scope="session")
def gru4rec(ml100k_small, tmp_path_factory):
    """A CI-sized GRU4Rec trained 8 epochs by the all-position trainer, saved as a checkpoint (shared by
    tests/test_models.py and tests/test_import_vectors.py)."""
    import torch

    from popsteer.models.allpos import train_allpos
    from popsteer.models.config import TrainConfig
    from popsteer.models.io import save_recommender
    from popsteer.models.recbole_adapter import build_model
    from popsteer.models.registry import GRU4RecConfig, get_model

    torch.manual_seed(0)
    hp = GRU4RecConfig.small()
    model, _ = train_allpos(build_model(get_model("gru4rec"), ml100k_small.n_items, hp), ml100k_small,
                            TrainConfig(epochs=8, stride=10, learning_rate=3e-3))
    path = tmp_path_factory.mktemp("gru4rec") / "GRU4Rec-test-ml-100k.safetensors"
    save_recommender(path, model, ml100k_small, hp, TrainConfig(epochs=8, stride=10))
    return model, path


@pytest.fixture(scope="session")
def _started_services():
    """The services this session started (none until a test asks for them); stopped at the session's end."""
    from services import Services

    services = Services()
    yield services
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()  # this process's driver, before its cluster goes
    services.stop()


@pytest.fixture(scope="session")
def ray_cluster(_started_services):
    """The Ray head at ray_address() with its job server at DASHBOARD and a second node with the
    ``worker_node`` resource, each started if missing (stopped at the session's end if started)."""
    _started_services.ensure(ray=True, mlflow=False)


@pytest.fixture(scope="session")
def platform_services(_started_services):
    """``ray_cluster`` and the MLflow server at tracking_uri(), each started if missing."""
    _started_services.ensure(ray=True, mlflow=True)


@pytest.fixture(scope="session")
def smoke_jobs(platform_services, small_sasrec, tmp_path_factory):
    """The smoke sweep and a second user's sweep, submitted together with ``ray job submit`` (and the
    smoke sweep once more, refused): tests/smoke_jobs.py. Run once; the job and MLflow UI tests read it."""
    from smoke_jobs import submit_smoke_jobs

    return submit_smoke_jobs(tmp_path_factory.mktemp("smoke-jobs"), small_sasrec[1])


@pytest.fixture(scope="module")
def ray_session(ray_cluster):
    """A connection to the Ray head (platform tests), closed after the module."""
    import ray

    from platform_util import connect_ray

    connect_ray()
    yield
    ray.shutdown()
