"""Run a benchmark script again in its own process (so its peak RSS is its own) and read its JSON result."""

from __future__ import annotations

import json
import subprocess
import sys


def run_json(script: str, *args: object) -> dict:
    """``python script *args`` in a fresh process; the JSON object on its last stdout line.

    Exits with the child's stderr tail when it fails.
    """
    out = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])
