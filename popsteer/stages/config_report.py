"""The typed configs of the read-only stages: the report (stage 7) and one checkpoint's evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from popsteer.errors import PopSteerError
from popsteer.stages.config import EncodeConfig, Workspace
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_choices


@dataclass
class ReportConfig:
    """Stage 7: the results report of one or more analysed SAEs (one section each)."""

    __pydantic_config__ = CONFIG

    saes: list[str]
    """Analysed SAE checkpoints; one section per dataset and base-recommender origin."""
    out: str = "docs/RESULTS.md"
    """The markdown report; plots and grid CSVs go beside it."""
    tiny: bool = False
    """CI-sized grids: 3 points per baseline, N in {512, max}, alpha in {1, default, 4}."""
    shared_dir: str | None = None
    """Folder with <dataset>/reference/popsteer_cohens_d.csv.gz (the authors' files) for the fidelity checks;
    default $POPSTEER_SHARED_DATASETS or ../shared/datasets."""
    seed: int = DEFAULT_SEED
    """Seed of the random re-ranker."""
    swap_sigma: bool = False
    """QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's."""
    where: Workspace = field(default_factory=Workspace)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    mlflow: bool = False
    """Also log the report, plots and test metrics to an MLflow run (needs MLFLOW_TRACKING_URI)."""
    resamples: int = 1000
    """Bootstrap resamples of the users for every interval (seeded by ``seed``)."""

    def __post_init__(self) -> None:
        if self.resamples < 10:
            raise PopSteerError(f"resamples must be >= 10 (bootstrap resamples of the users), got {self.resamples}")


@dataclass
class EvaluateConfig:
    """Score a checkpoint on a split: a recommender's metrics, or an SAE's reconstruction against its recommender."""

    __pydantic_config__ = CONFIG

    path: str
    """A recommender or SAE checkpoint (.safetensors)."""
    split: Literal["valid", "test"] = "test"
    """Split to score."""
    where: Workspace = field(default_factory=Workspace)
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    def __post_init__(self) -> None:
        check_choices(self)
