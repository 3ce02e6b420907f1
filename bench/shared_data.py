"""The shared ML-1M data (``../shared/datasets``, or ``$POPSTEER_SHARED_DATASETS``) as a PopSteer data folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHARED = Path(os.environ.get("POPSTEER_SHARED_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
SHARED_ML1M = SHARED / "ml-1m"


def ml1m_data_dir(parent: Path | None = None) -> Path:
    """A data folder whose ``ml-1m/ml-1m.inter.gz`` links to the shared 5-core file.

    Made under ``parent`` (created if missing), or in a new temporary folder.
    """
    base = Path(parent) if parent is not None else Path(tempfile.mkdtemp(prefix="popsteer-ml1m-"))
    (base / "ml-1m").mkdir(parents=True)
    (base / "ml-1m" / "ml-1m.inter.gz").symlink_to(SHARED_ML1M / "ml-1m.5core.inter.gz")
    return base
