"""PopSteer's environment variables: the one place they are read, each checked and named in errors.

Every ``POPSTEER_*`` setting is declared in ``VARIABLES`` with what it accepts; library code
reads it through ``env_float`` / ``env_flag`` / ``env_text``, and the entry points call
``check_environment`` before any work, so a bad value ends as one line naming the variable
(``environment variable POPSTEER_X must be ..., got '...'``) instead of a traceback mid-run.
"""

from __future__ import annotations

import math
import os

from popsteer.errors import PopSteerError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")

VARIABLES: dict[str, str] = {
    "POPSTEER_MEMORY_GB": "float>0",
    "POPSTEER_SAE_STATE_EVERY_S": "float>=0",
    "POPSTEER_PROGRESS": "flag",
    "POPSTEER_NATIVE": "flag",
    "POPSTEER_TRITON": "01",
    "POPSTEER_NATIVE_CACHE": "path",
    "POPSTEER_SHARED_DATASETS": "path",
    "POPSTEER_ROOT": "path",
    "POPSTEER_ALLOWED_ROOTS": "paths",
}
"""Name -> what it accepts (checked by ``check_environment``)."""


def env_text(name: str) -> str | None:
    """The stripped value of ``name``, None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def _bad(name: str, what: str, value: str) -> PopSteerError:
    return PopSteerError(f"environment variable {name} must be {what}, got {value!r}")


def env_float(name: str, default: float, low: float | None = None, above: float | None = None,
              what: str = "a number") -> float:
    """``name`` as a finite number (>= ``low``, > ``above`` when given), ``default`` when unset."""
    raw = env_text(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (low is not None and value < low) or (above is not None and value <= above):
        bound = f" >= {low:g}" if low is not None else f" > {above:g}" if above is not None else ""
        raise _bad(name, f"{what}{bound}", raw)
    return value


def env_flag(name: str, default: bool | None = None) -> bool | None:
    """``name`` as on (1, true, yes, on) or off (0, false, no, off); ``default`` when unset."""
    raw = env_text(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise _bad(name, "1 or 0 (or true/false, yes/no, on/off)", raw)


def check_environment() -> None:
    """Refuse a bad value of any set ``POPSTEER_*`` variable (entry points call it before any work)."""
    for name, kind in VARIABLES.items():
        raw = env_text(name)
        if raw is None:
            continue
        if kind == "float>0":
            env_float(name, 0.0, above=0.0)
        elif kind == "float>=0":
            env_float(name, 0.0, low=0.0)
        elif kind == "flag":
            env_flag(name)
        elif kind == "01" and raw not in ("0", "1"):
            raise _bad(name, "0, 1 or unset", raw)
        elif kind in ("path", "paths") and "\0" in raw:
            raise _bad(name, "a path", raw)
