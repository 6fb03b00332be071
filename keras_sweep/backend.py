"""The joblib backend that sends each scikit-learn fit to an isolated Dask worker.

It is joblib's own Dask backend with two small changes, so scikit-learn's
``BaseSearchCV.fit`` stays untouched and owns the loop:

* on the worker, every task of a batch runs inside :func:`~sweep.worker.fit.isolated_fit`
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
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from dask.sizeof import sizeof
from distributed import KilledWorker

from ._compat import (
    JoblibDaskBackend,
    drop_unused_callback_context,
    failed_fit_result,
    fit_error,
    fit_score,
    fit_task,
    widen_dispatch,
)
from .checkpoints import CheckpointStore
from .deaths import DeathWatch, WorkerDeath, describe
from .journal import FitKeys, Journal
from .placement import Placement, candidate_key
from .records import FitRecord
from .recycling import Recycler
from .version import __version__
from .worker.fit import Carry, FitOutcome, IsolatedBatch, identify
from .worker.paths import KERAS_FIT, TrainingPaths

logger = logging.getLogger(__name__)

FitListener = Callable[[FitRecord, Any], None]


def _data(value: Any) -> Any:
    return value


def data_future(client: Any, value: Any, name: str = "data") -> Any:
    """A Dask future of ``value`` that Dask can recompute after a worker loss.

    Unlike ``client.scatter`` (whose data is gone for good if the worker
    holding it dies or restarts), it is a small task that returns the data.
    """
    return client.submit(_data, value, pure=False, key=f"sweep-{name}-{uuid4().hex}")


class _RecomputableScatter:
    """A client whose ``scatter`` makes a :func:`data_future` instead of raw data."""

    def __init__(self, client: Any) -> None:
        self.unwrapped = client
        self.sent_bytes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unwrapped, name)

    async def scatter(self, data: Any, **_: Any) -> Any:
        self.sent_bytes.append(int(sizeof(data)))
        return data_future(self.unwrapped, data)


#: Errors of a Dask future that mean "the fit never returned", not "the fit raised".
WORKER_LOST = (KilledWorker, asyncio.CancelledError, concurrent.futures.CancelledError)
WORKER_LOST_PREFIX = "worker lost"
#: a future cancelled (by sweep when the search stops, or by Dask)
CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)
#: fits dispatched ahead per worker thread when placing by kind (joblib's default: 2);
#: measured in docs/performance.md ("Fits placed by kind")
PLACEMENT_DISPATCH = 4


@dataclass
class _Held:
    """A fit joblib dispatched that waits in the driver for a free worker thread."""

    func: Any
    callback: Any
    cf_future: Any
    keys: list[str | None]
    #: its candidate (:func:`~sweep.placement.candidate_key`)
    candidate: str


class _Raise:
    """An error for joblib to raise in the driver, delivered like a result."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _lost(result: Any) -> bool:
    return str(fit_error(result) or "").startswith(WORKER_LOST_PREFIX)


class SweepBackend(JoblibDaskBackend):
    """joblib backend: Dask futures, isolated fits, per-fit reporting, a journal.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster that runs the fits.
    seed : int, optional
        Seed of the sweep; each fit derives its own from it and its CV fold.
    on_submit, on_fit : callable, optional
        ``on_submit(record)`` is called on the driver for each fit sent out (its
        identity filled in), ``on_fit(record, result)`` for each fit that came back.
    on_start : callable, optional
        Called when a search begins (joblib's ``start_call``), e.g. to open its
        tracking runs.
    workers : int, optional
        Size of the cluster, for staggering worker restarts.
    journal : Journal, optional
        Where finished fits are recorded; fits already in it are not run again.
    paths : TrainingPaths
        Which training paths fits may take in the workers (whole epochs per
        Keras execution, sweep's compiled loop, XLA); see
        :mod:`sweep.worker.fastpath`. Default: Keras' fit as it comes.
    checkpoints : CheckpointStore, optional
        End states of fits whose candidates set their epochs, so that a longer
        fit of the same candidate and fold continues from one
        (:mod:`sweep.checkpoints`); None: every fit trains from scratch.
    place_by_kind : bool
        Send a fit to a free worker that holds its kind of model's trace, when
        one of the fits held back has one (:mod:`sweep.placement`).
    """

    def __init__(
        self,
        client: Any,
        seed: int | None = None,
        on_submit: Callable[[FitRecord], None] | None = None,
        on_fit: FitListener | None = None,
        on_start: Callable[[], None] | None = None,
        workers: int | None = None,
        journal: Journal | None = None,
        paths: TrainingPaths = KERAS_FIT,
        checkpoints: CheckpointStore | None = None,
        place_by_kind: bool = True,
        **submit_kwargs: Any,
    ) -> None:
        super().__init__(client=client, **submit_kwargs)
        self.client = _RecomputableScatter(client)
        self.recycler = Recycler(client, workers)
        self.seed = seed
        self.on_submit = on_submit
        self.on_fit = on_fit
        self.on_start = on_start
        self.journal = journal
        self.paths = paths
        self.checkpoints = checkpoints
        #: the search was stopped (Ctrl-C, an error): cancellations are not worker deaths
        self.stopping = False
        #: search rounds begun in this session (FitRecord.round)
        self.round = 0
        #: fits sent to the cluster and not yet back, and those held back (see _admit)
        self._in_flight = 0
        self._waiting: list[_Held] = []
        #: where fits go (None: wherever Dask sends them, e.g. restricted by the caller)
        self.placement = (Placement() if place_by_kind and "workers" not in submit_kwargs
                          else None)
        #: per fit sent: its candidate key and the worker it was sent to
        self._placed: dict[Any, tuple[str, str | None]] = {}
        self._ticking = False
        self.keys = FitKeys(seed, __version__)
        #: why workers died, per fit (events of the scheduler and the nannies)
        self.deaths = DeathWatch(self.unwrapped_client)
        self._tasks: dict[Any, tuple[list[dict[str, Any]], list[str | None]]] = {}

    @property
    def unwrapped_client(self) -> Any:
        """The ``distributed.Client`` itself."""
        return self.client.unwrapped

    @property
    def data_sent(self) -> list[int]:
        """Sizes in bytes of the arguments shipped as shared data (X, y, folds)."""
        return self.client.sent_bytes

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """Report at least 2 jobs: with 1, joblib would run the fits in the driver
        process itself (its sequential shortcut), outside the isolated workers."""
        return max(2, int(super().effective_n_jobs(n_jobs)))

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_args: Any) -> Any:
        """joblib's set-up of a ``Parallel`` call; with placement, a wider dispatch window.

        joblib and scikit-learn send ``2 * n_jobs`` fits ahead by default: with every
        thread busy, the next free worker could choose among only as many fits as there
        are threads. Where that default is left as it is, sweep takes
        ``PLACEMENT_DISPATCH * n_jobs`` ahead (held in the driver, not sent), so a
        free worker finds a fit of a kind it holds more often (:mod:`sweep.placement`).
        """
        n = super().configure(n_jobs=n_jobs, parallel=parallel, **backend_args)
        if self.placement is not None and parallel is not None:
            widen_dispatch(parallel, f"{PLACEMENT_DISPATCH}*n_jobs")
        return n

    def compute_batch_size(self) -> int:
        """One fit per task: fits are long, and a lost task then costs one fit."""
        return 1

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future:
        items = list(func.items)
        for _, _, kwargs in items:
            task = fit_task(kwargs)
            if task.candidate == 0 and task.split == 0:
                self.round += 1  # a search's next round: its fits all came back
        keys = [self.keys.key(a, k) for _, a, k in items] if self.journal is not None else []
        cf_future: concurrent.futures.Future = concurrent.futures.Future()
        cf_future.get = cf_future.result  # type: ignore[attr-defined]
        stored = self._stored(keys)
        if stored is not None:
            records = [self._resumed(k, kw) for (_, _, kw), k in zip(items, keys, strict=True)]
            self.client.loop.add_callback(
                self._resolve, cf_future, callback, FitOutcome(stored, records))
            return cf_future
        self.client.loop.add_callback(self._submit_async, func, callback, cf_future, keys)
        return cf_future

    def _resumed(self, key: str | None, kwargs: dict[str, Any]) -> FitRecord:
        """The record of a fit taken from the journal: its history as journaled."""
        record = identify(FitRecord(key=key, resumed=True), kwargs)
        if self.journal is not None and key is not None:
            record.history = self.journal.facts(key).get("history")
        return record

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

    def start_call(self) -> None:
        """A new search begins (joblib calls this): an earlier one's stop is forgotten."""
        super().start_call()
        self.stopping = False
        self._waiting.clear()
        self._in_flight = len(self.tracked())
        if self.on_start is not None:
            self.on_start()

    async def _submit_async(self, func: Any, callback: Any, cf_future: Any,
                            keys: list[str | None]) -> None:
        """Hold one fit back, then send held-back fits while worker threads are free.

        joblib dispatches up to twice as many fits as there are threads. Sent all at
        once, a worker would hold a queued fit beside the one it runs, and Dask
        counts a worker's death against every fit the worker holds: an innocent
        queued fit could use up its retries. Held in the driver until a thread is
        free, each fit a worker holds is the one it runs, so ``max_retries``
        (Dask's ``allowed-failures``) counts the deaths of a fit's own runs only;
        and which held fit goes to which free worker can follow the workers'
        traces (:mod:`sweep.placement`).
        """
        items = list(func.items)
        estimator = items[0][1][0] if items and items[0][1] else None
        candidate = candidate_key(estimator, fit_task(items[0][2]).params if items else None)
        self._waiting.append(_Held(func, callback, cf_future, keys, candidate))
        await self._admit()

    async def _send(self, held: _Held, worker: str | None) -> None:
        """Send one held-back fit to the cluster, chosen for ``worker`` (the free one).

        Not restricted to it: Dask gives a fit to a free worker thread anyway, and a
        restricted fit would bypass Dask's queue, so that after a worker's death its
        fit, rescheduled, could wait on a busy worker beside the fit that runs there
        (and an innocent fit lose a run with it: ``test_fault_tolerance``)."""
        if self.stopping:
            return  # the search stopped since: dropped like the fits still held back
        joblib_batch, tasks = await self.split_batch(held.func)
        tasks = [(f, args, drop_unused_callback_context(kwargs)) for f, args, kwargs in tasks]
        if self.on_submit is not None:
            for task in tasks:
                self.on_submit(identify(FitRecord(round=self.round), task[2]))
        batch = IsolatedBatch(joblib_batch, self.seed, held.keys, self.paths,
                              self._carries(held.func.items))
        dask_future = self.client.submit(
            self.capture_traceback(batch), tasks=tasks,
            key=f"{batch!r}-{uuid4().hex}", **self.submit_kwargs)
        self.track(dask_future, held.callback, held.cf_future)
        self._tasks[dask_future] = ([kwargs for _, _, kwargs in held.func.items], held.keys)
        self._placed[dask_future] = (held.candidate, worker)
        self._watch(dask_future)

    def _carries(self, items: list[Any]) -> list[Carry | None]:
        """Per fit, its lineage, epochs and the state of a shorter fit of that lineage
        (:mod:`sweep.checkpoints`); None for fits that set no epochs."""
        if self.checkpoints is None or not (self.paths.compiled_loop
                                            and self.paths.continue_training):
            return []  # (unseeded fits are told apart in the worker, which seeds them)
        carries: list[Carry | None] = []
        for _, args, kwargs in items:
            found = self.keys.lineage(args, kwargs)
            carries.append(None if found is None else
                           (*found, self.checkpoints.before(*found)))
        return carries

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every fit still running or queued (joblib will not collect them).

        joblib calls this when the search raises (``error_score="raise"``, Ctrl-C);
        joblib's own version only empties a queue sweep does not use, so the
        cluster would go on running the fits.
        """
        self.stopping = True
        self._waiting.clear()
        self._in_flight = 0
        self._placed.clear()
        if self.placement is not None:
            self.placement.forget_running()
        futures = self.tracked()
        for future in futures:
            self.untrack(future)
            self._tasks.pop(future, None)
        if futures:
            self.client.loop.add_callback(self.unwrapped_client.cancel, futures,
                                          asynchronous=True)

    def _tick(self) -> None:
        """Admit held-back fits twice a second while any wait (workers may join)."""
        if self._ticking:
            return
        self._ticking = True

        async def tick() -> None:
            self._ticking = False
            await self._admit()

        self.client.loop.call_later(0.5, lambda: self.client.loop.add_callback(tick))

    async def _admit(self) -> None:
        """Send held-back fits while worker threads are free, each where
        :class:`~sweep.placement.Placement` chooses (oldest first without one)."""
        if not self._waiting or self.stopping:
            return  # nothing held back: no need to ask the scheduler
        nthreads = await self.unwrapped_client.nthreads(asynchronous=True)
        free = max(1, sum(int(n) for n in nthreads.values())) - self._in_flight
        if free > 0 and self._waiting and not self.stopping:
            picks = (self.placement.choose([h.candidate for h in self._waiting],
                                           self.placement.idle(nthreads)[:free])
                     if self.placement is not None else [])
            chosen = dict(picks)
            rest = [i for i in range(len(self._waiting)) if i not in chosen]
            order = [(i, w) for i, w in picks] + [(i, None) for i in rest[:free - len(picks)]]
            sends = [(self._waiting[i], w) for i, w in order]
            for i in sorted((i for i, _ in order), reverse=True):
                del self._waiting[i]
            for held, worker in sends:
                self._in_flight += 1
                self.client.loop.add_callback(self._send, held, worker)
        if self._waiting and not self.stopping:
            self._tick()  # workers that join meanwhile get fits too

    def _watch(self, future: Any) -> None:
        """Deliver ``future``'s result once it is done (called again if it is lost)."""
        future.add_done_callback(lambda f: self.client.loop.add_callback(self._fetch, f))

    async def _fetch(self, future: Any) -> None:
        """Gather one finished fit. Unlike ``as_completed``, this survives a result
        lost with its worker before it was fetched: Dask recomputes it and we
        wait for it again."""
        if not self.is_tracked(future):
            return
        try:
            result = await self.unwrapped_client.gather(future, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if future.status in ("pending", "lost") and not isinstance(exc, WORKER_LOST):
                self._watch(future)
                return
            if isinstance(exc, KilledWorker) and not self.stopping:
                await self.deaths.settled(str(future.key))  # each death with its reason
            self._deliver(future, ("error", exc, None))
            return
        self._deliver(future, result)

    def _deliver(self, future: Any, result: Any) -> None:
        tracked = self.untrack(future)
        if tracked is None:  # aborted meanwhile
            return
        self._in_flight = max(0, self._in_flight - 1)
        cf_future, callback = tracked
        kwargs_list, keys = self._tasks.pop(future, ([], []))
        failed = isinstance(result, tuple) and len(result) == 3 and result[0] == "error"
        placed = self._placed.pop(future, None)
        if placed is not None and self.placement is not None:
            self.placement.back(*placed, result.records if isinstance(result, FitOutcome)
                                else ())
        self.client.loop.add_callback(self._admit)
        if failed and self.stopping and isinstance(result[1], CANCELLED):
            return  # cancelled because the search stopped: nobody died, nobody waits
        lost = [d.as_dict() for d in self.deaths.deaths(str(future.key))]
        if not failed:
            if lost and isinstance(result, FitOutcome):
                for record in result.records:
                    record.lost_runs = lost
            try:
                self._resolve(cf_future, callback, result)
            except Exception:  # never let one bad result stop the others
                logger.exception("sweep: could not deliver the result of %s", future.key)
            return
        try:
            out: Any = self._failure_outcome(result[1], kwargs_list, keys, lost)
        except BaseException as error:  # error_score="raise", or not a worker loss
            out = _Raise(error)  # joblib learns of errors through the callback only
        self._resolve(cf_future, callback, out)

    def _failure_outcome(self, exc: BaseException, kwargs_list: list[dict[str, Any]],
                         keys: list[str | None], lost: list[dict[str, Any]]) -> Any:
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
        if lost:
            reason = (f"{WORKER_LOST_PREFIX}: its worker died each of the {len(lost)} time(s) "
                      f"it ran (max_retries {len(lost) - 1}): "
                      + describe([WorkerDeath(**d) for d in lost]))
        else:
            reason = (f"{WORKER_LOST_PREFIX}: {exc!r}. The fit was retried on other workers "
                      "and each time its worker died (no reason was reported).")
        logger.warning("sweep: %s", reason)
        keys = keys or [None] * len(kwargs_list)
        records = [identify(FitRecord(key=key, worker_lost=True, ended=time.time(),
                                      lost_runs=lost or None), kw)
                   for kw, key in zip(kwargs_list, keys, strict=False)]
        return FitOutcome([failed_fit_result(kw, reason) for kw in kwargs_list], records)

    def retrieve_result_callback(self, out: Any) -> Any:
        if isinstance(out, _Raise):
            raise out.error
        if isinstance(out, FitOutcome):
            if self.checkpoints is not None:
                for lineage, epochs, state in out.states:
                    self.checkpoints.put(lineage, epochs, state)
            for record, result in zip(out.records, out.results, strict=False):
                record.round = self.round  # a round's fits all return before the next
                record.fit_error = fit_error(result)
                record.test_score = fit_score(result)
                self.recycler.fit_done(record)
                if self.journal is not None and record.key and not record.resumed:
                    self.journal.record(record.key, result, record)
                if self.on_fit is not None:
                    self.on_fit(record, result)
            return out.results
        return super().retrieve_result_callback(out)

    def get_nested_backend(self) -> tuple[Any, int]:
        return JoblibDaskBackend(client=self.unwrapped_client), -1

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (JoblibDaskBackend, ())
