"""The typed config of ``popsteer browse``: the static neuron browser of an analysed SAE."""

from __future__ import annotations

from dataclasses import dataclass

from popsteer.errors import PopSteerError
from popsteer.stages.config import SAERef
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_seeds


@dataclass
class BrowseConfig:
    """Write a self-contained static site (neuron table, neuron pages, trade-off plot, users before/after
    steering) of an analysed SAE; it opens from the file system with no network."""

    __pydantic_config__ = CONFIG

    ref: SAERef
    site: str = "browser"
    """The site's folder (replaced as a whole when it holds an earlier neuron browser; any other existing
    folder is refused)."""
    tags: str | None = None
    """A CSV with columns item_id,tag (item_id = the dataset's raw item token) of concept tags for the neuron
    labels; default: the dataset's own metadata where it has some (genres, HetRec tags)."""
    shared_dir: str | None = None
    """Folder of the shared datasets (<dataset>/movies.dat, lastfm/hetrec2011-lastfm-2k); default
    $POPSTEER_SHARED_DATASETS or shared/datasets beside the repository."""
    pages: int = 200
    """Neuron pages for the top neurons by |d| (every labelled neuron gets one too)."""
    users: int = 20
    """Users shown before and after steering (a seeded sample of the test users)."""
    seed: int = DEFAULT_SEED
    """Seed of the user sample, in [0, 2**32 - 2]."""
    fdr: float = 0.05
    """Benjamini-Hochberg level of the concept labels: a tag labels a neuron when its q-value is below it."""
    min_tag_items: int = 3
    """Tags carried by fewer items are not tested."""
    mlflow: bool = False
    """Also log the site as the artifact folder neuron_browser of an MLflow run (needs MLFLOW_TRACKING_URI)."""

    def __post_init__(self) -> None:
        if self.pages < 1:
            raise PopSteerError(f"--pages must be >= 1 (neuron pages), got {self.pages}")
        if not 1 <= self.users <= 1000:
            raise PopSteerError(f"--users must be in [1, 1000], got {self.users}")
        if not 0 < self.fdr < 1:
            raise PopSteerError(f"--fdr must be in (0, 1), got {self.fdr}")
        if self.min_tag_items < 1:
            raise PopSteerError(f"--min-tag-items must be >= 1, got {self.min_tag_items}")
        if not self.site.strip():
            raise PopSteerError("--out must name a folder")
        check_seeds(self, "seed", prefix="--")
