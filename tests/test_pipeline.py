"""The seed's four commands, in sequence, on ml-100k (CI-sized)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cli_util import error_lines, run_cli


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("seed")


@pytest.fixture(scope="module")
def sasrec_ckpt(workdir):
    proc = run_cli(["--train_recommender", "--dataset", "ml-100k", "--small", "--epochs", "4", "--stride", "10"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (ckpt,) = (workdir / "saved").glob("SASRec-*-ml-100k.safetensors")
    assert "best valid" in proc.stderr and "test result" in proc.stderr
    return ckpt


@pytest.fixture(scope="module")
def sae_ckpt(workdir, sasrec_ckpt):
    proc = run_cli(["--train_popsteer", "-p", str(sasrec_ckpt), "--top_k", "8", "--scale", "8",
                    "--epochs", "12", "--min-epochs", "3"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (ckpt,) = (workdir / "saved").glob("SASRec_SAE-*-k8-8-ml-100k.safetensors")
    out = json.loads(proc.stdout)
    assert 0 <= out["fvu"] < 1 and 0 <= out["dead_fraction"] < 1 and out["cosine"] > 0.5
    return ckpt


@pytest.fixture(scope="module")
def analysis(workdir, sae_ckpt):
    proc = run_cli(["--analyze_neurons", "-p", str(sae_ckpt)], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return workdir / "datasets" / "ml-100k"


def test_analysis_reports(analysis):
    d = pd.read_csv(analysis / "cohens_d.csv", index_col=0)["cohen_d"]
    pop = pd.read_csv(analysis / "row_stats_popular.csv", index_col=0)
    unpop = pd.read_csv(analysis / "row_stats_unpopular.csv", index_col=0)
    assert len(d) == len(pop) == len(unpop) == 8 * 32
    assert list(pop.columns) == ["mean", "std"]
    assert d.notna().all() and (d > 0).any() and (d < 0).any()
    expected = (pop["mean"] - unpop["mean"]) / ((pop["std"] ** 2 + unpop["std"] ** 2) / 2) ** 0.5
    assert (d - expected).abs().max() < 1e-4
    top = pd.read_csv(analysis / "neuron_top_items.csv")
    assert set(top["neuron"]) == set(range(256)) and (top["item_id"] > 0).all()


def test_analysis_is_also_kept_per_sae(analysis, sae_ckpt):
    """A second SAE analysed into the same data folder does not take the first one's analysis away."""
    from popsteer.steering.results import analysis_dir, read_scores

    own = analysis / "analysis" / sae_ckpt.stem
    assert analysis_dir(analysis.parent, "ml-100k", sae_ckpt) == own
    for name in ("cohens_d.csv", "row_stats_popular.csv", "row_stats_unpopular.csv", "neuron_top_items.csv"):
        assert (own / name).read_bytes() == (analysis / name).read_bytes()
    seed_summary = (analysis / "analysis.json").read_text()
    try:  # the seed folder now describes another SAE
        (analysis / "analysis.json").write_text(json.dumps({**json.loads(seed_summary), "sae_sha256": "0" * 64}))
        scores = read_scores(analysis_dir(analysis.parent, "ml-100k", sae_ckpt), sae_ckpt, 256)
        d = pd.read_csv(own / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
        assert (scores.d == d).all()
    finally:
        (analysis / "analysis.json").write_text(seed_summary)


def test_steering_defaults_shift_exposure_to_the_tail(workdir, sae_ckpt, analysis):
    proc = run_cli(["--test_popsteer", "-p", str(sae_ckpt), "--num_neurons", "256", "--alpha", "1.5"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    sae, steered = out["sae"], out["popsteer"]
    assert steered["gini@10"] < sae["gini@10"]  # exposure spread more evenly
    assert steered["arp@10"] < sae["arp@10"]  # recommended items less popular on average
    # (not asserted: long-tail coverage; on this 256-neuron fixture, steering all neurons at alpha 1.5
    # concentrates the lists on fewer tail items, 0.225 -> 0.202, as the Last.fm grid does at high alpha)
    assert math.isfinite(steered["ndcg@10"]) and steered["ndcg@10"] > 0
    assert (analysis / "steer_N256_a1.5_test.csv").exists()


def test_alpha_zero_reproduces_the_unsteered_sae(workdir, sae_ckpt, analysis):
    proc = run_cli(["--test_popsteer", "-p", str(sae_ckpt), "--num_neurons", "256", "--alpha", "0"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["popsteer"] == out["sae"]


def test_tune_steering(workdir, sae_ckpt, analysis):
    proc = run_cli(["--tune_popsteer", "-p", str(sae_ckpt)], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    grid = pd.read_csv(analysis / "steering_grid_valid.csv")
    assert len(grid) == out["grid_points"] == 7  # N capped at the SAE's 256 neurons x 7 alphas
    if out["pick"] is not None:
        base = out["valid_baselines"]["sasrec"]
        row = grid[(grid.num_neurons == out["pick"]["num_neurons"]) & (grid.alpha == out["pick"]["alpha"])].iloc[0]
        assert (base["ndcg@10"] - row["ndcg@10"]) / base["ndcg@10"] <= 0.05 + 1e-12
        assert set(out["test"]) == {"sasrec", "sae", "popsteer_tuned"}


BAD = [
    (["--test_popsteer", "-p", "{sasrec}", "--num_neurons", "8", "--alpha", "1"], "expected an SAE checkpoint"),
    (["--train_popsteer", "-p", "{sae}"], "expected a recommender"),
    (["--train_popsteer", "-p", "{sasrec}", "--top_k", "999", "--scale", "2"], "exceeds the hidden width"),
    (["--test_popsteer", "-p", "{sae}", "--num_neurons", "100", "--alpha", "-1"], "alpha must be"),
    (["--test_popsteer", "-p", "{sae}", "--num_neurons", "100000", "--alpha", "1"], "num_neurons must be"),
    (["--test_popsteer", "-p", "{sae}", "--dataset", "ml-1m", "--num_neurons", "8", "--alpha", "1"], "not 'ml-1m'"),
    (["--analyze_neurons", "-p", "{missing}"], "not found"),
    (["--train_recommender", "--dataset", "netflix"], "unknown dataset"),
    (["--train_recommender", "--test_popsteer"], "exactly one of"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_one_line_exit_2(workdir, sasrec_ckpt, sae_ckpt, analysis, argv, message):
    paths = {"sasrec": str(sasrec_ckpt), "sae": str(sae_ckpt), "missing": str(workdir / "nope.safetensors")}
    before = sorted(p.name for p in (workdir / "saved").iterdir())
    proc = run_cli([a.format(**paths) for a in argv], workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert sorted(p.name for p in (workdir / "saved").iterdir()) == before  # nothing half-written


def test_nan_checkpoint_refused(workdir, sae_ckpt, analysis):
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(sae_ckpt), "pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(sae_ckpt))
    tensors["W_enc"][0, 0] = float("nan")
    bad = workdir / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    proc = run_cli(["--test_popsteer", "-p", str(bad), "--num_neurons", "8", "--alpha", "1"], workdir)
    assert proc.returncode == 2 and "NaN" in error_lines(proc)[0]


def test_evaluate_command_scores_a_recommender_and_an_sae(workdir, sasrec_ckpt, sae_ckpt, analysis):
    """``popsteer evaluate``: a recommender's metrics are those recorded at training; an SAE's
    reconstruction row is the one ``steer`` reports beside it."""
    from popsteer.util import checkpoint

    proc = run_cli(["evaluate", "-p", str(sasrec_ckpt), "--split", "valid"], workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["kind"] == "sasrec" and out["users"] == 943
    assert out["sasrec"] == pytest.approx(checkpoint.read_meta(sasrec_ckpt)["metrics"]["valid"], nan_ok=True)
    proc = run_cli(["evaluate", "-p", str(sae_ckpt)], workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    steered = json.loads(run_cli(["--test_popsteer", "-p", str(sae_ckpt), "--num_neurons", "8", "--alpha", "1"],
                                 workdir).stdout)
    assert out["split"] == "test" and out["sae"] == steered["sae"] and out["sasrec"] == steered["sasrec"]
    assert 0 <= out["reconstruction"]["fvu"] < 1 and out["reconstruction"]["cosine"] > 0.5
