"""One isolated fit in a worker, and the worker's request to be recycled.

:class:`IsolatedBatch` is what a worker runs for a batch joblib dispatched: each
scikit-learn fit runs inside :func:`isolated_fit` (seeded per CV fold, fast
path when allowed), then :func:`end_fit` clears Keras, collects the fit's
garbage, records memory and, when the worker has run its quota of fits or
grown past its memory limit, marks the record ``recycle_due``; the driver's
:class:`~keras_sweep.driver.recycling.Recycler` then calls :func:`recycle_worker`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from distributed import get_worker

from .._compat.distributed import retire_and_restart
from .._compat.sklearn import fit_task
from ..protocol import KERAS_FIT, FitPath, TrainingPaths, cpu_kind
from ..store.checkpoints import Checkpoint
from ..store.records import FitRecord
from .canary import restricted
from .memory import (
    clear_keras_session,
    custom_gradient_keys,
    purge_custom_gradients,
    resident_bytes,
)
from .seeding import fit_seed, kernels_clean, seeded
from .setup import WorkerState, current_state, state_of
from .training import traces
from .training.continuation import Continuation
from .training.fastpath import enabled

logger = logging.getLogger(__name__)

Task = tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]
#: a fit's lineage, its epochs and the state to continue from (None: from scratch)
Carry = tuple[str, int, bytes | None]


def describe_path(record: FitRecord, path: FitPath) -> FitRecord:
    """Fill ``record``'s fast path, fit path and fallback reason."""
    record.fast_path, record.fit_path, record.fallback = path.fast, path.name, path.fallback
    record.trace_seconds, record.trace = path.trace_seconds, path.trace
    record.trace_kind = path.kind
    if path.continuation is not None:
        record.continued_from = path.continuation.continued_from
    return record


def keras_history(estimator: Any) -> dict[str, list[float]] | None:
    """The fitted estimator's per-epoch history (scikeras' ``history_``), as floats."""
    history = getattr(estimator, "history_", None)
    if not isinstance(history, dict):
        return None
    curves = {}
    for name, values in history.items():
        try:
            curves[str(name)] = [float(v) for v in values]
        except (TypeError, ValueError):
            continue
    return curves or None


def identify(record: FitRecord, kwargs: dict[str, Any]) -> FitRecord:
    """Fill ``record``'s candidate, fold and parameters from a fit's keyword arguments."""
    task = fit_task(kwargs)
    record.candidate, record.n_candidates = task.candidate, task.n_candidates
    record.split, record.n_splits = task.split, task.n_splits
    record.params = task.params
    return record


@contextlib.contextmanager
def isolated_fit(seed: int | None, clean: bool = True) -> Iterator[FitRecord]:
    """Run one fit: seed it, then clear Keras and maybe recycle the worker.

    Yields the fit's :class:`FitRecord`, filled with process id, worker
    address, fit seconds, memory after the fit and how many fits this process
    has run. With ``clean=False`` the caller runs :func:`end_fit` itself, once
    it has dropped its own references to the fitted model (so the clean-up can
    free it).
    """
    record = FitRecord(pid=os.getpid(), seed=seed, cpu=cpu_kind())
    state = current_state()
    with seeded(seed, in_worker=state is not None):
        if state is not None and state.purge_custom_gradients:
            state.gradient_keys = custom_gradient_keys()
        record.started = time.time()
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - start
            if clean:
                end_fit(record)


def end_fit(record: FitRecord) -> FitRecord:
    """After a fit: clear Keras, collect garbage, record memory, maybe ask for recycling."""
    start = time.perf_counter()
    state = current_state()
    if state is not None and state.gradient_keys is not None:
        record.purged_gradients = purge_custom_gradients(state.gradient_keys)
        state.gradient_keys = None
    if state is None:
        clear_keras_session(freeze=False, full_collection=False)
    else:
        full = bool(state.full_gc_every) and (state.fits + 1) % state.full_gc_every == 0
        clear_keras_session(freeze=state.freeze_gc, full_collection=full,
                            keep_kernels=kernels_kept(record))
    record.cleanup_seconds = time.perf_counter() - start
    record.rss = resident_bytes()
    if state is not None:
        _count_fit(state, record)
    record.ended = time.time()
    return record


def kernels_kept(record: FitRecord) -> bool:
    """Whether TensorFlow's kernel cache may outlive this fit: it holds the
    instantiations of the shared traces the next fits reuse (~0.1-0.3 s each to
    redo). Only when that is exact (no stateful random kernel seen, as the next
    fit's seeding checks) and bounded: the fit trained on a template
    (:mod:`keras_sweep.worker.training.traces`, at most a few per worker) and none was dropped.
    A fit that traced its own functions leaves ~0.2 MB of instantiations, a dropped
    template ~1 MB (docs/performance.md): those fits clear the cache. Never with
    ``sweep.worker.keep-kernels`` off (``scripts/bench_kernel_cache.py`` measures both)."""
    dropped = traces.dropped_any()
    state = current_state()
    keep = state.keep_kernels if state is not None else True
    return (keep and record.trace in ("new", "reused") and not dropped
            and kernels_clean(start=False))


def _count_fit(state: WorkerState, record: FitRecord) -> None:
    worker = get_worker()
    record.worker = worker.address
    nanny: Any = worker.nanny  # an address at run time, typed as a Nanny
    record.nanny = nanny  # a restarted process registers under the same nanny
    with state.lock:
        state.fits += 1
        record.process_fits = state.fits
        reason = _recycle_reason(state, record.rss or 0)
    if reason is not None:
        record.recycle_due = reason


def _recycle_reason(state: WorkerState, rss: int) -> str | None:
    if state.recycle_after_fits and state.fits >= state.recycle_after_fits:
        return f"{state.fits} fits"
    if state.recycle_above_memory and rss >= state.recycle_above_memory:
        return f"resident memory {rss} bytes"
    return None


async def recycle_worker(dask_worker: Any, reason: str = "recycle",
                         timeout: float = 120.0) -> bool:
    """Restart this worker process without losing work (run through ``client.run``).

    First the scheduler retires the worker: results only it holds are copied to
    other workers, and its queued tasks go back to the scheduler as expected
    (not suspicious) departures. Then its nanny kills the process and starts a
    fresh one, which imports TensorFlow again and rejoins the cluster; the nanny
    waits ``timeout`` seconds for it.
    """
    state = state_of(dask_worker)
    if state is None or state.recycling or dask_worker.nanny is None:
        return False
    state.recycling = True
    logger.info("sweep: recycling worker %s (%s)", dask_worker.address, reason)
    await retire_and_restart(dask_worker, reason, timeout)
    return True


class FitOutcome:
    """What a worker sends back for a batch: joblib's results plus fit records, and
    the end states its fits kept for longer fits of their lineage."""

    def __init__(self, results: list[Any], records: list[FitRecord],
                 states: list[tuple[str, int, bytes]] | None = None) -> None:
        self.results = results
        self.records = records
        #: ``(lineage, epochs, state)`` per fit that kept its end state
        self.states = states or []


class IsolatedBatch:
    """What a worker runs for a batch joblib dispatched: each task inside an isolated fit.

    Parameters
    ----------
    name : str
        What the batch runs (e.g. ``"_fit_and_score"``), for its repr.
    seed : int, optional
        The sweep seed; each fit derives its own (:func:`~keras_sweep.worker.seeding.fit_seed`).
    keys : sequence of str or None
        Journal keys of the tasks, in order.
    paths : TrainingPaths
        Which training paths fits may take (:mod:`keras_sweep.worker.training.fastpath`).
    carries : sequence of Carry or None
        Per task, its lineage, epochs and the state of a shorter fit of its
        lineage to continue from (:mod:`keras_sweep.worker.training.continuation`); None: the
        fit neither continues nor keeps its end state.
    """

    def __init__(self, name: str, seed: int | None, keys: Sequence[str | None] = (),
                 paths: TrainingPaths = KERAS_FIT,
                 carries: Sequence[Carry | None] = ()) -> None:
        self.name = name
        self.seed = seed
        self.keys = list(keys)
        self.paths = paths
        self.carries = list(carries)

    def __call__(self, tasks: list[Task] | None = None) -> FitOutcome:
        results: list[Any] = []
        records: list[FitRecord] = []
        states: list[tuple[str, int, bytes]] = []
        tasks = tasks if tasks is not None else []
        for i in range(len(tasks)):
            record = FitRecord()
            try:
                record = self._run(tasks, i, results, states)
            finally:
                # the fitted model is unreachable now (its task was dropped from
                # ``tasks``), so the clean-up collects it instead of freezing it;
                # after an error escaping the fit, the clean-up still runs
                records.append(end_fit(record))
        return FitOutcome(results, records, states)

    def _continuation(self, i: int, seed: int | None) -> Continuation | None:
        carry = self.carries[i] if i < len(self.carries) else None
        if carry is None or seed is None or not self.paths.continue_training:
            return None
        start = carry[2]
        return Continuation(start=Checkpoint.from_bytes(start) if start else None, keep=True)

    def _run(self, tasks: list[Any], i: int, results: list[Any],
             states: list[tuple[str, int, bytes]]) -> FitRecord:
        func, args, kwargs = tasks[i]
        tasks[i] = None
        estimator = args[0] if args else None
        if hasattr(estimator, "get_params"):
            # fit a shallow copy: Dask keeps the task's own arguments (and so the
            # estimator the fit would mutate) until the task is released, which
            # would keep the fitted model alive past this fit's clean-up
            estimator = copy.copy(estimator)
            args = [estimator, *args[1:]]
        seed = fit_seed(self.seed, fit_task(kwargs).split, estimator)
        carry = self._continuation(i, seed)
        state = current_state()
        paths, switched_off = restricted(self.paths, state.canary_failed if state else {})
        with isolated_fit(seed, clean=False) as record:
            with enabled(estimator, paths) as path:
                path.continuation = carry
                results.append(func(*args, **kwargs))
                if switched_off and path.fallback is None:
                    path.fallback = switched_off
        if carry is not None and carry.end is not None:
            lineage = self.carries[i]
            assert lineage is not None
            states.append((lineage[0], carry.end.epochs, carry.end.to_bytes()))
        record.history = keras_history(estimator)
        identify(record, kwargs)
        describe_path(record, path)
        record.key = self.keys[i] if i < len(self.keys) else None
        return record

    def __repr__(self) -> str:
        return f"{self.name}-{len(self.keys) or 1}"
