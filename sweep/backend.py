"""The joblib backend that sends each scikit-learn fit to an isolated Dask worker.

It is joblib's own Dask backend with two small changes, so scikit-learn's
``BaseSearchCV.fit`` stays untouched and owns the loop:

* on the worker, every task of a batch runs inside :func:`~sweep.isolation.isolated_fit`
  (seeded per CV fold, Keras session cleared afterwards, worker recycled when due);
* on the driver, each finished fit is reported to a listener (progress bar, fit
  records) as soon as its result arrives.

``X`` and ``y`` travel once per search: the base class replaces every argument
larger than 1 kB by a future, once per ``Parallel`` call, and each worker fetches
it once. Instead of ``client.scatter`` (whose data is gone for good if the worker
holding it dies or restarts), sweep makes each such future a small task that
returns the data, so Dask can recompute it after a worker loss or a recycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

import numpy as np
from dask.sizeof import sizeof
from joblib._dask import DaskDistributedBackend

from .isolation import isolated_fit
from .recycling import Recycler

Task = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]
FitListener = Callable[[dict[str, Any], Any], None]


def fit_seed(sweep_seed: int | None, task_kwargs: dict[str, Any]) -> int | None:
    """Seed of one fit: the same for every candidate within a CV fold.

    Common random numbers: candidates are compared on the same initial weights
    and the same batch order, so a "best" candidate cannot be a lucky seed.
    """
    if sweep_seed is None:
        return None
    split = task_kwargs.get("split_progress", (0, 1))[0]
    return int(np.random.SeedSequence([sweep_seed, split]).generate_state(1)[0])


def describe_task(task_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Identity of one fit as scikit-learn's search passes it to ``_fit_and_score``."""
    candidate, n_candidates = task_kwargs.get("candidate_progress", (None, None))
    split, n_splits = task_kwargs.get("split_progress", (None, None))
    return {
        "candidate": candidate,
        "n_candidates": n_candidates,
        "split": split,
        "n_splits": n_splits,
        "params": task_kwargs.get("parameters"),
    }


class FitOutcome:
    """What a worker sends back for a batch: joblib's results plus fit facts."""

    def __init__(self, results: list[Any], facts: list[dict[str, Any]]) -> None:
        self.results = results
        self.facts = facts


class IsolatedBatch:
    """Stands in for joblib's ``Batch``: runs each task inside an isolated fit."""

    def __init__(self, batch: Any, sweep_seed: int | None) -> None:
        self.batch = batch
        self.sweep_seed = sweep_seed

    def __call__(self, tasks: list[Task] | None = None) -> FitOutcome:
        results: list[Any] = []
        facts: list[dict[str, Any]] = []
        for task in tasks or []:
            with isolated_fit(fit_seed(self.sweep_seed, task[2])) as fact:
                results.extend(self.batch([task]))
            fact.update(describe_task(task[2]))
            facts.append(fact)
        return FitOutcome(results, facts)

    def __repr__(self) -> str:
        return repr(self.batch)


def _data(value: Any) -> Any:
    return value


class _RecomputableScatter:
    """A client whose ``scatter`` makes a recomputable task instead of raw data."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sent_bytes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def scatter(self, data: Any, **_: Any) -> Any:
        self.sent_bytes.append(int(sizeof(data)))
        return self._client.submit(_data, data, pure=False, key=f"sweep-data-{uuid4().hex}")


class SweepBackend(DaskDistributedBackend):
    """joblib backend: Dask futures, isolated fits, per-fit reporting.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster that runs the fits.
    sweep_seed : int, optional
        Seed of the sweep; each fit derives its own from it and its CV fold.
    on_submit, on_fit : callable, optional
        ``on_submit(info)`` is called on the driver for each fit sent out,
        ``on_fit(facts, result)`` for each fit that came back.
    workers : int, optional
        Size of the cluster, for staggering worker restarts.
    """

    def __init__(
        self,
        client: Any,
        sweep_seed: int | None = None,
        on_submit: Callable[[dict[str, Any]], None] | None = None,
        on_fit: FitListener | None = None,
        workers: int | None = None,
        **submit_kwargs: Any,
    ) -> None:
        super().__init__(client=client, **submit_kwargs)
        self.client = _RecomputableScatter(client)
        self.recycler = Recycler(client, workers)
        self.sweep_seed = sweep_seed
        self.on_submit = on_submit
        self.on_fit = on_fit

    @property
    def data_sent(self) -> list[int]:
        """Sizes in bytes of the arguments shipped as shared data (X, y, folds)."""
        return self.client.sent_bytes

    async def _to_func_args(self, func: Any) -> tuple[IsolatedBatch, list[Task]]:
        batch, tasks = await super()._to_func_args(func)
        if self.on_submit is not None:
            for task in tasks:
                self.on_submit(describe_task(task[2]))
        return IsolatedBatch(batch, self.sweep_seed), tasks

    def retrieve_result_callback(self, out: Any) -> Any:
        if isinstance(out, FitOutcome):
            for fact, result in zip(out.facts, out.results, strict=False):
                self.recycler.fit_done(fact)
                if self.on_fit is not None:
                    self.on_fit(fact, result)
            return out.results
        return super().retrieve_result_callback(out)

    def get_nested_backend(self) -> tuple[Any, int]:
        return DaskDistributedBackend(client=self.client._client), -1

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (DaskDistributedBackend, ())
