"""Base models by name (``popsteer.models.registry``): GRU4Rec beside SASRec through every stage, its
all-position outputs equal RecBole's per-prefix forward, its scores equal RecBole's evaluator."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cli_util import run_cli
from popsteer.errors import PopSteerError


@pytest.fixture(scope="module")
def gru4rec(ml100k_small, tmp_path_factory):
    """A CI-sized GRU4Rec trained 8 epochs by the all-position trainer, saved as a checkpoint."""
    from popsteer.models.allpos import train_allpos
    from popsteer.models.config import TrainConfig
    from popsteer.models.io import save_recommender
    from popsteer.models.recbole_adapter import build_model
    from popsteer.models.registry import GRU4RecConfig, get_model

    torch.manual_seed(0)
    hp = GRU4RecConfig.small()
    model, _ = train_allpos(build_model(get_model("gru4rec"), ml100k_small.n_items, hp), ml100k_small,
                            TrainConfig(epochs=8, stride=10, learning_rate=3e-3))
    path = tmp_path_factory.mktemp("gru4rec") / "GRU4Rec-test-ml-100k.safetensors"
    save_recommender(path, model, ml100k_small, hp, TrainConfig(epochs=8, stride=10))
    return model, path


def test_registry_names_and_legacy_headers():
    from popsteer.models.config import SASRecConfig
    from popsteer.models.registry import get_model, model_of

    with pytest.raises(PopSteerError, match="unknown model 'bert5rec': choose sasrec, gru4rec"):
        get_model("bert5rec")
    spec, arch = model_of({"sasrec": {"n_layers": 1, "n_heads": 1, "hidden_size": 32, "inner_size": 64, "max_len": 20}})
    assert spec.name == "sasrec" and arch == SASRecConfig.small() and spec.d(arch) == 32


def test_all_position_outputs_equal_the_per_prefix_forward(gru4rec, ml100k_small):
    from popsteer.models.recbole_adapter import sequence_output

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


@pytest.mark.parametrize("split", ["valid", "test"])
def test_gru4rec_metrics_equal_recbole(gru4rec, ml100k_small, split):
    """Sequential full ranking, as RecBole's evaluator does it for GRU4Rec: no history masking."""
    from popsteer.data import find_inter_file
    from popsteer.models.encode import evaluate_model
    from popsteer.models.recbole_adapter import RecBolePipeline
    from popsteer.models.registry import GRU4RecConfig

    model, _ = gru4rec
    pipe = RecBolePipeline("ml-100k", find_inter_file("ml-100k", None), GRU4RecConfig.small(), model="gru4rec")
    try:
        theirs_model = pipe.new_model()
        theirs_model.load_state_dict(model.state_dict())
        theirs = pipe.evaluate(pipe.trainer(theirs_model), split)
    finally:
        pipe.close()
    ours = evaluate_model(model, ml100k_small, split, gini_n=ml100k_small.n_items)
    assert ours["ndcg@10"] > 0.01
    for mine, recbole in (("ndcg@10", "ndcg@10"), ("precision@10", "precision@10"), ("gini@10", "giniindex@10"),
                          ("arp@10", "averagepopularity@10"), ("mrr@10", "mrr@10")):
        assert ours[mine] == pytest.approx(theirs[recbole], abs=1e-6), mine


def test_gru4rec_through_every_stage_lowers_gini(gru4rec, tmp_path):
    """train-sae, analyze, steer on a GRU4Rec checkpoint: the SAE's file is named after the model, the
    header records it, and steering lowers Gini@10 against the unsteered SAE."""
    from popsteer.util import checkpoint

    _, base = gru4rec
    assert checkpoint.read_meta(base)["model"] == "gru4rec"
    proc = run_cli(["--train_popsteer", "-p", str(base), "--top_k", "8", "--scale", "8", "--epochs", "15",
                    "--min-epochs", "15"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sae,) = (tmp_path / "saved").glob("GRU4Rec_SAE-*-k8-8-ml-100k.safetensors")
    assert json.loads(proc.stdout)["fvu"] < 0.5
    assert run_cli(["--analyze_neurons", "-p", str(sae)], tmp_path).returncode == 0
    proc = run_cli(["--test_popsteer", "-p", str(sae), "--num_neurons", "256", "--alpha", "2.5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["popsteer"]["gini@10"] < out["sae"]["gini@10"] and out["popsteer"]["arp@10"] < out["sae"]["arp@10"]
    table = pd.read_csv(tmp_path / "datasets" / "ml-100k" / "steer_N256_a2.5_test.csv", index_col=0)
    assert set(table.index) == {"sasrec", "sae", "popsteer"}
