"""The steering grid on a pool of Ray actors over user shards (an executor of ``popsteer.stages.grid``).

Each task is one shard of one split's users x every grid point: the actor runs
``popsteer.steering.grid.score_users`` (the function the in-process ``LocalGrid`` runs on all
users) and returns the shard's top-k lists; the pool puts the shards back in user order, and
the grid stage turns them into metrics, so the rows equal the single-process ones. The item
table, each split's user representations and the deltas are put into the object store once
and read zero-copy by every actor on a node; an actor loads each SAE once. Actors restart
when their process dies (``max_restarts``) and Ray retries their tasks (``max_task_retries``);
a task that still fails is resubmitted to another actor. Results are keyed by task, so every
shard, hence every user and point, appears once.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SHARDS_PER_EVALUATOR = 2
"""User shards per actor and split: some balance and a small redo when an actor dies."""


@dataclass(frozen=True)
class ShardTask:
    split: str
    lo: int
    hi: int


def _tensor(array: np.ndarray):
    """A zero-copy tensor over an object-store array (read-only: never written)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class GridEvaluator:
    """Actor: scores shards of users at every grid point (and analyses SAEs for the sweep runner);
    caches the SAEs it is asked about."""

    def __init__(self) -> None:
        """Imports and a tiny scoring pass run here, while the driver is still preparing the grid
        (actors start asynchronously): the first shard then pays only for its SAE."""
        import torch

        from popsteer.eval.evaluator import rank_topk
        from popsteer.sae.io import load_sae  # noqa: F401  (imported now, used by score)
        from popsteer.steering.grid import score_users  # noqa: F401

        self._saes: dict[str, object] = {}
        rank_topk(torch.zeros((2, 4)), torch.randn(16, 4), 2)  # loads the native top-k kernel

    def pid(self) -> int:
        return os.getpid()

    def analyze(self, cfg, encoded_dir: str, data):
        """The analysis stage of one SAE (``popsteer.stages.analysis.analyze``) on this actor: a sweep that
        also runs the grid analyses on its evaluators, so no separate worker process starts for it."""
        from popsteer.stages.analysis import analyze
        from popsteer.stages.encoded import Encodings

        return analyze(cfg, data=data, encodings=Encodings(encoded_dir))

    def score(self, sae_path: str, deltas: np.ndarray, item_emb: np.ndarray, x: np.ndarray, lo: int, hi: int,
              k: int, bias: np.ndarray | None = None, exclude: tuple[np.ndarray, np.ndarray] | None = None,
              preserve: bool = False) -> dict:
        """Top-k lists of users ``x[lo:hi]``: {"pid", "lists": {"sasrec", "sae", "points"}}.
        ``exclude``: the split's CSR over all its users (sliced here); ``preserve``: error-preserving."""
        from popsteer.eval.evaluator import slice_csr
        from popsteer.sae.io import load_sae
        from popsteer.steering.grid import score_users

        if sae_path not in self._saes:
            self._saes[sae_path] = load_sae(sae_path)[0]
        lists = score_users(self._saes[sae_path], _tensor(x)[lo:hi], _tensor(item_emb), k, _tensor(deltas),
                            bias=None if bias is None else _tensor(bias), exclude=slice_csr(exclude, lo, hi),
                            preserve=preserve)
        return {"pid": os.getpid(), "lists": lists}


class EvaluatorPool:
    """A fixed pool of ``GridEvaluator`` actors (Ray must be initialised); a ``GridExecutor``."""

    def __init__(self, size: int, num_cpus: float = 0.5, num_gpus: float = 0.0, max_restarts: int = 3,
                 max_task_retries: int = 3, shards_per_evaluator: int = SHARDS_PER_EVALUATOR) -> None:
        import ray

        # SPREAD: one actor per node where the cluster has room, so the grid uses every node's cores
        # and one lost node takes only its own shards with it
        actor_cls = ray.remote(GridEvaluator).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                                      max_task_retries=max_task_retries, scheduling_strategy="SPREAD")
        self.actors = [actor_cls.remote() for _ in range(size)]
        self.shards_per_evaluator = shards_per_evaluator
        self.pids_seen: set[int] = set()
        self.resubmitted = 0

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def shards(self, splits: dict[str, int]) -> list[ShardTask]:
        """Contiguous user ranges of every split (users per split given)."""
        n = len(self.actors) * self.shards_per_evaluator
        return [ShardTask(s, int(b[0]), int(b[-1]) + 1) for s, users in splits.items()
                for b in np.array_split(np.arange(users), min(n, max(users, 1))) if len(b)]

    def topk_lists(self, job) -> dict[str, dict[str, np.ndarray]]:
        """The grid of ``job`` (a ``popsteer.stages.grid.GridJob``) over user shards."""
        import ray
        from ray.exceptions import RayActorError

        # put once, read zero-copy by every actor of a node; held until the last task is done
        item_ref, delta_ref = ray.put(job.item_emb.numpy()), ray.put(job.deltas.numpy())
        x_refs = {s: ray.put(np.ascontiguousarray(x)) for s, x in job.x.items()}
        bias_ref = None if job.bias is None else ray.put(job.bias.numpy())
        ex_refs = {s: ray.put(c) for s, c in job.exclude.items()}
        tasks = self.shards({s: len(x) for s, x in job.x.items()})

        def submit(i: int, actor) -> object:
            t = tasks[i]
            return actor.score.remote(job.sae_path, delta_ref, item_ref, x_refs[t.split], t.lo, t.hi, job.k, bias_ref,
                                      ex_refs.get(t.split), job.preserve)

        pending = {submit(i, self.actors[i % len(self.actors)]): (i, 0) for i in range(len(tasks))}
        results: dict[int, dict] = {}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, attempt = pending.pop(ref)
            try:
                out = ray.get(ref)
            except RayActorError as exc:
                if attempt >= 3:
                    raise
                self.resubmitted += 1
                log.warning("grid shard %s failed on a dead evaluator (%s): resubmitted", tasks[i], type(exc).__name__)
                pending[submit(i, self.actors[(i + attempt + 1) % len(self.actors)])] = (i, attempt + 1)
                continue
            results[i] = out["lists"]
            self.received(i, out)
        merged = {}
        for split in job.x:
            parts = [results[i] for i, t in enumerate(tasks) if t.split == split]  # tasks are in user order
            merged[split] = {"sasrec": np.concatenate([p["sasrec"] for p in parts]),
                             "sae": np.concatenate([p["sae"] for p in parts]),
                             "points": np.concatenate([p["points"] for p in parts], axis=1)}
        return merged

    def received(self, i: int, out: dict) -> None:
        """Shard ``i``'s result arrived: note the evaluator process that computed it."""
        self.pids_seen.add(out["pid"])

    def shutdown(self) -> None:
        """Kill the actors; a second call does nothing."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
