"""``popsteer browse`` on ml-100k (CI-sized SAE): the static neuron browser, written whole, and used in a real
headless Chromium opened from disk with every non-file request refused.

A tag planted on the top items of a neuron outside the top ``--pages`` by |d| must label it (and so give
it a page); the recommender's baselines grid (hand-made here, in ``report``'s format) joins the steering
grids on the trade-off page. Chromium (Debian's /usr/bin/chromium driven by playwright, as
tests/test_mlflow_ui.py) sorts and filters the neuron table, opens the planted neuron's page (label, top
items, the probe histogram drawn by the vendored plotly.js) and a user page whose lists before and after
steering differ. Screenshots: tests/artifacts/browse_{index,neuron,tradeoff,user}.png.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_util import ROOT, error_lines, run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"
PAGES = 20
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("browse")


@pytest.fixture(scope="module")
def sae_ckpt(workdir, small_sasrec):
    """The session's small SASRec, an SAE (K=8, 128 neurons) on it, its analysis and a small steering grid."""
    sasrec = workdir / "saved" / small_sasrec[1].name
    sasrec.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(small_sasrec[1], sasrec)
    proc = run_cli(["--train_popsteer", "-p", str(sasrec), "--top_k", "8", "--scale", "4", "--epochs", "3",
                    "--min-epochs", "1"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (ckpt,) = (workdir / "saved").glob("SASRec_SAE-*-k8-4-ml-100k.safetensors")
    for args in (["--analyze_neurons", "-p", str(ckpt)],):
        proc = run_cli(args, workdir)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for extra in ([], ["--variant", "preserve"]):
        proc = run_cli(["tune-steering", "-p", str(ckpt), "--ns", "32", "128", "--alphas", "1", "2", "4", *extra],
                       workdir, seed=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    baselines = workdir / "datasets" / "ml-100k" / "baselines" / sasrec.stem
    baselines.mkdir(parents=True)
    pd.DataFrame([{"method": "ipr", "split": s, "extended": False, "a": a, "ndcg@10": 0.02 - a / 100,
                   "gini@10": 0.95 - a / 20} for s in ("valid", "test") for a in (0.5, 1.0)]).to_csv(
        baselines / "baselines_grid.csv", index=False)
    return ckpt


def _results(workdir: Path, ckpt: Path) -> Path:
    return workdir / "datasets" / "ml-100k" / "analysis" / ckpt.stem


@pytest.fixture(scope="module")
def planted(workdir, sae_ckpt, ml100k_small):
    """(neuron, tags CSV): ``planted`` on the top items of the neuron ranked 2 * PAGES by |d|, ``everything`` on
    every item; the CSV is keyed by raw token."""
    folder = _results(workdir, sae_ckpt)
    d = pd.read_csv(folder / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
    neuron = int(np.argsort(-np.abs(d), kind="stable")[2 * PAGES])
    top = pd.read_csv(folder / "neuron_top_items.csv", dtype={"item_token": str})
    tokens = top.loc[top["neuron"] == neuron, "item_token"].tolist()
    rows = [(t, "planted") for t in tokens] + [(t, "everything") for t in ml100k_small.item_tokens[1:]]
    path = workdir / "tags.csv"
    pd.DataFrame(rows, columns=["item_id", "tag"]).to_csv(path, index=False)
    return neuron, path


@pytest.fixture(scope="module")
def site(workdir, sae_ckpt, planted):
    proc = run_cli(["browse", "-p", str(sae_ckpt), "--out", "site", "--tags", str(planted[1]), "--pages", str(PAGES),
                    "--users", "12"], workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), workdir / "site"


def test_site_files_and_labels(workdir, sae_ckpt, planted, site):
    out, folder = site
    neuron, _ = planted
    assert out["site"] == str(folder / "index.html") and out["user_pages"] == 12
    assert out["labelled_neurons"] >= 1 and out["metadata"].startswith("--tags")
    labels = pd.read_csv(_results(workdir, sae_ckpt) / "neuron_labels.csv", keep_default_na=False)
    assert labels.loc[labels["neuron"] == neuron, "label"].item() == "planted"
    assert not labels["tags"].str.contains("everything").any()  # every item has it: never enriched
    assert out["neuron_pages"] >= PAGES + 1 and (folder / "neurons" / f"{neuron}.html").is_file()  # labelled: a page
    import plotly

    vendored = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert (folder / "assets" / "plotly.min.js").read_bytes() == vendored.read_bytes()
    assert {"steering_grid.csv", "steering_grid-preserve.csv"} <= set(out["tradeoff_sources"])
    assert any(s.endswith("baselines_grid.csv") for s in out["tradeoff_sources"])
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".site.")]  # no temporary folder left
    html = (folder / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def _route(blocked: list[str]):
    def handle(route) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()
    return handle


def _column(page, col: int) -> list[float]:
    return page.eval_on_selector_all("#neurons tbody tr:not([hidden])",
                                     f"rows => rows.map(r => parseFloat(r.cells[{col}].dataset.v))")


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}: `apt-get install -y chromium`")
def test_browser_offline_in_chromium(site, sae_ckpt, planted, ml100k_small):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    from popsteer.report.neurons import item_titles

    _, folder = site
    neuron, _ = planted
    top = pd.read_csv(_results(folder.parent, sae_ckpt) / "neuron_top_items.csv")
    names = item_titles(ml100k_small, folder.parent / "datasets", folder.parent / "no-shared")
    expected_titles = [names[i] for i in top[top["neuron"] == neuron].sort_values("rank")["item_id"]]
    assert expected_titles[0] != ml100k_small.item_tokens[top.loc[top["neuron"] == neuron, "item_id"].iloc[0]]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked, errors = [], []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", _route(blocked))
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((folder / "index.html").as_uri())

            # the neuron table: |d| sorted largest first, then smallest first; filtered by label
            header = page.locator("#neurons th", has_text=re.compile(r"^\|d\|$"))
            header.click()
            assert header.get_attribute("aria-sort") == "descending"
            values = _column(page, 2)
            assert len(values) == 128 and values == sorted(values, reverse=True)
            header.click()
            assert _column(page, 2) == sorted(values)
            page.fill("#filter-text", "planted")
            shown = page.locator("#neurons tbody tr:not([hidden])")
            assert shown.count() >= 1 and all("planted" in t for t in shown.all_inner_texts())
            page.screenshot(path=str(ARTIFACTS / "browse_index.png"))

            # the planted neuron's page: its label, its top items by title, the histogram drawn offline
            page.locator(f"#neurons a[href='neurons/{neuron}.html']").click()
            page.locator("#hist.js-plotly-plot").wait_for()
            assert "planted" in page.inner_text("#label")
            titles = page.locator("#top-items tbody tr td:nth-child(2) .item").all_inner_texts()
            assert titles == expected_titles  # by title (RecBole's ml-100k.item), not by raw id
            assert page.locator("#top-users tbody tr").count() == 5
            page.screenshot(path=str(ARTIFACTS / "browse_neuron.png"), full_page=True)

            # the trade-off page: both grid forms and the baseline, as plotly traces
            page.goto((folder / "tradeoff.html").as_uri())
            page.locator("#tradeoff-test.js-plotly-plot").wait_for()
            names = page.evaluate("() => document.getElementById('tradeoff-test').data.map(t => t.name)")
            assert {"PopSteer", "PopSteer error-preserving", "ipr", "SASRec", "SAE (unsteered)"} <= set(names)
            page.screenshot(path=str(ARTIFACTS / "browse_tradeoff.png"))

            # a user whose list changes at the first steered setting: before and after differ
            page.goto((folder / "users.html").as_uri())
            changed = page.locator("#users tbody tr:not([data-changed='0']) a").first
            changed.click()
            page.wait_for_selector("section[data-list='SAE (unsteered)'] li")  # the user page, not users.html still
            before = page.locator("section[data-list='SAE (unsteered)'] li").all_inner_texts()
            after = page.locator("section[data-list^='steered'] li").all_inner_texts()
            assert len(before) == len(after) == 10 and before != after
            assert page.locator("#live").get_attribute("data-api") == ""  # the live hook, off
            page.screenshot(path=str(ARTIFACTS / "browse_user.png"), full_page=True)
        finally:
            browser.close()
    assert not blocked, blocked  # the site needed nothing from the network
    assert not errors, errors


def test_rerun_replaces_the_site_and_logs_it_to_mlflow(workdir, sae_ckpt, site, monkeypatch):
    _, folder = site
    (folder / "stale.txt").write_text("from an earlier site")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    proc = run_cli(["browse", "-p", str(sae_ckpt), "--out", "site", "--pages", "5", "--users", "3", "--mlflow"],
                   workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert not (folder / "stale.txt").exists() and (folder / "index.html").is_file()
    assert out["metadata"].endswith("(class)")  # RecBole's ml-100k.item genres, without --tags
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(out["mlflow_run"])
    assert run.data.tags["popsteer.kind"] == "neuron_browser"
    listed = {a.path for a in client.list_artifacts(out["mlflow_run"], "neuron_browser")}
    assert {"neuron_browser/index.html", "neuron_browser/assets", "neuron_browser/neurons"} <= listed


def test_bad_input_is_one_line_and_writes_nothing(workdir, sae_ckpt, monkeypatch):
    other = workdir / "not-a-site"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cases = [(["--out", str(other)], "is not a neuron browser"),
             (["--out", "never", "--tags", str(workdir / "missing.csv")], "cannot read the tags file"),
             (["--out", "never", "--mlflow"], "MLFLOW_TRACKING_URI"),
             (["--out", "never", "--users", "0"], "--users")]
    for extra, message in cases:
        proc = run_cli(["browse", "-p", str(sae_ckpt), *extra], workdir, seed=False)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        (line,) = error_lines(proc)
        assert line.startswith("error: ") and message in line, line
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert not (workdir / "never").exists()
    assert not [p.name for p in workdir.iterdir() if p.name.startswith((".never.", ".not-a-site."))]


def test_log_site_into_a_given_run_through_a_client(workdir, site, monkeypatch):
    """The platform's way: its tracker's MlflowClient and a run id (e.g. a sweep trial's run), no fluent state."""
    from mlflow.tracking import MlflowClient

    from popsteer.browse.tracking import log_site

    monkeypatch.chdir(workdir)  # the sqlite store's default artifact root is relative
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'client.db'}")
    run = client.create_run(client.create_experiment("browse-client"))
    assert log_site(site[1], run_id=run.info.run_id, client=client) == run.info.run_id
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "neuron_browser")}
    assert "neuron_browser/index.html" in listed and "neuron_browser/users.html" in listed
