"""``popsteer status``: checkpoints made by the library, their reports, a sweep folder, a corrupt
file and an empty folder, listed through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from popsteer.app.cli import main


@pytest.fixture(scope="module")
def artifacts(ml100k_small, tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, out dir) after train-sae, analyze and steer on a small (untrained) SASRec saved by the
    library, plus a corrupt checkpoint and a sweep folder."""
    from popsteer.models.config import SASRecConfig
    from popsteer.models.recbole_adapter import build_sasrec
    from popsteer.models.io import save_recommender

    root = tmp_path_factory.mktemp("status")
    data, out = root / "datasets", root / "saved"
    hp = SASRecConfig.small()
    torch.manual_seed(0)
    base = save_recommender(out / "SASRec-test-ml-100k.safetensors", build_sasrec(ml100k_small.n_items, hp),
                            ml100k_small, hp, None)
    common = ["--data-dir", str(data), "--out-dir", str(out)]
    assert main(["train-sae", "-p", str(base), "--top-k", "4", "--scale", "2", "--epochs", "2", "--min-epochs", "1",
                 *common]) == 0
    sae = next(out.glob("SASRec_SAE-*-k4-2-ml-100k.safetensors"))
    assert main(["analyze", "-p", str(sae), *common]) == 0
    assert main(["steer", "-p", str(sae), "--num-neurons", "8", "--alpha", "1.5", *common]) == 0
    (out / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    sweep = out / "sweeps" / "smoke"
    (sweep / "stages").mkdir(parents=True)
    (sweep / "stages" / "encode.json").write_text(json.dumps({"manifest": {"dataset": "ml-100k"}}))
    (sweep / "sweep_summary.json").write_text(json.dumps({
        "name": "smoke", "seconds": {"total": 57.2},
        "sweep": {"trials": [{"trial_key": "k4-s2-r0"}, {"trial_key": "k8-s2-r0"}], "errors": 0, "selected": ["k4-s2-r0"]},
        "steering": {"picks": {"k4-s2-r0": {"pick": {"num_neurons": 16, "alpha": 2.5},
                                            "test": {"ndcg@10": 0.031, "gini@10": 0.71}}}}}))
    return data, out


def _status(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["status", *argv]) == 0
    return capsys.readouterr().out


def _line(text: str, *needles: str) -> str:
    found = [l for l in text.splitlines() if all(n in l for n in needles)]
    assert found, f"no line with {needles} in:\n{text}"
    return found[0]


def test_status_lists_checkpoints_reports_and_the_last_sweep(artifacts, capsys):
    data, out = artifacts
    text = _status(capsys, "--dataset", "ml-100k", "--data-dir", str(data), "--out-dir", str(out))
    rec = _line(text, "SASRec", "SASRec-test-ml-100k.safetensors")
    assert "ml-100k" in rec and "no metrics recorded, d=32" in rec and " KB" in rec
    sae = _line(text, "SAE ", "SASRec_SAE-")
    assert "k=4 s=2 n=64" in sae and "fvu 0." in sae and "dead " in sae
    assert "unreadable" in _line(text, "broken.safetensors")
    assert "neurons d > 0" in _line(text, "analysis", "ml-100k/analysis.json")
    assert "neurons d > 0" in _line(text, "analysis", "ml-100k/analysis/SASRec_SAE-", "/analysis.json")  # kept per SAE
    assert "64 neurons" in _line(text, "ml-100k/cohens_d.csv")
    assert "popsteer: ndcg@10 0." in _line(text, "steering", "steer_N8_a1.5_test.csv")
    sweep = _line(text, "sweep", "smoke")
    assert "2 trials (0 errored)" in sweep and "k4-s2-r0: N=16 alpha=2.5" in sweep


def test_status_filters_by_dataset(artifacts, capsys):
    data, out = artifacts
    text = _status(capsys, "--dataset", "lastfm", "--data-dir", str(data), "--out-dir", str(out))
    assert "SASRec-test-ml-100k" not in text and "analysis.json" not in text
    assert "broken.safetensors" in text  # an unreadable file could be any dataset's


def test_status_of_empty_folders(tmp_path, capsys):
    text = _status(capsys, "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "empty"))
    assert text.startswith("no artifacts for all datasets")
    (tmp_path / "empty").mkdir()
    assert "no artifacts" in _status(capsys, "--dataset", "ml-1m", "--data-dir", str(tmp_path), "--out-dir",
                                     str(tmp_path / "empty"))


def test_unfinished_sweep_and_unreadable_report(tmp_path, capsys):
    (tmp_path / "saved" / "sweeps" / "half" / "stages").mkdir(parents=True)
    (tmp_path / "saved" / "sweeps" / "half" / "stages" / "recommender.json").write_text("{}")
    (tmp_path / "datasets" / "ml-1m").mkdir(parents=True)
    (tmp_path / "datasets" / "ml-1m" / "analysis.json").write_text("{truncated")
    text = _status(capsys, "--data-dir", str(tmp_path / "datasets"), "--out-dir", str(tmp_path / "saved"))
    assert "not finished; stages done: recommender" in _line(text, "half")
    assert "unreadable" in _line(text, "ml-1m/analysis.json")
