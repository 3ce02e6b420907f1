"""The trade-off page (tradeoff.html), the sampled users (users.html) and one page per user (users/u<i>.html)."""

from __future__ import annotations

from popsteer.browse.content import SiteData
from popsteer.browse.html import cell, esc, figure, item_html, num, page, table
from popsteer.browse.pages_neurons import history_html, neuron_href
from popsteer.browse.users import SASREC, UNSTEERED, UserCase

USER_HISTORY = 20
LIVE_NOTE = ("Live steering: while `popsteer serve -p SAE` runs, open this page with ?api=http://127.0.0.1:8000 "
             "added to its address, and a slider asks the server for this user's top-10 at any strength. Without "
             "a server the lists above are the precomputed strengths.")


def tradeoff_page(data: SiteData) -> str:
    if not data.figures:
        body = ('<p class="note" id="no-grid">No steering grid in the SAE\'s results folder: run '
                "<code>popsteer tune-steering -p SAE</code> (and <code>popsteer report</code> for the baselines).</p>")
        return page("Accuracy-fairness trade-off", body)
    notes = ("Each point is one setting scored on every user of the split: NDCG@10 (accuracy, higher is better) "
             "against Gini@10 of the exposure (lower is fairer). Stars: the validation-tuned pick of each form; "
             "x: SASRec and the unsteered SAE. Click a legend entry to hide it. Read from: "
             + ", ".join(f"<code>{esc(s)}</code>" for s in data.figure_sources) + ".")
    if not any("baselines" in s for s in data.figure_sources):
        notes += " No baselines_grid.csv for this recommender (written by <code>popsteer report</code>)."
    body = f'<p class="note">{notes}</p>' + "".join(
        f"<h2>{esc(split)}</h2>" + figure(f"tradeoff-{split}", fig) for split, fig in data.figures.items())
    return page("Accuracy-fairness trade-off", body, plots=True)


def user_href(user: int, root: str = "") -> str:
    return f"{root}users/u{user}.html"


def _changed_items(case: UserCase, name: str) -> int:
    """Items of list ``name`` that are not in the unsteered SAE's list."""
    return len(set(case.lists[name]) - set(case.lists[UNSTEERED]))


def users_page(data: SiteData) -> str:
    first = data.settings[0].name
    rows = [(f'<tr data-changed="{_changed_items(c, first)}">' + cell(f'<a href="{user_href(c.user)}">'
             f"{esc(data.user_tokens[c.user])}</a>") + cell(str(len(data.histories.get(c.user, []))), cls="n")
             + "".join(cell(str(_changed_items(c, s.name)), cls="n") for s in data.settings) + "</tr>")
            for c in data.cases]
    head = [("user", ""), ("history length", "")] + [(f"new items: {s.name}", "") for s in data.settings]
    body = (f'<p class="note">A seeded sample of {len(data.cases)} test users. For each: its history, and its '
            "top-10 from SASRec, from the unsteered SAE and from the SAE steered at each strength; "
            f"'new items' counts those not in the unsteered SAE's list. {esc(data.setting_note)}</p>"
            + table(head, rows, "users"))
    return page("Users before and after steering", body)


def _list(data: SiteData, case: UserCase, name: str) -> str:
    before = set(case.lists[UNSTEERED])
    target = int(data.targets[case.user])
    items = []
    for i in case.lists[name]:
        cls = " ".join(c for c, on in (("new", name not in (SASREC, UNSTEERED) and i not in before),
                                       ("hit", i == target)) if on)
        items.append(f'<li class="{cls}">' + item_html(i, data.meta.titles, data.group) + "</li>")
    return f'<section data-list="{esc(name)}"><h3>{esc(name)}</h3><ol class="list">{"".join(items)}</ol></section>'


def _changed_neurons(data: SiteData, case: UserCase) -> str:
    pages = set(data.pages.tolist())
    rows = []
    for j, z0, z1 in case.changed:
        name = f'<a href="{neuron_href(j, "../")}">{j}</a>' if j in pages else str(j)
        rows.append("<tr>" + cell(name) + cell(num(float(data.neurons.at[j, "d"])), cls="n")
                    + cell(esc(data.neurons.at[j, "label"])) + cell(num(z0), cls="n") + cell(num(z1), cls="n")
                    + cell(num(z1 - z0), cls="n") + "</tr>")
    head = [("neuron", ""), ("d", ""), ("label", ""), ("z before", ""), ("z after", ""), ("change", "")]
    return table(head, rows, "changed") if rows else "<p>No neuron of its code changed.</p>"


def user_page(data: SiteData, case: UserCase) -> str:
    token = data.user_tokens[case.user]
    first = data.settings[0]
    hist = data.histories.get(case.user, [])
    body = (f'<p class="note">{esc(data.setting_note)} Green: not in the unsteered SAE\'s list; underlined: the '
            f"held-out test item.</p><h2>History</h2><p class=\"history\">{len(hist)} items; the last "
            f"{min(USER_HISTORY, len(hist))}, newest last: {history_html(data, case.user, USER_HISTORY)}</p>"
            f"<p>Held-out test item: {item_html(int(data.targets[case.user]), data.meta.titles, data.group)}</p>"
            "<h2>Top-10 before and after steering</h2><div class=\"lists\">"
            + "".join(_list(data, case, name) for name in case.lists) + "</div>"
            + f"<h2>Neurons whose activation changed most ({esc(first.name)})</h2>" + _changed_neurons(data, case)
            + f'<section id="live" data-api="" data-user="{esc(token)}" data-num-neurons="{first.num_neurons}">'
              f'<h2>Live</h2><p class="live-status">{esc(LIVE_NOTE)}</p><input type="range" min="0" max="8" '
              f'step="0.5" value="{first.alpha:g}" hidden> <span class="live-alpha"></span><ol class="live-list"></ol>'
              '<p class="live-moved"></p></section>')
    return page(f"User {token}", body, root="../", scripts=("live.js",))
