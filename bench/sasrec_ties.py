"""Where the authors' SASRec beats ours on the shared ML-1M: targets rated in the same second as the item before them.

    .venv/bin/python bench/sasrec_ties.py -p saved/SASRec-<DATE>-ml-1m.safetensors

The shared ML-1M (../shared/datasets/ml-1m, PROVENANCE.md) keeps real timestamps only for users
1-2999; their order, same-second ties included, is the raw ``ratings.dat`` order that the authors'
RecBole run also used. Users 3000-6040 come in a source pickle's order, whose same-second ties
are ordered differently. This splits valid and test NDCG@10 by user group and, for users 1-2999,
by whether the target shares its timestamp with the previous item of the sequence, for the
authors' checkpoint (imported from ``reference/*.pth``: this bench opts into unpickling that
one shared reference file) and for a PopSteer checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import record  # noqa: E402
from shared_data import SHARED_ML1M as SHARED, ml1m_data_dir  # noqa: E402

from popsteer.data import SequenceData, load_dataset  # noqa: E402
from popsteer.eval.evaluator import rank_topk  # noqa: E402
from popsteer.models.importer import import_recbole_checkpoint  # noqa: E402
from popsteer.eval.metrics import ndcg_per_user, target_ranks  # noqa: E402
from popsteer.models.encode import encode_users, evaluate_model  # noqa: E402
from popsteer.models.io import load_recommender  # noqa: E402


def tied_targets(data: SequenceData, split: str, stamps: dict[tuple[int, int], int]) -> np.ndarray:
    """(U,) bool: the user has a real timestamp and the split's target has the previous item's."""
    seq, ln, tgt = data.split(split)
    prev = seq[np.arange(len(seq)), ln - 1]
    users, tokens = data.user_tokens.astype(int), data.item_tokens
    return np.array([stamps.get((u, int(tokens[t])), -1) == stamps.get((u, int(tokens[p])), -2)
                     for u, t, p in zip(users, tgt, prev)])


def user_ndcg(model, data: SequenceData, split: str, k: int = 10) -> np.ndarray:
    """(U,) NDCG@k of each user's target, as the Evaluator averages it."""
    seq, ln, tgt = data.split(split)
    top = rank_topk(encode_users(model, seq, ln), model.item_embedding.weight.detach(), k).numpy()  # (U, k)
    return ndcg_per_user(target_ranks(top, tgt))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", "--pretrained_path", required=True, help="a PopSteer SASRec checkpoint trained on ml-1m")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = ml1m_data_dir()
    data = load_dataset("ml-1m", data_dir)
    raw = pd.read_csv(SHARED / "ratings.users1-2999.dat.gz", sep="::", engine="python", names=["u", "i", "r", "t"])
    stamps = dict(zip(zip(raw.u.to_numpy(), raw.i.to_numpy()), raw.t.to_numpy()))
    authors = import_recbole_checkpoint(next((SHARED / "reference").glob("SASRec-*.pth")), "ml-1m", data_dir,
                                        data_dir / "authors.safetensors", trust_pickle=True)
    low = data.user_tokens.astype(int) < 3000  # users with real timestamps
    models = {"authors": load_recommender(authors, data)[0], "ours": load_recommender(a.pretrained_path, data)[0]}
    rows = {}
    for split in ("valid", "test"):
        tied = tied_targets(data, split, stamps)
        groups = {"all": np.ones_like(low), "users 1-2999": low, "users 3000-6040": ~low,
                  "1-2999, tied target": low & tied, "1-2999, untied target": low & ~tied}
        for name, model in models.items():
            nd = user_ndcg(model, data, split)
            assert abs(nd.mean() - evaluate_model(model, data, split)["ndcg@10"]) < 1e-6
            for g, mask in groups.items():
                rows[(split, g, name)] = (nd[mask].mean(), int(mask.sum()))
    print("| split | users | n | authors' NDCG@10 | ours | ours / authors |\n|---|---|---|---|---|---|")
    for split, g, name in rows:
        if name == "ours":
            (au, n), (us, _) = rows[(split, g, "authors")], rows[(split, g, "ours")]
            print(f"| {split} | {g} | {n} | {au:.4f} | {us:.4f} | {us / au:.3f} |")
    v = {g: (rows[("valid", g, "authors")][0], rows[("valid", g, "ours")][0])
         for g in ("all", "1-2999, tied target", "1-2999, untied target", "users 3000-6040")}
    ratio = v["1-2999, untied target"][1] / v["1-2999, untied target"][0]
    note = (f"valid NDCG@10 authors vs ours: all {v['all'][0]:.4f} vs {v['all'][1]:.4f}; users 1-2999 with a target "
            f"rated in the same second as the previous item {v['1-2999, tied target'][0]:.4f} vs "
            f"{v['1-2999, tied target'][1]:.4f}; untied {v['1-2999, untied target'][0]:.4f} vs "
            f"{v['1-2999, untied target'][1]:.4f}; users 3000-6040 {v['users 3000-6040'][0]:.4f} vs "
            f"{v['users 3000-6040'][1]:.4f}; ours = {Path(a.pretrained_path).name}")
    record("sasrec_ml1m_untied_valid_ndcg10_vs_authors", round(ratio, 3), "x (ours / authors' checkpoint)", "report",
           None, f".venv/bin/python bench/sasrec_ties.py -p saved/{Path(a.pretrained_path).name}", note)


if __name__ == "__main__":
    main()
