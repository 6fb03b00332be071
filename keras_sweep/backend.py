"""The joblib backend that sends each scikit-learn fit to an isolated Dask worker.

It is joblib's own Dask backend with three changes, so scikit-learn's
``BaseSearchCV.fit`` stays untouched and owns the loop:

* on the worker, every task of a batch runs inside :func:`~sweep.worker.fit.isolated_fit`
  (seeded per CV fold, Keras session cleared afterwards, worker recycled when due);
* on the driver, fits wait until a worker thread is free and are then sent to that
  worker only (:mod:`sweep.placement` picks which), so a worker's death counts
  against the fit it ran and no other; sweep retries such a fit itself;
* each finished fit is reported to a listener (progress bar, fit records) as soon
  as its result arrives.

``X`` and ``y`` travel once per search: the base class replaces every argument
larger than 1 kB by a future, once per ``Parallel`` call, and each worker fetches
it once. Instead of ``client.scatter`` (whose data is gone for good if the worker
holding it dies or restarts), sweep makes each such future a small task that
returns the data, so Dask can recompute it after a worker loss or a recycle.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import dask.config
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
    #: deaths of the workers that ran it in its earlier tries (placed fits only)
    lost: list[WorkerDeath] = field(default_factory=list)


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
        one of the fits held back has one (:mod:`sweep.placement`); else the oldest.
    max_retries : int, optional
        Runs of a fit that may die with their worker before it is recorded failed,
        less one (default: Dask's ``distributed.scheduler.allowed-failures``).
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
        max_retries: int | None = None,
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
        self.max_retries = int(dask.config.get("distributed.scheduler.allowed-failures")
                               if max_retries is None else max_retries)
        #: the search was stopped (Ctrl-C, an error): cancellations are not worker deaths
        self.stopping = False
        #: search rounds begun in this session (FitRecord.round)
        self.round = 0
        #: fits sent to the cluster and not yet back, and those held back (see _admit)
        self._in_flight = 0
        self._waiting: list[_Held] = []
        #: which free worker runs which fit (None: wherever Dask sends them, as where
        #: the caller restricts the fits to workers of its own)
        self.placement = (Placement(by_kind=place_by_kind) if "workers" not in submit_kwargs
                          else None)
        #: per fit sent: what was held back, and the worker it was sent to (if placed)
        self._placed: dict[Any, tuple[_Held, str | None]] = {}
        #: per worker: fits chosen for it whose futures are not made yet
        self._heading: collections.Counter[str] = collections.Counter()
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
        if self.placement is not None and self.placement.by_kind and parallel is not None:
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
        free, and then restricted to that free worker (so that Dask cannot move it
        to a busy one after a death: :meth:`_rescue`), each fit a worker holds is the
        one it runs, so ``max_retries`` counts the deaths of a fit's own runs only;
        and which held fit goes to which free worker can follow the workers'
        traces (:mod:`sweep.placement`).
        """
        items = list(func.items)
        estimator = items[0][1][0] if items and items[0][1] else None
        candidate = candidate_key(estimator, fit_task(items[0][2]).params if items else None)
        self._waiting.append(_Held(func, callback, cf_future, keys, candidate))
        await self._admit()

    async def _send(self, held: _Held, worker: str | None) -> None:
        """Send one held-back fit to the cluster, to ``worker`` (a free one) if chosen.

        The restriction is strict: Dask never moves the fit to another worker (which
        could be busy: an innocent fit there would lose a run if this one killed that
        worker too). If ``worker`` leaves, :meth:`_rescue` takes the fit back.
        """
        if self.stopping:
            self._headed(worker)
            return  # the search stopped since: dropped like the fits still held back
        joblib_batch, tasks = await self.split_batch(held.func)
        tasks = [(f, args, drop_unused_callback_context(kwargs)) for f, args, kwargs in tasks]
        if self.on_submit is not None:
            for task in tasks:
                self.on_submit(identify(FitRecord(round=self.round), task[2]))
        batch = IsolatedBatch(joblib_batch, self.seed, held.keys, self.paths,
                              self._carries(held.func.items))
        where = {"workers": [worker], "allow_other_workers": False} if worker else {}
        dask_future = self.client.submit(
            self.capture_traceback(batch), tasks=tasks,
            key=f"{batch!r}-{uuid4().hex}", **self.submit_kwargs, **where)
        self.track(dask_future, held.callback, held.cf_future)
        self._tasks[dask_future] = ([kwargs for _, _, kwargs in held.func.items], held.keys)
        self._placed[dask_future] = (held, worker)
        self._headed(worker)  # from here on counted by its future (_load)
        self._watch(dask_future)
        if worker is not None:
            self._tick()  # watched until it is back: its worker may leave (_rescue)

    def _headed(self, worker: str | None) -> None:
        if worker is not None and self._heading[worker] > 0:
            self._heading[worker] -= 1

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
        self._heading.clear()
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
        """Admit held-back fits twice a second while any wait (workers may join), and
        look for placed fits whose worker left (:meth:`_rescue`)."""
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
        if self.stopping or not (self._waiting or self._placed_anywhere()):
            return  # nothing held back or to watch: no need to ask the scheduler
        client = self.unwrapped_client
        if self.placement is None:
            nthreads = await client.nthreads(asynchronous=True)
            load: collections.Counter[str] = collections.Counter()
        else:
            nthreads, processing = await asyncio.gather(
                client.nthreads(asynchronous=True), client.scheduler.processing())
            load = self._load(processing)
            self._rescue(set(nthreads))
        free = max(1, sum(int(n) for n in nthreads.values())) - self._in_flight
        if free > 0 and self._waiting and not self.stopping:
            if self.placement is None:
                order: list[tuple[int, str | None]] = [
                    (i, None) for i in range(min(free, len(self._waiting)))]
            else:  # only to a thread the scheduler sees free: none, none sent
                order = list(self.placement.choose([h.candidate for h in self._waiting],
                                                   self.placement.idle(nthreads, load)[:free]))
            sends = [(self._waiting[i], w) for i, w in order]
            for i in sorted((i for i, _ in order), reverse=True):
                del self._waiting[i]
            for held, worker in sends:
                self._in_flight += 1
                if worker is not None:
                    self._heading[worker] += 1
                self.client.loop.add_callback(self._send, held, worker)
        if (self._waiting or self._placed_anywhere()) and not self.stopping:
            self._tick()  # workers that join or free up meanwhile get fits too

    def _placed_anywhere(self) -> bool:
        return any(worker is not None for _, worker in self._placed.values())

    def _rescue(self, present: set[str]) -> None:
        """Take back the placed fits whose worker left the cluster (died, recycled).

        A placed fit is restricted to its worker, so Dask cannot move it: it would wait
        for that worker for ever. Left to Dask, a dead worker's fit would go to a worker
        busy with another fit, and if it kills that worker too, the other fit would lose
        a run (Dask counts a death against every fit its worker holds). sweep instead
        counts the death against the fit (:class:`~sweep.deaths.DeathWatch`) and sends
        it again when a thread is free, or records it failed after ``max_retries``.
        """
        for future, (held, worker) in list(self._placed.items()):
            if (worker is None or worker in present or future.status not in ("pending", "lost")
                    or not self.deaths.departed(worker)):
                continue  # (its worker's removal not heard yet: the next tick)
            tracked = self.untrack(future)
            if tracked is None:
                continue
            del self._placed[future]
            kwargs_list, keys = self._tasks.pop(future, ([], []))
            self.client.loop.add_callback(self._retry, future, held, worker, tracked,
                                          kwargs_list, keys)

    async def _retry(self, future: Any, held: _Held, worker: str, tracked: tuple[Any, Any],
                     kwargs_list: list[dict[str, Any]], keys: list[str | None]) -> None:
        """A fit taken back by :meth:`_rescue`: held back again, or failed."""
        # (it would wait for its worker for ever)
        await self.unwrapped_client.cancel([future], asynchronous=True)
        held.lost = held.lost + await self.deaths.settled(str(future.key))
        self._in_flight = max(0, self._in_flight - 1)
        if self.placement is not None:
            self.placement.back(held.candidate, worker)
        if self.stopping:
            return
        if len(held.lost) <= self.max_retries:
            logger.info("sweep: a fit's worker left; it is sent again (%d death(s))",
                        len(held.lost))
            self._waiting.insert(0, held)  # the oldest: sent to the next free thread
            await self._admit()
            return
        cf_future, callback = tracked
        self._resolve(cf_future, callback, self._lost_outcome(
            kwargs_list, keys, [d.as_dict() for d in held.lost], None))

    def _load(self, processing: dict[str, Any]) -> collections.Counter[str]:
        """Per worker: the tasks the scheduler has it run now, and the fits sent there
        that the scheduler has not placed yet (or that wait for their data)."""
        placed = {key: worker for worker, keys in processing.items() for key in keys}
        load = collections.Counter(placed.values()) + self._heading
        for future, (_, worker) in self._placed.items():
            if worker is not None and str(future.key) not in placed:
                load[worker] += 1
        return load

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
        held, worker = self._placed.pop(future, (None, None))
        if held is not None and self.placement is not None:
            self.placement.back(held.candidate, worker,
                                result.records if isinstance(result, FitOutcome) else ())
        self.client.loop.add_callback(self._admit)
        if failed and self.stopping and isinstance(result[1], CANCELLED):
            return  # cancelled because the search stopped: nobody died, nobody waits
        earlier = held.lost if held is not None else []
        lost = [d.as_dict() for d in earlier + self.deaths.deaths(str(future.key))]
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
        return self._lost_outcome(kwargs_list, keys, lost, exc)

    def _lost_outcome(self, kwargs_list: list[dict[str, Any]], keys: list[str | None],
                      lost: list[dict[str, Any]], exc: BaseException | None) -> FitOutcome:
        """The outcome of fits whose workers died each time they ran them."""
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
