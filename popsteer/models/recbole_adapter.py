"""The only module that imports RecBole.

It fences RecBole in: NumPy-2 shims are applied before the import, RecBole's Config is
built without reading our argv, CUDA_VISIBLE_DEVICES is restored after RecBole sets it,
and RecBole's logs, tensorboard files and checkpoints go to a temporary folder, never the
working directory. ``recbole.quick_start`` is never imported (it imports ray.tune).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from popsteer.data.config import DataConfig
from popsteer.errors import PopSteerError
from popsteer.models.config import SASRecConfig
from popsteer.models.outputs import UserTable
from popsteer.models.registry import MODELS, ModelSpec, get_model
from popsteer.util.configs import DEFAULT_SEED


_SHIMS = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_, "float": float, "int": int}


def _dok_update(self, entries: dict) -> None:
    """``dok_matrix._update`` (SciPy < 1.12): set entries directly (keys (row, col), no checks)."""
    self._dict.update(entries)


def _apply_numpy_shims() -> None:
    """RecBole 1.2 uses aliases NumPy 2 removed (np.float_, np.int, ...), and LightGCN's graph
    builder calls ``dok_matrix._update``, which SciPy 1.12 removed."""
    for name, value in _SHIMS.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_update


@contextlib.contextmanager
def importing_recbole() -> Iterator[None]:
    """Fence RecBole's import-time side effects: NumPy-2 shims before, torch's anomaly mode after.

    ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
    at import, for the whole process: every op then records a traceback and every backward
    checks its outputs for NaN, which made SASRec and SAE training ~1.5x slower. The mode is
    put back to what it was before the import.
    """
    _apply_numpy_shims()
    was = torch.is_anomaly_enabled()
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(was)


@contextlib.contextmanager
def fenced(workdir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Run RecBole code with our argv hidden, CUDA_VISIBLE_DEVICES and torch's anomaly mode kept, cwd in a temp folder."""
    own_tmp = workdir is None
    root = Path(workdir or tempfile.mkdtemp(prefix="popsteer-recbole-"))
    root.mkdir(parents=True, exist_ok=True)
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    saved_anomaly = torch.is_anomaly_enabled()  # RecBole's lazy model imports turn it on (importing_recbole)
    sys.argv = [saved_argv[0] if saved_argv else "popsteer"]
    os.chdir(root)
    try:
        yield root
    finally:
        torch.autograd.set_detect_anomaly(saved_anomaly)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _recbole_class(spec: ModelSpec):
    """RecBole's model class of a registry entry (imported inside the fence)."""
    with importing_recbole():
        module = importlib.import_module(spec.recbole_module)
    return getattr(module, spec.recbole_class)


class _DictConfig(dict):
    """The subset of RecBole's Config that its model constructors read."""

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


class _CountsOnly:
    """What RecBole's SequentialRecommender reads from a dataset: the item count."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def num(self, field: str) -> int:
        return self.n_items


def model_config(spec: ModelSpec, arch, device: str = "cpu") -> dict:
    """RecBole config keys of a model with CE loss (docs/METHOD.md §1)."""
    return {
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "LIST_SUFFIX": "_list", "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_",
        **spec.recbole_keys(arch), "device": device,
    }


def build_model(spec: ModelSpec, n_items: int, arch, device: str = "cpu") -> torch.nn.Module:
    """RecBole's own class of a registry entry, constructed without a RecBole dataset.

    Args:
        n_items: item ids including padding 0 (RecBole's ``dataset.item_num``).
    """
    if spec.general:
        raise PopSteerError(f"{spec.recbole_class} is built from its training graph only "
                            "(RecBole's trainer, popsteer train-recommender --model " + spec.name + ")")
    cls = _recbole_class(spec)
    with fenced():
        model = cls(_DictConfig(model_config(spec, arch, device)), _CountsOnly(n_items))
    return model.to(device)


def build_sasrec(n_items: int, hp: SASRecConfig, device: str = "cpu") -> torch.nn.Module:
    """RecBole's SASRec (``build_model`` of the ``sasrec`` entry)."""
    return build_model(MODELS["sasrec"], n_items, hp, device)


# ---------------------------------------------------------------- RecBole's own pipeline


def recbole_config_dict(dataset: str, data_path: Path, hp, extra: dict | None = None,
                        data_cfg: DataConfig | None = None, model: str = "sasrec") -> dict:
    d = data_cfg or DataConfig()
    spec = get_model(model)
    cfg = model_config(spec, hp)
    cfg.update({
        "model": spec.recbole_class, "dataset": dataset, "data_path": str(data_path),
        "USER_ID_FIELD": d.user_field, "ITEM_ID_FIELD": d.item_field, "TIME_FIELD": d.time_field,
        "load_col": {"inter": d.columns()},
        "user_inter_num_interval": f"[{d.k_user},inf)", "item_inter_num_interval": f"[{d.k_item},inf)",
        "val_interval": {d.rating_field: f"[{d.min_rating},inf)"} if d.min_rating is not None else None,
        "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Precision", "Recall", "Hit", "MRR", "GiniIndex", "AveragePopularity"],
        "topk": [10], "valid_metric": "NDCG@10", "train_batch_size": 4096, "eval_batch_size": 4096,
        "learning_rate": 1e-3, "seed": DEFAULT_SEED, "stopping_step": 10, "use_gpu": False, "device": "cpu",
        "show_progress": False, "save_dataset": False, "save_dataloaders": False,
        "checkpoint_dir": "saved", "log_wandb": False, "reproducibility": True, "metric_decimal_place": 12,
    })
    cfg.update(spec.pipeline_keys)
    cfg.update(extra or {})
    return cfg


class RecBolePipeline:
    """RecBole's own dataset, dataloaders, trainer and evaluator for one dataset file.

    Used as the baseline trainer (``--trainer recbole``) and as the reference the
    evaluator and the data layer are checked against.
    """

    def __init__(self, dataset: str, inter_file: Path, hp, extra: dict | None = None,
                 data_cfg: DataConfig | None = None, model: str = "sasrec") -> None:
        with importing_recbole():
            from recbole.config import Config
            from recbole.data import create_dataset, data_preparation
            from recbole.utils import init_seed

        self.workdir = Path(tempfile.mkdtemp(prefix="popsteer-recbole-"))
        data_path = self.workdir / "data"
        (data_path / dataset).mkdir(parents=True)
        target = data_path / dataset / f"{dataset}.inter"
        if inter_file.suffix == ".gz":
            with gzip.open(inter_file, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            os.symlink(inter_file.resolve(), target)
        with fenced(self.workdir):
            self.spec = get_model(model)
            self.config = Config(model=self.spec.recbole_class, dataset=dataset,
                                 config_dict=recbole_config_dict(dataset, data_path, hp, extra, data_cfg, model))
            init_seed(self.config["seed"], self.config["reproducibility"])
            logging.getLogger().setLevel(logging.WARNING)
            self.dataset = create_dataset(self.config)
            self.train_data, self.valid_data, self.test_data = data_preparation(self.config, self.dataset)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def new_model(self) -> torch.nn.Module:
        cls = _recbole_class(self.spec)
        with fenced(self.workdir):
            return cls(self.config, self.train_data.dataset)

    def trainer(self, model: torch.nn.Module):
        with importing_recbole():
            from recbole.trainer import Trainer

        with fenced(self.workdir):
            trainer = Trainer(self.config, model)
        trainer.eval_collector.data_collect(self.train_data)
        return trainer

    def train_epoch(self, trainer, epoch: int = 0) -> float:
        """One pass of RecBole's trainer over every (prefix, target) pair; returns the summed loss."""
        with fenced(self.workdir):
            loss = trainer._train_epoch(self.train_data, epoch, show_progress=False)
        return float(loss if not isinstance(loss, tuple) else sum(loss))

    def evaluate(self, trainer, split: str = "test") -> dict[str, float]:
        """RecBole's own full-ranking evaluation of ``trainer.model``."""
        data = self.valid_data if split == "valid" else self.test_data
        with fenced(self.workdir), torch.no_grad():
            result = trainer.evaluate(data, load_best_model=False, show_progress=False)
        return {k: float(v) for k, v in result.items()}

    def train_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RecBole's augmented training pairs: (item_seq (P, L), item_length (P,), target (P,))."""
        inter = self.train_data.dataset.inter_feat
        item = self.config["ITEM_ID_FIELD"]
        return inter[item + "_list"], inter["item_length"], inter[item]

    def user_table(self, model: torch.nn.Module, user_tokens: np.ndarray) -> UserTable:
        """A trained general model's propagated tables, users in the order of ``user_tokens``."""
        theirs = {t: i for i, t in enumerate(self.user_tokens())}
        missing = [t for t in user_tokens[:3] if t not in theirs]
        if missing or len(theirs) - 1 != len(user_tokens):
            raise PopSteerError("RecBole's users differ from PopSteer's on this dataset")
        rows = torch.as_tensor([theirs[t] for t in user_tokens])
        was = model.training
        model.eval()
        with torch.no_grad():
            users, items = model.forward()  # (n_users + 1, d), (n_items, d)
        model.train(was)
        return UserTable(self.spec.recbole_class, users[rows].cpu(), items.cpu())

    def item_tokens(self) -> np.ndarray:
        return np.asarray(self.dataset.field2id_token[self.config["ITEM_ID_FIELD"]]).astype(str)

    def user_tokens(self) -> np.ndarray:
        return np.asarray(self.dataset.field2id_token[self.config["USER_ID_FIELD"]]).astype(str)


def load_foreign_checkpoint(path: Path, trust_pickle: bool) -> dict:
    """Load a RecBole ``.pth`` checkpoint (a pickle). Refused unless ``trust_pickle``.

    Returns the raw dict (``state_dict``, ``config``, ...). RecBole pickles its Config, so the
    unpickler needs RecBole importable.
    """

    if not trust_pickle:
        raise PopSteerError(f"{path} is a pickle (RecBole .pth): loading it can run arbitrary code; "
                            "pass --trust-pickle if you trust its source")
    with importing_recbole():
        import recbole.config  # noqa: F401  (classes the pickle refers to)

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure is bad input
        raise PopSteerError(f"cannot load RecBole checkpoint {path}: {type(exc).__name__}: {exc}") from None
