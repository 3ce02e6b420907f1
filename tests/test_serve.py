"""``popsteer serve``: a real Serve app on loopback (the suite's Ray cluster), served from a bundle registered
in the suite's MLflow server, answering real HTTP requests; one replica killed under concurrent load.

One app for the module (Ray Serve starts slowly): the small SASRec of conftest, an SAE (K=8, 128 neurons)
trained, analysed and given a one-point steering grid in-process, its bundle logged and registered, and
``serve(ServeConfig(model_uri=...))`` deploying it with two replicas.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
import uuid

import numpy as np
import pytest
import requests
import torch

pytestmark = pytest.mark.usefixtures("platform_services")

N, ALPHA = 16, 1.0
"""The one grid point: the validation pick (the NDCG limit is lifted so that it qualifies)."""
USERS = ["1", "2", "5", "10", "196"]
LAMS = (0.1, 50.0)
"""Learned steering's two fitted lams (CI-sized fits)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def analysed(small_sasrec, tmp_path_factory):
    """(SAE path, Workspace): an SAE on the session's SASRec, analysed, with its one-point grid picked."""
    from popsteer.sae.model import SAEConfig
    from popsteer.stages.analysis import analyze
    from popsteer.stages.config import (AnalysisConfig, GridConfig, GridStageConfig, LearnedConfig, SAERef,
                                        SAEStageConfig, Workspace)
    from popsteer.stages.sae import train_sae
    from popsteer.stages.steer import tune_steering

    work = tmp_path_factory.mktemp("serve")
    where = Workspace(str(work / "datasets"), str(work / "saved"))
    base = work / "saved" / small_sasrec[1].name
    base.parent.mkdir(parents=True)
    shutil.copy(small_sasrec[1], base)
    sae = train_sae(SAEStageConfig(str(base), SAEConfig(k=8, scale=4, max_epochs=2, min_epochs=1), where=where)).checkpoint
    ref = SAERef(sae, where=where)
    analyze(AnalysisConfig(ref))
    tune_steering(GridStageConfig(ref, GridConfig(ns=[N], alphas=[ALPHA], max_ndcg_drop=1.0)))
    tune_steering(GridStageConfig(ref, GridConfig(variant="learned", max_ndcg_drop=1.0, learned=LearnedConfig(
        lambdas=list(LAMS), refine=0, steps=60, batch_size=256))))  # learned steering's deltas and pick
    return sae, where


@pytest.fixture(scope="module")
def app(analysed, ray_cluster):
    """(base URL, the SAE's bundle folder built from -p): the app deployed from the registered MLflow model."""
    from ray import serve as ray_serve

    from platform_util import ray_address, tracking_uri
    from popsteer.serve.app import connect_ray
    from popsteer.serve.run import serve
    from popsteer.stages.config_serve import ServeConfig

    sae, where = analysed
    name = f"popsteer-test-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri())
        built = serve(ServeConfig(path=sae, register=name, build_only=True, where=where))
        assert built["mlflow"]["registered"] == f"models:/{name}/1"
        connect_ray(ray_address())
        out = serve(ServeConfig(model_uri=f"models:/{name}/1", port=_free_port(), replicas=2, replica_cpus=0.25,
                                where=where), block=False)
        assert out["bundle"] != built["bundle"] and out["url"].startswith("http://127.0.0.1:")
        try:
            yield out["url"], built["bundle"]
        finally:
            ray_serve.shutdown()
            import ray

            ray.shutdown()


def _post(url: str, body: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/recommend", json=body, timeout=timeout)


def _ids(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [item["item_id"] for item in resp.json()["items"]]


@pytest.fixture(scope="module")
def offline(analysed, ml100k_small):
    """The offline steering path's lists for USERS (their whole sequences, encoded as the grid encodes):
    x (U, d) and {"sasrec", "sae", "points"} from ``score_users`` at the pick and at alpha 0 (preserve)."""
    from popsteer.models.encode import encode_users
    from popsteer.models.io import load_recommender
    from popsteer.stages.config import SAERef
    from popsteer.stages.context import load_sae_context
    from popsteer.stages.config import LearnedConfig
    from popsteer.stages.learned import learned_deltas as learned_deltas_of
    from popsteer.steering.grid import GridPoint, point_deltas, score_users

    sae, where = analysed
    ctx = load_sae_context(SAERef(sae, where=where))
    data = ctx.data
    model, _ = load_recommender(ctx.base.path)
    users = [int(np.flatnonzero(data.user_tokens == u)[0]) for u in USERS]
    seq = np.zeros((len(users), data.max_len), dtype=np.int64)
    lens = np.zeros(len(users), dtype=np.int64)
    for row, u in enumerate(users):
        s = data.sequence(u)[-data.max_len:]
        seq[row, : len(s)], lens[row] = s, len(s)
    x = torch.cat([encode_users(model, seq[r : r + 1], lens[r : r + 1]) for r in range(len(users))])  # (U, d)
    deltas = point_deltas(ctx.scores(), [GridPoint(N, ALPHA)])
    lists = score_users(ctx.sae, x, ctx.base.table.emb, 10, deltas, bias=ctx.base.table.bias)
    learned_deltas, fits = learned_deltas_of(ctx, LearnedConfig(lambdas=list(LAMS), refine=0, steps=60, batch_size=256),
                                             write=False)  # read back from the SAE's folder (no fit)
    learned = score_users(ctx.sae, x, ctx.base.table.emb, 10, learned_deltas, bias=ctx.base.table.bias, preserve=True)
    tokens = data.item_tokens.astype(str)
    return {"x": x.numpy(), "steered": tokens[lists["points"][0]].tolist(), "own": tokens[lists["sasrec"]].tolist(),
            "history": [tokens[data.sequence(u)].tolist() for u in users],
            "learned": {f["lam"]: tokens[learned["points"][i]].tolist() for i, f in enumerate(fits)}}


def test_health_and_neurons(app, analysed):
    import pandas as pd

    from popsteer.steering.results import sae_dir

    url, _ = app
    health = requests.get(f"{url}/health", timeout=60).json()
    assert health["status"] == "ok" and health["dataset"] == "ml-100k" and health["n_neurons"] == 128
    steering = health["steering"]  # the validation pick, carried through MLflow
    assert (steering["num_neurons"], steering["alpha"], steering["variant"]) == (N, ALPHA, "replace")
    assert steering["source"].endswith("steering_pick.json")
    neurons = requests.get(f"{url}/neurons", timeout=60).json()["neurons"]
    sae, where = analysed
    d = pd.read_csv(sae_dir(where.data_dir, "ml-100k", sae) / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
    assert len(neurons) == 128 and {"neuron", "cohen_d", "label"} <= set(neurons[0])
    assert [abs(n["cohen_d"]) for n in neurons] == sorted(np.abs(d), reverse=True)
    assert all(n["cohen_d"] == pytest.approx(d[n["neuron"]]) for n in neurons)


def test_recommend_equals_the_offline_steering_path(app, offline):
    url, _ = app
    for row, user in enumerate(USERS):
        by_user = _post(url, {"user_id": user, "k": 10})
        assert _ids(by_user) == offline["steered"][row], user  # the default: the validation pick
        body = by_user.json()
        assert body["steering"] == {"variant": "replace", "num_neurons": N, "alpha": ALPHA, "alpha_unpop": None}
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True) and all(item["title"] for item in body["items"])
        moved = body["moved_neurons"]
        assert moved and all(m["change"] == pytest.approx(m["after"] - m["before"]) for m in moved)
        by_vector = _post(url, {"vector": offline["x"][row].tolist(), "num_neurons": N, "alpha": ALPHA})
        assert _ids(by_vector) == offline["steered"][row]
        by_history = _post(url, {"history": offline["history"][row], "num_neurons": N, "alpha": ALPHA})
        assert _ids(by_history) == offline["steered"][row]
        own = _post(url, {"user_id": user, "alpha": 0, "variant": "preserve"})  # x itself: the recommender's list
        assert _ids(own) == offline["own"][row] and own.json()["moved_neurons"] == []


def test_learned_steering_is_served_at_every_fitted_lam(app, offline):
    """variant learned: the fitted delta of the requested lam (default: the learned grid's validation pick), the
    offline learned grid's lists exactly; an unfitted lam is a 422 naming lam."""
    url, _ = app
    learned = requests.get(f"{url}/health", timeout=60).json()["learned"]
    assert learned["lams"] == list(LAMS) and learned["pick"] in LAMS
    for row, user in enumerate(USERS):
        for lam in LAMS:
            resp = _post(url, {"user_id": user, "variant": "learned", "lam": lam})
            assert _ids(resp) == offline["learned"][lam][row], (user, lam)
            assert resp.json()["steering"] == {"variant": "learned", "lam": lam}
        assert _ids(_post(url, {"user_id": user, "variant": "learned"})) == offline["learned"][learned["pick"]][row]
    assert offline["learned"][LAMS[0]] != offline["learned"][LAMS[1]]  # the two fits differ: the check can fail
    bad = _post(url, {"user_id": "1", "variant": "learned", "lam": 1.0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "lam"


def test_requests_answered_together_equal_each_alone(app, offline):
    """Batching (one index search over stacked queries) changes no answer: the engine's batch of mixed
    requests equals each request alone, a refused one is its own error; and a burst of concurrent HTTP
    requests (which Serve batches) gets the offline lists, its bad request a 422 of its own."""
    from concurrent.futures import ThreadPoolExecutor

    from popsteer.serve.engine import ServingEngine
    from popsteer.serve.schemas import RecommendRequest, RequestError

    _, bundle = app
    engine = ServingEngine(bundle)
    reqs = [RecommendRequest(user_id=u, k=k, alpha=a, num_neurons=128)
            for u, k, a in zip(USERS, (10, 3, 25, 10, 7), (0.0, 4.0, 1.5, 4.0, 0.5))]
    reqs.insert(2, RecommendRequest(user_id="no-such-user"))
    together = engine.recommend_many(reqs)
    assert isinstance(together[2], RequestError) and together[2].field == "user_id"
    for req, out in zip(reqs, together):
        if req.user_id != "no-such-user":
            assert out == engine.recommend(req) and len(out["items"]) == req.k
    url, _ = app
    bodies = [{"user_id": u, "num_neurons": N, "alpha": ALPHA} for u in USERS] * 3 + [{"user_id": "1", "k": 0}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        resps = list(pool.map(lambda b: _post(url, b), bodies))
    assert resps[-1].status_code == 422 and resps[-1].json()["detail"][0]["loc"][-1] == "k"
    for i, resp in enumerate(resps[:-1]):
        assert _ids(resp) == offline["steered"][i % len(USERS)]


def test_per_request_alpha_changes_the_list(app):
    url, _ = app
    changed = 0
    for user in USERS:
        lists = [_ids(_post(url, {"user_id": user, "alpha": a, "num_neurons": 128})) for a in (0.0, 4.0)]
        changed += lists[0] != lists[1]
    assert changed >= 3, changed


@pytest.mark.parametrize("body, field", [
    ({"user_id": "no-such-user"}, "user_id"),
    ({"history": ["50", "no-such-item"]}, "history"),
    ({"vector": [0.5, 0.5]}, "vector"),
    ({"user_id": "1", "alpha": -1}, "alpha"),
    ({"user_id": "1", "alpha": 1e9}, "alpha"),
    ({"user_id": "1", "alpha_unpop": -0.5}, "alpha_unpop"),
    ({"user_id": "1", "num_neurons": 129}, "num_neurons"),
    ({"user_id": "1", "num_neurons": 0}, "num_neurons"),
    ({"user_id": "1", "k": 0}, "k"),
    ({"user_id": "1", "variant": "sideways"}, "variant"),
    ({"user_id": "1", "colour": "red"}, "colour"),
    ({"user_id": "1", "vector": [0.0] * 32}, None),
    ({}, None),
])
def test_bad_requests_are_422_naming_the_field(app, body, field):
    url, _ = app
    resp = _post(url, body)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    if field is None:  # the whole body: the message names the three inputs
        assert "exactly one of user_id, history, vector" in detail[0]["msg"]
    else:
        assert detail[0]["loc"][-1] == field, detail


def test_a_killed_replica_loses_only_its_requests_in_flight(app):
    url, _ = app
    pids = set()
    for _ in range(60):
        pids.add(requests.get(f"{url}/health", timeout=60).json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2, pids
    results, lock, clients = [], threading.Lock(), 8
    killed_at = [None]
    stop = time.monotonic() + 10

    def client() -> None:
        while time.monotonic() < stop:
            try:
                resp = _post(url, {"user_id": "196", "alpha": 2.0})
                with lock:
                    results.append((time.monotonic(), resp.status_code, resp.json()))
            except requests.RequestException as exc:
                with lock:
                    results.append((time.monotonic(), type(exc).__name__, {}))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(3)
    os.kill(min(pids), signal.SIGKILL)  # a real kill of one model replica's process
    killed_at[0] = time.monotonic()
    for t in threads:
        t.join()
    failed = [r for r in results if r[1] != 200]
    assert all(r[1] == 503 and "replica answering this request died" in r[2]["error"] for r in failed), failed[:3]
    assert len(failed) <= clients  # at most the requests in flight when it died
    after = [r for r in results if r[0] > killed_at[0] + 1 and r[1] == 200]
    assert len(after) >= 5, (len(after), len(results))  # the other replica serves on
    assert len({tuple(i["item_id"] for i in r[2]["items"]) for r in results if r[1] == 200}) == 1


def test_bad_serve_commands_are_one_line(capsys, analysed):
    from popsteer.app.cli import main

    sae, where = analysed
    cases = [([], "give exactly one of -p SAE or --model-uri URI"),
             (["-p", sae, "--port", "70000"], "--port must be in [1, 65535]"),
             (["-p", sae, "--replicas", "0"], "--replicas must be in [1, 64]"),
             (["-p", str(sae) + ".missing", "--build-only"], "not found")]
    for args, message in cases:
        assert main(["serve", *args, "--data-dir", where.data_dir, "--out-dir", where.out_dir]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err, err


def test_the_neuron_browser_steers_live_through_the_server(app, analysed, tmp_path):
    """A user page of ``popsteer browse``, opened from disk with ?api=<the app>, asks the server at the slider's
    strength (a CORS request from origin "null") and lists exactly what POST /recommend returns; no other host
    is contacted. Screenshot: tests/artifacts/browse_live_slider.png."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    from test_browse import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
    from popsteer.stages.browse import browse
    from popsteer.stages.config import SAERef
    from popsteer.stages.config_browse import BrowseConfig

    url, _ = app
    sae, where = analysed
    out = browse(BrowseConfig(SAERef(sae, where=where), site=str(tmp_path / "site"), users=3, pages=2))
    page_file = sorted((tmp_path / "site" / "users").glob("u*.html"))[0]
    token = page_file.read_text().split('data-user="')[1].split('"')[0]
    expected = _ids(_post(url, {"user_id": token, "num_neurons": 128, "alpha": 4.0}))
    hosts = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: hosts.append(r.url.split("/")[2]) if r.url.startswith("http") else None)
            page.goto(page_file.as_uri() + f"?api={url}")
            page.wait_for_selector("#live .live-list li", timeout=60_000)  # the first answer, at the page's strength
            page.evaluate("() => { const el = document.querySelector('#live'); el.dataset.numNeurons = '128';"
                          " const s = el.querySelector('input[type=range]'); s.value = '4';"
                          " s.dispatchEvent(new Event('change')); }")
            page.wait_for_function("() => document.querySelector('#live .live-status').textContent.includes('alpha = 4')",
                                   timeout=60_000)
            shown = page.eval_on_selector_all("#live .live-list li", "els => els.map(e => e.dataset.item)")
            page.screenshot(path=str(ARTIFACTS / "browse_live_slider.png"), full_page=True)
        finally:
            browser.close()
    assert out["user_pages"] == 3 and shown == expected
    assert set(hosts) == {url.split("/")[2]}, hosts
