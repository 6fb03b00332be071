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

import asyncio
import concurrent.futures
import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

import numpy as np
from dask.sizeof import sizeof
from distributed import KilledWorker
from joblib._dask import DaskDistributedBackend
from joblib._utils import _TracebackCapturingWrapper

from .fastpath import enabled
from .isolation import isolated_fit
from .journal import FitKeys, Journal
from .recycling import Recycler

logger = logging.getLogger(__name__)

Task = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]
FitListener = Callable[[dict[str, Any], Any], None]


def estimator_seed(estimator: Any) -> int | None:
    """The estimator's own integer ``random_state``, if it has one.

    scikeras seeds every fit of such an estimator with it (Python, NumPy and
    TensorFlow); sweep then seeds the fit the same way, so the sweep draws the
    same weights and batches as the user's serial run.
    """
    value = getattr(estimator, "random_state", None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def fit_seed(sweep_seed: int | None, task_kwargs: dict[str, Any],
             estimator: Any = None) -> int | None:
    """Seed of one fit: the same for every candidate within a CV fold.

    Common random numbers: candidates are compared on the same initial weights
    and the same batch order, so a "best" candidate cannot be a lucky seed. An
    estimator with its own integer ``random_state`` is seeded with that instead
    (the same for every fit, as scikeras does in a serial run).
    """
    own = estimator_seed(estimator)
    if own is not None:
        return own
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

    def __init__(self, batch: Any, sweep_seed: int | None,
                 keys: Sequence[str | None] = (), fast_path: bool = False) -> None:
        self.batch = batch
        self.sweep_seed = sweep_seed
        self.keys = list(keys)
        self.fast_path = fast_path

    def __call__(self, tasks: list[Task] | None = None) -> FitOutcome:
        from .isolation import end_fit

        results: list[Any] = []
        facts: list[dict[str, Any]] = []
        tasks = tasks if tasks is not None else []
        for i in range(len(tasks)):
            fact: dict[str, Any] = {}
            try:
                fact = self._run(tasks, i, results)
            finally:
                # the fitted model is unreachable now (its task was dropped from
                # ``tasks``), so the clean-up collects it instead of freezing it;
                # after an error escaping the fit, the clean-up still runs
                facts.append(end_fit(fact))
        return FitOutcome(results, facts)

    def _run(self, tasks: list[Any], i: int, results: list[Any]) -> dict[str, Any]:
        func, args, kwargs = tasks[i]
        tasks[i] = None
        estimator = args[0] if args else None
        if hasattr(estimator, "get_params"):
            # fit a shallow copy: Dask keeps the task's own arguments (and so the
            # estimator the fit would mutate) until the task is released, which
            # would keep the fitted model alive past this fit's clean-up
            estimator = copy.copy(estimator)
            args = [estimator, *args[1:]]
        task = (func, args, kwargs)
        with isolated_fit(fit_seed(self.sweep_seed, task[2], estimator), clean=False) as fact:
            with enabled(estimator, self.fast_path) as fast:
                done = self.batch([task])
        results.extend(done)
        fact.update(describe_task(task[2]))
        fact["fast_path"] = fast
        fact["key"] = self.keys[i] if i < len(self.keys) else None
        return fact

    def __repr__(self) -> str:
        return repr(self.batch)


def failed_fit_result(task_kwargs: dict[str, Any], reason: str) -> dict[str, Any]:
    """What ``_fit_and_score`` returns for a fit that raised, for a fit that never
    returned (its worker died). Follows ``error_score`` like scikit-learn does."""
    error_score = task_kwargs.get("error_score", np.nan)
    if error_score == "raise":
        raise RuntimeError(reason)
    scorer = task_kwargs.get("scorer")
    names = getattr(scorer, "_scorers", None)
    scores: Any = {name: error_score for name in names} if names else error_score
    result: dict[str, Any] = {"test_scores": scores, "fit_error": reason}
    if task_kwargs.get("return_train_score"):
        result["train_scores"] = dict(scores) if names else scores
    if task_kwargs.get("return_n_test_samples"):
        result["n_test_samples"] = len(task_kwargs.get("test", ()))
    if task_kwargs.get("return_times"):
        result["fit_time"], result["score_time"] = 0.0, 0.0
    if task_kwargs.get("return_parameters"):
        result["parameters"] = task_kwargs.get("parameters")
    if task_kwargs.get("return_estimator"):
        result["estimator"] = None
    return result


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


#: Errors of a Dask future that mean "the fit never returned", not "the fit raised".
WORKER_LOST = (KilledWorker, asyncio.CancelledError, concurrent.futures.CancelledError)
WORKER_LOST_PREFIX = "worker lost"


class _Raise:
    """An error for joblib to raise in the driver, delivered like a result."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _lost(result: Any) -> bool:
    error = result.get("fit_error") if isinstance(result, dict) else None
    return bool(error) and str(error).startswith(WORKER_LOST_PREFIX)


class SweepBackend(DaskDistributedBackend):
    """joblib backend: Dask futures, isolated fits, per-fit reporting, a journal.

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
    journal : Journal, optional
        Where finished fits are recorded; fits already in it are not run again.
    fast_path : bool
        Run whole epochs per Keras execution (``steps_per_execution``) in the
        workers; see :mod:`sweep.fastpath`.
    """

    def __init__(
        self,
        client: Any,
        sweep_seed: int | None = None,
        on_submit: Callable[[dict[str, Any]], None] | None = None,
        on_fit: FitListener | None = None,
        workers: int | None = None,
        journal: Journal | None = None,
        fast_path: bool = False,
        **submit_kwargs: Any,
    ) -> None:
        super().__init__(client=client, **submit_kwargs)
        self.client = _RecomputableScatter(client)
        self.recycler = Recycler(client, workers)
        self.sweep_seed = sweep_seed
        self.on_submit = on_submit
        self.on_fit = on_fit
        self.journal = journal
        self.fast_path = fast_path
        from . import __version__

        self.keys = FitKeys(sweep_seed, __version__)
        self._tasks: dict[Any, tuple[list[dict[str, Any]], list[str | None]]] = {}

    @property
    def data_sent(self) -> list[int]:
        """Sizes in bytes of the arguments shipped as shared data (X, y, folds)."""
        return self.client.sent_bytes

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """Report at least 2 jobs: with 1, joblib would run the fits in the driver
        process itself (its sequential shortcut), outside the isolated workers."""
        return max(2, int(super().effective_n_jobs(n_jobs)))

    def compute_batch_size(self) -> int:
        """One fit per task: fits are long, and a lost task then costs one fit."""
        return 1

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future:
        items = list(func.items)
        keys = [self.keys.key(a, k) for _, a, k in items] if self.journal is not None else []
        cf_future: concurrent.futures.Future = concurrent.futures.Future()
        cf_future.get = cf_future.result  # type: ignore[attr-defined]
        stored = self._stored(keys)
        if stored is not None:
            facts = [{**describe_task(kw), "key": k, "resumed": True}
                     for (_, _, kw), k in zip(items, keys, strict=True)]
            self.client.loop.add_callback(
                self._resolve, cf_future, callback, FitOutcome(stored, facts))
            return cf_future
        self.client.loop.add_callback(self._submit_async, func, callback, cf_future, keys)
        return cf_future

    def _stored(self, keys: list[str | None]) -> list[Any] | None:
        if not keys or self.journal is None or None in keys:
            return None
        results = [self.journal.get(k) for k in keys if k is not None]
        if any(r is None or _lost(r) for r in results):
            return None  # fits whose workers died are tried again on a rerun
        return results

    @staticmethod
    def _resolve(cf_future: concurrent.futures.Future, callback: Any, out: Any) -> None:
        cf_future.set_result(out)
        if callback is not None:
            callback(out)

    async def _submit_async(self, func: Any, callback: Any, cf_future: Any,
                            keys: list[str | None]) -> None:
        batch, tasks = await self._to_func_args(func)
        batch.keys = keys
        dask_future = self.client.submit(
            _TracebackCapturingWrapper(batch), tasks=tasks,
            key=f"{batch!r}-{uuid4().hex}", **self.submit_kwargs)
        self._callbacks[dask_future] = callback
        self._results[dask_future] = cf_future
        self._tasks[dask_future] = ([kwargs for _, _, kwargs in func.items], keys)
        self._watch(dask_future)

    async def _to_func_args(self, func: Any) -> tuple[IsolatedBatch, list[Task]]:
        batch, tasks = await super()._to_func_args(func)
        if self.on_submit is not None:
            for task in tasks:
                self.on_submit(describe_task(task[2]))
        return IsolatedBatch(batch, self.sweep_seed, fast_path=self.fast_path), tasks

    def _watch(self, future: Any) -> None:
        """Deliver ``future``'s result once it is done (called again if it is lost)."""
        future.add_done_callback(lambda f: self.client.loop.add_callback(self._fetch, f))

    async def _fetch(self, future: Any) -> None:
        """Gather one finished fit. Unlike ``as_completed``, this survives a result
        lost with its worker before it was fetched: Dask recomputes it and we
        wait for it again."""
        if future not in self._results:
            return
        try:
            result = await self.client._client.gather(future, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if future.status in ("pending", "lost") and not isinstance(exc, WORKER_LOST):
                self._watch(future)
                return
            self._deliver(future, ("error", exc, None))
            return
        self._deliver(future, result)

    def _deliver(self, future: Any, result: Any) -> None:
        cf_future = self._results.pop(future)
        callback = self._callbacks.pop(future)
        kwargs_list, keys = self._tasks.pop(future, ([], []))
        if not (isinstance(result, tuple) and len(result) == 3 and result[0] == "error"):
            try:
                self._resolve(cf_future, callback, result)
            except Exception:  # never let one bad result stop the others
                logger.exception("sweep: could not deliver the result of %s", future.key)
            return
        try:
            out: Any = self._failure_outcome(result[1], kwargs_list, keys)
        except BaseException as error:  # error_score="raise", or not a worker loss
            out = _Raise(error)  # joblib learns of errors through the callback only
        self._resolve(cf_future, callback, out)

    def _failure_outcome(self, exc: BaseException, kwargs_list: list[dict[str, Any]],
                         keys: list[str | None]) -> Any:
        if isinstance(exc, ImportError):
            from .exceptions import WorkerImportError

            raise WorkerImportError(
                f"a worker could not import code the fit needs: {exc}.\n"
                "  Fix: make that module importable on every worker (install it there, or "
                "run from its folder / set PYTHONPATH), or define the model builder in the "
                "script that runs the sweep.") from exc
        if not isinstance(exc, WORKER_LOST) or not kwargs_list:
            logger.warning("sweep: a fit task failed outside the fit: %r", exc)
            raise exc
        reason = (f"{WORKER_LOST_PREFIX}: {exc!r}. The fit was retried on other workers "
                  "and each time its worker died (killed, out of memory, or crashed).")
        logger.warning("sweep: %s", reason)
        keys = keys or [None] * len(kwargs_list)
        facts = [{**describe_task(kw), "key": key, "worker_lost": True}
                 for kw, key in zip(kwargs_list, keys, strict=False)]
        return FitOutcome([failed_fit_result(kw, reason) for kw in kwargs_list], facts)

    def retrieve_result_callback(self, out: Any) -> Any:
        if isinstance(out, _Raise):
            raise out.error
        if isinstance(out, FitOutcome):
            for fact, result in zip(out.facts, out.results, strict=False):
                self.recycler.fit_done(fact)
                if self.journal is not None and fact.get("key") and not fact.get("resumed"):
                    self.journal.record(fact["key"], result, fact)
                if self.on_fit is not None:
                    self.on_fit(fact, result)
            return out.results
        return super().retrieve_result_callback(out)

    def get_nested_backend(self) -> tuple[Any, int]:
        return DaskDistributedBackend(client=self.client._client), -1

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (DaskDistributedBackend, ())
