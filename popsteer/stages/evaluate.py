"""``popsteer evaluate``: score a checkpoint on a split.

A recommender: its metrics on the split. An SAE: the recommender's metrics beside the
unsteered reconstruction's, and the reconstruction's quality (FVU, dead latents, cosine) on
the split's users.
"""

from __future__ import annotations

import torch

from popsteer.sae.train import sae_report
from popsteer.stages.config import SAERef
from popsteer.stages.config_report import EvaluateConfig
from popsteer.stages.context import load_base, load_sae_context
from popsteer.stages.encoded import Part
from popsteer.util import checkpoint


def evaluate(cfg: EvaluateConfig) -> dict:
    kind = checkpoint.read_meta(cfg.path).get("kind")
    if kind == "sae":
        ctx = load_sae_context(SAERef(path=cfg.path, where=cfg.where, encode=cfg.encode))
        base, sae = ctx.base, ctx.sae
    else:
        base, sae = load_base(cfg.path, cfg.where, cfg.encode), None
    x = torch.from_numpy(base.encodings([Part(cfg.split)]).read(cfg.split))  # (U, d)
    ev = base.evaluator(cfg.split)
    out = {"checkpoint": str(cfg.path), "kind": kind, "dataset": base.data.name, "split": cfg.split,
           "users": int(len(x)), "sasrec": ev(x, base.item_emb)}
    if sae is not None:
        with torch.no_grad():
            out["sae"] = ev(sae(x)[0], base.item_emb)
        out["reconstruction"] = sae_report(sae, x)
    return out
