"""Fair grids: every re-ranker's grid extended toward PopSteer's Gini range (``span_gini``), on the
small ml-100k SASRec; the stage's cache identity and the popularity direction's probes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from popsteer.baselines import BASELINES
from popsteer.baselines.direction import popularity_direction
from popsteer.baselines.extension import grow, toward
from popsteer.baselines.tuning import MAX_EXTRA_POINTS, MAX_SPAN_NDCG_DROP, evaluate_baseline_grid, tune_baseline
from popsteer.eval.tradeoff import tradeoff
from test_baselines import ml100k_splits  # noqa: F401  (the fixture: valid / test with the direction)


def check_extension(b, out: dict, base: dict, span: float, n_items: int) -> None:
    """The stop rule of ``extend_grid``, point by point, and every point on both splits."""
    grid, valid, test, n0 = out["grid"], out["valid_rows"], out["test_rows"], out["n_base_points"]
    assert len(grid) == len(valid) == len(test) and n0 <= len(grid)
    for p, rv, rt in zip(grid, valid, test):
        assert {k: rv[k] for k in p} == p == {k: rt[k] for k in p}
        assert np.isfinite(rv["ndcg@10"]) and np.isfinite(rt["gini@10"])
    for i in range(n0, len(grid)):  # an extended point is added only while no earlier point met a stop
        assert min(r["gini@10"] for r in valid[:i]) > span
        assert max(tradeoff(r, base)[1] for r in valid[:i]) < MAX_SPAN_NDCG_DROP
        assert grid[i] == b.extend(grid[i - 1], n_items)
    reached = min(r["gini@10"] for r in valid) <= span
    fell = max(tradeoff(r, base)[1] for r in valid) >= MAX_SPAN_NDCG_DROP
    assert out["spans"] == reached and out["span_gini"] == span
    assert out["stop"] == ("span" if reached else "ndcg" if fell else
                           "max_points" if len(grid) - n0 >= MAX_EXTRA_POINTS else "bound")
    if out["stop"] == "bound":
        assert b.extend(grid[-1], n_items) is None


def test_extension_rules():
    double = grow("a", 2.0, 10.0)
    seq = [{"a": 1.0, "x": 3}]
    while (nxt := double(seq[-1], 100)) is not None:
        seq.append(nxt)
    assert [p["a"] for p in seq] == [1.0, 2.0, 4.0, 8.0, 10.0] and all(p["x"] == 3 for p in seq)
    to_catalogue = grow("m", 2.0, None, integer=True)
    assert to_catalogue({"m": 100}, 301) == {"m": 200} and to_catalogue({"m": 200}, 301) == {"m": 300}
    assert to_catalogue({"m": 300}, 301) is None
    pct = BASELINES["pct"].extend
    assert [pct({"lam": 0.9}, 0), pct({"lam": 0.95}, 0), pct({"lam": 0.99}, 0), pct({"lam": 1.0}, 0)] == \
        [{"lam": 0.95}, {"lam": 0.99}, {"lam": 1.0}, None]
    assert toward(())({"lam": 1.0}, 0) is None
    fair = BASELINES["fair"].extend
    assert fair(BASELINES["fair"].grid[-1], 0) == {"p": 0.995, "significance": 0.1}
    assert fair({"p": 0.999, "significance": 0.1}, 0) is None


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_grid_extends_to_a_bound_from_its_strongest_point(name):
    b = BASELINES[name]
    assert b.extend is not None
    seq = [b.grid[-1]]
    while (nxt := b.extend(seq[-1], 1683)) is not None and len(seq) < 100:
        assert nxt.keys() == seq[-1].keys() and nxt != seq[-1]
        seq.append(nxt)
    assert nxt is None  # every rule ends


def test_without_span_the_grids_are_unchanged(ml100k_splits):  # noqa: F811
    valid, test = ml100k_splits["valid"], ml100k_splits["test"]
    base = valid.evaluator(valid.x, valid.item_emb)
    for b in BASELINES.values():
        grid = b.tiny_grid()
        out = tune_baseline(b, valid, test, base, grid)
        assert out["grid"] == list(grid) and out["n_base_points"] == len(grid)
        assert out["spans"] is None and out["stop"] is None and out["span_gini"] is None
        assert len(out["valid_rows"]) == len(out["test_rows"]) == len(grid)


def test_ipr_grid_extends_beyond_a_one(ml100k_splits):  # noqa: F811
    valid, test = ml100k_splits["valid"], ml100k_splits["test"]
    base = valid.evaluator(valid.x, valid.item_emb)
    b = BASELINES["ipr"]
    plain = tune_baseline(b, valid, test, base)
    span = min(r["gini@10"] for r in plain["valid_rows"]) - 0.05  # below what a <= 1 reaches
    out = tune_baseline(b, valid, test, base, span_gini=span)
    assert out["valid_rows"][: len(b.grid)] == plain["valid_rows"] and out["n_base_points"] == len(b.grid)
    assert len(out["grid"]) > len(b.grid) and out["grid"][len(b.grid)] == {"a": 2.0}
    assert all(p["a"] > 1.0 for p in out["grid"][len(b.grid):])
    check_extension(b, out, base, span, valid.item_emb.shape[0])  # span, NDCG rule, or a's cap (IPR saturates)
    # a span that a = 4 reaches: the extension stops there
    reach = evaluate_baseline_grid(b, valid, ({"a": 4.0},))[0]["gini@10"]
    at4 = tune_baseline(b, valid, test, base, span_gini=reach)
    assert at4["stop"] == "span" and at4["spans"] and at4["grid"][len(b.grid):][-1] == {"a": 4.0}
    check_extension(b, at4, base, reach, valid.item_emb.shape[0])
    # a span the grid already reaches: nothing added
    easy = tune_baseline(b, valid, test, base, span_gini=1.0)
    assert easy["grid"] == list(b.grid) and easy["spans"] and easy["stop"] == "span"


@pytest.mark.parametrize("name", ["ppd", "spree", "pmmf", "random"])
def test_new_and_bounded_methods_extend_and_stop(ml100k_splits, name):  # noqa: F811
    valid, test = ml100k_splits["valid"], ml100k_splits["test"]
    base = valid.evaluator(valid.x, valid.item_emb)
    b = BASELINES[name]
    grid = b.tiny_grid()
    span = min(r["gini@10"] for r in tune_baseline(b, valid, test, base, grid)["valid_rows"]) - 0.1
    out = tune_baseline(b, valid, test, base, grid, span_gini=span)
    check_extension(b, out, base, span, valid.item_emb.shape[0])
    assert len(out["grid"]) > len(grid) or out["stop"] == "ndcg"
    assert all(np.isfinite(out["test"][k]) for k in ("ndcg@10", "gini@10"))


# ------------------------------------------------------------------ the stage


@pytest.fixture()
def base_context(ml100k_small, small_sasrec, tmp_path):
    from popsteer.stages.config import Workspace
    from popsteer.stages.context import load_base

    where = Workspace(data_dir=str(tmp_path / "datasets"), out_dir=str(tmp_path / "saved"))
    return load_base(small_sasrec[1], where, data=ml100k_small)


def test_stage_identity_holds_span_and_probe(base_context, monkeypatch):
    from popsteer.stages import baselines as stage
    from popsteer.stages.config import BaselinesConfig

    calls = []

    def fake_tune(b, valid, test, base_valid, grid, max_ndcg_drop, span_gini):
        calls.append((b.name, span_gini, valid.ctx.eu is not None))
        row = {**grid[0], "ndcg@10": 0.1, "gini@10": 0.9}
        return {"params": dict(grid[0]), "valid_rows": [row], "test_rows": [row], "n_base_points": 1}

    monkeypatch.setattr(stage, "tune_baseline", fake_tune)
    cfg = BaselinesConfig(tiny=True)
    stage.tune_baselines(base_context, cfg, {"ndcg@10": 0.1, "gini@10": 0.9}, span_gini=0.8)
    assert {c[0] for c in calls} == set(BASELINES) and all(c[1] == 0.8 and c[2] for c in calls)
    saved = json.loads((stage.baselines_dir(base_context) / "baselines.json").read_text())["identity"]
    assert saved["span_gini"] == 0.8 and saved["direction"] == {"probe": "synthetic", "seed": 2020}
    n = len(calls)
    stage.tune_baselines(base_context, cfg, {"ndcg@10": 0.1, "gini@10": 0.9}, span_gini=0.8)
    assert len(calls) == n  # same identity: reused
    stage.tune_baselines(base_context, cfg, {"ndcg@10": 0.1, "gini@10": 0.9})
    assert len(calls) == 2 * n and calls[-1][1] is None  # another span: recomputed
    csv = (stage.baselines_dir(base_context) / "baselines_grid.csv").read_text().splitlines()
    assert csv[0].startswith("method,split,extended")


def test_probe_direction_per_model_type(base_context, ml100k_small):
    from popsteer.stages import baselines as stage
    from popsteer.stages.encoded import Part
    from popsteer.steering.analysis import user_groups

    spec = stage.probe_spec(base_context)
    store = base_context.encodings([Part("valid")])
    x_valid = store.read("valid")
    u = stage.probe_direction(base_context, spec, store, x_valid)  # encodes the synthetic profiles
    popular = base_context.encodings([Part("popular", seed=2020)]).read(Part("popular", seed=2020))
    unpopular = base_context.encodings([Part("unpopular", seed=2021)]).read(Part("unpopular", seed=2021))
    np.testing.assert_allclose(u, popularity_direction(popular, unpopular))
    # a general model (LightGCN): the real users, top vs bottom share by history popularity
    general = SimpleNamespace(model=SimpleNamespace(default_probe="users", general=True), data=ml100k_small)
    users = stage.probe_direction(general, {"probe": "users", "user_share": 0.1}, store, x_valid)
    top, bottom = user_groups(ml100k_small, 0.1)
    np.testing.assert_allclose(users, popularity_direction(x_valid[top], x_valid[bottom]))
    assert float(users @ u) > 0  # both point the same way on this model
