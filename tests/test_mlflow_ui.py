"""The user's view of a sweep: the MLflow UI in a real headless Chromium against a real ``mlflow server``.

The session's MLflow server holds the smoke sweep that conftest's ``smoke_jobs`` fixture submitted
with ``ray job submit`` (tests/smoke_jobs.py: its own experiment, beside a second user's sweep).
Chromium (Debian's /usr/bin/chromium, driven by playwright) then opens the experiment and checks
that the sweep is one parent run whose expander shows its trials, that param and metric columns
(trial.k, trial.scale, sae_fvu, best_valid_loss) can be shown and hold each trial's values, and
that the parent's artifacts list and render the Pareto (trade-off) plot. The best trial's grid
points are nested runs under it (``popsteer.platform.point_runs``: params and metrics as in the
grid's table, the pick tagged), logged once even when the steering stage runs again; MLflow's
compare view of several of them shows their params (N, alpha, method) and metrics
(test_ndcg_at_10, test_gini_at_10) with their values, and its scatter plot puts NDCG@10 against
Gini@10. Screenshots: tests/artifacts/mlflow_ui.png (runs table), tests/artifacts/mlflow_ui_pareto.png
(the plot) and tests/artifacts/mlflow_compare.png (the compare view).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform_util import ROOT, mlflow_runs, ray_address, sweep_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
TRIAL_KEYS = {f"k{k}-s{s}-r0" for k in (4, 8) for s in (2, 4)}  # sweeps/smoke.yaml's grid
COLUMNS = ("trial.k", "trial.scale", "sae_fvu", "best_valid_loss")
GRID = {(n, a) for n in (16, 64, 128) for a in (1.0, 2.5, 4.0)}  # its steering grid
REFERENCES = {"sasrec", "sae"}  # the grid's references, point runs too
COMPARED_PARAMS, COMPARED_METRICS = ("N", "alpha", "method"), ("test_ndcg_at_10", "test_gini_at_10")
TIMEOUT_MS = 60_000  # the 2-CPU CI machine is slow to render a React app under load

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")]


def _run_smoke_sweep(uri: str, experiment: str, root: Path, *extra: str) -> None:
    """The real smoke sweep on the storage of ``smoke_jobs``, the driver here, the work on the running Ray head."""
    cmd = [sys.executable, "-m", "popsteer.sweep", "sweeps/smoke.yaml", "--set", f"storage={root / 'sweeps'}",
           "--set", f"data_dir={root / 'datasets'}",
           "--set", f"mlflow.experiment={experiment}", "--set", f"mlflow.tracking_uri={uri}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=sweep_env(ray_address(), uri), capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])


def _point_runs(client, exp_id: str, trial_run_id: str) -> dict[str, object]:
    """point key -> run, of the runs nested under a trial's run."""
    runs = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{trial_run_id}'", max_results=1000)
    return {r.data.tags["popsteer.point_key"]: r for r in runs}


def _assert_point_runs(points: dict, trial_key: str, local: Path) -> None:
    """One FINISHED run per grid point and reference, with the grid table's params and every metric; the pick tagged."""
    import pandas as pd

    from popsteer.platform.trainable import metric_name

    assert all(r.info.status == "FINISHED" and r.data.tags["popsteer.kind"] == "point" for r in points.values())
    steered = {(int(r.data.params["N"]), float(r.data.params["alpha"])): r for r in points.values()
               if r.data.params["method"] == "popsteer"}
    assert set(steered) == GRID and len(points) == len(GRID) + len(REFERENCES), sorted(points)
    assert {r.data.params["method"] for r in points.values()} == {"popsteer", *REFERENCES}
    grid = pd.read_csv(local / "steering_grid.csv")
    for row in grid.to_dict("records"):
        run = steered[(row["num_neurons"], row["alpha"])]
        variant = {"variant": "replace"} if "variant" in run.data.params else {}  # where the grid has variants
        assert run.data.params == {"method": "popsteer", "N": str(row["num_neurons"]), "alpha": str(row["alpha"]),
                                   "trial": trial_key, **variant}
        metrics = {f"{row['split']}_{metric_name(k)}": v for k, v in row.items()
                   if k not in ("split", "num_neurons", "alpha") and pd.notna(v)}
        assert {k: run.data.metrics[k] for k in metrics} == pytest.approx(metrics), run.info.run_name
    pick = json.loads((local / "steering_pick.json").read_text())
    picked = [key for key, r in steered.items() if r.data.tags["popsteer.picked"] == "true"]
    assert picked == ([] if pick["pick"] is None else [(pick["pick"]["num_neurons"], pick["pick"]["alpha"])])
    sasrec = next(r for r in points.values() if r.data.params["method"] == "sasrec")
    assert sasrec.data.metrics["test_ndcg_at_10"] == pytest.approx(pick["test_baselines"]["sasrec"]["ndcg@10"])


# the compare view's metrics: two react-virtualized grids (names | values), cells placed by top/left; only the
# rows near the visible ones exist, so the values grid (whose scroll the names follow) is scrolled through
GRIDS_JS = """[...[...document.querySelectorAll('.du-bois-light-collapse-item')]
  .find(e => e.querySelector('.du-bois-light-collapse-header')?.innerText.trim() === 'Metrics')
  .querySelectorAll('.ReactVirtualized__Grid')]"""
METRICS_JS = """async () => {
  const grids = GRIDS;
  const cells = (grid) => [...grid.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > div')]
    .map(d => [parseFloat(d.style.top), parseFloat(d.style.left), parseFloat(d.style.width), d.innerText.trim()]);
  const seen = grids.map(() => []), step = grids[1].clientHeight;
  for (let top = 0; ; top += step) {
    grids[1].scrollTop = top;
    await new Promise(done => requestAnimationFrame(() => setTimeout(done, 100)));
    grids.forEach((grid, i) => seen[i].push(...cells(grid)));
    if (top + step >= grids[1].scrollHeight) return seen;
  }
}""".replace("GRIDS", GRIDS_JS)
SCROLL_JS = """async (top) => {  // the metrics grids from row ``top`` on (the screenshot's)
  for (const grid of GRIDS.reverse()) {
    grid.scrollTop = top;
    await new Promise(done => requestAnimationFrame(() => setTimeout(done, 200)));
  }
}""".replace("GRIDS", GRIDS_JS)
PLOT_JS = "() => [...document.querySelectorAll('.js-plotly-plot')].map(g => (g.data || []).map(t => [t.x, t.y]))"


def _check_compare_view(browser, uri: str, exp_id: str, runs: list, png: Path) -> None:
    """MLflow's compare view of ``runs``: their params and metrics with their values, then NDCG@10 against Gini@10."""
    ids = [r.info.run_id for r in runs]
    page = browser.new_page(viewport={"width": 1700, "height": 2600})  # tall: the whole view in the screenshot
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{uri}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([exp_id])}")
    page.get_by_text(f"Comparing {len(runs)} Runs from 1 Experiment").wait_for()
    page.locator("a[title='Plot chart']").first.wait_for()  # the metrics' names are links to their charts
    _close_assistant(page)
    assert page.locator("table.mlflow-compare-run-table thead th.data-value a").all_inner_texts() == ids
    for name in COMPARED_PARAMS:  # the parameters table: a row per param, a cell per run, in the runs' order
        row = page.locator("tr", has=page.locator("th", has_text=re.compile(f"^{re.escape(name)}$")))
        assert row.count() == 1, name
        assert row.locator("td").all_inner_texts() == [r.data.params.get(name, "") for r in runs], name
    names, values = page.evaluate(METRICS_JS)
    rows = {top: text for top, _, _, text in names}
    shown = {(rows[top], round(left / width)): text for top, left, width, text in values}
    tops = {text: top for top, text in rows.items()}
    for name in COMPARED_METRICS:
        assert name in tops, (name, sorted(tops))
        for i, run in enumerate(runs):  # shown rounded to 3 significant digits or so
            assert float(shown[name, i]) == pytest.approx(run.data.metrics[name], rel=5e-3, abs=5e-4), (name, i)
    page.get_by_role("tab", name="Scatter Plot").click()
    for axis, metric in (("x", COMPARED_METRICS[1]), ("y", COMPARED_METRICS[0])):
        page.locator(f"#{axis}-axis-selector").click()
        page.get_by_role("option", name=metric, exact=True).click()
    page.locator(".js-plotly-plot .xtitle", has_text=COMPARED_METRICS[1]).wait_for(state="attached")
    page.locator(".js-plotly-plot .ytitle", has_text=COMPARED_METRICS[0]).wait_for(state="attached")
    (xs, ys), = [trace for plot in page.evaluate(PLOT_JS) for trace in plot]
    assert sorted(zip(xs, ys)) == pytest.approx(sorted((r.data.metrics[COMPARED_METRICS[1]],
                                                        r.data.metrics[COMPARED_METRICS[0]]) for r in runs))
    page.evaluate(SCROLL_JS, min(tops[name] for name in COMPARED_METRICS))
    page.screenshot(path=str(png))
    page.close()


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


def test_mlflow_ui_shows_sweep_parent_children_params_metrics_and_pareto_plot(smoke_jobs, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    uri, experiment = smoke_jobs.uri, smoke_jobs.experiment
    t_logged = time.monotonic()

    client, parents, children = mlflow_runs(uri, experiment)
    assert len(parents) == 1 and {c.data.tags["popsteer.trial_key"] for c in children} == TRIAL_KEYS
    parent = parents[0]
    exp_id, parent_id, parent_name = parent.info.experiment_id, parent.info.run_id, parent.info.run_name
    steering = [a.path for a in client.list_artifacts(parent_id, "steering")]
    plots = [p for p in steering if p.endswith(".png")]
    assert len(plots) == 1 and Path(plots[0]).name == "tradeoff.png", plots
    expected = {c.info.run_name: c for c in children}  # run name = trial key

    # the best trial's grid points: nested runs under its run, once; a rerun of the stage adds nothing
    best = next(c for c in children if c.data.tags["popsteer.trial_key"] == parent.data.tags["popsteer.best_trial"])
    local = Path(client.download_artifacts(parent_id, "steering", str(tmp_path / "dl")))
    points = _point_runs(client, exp_id, best.info.run_id)
    _assert_point_runs(points, best.info.run_name, local)
    all_runs = client.search_runs([exp_id], max_results=1000)
    assert len(all_runs) == 1 + len(children) + len(points)  # no point run anywhere else
    t_rerun = time.monotonic()
    _run_smoke_sweep(uri, experiment, smoke_jobs.root, "--only", "steering")
    t_rerun = time.monotonic() - t_rerun
    again = _point_runs(client, exp_id, best.info.run_id)
    assert {k: r.info.run_id for k, r in again.items()} == {k: r.info.run_id for k, r in points.items()}
    assert len(client.search_runs([exp_id], max_results=1000)) == len(all_runs)
    for run in again.values():
        assert len(client.get_metric_history(run.info.run_id, "test_ndcg_at_10")) == 1, run.info.run_name
    steered = sorted((r for r in points.values() if r.data.params["method"] == "popsteer"),
                     key=lambda r: (r.data.tags["popsteer.picked"] != "true", int(r.data.params["N"]),
                                    float(r.data.params["alpha"])))
    compared = [*steered[:3], next(r for r in points.values() if r.data.params["method"] == "sasrec")]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    runs_png, plot_png, compare_png = (ARTIFACTS / f"{n}.png" for n in ("mlflow_ui", "mlflow_ui_pareto",
                                                                           "mlflow_compare"))
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
            page.get_by_text(f"{len(all_runs)} matching runs").wait_for()  # the point runs too

            # expanding it shows exactly its child runs (the trials; the best one's points stay folded)
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
            page.close()

            # the best trial's neuron browser (popsteer browse, built by the steering stage) among its run's artifacts
            listed = [a.path for a in client.list_artifacts(best.info.run_id, "neuron_browser")]
            assert "neuron_browser/index.html" in listed, listed
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{uri}/#/experiments/{exp_id}/runs/{best.info.run_id}/artifacts?workflowType=machine_learning")
            page.get_by_text("neuron_browser", exact=True).click()
            page.get_by_text("index.html", exact=True).wait_for()
            _close_assistant(page)
            page.screenshot(path=str(ARTIFACTS / "mlflow_neuron_browser.png"), full_page=True)
            page.close()

            # the compare view of three grid points (the pick first, where there is one) and the recommender
            _check_compare_view(browser, uri, exp_id, compared, compare_png)
        finally:
            browser.close()

    assert runs_png.read_bytes()[:8] == plot_png.read_bytes()[:8] == compare_png.read_bytes()[:8] \
        == b"\x89PNG\r\n\x1a\n"
    print(f"\nscreenshots: {runs_png} {plot_png} {compare_png} (steering rerun "
          f"{t_rerun:.0f}s, browser {time.monotonic() - t_logged - t_rerun:.0f}s)")
