"""The steering grid on a pool of Ray actors (METHOD.md section 4).

Each ``GridEvaluator`` actor receives, once, the item table, the valid and test users' x
and their ``Evaluator``s (through the object store), loads each SAE it is asked about once
and caches its pre-activations h (U, n) per split. A task scores one grid point of one SAE
with ``popsteer.steering.grid.evaluate_grid`` on both splits, so a row is exactly the single-process
row. Actors restart when their process dies (``max_restarts``) and Ray retries their queued
and running tasks (``max_task_retries``); a task that still fails is resubmitted to another
actor. Results are keyed by task, so every point appears once in the table.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from popsteer.steering.grid import GridPoint, evaluate_grid
from popsteer.steering.steer import NeuronScores

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")


@dataclass(frozen=True)
class SAEEntry:
    """One SAE to steer: its checkpoint and its neuron analysis."""

    key: str
    path: str
    scores: NeuronScores


@dataclass(frozen=True)
class GridTask:
    key: str
    point: GridPoint


class GridEvaluator:
    """Actor state: item table, x and Evaluator per split, and the SAEs' cached pre-activations."""

    def __init__(self, item_emb: np.ndarray, x_valid: np.ndarray, x_test: np.ndarray, evaluators: dict,
                 saes: dict[str, SAEEntry], swap_sigma: bool = False) -> None:
        import torch

        # CPU: Evaluator.topk converts the top-k ids with .numpy(), which a CUDA tensor refuses
        self.device = torch.device("cpu")
        # copies: arrays from the object store are read-only
        self.item_emb = torch.tensor(item_emb, device=self.device)  # (n_items, d)
        self.x = {"valid": torch.tensor(x_valid, device=self.device), "test": torch.tensor(x_test, device=self.device)}
        self.evaluators = evaluators
        self.saes = saes
        self.swap_sigma = swap_sigma
        self._cache: dict[str, tuple] = {}

    def pid(self) -> int:
        return os.getpid()

    def _sae(self, key: str):
        """(sae, {split: h (U, n)}) of one SAE, loaded and encoded once per actor."""
        if key not in self._cache:
            import torch

            from popsteer.stages.sae_steps import load_sae

            sae, _ = load_sae(self.saes[key].path)
            sae = sae.to(self.device)
            with torch.no_grad():
                h = {split: sae.preact(x) for split, x in self.x.items()}
            self._cache[key] = (sae, h)
        return self._cache[key]

    def evaluate(self, key: str, num_neurons: int, alpha: float) -> dict:
        """The metric rows of one grid point on valid and test."""
        sae, h = self._sae(key)
        point = GridPoint(int(num_neurons), float(alpha))
        rows = []
        for split in SPLITS:
            (row,) = evaluate_grid(sae, h[split], self.item_emb, self.evaluators[split], self.saes[key].scores, [point],
                                   self.swap_sigma)
            rows.append({"sae": key, "split": split, **row})
        return {"pid": os.getpid(), "rows": rows}

    def baselines(self, key: str) -> dict:
        """Unsteered SASRec and SAE metrics per split: {split: {"sasrec": {...}, "sae": {...}}}."""
        import torch

        sae, h = self._sae(key)
        out = {}
        with torch.no_grad():
            for split in SPLITS:
                ev = self.evaluators[split]
                out[split] = {"sasrec": ev(self.x[split], self.item_emb),
                              "sae": ev(sae.decode(sae.encode(h[split])), self.item_emb)}
        return out


class EvaluatorPool:
    """A fixed pool of ``GridEvaluator`` actors (Ray must be initialised)."""

    def __init__(self, size: int, item_emb: np.ndarray, x_valid: np.ndarray, x_test: np.ndarray, evaluators: dict,
                 saes: dict[str, SAEEntry], swap_sigma: bool = False, num_cpus: float = 0.5, num_gpus: float = 0.0,
                 max_restarts: int = 3, max_task_retries: int = 3) -> None:
        import ray

        # Every constructor argument is put once and referenced for the pool's lifetime: a restarted
        # actor re-runs __init__ with the same arguments, which must still be in the object store.
        self._refs = [ray.put(a) for a in (item_emb, x_valid, x_test, evaluators, saes)]
        actor_cls = ray.remote(GridEvaluator).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                                      max_task_retries=max_task_retries)
        self.actors = [actor_cls.remote(*self._refs, swap_sigma) for _ in range(size)]
        self.pids_seen: set[int] = set()
        self.resubmitted = 0

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def run(self, tasks: list[GridTask], on_result: Callable[[int, dict], None] | None = None,
            max_resubmits: int = 3) -> list[dict]:
        """Score every task; rows in task order (valid then test per point)."""
        import ray
        from ray.exceptions import RayActorError

        pending = {}
        for i, task in enumerate(tasks):
            actor = self.actors[i % len(self.actors)]
            pending[actor.evaluate.remote(task.key, task.point.num_neurons, task.point.alpha)] = (i, 0)
        results: dict[int, list[dict]] = {}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, attempt = pending.pop(ref)
            try:
                out = ray.get(ref)
            except RayActorError as exc:
                if attempt >= max_resubmits:
                    raise
                self.resubmitted += 1
                actor = self.actors[(i + attempt + 1) % len(self.actors)]
                log.warning("grid point %s failed on a dead evaluator (%s): resubmitted", tasks[i], type(exc).__name__)
                pending[actor.evaluate.remote(tasks[i].key, tasks[i].point.num_neurons, tasks[i].point.alpha)] = (i, attempt + 1)
                continue
            if i in results:  # cannot happen (one ref per task at a time); kept as a guard
                continue
            results[i] = out["rows"]
            self.pids_seen.add(out["pid"])
            if on_result is not None:
                on_result(i, out)
        return [row for i in sorted(results) for row in results[i]]

    def baselines(self, keys: list[str]) -> dict[str, dict]:
        import ray

        return dict(zip(keys, ray.get([self.actors[i % len(self.actors)].baselines.remote(k) for i, k in enumerate(keys)])))

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
