"""The sweep file: one YAML per experiment (``sweeps/<name>.yaml``), read into typed dataclasses.

The sections are the stage configs of ``popsteer.stages.config`` (the same defaults as the
CLI), extended by what only the platform needs (actors, CPUs and GPUs per task); every key
is a documented dataclass field. pydantic checks the file (``popsteer.util.configs.validate``):
an unknown key, a wrong type or an inconsistent value raises PopSteerError naming the key
and the file. ``--set a.b=VALUE`` overrides (VALUE parsed as YAML) are applied first.
Relative paths are resolved against ``$POPSTEER_ROOT`` when set, else the current directory:
under ``ray job submit`` the current directory is the uploaded copy of the repository, so
give results a lasting home with ``--set storage=/abs/path`` (or shared storage on a
cluster). Paths the file names must stay inside the project, ``data_dir``, ``storage`` or
``$POPSTEER_ALLOWED_ROOTS`` (symlinks resolved; see ``popsteer.util.safepaths``); ``--set``
values are the operator's and not checked. Reading the file: ``popsteer.platform.sweep_file``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from popsteer.data.config import DataConfig
from popsteer.errors import PopSteerError
from popsteer.models.config import TrainConfig
from popsteer.models.registry import get_model
from popsteer.sae.model import SAEConfig
from popsteer.stages.config import BaselinesConfig, EncodeConfig, GridConfig
from popsteer.util.configs import CONFIG, validate

EPOCH_METRICS = ("valid_loss", "valid_fvu", "valid_auxk", "train_loss", "train_fvu", "dead_fraction")
"""Metrics every trial report carries (the sweep's ``metric`` must be one of them)."""


def check_amounts(where: str, obj, positive: tuple[str, ...] = (), nonneg: tuple[str, ...] = ()) -> None:
    """Resource amounts and scheduler settings of ``obj``: finite, and > 0 (``positive``) or >= 0 (``nonneg``);
    None is unset. Ray and Tune would refuse them later, mid-sweep, with a traceback."""
    for name in (*positive, *nonneg):
        value = getattr(obj, name)
        if value is not None and not (math.isfinite(value) and (value > 0 if name in positive else value >= 0)):
            raise PopSteerError(f"{where}{name} must be a finite number {'> 0' if name in positive else '>= 0'}, "
                                f"got {value}")


@dataclass
class TrainRecommenderSpec(TrainConfig):
    """Train the base SASRec first (``TrainConfig``'s keys), cached under ``<storage>/<name>/recommender``."""

    __pydantic_config__ = CONFIG

    small: bool = False
    """The CI-sized SASRec (1 layer, 1 head, hidden 32, inner 64, max length 20)."""
    cpus: float | None = None
    """CPUs of the Ray task that trains it (its torch threads); default all CPUs of the largest node, at most 8."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_amounts("train_recommender.", self, positive=("cpus",))

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


@dataclass
class EncodeSpec(EncodeConfig):
    """Ray Data encoding of user representations (an actor pool over the frozen SASRec)."""

    __pydantic_config__ = CONFIG

    actors: int = 2
    """Actors in the pool (ActorPoolStrategy size)."""
    cpus_per_actor: float = 0.5
    """CPU fraction per actor (0.5 keeps a 2-CPU head from starving Ray Data's read tasks)."""
    gpus_per_actor: float | None = None
    """GPUs per actor; None: 1 when the cluster has GPUs, else 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.actors < 1:
            raise PopSteerError(f"encode.actors must be >= 1, got {self.actors}")
        check_amounts("encode.", self, positive=("cpus_per_actor",), nonneg=("gpus_per_actor",))


@dataclass
class SearchSpec:
    """The grid: every k x scale pair (x ``num_samples`` seeds); ``sae`` fixes the other SAEConfig fields."""

    __pydantic_config__ = CONFIG

    k: list[int] = field(default_factory=lambda: [32])
    """TopK K values."""
    scale: list[int] = field(default_factory=lambda: [64])
    """Hidden-width multipliers s (n = s * d)."""
    sae: dict = field(default_factory=dict)
    """Fixed SAEConfig fields (max_epochs, min_epochs, patience, lr, batch_size, seed, ...)."""

    def __post_init__(self) -> None:
        if not self.k or not self.scale:
            raise PopSteerError("search.k and search.scale need at least one value each")
        for key in ("k", "scale"):
            if key in self.sae:
                raise PopSteerError(f"search.sae.{key} is set by search.{key}")
        for k in self.k:
            for s in self.scale:
                self.sae_config(k, s, 0)  # validates every point now, not inside a trial

    def sae_config(self, k: int, scale: int, repeat: int) -> SAEConfig:
        """The SAEConfig of one grid point; repeat r adds r to the seed."""
        cfg = validate(SAEConfig, {**self.sae, "k": int(k), "scale": int(scale)}, "", "search.sae")
        return dataclasses.replace(cfg, seed=cfg.seed + int(repeat))


@dataclass
class ResourcesSpec:
    """Resources of one trial (fractions allowed)."""

    __pydantic_config__ = CONFIG

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        check_amounts("resources.", self, nonneg=("cpu", "gpu"))
        if self.cpu < 0 or self.gpu < 0 or self.cpu + self.gpu <= 0:
            raise PopSteerError(f"resources need cpu >= 0, gpu >= 0 and some of either, got cpu={self.cpu} gpu={self.gpu}")


@dataclass
class SchedulerSpec:
    """Trial scheduler."""

    __pydantic_config__ = CONFIG

    type: Literal["fifo", "asha"] = "fifo"
    grace_period: int = 10
    """ASHA: epochs before a trial may be stopped."""
    reduction_factor: float = 2.0
    """ASHA: keep 1 / reduction_factor of the trials at each rung."""
    max_t: int | None = None
    """ASHA: the last rung (epochs); default the largest max_epochs."""

    def __post_init__(self) -> None:
        check_amounts("scheduler.", self, positive=("grace_period", "max_t"))
        if not (math.isfinite(self.reduction_factor) and self.reduction_factor > 1):
            raise PopSteerError(f"scheduler.reduction_factor must be > 1, got {self.reduction_factor}")


@dataclass
class MlflowSpec:
    """Where runs are tracked."""

    __pydantic_config__ = CONFIG

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
class SteeringSpec(GridConfig):
    """The steering grid (``GridConfig``'s keys) scored by evaluator actors over user shards."""

    __pydantic_config__ = CONFIG

    evaluators: int = 2
    """Evaluator actors; each scores shards of users at every grid point."""
    cpus_per_evaluator: float = 0.5
    gpus_per_evaluator: float = 0.0
    """Reserved per evaluator; scoring itself runs on CPU (``rank_topk`` returns CPU tensors)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.evaluators < 1:
            raise PopSteerError("stages.steering needs evaluators >= 1")
        check_amounts("stages.steering.", self, positive=("cpus_per_evaluator",), nonneg=("gpus_per_evaluator",))


@dataclass
class StagesSpec:
    """What runs after the sweep, and on which trials."""

    __pydantic_config__ = CONFIG

    trials: Literal["best", "all", "none"] = "best"
    """The best trial by metric/mode, every finished trial, or none."""
    analysis: bool = True
    """Cohen's d of every neuron from the encoded synthetic profiles."""
    steering: SteeringSpec | None = field(default_factory=SteeringSpec)
    """The steering grid (needs the analysis); null to skip."""
    baselines: BaselinesConfig | None = None
    """The re-ranking baselines on the base recommender, tuned on validation (a Ray task); null to skip."""
    browser: bool = True
    """After the steering grid, each selected SAE's neuron browser (popsteer browse) is built in
    <experiment>/browser/<trial> and logged under the trial's MLflow run as the artifact folder neuron_browser."""

    def __post_init__(self) -> None:
        if self.browser and self.steering is None:
            self.browser = False  # the browser shows the grid's pick: nothing to show without it
        if self.steering is not None and not self.analysis:
            raise PopSteerError("stages.steering needs stages.analysis: true (steering uses Cohen's d)")


@dataclass
class SweepSpec:
    """One experiment: base recommender -> encoding -> SAE sweep -> analysis -> steering grid -> baselines."""

    __pydantic_config__ = CONFIG

    name: str
    """Experiment name: the Tune experiment folder ``<storage>/<name>`` and the default MLflow experiment."""
    dataset: str = "ml-100k"
    data_dir: str = "datasets"
    model: str = "sasrec"
    """The base recommender trained by ``train_recommender`` (popsteer.models.registry); a given
    ``base_checkpoint`` says its own."""
    data: DataConfig = field(default_factory=DataConfig)
    """How the dataset is read (fields, k-core, rating threshold) when the recommender is trained here."""
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
        get_model(self.model)
        if (self.base_checkpoint is None) == (self.train_recommender is None):
            raise PopSteerError("give exactly one of base_checkpoint and train_recommender")
        if self.metric not in EPOCH_METRICS:
            raise PopSteerError(f"metric '{self.metric}' is not reported every epoch: choose one of {', '.join(EPOCH_METRICS)}")
        if self.num_samples < 1 or self.max_failures < 0:
            raise PopSteerError("num_samples must be >= 1 and max_failures >= 0")
        check_amounts("", self, positive=("max_concurrent_trials",))

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
