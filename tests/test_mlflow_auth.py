"""MLflow with authentication, against a real ``mlflow/server.sh --auth`` (MLflow's basic-auth app) on loopback.

* Without credentials, or with wrong ones, the server answers 401; a PopSteer tracker without them, or as
  a user without permission, stops with one line.
* The tracker and a real sweep log with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` from
  the environment, and no password appears in any param or tag of the experiment, in the driver's log,
  in captured logging or in the files the sweep writes.
* A sweep file that carries credentials (``mlflow.tracking_uri`` with ``user:password@``, a password key)
  is refused with one line and exit code 2.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from mlflow_server import MlflowServer
from platform_util import ROOT, mlflow_runs, ray_address, running_sweep, sweep_env, write_sweep

ADMIN_PW = f"admin-{uuid.uuid4().hex}"
USERS = {"alice": f"alice-{uuid.uuid4().hex}", "bob": f"bob-{uuid.uuid4().hex}"}
SECRETS = (ADMIN_PW, *USERS.values())
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _status(uri: str, path: str, user: str | None = None, password: str | None = None) -> int:
    """HTTP status of a GET, with a basic-auth header when ``user`` is given."""
    request = urllib.request.Request(uri + path)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _login(monkeypatch, user: str | None) -> None:
    """The MLflow client's credentials for this process (none when ``user`` is None)."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PW if user == "admin" else USERS[user])


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _assert_no_secret_in_runs(uri: str, experiment: str) -> int:
    """No password in a param or tag (key or value) of any run of the experiment; returns the number of runs."""
    _, parents, children = mlflow_runs(uri, experiment)
    runs = parents + children
    for run in runs:
        items = {**run.data.params, **run.data.tags}
        leaked = {k: v for k, v in items.items() if _leaks(f"{k}={v}")}
        assert not leaked, (run.info.run_id, leaked)
    return len(runs)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``mlflow/server.sh --auth`` with its stores in a temporary folder, and the users alice and bob."""
    from mlflow.server import get_app_client

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), "--auth", env={
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PW, "MLFLOW_AUTH_CACHE_TTL_SECONDS": "600"})  # 20 ms a request, not 1.5 s
    server.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            _login(mp, "admin")
            admin = get_app_client("basic-auth", tracking_uri=server.uri)  # MLflow's own API, as the README shows
            for user, password in USERS.items():
                admin.create_user(user, password)
        yield server
    finally:
        server.kill()


# ------------------------------------------------------------------ the server


def test_auth_needs_an_admin_password_from_the_environment(tmp_path):
    """No MLFLOW_AUTH_ADMIN_PASSWORD: one error line, exit 2, nothing started (MLFLOW_BIN would say so)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    env.update(MLFLOW_BIN="/bin/echo", MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/mlflow.db",
               MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"))
    proc = subprocess.run(["bash", str(ROOT / "mlflow" / "server.sh"), "--auth"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and not proc.stdout, proc
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and "MLFLOW_AUTH_ADMIN_PASSWORD" in line


def test_auth_flag_runs_the_basic_auth_app_with_a_private_config(tmp_path):
    """``--auth`` becomes ``--app-name basic-auth``, other arguments pass through, the generated ini is mode 600
    and holds no password; on a public host the warning no longer calls the server unauthenticated."""
    env = dict(os.environ, MLFLOW_BIN="/bin/echo", MLFLOW_HOST="0.0.0.0", MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PW,
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/store/mlflow.db",
               MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"))
    env.pop("MLFLOW_AUTH_CONFIG_PATH", None)
    proc = subprocess.run(["bash", str(ROOT / "mlflow" / "server.sh"), "--workers", "1", "--auth"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.split()
    assert "--auth" not in args and args[args.index("--app-name") + 1] == "basic-auth" and "--workers" in args
    assert "warning: binding MLflow to 0.0.0.0" in proc.stderr and "unauthenticated" not in proc.stderr
    ini = tmp_path / "store" / "basic_auth.ini"
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    text = ini.read_text()
    assert f"database_uri = sqlite:///{tmp_path}/store/basic_auth.db" in text and not _leaks(text)
    assert "default_permission = READ" in text and "auth_cache_ttl_seconds = 0" in text  # MLflow's defaults


def test_requests_without_valid_credentials_are_refused(auth_server):
    uri = auth_server.uri
    assert _status(uri, SEARCH) == 401
    assert _status(uri, SEARCH, "alice", "not-alices-password") == 401
    assert _status(uri, SEARCH, "mallory", USERS["alice"]) == 401
    assert _status(uri, SEARCH, "alice", USERS["alice"]) == 200
    assert _status(uri, "/health") == 200  # the probe the tests and load balancers use stays open
    assert not _leaks(auth_server.log_path.read_text())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in auth_server.folder.glob("*.db"))


# ------------------------------------------------------------------ PopSteer's tracker


def test_tracker_logs_with_credentials_from_the_environment(auth_server, monkeypatch, caplog):
    """Parent and child runs with params, tags and metrics, read back; no password stored or logged."""
    from mlflow.tracking import MlflowClient

    from popsteer.platform.tracking import Tracker

    caplog.set_level(logging.DEBUG)  # every logger: PopSteer's, MLflow's, urllib3's
    _login(monkeypatch, "alice")
    uri, experiment = auth_server.uri, f"auth-tracker-{uuid.uuid4().hex[:8]}"
    params = {"name": "auth", "mlflow": {"tracking_uri": uri, "experiment": experiment},
              "service": {"password": USERS["alice"], "api_token": ADMIN_PW}, "search": {"k": [4]}}
    tracker = Tracker(uri, experiment, "sweep-key")
    parent = tracker.start_parent("auth", params)
    child = tracker.child_run("k4-s2-r0", {"sweep": params, "trial": {"k": 4}}, {"popsteer.trial_id": "t1"})
    tracker.set_tag(child, "popsteer.auth_header", f"Basic {USERS['alice']}")
    assert [tracker.log_epoch(child, step, {"valid_loss": 1.0 / step}) for step in (1, 2, 2)] == [True, True, False]
    assert tracker.log_final(child, {"sae_fvu": 0.25})
    tracker.finish(child)
    tracker.finish(parent)

    client = MlflowClient(tracking_uri=uri)  # credentials from the environment, as the tracker's
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["popsteer.trial_key"] == "k4-s2-r0"
    assert run.data.params["trial.k"] == "4" and run.data.metrics["sae_fvu"] == 0.25
    assert [m.step for m in client.get_metric_history(child, "valid_loss")] == [1, 2]
    assert client.get_run(parent).data.params["service.password"] == "***"
    assert _assert_no_secret_in_runs(uri, experiment) == 2
    assert caplog.records and not _leaks(caplog.text)


def test_tracker_refused_login_or_permission_is_one_line(auth_server, monkeypatch):
    """No credentials: 401 in one PopSteerError line; bob in alice's experiment (default permission READ): 403,
    until the admin grants him EDIT on it (MLflow's API, as the README shows)."""
    from mlflow.server import get_app_client

    from popsteer.errors import PopSteerError
    from popsteer.platform.tracking import Tracker

    uri, experiment = auth_server.uri, f"auth-refused-{uuid.uuid4().hex[:8]}"
    _login(monkeypatch, None)
    with pytest.raises(PopSteerError, match=r"not authenticated \(HTTP 401\); export MLFLOW_TRACKING_USERNAME"):
        Tracker(uri, experiment, "a").start_parent("a", {})
    _login(monkeypatch, "alice")
    Tracker(uri, experiment, "a").start_parent("a", {})
    _login(monkeypatch, "bob")
    with pytest.raises(PopSteerError) as info:
        Tracker(uri, experiment, "b").start_parent("b", {})
    assert "user 'bob'" in str(info.value) and "HTTP 403" in str(info.value) and "\n" not in str(info.value)
    _login(monkeypatch, "admin")
    admin = get_app_client("basic-auth", tracking_uri=uri)
    admin.grant_user_permission("bob", "experiment", Tracker(uri, experiment, "a")._experiment_id(), "EDIT")
    _login(monkeypatch, "bob")
    assert Tracker(uri, experiment, "b").start_parent("b", {})


# ------------------------------------------------------------------ a real sweep


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_sweep_logs_with_credentials_and_never_shows_them(auth_server, small_sasrec, tmp_path, tmp_path_factory,
                                                          monkeypatch):
    """``python -m popsteer.sweep`` against the auth server: without credentials one error line (exit 2);
    with them (environment only) parent and child runs, and no password in runs, driver log or files."""
    experiment = f"auth-sweep-{uuid.uuid4().hex[:8]}"
    spec = write_sweep(
        tmp_path / "sweep.yaml", name="auth", dataset="ml-100k", base_checkpoint=str(small_sasrec[1]),
        storage=str(tmp_path / "sweeps"), data_dir=str(tmp_path / "datasets"),
        search={"k": [4], "scale": [2], "sae": {"max_epochs": 2, "min_epochs": 2, "patience": 50}},
        resources={"cpu": 1}, max_failures=0, mlflow={"experiment": experiment},
        encode={"dir": str(tmp_path_factory.getbasetemp() / "encoded")}, stages={"trials": "none"})
    env = sweep_env(ray_address(), auth_server.uri)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(name, None)
    with running_sweep(spec, env, tmp_path / "refused.log") as proc:
        assert proc.wait(timeout=120) == 2
    errors = [line for line in (tmp_path / "refused.log").read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 401" in errors[0], (tmp_path / "refused.log").read_text()[-3000:]

    env.update(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=USERS["alice"])
    log = tmp_path / "driver.log"
    with running_sweep(spec, env, log) as proc:
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    _login(monkeypatch, "alice")
    client, parents, children = mlflow_runs(auth_server.uri, experiment)
    assert len(parents) == 1 and [c.data.tags["popsteer.trial_key"] for c in children] == ["k4-s2-r0"]
    assert parents[0].data.params["name"] == "auth" and "sae_fvu" in children[0].data.metrics
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "valid_loss")] == [1, 2]
    assert _assert_no_secret_in_runs(auth_server.uri, experiment) == 2
    assert not _leaks(log.read_text())
    written = [p for p in (tmp_path / "sweeps").rglob("*") if p.is_file() and p.stat().st_size < 2**20]
    assert written and not [p for p in written if _leaks(p.read_bytes().decode("utf-8", "replace"))]


# ------------------------------------------------------------------ credentials in a sweep file


def _sweep_file(tmp_path: Path, mlflow: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "auth", "train_recommender": {"small": True}, "mlflow": mlflow}))
    return path


@pytest.mark.parametrize("mlflow,key", [
    ({"tracking_uri": f"http://alice:{USERS['alice']}@127.0.0.1:5000"}, "mlflow.tracking_uri"),
    ({"tracking_uri": f"https://mlflow.example/?token={USERS['alice']}"}, "mlflow.tracking_uri"),
    ({"tracking_uri": "http://127.0.0.1:5000", "password": USERS["alice"]}, "mlflow.password"),
    ({"username": "alice"}, "mlflow.username"),
    ({"tracking_token": USERS["alice"]}, "mlflow.tracking_token"),
])
def test_sweep_file_with_credentials_is_refused(tmp_path, capsys, mlflow, key):
    """One error line naming the key and the environment variables, exit 2; the secret is not in it."""
    from popsteer.app.sweep_cli import main

    assert main([str(_sweep_file(tmp_path, mlflow)), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("error:") and f"'{key}'" in line and "MLFLOW_TRACKING_USERNAME" in line, line
    assert not _leaks(out + err)


def test_set_override_with_credentials_is_refused_and_a_plain_uri_accepted(tmp_path):
    from popsteer.errors import PopSteerError
    from popsteer.platform.sweep_file import load_spec

    path = _sweep_file(tmp_path, {"tracking_uri": "http://127.0.0.1:5000"})
    assert load_spec(path).mlflow.tracking_uri == "http://127.0.0.1:5000"
    with pytest.raises(PopSteerError, match="'mlflow.tracking_uri' 'http://\\*\\*\\*@127.0.0.1:5000' carries"):
        load_spec(path, [f"mlflow.tracking_uri=http://alice:{USERS['alice']}@127.0.0.1:5000"])
