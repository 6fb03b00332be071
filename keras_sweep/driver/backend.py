"""The joblib backend that sends each scikit-learn fit to an isolated Dask worker.

scikit-learn's ``BaseSearchCV.fit`` stays untouched and owns the loop; it calls
joblib's ``Parallel``, which hands each batch to this backend (joblib's public
``ParallelBackendBase``). The flow of one fit:

``submit`` (joblib's thread) -> held back (:class:`~keras_sweep.driver.admission.Admission`)
-> ``_admit`` when the scheduler sees a worker thread free -> ``_send`` to that worker
only (a Dask task running :class:`~keras_sweep.worker.fit.IsolatedBatch`: seeded per CV
fold, Keras session cleared afterwards, worker recycled when due) -> ``_watch`` ->
``_fetch`` once it is done -> ``_deliver`` to joblib's callback, journal and listeners
(progress bar, fit records). A placed fit whose worker leaves is taken back (``_rescue``)
and sent again, so a worker's death counts against the fit it ran and no other.

``X`` and ``y`` travel once per ``Parallel`` call: every argument larger than 1 kB
becomes a Dask future, made once per call, that each worker fetches once. Instead of
``client.scatter`` (whose data is gone for good if the worker holding it dies or
restarts), such a future is a small task that returns the data, so Dask can
recompute it after a worker loss or a recycle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import dask.config
from dask.sizeof import sizeof
from distributed import KilledWorker
from joblib import ParallelBackendBase

from .._compat.joblib import batch_tasks, patch_pre_dispatch
from .._compat.sklearn import (
    drop_unused_callback_context,
    failed_fit_result,
    fit_error,
    fit_score,
    fit_task,
)
from ..protocol import KERAS_FIT, TrainingPaths
from ..store.checkpoints import CheckpointStore
from ..store.journal import FitKeys, Journal
from ..store.records import FitRecord
from ..version import __version__
from ..worker.fit import Carry, FitOutcome, IsolatedBatch, identify
from .admission import Admission, Held, Sent
from .deaths import DeathWatch, WorkerDeath, describe
from .placement import Placement, candidate_key
from .recycling import Recycler

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


#: arguments larger than this (bytes) travel as a Dask future made once per call
SHIPPED_ABOVE = 1_000
#: Errors of a Dask future that mean "the fit never returned", not "the fit raised".
WORKER_LOST = (KilledWorker, asyncio.CancelledError, concurrent.futures.CancelledError)
WORKER_LOST_PREFIX = "worker lost"
#: a future cancelled (by sweep when the search stops, or by Dask)
CANCELLED = (asyncio.CancelledError, concurrent.futures.CancelledError)
#: fits dispatched ahead per worker thread when placing by kind (joblib's default: 2);
#: measured in docs/performance.md ("Fits placed by kind")
PLACEMENT_DISPATCH = 4
#: seconds between two looks at the scheduler while fits wait or placed fits run
TICK = 0.5
#: tries of one fit cut short by workers leaving without dying (retiring) before sweep
#: warns that workers may live too short for the fits (once per backend)
CUTS_WARNED = 3
#: tries of one fit cut short so before it is recorded failed (workers that never live
#: long enough for it: without a bound the sweep would send it again for ever)
CUTS_FAILED = 12


class RemoteTraceback(Exception):
    """The traceback of an error raised on a worker, as text (the cause of that error)."""


class _Raise:
    """An error for joblib to raise in the driver, delivered like a result."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _lost(result: Any) -> bool:
    return str(fit_error(result) or "").startswith(WORKER_LOST_PREFIX)


def _with_remote_traceback(exc: BaseException) -> BaseException:
    """``exc`` with its worker's traceback kept as its cause (joblib drops tracebacks)."""
    if exc.__traceback__ is not None and exc.__cause__ is None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        exc.__cause__ = RemoteTraceback(f"\n\"\"\"\n{text}\"\"\"")
    return exc


class SweepBackend(ParallelBackendBase):
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
        :mod:`keras_sweep.worker.training.fastpath`. Default: Keras' fit as it comes.
    checkpoints : CheckpointStore, optional
        End states of fits whose candidates set their epochs, so that a longer
        fit of the same candidate and fold continues from one
        (:mod:`keras_sweep.store.checkpoints`); None: every fit trains from scratch.
    place_by_kind : bool
        Send a fit to a free worker that holds its kind of model's trace, when one of
        the fits held back has one (:mod:`keras_sweep.driver.placement`); else the oldest.
    max_retries : int, optional
        Runs of a fit that may die with their worker before it is recorded failed,
        less one (default: Dask's ``distributed.scheduler.allowed-failures``).
    **submit_kwargs
        Given to every ``client.submit`` (``workers=``: the caller's own
        restriction; placement is then off).
    """

    supports_retrieve_callback = True
    default_n_jobs = -1

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
        super().__init__()
        self.client = client
        #: workers the scheduler had when fits were last admitted (the progress line)
        self.workers_up = 0
        self.submit_kwargs = submit_kwargs
        self.recycler = Recycler(client, workers)
        self.seed = seed
        self.on_submit = on_submit
        self.on_fit = on_fit
        self.on_start = on_start
        self.journal = journal
        self.paths = paths
        self.checkpoints = checkpoints
        retries = int(dask.config.get("distributed.scheduler.allowed-failures")
                      if max_retries is None else max_retries)
        #: which free worker runs which fit (None: wherever Dask sends them, as where
        #: the caller restricts the fits to workers of its own)
        self.placement = (Placement(by_kind=place_by_kind) if "workers" not in submit_kwargs
                          else None)
        #: the fits held back and those out on the cluster
        self.admission = Admission(self.placement, retries)
        #: the search was stopped (Ctrl-C, an error): cancellations are not worker deaths
        self.stopping = False
        #: search rounds begun in this session (FitRecord.round)
        self.round = 0
        self.keys = FitKeys(seed, __version__)
        #: why workers died, per fit (events of the scheduler and the nannies)
        self.deaths = DeathWatch(client)
        #: per Dask task key of a fit out: its future, joblib's (result future,
        #: callback), and its fits' keyword arguments and journal keys
        self._out: dict[str, tuple[Any, Any, Any, list[dict[str, Any]], list[str | None]]] = {}
        #: per argument shipped in this ``Parallel`` call (by id): it and its future
        self._shipped: dict[int, tuple[Any, Any]] = {}
        #: sizes in bytes of the arguments shipped as shared data (X, y, folds)
        self.data_sent: list[int] = []
        self._ticking = False
        #: the warning that fits keep being cut short by retiring workers was given
        self._warned_cuts = False

    @property
    def max_retries(self) -> int:
        """Runs of a fit that may die with their worker, less one."""
        return self.admission.max_retries

    # -- joblib's backend protocol -----------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The cluster's threads, and at least 2: with 1, joblib would run the fits in
        the driver process itself (its sequential shortcut), outside the workers."""
        return max(2, sum(int(n) for n in self.client.nthreads().values()))

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_args: Any) -> int:
        """joblib's set-up of a ``Parallel`` call; with placement, a wider dispatch window.

        joblib and scikit-learn send ``2 * n_jobs`` fits ahead by default: with every
        thread busy, the next free worker could choose among only as many fits as there
        are threads. Where that default is left as it is, sweep takes
        ``PLACEMENT_DISPATCH * n_jobs`` ahead (held in the driver, not sent), so a free
        worker finds a fit of a kind it holds more often (:mod:`keras_sweep.driver.placement`).
        """
        self.parallel = parallel
        if self.placement is not None and self.placement.by_kind and parallel is not None:
            patch_pre_dispatch(parallel, f"{PLACEMENT_DISPATCH}*n_jobs")
        return self.effective_n_jobs(n_jobs)

    def compute_batch_size(self) -> int:
        """One fit per task: fits are long, and a lost task then costs one fit."""
        return 1

    def start_call(self) -> None:
        """A new search begins (joblib calls this): an earlier one's stop is forgotten."""
        self.stopping = False
        self._shipped.clear()
        self.admission.start(len(self._out))
        if self.on_start is not None:
            self.on_start()

    def stop_call(self) -> None:
        """The ``Parallel`` call ended: its shipped arguments are let go."""
        self._shipped.clear()

    def submit(self, func: Any, callback: Any = None) -> concurrent.futures.Future:
        """Take one batch from joblib; its result reaches ``callback``."""
        items = batch_tasks(func)
        for _, _, kwargs in items:
            task = fit_task(kwargs)
            if task.candidate == 0 and task.split == 0:
                self.round += 1  # a search's next round: its fits all came back
        keys = [self.keys.key(a, k) for _, a, k in items] if self.journal is not None else []
        cf_future: concurrent.futures.Future = concurrent.futures.Future()
        stored = self._stored(keys)
        if stored is not None:
            records = [self._resumed(k, kw) for (_, _, kw), k in zip(items, keys, strict=True)]
            self.client.loop.add_callback(
                self._resolve, cf_future, callback, FitOutcome(stored, records))
            return cf_future
        estimator = items[0][1][0] if items and items[0][1] else None
        candidate = candidate_key(estimator, fit_task(items[0][2]).params if items else None)
        held = Held(func, callback, cf_future, keys, candidate)
        self.client.loop.add_callback(self._hold, held)
        return cf_future

    def retrieve_result_callback(self, out: Any) -> Any:
        """What joblib's callback gets: the fits' results (each fit journaled and
        reported first), or the error to raise."""
        if isinstance(out, _Raise):
            raise out.error
        if not isinstance(out, FitOutcome):
            return out
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

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel every fit still running or held (joblib will not collect them).

        joblib calls this when the search raises (``error_score="raise"``, Ctrl-C):
        without it the cluster would go on running the fits.
        """
        self.stopping = True
        self.admission.clear()
        futures = [future for future, *_ in self._out.values()]
        self._out.clear()
        if futures:
            self.client.loop.add_callback(self.client.cancel, futures, asynchronous=True)

    # -- resume from the journal ---------------------------------------------------------

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

    # -- held back, admitted, sent (on the client's event loop) ---------------------------

    async def _hold(self, held: Held) -> None:
        """Hold one fit back until a worker thread is free, then admit what can go."""
        self.admission.hold(held)
        await self._admit()

    async def _admit(self) -> None:
        """Ask the scheduler which threads are free; send held fits there
        (:meth:`Admission.admit`), and take back placed fits whose worker left."""
        if self.stopping or not self.admission.wants_scheduler():
            return  # nothing held back or to watch: no need to ask the scheduler
        processing = None
        if self.placement is None:
            nthreads = await self.client.nthreads(asynchronous=True)
        else:
            nthreads, processing = await asyncio.gather(
                self.client.nthreads(asynchronous=True), self.client.scheduler.processing())
            self._rescue(set(nthreads))
        self.workers_up = len(nthreads)
        if not self.stopping:
            for sent in self.admission.admit(nthreads, processing):
                self._send(sent)
        if self.admission.wants_scheduler() and not self.stopping:
            self._tick()  # workers that join or free up meanwhile get fits too

    def _tick(self) -> None:
        """Admit again in :data:`TICK` seconds (once, however often asked)."""
        if self._ticking:
            return
        self._ticking = True

        async def tick() -> None:
            self._ticking = False
            await self._admit()

        self.client.loop.call_later(TICK, lambda: self.client.loop.add_callback(tick))

    def _send(self, sent: Sent) -> None:
        """Send one held fit to the cluster, to ``sent.worker`` only if chosen.

        The restriction is strict: Dask never moves the fit to another worker (which
        could be busy: an innocent fit there would lose a run if this one killed that
        worker too). If the worker leaves, :meth:`_rescue` takes the fit back.
        """
        if self.stopping:
            self.admission.dropped(sent)
            return  # the search stopped since: dropped like the fits still held back
        held = sent.held
        items = batch_tasks(held.func)
        tasks = [(f, self._ship(args), drop_unused_callback_context(self._ship(kwargs)))
                 for f, args, kwargs in items]
        if self.on_submit is not None:
            for task in tasks:
                self.on_submit(identify(FitRecord(round=self.round), task[2]))
        name = getattr(items[0][0], "__name__", "task") if items else "task"
        batch = IsolatedBatch(name, self.seed, held.keys, self.paths, self._carries(items))
        where = {"workers": [sent.worker], "allow_other_workers": False} if sent.worker else {}
        future = self.client.submit(batch, tasks=tasks, key=f"sweep-{batch!r}-{uuid4().hex}",
                                    **self.submit_kwargs, **where)
        key = str(future.key)
        self._out[key] = (future, held.cf_future, held.callback,
                          [kwargs for _, _, kwargs in items], held.keys)
        self.admission.sent(key, sent)
        self._watch(future)
        if sent.worker is not None:
            self._tick()  # watched until it is back: its worker may leave (_rescue)

    def _ship(self, values: Any) -> Any:
        """``values`` (a list or a dict) with each argument larger than 1 kB replaced by
        its Dask future, made once per ``Parallel`` call (:func:`data_future`)."""
        if isinstance(values, dict):
            return dict(zip(values, self._ship(list(values.values())), strict=True))
        out = []
        for value in values:
            shipped = self._shipped.get(id(value))
            if shipped is None and sizeof(value) > SHIPPED_ABOVE:
                shipped = self._shipped[id(value)] = (value, data_future(self.client, value))
                self.data_sent.append(int(sizeof(value)))
            out.append(value if shipped is None else shipped[1])
        return out

    def _carries(self, items: list[Any]) -> list[Carry | None]:
        """Per fit, its lineage, epochs and the state of a shorter fit of that lineage
        (:mod:`keras_sweep.store.checkpoints`); None for fits that set no epochs."""
        if self.checkpoints is None or not (self.paths.compiled_loop
                                            and self.paths.continue_training):
            return []  # (unseeded fits are told apart in the worker, which seeds them)
        carries: list[Carry | None] = []
        for _, args, kwargs in items:
            found = self.keys.lineage(args, kwargs)
            carries.append(None if found is None else
                           (*found, self.checkpoints.before(*found)))
        return carries

    # -- workers that leave -----------------------------------------------------------

    def _rescue(self, present: set[str]) -> None:
        """Take back the placed fits whose worker left the cluster (died, recycled).

        A placed fit is restricted to its worker, so Dask cannot move it: it would wait
        for that worker for ever. Left to Dask, a dead worker's fit would go to a worker
        busy with another fit, and if it kills that worker too, the other fit would lose
        a run (Dask counts a death against every fit its worker holds). sweep instead
        counts the death against the fit (:class:`~keras_sweep.driver.deaths.DeathWatch`)
        and sends it again when a thread is free, or records it failed after
        ``max_retries``.
        """
        def unfinished(key: str) -> bool:
            return key in self._out and self._out[key][0].status in ("pending", "lost")

        for key, sent in self.admission.departed(present, self.deaths.departed, unfinished):
            self.client.loop.add_callback(self._retry, key, sent, self._out.pop(key))

    async def _retry(self, key: str, sent: Sent, out: Any) -> None:
        """A fit taken back by :meth:`_rescue`: held again, or failed."""
        future, cf_future, callback, kwargs_list, keys = out
        await self.client.cancel([future], asynchronous=True)  # it would wait for ever
        deaths = await self.deaths.settled(key)
        if not deaths and sent.held.cut + 1 >= CUTS_FAILED and not self.stopping:
            self._resolve(cf_future, callback, self._lost_outcome(
                kwargs_list, keys, [d.as_dict() for d in sent.held.lost], None,
                reason=f"{WORKER_LOST_PREFIX}: cut short {CUTS_FAILED} times by workers "
                "leaving without dying (their lifetime ended, or they closed while "
                "starting). Fix: raise cluster.walltime (or lower "
                "cluster.lifetime_margin), or make the fits shorter"))
            return
        if self.admission.taken_back(sent, deaths, self.stopping):
            if not self.stopping:
                logger.info("sweep: a fit's worker left; it is sent again (%d death(s))",
                            len(sent.held.lost))
                sent.held.cut += 0 if deaths else 1
                if sent.held.cut == CUTS_WARNED and not self._warned_cuts:
                    self._warned_cuts = True
                    logger.warning(
                        "sweep: a fit was cut short %d times by workers leaving without "
                        "dying (at the end of their lifetime, cluster.walltime less "
                        "cluster.lifetime_margin, or while starting): workers may live too "
                        "short for the fits, their own start included.\n  Fix: raise "
                        "cluster.walltime (or lower cluster.lifetime_margin), or make the "
                        "fits shorter; the workers' logs (cluster.log_directory) say more.",
                        CUTS_WARNED)
                await self._admit()
            return
        self._resolve(cf_future, callback, self._lost_outcome(
            kwargs_list, keys, [d.as_dict() for d in sent.held.lost], None))

    # -- results ---------------------------------------------------------------------

    def _watch(self, future: Any) -> None:
        """Deliver ``future``'s result once it is done (called again if it is lost)."""
        future.add_done_callback(lambda f: self.client.loop.add_callback(self._fetch, f))

    async def _fetch(self, future: Any) -> None:
        """Gather one finished fit. Unlike ``as_completed``, this survives a result
        lost with its worker before it was fetched: Dask recomputes it and we
        wait for it again."""
        if str(future.key) not in self._out:
            return
        try:
            result = await self.client.gather(future, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - sorted below
            if future.status in ("pending", "lost") and not isinstance(exc, WORKER_LOST):
                self._watch(future)
                return
            if isinstance(exc, KilledWorker) and not self.stopping:
                await self.deaths.settled(str(future.key))  # each death with its reason
            self._deliver(future, exc)
            return
        self._deliver(future, result)

    def _deliver(self, future: Any, result: Any) -> None:
        """Hand one fit's result (or the error its task raised) to joblib's callback."""
        key = str(future.key)
        out = self._out.pop(key, None)
        if out is None:  # aborted meanwhile
            return
        _, cf_future, callback, kwargs_list, keys = out
        sent = self.admission.back(
            key, result.records if isinstance(result, FitOutcome) else ())
        self.client.loop.add_callback(self._admit)
        failed = isinstance(result, BaseException)
        if failed and self.stopping and isinstance(result, CANCELLED):
            return  # cancelled because the search stopped: nobody died, nobody waits
        earlier = sent.held.lost if sent is not None else []
        lost = [d.as_dict() for d in earlier + self.deaths.deaths(key)]
        if not failed:
            if lost and isinstance(result, FitOutcome):
                for record in result.records:
                    record.lost_runs = lost
            try:
                self._resolve(cf_future, callback, result)
            except Exception:  # never let one bad result stop the others
                logger.exception("sweep: could not deliver the result of %s", key)
            return
        try:
            delivered: Any = self._failure_outcome(result, kwargs_list, keys, lost)
        except BaseException as error:  # error_score="raise", or not a worker loss
            delivered = _Raise(_with_remote_traceback(error))  # joblib hears via the callback
        self._resolve(cf_future, callback, delivered)

    def _failure_outcome(self, exc: BaseException, kwargs_list: list[dict[str, Any]],
                         keys: list[str | None], lost: list[dict[str, Any]]) -> Any:
        if isinstance(exc, ImportError):
            from ..exceptions import WorkerImportError

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
                      lost: list[dict[str, Any]], exc: BaseException | None,
                      reason: str | None = None) -> FitOutcome:
        """The outcome of fits whose workers died (or left) each time they ran them."""
        if reason is None and lost:
            reason = (f"{WORKER_LOST_PREFIX}: its worker died each of the {len(lost)} time(s) "
                      f"it ran (max_retries {len(lost) - 1}): "
                      + describe([WorkerDeath(**d) for d in lost]))
        elif reason is None:
            reason = (f"{WORKER_LOST_PREFIX}: {exc!r}. The fit was retried on other workers "
                      "and each time its worker died (no reason was reported).")
        logger.warning("sweep: %s", reason)
        keys = keys or [None] * len(kwargs_list)
        records = [identify(FitRecord(key=key, worker_lost=True, ended=time.time(),
                                      lost_runs=lost or None), kw)
                   for kw, key in zip(kwargs_list, keys, strict=False)]
        return FitOutcome([failed_fit_result(kw, reason) for kw in kwargs_list], records)
