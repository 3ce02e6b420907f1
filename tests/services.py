"""The platform tests' services on loopback, started only where missing and stopped only if started here.

* a Ray head at ``ray_address()`` (127.0.0.1:6379) with its dashboard / job server at ``DASHBOARD``;
* a second Ray node joining it (1 CPU and the custom resource ``worker_node``, which lets a test
  place work on it), in a Ray temporary folder of its own;
* an MLflow tracking server at ``tracking_uri()`` (127.0.0.1:5000), ``mlflow/server.sh`` with a
  SQLite store and artifacts in a temporary folder.

Command line (``.ci/run``)::

    python tests/services.py up     # start what is missing, say what was started, record it in STATE_FILE
    python tests/services.py down   # stop what ``up`` recorded

tests/conftest.py's fixtures use ``Services`` directly: started at first use, stopped at session end.
Standard library only; the Ray and MLflow commands are the venv's (``sys.executable``'s folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not the base interpreter's
DASHBOARD = "http://127.0.0.1:8265"
DEFAULT_RAY_ADDRESS = "127.0.0.1:6379"
DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
WORKER_RESOURCE = "worker_node"
STATE_FILE = Path(tempfile.gettempdir()) / f"popsteer-services-{os.getuid()}.json"
LOOPBACK = ("127.0.0.1", "localhost")

# `ray start` refuses a non-head node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ("Multi-node Ray
# clusters are not supported on Windows and OSX"), and with the flag unset (or 1) it rewrites 127.0.0.1
# in --address and --node-ip-address to the machine's network address, where the loopback-only head
# cannot be reached (the node waits for the GCS forever). So the node is started by Ray's own CLI
# (`ray start`, ray.scripts.scripts.main) with the flag 0 for everything Ray does, in the CLI and in
# the node's processes, except the CLI's one multi-node check, which is shown a copy of Ray's constants
# with ENABLE_RAY_CLUSTER set. Everything the node listens on stays on 127.0.0.1.
NODE_LAUNCHER = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as cli
view = types.SimpleNamespace(**vars(constants))
view.ENABLE_RAY_CLUSTER = True
cli.ray_constants = view
sys.argv[0] = "ray"
sys.exit(cli.main())
"""


class ServiceError(RuntimeError):
    """A service could not be found or started (the message says which and why)."""


# ------------------------------------------------------------------ addresses and probes


def ray_address() -> str:
    """The GCS address of the Ray head the tests use: $RAY_ADDRESS, else 127.0.0.1:6379."""
    return os.environ.get("RAY_ADDRESS") or DEFAULT_RAY_ADDRESS


def tracking_uri() -> str:
    """The MLflow server the tests use: $MLFLOW_TRACKING_URI when it is http(s), else 127.0.0.1:5000."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri if uri.startswith("http") else DEFAULT_TRACKING_URI


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str, also: tuple[int, ...] = ()) -> bool:
    """Whether a GET of url answers 200 (or one of the ``also`` statuses)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code in also
    except OSError:
        return False


def dashboard_up() -> bool:
    """Whether the Ray dashboard answers: 200, or 401 where Ray's token authentication is on (Ray 2.60
    turns it on once a token exists in ~/.ray/auth_token; its own clients send the token)."""
    return http_ok(f"{DASHBOARD}/api/version", also=(401,))


def _host_port(address: str) -> tuple[str, int]:
    """(host, port) of a GCS address host:port, or ServiceError."""
    host, _, port = address.rpartition(":")
    if address.startswith(("http://", "https://", "ray://")) or not host or not port.isdigit():
        raise ServiceError(f"RAY_ADDRESS={address} is not a GCS address (host:port), e.g. {DEFAULT_RAY_ADDRESS}")
    return host, int(port)


def _uri_host_port(uri: str) -> tuple[str, int]:
    """(host, port) of an http(s) URI."""
    netloc = uri.split("://", 1)[1].split("/", 1)[0]
    host, _, port = netloc.rpartition(":")
    return (host, int(port)) if host else (netloc, 443 if uri.startswith("https") else 80)


def alive_nodes() -> list[dict]:
    """The ALIVE nodes of the cluster, from the Ray state API (dashboard); [] when it does not answer."""
    try:
        with urllib.request.urlopen(f"{DASHBOARD}/api/v0/nodes?limit=1000", timeout=5) as resp:
            nodes = json.load(resp)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [n for n in nodes if n.get("state") == "ALIVE"]


def worker_node_alive(resource: str = WORKER_RESOURCE) -> bool:
    """Whether at least two nodes are alive, one of them with the custom ``resource``."""
    nodes = alive_nodes()
    return len(nodes) >= 2 and any(resource in n.get("resources_total", {}) for n in nodes)


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
                log: Path | None = None) -> None:
    """Poll predicate until true; ServiceError on timeout or when proc exits first (with log's tail)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what}: the process exited ({proc.returncode}){_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}{_tail(log)}")
        time.sleep(0.3)


def _tail(log: Path | None, chars: int = 3000) -> str:
    return f"\n--- {log} ---\n{log.read_text(errors='replace')[-chars:]}" if log and log.exists() else ""


# ------------------------------------------------------------------ processes


def _env(**extra: str) -> dict:
    """This environment with the venv's bin first on PATH (``ray job submit`` drivers run ``python`` from
    the head's PATH) and this checkout first on PYTHONPATH (Ray workers inherit the raylet's environment,
    so they import the code under test, not another editable install's)."""
    env = dict(os.environ, **extra)
    env.pop("RAY_ADDRESS", None)  # `ray start` gets its address on the command line
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


AUTH_MODE = "disabled"
"""Ray's token authentication for the loopback test cluster. Ray 2.60 turns it on for a head once
``~/.ray/auth_token`` exists (a local ``ray.init()`` writes one) while clients left at the default
send no token: one explicit mode for the head, the node and the tests (conftest) keeps them agreeing."""


def _ray_env() -> dict:
    # every Ray address on 127.0.0.1; the same token-auth mode as the tests' clients
    return _env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", AUTH_MODE))


def _ray_cli() -> str:
    return str(BIN / "ray") if (BIN / "ray").exists() else "ray"


def _run_logged(cmd: list[str], log: Path, timeout: float, env: dict) -> None:
    """Run cmd (its own session and process group) to completion, output to log; ServiceError if it fails.

    A file, not a pipe: ``ray start`` leaves daemons behind that could hold an inherited pipe open."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ServiceError(f"`{' '.join(cmd[:3])} ...` did not finish in {timeout:.0f}s{_tail(log)}")
    if rc != 0:
        raise ServiceError(f"`{' '.join(cmd[:3])} ...` failed ({rc}){_tail(log)}")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (reaping it first if it is a child of this process)."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout: float = 30) -> None:
    """SIGTERM a process group, wait up to timeout for all of it to exit, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pgid):
            return


# ------------------------------------------------------------------ the services


def start_head(port: int, folder: Path) -> None:
    """``ray start --head`` on 127.0.0.1:port, then wait for its dashboard / job server."""
    log = folder / "ray-head.log"
    _run_logged([_ray_cli(), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
                 "--disable-usage-stats"], log, 180, _ray_env())
    _wait_until(dashboard_up, 120, f"the Ray dashboard at {DASHBOARD}", log=log)


def start_worker_node(address: str, folder: Path, resource: str = WORKER_RESOURCE, name: str = "node") -> int:
    """A second Ray node (1 CPU, the custom ``resource``) joining the head; its process group id, once
    it is alive. Its logs and Ray temp folder are ``folder/ray-<name>.log`` and ``folder/<name>``.

    All of the node's own processes (raylet, log monitor, agents) are in the process group of the
    ``ray start`` that made them (the raylet's workers lead groups of their own and exit with it), so
    stopping that group stops this node and nothing else, where ``ray stop`` stops every Ray process
    on the machine."""
    log, temp_dir = folder / f"ray-{name}.log", folder / name  # short: Ray's socket paths must fit 107 bytes
    temp_dir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-c", NODE_LAUNCHER, "start", f"--address={address}", "--num-cpus=1",
           f"--resources={json.dumps({resource: 1})}",
           f"--temp-dir={temp_dir}",  # per node (a Ray 2.x option); the head keeps Ray's default /tmp/ray
           "--dashboard-agent-listen-port=0",  # the head's agent has the default 52365
           "--min-worker-port=0", "--max-worker-port=0",  # workers on free ports: no clash with the head's range
           "--object-store-memory=1000000000",  # not another 30% of RAM
           "--disable-usage-stats"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_ray_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if proc.wait(timeout=180) != 0:
            raise ServiceError(f"the Ray node {name} did not start ({proc.returncode}){_tail(log)}")
        _wait_until(lambda: worker_node_alive(resource), 120, f"an alive Ray node with the {resource} resource",
                    log=log)
    except (ServiceError, subprocess.TimeoutExpired):
        stop_group(proc.pid)
        raise
    return proc.pid


def launch_mlflow(port: int, folder: Path) -> subprocess.Popen:
    """``bash mlflow/server.sh`` on 127.0.0.1:port, store and artifacts in folder (not waited for)."""
    env = _env(MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port),
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{folder / 'mlflow.db'}",
               MLFLOW_ARTIFACTS_DESTINATION=str(folder / "artifacts"),
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no GenAI job runner: fewer processes, a faster start
    if (BIN / "mlflow").exists():
        env["MLFLOW_BIN"] = str(BIN / "mlflow")
    with open(folder / "mlflow.log", "ab") as out:
        return subprocess.Popen(["bash", str(ROOT / "mlflow" / "server.sh")], cwd=folder, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@dataclass
class Started:
    """What was started (so what to stop): the state ``up`` writes for ``down``."""

    folder: str | None = None  # logs, the MLflow store, the second node's Ray temp folder
    head: bool = False
    node_pgid: int | None = None
    mlflow_pgid: int | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds each start took

    def names(self) -> list[str]:
        return [name for name, on in (("ray-head", self.head), ("ray-node", self.node_pgid),
                                      ("mlflow", self.mlflow_pgid)) if on]


class Services:
    """Ensures the services are up, starting only the missing ones, and stops exactly the ones it started."""

    def __init__(self, started: Started | None = None) -> None:
        self.started = started or Started()

    def _folder(self) -> Path:
        if self.started.folder is None:
            self.started.folder = tempfile.mkdtemp(prefix="popsteer-svc-")
        return Path(self.started.folder)

    def ensure(self, ray: bool = True, mlflow: bool = True) -> list[str]:
        """Start the missing ones of the requested services (MLflow starts while Ray does); the names started."""
        before = set(self.started.names())
        pending = self._launch_mlflow() if mlflow else None
        if ray:
            self._ensure_ray()
        if pending is not None:
            self._wait_mlflow(*pending)
        return [name for name in self.started.names() if name not in before]

    def _ensure_ray(self) -> None:
        address = ray_address()
        host, port = _host_port(address)
        if host not in LOOPBACK:  # someone's own cluster: used as it is, never started or joined here
            if not port_open(host, port):
                raise ServiceError(f"no Ray head at RAY_ADDRESS={address} (only loopback services are started here)")
            return
        if port_open(host, port):
            _wait_until(dashboard_up, 60,
                        f"the running Ray head's job server at {DASHBOARD} (ray[default] and "
                        "--dashboard-host=127.0.0.1 needed)")
        else:
            t0 = time.monotonic()
            self.started.head = True  # set first: a half-started head is stopped too
            start_head(port, self._folder())
            self.started.timings["ray-head"] = round(time.monotonic() - t0, 1)
        if not worker_node_alive():
            t0 = time.monotonic()
            self.started.node_pgid = start_worker_node(f"{host}:{port}", self._folder())
            self.started.timings["ray-node"] = round(time.monotonic() - t0, 1)

    def _launch_mlflow(self) -> tuple[subprocess.Popen, str, float] | None:
        uri = tracking_uri()
        if http_ok(f"{uri.rstrip('/')}/health"):
            return None
        host, port = _uri_host_port(uri)
        if host not in LOOPBACK:
            raise ServiceError(f"no MLflow server answers at {uri}/health (only loopback services are started here)")
        proc = launch_mlflow(port, self._folder())
        self.started.mlflow_pgid = proc.pid
        return proc, uri, time.monotonic()

    def _wait_mlflow(self, proc: subprocess.Popen, uri: str, t0: float) -> None:
        _wait_until(lambda: http_ok(f"{uri.rstrip('/')}/health"), 180, f"the MLflow server's {uri}/health", proc,
                    self._folder() / "mlflow.log")
        self.started.timings["mlflow"] = round(time.monotonic() - t0, 1)

    def stop(self) -> list[str]:
        """Stop what was started (MLflow, then the head with ``ray stop`` or else only the node); the names."""
        stopped, s = self.started.names(), self.started
        try:
            if s.mlflow_pgid:
                stop_group(s.mlflow_pgid)
            if s.head:  # `ray stop` stops every Ray process on the machine, the second node included
                _run_logged([_ray_cli(), "stop"], self._folder() / "ray-stop.log", 120, _ray_env())
            elif s.node_pgid:  # someone else's head: only this node (`ray stop` is not selective)
                stop_group(s.node_pgid)
        finally:
            if s.folder:
                shutil.rmtree(s.folder, ignore_errors=True)
            self.started = Started()
        return stopped


def restart_ray() -> Services:
    """Stop every Ray process on this machine (``ray stop --force``: the head, its nodes, their workers),
    then start the head and the second node again; the Services that started them (tests: a head
    restarted mid-sweep)."""
    folder = Path(tempfile.mkdtemp(prefix="popsteer-svc-"))
    _run_logged([_ray_cli(), "stop", "--force"], folder / "ray-stop.log", 120, _ray_env())
    _wait_until(lambda: not port_open(*_host_port(ray_address())), 60, "the Ray head's port to close")
    services = Services(Started(folder=str(folder)))
    services.ensure(ray=True, mlflow=False)
    return services


# ------------------------------------------------------------------ command line


def _save(started: Started, path: Path) -> None:
    path.write_text(json.dumps(asdict(started), indent=1))


def _load(path: Path) -> Started:
    return Started(**json.loads(path.read_text())) if path.exists() else Started()


def up(state: Path) -> int:
    """Start what is missing; print what was started; record it (with what an earlier ``up`` started)."""
    services = Services(_load(state))
    try:
        started = services.ensure()
    finally:
        if services.started.names():
            _save(services.started, state)
    for name in started:
        print(f"started {name} in {services.started.timings.get(name, 0):.1f}s")
    print(f"services up: Ray {ray_address()} (dashboard {DASHBOARD}), MLflow {tracking_uri()}; "
          f"started here: {', '.join(started) or 'none'}")
    return 0


def down(state: Path) -> int:
    """Stop what ``up`` recorded and forget it."""
    stopped = Services(_load(state)).stop()
    state.unlink(missing_ok=True)
    print(f"stopped: {', '.join(stopped) or 'nothing (none was started by up)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", type=Path, default=STATE_FILE, help=f"state file (default {STATE_FILE})")
    args = parser.parse_args(argv)
    try:
        return up(args.state) if args.action == "up" else down(args.state)
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
