"""Security: config paths stay inside the allowed folders, no credentials reach MLflow, and
the servers listen on 127.0.0.1 by default. Real components: the sweep loader, a real
checkpoint, a SQLite MLflow store, the real ``mlflow/server.sh`` and the running Ray head."""

from __future__ import annotations

import ipaddress
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from mlflow_server import free_port
from platform_util import ROOT

SECRETS = ("hunter2", "s3cr3t-pw", "tok-123456", "AKIAXXSECRET", "db-pass-9", "api-key-777", "basic-auth-55")


# ------------------------------------------------------------------ helpers


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder as the current directory, with no extra allowed roots."""
    root = tmp_path / "project"
    (root / "datasets").mkdir(parents=True)
    (root / "saved").mkdir()
    monkeypatch.chdir(root)
    monkeypatch.delenv("POPSTEER_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("POPSTEER_ROOT", raising=False)
    return root


def _sweep(root: Path, filename: str = "sweep.yaml", **values) -> Path:
    base = {"name": "sec", "dataset": "ml-100k", "data_dir": "datasets", "storage": "saved/sweeps",
            "train_recommender": {"small": True, "epochs": 1}}
    base.update(values)
    path = root / filename
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def _refused(path: Path, key: str, shown: str, overrides: list[str] | None = None) -> str:
    from popsteer.errors import PopSteerError
    from popsteer.platform.sweep_file import load_spec

    with pytest.raises(PopSteerError) as info:
        load_spec(path, overrides)
    message = str(info.value)
    assert f"'{key}'" in message and shown in message, message
    return message


def _listening(port: int) -> list[ipaddress._BaseAddress]:
    """Local addresses of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(name):
            continue
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(addr)  # each 32-bit word is little-endian
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(packed))
    return found


def _loopback_v4(ip) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip) == "127.0.0.1"


# ------------------------------------------------------------------ paths named by configs


def test_sweep_paths_inside_the_project_are_accepted(project):
    from popsteer.platform.sweep_file import load_spec

    spec = load_spec(_sweep(project, train_recommender=None, base_checkpoint="saved/base.safetensors",
                            encode={"dir": "saved/encoded"}, mlflow={"tracking_uri": "sqlite:///saved/m.db"}))
    assert Path(spec.base_checkpoint) == (project / "saved" / "base.safetensors").resolve()


@pytest.mark.parametrize("key,values,shown", [
    ("base_checkpoint", {"train_recommender": None, "base_checkpoint": "/etc/passwd"}, "/etc/passwd"),
    ("storage", {"storage": "../../outside"}, "../../outside"),
    ("data_dir", {"data_dir": "~/"}, "~/"),
    ("encode.dir", {"encode": {"dir": "/var/tmp/enc"}}, "/var/tmp/enc"),
    ("mlflow.tracking_uri", {"mlflow": {"tracking_uri": "sqlite:////etc/mlflow.db"}}, "/etc/mlflow.db"),
    ("dataset", {"dataset": "../../../etc"}, "../../../etc"),
])
def test_sweep_paths_leaving_the_roots_are_refused(project, key, values, shown):
    _refused(_sweep(project, **values), key, shown)


def test_symlink_out_of_the_project_is_refused(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "link").symlink_to(outside, target_is_directory=True)
    message = _refused(_sweep(project, storage="link/sweeps"), "storage", "link/sweeps")
    assert str(outside.resolve()) in message  # the resolved target is named


def test_operator_roots_and_set_overrides_are_trusted(project, tmp_path, monkeypatch):
    from popsteer.platform.sweep_file import load_spec

    shared = tmp_path / "shared"
    shared.mkdir()
    spec_file = _sweep(project, storage=str(shared / "sweeps"), encode={"dir": str(shared / "sweeps" / "enc")})
    _refused(spec_file, "storage", str(shared))
    # --set is the operator's: accepted, and the storage it names becomes a root for encode.dir
    spec = load_spec(_sweep(project, "other.yaml", encode={"dir": str(shared / "sweeps" / "enc")}),
                     [f"storage={shared}/sweeps"])
    assert spec.storage == str(shared / "sweeps")
    monkeypatch.setenv("POPSTEER_ALLOWED_ROOTS", str(shared))
    assert load_spec(spec_file).encode.dir == str(shared / "sweeps" / "enc")


def test_checkpoint_header_naming_an_outside_base_is_refused(project, capsys):
    """An SAE whose header points its base recommender outside the roots: one error line, exit 2."""
    from popsteer.util import checkpoint
    from popsteer.app.cli import main
    from popsteer.sae.model import SAEConfig, TopKSAE

    cfg = SAEConfig(k=2, scale=2)
    sae_path = project / "saved" / "evil-sae.safetensors"
    checkpoint.save(sae_path, TopKSAE(4, cfg).state_dict(), {
        "kind": "sae", "dataset": "ml-100k", "d": 4, "n_latents": 8, "sae": asdict(cfg),
        "base_checkpoint": "/etc/passwd", "base_sha256": "0" * 64})
    assert main(["analyze", "-p", str(sae_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "'base_checkpoint'" in err[0] and "/etc/passwd" in err[0]


# ------------------------------------------------------------------ credentials in MLflow


def test_no_credentials_in_logged_params_or_tags(project, tmp_path):
    """A sweep's params with secrets, logged to a real SQLite MLflow store: no secret is stored. (A sweep file
    with credentials is refused outright, test_mlflow_auth.py; the URI is set after loading to test the redaction.)"""
    from popsteer.platform.sweep_file import load_spec
    from popsteer.platform.tracking import Tracker

    spec = load_spec(_sweep(project))
    spec.mlflow.tracking_uri = "http://alice:hunter2@mlflow.example:5000"
    params = {**spec.to_dict(), "env": {
        "db_password": "s3cr3t-pw", "MLFLOW_TRACKING_TOKEN": "tok-123456", "AWS_SECRET_ACCESS_KEY": "AKIAXXSECRET",
        "database_uri": "postgresql://mlflow:db-pass-9@db:5432/mlflow?sslmode=require",
        "service": {"api_key": "api-key-777", "Authorization": "Basic basic-auth-55"},
        "artifacts": "https://storage.example/bucket?token=tok-123456&x=1"}}
    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", "security", "sweep-key")
    tracker.start_parent("sec", params)
    child = tracker.child_run("k4-s2-r0", {"sweep": params, "trial": {"k": 4}},
                              {"popsteer.trial_id": "t1", "popsteer.auth_token": "tok-123456"})
    tracker.set_tag(child, "popsteer.encoded_dir", "s3://AKIAXXSECRET:s3cr3t-pw@bucket/encoded")
    tracker.finish(child)

    with sqlite3.connect(db) as con:
        stored = [row for table in ("params", "tags") for row in con.execute(f"SELECT key, value FROM {table}")]
    assert len(stored) > 40
    leaked = [(k, v) for k, v in stored if any(s in f"{k}={v}" for s in SECRETS)]
    assert not leaked, leaked
    values = dict(stored)
    assert values["mlflow.tracking_uri"] == "http://***@mlflow.example:5000"
    assert values["env.database_uri"] == "postgresql://***@db:5432/mlflow?sslmode=require"
    assert values["env.db_password"] == "***" and values["sweep.env.service.api_key"] == "***"
    assert values["popsteer.auth_token"] == "***" and values["name"] == "sec"  # the rest is intact
    assert values["popsteer.encoded_dir"] == "s3://***@bucket/encoded"


# ------------------------------------------------------------------ listening addresses


def test_mlflow_server_script_binds_loopback_by_default(tmp_path):
    """``bash mlflow/server.sh`` on a free port: its listening socket is 127.0.0.1 only; SIGTERM stops it."""
    port = free_port()
    env = dict(os.environ, MLFLOW_PORT=str(port), MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/mlflow.db",
               MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"))
    env.pop("MLFLOW_HOST", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(["bash", str(ROOT / "mlflow" / "server.sh")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MLflow /health did not answer within 120 s"
            time.sleep(0.5)
        addresses = _listening(port)
        assert addresses, f"nothing listens on port {port}"
        assert all(_loopback_v4(ip) for ip in addresses), addresses
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's own process group (mlflow and its workers)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert not _listening(port)


def test_mlflow_server_script_warns_on_a_public_host(tmp_path):
    """A non-loopback MLFLOW_HOST is allowed but warned about (the server itself is not started)."""
    env = dict(os.environ, MLFLOW_HOST="0.0.0.0", MLFLOW_BIN="/bin/true",
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/mlflow.db", MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "mlflow" / "server.sh")], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "warning: binding MLflow to 0.0.0.0" in proc.stderr


@pytest.mark.usefixtures("ray_cluster")
def test_ray_head_dashboard_listens_on_loopback():
    addresses = _listening(8265)
    assert addresses, "the Ray head at 127.0.0.1:6379 runs no dashboard on 8265"
    assert all(_loopback_v4(ip) for ip in addresses), addresses


def test_shipped_configs_bind_loopback():
    """No config or script in the repository starts a server on 0.0.0.0 (docs may mention it as a warning)."""
    files = [*sorted((ROOT / "cluster").glob("*.yaml")), ROOT / "mlflow" / "server.sh", ROOT / ".ci" / "run",
             ROOT / "quickstart.sh", ROOT / "tests" / "services.py"]
    for path in (f for f in files if f.exists()):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert "0.0.0.0" not in code, f"{path.name}: {line.strip()}"
            if "dashboard-host" in code:
                assert "127.0.0.1" in code, f"{path.name}: {line.strip()}"
