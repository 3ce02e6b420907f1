"""What the authors recorded on ML-1M (test split, their SASRec and their baselines' grids).

Source: ``parepic/PopSteer2.0`` at commit ``8b4e754ae1d54ff4a11d5b0d67af22348da8785c``,
``final_results/SASRec_{ipr,pct,random,fair}_ml-1mm-results.csv`` (their columns ``ndcg`` and
``gini@10``; the parameter is ``alpha_u`` for IPR, PCT and random top-m, ``(p, alpha)`` for FA*IR,
with PCT's ``alpha_i`` fixed at 0.01). Numbers only, re-typed from the published CSVs. The folder
holds no PopSteer grid, and its ``SASRec_user`` and ``SASRec_min_reg`` files are methods this
report does not run, so they are left out.

Their split differs from ours (docs/METHOD.md §7, "ML-1M against the authors' split"): the
same 5-core item set and leave-one-out by time, but RecBole's order of same-second ratings for
their run, which ours reproduces for users 1-2999 only; so a user's validation and test targets
can differ, and absolute numbers with them. FA*IR rows equal to their SASRec are left out.
Only relative drops against each side's own SASRec are compared.
"""

from __future__ import annotations

SOURCE = "parepic/PopSteer2.0 final_results/ (commit 8b4e754)"
SASREC = {"ndcg@10": 0.1213, "gini@10": 0.742}
# method -> [(setting, NDCG@10, Gini@10)] on their test split
GRIDS: dict[str, list[tuple[str, float, float]]] = {
    "ipr": [("a=0.01", 0.1207, 0.7403), ("a=0.05", 0.1194, 0.7329), ("a=0.1", 0.1179, 0.7240),
            ("a=0.2", 0.1151, 0.7088), ("a=0.4", 0.1091, 0.6872), ("a=0.6", 0.1035, 0.6735),
            ("a=0.8", 0.1004, 0.6648), ("a=1", 0.0976, 0.6590)],
    "pct": [("λ=0.01", 0.1209, 0.7397), ("λ=0.05", 0.1195, 0.7347), ("λ=0.1", 0.1178, 0.7298),
            ("λ=0.2", 0.1145, 0.7245), ("λ=0.4", 0.1098, 0.7198), ("λ=0.6", 0.1024, 0.7220),
            ("λ=0.8", 0.0955, 0.7297), ("λ=1", 0.0943, 0.7726)],
    "random": [("m=15", 0.0949, 0.7302), ("m=30", 0.0720, 0.6884), ("m=50", 0.0543, 0.6540),
               ("m=75", 0.0405, 0.6237), ("m=100", 0.0306, 0.6102)],
    "fair": [("p=0.4, α=0.1", 0.1191, 0.7269), ("p=0.6, α=0.05", 0.1158, 0.7248),
             ("p=0.6, α=0.1", 0.1153, 0.7248), ("p=0.8, α=0.01", 0.1116, 0.7290),
             ("p=0.8, α=0.1", 0.1078, 0.7310), ("p=1, α=0.01", 0.0879, 0.7397)],
}
