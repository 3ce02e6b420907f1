"""Progress bars: tqdm with an ETA on stderr when forced (POPSTEER_PROGRESS=1) or on a terminal,
none on a pipe or when POPSTEER_PROGRESS=0. Real steps: SAE training in-process, and
``popsteer train-sae`` through the CLI's entry point."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
import torch

from popsteer.util import progress
from popsteer.app.cli import main
from popsteer.sae.model import SAEConfig
from popsteer.sae.train import fit_sae

# e.g. "SAE: 100%|##########| 2/2 [00:00<00:00, 31.25epoch/s]": count, elapsed<remaining, rate
ETA_BAR = re.compile(r"(\d+)/(\d+) \[\d+:\d\d<\d+:\d\d, +[\d.]+ ?(\w+/s|s/\w+)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train_tiny_sae(monkeypatch, stream: io.StringIO, env: str | None) -> str:
    if env is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, env)
    monkeypatch.setattr(sys, "stderr", stream)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    fit_sae(x[:200], x[200:], SAEConfig(k=2, scale=2, max_epochs=2, min_epochs=1, batch_size=64))
    monkeypatch.undo()
    return stream.getvalue()


def test_forced_on_shows_a_bar_with_eta(monkeypatch):
    err = _train_tiny_sae(monkeypatch, io.StringIO(), "1")
    assert "SAE:" in err
    done = [m for m in ETA_BAR.finditer(err) if m.group(1) == m.group(2) == "2"]
    assert done and "epoch" in done[-1].group(3), err


@pytest.mark.parametrize("env,stream", [(None, io.StringIO), ("0", _Terminal)])
def test_pipe_or_forced_off_shows_none(monkeypatch, env, stream):
    assert _train_tiny_sae(monkeypatch, stream(), env) == ""


def test_a_terminal_shows_the_bar_unforced(monkeypatch):
    assert ETA_BAR.search(_train_tiny_sae(monkeypatch, _Terminal(), None))


@pytest.fixture(scope="module")
def sasrec_ckpt(ml100k_small, tmp_path_factory):
    """A small SASRec checkpoint saved by the library (untrained: only the bars matter here)."""
    from popsteer.models.config import SASRecConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.io import save_recommender

    hp = SASRecConfig.small()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("progress") / "SASRec-untrained-ml-100k.safetensors"
    return save_recommender(path, build_sasrec(ml100k_small.n_items, hp), ml100k_small, hp, None)


def test_cli_step_progress_on_stderr(sasrec_ckpt, tmp_path, monkeypatch, capsys):
    """``popsteer train-sae`` with POPSTEER_PROGRESS=1: encoding and SAE epoch bars with an ETA on stderr."""
    monkeypatch.setenv(progress.ENV, "1")
    code = main(["train-sae", "-p", str(sasrec_ckpt), "--top-k", "4", "--scale", "2", "--epochs", "2",
                 "--min-epochs", "1", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "encode prefixes:" in err and "SAE:" in err
    sae_bars = [m for m in ETA_BAR.finditer(err) if m.group(3) in ("epoch/s", "s/epoch")]
    assert sae_bars and sae_bars[-1].group(1) == "2", err[-3000:]
    assert not ETA_BAR.search(out) and json.loads(out)["epochs"] == 2  # the JSON result stays clean


def test_sae_training_logs_epochs_without_a_terminal(monkeypatch, caplog):
    """With no terminal (no bar), a log line per epoch at most every 30 s, the first and last always,
    each with the epoch, the losses and the time still to go."""
    clock = iter(range(0, 10_000, 7))  # every epoch takes 7 s of this fake clock
    monkeypatch.setattr(progress, "_clock", lambda: float(next(clock)))
    monkeypatch.setenv(progress.ENV, "0")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    with caplog.at_level("INFO", logger="popsteer.sae.train"):
        fit_sae(x[:200], x[200:], SAEConfig(k=2, scale=2, max_epochs=12, min_epochs=12, batch_size=64))
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage() and "/12" in r.getMessage()]
    epochs = [int(re.search(r"epoch (\d+)/12", line).group(1)) for line in lines]
    assert epochs[0] == 1 and epochs[-1] == 12 and 3 <= len(epochs) < 12, lines  # throttled, not silent
    assert all("valid_fvu" in line and "train_loss" in line and "to go" in line for line in lines), lines
