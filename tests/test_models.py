"""Base models by name (``popsteer.models.registry``): GRU4Rec, BERT4Rec and LightGCN beside SASRec
through every stage; GRU4Rec's all-position outputs equal RecBole's per-prefix forward; PopSteer's
evaluator equals RecBole's own on every model (history masked for LightGCN, as RecBole does)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cli_util import run_cli
from popsteer.errors import PopSteerError


def test_registry_names_and_legacy_headers():
    from popsteer.models.config import SASRecConfig
    from popsteer.models.registry import get_model, model_of

    with pytest.raises(PopSteerError, match="unknown model 'bert5rec': choose sasrec, gru4rec, bert4rec, lightgcn"):
        get_model("bert5rec")
    spec, arch = model_of({"sasrec": {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64, "max_len": 20}})
    assert spec.name == "sasrec" and arch == SASRecConfig.small() and spec.d(arch) == 32


def test_all_position_outputs_equal_the_per_prefix_forward(gru4rec, ml100k_small):
    from popsteer.models.outputs import sequence_output

    model, _ = gru4rec
    model.eval()
    seq, ln, _ = ml100k_small.split("test")
    seq, ln = torch.as_tensor(seq[:64]), torch.as_tensor(ln[:64])
    with torch.no_grad():
        every = sequence_output(model, seq)  # (B, L, d)
        for t in (0, 3, 11, 19):
            prefix = model.forward(seq[:, : t + 1], torch.full((64,), t + 1))
            torch.testing.assert_close(every[:, t], prefix, rtol=1e-5, atol=1e-6)
        last = model.forward(seq, ln)  # RecBole's x: the output at item_seq_len - 1
        torch.testing.assert_close(every[torch.arange(64), ln - 1], last, rtol=1e-5, atol=1e-6)


def _recbole_and_ours(pipe, model, data, split, general):
    from popsteer.models.encode import evaluate_model

    theirs = pipe.evaluate(pipe.trainer(model), split)
    ours = evaluate_model(pipe.user_table(model, data.user_tokens) if general else model, data, split,
                          gini_n=data.n_items)
    assert ours["ndcg@10"] > 0.005
    for mine, recbole in (("ndcg@10", "ndcg@10"), ("precision@10", "precision@10"), ("gini@10", "giniindex@10"),
                          ("arp@10", "averagepopularity@10"), ("mrr@10", "mrr@10")):
        assert ours[mine] == pytest.approx(theirs[recbole], abs=1e-6), (split, mine)


@pytest.mark.parametrize("name", ["gru4rec", "bert4rec", "lightgcn"])
def test_metrics_equal_recbole(name, gru4rec, ml100k_small):
    """RecBole's full ranking on the same trained model, valid and test: no history masking for the
    sequential models, the user's earlier items masked for LightGCN (a general model)."""
    from popsteer.data import find_inter_file
    from popsteer.models.recbole_adapter import RecBolePipeline
    from popsteer.models.registry import get_model

    spec = get_model(name)
    pipe = RecBolePipeline("ml-100k", find_inter_file("ml-100k", None), spec.architecture(small=True), model=name)
    try:
        model = pipe.new_model()
        if name == "gru4rec":  # the all-position-trained one
            model.load_state_dict(gru4rec[0].state_dict())
        else:  # one epoch of RecBole's own trainer (BERT4Rec: masked items; LightGCN: BPR)
            pipe.train_epoch(pipe.trainer(model))
        for split in ("valid", "test"):
            _recbole_and_ours(pipe, model, ml100k_small, split, spec.general)
    finally:
        pipe.close()


@pytest.fixture(scope="module")
def gru4rec_sae(gru4rec, tmp_path_factory):
    """``--train_popsteer`` on the GRU4Rec checkpoint (K 8, s 8, 15 epochs) in a folder of its own, as a
    user runs it: (that folder, the SAE, the command's JSON output). Shared by the tests below."""
    from popsteer.util import checkpoint

    _, base = gru4rec
    assert checkpoint.read_meta(base)["model"] == "gru4rec"
    folder = tmp_path_factory.mktemp("gru4rec-sae")
    proc = run_cli(["--train_popsteer", "-p", str(base), "--top_k", "8", "--scale", "8", "--epochs", "15",
                    "--min-epochs", "15"], folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sae,) = (folder / "saved").glob("GRU4Rec_SAE-*-k8-8-ml-100k.safetensors")
    return folder, sae, json.loads(proc.stdout)


def test_gru4rec_through_every_stage_lowers_gini(gru4rec_sae):
    """train-sae, analyze, steer on a GRU4Rec checkpoint: the SAE's file is named after the model, the
    header records it, and steering lowers Gini@10 against the unsteered SAE."""
    tmp_path, sae, trained = gru4rec_sae
    assert trained["fvu"] < 0.5
    assert run_cli(["--analyze_neurons", "-p", str(sae)], tmp_path).returncode == 0
    proc = run_cli(["--test_popsteer", "-p", str(sae), "--num_neurons", "256", "--alpha", "2.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["popsteer"]["gini@10"] < out["sae"]["gini@10"] and out["popsteer"]["arp@10"] < out["sae"]["arp@10"]
    table = pd.read_csv(tmp_path / "datasets" / "ml-100k" / "steer_N256_a2.5_test.csv", index_col=0)
    assert set(table.index) == {"sasrec", "sae", "popsteer"}


@pytest.mark.parametrize("name,epochs,sae_epochs", [("bert4rec", 2, 15), ("lightgcn", 5, 60)])
def test_model_through_every_stage_lowers_gini(name, epochs, sae_epochs, tmp_path):
    """The user's path on ml-100k: train-recommender --model NAME, train-sae, analyze (BERT4Rec:
    synthetic profiles; LightGCN: real user groups, its default), steer; steering lowers Gini@10
    against the unsteered SAE. LightGCN refuses synthetic profiles with one error line."""
    from cli_util import error_lines
    from popsteer.models.registry import get_model
    from popsteer.util import checkpoint

    proc = run_cli(["train-recommender", "--dataset", "ml-100k", "--model", name, "--small", "--epochs", str(epochs),
                    "--learning-rate", "0.01"], tmp_path, seed=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = str(tmp_path / json.loads(proc.stdout)["checkpoint"])  # printed relative to the cwd
    meta = checkpoint.read_meta(base)
    assert meta["model"] == name and meta["train"]["trainer"] == "recbole"
    proc = run_cli(["--train_popsteer", "-p", base, "--top_k", "8", "--scale", "8", "--epochs", str(sae_epochs),
                    "--min-epochs", str(sae_epochs)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sae,) = (tmp_path / "saved").glob(f"{get_model(name).recbole_class}_SAE-*.safetensors")
    if name == "lightgcn":
        bad = run_cli(["analyze", "-p", str(sae), "--probe", "synthetic"], tmp_path, seed=False)
        assert bad.returncode == 2 and len(error_lines(bad)) == 1 and "--probe users" in bad.stderr
    proc = run_cli(["--analyze_neurons", "-p", str(sae)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["probe"] == ("users" if name == "lightgcn" else "synthetic")
    proc = run_cli(["--test_popsteer", "-p", str(sae), "--num_neurons", "256", "--alpha", "2.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["popsteer"]["gini@10"] < out["sae"]["gini@10"] and out["popsteer"]["arp@10"] < out["sae"]["arp@10"]


def test_real_user_probe_on_a_sequential_model(gru4rec_sae, ml100k_small):
    """--probe users on GRU4Rec: the groups are the 10% of users with the most / least popular
    histories, and their Cohen's d has the sign of the synthetic probe on most strong neurons."""
    from popsteer.steering.analysis import user_groups

    top, bottom = user_groups(ml100k_small, 0.1)
    assert len(top) == len(bottom) == round(0.1 * ml100k_small.n_users) and not set(top) & set(bottom)
    counts = ml100k_small.train_target_counts()
    hist = lambda u: ml100k_small.sequence(u)[:-2]  # noqa: E731  (the training history)
    assert min(counts[hist(u)].mean() for u in top) >= max(counts[hist(u)].mean() for u in bottom)

    tmp_path, sae, _ = gru4rec_sae
    d = {}
    for probe in ("synthetic", "users"):
        proc = run_cli(["analyze", "-p", str(sae), "--probe", probe, "--out-dir", "saved"], tmp_path, seed=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["probe"] == probe
        d[probe] = pd.read_csv(tmp_path / "datasets" / "ml-100k" / "cohens_d.csv", index_col=0)["cohen_d"].to_numpy()
    strong = abs(d["synthetic"]) > 0.5
    assert strong.sum() >= 5
    assert ((d["synthetic"][strong] > 0) == (d["users"][strong] > 0)).mean() > 0.6
