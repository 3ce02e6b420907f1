"""The typed configs of the read-only stages: the report (stage 7) and one checkpoint's evaluation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from popsteer.errors import PopSteerError
from popsteer.stages.config import EncodeConfig, Workspace
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_at_most, check_choices, check_seeds

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """Stage 7: the results report of one or more analysed SAEs (one section each)."""

    __pydantic_config__ = CONFIG

    saes: list[str] = field(default_factory=list)
    """Analysed SAE checkpoints; one section per dataset and base-recommender origin."""
    out: str = "docs/RESULTS.md"
    """The markdown report; plots and grid CSVs go beside it."""
    tiny: bool = False
    """CI-sized grids: 3 points per baseline, N in {512, max}, alpha in {1, default, 4}."""
    shared_dir: str | None = None
    """Folder with <dataset>/reference/popsteer_cohens_d.csv.gz (the authors' files) for the fidelity checks;
    default $POPSTEER_SHARED_DATASETS or ../shared/datasets."""
    seed: int = DEFAULT_SEED
    """Seed of the random re-ranker, in [0, 2**32 - 2]."""
    swap_sigma: bool = False
    """QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's."""
    where: Workspace = field(default_factory=Workspace)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    mlflow: bool = False
    """Also log the report, plots and test metrics to an MLflow run (needs MLFLOW_TRACKING_URI)."""
    resamples: int = 1000
    """Bootstrap resamples of the users for every interval (seeded by ``seed``), in [10, 1000000]."""
    sections: str | None = None
    """Also write each section on its own to <sections>/<dataset>-<model>-<origin>/ (section.md, tradeoff.png,
    grids.csv, section.json), e.g. docs/results."""
    assemble: str | None = None
    """Instead of evaluating SAEs, build --out from the section folders under this folder (their section.json)."""
    walltimes: str | None = None
    """A reproduction's walltimes.tsv (with --sections): each written section records its own steps' wall times."""
    oracle: Literal["auto", "on", "off"] = "auto"
    """The oracle bound of query-side methods (per-user queries fitted to P-MMF's lists, popsteer.stages.oracle):
    auto runs it where test users x items <= 3e7 (ML-1M, Last.fm; not the Amazon sets, where it takes hours)."""

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.saes and self.assemble is None:
            raise PopSteerError("report needs -p SAE (one or more) or --assemble FOLDER")
        if self.assemble is not None and (self.saes or self.sections is not None):
            raise PopSteerError("--assemble builds the report from section folders alone: give it without -p and "
                                "--sections")
        if self.walltimes is not None:
            check_walltimes(self.walltimes, self.sections)
        if self.resamples < 10:
            raise PopSteerError(f"resamples must be >= 10 (bootstrap resamples of the users), got {self.resamples}")
        check_at_most(self, {"resamples": 1_000_000})
        check_seeds(self, "seed")


def check_walltimes(path: str, sections: str | None) -> None:
    """``--walltimes``: a UTF-8 text file, read into the sections that ``--sections`` writes (before any work)."""
    if sections is None:
        raise PopSteerError(f"--walltimes {path} is read into the sections: give --sections FOLDER too")
    if not os.path.lexists(path):  # a reproduction's first section may come before its first timed step
        log.warning("--walltimes %s not found: the section's steps are not timed", path)
        return
    try:
        if not Path(path).is_file():
            raise PopSteerError(f"--walltimes {path}: not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(WALLTIMES_MAX + 1)
        if len(data) > WALLTIMES_MAX:
            raise PopSteerError(f"--walltimes {path}: larger than {WALLTIMES_MAX >> 20} MB, not a walltimes.tsv")
        data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PopSteerError(f"--walltimes {path}: cannot read it as a UTF-8 text file ({exc})") from None


WALLTIMES_MAX = 16 << 20
"""A reproduction's walltimes.tsv holds a line per step (a few KB)."""


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
