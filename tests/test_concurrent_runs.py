"""Runs at once never overwrite each other (issue 36, class 1), with real concurrent processes.

Four ``train-sae`` runs into one output folder each keep their own checkpoint, and never replace a
file that was there; processes racing for one checkpoint name each get their own; two SAEs analysed
at once into one data folder leave the seed's shared files of one SAE, never a mix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cli_util import ROOT

RUNS = 4


def _env() -> dict[str, str]:
    return {**os.environ, "POPSTEER_PROGRESS": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "popsteer.app.cli", *args]


def _wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny untrained SASRec and its K=4, s=2 SAE of tests/test_bad_inputs.py, and a second SAE."""
    from test_bad_inputs import tiny_checkpoints

    from popsteer.sae.io import load_sae, save_sae

    folder = tmp_path_factory.mktemp("concurrent")
    (folder / "saved").mkdir()
    sasrec, sae = tiny_checkpoints(folder / "saved")
    model, meta = load_sae(sae)
    with torch.no_grad():
        model.b_enc += 0.05  # another SAE of the same base
    other = save_sae(folder / "saved" / "SASRec_SAE-other-k4-2-ml-100k.safetensors", model, meta)
    return {"root": folder, "sasrec": sasrec, "sae": sae, "other": other}


def test_train_sae_runs_at_once_keep_every_checkpoint(tiny, tmp_path):
    out, data = tmp_path / "saved", tmp_path / "datasets"
    out.mkdir()
    # the seed's name of every second of the next 4 minutes is taken: no run may replace one of them
    now = _dt.datetime.now()
    taken = {}
    for s in range(240):
        stamp = (now + _dt.timedelta(seconds=s)).strftime("%b-%d-%Y_%H-%M-%S")
        path = out / f"SASRec_SAE-{stamp}-k4-2-ml-100k.safetensors"
        path.write_bytes(b"placeholder %d" % s)
        taken[path] = path.read_bytes()
    args = ("train-sae", "-p", str(tiny["sasrec"]), "--top_k", "4", "--scale", "2", "--epochs", "1", "--min-epochs",
            "0", "--out-dir", str(out), "--data-dir", str(data))
    procs = [subprocess.Popen(_cli(*args), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(RUNS)]
    results = _wait_all(procs)

    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    made = [Path(json.loads(stdout)["checkpoint"]) for _, stdout, _ in results]
    assert len(set(made)) == RUNS, made  # one file per run
    assert all(p not in taken and re.search(r"_\d\d-\d\d-\d\d-\d+-k4-2-ml-100k", p.name) for p in made), made
    assert {p: p.read_bytes() for p in taken} == taken  # nothing that was there is replaced
    from popsteer.sae.io import load_sae

    for path in made:
        _, meta = load_sae(path)
        assert meta["kind"] == "sae" and meta["n_latents"] == 64
    assert not list((out / "partial").glob("*"))  # no state or lock left behind
    (store,) = (out / "encoded").iterdir()
    for part in ("train-s10", "valid"):
        manifest = json.loads((store / part / "_manifest.json").read_text())
        assert manifest["part"] == part
    assert not [p for p in store.iterdir() if p.name.startswith((".staging", ".train", ".valid")) and p.is_dir()]


RACE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from popsteer.util import checkpoint
    folder, go, i = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    (go.parent / f"ready-{i}").touch()
    while not go.exists():
        time.sleep(0.005)
    name = checkpoint.NewName(folder, lambda tag: f"SASRec-Dec-01-2026_00-00-00{tag}-toy")
    print(checkpoint.save(name, {"x": torch.full((3,), float(i))}, {"kind": "sasrec", "run": i}))
""")


def test_processes_racing_for_one_checkpoint_name_each_get_their_own(tmp_path):
    """The recommender's and the SAE's default names go through checkpoint.NewName: here several processes
    save under one stem in the same instant."""
    from safetensors.torch import load_file

    go, folder = tmp_path / "go", tmp_path / "saved"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(folder), str(go), str(i)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(RUNS)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < RUNS and time.monotonic() < deadline:
        time.sleep(0.05)  # every process has imported torch and waits
    go.touch()
    results = _wait_all(procs, timeout=120)
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    paths = [Path(stdout.strip()) for _, stdout, _ in results]
    assert len(set(paths)) == RUNS
    assert sorted(p.name for p in folder.glob("*.safetensors")) == sorted(
        ["SASRec-Dec-01-2026_00-00-00-toy.safetensors"]
        + [f"SASRec-Dec-01-2026_00-00-00-{i}-toy.safetensors" for i in range(2, RUNS + 1)])
    for i, path in enumerate(paths):
        assert float(load_file(str(path))["x"][0]) == i  # each file holds its own run's tensors
    assert not list(folder.glob(".*.tmp"))


def test_analyses_at_once_never_mix_the_shared_folder(tiny, tmp_path):
    data, out = tmp_path / "datasets", tmp_path / "saved"
    procs = [subprocess.Popen(_cli("analyze", "-p", str(tiny[name]), "--data-dir", str(data), "--out-dir", str(out)),
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("sae", "other")]
    for code, _, stderr in _wait_all(procs):
        assert code == 0, stderr[-3000:]
    seed = data / "ml-100k"
    summary = json.loads((seed / "analysis.json").read_text())
    owner = next(name for name in ("sae", "other") if _sha(tiny[name]) == summary["sae_sha256"])
    own = seed / "analysis" / tiny[owner].stem
    for name in ("cohens_d.csv", "row_stats_popular.csv", "row_stats_unpopular.csv", "neuron_top_items.csv"):
        assert (seed / name).read_bytes() == (own / name).read_bytes(), name  # all of one SAE
    a, b = (seed / "analysis" / tiny[n].stem / "cohens_d.csv" for n in ("sae", "other"))
    assert a.read_bytes() != b.read_bytes()  # the two SAEs do differ
