"""The learned form through the stages and the CLI: kept deltas reused, the serving setting's pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_util import run_cli


@pytest.fixture(scope="module")
def setup(ml100k_small, small_sasrec, tmp_path_factory):
    """A small SAE trained and analysed in this process."""
    from popsteer.sae.model import SAEConfig
    from popsteer.stages.analysis import analyze
    from popsteer.stages.config import AnalysisConfig, SAERef, SAEStageConfig, Workspace
    from popsteer.stages.sae import train_sae

    folder = tmp_path_factory.mktemp("learned")
    where = Workspace(data_dir=str(folder / "datasets"), out_dir=str(folder / "saved"))
    sae = train_sae(SAEStageConfig(base=str(small_sasrec[1]), sae=SAEConfig(k=8, scale=4, max_epochs=3, min_epochs=1),
                                   where=where), data=ml100k_small)
    ref = SAERef(path=sae.checkpoint, where=where)
    analyze(AnalysisConfig(ref), data=ml100k_small)
    return ref, folder


class Refuse:
    def fit(self, *args):
        raise AssertionError("the kept deltas should have been reused")


def test_kept_deltas_are_reused_for_any_subset_of_lams(setup, ml100k_small):
    from popsteer.stages.config import GridConfig, GridStageConfig, LearnedConfig
    from popsteer.stages.grid import steering_grid

    ref, _ = setup
    learned = LearnedConfig(lambdas=[0.5, 2.0], steps=15, batch_size=256, refine=0)
    first = steering_grid(GridStageConfig(ref, GridConfig(variant="learned", learned=learned)), data=ml100k_small)
    sub = LearnedConfig(lambdas=[2.0], steps=15, batch_size=256)
    again = steering_grid(GridStageConfig(ref, GridConfig(variant="learned", learned=sub, splits=["test"])),
                          data=ml100k_small, fitter=Refuse(), write=False)
    assert again.rows["test"][0] == first.rows["test"][1]
    other = LearnedConfig(lambdas=[2.0], steps=16, batch_size=256)  # other settings: fitted again
    with pytest.raises(AssertionError, match="reused"):
        steering_grid(GridStageConfig(ref, GridConfig(variant="learned", learned=other)), data=ml100k_small,
                      fitter=Refuse(), write=False)


def test_only_top_m_keeps_each_rows_own_candidates():
    from popsteer.baselines.tuning import only_top_m

    scores = torch.tensor([[0.0, 5.0, 1.0, 4.0, 2.0], [9.0, 1.0, 1.0, 0.5, 3.0]])
    out = only_top_m(scores, 2)
    assert torch.equal(torch.isfinite(out), torch.tensor([[False, True, False, True, False],
                                                          [True, False, False, False, True]]))
    assert torch.equal(out[torch.isfinite(out)], torch.tensor([5.0, 4.0, 9.0, 3.0]))
    assert only_top_m(scores, 5) is scores


def test_restricted_rerankers_stay_inside_the_base_top_m(setup, ml100k_small):
    """Every re-ranker of the serving setting recommends only items of the base model's top-m; P-MMF at its
    strongest moves within them; the query-side methods are left to their own query."""
    import dataclasses

    from popsteer.baselines import BASELINES
    from popsteer.baselines.tuning import rerank_split
    from popsteer.eval.evaluator import rank_topk
    from popsteer.stages.baselines import scored_splits
    from popsteer.stages.context import load_sae_context

    ref, _ = setup
    ctx = load_sae_context(ref, ml100k_small)
    split = scored_splits(ctx.base, top_m=30)["valid"]
    cand = rank_topk(split.x, split.item_emb, 30).numpy()
    for name in ("ipr", "pmmf", "random", "pct"):
        b = BASELINES[name]
        params = b.grid[-1]
        lists = rerank_split(b, params, split)
        assert all(set(row) <= set(c) for row, c in zip(lists.tolist(), cand.tolist())), name
    full = rerank_split(BASELINES["pmmf"], BASELINES["pmmf"].grid[-1], dataclasses.replace(split, top_m=None))
    assert not all(set(row) <= set(c) for row, c in zip(full.tolist(), cand.tolist()))
    assert BASELINES["ppd"].query_side and BASELINES["spree"].query_side and not BASELINES["pmmf"].query_side


def test_steered_pmmf_at_zero_is_learned_steering(setup, ml100k_small):
    """Learned steering + P-MMF with P-MMF's lam = 0 is the learned grid's own point (the same lists through
    another path); at most 56 points."""
    from popsteer.stages.baselines import scored_splits
    from popsteer.stages.config import GridConfig, GridStageConfig, LearnedConfig
    from popsteer.stages.context import load_sae_context
    from popsteer.stages.grid import steering_grid
    from popsteer.stages.serving import steered_pmmf

    ref, _ = setup
    learned = LearnedConfig(lambdas=[0.5, 2.0], steps=15, batch_size=256, refine=0)
    grid = steering_grid(GridStageConfig(ref, GridConfig(variant="learned", learned=learned)), data=ml100k_small)
    ctx = load_sae_context(ref, ml100k_small)
    splits = scored_splits(ctx.base)
    rec = steered_pmmf(ctx, learned, [2.0], splits, grid.baselines["valid"]["sasrec"], 100, tiny=True)
    assert len(rec["grid"]) <= 56 and rec["grid"][0] == {"steer_lam": 2.0, "lam": 0.0, "eta": 1e-2}
    for split in ("valid", "test"):
        zero = {k: v for k, v in rec[f"{split}_rows"][0].items() if k not in ("steer_lam", "lam", "eta")}
        want = {k: v for k, v in grid.rows[split][1].items() if k != "lam"}
        assert zero.keys() == want.keys()
        assert all(zero[k] == want[k] or (np.isnan(zero[k]) and np.isnan(want[k])) for k in zero), split
    assert rec["test_rows"][-1]["gini@10"] < rec["test_rows"][0]["gini@10"]  # P-MMF spreads the steered lists


def test_oracle_recovers_lists_a_query_can_rank():
    """Target lists that some query ranks (another vector's own top-10) are recovered (almost) whole."""
    from popsteer.steering.oracle import fit_shifts, recovered
    from popsteer.eval.evaluator import rank_topk

    torch.manual_seed(0)
    emb = torch.randn(200, 8)
    x = torch.randn(50, 8)
    target = rank_topk(torch.randn(50, 8) * 3, emb, 10).numpy()
    _, ranked = fit_shifts(x, emb, target, steps=300)
    assert recovered(ranked, target) > 0.9 and recovered(rank_topk(x, emb, 10).numpy(), target) < 0.3


def test_cli_tune_steering_learned(setup):
    """``popsteer tune-steering --variant learned`` writes the learned grid's own files and its pick."""
    ref, folder = setup
    proc = run_cli(["tune-steering", "-p", ref.path, "--variant", "learned", "--learned-lambdas", "0.5", "2",
                    "--learned-steps", "15", "--learned-refine", "0", "--data-dir", ref.where.data_dir, "--out-dir", ref.where.out_dir],
                   folder, seed=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["grid_points"] == 2 and any(f.endswith("steering_grid-learned.csv") for f in out["files"])
    assert any(f.endswith("learned_deltas.safetensors") for f in
               map(str, (folder / "datasets").rglob("learned_deltas.safetensors")))
    bad = run_cli(["tune-steering", "-p", ref.path, "--variant", "learned", "--learned-tau", "0",
                   "--data-dir", ref.where.data_dir, "--out-dir", ref.where.out_dir], folder, seed=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: learned tau must be in")


@pytest.mark.parametrize("edit", ["list", "cut", "shape", "nan"])
def test_an_edited_deltas_file_is_fitted_again(setup, ml100k_small, edit):
    """learned_deltas.json / .safetensors edited or cut: not used (a cache miss), fitted again and rewritten."""
    from safetensors.torch import load_file, save_file

    from popsteer.stages.config import LearnedConfig
    from popsteer.stages.context import load_sae_context
    from popsteer.stages.learned import DELTAS_FILE, IDENTITY_FILE, learned_deltas

    ref, _ = setup
    ctx = load_sae_context(ref, ml100k_small)
    cfg = LearnedConfig(lambdas=[1.0], steps=5, batch_size=128)
    want, _ = learned_deltas(ctx, cfg)
    folder = ctx.results_dir
    if edit == "list":
        (folder / IDENTITY_FILE).write_text("[]")
    elif edit == "cut":
        (folder / DELTAS_FILE).write_bytes((folder / DELTAS_FILE).read_bytes()[:100])
    else:
        t = load_file(folder / DELTAS_FILE)
        t = {k: (v[:3] if edit == "shape" else v * float("nan")) for k, v in t.items()}
        save_file(t, str(folder / DELTAS_FILE))
    got, _ = learned_deltas(ctx, cfg)
    assert torch.equal(got, want)  # fitted again, the same bits
    assert torch.equal(load_file(folder / DELTAS_FILE)["lam_0"], want[0])


def test_refined_lams_go_where_the_concentration_moves():
    from popsteer.stages.learned import refined_lam

    assert refined_lam([0.5, 1.0, 2.0, 4.0], [7.7, 7.7, 5.0, 4.9]) == pytest.approx(2 ** 0.5)
    assert refined_lam([1.0, 1.04], [5.0, 3.0]) is None  # already next to each other
    assert refined_lam([1.0, 2.0], [5.0, 5.0]) is None and refined_lam([1.0], [5.0]) is None
