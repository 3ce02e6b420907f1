"""The Findings on every steering form: full ranking, the serving setting and the oracle bound.

A section's *best steering form* is its ``popsteer*`` method with the highest test hypervolume (the
paper's, error-preserving, two strengths, learned). The ratios here are what ``bench/steering_wins.py``
records over sections:

- full ranking: best form / best baseline, and best form / best baseline other than P-MMF;
- serving (top-m): best steering form, learned steering + P-MMF on the steered top-m included, over
  the best method that re-ranks the base top-m or retrieves with its own query; also steering alone;
- the oracle: a free per-user query shift fitted to P-MMF's lists, against P-MMF on the same points.
"""

from __future__ import annotations

from popsteer.report.markdown import md


def is_steering(name: str) -> bool:
    return name.startswith("popsteer") or name.startswith("learned_pmmf")


def standing(hv: dict[str, dict], methods: dict[str, dict], alone: bool = False,
             without: tuple[str, ...] = ()) -> dict:
    """{"form", "form_hv", "baseline", "baseline_hv", "ratio"}: the best steering form (``alone``: not
    followed by a re-ranker) against the best baseline (``without`` left out), on test."""
    forms = {n: hv[n]["test"] for n in methods if is_steering(n) and not (alone and n.startswith("learned_pmmf"))}
    bases = {n: hv[n]["test"] for n in methods if not is_steering(n) and n not in without}
    form, base = max(forms, key=forms.get), max(bases, key=bases.get)
    ratio = forms[form] / bases[base] if bases[base] > 0 else float("inf")
    return {"form": form, "form_hv": forms[form], "baseline": base, "baseline_hv": bases[base], "ratio": ratio}


def section_ratios(res: dict) -> dict:
    """The section's standing in each setting (``standing``), keyed as ``bench/results.json`` names them."""
    out = {"full": standing(res["hv"]["methods"], res["methods"]),
           "full_nonpmmf": standing(res["hv"]["methods"], res["methods"], without=("pmmf",))}
    for m, rec in (res.get("serving") or {}).items():
        out[f"top{m}"] = standing(rec["hv"]["methods"], rec["methods"])
        out[f"top{m}_alone"] = standing(rec["hv"]["methods"], rec["methods"], alone=True)
    o = res.get("oracle")
    if o is not None:
        out["oracle"] = {"hv_oracle": o["hv_oracle"], "hv_pmmf_points": o["hv_pmmf_points"], "hv_pmmf": o["hv_pmmf"],
                         "recovered": o["recovered"],
                         "oracle_over_pmmf": o["hv_oracle"] / o["hv_pmmf"] if o["hv_pmmf"] > 0 else float("inf")}
    return out


def _label(res: dict, name: str, methods: dict | None = None) -> str:
    return md((methods or res["methods"])[name]["label"])


def forms_lines(results: list[dict]) -> list[str]:
    """The Findings' lines on every steering form (module docstring)."""
    out = []
    for key, what in (("full", "every baseline"), ("full_nonpmmf", "every baseline but P-MMF")):
        parts, won = [], 0
        for res in results:
            s = section_ratios(res)[key]
            won += s["ratio"] >= 1
            parts.append(f"{md(res['title'])}: {_label(res, s['form'])} {1000 * s['form_hv']:.3f} vs "
                         f"{_label(res, s['baseline'])} {1000 * s['baseline_hv']:.3f} (×{s['ratio']:.2f})")
        out.append(f"- Full ranking, the best steering form against {what}: at or above it on {won} of {len(results)} "
                   "sections; " + "; ".join(parts) + ".")
    ms = sorted({m for res in results for m in (res.get("serving") or {})}, key=int)
    for m in ms:
        parts, won = [], 0
        for res in results:
            if m not in (res.get("serving") or {}):
                continue
            r = section_ratios(res)
            s, a = r[f"top{m}"], r[f"top{m}_alone"]
            methods = res["serving"][m]["methods"]
            won += s["ratio"] >= 1
            parts.append(f"{md(res['title'])}: {_label(res, s['form'], methods)} {1000 * s['form_hv']:.3f} vs "
                         f"{_label(res, s['baseline'], methods)} {1000 * s['baseline_hv']:.3f} (×{s['ratio']:.2f}; "
                         f"steering alone ×{a['ratio']:.2f})")
        out.append(f"- Serving setting, retrieval returns the top-{m}: the best steering form (learned steering + "
                   f"P-MMF on the steered top-{m} included) is at or above every other method on {won} of "
                   f"{len(parts)} sections; " + "; ".join(parts) + ".")
    oracle = [(res, section_ratios(res)["oracle"]) for res in results if res.get("oracle")]
    if oracle:
        out.append("- Oracle bound (each test user's query fitted to P-MMF's list): " + "; ".join(
            f"{md(res['title'])}: oracle {1000 * o['hv_oracle']:.3f} vs P-MMF {1000 * o['hv_pmmf_points']:.3f} on the "
            f"same points ({100 * o['recovered']:.0f}% of its items recovered)" for res, o in oracle) + ".")
    return out
