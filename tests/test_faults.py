"""Faults injected into the platform, against real processes on loopback (no mocks).

* The MLflow server is down when a sweep starts, or is SIGKILLed mid-sweep: the sweep finishes,
  everything goes to ``<experiment>/mlflow_journal/``, and ``popsteer mlflow sync`` (a real
  second ``mlflow server`` in the test) replays it: every run and metric exactly once, and a
  second sync (or replaying the same file again) adds nothing.
* A checkpoint write runs out of space (RLIMIT_FSIZE in a subprocess, through
  ``checkpoint.save`` and through the CLI; a 1 MiB tmpfs when mounting is allowed): one clear
  error, the previous checkpoint byte-identical and loadable, no temporary file left.

The evaluator process killed mid-grid is in test_platform_evaluators.py (it shares that
module's SAE fixture).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mlflow_server import MlflowServer, free_port
from platform_util import (ROOT, assert_each_trial_once, mlflow_runs, ray_address, running_sweep, sweep_env, wait_for,
                           write_sweep)

KEYS = {"k4-s2-r0", "k8-s2-r0"}
WARNING = "cannot be reached"


# ------------------------------------------------------------------ a real MLflow server of the test's own


@pytest.fixture
def mlflow_server(tmp_path):
    folder = tmp_path / "mlflow"
    folder.mkdir()
    server = MlflowServer(folder)
    yield server
    server.kill()


# ------------------------------------------------------------------ helpers


def _spec(tmp_path: Path, base: Path, encoded_root: Path, experiment: str, epochs: int, steering: bool,
          **mlflow) -> Path:
    stages = ({"trials": "best", "analysis": True,
               "steering": {"ns": [16], "alphas": [1.0, 2.0], "evaluators": 1, "cpus_per_evaluator": 0.5}}
              if steering else {"trials": "none"})
    return write_sweep(
        tmp_path / "sweep.yaml", name="faults", dataset="ml-100k", base_checkpoint=str(base),
        storage=str(tmp_path / "sweeps"), data_dir=str(tmp_path / "datasets"),
        search={"k": [4, 8], "scale": [2], "sae": {"max_epochs": epochs, "min_epochs": epochs, "patience": 50}},
        resources={"cpu": 1}, max_failures=1, mlflow={"experiment": experiment, **mlflow},
        encode={"dir": str(encoded_root)}, stages=stages)


def _journal(exp_dir: Path) -> list[dict]:
    path = exp_dir / "mlflow_journal" / "journal.jsonl"
    assert path.exists(), f"no journal at {path}"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sync_cli(*args: str) -> dict:
    """``popsteer mlflow sync ARGS`` in a subprocess, as a user runs it; its JSON result."""
    proc = subprocess.run([sys.executable, "-m", "popsteer.app.cli", "mlflow", "sync", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def sync(capsys, monkeypatch):
    """``popsteer mlflow sync ARGS`` in this process (saves an interpreter start); its JSON result."""
    from popsteer.app.cli import main
    from popsteer.platform.tracking import HTTP_CLIENT_DEFAULTS

    for name in (*HTTP_CLIENT_DEFAULTS, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(name, raising=False)  # what the sync sets is undone after the test

    def run(*args: str) -> dict:
        capsys.readouterr()
        assert main(["mlflow", "sync", *args]) == 0
        return json.loads(capsys.readouterr().out)
    return run


def _epochs_journaled(records: list[dict]) -> dict[str, list[int]]:
    """Trial key -> the epochs the journal holds for it."""
    steps: dict[str, list[int]] = {}
    for r in records:
        if r["op"] == "log_epoch":
            key = r["run"].get("trial") or r["run"]
            steps.setdefault(str(key), []).append(r["args"]["step"])
    return steps


def _assert_nothing_lost(uri: str, experiment: str, epochs: int, artifacts: bool) -> None:
    """One parent and one child per trial (runs lost: 0), every epoch once, finished, the headline once."""
    client, parents, children = mlflow_runs(uri, experiment)
    assert len(parents) + len(children) == 1 + len(KEYS)
    assert_each_trial_once(client, parents, children, KEYS)
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["name"] == "faults"
    assert {"popsteer.base_sha256", "popsteer.encoded_dir"} <= parent.data.tags.keys()
    assert [m.value for m in client.get_metric_history(parent.info.run_id, "trials")] == [len(KEYS)]
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags["popsteer.trial_key"]
        assert len(client.get_metric_history(child.info.run_id, "valid_loss")) == epochs
        assert len(client.get_metric_history(child.info.run_id, "sae_fvu")) == 1
        assert "popsteer.trial_id" in child.data.tags
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "sweep_summary.json" in names
    if artifacts:
        best = parent.data.tags["popsteer.best_trial"]
        steering = {a.path for a in client.list_artifacts(parent.info.run_id, "steering")}
        assert {"steering/steering_grid.csv", "steering/steering_pick.json"} <= steering
        assert f"analysis/{best}/cohens_d.csv" in {a.path for a in client.list_artifacts(parent.info.run_id,
                                                                                        f"analysis/{best}")}


# ------------------------------------------------------------------ MLflow down


@pytest.mark.usefixtures("ray_cluster")  # the Ray head; its own MLflow server
def test_mlflow_down_at_start_is_journaled_and_synced_once(tmp_path, small_sasrec, tmp_path_factory, mlflow_server,
                                                           sync):
    experiment = f"popsteer-faults-down-{uuid.uuid4().hex[:8]}"
    spec = _spec(tmp_path, small_sasrec[1], tmp_path_factory.getbasetemp() / "encoded", experiment, 3, steering=True,
                 if_unreachable="journal")  # the default, "fail", refuses to start (one error line)
    exp_dir = tmp_path / "sweeps" / "faults"
    # nothing listens on the tracking port yet
    with running_sweep(spec, sweep_env(ray_address(), mlflow_server.uri), tmp_path / "driver.log") as proc:
        assert proc.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert (tmp_path / "driver.log").read_text().count(WARNING) == 1
    records = _journal(exp_dir)
    ops = Counter(r["op"] for r in records)
    assert ops["start_parent"] == 1 and ops["log_final"] == len(KEYS) and ops["log_artifacts"] >= 3
    assert {r["args"]["key"] for r in records if r["op"] == "child_run"} == KEYS
    assert _epochs_journaled(records) == {key: [1, 2, 3] for key in KEYS}
    assert all(Path(p).is_file() for r in records if r["op"] == "log_artifacts" for p in r["args"]["paths"])

    mlflow_server.start()
    out = _sync_cli("--dir", str(tmp_path / "sweeps"), "--tracking-uri", mlflow_server.uri)
    assert out["journals"] == 1 and out["records"] == len(records)
    _assert_nothing_lost(mlflow_server.uri, experiment, epochs=3, artifacts=True)
    assert not (exp_dir / "mlflow_journal" / "journal.jsonl").exists()

    assert sync("--dir", str(exp_dir), "--tracking-uri", mlflow_server.uri)["records"] == 0  # marked done
    # the same file replayed again (a sync that died after logging) duplicates nothing either
    shutil.copy(out["synced"][0], exp_dir / "mlflow_journal" / "journal.jsonl")
    assert sync("--journal", str(exp_dir / "mlflow_journal"), "--tracking-uri", mlflow_server.uri)["records"] \
        == len(records)
    _assert_nothing_lost(mlflow_server.uri, experiment, epochs=3, artifacts=True)


def _trial_logging(uri: str, experiment: str, min_steps: int) -> bool:
    """Whether a trial's run has at least ``min_steps`` epochs and no final summary yet."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return False
    for run in client.search_runs([exp.experiment_id], "tags.`popsteer.kind` = 'trial'"):
        steps = len(client.get_metric_history(run.info.run_id, "valid_loss"))
        if steps >= min_steps and "sae_fvu" not in run.data.metrics:
            return True
    return False


@pytest.mark.usefixtures("ray_cluster")
def test_mlflow_killed_mid_sweep_is_journaled_and_synced_once(tmp_path, small_sasrec, tmp_path_factory,
                                                              mlflow_server, sync):
    experiment = f"popsteer-faults-kill-{uuid.uuid4().hex[:8]}"
    epochs = 20
    spec = _spec(tmp_path, small_sasrec[1], tmp_path_factory.getbasetemp() / "encoded", experiment, epochs,
                 steering=False)
    exp_dir = tmp_path / "sweeps" / "faults"
    mlflow_server.start()
    with running_sweep(spec, sweep_env(ray_address(), mlflow_server.uri), tmp_path / "driver.log") as proc:
        wait_for(lambda: proc.poll() is not None or _trial_logging(mlflow_server.uri, experiment, 2), 240,
                 "a trial with 2 epochs in MLflow", 0.3)
        mlflow_server.kill()  # mid-trial: the parent, the children and a few epochs are on the server
        assert proc.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    assert (tmp_path / "driver.log").read_text().count(WARNING) == 1
    records = _journal(exp_dir)
    ops = Counter(r["op"] for r in records)
    assert ops["start_parent"] == 0 and ops["log_epoch"] >= 1 and ops["finish"] >= 2  # the parent's, a trial's
    for key, steps in _epochs_journaled(records).items():
        assert steps == list(range(steps[0], epochs + 1)), (key, steps)  # the rest of each trial, in order

    mlflow_server.start()  # the same store, the same port: the URI the journal names
    out = sync("--journal", str(exp_dir / "mlflow_journal" / "journal.jsonl"))
    assert out["journals"] == 1 and out["records"] == len(records)
    _assert_nothing_lost(mlflow_server.uri, experiment, epochs=epochs, artifacts=False)
    assert sync("--dir", str(exp_dir))["records"] == 0
    _assert_nothing_lost(mlflow_server.uri, experiment, epochs=epochs, artifacts=False)


def test_sync_while_the_server_is_still_down_keeps_the_journal(tmp_path, monkeypatch, capsys):
    """Journal against a closed port (a writer killed mid-line at its end), then sync to it: one error line,
    exit 2, and every record still pending for the next sync."""
    from popsteer.app.cli import main
    from popsteer.platform.journal import Journal, JournaledTracker, read_records
    from popsteer.platform.tracking import HTTP_CLIENT_DEFAULTS, Tracker

    for name in (*HTTP_CLIENT_DEFAULTS, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once: no retries to wait for
    exp_dir = tmp_path / "sweep"
    tracker = JournaledTracker(Tracker(f"http://127.0.0.1:{free_port()}", "faults-unit", str(exp_dir)),
                               exp_dir / "mlflow_journal")
    tracker.start_parent("unit", {"search": {"k": [4]}})
    child = tracker.child_run("k4-s2-r0", {"trial": {"k": 4}})
    assert [tracker.log_epoch(child, step, {"valid_loss": 1.0 / step}) for step in (1, 2, 2)] == [True, True, False]
    tracker.finish(child)
    tracker.finish(tracker.parent_run_id)
    journal = Journal(exp_dir / "mlflow_journal")
    with open(journal.path, "ab") as fh:
        fh.write(b'{"op": "log_metr')  # the sweep was killed mid-write
    capsys.readouterr()
    assert main(["mlflow", "sync", "--journal", str(journal.folder)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot be reached" in errors[0] and "sync again" in errors[0], errors
    (pending,) = journal.pending()
    assert [r["op"] for r in read_records(pending)] == ["start_parent", "child_run", "log_epoch", "log_epoch",
                                                        "finish", "finish"]
    assert not (journal.folder / "synced").exists()


# ------------------------------------------------------------------ disk full while writing a checkpoint


SAVE_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    import torch
    from popsteer.util import checkpoint
    from popsteer.errors import PopSteerError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    try:
        checkpoint.save(sys.argv[1], {"w": torch.ones(int(sys.argv[3]))}, {"kind": "sae", "d": 1})
    except PopSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
""")

CLI_WITH_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
    from popsteer.app.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _old_checkpoint(folder: Path, name: str = "sae.safetensors") -> tuple[Path, str]:
    import torch

    from popsteer.util import checkpoint

    path = checkpoint.save(folder / name, {"w": torch.arange(1000, dtype=torch.float32)}, {"kind": "sae", "d": 1})
    return path, _sha256(path)


def _assert_survived(path: Path, digest: str) -> None:
    """The old checkpoint is byte-identical and loads; no temporary file is left beside it."""
    import torch

    from safetensors import safe_open

    assert _sha256(path) == digest
    with safe_open(str(path), "pt") as f:  # the raw file: its stand-in header is no full SAE header
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["popsteer"])
    assert torch.equal(tensors["w"], torch.arange(1000, dtype=torch.float32)) and meta["d"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def _one_error_line(stderr: str, path: Path, reason: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and reason in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


def test_file_size_limit_during_checkpoint_save_keeps_the_old_one(tmp_path):
    path, digest = _old_checkpoint(tmp_path / "ckpt")
    proc = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(path), str(64 * 1024), str(100_000)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    _one_error_line(proc.stderr, path, "File too large")
    _assert_survived(path, digest)


def test_file_size_limit_in_a_cli_step_is_one_error_line(tmp_path, small_sasrec):
    out_dir = tmp_path / "out"
    path, digest = _old_checkpoint(out_dir, "SASRec_SAE-old-k4-8-ml-100k.safetensors")
    proc = subprocess.run(
        [sys.executable, "-c", CLI_WITH_LIMIT, str(8 * 1024), "train-sae", "-p", str(small_sasrec[1]), "--top_k", "4",
         "--scale", "2", "--epochs", "1", "--min-epochs", "1", "--out-dir", str(out_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    _one_error_line(proc.stderr, out_dir / "encoded" / "ml-100k-", "File too large")  # the first large write: encoding
    _assert_survived(path, digest)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root and permission to mount needed, else the test is skipped)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                              text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no `mount` command here: the tmpfs variant needs it (the RLIMIT_FSIZE variants still run)")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): needs root with "
                    "CAP_SYS_ADMIN; the RLIMIT_FSIZE variants still run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def test_full_tmpfs_during_checkpoint_save_keeps_the_old_one(small_tmpfs):
    import torch

    from popsteer.util import checkpoint
    from popsteer.errors import PopSteerError

    path, digest = _old_checkpoint(small_tmpfs)
    with pytest.raises(PopSteerError, match="No space left on device") as info:
        checkpoint.save(path, {"w": torch.ones(300_000)}, {"kind": "sae", "d": 1})  # 1.2 MB > 1 MiB
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    _assert_survived(path, digest)


def test_runs_created_without_params_get_them_when_found_again(tmp_path):
    """A driver killed between create_run and log_batch left runs without params; a resume fills them in."""
    from popsteer.platform.tracking import SWEEP_KEY_TAG, TRIAL_KEY_TAG, Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "half-created", "sweep-key")
    client = tracker.client
    parent = client.create_run(tracker._experiment_id(), tags={SWEEP_KEY_TAG: "sweep-key", "popsteer.kind": "sweep"})
    assert tracker.start_parent("p", {"dataset": "ml-1m"}) == parent.info.run_id
    child = client.create_run(tracker._experiment_id(), tags={
        "mlflow.parentRunId": parent.info.run_id, TRIAL_KEY_TAG: "k4-s2-r0", "popsteer.kind": "trial"})
    assert tracker.child_run("k4-s2-r0", {"sae": {"k": 4}, "trial": {"k": 4}}) == child.info.run_id
    assert client.get_run(parent.info.run_id).data.params == {"dataset": "ml-1m"}
    assert client.get_run(child.info.run_id).data.params == {"sae.k": "4", "trial.k": "4"}
    tracker.child_run("k4-s2-r0", {"sae": {"k": 4}, "trial": {"k": 4}})  # found again: nothing to add, no error
