"""Every output location of a command, checked before any stage runs (``popsteer.util.writable``).

A folder a command will write (the output folder, the data folder where it writes reports, the
encoded store, the parent of an ``--out`` file) must be a folder or creatable as one (no file
on its path), writable, and hold enough free space for what the command is known to write.
Otherwise the command ends with one line naming the flag and the path, before it loads or
trains anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from popsteer.errors import PopSteerError, path_error
from popsteer.stages import config as C
from popsteer.stages import config_report as R
from popsteer.stages import config_vectors as V
from popsteer.util import memory
from popsteer.util.writable import MIN_FREE_BYTES, Output, check_output

DATA_READ_ONLY = (C.RecommenderConfig, C.SAEStageConfig, C.ImportConfig, R.EvaluateConfig, V.ImportVectorsConfig,
                  V.ExportVectorsConfig)
"""Commands that only read the data folder (a read-only shared dataset folder is fine for them)."""


def _workspaces(cfg) -> list[tuple[C.Workspace, C.EncodeConfig | None]]:
    """Every Workspace in a config (with the EncodeConfig beside it), depth first."""
    found = []
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    encode = next((v for v in fields.values() if isinstance(v, C.EncodeConfig)), None)
    for value in fields.values():
        if isinstance(value, C.Workspace):
            found.append((value, encode))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _workspaces(value)
    return found


def _sae_bytes(cfg: C.SAEStageConfig) -> int:
    """The SAE checkpoint and its resumable state (weights, Adam's moments, the best copy): 6 x its parameters."""
    from popsteer.models.registry import model_of
    from popsteer.util import checkpoint

    try:
        spec, arch = model_of(checkpoint.read_meta(cfg.base), cfg.base)
        d = spec.d(arch)
        n = cfg.sae.hidden(d)
    except (PopSteerError, OSError, KeyError, TypeError, ValueError):
        return 0  # the stage reports an unreadable base itself
    return 6 * memory.F32 * (2 * n * d + n + d)


def command_outputs(cfg) -> list[Output]:
    """The folders the command of ``cfg`` writes, each with the flag that names it."""
    outs: list[Output] = []
    for where, encode in _workspaces(cfg):
        outs.append(Output("--out-dir", Path(where.out_dir)))
        if encode is not None and encode.dir:
            outs.append(Output("--encoded-dir", Path(encode.dir)))
        if not isinstance(cfg, DATA_READ_ONLY):
            outs.append(Output("--data-dir", Path(where.data_dir)))
    if isinstance(cfg, C.SAEStageConfig):
        outs[0] = dataclasses.replace(outs[0], need=MIN_FREE_BYTES + _sae_bytes(cfg))
    for flag, value in (("--out", getattr(cfg, "out", None)),):
        if isinstance(value, str) and value:
            path = Path(value)
            try:
                is_dir = path.is_dir()
            except OSError as exc:  # a name too long
                if (err := path_error(exc)) is None:
                    raise
                raise PopSteerError(f"{flag} {err}") from None
            if is_dir:
                raise PopSteerError(f"{flag} {value}: is a folder, expected a file name")
            outs.append(Output(flag, path.parent, given=value))
    for flag, value in FOLDER_FIELDS.get(type(cfg).__name__, ()):  # folders a command creates or fills
        folder = getattr(cfg, value, None)
        if isinstance(folder, str) and folder:
            outs.append(Output(flag, Path(folder)))
    return outs


FOLDER_FIELDS = {"BrowseConfig": (("--out", "site"),), "ReportConfig": (("--sections", "sections"),)}
"""Output folders named by a field other than Workspace's: (flag, field) per config class."""


def check_outputs(cfg) -> None:
    """Check every output folder of ``cfg``'s command (the CLI calls it before dispatching)."""
    seen = set()
    for out in command_outputs(cfg):
        key = (out.flag, str(out.folder))
        if key not in seen:
            seen.add(key)
            check_output(out)


