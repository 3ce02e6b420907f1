"""Nested MLflow runs of evaluated points, so MLflow's chart and compare views can put them side by side.

Run hierarchy (``popsteer.kind`` tag in brackets):
  sweep [sweep] -> trial [trial] -> one run per steering grid point [point], plus the grid's two
  references (``method`` ``sasrec``: the recommender, ``sae``: the unsteered reconstruction);
  sweep [sweep] -> one run per baseline re-ranker [method] -> one run per point of its grid [point].
A point run has params ``method``, the point's own fields (``num_neurons`` is shown as ``N``;
``alpha``, and whatever else a grid row carries that is not a number, e.g. ``alpha_unpop`` or
``variant``, flows through under its own name) and the metrics of every split as
``<split>_<metric>`` (``valid_ndcg_at_10``, ``test_gini_at_10``, ...). The validation pick is
tagged ``popsteer.picked=true`` (the others ``false``). A baseline's method run holds its pick's
metrics as ``pick_<split>_<metric>``, so a chart of ``test_*`` metrics plots each point once.

Exactly once: a run is found again by its ``popsteer.point_key`` tag under its parent (one
search per parent, every page); a run found again only gets what it lacks (params, metrics,
changed tags, its end), so a resumed or retried sweep duplicates nothing. A new run costs three
requests: ``create_run`` (tags included), one ``log_batch`` (params and metrics) and
``set_terminated``; there is no batched create in MLflow's API.

While the sweep's ``JournaledTracker`` is offline, point runs are skipped with a log line (not
journaled): rerun the stage (``--from steering`` or ``--only baselines``) once the server is back.
A call MLflow refuses is a warning too: the stage's files (grid table, ``baselines.json``) hold it all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from popsteer.platform.trainable import metric_name
from popsteer.util.redact import redact_all, redact_text

log = logging.getLogger(__name__)

POINT_KEY_TAG = "popsteer.point_key"
PICKED_TAG = "popsteer.picked"
KIND_TAG = "popsteer.kind"
PARENT_TAG = "mlflow.parentRunId"
QUIET_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
PARAM_NAMES = {"num_neurons": "N"}
"""A point field's param name where it differs from the field's."""
STEERING_METHOD = "popsteer"
GRID_PARAMS = ("variant",)
"""Fields of the grid's config that are params of each of its points (where the config has them)."""
REFERENCES = ("sasrec", "sae")
"""The steering grid's references: the recommender and its unsteered SAE reconstruction."""


@dataclass
class PointRun:
    """One run to log under a parent: found again by ``key``; ``children`` are logged under it."""

    key: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    children: list[PointRun] = field(default_factory=list)


def _plain(value):
    """A numpy scalar as its Python value."""
    return value.item() if hasattr(value, "item") else value


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def point_fields(point) -> dict:
    """A grid point's own fields: ``GridPoint.params()`` where it has one, else its dataclass fields or dict."""
    if callable(getattr(point, "params", None)):
        fields = point.params()
    elif dataclasses.is_dataclass(point):
        fields = dataclasses.asdict(point)
    else:
        fields = dict(point)
    return {k: _plain(v) for k, v in fields.items() if v is not None}


def point_run(method: str, fields: dict, rows: dict[str, dict], picked: bool | None = None,
              extra: dict | None = None, kind: str = "point") -> PointRun:
    """The run of one point: ``fields`` (and the rows' non-numeric values) as params, the rows' numbers as metrics."""
    params = {"method": method, **(extra or {}), **{PARAM_NAMES.get(k, k): v for k, v in fields.items()}}
    metrics = {}
    for split, row in rows.items():
        for key, value in (row or {}).items():
            value = _plain(value)
            if key in fields or value is None:
                continue
            if not _number(value):
                params.setdefault(PARAM_NAMES.get(key, key), value)
            elif math.isfinite(value):
                metrics[f"{split}_{metric_name(key)}"] = float(value)
    params = {k: str(v) for k, v in params.items()}
    described = " ".join(f"{k}={v}" for k, v in params.items() if k != "method" and k not in (extra or {}))
    tags = {KIND_TAG: kind}
    if picked is not None:
        tags[PICKED_TAG] = "true" if picked else "false"
    return PointRun(key="|".join([method, *(f"{k}={v}" for k, v in sorted(params.items()) if k != "method")]),
                    name=f"{method} {described}".strip(), params=params, metrics=metrics, tags=tags)


def _matches(row: dict, fields: dict) -> bool:
    return all(_plain(row.get(k)) == v for k, v in fields.items())


def steering_runs(result, trial_key: str, extra: dict | None = None) -> list[PointRun]:
    """Point runs of a ``GridResult`` (``points``, ``rows``, ``baselines``, ``pick``) of one trial's SAE."""
    extra = {"trial": trial_key, **(extra or {})}
    pick = result.pick
    runs = []
    for point in result.points:
        fields = point_fields(point)
        rows = {s: next((r for r in split_rows if _matches(r, fields)), None) for s, split_rows in result.rows.items()}
        picked = pick is not None and all(_plain(pick.get(k)) == v for k, v in fields.items())
        runs.append(point_run(STEERING_METHOD, fields, rows, picked, extra))
    for name in REFERENCES:
        rows = {s: b[name] for s, b in result.baselines.items() if name in b}
        if rows:
            runs.append(point_run(name, {}, rows, None, extra))
    return runs


def baseline_runs(methods: dict[str, dict]) -> list[PointRun]:
    """A method run per re-ranker of ``baselines.json``'s ``methods`` (its pick's metrics as
    ``pick_<split>_<metric>``), its grid points as its children."""
    out = []
    for name, m in methods.items():
        grid, pick = m.get("grid") or [], m.get("pick")
        splits = [s for s in ("valid", "test") if f"{s}_rows" in m]
        children = []
        for i, fields in enumerate(grid):
            fields = {k: _plain(v) for k, v in fields.items() if v is not None}
            rows = {s: m[f"{s}_rows"][i] for s in splits if i < len(m[f"{s}_rows"])}
            children.append(point_run(name, fields, rows, i == pick))
        chosen = pick is not None and 0 <= pick < len(grid)
        picked = {f"pick_{s}": m[f"{s}_rows"][pick] for s in splits if chosen and pick < len(m[f"{s}_rows"])}
        extra = {k: m[k] for k in ("label", "within_limit") if k in m}
        if m.get("describe"):
            extra["pick"] = m["describe"]
        fields = {k: _plain(v) for k, v in grid[pick].items() if v is not None} if chosen else {}
        run = point_run(name, fields, picked, None, extra, kind="method")  # the pick's hyper-parameters as params
        run.key, run.name, run.children = f"method|{name}", name, children
        out.append(run)
    return out


def baseline_runs_of(path: str | Path) -> list[PointRun]:
    """``baseline_runs`` of a ``baselines.json`` file."""
    return baseline_runs(json.loads(Path(path).read_text())["methods"])


# ------------------------------------------------------------------ writing, each run once


def _children(client, experiment_id: str, parent_id: str) -> dict[str, object]:
    """point key -> the oldest run with that key under ``parent_id`` (every page of the search)."""
    found, token = {}, None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        for run in page:
            key = run.data.tags.get(POINT_KEY_TAG)
            if key is None:
                continue
            if key in found:
                log.warning("several MLflow runs have point key %s under %s: using the oldest", key, parent_id)
            else:
                found[key] = run
        token = page.token
        if not token:
            return found


def _batch(client, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    if params or metrics or tags:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, v[:6000]) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])


def _complete(client, found, run: PointRun, params: dict[str, str], tags: dict[str, str]) -> None:
    """What a run found again lacks: params, metrics, changed tags, its end (nothing logged twice)."""
    data = found.data
    changed = sorted(k for k, v in params.items() if k in data.params and data.params[k] != v)
    if changed:
        log.warning("MLflow run %s (%s) keeps its logged params %s", found.info.run_id, run.key, changed)
    _batch(client, found.info.run_id, {k: v for k, v in params.items() if k not in data.params},
           {k: v for k, v in run.metrics.items() if k not in data.metrics},
           {k: v for k, v in tags.items() if data.tags.get(k) != v})
    if found.info.status != "FINISHED":
        client.set_terminated(found.info.run_id, "FINISHED")


@contextlib.contextmanager
def _quiet_ends():
    """No "View run" lines on stdout from ``set_terminated``, and no ``get_run`` request that prints them."""
    had = os.environ.get(QUIET_ENV)
    os.environ[QUIET_ENV] = "true"
    try:
        yield
    finally:
        if had is None:
            os.environ.pop(QUIET_ENV, None)
        else:
            os.environ[QUIET_ENV] = had


def write_point_runs(client, experiment_id: str, parent_id: str, runs: list[PointRun],
                     search: bool = True) -> dict[str, str]:
    """Log ``runs`` (and their children) under ``parent_id``, each once; returns point key -> run id.

    ``search``: look for runs logged before (False for a parent created just now: it has none)."""
    with _quiet_ends():
        return _write(client, experiment_id, parent_id, runs, search)


def _write(client, experiment_id: str, parent_id: str, runs: list[PointRun], search: bool) -> dict[str, str]:
    existing = _children(client, experiment_id, parent_id) if search and runs else {}
    ids, created = {}, 0
    for run in runs:
        params = redact_all(run.params)
        tags = redact_all({**run.tags, POINT_KEY_TAG: run.key})
        found = existing.get(run.key)
        if found is None:
            new = client.create_run(experiment_id, run_name=run.name, tags={PARENT_TAG: parent_id, **tags})
            run_id = new.info.run_id
            _batch(client, run_id, params, run.metrics, {})
            client.set_terminated(run_id, "FINISHED")
            created += 1
        else:
            run_id = found.info.run_id
            _complete(client, found, run, params, tags)
        ids[run.key] = run_id
        if run.children:
            ids.update(_write(client, experiment_id, run_id, run.children, search=found is not None))
    log.info("MLflow: %d point run(s) under %s (%d new)", len(runs), parent_id, created)
    return ids


# ------------------------------------------------------------------ what the sweep's steps call


def _offline(tracker, what: str, count: int) -> bool:
    if getattr(tracker, "offline", False):
        log.info("MLflow is offline: %d %s run(s) not logged (point runs are not journaled; rerun the stage "
                 "once the server answers)", count, what)
        return True
    return False


def log_steering(tracker, trial_key: str, result, grid=None) -> dict[str, str]:
    """The steering grid of one trial's SAE as point runs under the trial's run (``grid``: its ``GridConfig``,
    whose ``GRID_PARAMS`` are params of every point)."""
    extra = {f: getattr(grid, f) for f in GRID_PARAMS if getattr(grid, f, None) is not None}
    runs = steering_runs(result, trial_key, extra)
    if _offline(tracker, f"steering point ({trial_key})", len(runs)):
        return {}
    return _best_effort(lambda: tracker.log_point_runs(tracker.child_run(trial_key, {}), runs), "steering points")


def log_baselines(tracker, baselines_json: str | Path) -> dict[str, str]:
    """Every baseline's method run and grid point runs under the sweep's run."""
    runs = baseline_runs_of(baselines_json)
    if _offline(tracker, "baseline method", len(runs)):
        return {}
    return _best_effort(lambda: tracker.log_point_runs(tracker.parent_run_id, runs), "baseline points")


def _best_effort(call, what: str) -> dict[str, str]:
    """The point runs are a view of files the sweep keeps anyway: a refusal by MLflow is a warning, not a lost stage."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        log.warning("MLflow refused the %s runs (%s): the stage's files hold them; rerun the stage to log them",
                    what, redact_text(str(exc).splitlines()[0][:300]))
        return {}
