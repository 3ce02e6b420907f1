"""Range and consistency checks of the stage configs (``popsteer.stages.config``), kept here so that module
stays small. Each is called from its dataclass's ``__post_init__`` and so runs for the CLI's flags and for a
sweep file alike; a refusal is one ``PopSteerError`` line naming the key (the CLI shows its flag instead).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from popsteer.errors import PopSteerError
from popsteer.models.registry import get_model
from popsteer.stages.config_learned import LearnedConfig

SPLITS = ("valid", "test")


def check_grid(grid, n_max: int, alpha_max: float) -> None:
    """A ``GridConfig``: non-empty N and alpha lists in range, a drop limit in [0, 1], and the learned
    variant's settings only with that variant (they would be silently unused otherwise)."""
    if not grid.ns or not grid.alphas:
        raise PopSteerError("the steering grid needs at least one N and one alpha")
    if grid.alpha_unpops is not None and not (
            grid.alpha_unpops and all(math.isfinite(a) and 0 <= a <= alpha_max for a in grid.alpha_unpops)):
        raise PopSteerError(f"stages.steering.alpha_unpops must be finite numbers >= 0 and <= {alpha_max:g}, "
                            f"got {grid.alpha_unpops}")
    if min(grid.ns) < 1:
        raise PopSteerError(f"stages.steering.ns must all be >= 1, got {grid.ns}")
    if max(grid.ns) > n_max:
        raise PopSteerError(f"stages.steering.ns must all be <= {n_max}, got {grid.ns}")
    if not all(math.isfinite(a) and a >= 0 for a in grid.alphas):
        raise PopSteerError(f"stages.steering.alphas must all be finite and >= 0, got {grid.alphas}")
    if max(grid.alphas) > alpha_max:
        raise PopSteerError(f"stages.steering.alphas must all be <= {alpha_max:g}, got {grid.alphas}")
    if not grid.splits or any(s not in SPLITS for s in grid.splits):
        raise PopSteerError(f"grid splits must be valid and/or test, got {grid.splits}")
    if not (math.isfinite(grid.max_ndcg_drop) and 0 <= grid.max_ndcg_drop <= 1):
        raise PopSteerError(f"stages.steering.max_ndcg_drop must be in [0, 1], got {grid.max_ndcg_drop}")
    if grid.variant != "learned" and grid.learned != LearnedConfig():
        raise PopSteerError(f"learned steering settings (the --learned-* flags, sweep key stages.steering.learned) "
                            f"need --variant learned, not '{grid.variant}'")
    if grid.variant == "learned" and grid.alpha_unpops is not None:
        raise PopSteerError("stages.steering.alpha_unpops is unused by --variant learned (it fits delta per lam)")


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N (whether a GPU is there is checked where it is used)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise PopSteerError(f"--device must be cpu, cuda or cuda:N, got '{device}'")


def check_import_out(path: str, out: str | None) -> None:
    """``import-checkpoint --out``: a .safetensors name (a .pth name would read back as a pickle) and never
    the file being imported."""
    if out is None or os.path.isdir(out):  # a folder is refused with the other output checks
        return
    if Path(out).suffix != ".safetensors":
        raise PopSteerError(f"--out {out}: give a .safetensors file name (the imported checkpoint's format)")
    if os.path.abspath(out) == os.path.abspath(path):
        raise PopSteerError(f"--out {out} is the checkpoint being imported: give another file name")


def check_probe(model: str, probe: str) -> None:
    """A transductive model cannot encode synthetic profiles: refused before the recommender trains."""
    spec = get_model(model)
    if probe == "synthetic" and spec.general:
        raise PopSteerError(f"{spec.recbole_class} cannot encode synthetic profiles (a transductive model): "
                            "use --probe users")
