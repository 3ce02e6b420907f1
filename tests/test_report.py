"""``popsteer report`` on ml-100k with tiny settings, and its pieces."""

from __future__ import annotations

import json
import shutil
import math
import re

import numpy as np
import pandas as pd
import pytest

from cli_util import error_lines, run_cli

BASELINE_NAMES = {"ipr": "IPR", "fair": "FA*IR", "pct": "PCT", "random": "Random top-m", "ppd": "PPD",
                  "spree": "SPREE-like", "pmmf": "P-MMF"}
VARIANTS = {"popsteer": "PopSteer (tuned)", "popsteer_preserve": "PopSteer error-preserving (tuned)",
            "popsteer_2d": "PopSteer α_pop × α_unpop (tuned)", "popsteer_learned": "PopSteer learned (tuned)"}
METHODS = ["SASRec", "SASRec + SAE (unsteered)", "PopSteer (defaults)", *VARIANTS.values(),
           *(f"{label} (tuned)" for label in BASELINE_NAMES.values())]
SECTIONS = ["# PopSteer results", "## ml-100k", "### Test results", "### Popularity-bias metrics", "### Significance",
            "### Hypervolume", "### Error-preserving steering", "### Separate strengths (α_pop × α_unpop)",
            "### Learned steering", "### Serving setting (top-m candidates)", "### Oracle bound of query shifts",
            "### Accuracy-fairness trade-off",
            "### PopSteer sweeps", "### Popularity neurons", "### Fidelity to the authors' artifacts", "### Summary",
            "## Closing note"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def sasrec_ckpt(workdir, small_sasrec):
    """The session's small SASRec, in this folder (the seed command that trains one: tests/test_pipeline.py)."""
    ckpt = workdir / "saved" / small_sasrec[1].name
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(small_sasrec[1], ckpt)
    return ckpt


@pytest.fixture(scope="module")
def sae_ckpt(workdir, sasrec_ckpt):
    proc = run_cli(["--train_popsteer", "-p", str(sasrec_ckpt), "--top_k", "8", "--scale", "4",
                    "--epochs", "3", "--min-epochs", "1"], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (ckpt,) = (workdir / "saved").glob("SASRec_SAE-*-k8-4-ml-100k.safetensors")
    assert not list((workdir / "saved" / "partial").glob("*"))  # the resumable state is gone once it is saved
    proc = run_cli(["--analyze_neurons", "-p", str(ckpt)], workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ckpt


@pytest.fixture(scope="module")
def shared(workdir):
    """A stand-in for the authors' reference folder: a Cohen's d file for ml-100k."""
    folder = workdir / "shared" / "ml-100k" / "reference"
    folder.mkdir(parents=True)
    d = np.random.default_rng(0).normal(0.0, 1.5, size=300)
    pd.DataFrame({"cohen_d": d}).to_csv(folder / "popsteer_cohens_d.csv.gz")
    return workdir / "shared"


@pytest.fixture(scope="module")
def report(workdir, sae_ckpt, shared):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
        proc = run_cli(["report", "-p", str(sae_ckpt), "--out", "docs/RESULTS.md", "--tiny",
                        "--shared-dir", str(shared), "--mlflow", "--sections", "docs/results"], workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    return out, (workdir / "docs" / "RESULTS.md").read_text()


def table_rows(text: str, heading: str) -> list[list[str]]:
    """Cells of the first markdown table after ``heading`` (header and rule skipped)."""
    block = text.split(heading, 1)[1].lstrip("\n").split("\n\n", 1)[0]
    lines = [l for l in block.splitlines() if l.startswith("|")]
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", l.strip().strip("|"))] for l in lines[2:]]


def test_report_has_every_section(report):
    _, text = report
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "## ml-100k, SASRec trained by PopSteer" in text
    assert "![NDCG@10 vs Gini@10 on ml-100k, SASRec trained by PopSteer](RESULTS_ml-100k_tradeoff.png)" in text
    assert "α sweep at N=" in text and "N sweep at α=1.5" in text


def test_every_method_row_is_finite(report):
    out, text = report
    rows = table_rows(text, "### Test results")
    assert [r[0].replace("\\*", "*") for r in rows] == METHODS
    for row in rows:
        values = [float(v) for v in row[2:10]]  # NDCG .. NDCG tail
        assert all(math.isfinite(v) for v in values), row
        assert 0 <= values[0] <= 1 and 0 <= values[3] <= 1  # NDCG, Gini
    assert list(out["datasets"]["ml-100k"]) == METHODS


def test_tradeoff_png_and_grids_beside_the_report(workdir, report):
    out, _ = report
    png = workdir / "docs" / "RESULTS_ml-100k_tradeoff.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    grids = pd.read_csv(workdir / "docs" / "RESULTS_ml-100k_grids.csv")
    assert set(grids["method"]) == {"sasrec", *VARIANTS, *BASELINE_NAMES}
    assert (grids.groupby(["method", "split"])["picked"].sum() == 1).all()
    assert not any(p.name.endswith(".tmp") for p in (workdir / "docs").iterdir())  # atomic writes left nothing


def test_picks_follow_the_validation_rule(workdir, report):
    from popsteer.eval.tradeoff import pick_with_fallback

    _, text = report
    grids = pd.read_csv(workdir / "docs" / "RESULTS_ml-100k_grids.csv")
    valid = grids[grids.split == "valid"]
    base = valid[valid.method == "sasrec"].iloc[0].to_dict()
    notes = {r[0]: r[-1] for r in table_rows(text, "### Test results")}
    labels = {**VARIANTS, **{n: f"{label} (tuned)".replace("*", "\\*") for n, label in BASELINE_NAMES.items()}}
    for method, label in labels.items():
        rows = valid[valid.method == method].reset_index(drop=True)
        idx, within = pick_with_fallback(rows.to_dict("records"), base)
        assert rows["picked"].iloc[idx], method
        ndcg_drop = float(re.findall(r"([+-][\d.]+)%", notes[label])[1]) / 100
        assert ndcg_drop == pytest.approx((base["ndcg@10"] - rows["ndcg@10"].iloc[idx]) / base["ndcg@10"], abs=1e-3)
        assert within == (not notes[label].endswith("†"))
        if within:
            assert ndcg_drop <= 0.05 + 1e-3


def test_bias_metrics_significance_and_hypervolume_tables(report):
    """The evaluation tables: every method, finite values, the Holm-corrected tests against both references."""
    _, text = report
    bias = table_rows(text, "### Popularity-bias metrics")
    assert [r[0].replace("\\*", "*") for r in bias] == METHODS
    for row in bias:
        aplt, aclt, entropy, cov, novelty = (float(row[i]) for i in (2, 3, 6, 7, 8))
        assert 0 <= aplt <= 1 and aclt == pytest.approx(10 * aplt, abs=1e-3) and 0 < cov <= 1
        assert 0 < entropy <= np.log2(1700) and novelty > 0
    sasrec = table_rows(text, "Against SASRec:")
    popsteer = table_rows(text, "Against PopSteer (tuned):")
    assert len(sasrec) == len(METHODS) - 1 and len(popsteer) == len(METHODS) - 1  # every method but the reference
    for row in sasrec + popsteer:
        for cell in (row[2], row[3], row[5], row[6]):  # Holm p-values, maybe marked ✓
            assert 0 <= float(cell.split()[0]) <= 1
        lo, hi = (float(v) for v in re.findall(r"[+-][\d.]+", row[1].split("[", 1)[1]))
        assert lo <= float(row[1].split()[0]) <= hi  # the paired interval holds the mean difference
    intervals = table_rows(text, "re-centred by their bootstrap bias, docs/METHOD.md §5):")
    assert len(intervals) == len(METHODS)
    for row in intervals:
        est, lo, hi = (float(v) for v in re.findall(r"[\d.]+", row[1]))  # NDCG@10 [lo, hi]
        assert lo <= est <= hi
    hv = table_rows(text, "### Hypervolume")
    hv = table_rows(text, "higher is better.")
    assert len(hv) == len(VARIANTS) + len(BASELINE_NAMES)
    assert all(float(r[1]) >= 0 and float(r[2]) >= 0 for r in hv)
    assert "alpha = 0 is SASRec exactly" in text and "α_pop=" in text


def test_neurons_and_fidelity_sections(report):
    _, text = report
    neurons = table_rows(text, "(H/M/T: head/mid/tail):")
    assert len(neurons) == 10
    mags = [abs(float(r[2])) for r in neurons]
    assert mags == sorted(mags, reverse=True)
    assert all(len(re.findall(r"\((H|M|T)\)", r[4])) == 5 for r in neurons)
    assert any(re.search(r"[A-Za-z]{3}", r[4]) for r in neurons)  # titles from ml-100k.item, not bare ids
    assert "KS distance, \\|d\\|" in text and "No authors'" not in text


def test_mlflow_parent_run_per_section_with_a_child_per_method(workdir, report):
    out, _ = report
    (parent,) = out["mlflow_runs"]  # one section
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    run = mlflow.get_run(parent)
    assert run.data.tags["popsteer.section"] == "ml-100k" and run.info.run_name == "report/ml-100k"
    assert run.data.params["model"] == "SASRec" and int(run.data.params["sae_epochs"]) == 3
    assert {"hypervolume_test/popsteer", "hypervolume_valid/ipr", "sae_fvu"} <= set(run.data.metrics)
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(parent)}
    assert {"RESULTS.md", "RESULTS_ml-100k_tradeoff.png", "RESULTS_ml-100k_grids.csv"} <= names
    children = mlflow.search_runs(experiment_ids=[run.info.experiment_id], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == set(METHODS)
    tuned = by_name["PopSteer (tuned)"].data.metrics
    assert tuned["ndcg_at_10"] == pytest.approx(out["datasets"]["ml-100k"]["PopSteer (tuned)"]["ndcg@10"])


def test_findings_and_sae_header(report):
    _, text = report
    assert text.index("## Findings") < text.index("## ml-100k")
    findings = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"- PopSteer beats every baseline on test hypervolume on [01] of 1 sections", findings)
    assert "error-preserving variant has a higher test hypervolume than the paper's form on" in findings
    assert ("It loses on no section." in findings) != ("It loses on **ml-100k" in findings)
    assert "authors' records" not in findings  # ML-1M only
    m = re.search(r"\*\*SAE: 3 epochs, FVU (\d\.\d{4}), dead (\d+\.\d)% \(all 3 epochs, best epoch [123]; valid "
                  r"split\)\*\*", text)
    assert m and 0 < float(m[1]) < 1.5 and 0 <= float(m[2]) <= 100


def test_report_refuses_a_recommender_checkpoint(workdir, sasrec_ckpt):
    proc = run_cli(["report", "-p", str(sasrec_ckpt), "--out", "docs/bad.md", "--tiny"], workdir, seed=False)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1, proc.stderr[-2000:]
    assert not (workdir / "docs" / "bad.md").exists()


# ------------------------------------------------------------------ pieces


def test_fidelity_compares_distributions_and_recorded_metrics(tmp_path):
    from popsteer.report.fidelity import compare_d, fidelity

    d = np.random.default_rng(1).normal(size=500)
    same = compare_d(d, d)
    assert same["KS distance, d"] == 0 and same["Pearson, |d| quantiles"] == pytest.approx(1.0)
    assert compare_d(d, 3 * d + 5)["KS distance, d"] > 0.5
    folder = tmp_path / "ml-1m" / "reference"
    folder.mkdir(parents=True)
    pd.DataFrame({"cohen_d": d[::-1]}).to_csv(folder / "popsteer_cohens_d.csv.gz")
    valid = {"ndcg@10": 0.12, "gini@10": 0.75, "lt_coverage@10": 0.5, "ndcg_head@10": 0.18,
             "ndcg_mid@10": 0.12, "ndcg_tail@10": 0.06}
    f = fidelity("ml-1m", d, tmp_path, valid)
    assert f["agreement"]["KS distance, |d|"] < 0.005  # same values (up to CSV rounding), other neuron order
    assert f["valid"].loc["ndcg@10", "authors' recorded"] == 0.1212
    assert fidelity("lastfm", d, tmp_path, valid)["summary"] is None


def test_pareto_front_and_dominance():
    from popsteer.eval.tradeoff import dominated_share, pareto_front

    gini = np.array([0.5, 0.6, 0.55, 0.7, 0.65])
    ndcg = np.array([0.08, 0.10, 0.07, 0.11, 0.09])
    assert pareto_front(gini, ndcg).tolist() == [0, 1, 3]
    rows = [{"gini@10": g, "ndcg@10": n} for g, n in zip(gini, ndcg)]
    assert dominated_share(rows, rows) == pytest.approx(2 / 5)


def test_hand_written_tail_survives_a_rewrite(tmp_path):
    """Results measured by hand (below the marker) are kept when the report is regenerated."""
    from popsteer.stages.report import BY_HAND, kept_by_hand

    out = tmp_path / "RESULTS.md"
    assert kept_by_hand(out) == ""
    out.write_text("# old generated part\n\n" + BY_HAND + "\n## By hand\n\nfigures\n")
    tail = kept_by_hand(out)
    assert tail.lstrip().startswith(BY_HAND) and "## By hand\n\nfigures" in tail and "old generated" not in tail
    out.write_text("# no marker\n")
    assert kept_by_hand(out) == ""


def test_serving_setting_and_oracle(report):
    """m = 100 and 500: restricted re-rankers, query-side methods with their own query, learned steering +
    P-MMF on the steered top-m; the oracle's P-MMF points and how much of P-MMF's lists it recovers."""
    _, text = report
    rows = {r[0].replace("\\*", "*"): r[1:] for r in table_rows(text, "the same reference point as the full ranking:")}
    assert rows["PopSteer learned + P-MMF (steered top-m)"][0] == "steered top-m"
    assert rows["P-MMF"][0] == "base top-m" and rows["PPD"][0] == "own query"
    assert rows["PopSteer learned (tuned)"][1] == rows["PopSteer learned (tuned)"][2]  # its own lists at any m
    assert all(float(v) >= 0 for r in rows.values() for v in r[1:])
    oracle = table_rows(text, "of P-MMF's items recovered.")
    assert oracle and all(0 <= float(r[5].rstrip("%")) <= 100 for r in oracle)
    assert "Serving setting, retrieval returns the top-100" in text and "Oracle bound (each test user" in text


def test_sections_on_their_own_and_assembled(workdir, report):
    """--sections writes one folder per section with its section.json; --assemble builds the report from the
    folders alone, with the same Findings and no machine paths."""
    folder = workdir / "docs" / "results" / "ml-100k-sasrec-ours"
    rec = json.loads((folder / "section.json").read_text())
    assert {"section.md", "tradeoff.png", "grids.csv", "section.json"} <= {p.name for p in folder.iterdir()}
    assert rec["sae"]["epochs"] == 3 and len(rec["checkpoints"]["sae"]["sha256"]) == 64 and rec["slug"] == folder.name
    assert set(rec["methods"]) >= {"popsteer", "popsteer_learned", "pmmf"} and set(rec["serving"]) == {"100", "500"}
    proc = run_cli(["report", "--assemble", "docs/results", "--out", "docs/ASSEMBLED.md"], workdir, seed=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assembled = (workdir / "docs" / "ASSEMBLED.md").read_text()
    _, text = report
    findings = lambda t: t.split("## Findings", 1)[1].split("\n## ", 1)[0]  # noqa: E731
    assert findings(assembled) == findings(text)
    assert "](results/ml-100k-sasrec-ours/tradeoff.png)" in assembled and "## How each section was made" in assembled
    assert str(workdir) not in assembled and "/tmp/" not in assembled
