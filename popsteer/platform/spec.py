"""The sweep file: one YAML per experiment (``sweeps/<name>.yaml``), read into typed dataclasses.

Every key is a dataclass field documented below; an unknown key, a wrong type or an
inconsistent value raises PopSteerError naming the key and the file. ``--set a.b=VALUE``
overrides (VALUE parsed as YAML) are applied before validation. Relative paths are resolved
against ``$POPSTEER_ROOT`` when set, else the current directory: under ``ray job submit`` the
current directory is the uploaded copy of the repository, so give results a lasting home
with ``--set storage=/abs/path`` (or shared storage on a cluster). Paths the file names must
stay inside the project, ``data_dir``, ``storage`` or ``$POPSTEER_ALLOWED_ROOTS`` (symlinks
resolved; see ``popsteer.util.safepaths``); ``--set`` values are the operator's and not checked.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml

from popsteer.errors import PopSteerError
from popsteer.steering.grid import DEFAULT_ALPHAS, DEFAULT_NS
from popsteer.util.safepaths import base_roots, check_inside, uri_path
from popsteer.sae.model import SAEConfig

EPOCH_METRICS = ("valid_loss", "valid_fvu", "valid_auxk", "train_loss", "train_fvu", "dead_fraction")
"""Metrics every trial report carries (the sweep's ``metric`` must be one of them)."""


@dataclass
class TrainRecommenderSpec:
    """Train the base SASRec first (all-position trainer), cached under ``<storage>/<name>/recommender``."""

    small: bool = False
    """The CI-sized SASRec (1 layer, 1 head, hidden 32, inner 64, max length 20)."""
    epochs: int = 200
    """Maximum epochs (early stopping on valid NDCG@10)."""
    stride: int = 25
    """Window stride of all-position training (capped at the max length)."""
    seed: int = 2020
    learning_rate: float = 1e-3
    batch_size: int = 4096
    stopping_step: int = 10
    time_budget_min: float | None = None
    """Stop after this many minutes (best epoch kept)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """cosine: warm-up, then decay to 0 at the last epoch or at time_budget_min."""
    warmup: float = 0.02
    """Fraction of training warming the learning rate up (cosine)."""
    ema_decay: float | None = None
    """Also score an exponential moving average of the weights each epoch (decay per step, e.g. 0.999)."""
    cpus: float = 1.0
    """CPUs of the Ray task that trains it."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise PopSteerError(f"train_recommender.epochs must be >= 1, got {self.epochs}")


@dataclass
class EncodeSpec:
    """Ray Data encoding of user representations (actor pool over the frozen SASRec)."""

    actors: int = 2
    """Actors in the pool (ActorPoolStrategy size)."""
    cpus_per_actor: float = 0.5
    """CPU fraction per actor (0.5 keeps a 2-CPU head from starving Ray Data's read tasks)."""
    gpus_per_actor: float | None = None
    """GPUs per actor; None: 1 when the cluster has GPUs, else 0."""
    batch_size: int = 4096
    """Sequences per map_batches call."""
    block_rows: int = 8192
    """Rows per input block (the unit handed to one actor)."""
    dir: str | None = None
    """Root of the shared encoded folders; default ``<storage>/encoded``."""
    profile_seed: int = 2020
    """Seed of the synthetic popular (seed) / unpopular (seed + 1) profiles, as ``analyze_neurons``."""
    sasrec_train_mode: bool = False
    """QUIRK of the reference: encode the training prefixes with SASRec's dropout on."""
    prefix_stride: int = 10
    """Training prefixes come from all-position passes over windows with this stride, as
    ``train-sae --prefix-stride``: prefixes of <= max_len items are exact, longer ones see at
    least max_len - stride + 1 items; 1 = exactly RecBole's per-prefix inputs (~max_len x slower)."""

    def __post_init__(self) -> None:
        if self.actors < 1 or self.batch_size < 1 or self.block_rows < 1 or self.prefix_stride < 1:
            raise PopSteerError("encode.actors, encode.batch_size, encode.block_rows and encode.prefix_stride must be >= 1")
        if not self.cpus_per_actor > 0:
            raise PopSteerError(f"encode.cpus_per_actor must be > 0, got {self.cpus_per_actor}")


@dataclass
class SearchSpec:
    """The grid: every k x scale pair (x ``num_samples`` seeds); ``sae`` fixes the other SAEConfig fields."""

    k: list[int] = field(default_factory=lambda: [32])
    """TopK K values."""
    scale: list[int] = field(default_factory=lambda: [64])
    """Hidden-width multipliers s (n = s * d)."""
    sae: dict = field(default_factory=dict)
    """Fixed SAEConfig fields (max_epochs, min_epochs, patience, lr, batch_size, seed, ...)."""

    def __post_init__(self) -> None:
        if not self.k or not self.scale:
            raise PopSteerError("search.k and search.scale need at least one value each")
        known = {f.name for f in fields(SAEConfig)} - {"k", "scale"}
        unknown = sorted(set(self.sae) - known)
        if unknown:
            raise PopSteerError(f"unknown key 'search.sae.{unknown[0]}' (SAEConfig fields: {', '.join(sorted(known))})")
        for k in self.k:
            for s in self.scale:
                self.sae_config(k, s, 0)  # validates every point now, not inside a trial

    def sae_config(self, k: int, scale: int, repeat: int) -> SAEConfig:
        """The SAEConfig of one grid point; repeat r adds r to the seed."""
        values = dict(self.sae, k=int(k), scale=int(scale))
        values["seed"] = int(values.get("seed", SAEConfig.seed)) + int(repeat)
        if "max_epochs" in values and "min_epochs" not in values:
            values["min_epochs"] = min(SAEConfig.min_epochs, values["max_epochs"])
        return SAEConfig(**values)


@dataclass
class ResourcesSpec:
    """Resources of one trial (fractions allowed)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.gpu < 0 or self.cpu + self.gpu <= 0:
            raise PopSteerError(f"resources need cpu >= 0, gpu >= 0 and some of either, got cpu={self.cpu} gpu={self.gpu}")


@dataclass
class SchedulerSpec:
    """Trial scheduler."""

    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = 10
    """ASHA: epochs before a trial may be stopped."""
    reduction_factor: float = 2.0
    """ASHA: keep 1 / reduction_factor of the trials at each rung."""
    max_t: int | None = None
    """ASHA: the last rung (epochs); default the largest max_epochs."""

    def __post_init__(self) -> None:
        if self.type not in ("fifo", "asha"):
            raise PopSteerError(f"unknown scheduler.type '{self.type}': choose fifo or asha")


@dataclass
class MlflowSpec:
    """Where runs are tracked."""

    tracking_uri: str | None = None
    """Default: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow/mlflow.db (artifacts in mlflow/artifacts)."""
    experiment: str | None = None
    """MLflow experiment; default: the sweep's name."""
    enabled: bool = True
    if_unreachable: Literal["fail", "journal"] = "fail"
    """A tracking server that does not answer at the start: ``fail`` (one error line) or ``journal``
    (run anyway, logging to <experiment>/mlflow_journal/ for ``popsteer mlflow sync``). A server
    lost mid-sweep is always journaled: the sweep finishes either way."""


@dataclass
class SteeringSpec:
    """The steering grid scored by evaluator actors (METHOD.md section 4)."""

    ns: list[int] = field(default_factory=lambda: list(DEFAULT_NS))
    """Numbers of steered neurons N (capped at the SAE's width, duplicates dropped)."""
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    """Steering strengths alpha."""
    evaluators: int = 2
    """Evaluator actors."""
    cpus_per_evaluator: float = 0.5
    gpus_per_evaluator: float = 0.0
    """Reserved per evaluator; scoring itself runs on CPU (``Evaluator.topk`` returns numpy)."""
    swap_sigma: bool = False
    """QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's."""
    max_ndcg_drop: float = 0.05
    """The validation pick keeps the relative NDCG@10 drop within this."""

    def __post_init__(self) -> None:
        if not self.ns or not self.alphas or self.evaluators < 1:
            raise PopSteerError("stages.steering needs ns, alphas and evaluators >= 1")
        if min(self.ns) < 1:
            raise PopSteerError(f"stages.steering.ns must all be >= 1, got {self.ns}")
        if not all(math.isfinite(a) and a >= 0 for a in self.alphas):
            raise PopSteerError(f"stages.steering.alphas must all be finite and >= 0, got {self.alphas}")


@dataclass
class StagesSpec:
    """What runs after the sweep, and on which trials."""

    trials: Literal["best", "all", "none"] = "best"
    """The best trial by metric/mode, every finished trial, or none."""
    analysis: bool = True
    """Cohen's d of every neuron from the encoded synthetic profiles."""
    steering: SteeringSpec | None = field(default_factory=SteeringSpec)
    """The steering grid (needs the analysis); null to skip."""

    def __post_init__(self) -> None:
        if self.trials not in ("best", "all", "none"):
            raise PopSteerError(f"unknown stages.trials '{self.trials}': choose best, all or none")
        if self.steering is not None and not self.analysis:
            raise PopSteerError("stages.steering needs stages.analysis: true (steering uses Cohen's d)")


@dataclass
class SweepSpec:
    """One experiment: base recommender -> encoding -> SAE sweep -> analysis -> steering grid."""

    name: str
    """Experiment name: the Tune experiment folder ``<storage>/<name>`` and the default MLflow experiment."""
    dataset: str = "ml-100k"
    data_dir: str = "datasets"
    base_checkpoint: str | None = None
    """A PopSteer SASRec checkpoint (.safetensors); or train one with ``train_recommender``."""
    train_recommender: TrainRecommenderSpec | None = None
    storage: str = "saved/sweeps"
    """Tune storage path (shared storage on a multi-node cluster)."""
    search: SearchSpec = field(default_factory=SearchSpec)
    metric: str = "valid_loss"
    mode: Literal["min", "max"] = "min"
    num_samples: int = 1
    """Seeds per grid point (seed, seed + 1, ...)."""
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = None
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    max_failures: int = 2
    """Retries of a trial whose worker dies (FailureConfig)."""
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)
    encode: EncodeSpec = field(default_factory=EncodeSpec)
    stages: StagesSpec = field(default_factory=StagesSpec)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise PopSteerError(f"name must be a plain folder name, got {self.name!r}")
        if (self.base_checkpoint is None) == (self.train_recommender is None):
            raise PopSteerError("give exactly one of base_checkpoint and train_recommender")
        if self.metric not in EPOCH_METRICS:
            raise PopSteerError(f"metric '{self.metric}' is not reported every epoch: choose one of {', '.join(EPOCH_METRICS)}")
        if self.mode not in ("min", "max"):
            raise PopSteerError(f"mode must be min or max, got {self.mode!r}")
        if self.num_samples < 1 or self.max_failures < 0:
            raise PopSteerError("num_samples must be >= 1 and max_failures >= 0")

    # ---------------------------------------------------------------- derived paths

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage) / self.name

    @property
    def encoded_root(self) -> Path:
        return Path(self.encode.dir) if self.encode.dir else Path(self.storage) / "encoded"

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment or self.name

    def to_dict(self) -> dict:
        return asdict(self)


# -------------------------------------------------------------------- parsing


def _type_ok(value, tp) -> bool:
    """A light check of YAML values against simple annotations."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (inner,) = typing.get_args(tp) or (object,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (str, bool, dict):
        return isinstance(value, tp)
    if dataclasses.is_dataclass(tp):  # a section given as a list or scalar instead of a mapping
        return isinstance(value, tp)
    return True


def _dataclass_of(tp):
    for arg in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _build(cls, values, where: str, source: str):
    if not isinstance(values, dict):
        raise PopSteerError(f"{source}: '{where or 'the file'}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            raise PopSteerError(f"{source}: unknown key '{where + '.' if where else ''}{key}' "
                                f"(known: {', '.join(known)})")
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        sub = _dataclass_of(hints[name])
        if sub is not None and isinstance(value, dict):
            kwargs[name] = _build(sub, value, path, source)
        elif not _type_ok(value, hints[name]):
            raise PopSteerError(f"{source}: key '{path}' has the wrong type ({value!r}; expected {hints[name]})")
        else:
            kwargs[name] = float(value) if hints[name] is float else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise PopSteerError(f"{source}: {where or 'the file'}: {exc}") from None
    except PopSteerError as exc:
        raise PopSteerError(f"{source}: {exc}") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``a.b.c=VALUE`` (VALUE parsed as YAML) to the raw mapping, in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise PopSteerError(f"--set expects KEY=VALUE, got {assignment!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PopSteerError(f"--set {key}: cannot parse {text!r} ({exc})") from None
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def resolve_path(path: str | None, root: Path) -> str | None:
    if path is None or "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (root / p).resolve())


def load_spec(path: str | os.PathLike, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a sweep file; relative paths become absolute (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise PopSteerError(f"sweep file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PopSteerError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PopSteerError(f"{path}: the top level must be a mapping")
    for assignment in overrides or []:
        apply_override(raw, assignment)
    if "name" not in raw:
        raise PopSteerError(f"{path}: missing key 'name'")
    spec = _build(SweepSpec, raw, "", str(path))
    check_paths(spec, {a.partition("=")[0] for a in overrides or []}, str(path))
    root = Path(os.environ.get("POPSTEER_ROOT") or os.getcwd())
    spec.data_dir = resolve_path(spec.data_dir, root)
    spec.storage = resolve_path(spec.storage, root)
    spec.base_checkpoint = resolve_path(spec.base_checkpoint, root)
    spec.encode.dir = resolve_path(spec.encode.dir, root)
    return spec


def check_paths(spec: SweepSpec, trusted: set[str], source: str) -> None:
    """Refuse a path of the sweep file outside the allowed roots (``popsteer.util.safepaths``).

    ``data_dir`` and ``storage`` must lie in the project, the repository or
    ``$POPSTEER_ALLOWED_ROOTS``; the other paths may also lie in those two folders. Keys set
    with ``--set`` (listed in ``trusted``, or a parent of them) are the operator's and not checked.
    """
    def given(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in trusted for i in range(1, len(parts) + 1))

    def check(key: str, value: str | None, roots: list) -> None:
        local = None if value is None else (uri_path(value) if "://" in value or value.startswith("file:") else value)
        if local and not given(key):
            check_inside(key, local, roots, source)

    roots = base_roots()
    check("data_dir", spec.data_dir, roots)
    check("storage", spec.storage, roots)
    roots += [p for p in (spec.data_dir, spec.storage) if p and "://" not in p]
    check("base_checkpoint", spec.base_checkpoint, roots)
    check("encode.dir", spec.encode.dir, roots)
    check("mlflow.tracking_uri", spec.mlflow.tracking_uri, roots)
    if "://" not in spec.data_dir:
        check_inside("dataset", Path(spec.data_dir) / spec.dataset, [spec.data_dir], source)
