"""A real ``mlflow/server.sh`` of a test's own, on a free loopback port, apart from tests/services.py's shared one:
tests that stop, restart or lock down a server must not touch the one every other test logs to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from platform_util import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow/server.sh ARGS`` on a free loopback port; its SQLite store and artifacts in ``folder`` (kept on
    restart). ``env`` adds to the script's environment (``--auth`` reads its admin password from there)."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.args = args
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(self.port),
               "MLFLOW_ARTIFACTS_DESTINATION": str(self.folder / "artifacts"),
               "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{self.folder}/mlflow.db",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}  # no job runner: 2 processes, not 9
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["bash", str(ROOT / "mlflow" / "server.sh"), *self.args, "--workers", "1"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or self.healthy(), timeout, f"MLflow at {self.uri}", 0.5)
        except AssertionError:
            self.kill()
            raise
        assert self.proc.poll() is None, self.log_path.read_text()[-3000:]

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash: nothing is flushed or closed)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
