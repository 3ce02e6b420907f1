"""The neuron table (index.html) and one page per shown neuron (neurons/<j>.html)."""

from __future__ import annotations

import numpy as np

from popsteer.browse.content import SiteData
from popsteer.browse.html import cell, esc, figure, item_html, num, page, table

TABLE_ITEMS = 3
"""Top items shown per neuron in the table."""
HISTORY_SHOWN = 10
NO_METADATA = "No item metadata: neurons are not labelled"


def neuron_href(j: int, root: str = "") -> str:
    return f"{root}neurons/{j}.html"


def label_text(data: SiteData, j: int) -> str:
    """The label line of a neuron: its significant tags, or why it has none."""
    if not data.labelled:
        return f"{NO_METADATA} ({esc(data.meta.source)})."
    label = data.neurons.at[j, "label"]
    if label:
        return f"Label: <b>{esc(label)}</b> (q = {num(float(data.neurons.at[j, 'best_q']))})"
    return f"No label: no tag is enriched among its top items at q &lt; {data.fdr:g}."


def index_page(data: SiteData) -> str:
    nb = data.neurons
    top = {j: rows["item_id"].tolist() for j, rows in data.top_of.items()}
    has_page = set(data.pages.tolist())
    rows = []
    for j, r in nb.iterrows():
        name = f'<a href="{neuron_href(j)}">{j}</a>' if j in has_page else str(j)
        direction = "pop" if r["d"] > 0 else "unpop" if r["d"] < 0 else "none"
        items = "; ".join(item_html(i, data.meta.titles, data.group) for i in top.get(j, [])[:TABLE_ITEMS])
        q = r["best_q"] if r["label"] else None
        rows.append(f'<tr class="{direction}" data-dir="{direction}" data-labelled="{int(bool(r["label"]))}">'
                    + cell(name, j, "n") + cell(num(r["d"]), r["d"], "n") + cell(num(abs(r["d"])), abs(r["d"]), "n")
                    + "".join(cell(num(r[c]), r[c], "n") for c in ("mu_pop", "mu_unpop", "sigma_pop", "sigma_unpop"))
                    + cell(f"{r['freq']:.3f}", r["freq"], "n") + cell(esc(r["label"]))
                    + cell(num(q), "" if q is None else q, "n") + cell(items) + "</tr>")
    head = [("neuron", "num"), ("d", "num"), ("|d|", "num"), ("μ pop", "num"), ("μ unpop", "num"), ("σ pop", "num"),
            ("σ unpop", "num"), ("act. freq", "num"), ("label", "text"), ("q", "num"), ("top items", "text")]
    labelled = int((nb["label"] != "").sum())
    notes = [f"{len(nb)} neurons of <b>{esc(data.sae_name)}</b> on <b>{esc(data.dataset)}</b>; "
             f"{int((nb['d'] > 0).sum())} with d &gt; 0 (popular), {int((nb['d'] < 0).sum())} with d &lt; 0. "
             + ", ".join(f"{esc(k)}: {esc(v)}" for k, v in data.facts.items()),
             f"Pages: the top {data.n_pages_top} neurons by |d| and every labelled neuron "
             f"({len(data.pages)} pages, linked by number); the other neurons are in this table only, "
             "to keep the site small.",
             "d: Cohen's d of the pre-activation, popular vs unpopular probe; μ, σ: its mean and SD in each "
             "probe group; act. freq: share of test users whose TopK code keeps the neuron."]
    if data.labelled:
        notes.append(f"Labels: tags enriched among each neuron's top items (hypergeometric test, Benjamini-Hochberg "
                     f"q &lt; {data.fdr:g} over all tag x neuron tests); tags from {esc(data.meta.source)}. "
                     f"{labelled} neurons labelled.")
    else:
        notes.append(f'<span id="no-metadata">{NO_METADATA}</span>: {esc(data.meta.source)}.')
    controls = ('<div class="controls"><input type="search" id="filter-text" placeholder="filter: label, item, '
                'neuron"><label>direction <select id="filter-dir"><option value="">all</option>'
                '<option value="pop">popular (d &gt; 0)</option><option value="unpop">unpopular (d &lt; 0)</option>'
                '</select></label><label><input type="checkbox" id="filter-labelled"> labelled only</label>'
                '<span><span id="shown-count"></span> shown</span></div>')
    body = "".join(f'<p class="note">{n}</p>' for n in notes) + controls + table(head, rows, "neurons", "sortable")
    return page(f"Neurons of {data.sae_name}", body, scripts=("table.js",))


def _stats(data: SiteData, j: int) -> str:
    r = data.neurons.loc[j]
    rank = int((data.neurons["d"].abs() > abs(r["d"])).sum()) + 1
    cells = [("Cohen's d", num(r["d"], 4)), ("rank by |d|", str(rank)),
             ("direction", "popular" if r["d"] > 0 else "unpopular" if r["d"] < 0 else "none"),
             ("μ / σ popular probe", f"{num(r['mu_pop'])} / {num(r['sigma_pop'])}"),
             ("μ / σ unpopular probe", f"{num(r['mu_unpop'])} / {num(r['sigma_unpop'])}"),
             ("activation frequency", f"{r['freq']:.4f}")]
    return table([(k, "") for k, _ in cells], ["<tr>" + "".join(cell(v) for _, v in cells) + "</tr>"])


def _tags_table(data: SiteData, j: int) -> str:
    if data.tests is None:
        return ""
    rows = [("<tr>" + cell(esc(t.tag)) + cell(f"{t.hits}/{t.n_top}", t.hits, "n") + cell(str(t.tag_items), cls="n")
             + cell(num(t.p), t.p, "n") + cell(num(t.q), t.q, "n") + "</tr>")
            for t in data.tests[data.tests["neuron"] == j].itertuples()]
    head = [("tag", ""), ("top items with it", ""), ("items with it", ""), ("p", ""), ("q (BH)", "")]
    return f"<h2>Enriched tags</h2>{table(head, rows)}" if rows else ""


def _histogram(data: SiteData, j: int) -> str:
    hist = data.histograms.get(j)
    if hist is None:
        return ""
    edges = np.asarray(hist["edges"])
    mids, width = ((edges[1:] + edges[:-1]) / 2).tolist(), float(edges[1] - edges[0])
    fig = {"data": [{"type": "bar", "name": name, "x": mids, "y": hist[key], "width": width, "opacity": 0.6,
                     "marker": {"color": color}}
                    for name, key, color in (("popular probe", "popular", "#c0392b"),
                                             ("unpopular probe", "unpopular", "#2471a3"))],
           "layout": {"barmode": "overlay", "height": 340, "title": {"text": "Pre-activation h of the probe groups"},
                      "xaxis": {"title": {"text": "h"}}, "yaxis": {"title": {"text": "profiles"}}}}
    return "<h2>Activation of the probes</h2>" + figure("hist", fig)


def _popularity(data: SiteData, items: list[int]) -> str:
    colors = {"H": "#c0392b", "M": "#8e8e8e", "T": "#2471a3"}
    counts = [int(data.popularity[i]) for i in items]
    median = float(np.median(data.popularity[1:]))
    spread = max(counts + [median]) / max(min(counts + [median]), 1)
    fig = {"data": [{"type": "bar", "x": [f"{r + 1}. {data.meta.titles[i][:28]}" for r, i in enumerate(items)],
                     "y": counts, "showlegend": False,
                     "marker": {"color": [colors.get(data.group[i], "#555") for i in items]},
                     "hovertext": [f"{data.meta.titles[i]} ({data.group[i]})" for i in items]},
                    {"type": "scatter", "mode": "lines", "name": f"catalogue median ({median:g})",
                     "x": [f"1. {data.meta.titles[items[0]][:28]}", f"{len(items)}. "
                           f"{data.meta.titles[items[-1]][:28]}"] if items else [], "y": [median, median],
                     "line": {"dash": "dot", "color": "#333"}}],
           "layout": {"height": 340, "title": {"text": "Popularity (training count) of its top items"},
                      "yaxis": {"type": "log" if spread > 30 else "linear", "title": {"text": "count"}},
                      "margin": {"b": 120}, "showlegend": True, "legend": {"x": 1, "y": 1.15, "xanchor": "right"}}}
    return "<h2>Popularity of its top items</h2>" + figure("popularity", fig)


def history_html(data: SiteData, user: int, shown: int = HISTORY_SHOWN) -> str:
    items = data.histories.get(user, [])[-shown:]
    return "; ".join(item_html(i, data.meta.titles, data.group) for i in items)


def neuron_page(data: SiteData, j: int) -> str:
    top = data.top_of.get(j, data.top_items.iloc[:0])
    tags = data.item_tags
    rows = [("<tr>" + cell(str(r.rank + 1), r.rank, "n") + cell(item_html(r.item_id, data.meta.titles, data.group))
             + cell(esc(r.item_token)) + cell(str(int(data.popularity[r.item_id])), cls="n")
             + cell(num(float(r.preactivation)), r.preactivation, "n") + cell(esc(", ".join(tags.get(r.item_id, []))))
             + "</tr>") for r in top.itertuples()]
    items = table([("#", ""), ("item", ""), ("raw id", ""), ("popularity", ""), ("h (one-item profile)", ""),
                   ("tags", "")], rows, "top-items")
    users = [("<tr>" + cell(esc(data.user_tokens[u])) + cell(num(h), h, "n") + cell(history_html(data, u), cls="history")
              + "</tr>") for u, h in data.top_users.get(j, [])]
    users_html = table([("user", ""), ("h", ""), (f"history (last {HISTORY_SHOWN}, newest last)", "")], users,
                       "top-users")
    body = (f'<p class="label" id="label">{label_text(data, j)}</p>' + _stats(data, j) + _tags_table(data, j)
            + "<h2>Top items</h2><p class=\"note\">The items whose one-item profile activates it most "
              "(neuron_top_items.csv); H/M/T: head/mid/tail.</p>" + items
            + _histogram(data, j) + _popularity(data, top["item_id"].tolist())
            + "<h2>Users who activate it most</h2><p class=\"note\">By h at their test-time representation "
              "(history before the held-out test item).</p>" + users_html)
    return page(f"Neuron {j}", body, root="../", plots=True)
