"""``popsteer train-sae`` killed mid-training, then run again: it continues from its saved state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from safetensors import safe_open

from cli_util import run_cli


def _epoch_of(state) -> int:
    try:
        with safe_open(str(state), "pt") as f:
            return json.loads(f.metadata()["popsteer_sae_state"])["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_train_sae_killed_then_run_again_continues(tmp_path, small_sasrec):
    ckpt = tmp_path / "saved" / small_sasrec[1].name
    ckpt.parent.mkdir()
    shutil.copy(small_sasrec[1], ckpt)
    args = ["train-sae", "-p", str(ckpt), "--top_k", "8", "--scale", "4", "--epochs", "12", "--min-epochs", "12"]
    env = {**os.environ, "POPSTEER_SAE_STATE_EVERY_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "popsteer.app.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "saved" / "partial"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        states = list(partial.glob("SASRec_SAE-*.safetensors")) if partial.exists() else []
        if states and _epoch_of(states[0]) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.kill()
    proc.wait()
    (state,) = partial.glob("SASRec_SAE-*.safetensors")
    killed_at = _epoch_of(state)
    assert 3 <= killed_at < 12 and not list((tmp_path / "saved").glob("SASRec_SAE-*.safetensors"))
    again = run_cli(args, tmp_path, seed=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"continuing after epoch {killed_at}" in again.stderr
    assert f"SAE epoch {killed_at + 1}/12" in again.stderr and "SAE epoch 1/12" not in again.stderr
    (sae,) = (tmp_path / "saved").glob("SASRec_SAE-*.safetensors")
    with safe_open(str(sae), "pt") as f:
        meta = json.loads(f.metadata()["popsteer"])
    history = meta["history"]
    assert [r["epoch"] for r in history] == list(range(1, 13))
    assert 60 * meta["train_minutes"] >= sum(r["seconds"] for r in history)  # the killed process's epochs count
    assert not list(partial.glob("*"))  # the state is removed once the checkpoint is written
