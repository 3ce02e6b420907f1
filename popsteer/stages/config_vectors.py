"""The typed configs of ``popsteer import-vectors`` and ``popsteer export-vectors``: any model's vectors
as a base recommender (``popsteer.stages.vectors``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from popsteer.data.config import DataConfig
from popsteer.errors import PopSteerError
from popsteer.stages.config import EncodeConfig, Workspace
from popsteer.util.configs import CONFIG, check_choices


@dataclass
class ImportVectorsConfig:
    """Import any model's item table and user vectors as a base recommender: a checkpoint of model 'vectors'
    (the item table and bias) and its encoded store (the user vectors), ready for train-sae, analyze
    --probe users, tune-steering and report."""

    __pydantic_config__ = CONFIG

    items: str
    """The item table (.parquet or .npz): item_id (the dataset's item token), vector (d floats), optional bias."""
    users: str
    """The user vectors (.parquet or .npz): user_id, split (train: any number of rows per user, the SAE's
    inputs; valid and test: one row per user, x before that split's target), vector (d floats)."""
    dataset: str
    """The dataset the vectors belong to (imported by popsteer data import): targets, popularity, history."""
    mask_history: bool = False
    """The model ranks a user's earlier items out (a general model such as LightGCN); off for sequential models."""
    max_len: int = 50
    """Histories of at most this many items in the dataset's views (the probe's user groups, the browser)."""
    out: str | None = None
    """Output .safetensors path; default <out-dir>/Vectors-<date>-<dataset>.safetensors."""
    data: DataConfig = field(default_factory=DataConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    where: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        if not 1 <= self.max_len <= 10_000:
            raise PopSteerError(f"--max-len must be in [1, 10000], got {self.max_len}")
        if self.out is not None and not self.out.endswith(".safetensors"):
            raise PopSteerError(f"--out {self.out}: give a .safetensors file name")
        for flag, value in (("--items", self.items), ("--users", self.users)):
            if not value.endswith((".parquet", ".npz")):
                raise PopSteerError(f"{flag} {value}: give a .parquet or .npz file")


@dataclass
class ExportVectorsConfig:
    """Export a recommender's item table and user vectors (training rows, valid and test users) in the files
    import-vectors reads: items.<fmt> and users.<fmt> in a folder."""

    __pydantic_config__ = CONFIG

    base: str
    """The recommender checkpoint (.safetensors)."""
    folder: str
    """The folder to write items.<fmt> and users.<fmt> into (created; files there of those names replaced)."""
    fmt: Literal["parquet", "npz"] = "parquet"
    """File format: parquet or npz."""
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    where: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        check_choices(self, "--")
        if not self.folder.strip():
            raise PopSteerError("--out must name a folder")
