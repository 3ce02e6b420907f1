"""The report's steering-form subsections: learned steering, the serving setting and the oracle bound."""

from __future__ import annotations

from popsteer.report.markdown import md, md_table


def learned_lines(res: dict) -> list[str]:
    """The learned form's pick, its hypervolume beside the other forms, and its most-moved neurons."""
    m, moved = res["methods"].get("popsteer_learned"), res.get("learned")
    if m is None or moved is None:
        return []
    hv = res["hv"]["methods"]
    forms = [(n, r) for n, r in res["methods"].items() if n.startswith("popsteer")]
    out = [f"delta fitted on the training prefixes for each λ (docs/METHOD.md §4b, {len(m['grid'])} points); "
           f"validation pick {m['describe']}: test NDCG@10 {m['test']['ndcg@10']:.4f}, Gini@10 "
           f"{m['test']['gini@10']:.4f}. Test hypervolume (×10³) of every steering form: " + ", ".join(
               f"{md(r['label'])} {1000 * hv[n]['test']:.3f}" for n, r in forms) + ".", "",
           f"The picked delta moves {moved['nonzero']} of {res['n_latents']} neurons (‖delta‖₁ "
           f"{moved['l1']:.1f}); the {len(moved['neurons'])} moved most, with their Cohen's d and the items that drive "
           "them (H, M, T: a head, mid or tail item):", "",
           md_table(["neuron", "delta", "d", "top items"],
                    [[str(r["neuron"]), f"{r['delta']:+.3f}", f"{r['d']:+.3f}", r["top items"]]
                     for r in moved["neurons"]]), ""]
    return out


def serving_table(res: dict) -> list[str]:
    """Test hypervolume of every method when retrieval returns only the top-m (each m a column)."""
    serving = res.get("serving")
    if not serving:
        return []
    ms = sorted(serving, key=int)
    names = list(dict.fromkeys(n for m in ms for n in serving[m]["methods"]))
    rows = []
    for name in names:
        rec = next(serving[m]["methods"][name] for m in ms if name in serving[m]["methods"])
        cells = []
        for m in ms:
            hv = serving[m]["hv"]["methods"].get(name)
            cells.append("—" if hv is None else f"{1000 * hv['test']:.3f}")
        rows.append([md(rec["label"]), how(name, rec), *cells])
    return ["Retrieval returns the top-m items; a re-ranker re-ranks the base model's top-m, a query-side method "
            "(every steering form, PPD, SPREE-like) retrieves with its own query, and learned steering + P-MMF "
            "re-ranks the steered top-m (docs/METHOD.md §6b). Test hypervolume (×10³), the same reference point "
            "as the full ranking:", "",
            md_table(["method", "candidates", *(f"m = {m}" for m in ms)], rows), ""]


def how(name: str, rec: dict) -> str:
    if name.startswith("learned_pmmf"):
        return "steered top-m"
    if name.startswith("popsteer") or rec.get("query_side") or name in ("ppd", "spree"):
        return "own query"
    return "base top-m"


def oracle_lines(res: dict) -> list[str]:
    """How close a free per-user query shift gets to P-MMF's lists."""
    o = res.get("oracle")
    if o is None:
        return ["Not computed for this section (the per-user fits cost hours at this size; `report --oracle on`).", ""]
    rows = [[", ".join(f"{k}={v:g}" for k, v in p["params"].items()), f"{p['pmmf']['ndcg@10']:.4f}",
             f"{p['pmmf']['gini@10']:.4f}", f"{p['oracle']['ndcg@10']:.4f}", f"{p['oracle']['gini@10']:.4f}",
             f"{100 * p['recovered']:.1f}%"] for p in o["points"]]
    return [f"Each test user's query fitted freely to P-MMF's list at the {len(o['points'])} points of P-MMF's test "
            "Pareto front (docs/METHOD.md §4c): the lists an oracle shift of the query reaches. Test hypervolume "
            f"(×10³): oracle {1000 * o['hv_oracle']:.3f}, P-MMF on the same points {1000 * o['hv_pmmf_points']:.3f} "
            f"(its whole grid {1000 * o['hv_pmmf']:.3f}); {100 * o['recovered']:.1f}% of P-MMF's items recovered.", "",
            md_table(["P-MMF point", "P-MMF NDCG@10", "P-MMF Gini@10", "oracle NDCG@10", "oracle Gini@10",
                      "items recovered"], rows), ""]
