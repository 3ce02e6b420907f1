"""Run the real entry points in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], cwd: Path, seed: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` (seed=True) or ``python -m popsteer.app.cli ARGS`` in ``cwd``."""
    entry = [str(ROOT / "run.py")] if seed else ["-m", "popsteer.app.cli"]
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are not library warnings."""
    return [l for l in proc.stderr.splitlines() if l.startswith("error:") or "Traceback" in l]
