"""The user's view of a sweep: the MLflow UI in a real headless Chromium against a real ``mlflow server``.

A server of its own (``mlflow/server.sh`` on a free 127.0.0.1 port, SQLite store and artifacts in
tmp_path) gets the smoke sweep (``sweeps/smoke.yaml`` run as a local driver against the Ray head
at $RAY_ADDRESS / 127.0.0.1:6379, which conftest's ``ray_cluster`` fixture starts if missing).
Chromium (Debian's /usr/bin/chromium, driven by playwright) then opens the experiment and checks
that the sweep is one parent run whose expander shows its trials, that param and metric columns
(trial.k, trial.scale, sae_fvu, best_valid_loss) can be shown and hold each trial's values, and
that the parent's artifacts list and render the Pareto (trade-off) plot. Screenshots:
tests/artifacts/mlflow_ui.png (runs table) and tests/artifacts/mlflow_ui_pareto.png (the plot).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from platform_util import ROOT, http_ok, mlflow_runs, ray_address, sweep_env, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
TRIAL_KEYS = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}  # sweeps/smoke.yaml's grid
COLUMNS = ("trial.k", "trial.scale", "sae_fvu", "best_valid_loss")
TIMEOUT_MS = 60_000  # the 2-CPU CI machine is slow to render a React app under load

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster"),
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``bash mlflow/server.sh`` on a free loopback port; its URI (the server is stopped afterwards)."""
    port = _free_port()
    env = dict(os.environ, MLFLOW_HOST="127.0.0.1", MLFLOW_PORT=str(port),
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "mlflow-artifacts"),
               MLFLOW_BIN=str(Path(sys.executable).parent / "mlflow"),
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no GenAI job workers: a faster start
    log = open(tmp_path / "mlflow-server.log", "wb")
    proc = subprocess.Popen(["bash", str(ROOT / "mlflow" / "server.sh"), "--workers", "1"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()[-3000:]}")
            return http_ok(f"{uri}/health")

        wait_for(up, 120, "the MLflow server's /health", interval=0.5)
        yield uri
    finally:
        # its own session: the server and its workers. A graceful stop can take 20 s on a loaded
        # machine and the store is throwaway, so whatever is left after 5 s is killed
        for sig, timeout in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        log.close()


def _run_smoke_sweep(uri: str, experiment: str, tmp_path: Path) -> None:
    """The real smoke sweep, the driver here, the work on the running Ray head."""
    cmd = [sys.executable, "-m", "popsteer.sweep", "sweeps/smoke.yaml", "--set", f"storage={tmp_path / 'sweeps'}",
           "--set", f"data_dir={tmp_path / 'datasets'}",
           "--set", f"mlflow.experiment={experiment}", "--set", f"mlflow.tracking_uri={uri}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=sweep_env(ray_address(), uri), capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])


def _toggle_columns(page, names) -> None:
    """Show (or hide) columns with the runs table's "Columns" selector (search, then tick)."""
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        node = page.locator(".du-bois-light-tree-treenode", has=page.get_by_text(name, exact=True))
        node.first.locator(".du-bois-light-tree-checkbox").click(timeout=TIMEOUT_MS)
    page.keyboard.press("Escape")


def _close_assistant(page) -> None:
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def test_mlflow_ui_shows_sweep_parent_children_params_metrics_and_pareto_plot(mlflow_server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    t0 = time.monotonic()
    uri, experiment = mlflow_server, f"popsteer-ui-{uuid.uuid4().hex[:8]}"
    _run_smoke_sweep(uri, experiment, tmp_path)
    t_logged = time.monotonic()

    client, parents, children = mlflow_runs(uri, experiment)
    assert len(parents) == 1 and {c.data.tags["popsteer.trial_key"] for c in children} == TRIAL_KEYS
    parent = parents[0]
    exp_id, parent_id, parent_name = parent.info.experiment_id, parent.info.run_id, parent.info.run_name
    steering = [a.path for a in client.list_artifacts(parent_id, "steering")]
    plots = [p for p in steering if p.endswith(".png")]
    assert len(plots) == 1 and Path(plots[0]).name == "tradeoff.png", plots
    expected = {c.info.run_name: c for c in children}  # run name = trial key

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    runs_png, plot_png = ARTIFACTS / "mlflow_ui.png", ARTIFACTS / "mlflow_ui_pareto.png"
    # "Model training" view of the experiment (MLflow 3 opens the GenAI view by default)
    runs_url = f"{uri}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(runs_url)

            # the runs table: the sweep is one top-level row, named after the sweep
            parent_link = page.get_by_role("link", name=parent_name, exact=True)
            parent_link.wait_for()
            _close_assistant(page)
            left_rows = page.locator(".ag-pinned-left-cols-container .ag-row")
            assert left_rows.count() == 1, left_rows.all_inner_texts()
            page.get_by_text(f"{1 + len(children)} matching runs").wait_for()

            # expanding it shows exactly its child runs (the trials)
            row = page.locator(".ag-pinned-left-cols-container .ag-row", has=parent_link)
            row.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
            for name in expected:
                page.get_by_role("link", name=name, exact=True).wait_for()
            assert left_rows.count() == 1 + len(children)
            shown = {r.get_attribute("row-index"): r.locator("a").first.inner_text() for r in left_rows.all()}
            assert sorted(shown.values()) == sorted([parent_name, *expected])

            # params and metrics as comparable columns, each trial's values in its row
            _toggle_columns(page, ("Dataset", "Source", "Models", *COLUMNS))  # room for the params and metrics
            for name in COLUMNS:
                header = page.locator(f"[role=columnheader][col-id$='`{name}`']")
                header.wait_for()
                assert name in header.inner_text()
            checked = set()
            for r in page.locator(".ag-center-cols-container .ag-row").all():
                name = shown[r.get_attribute("row-index")]
                if name == parent_name:
                    continue
                run = expected[name]
                checked.add(name)

                def cell(col: str, r=r) -> str:
                    return r.locator(f"[role=gridcell][col-id='{col}']").inner_text().strip()

                assert cell("params.`trial.k`") == run.data.params["trial.k"], name
                assert cell("params.`trial.scale`") == run.data.params["trial.scale"], name
                fvu = cell("metrics.`sae_fvu`")
                assert fvu not in ("", "-") and float(fvu.rstrip(".…")) == pytest.approx(
                    run.data.metrics["sae_fvu"], rel=1e-2, abs=1e-3), (name, fvu)
            assert checked == set(expected)
            page.screenshot(path=str(runs_png), full_page=True)

            # the parent's artifacts: the Pareto plot is listed and rendered. A fresh page: the
            # runs table leaves a listing of the images alone in the app's state, which the tree would show
            page.close()
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{uri}/#/experiments/{exp_id}/runs/{parent_id}/artifacts?workflowType=machine_learning")
            page.get_by_text("steering", exact=True).click()
            for path in steering:
                page.get_by_text(Path(path).name, exact=True).wait_for()
            page.get_by_text(Path(plots[0]).name, exact=True).click()
            img = page.locator(f"img[alt='{plots[0]}']")
            img.wait_for()
            page.wait_for_function("(e) => e.complete && e.naturalWidth > 0", arg=img.element_handle())
            width, height = img.evaluate("(e) => [e.naturalWidth, e.naturalHeight]")
            assert (width, height) == (640, 480)  # grid_tradeoff: 6.4 x 4.8 in at 100 dpi
            _close_assistant(page)
            page.screenshot(path=str(plot_png), full_page=True)
        finally:
            browser.close()

    assert runs_png.read_bytes()[:8] == plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshots: {runs_png} {plot_png} (logging {t_logged - t0:.0f}s, "
          f"browser {time.monotonic() - t_logged:.0f}s)")
