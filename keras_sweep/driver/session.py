"""The user's entry point: a context manager around an unchanged ``grid.fit``.

>>> with sweep.cluster("local", workers=2) as session:   # doctest: +SKIP
...     grid.fit(X, y)

Inside the block, a Dask cluster and ``Client`` are up, TensorFlow is imported
and pinned in every worker, and joblib's default backend is sweep's Dask backend,
so ``n_jobs=-1`` means every worker of the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import joblib
from distributed import Client

from .. import clusters
from .._compat.distributed import patch_lost_worker_judgement
from ..clusters.expiry import ExpiryWatch
from ..config import Settings, resolve
from ..exceptions import ClusterError
from ..report.tracking import SearchTracking, TrackingConfig, check_installed
from ..store.checkpoints import CheckpointStore
from ..store.journal import Journal
from ..store.records import FitRecord
from ..worker.seeding import op_determinism
from ..worker.setup import ExitReporter, WorkerSetup, worker_report
from ..worker.training.fastpath import driver_fits
from .backend import SweepBackend
from .progress import FitMonitor
from .refit import refit_on_worker, search_refits_on_workers

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """A running sweep cluster: its client, its backend and the fits seen so far."""

    client: Client
    cluster: Any
    backend: SweepBackend
    monitor: FitMonitor
    settings: Settings
    journal: Journal | None = None

    @property
    def backend_name(self) -> str:
        """Name of the cluster backend (``"local"``, ``"slurm"``, ...)."""
        return self.settings.backend

    @property
    def fits(self) -> list[FitRecord]:
        """One record per finished fit (worker, pid, seconds, memory, error)."""
        return self.monitor.records

    @property
    def dashboard_link(self) -> str | None:
        """Address of the Dask dashboard, if it runs (needs ``bokeh``)."""
        try:
            return str(self.client.dashboard_link)
        except Exception:
            return None

    def refit(self, search: Any, X: Any, y: Any, **fit_params: Any) -> FitRecord:
        """Refit ``search``'s best candidate on all rows on a worker (isolated, seeded).

        Use with ``GridSearchCV(..., refit=False)``: afterwards the search has
        ``best_estimator_`` and predicts as if refitted by scikit-learn. See
        :func:`keras_sweep.driver.refit.refit_on_worker`.
        """
        return refit_on_worker(self, search, X, y, **fit_params)

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        """Per worker: pid, thread variables, thread counts TensorFlow reports."""
        return dict(self.client.run(worker_report))


def _worker_setup(settings: Settings, seed: int | None) -> WorkerSetup:
    return WorkerSetup(
        threads=settings.threads_per_worker,
        recycle_after_fits=settings.recycle_after_fits,
        recycle_above_memory=settings.recycle_above_memory,
        preload_tensorflow=settings.preload_tensorflow,
        deterministic=op_determinism(seed, settings.deterministic),
        freeze_gc=settings.freeze_gc,
        full_gc_every=settings.full_gc_every,
        purge_custom_gradients=settings.purge_custom_gradients,
        keep_kernels=settings.keep_kernels,
        canary=settings.canary and settings.fast_path,
    )


@contextlib.contextmanager
def cluster(
    backend: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    seed: int | None = None,
    recycle_after_fits: int | None = None,
    recycle_above_memory: str | int | None = None,
    keras_backend: str | None = None,
    progress: bool = False,
    journal: str | Path | Journal | None = None,
    max_retries: int | None = None,
    fast_path: bool | None = None,
    compiled_loop: bool | None = None,
    xla: bool | None = None,
    fail_on_nan: bool | None = None,
    mlflow: str | None = None,
    mlflow_experiment: str = "sweep",
    name: str | None = None,
    **backend_options: Any,
) -> Iterator[Session]:
    """Run every joblib-parallel fit inside the block on an isolated Dask cluster.

    Every setting left out (``None``) comes from the Dask configuration
    (``sweep.*``: ``~/.config/dask/*.yaml``, ``DASK_SWEEP__...`` variables),
    else from sweep's packaged defaults; see :mod:`keras_sweep.config`.

    Parameters
    ----------
    backend : str, optional
        Cluster backend by name: ``"local"`` (default), ``"attach"``, ``"slurm"``,
        ``"ssh"`` or ``"ec2"``.
    workers : int, optional
        Worker processes; default one per CPU core.
    threads_per_worker : int, optional
        Threads per worker (default 1); TensorFlow, OpenMP and BLAS get this many.
    seed : int, optional
        Sweep seed. Each fit is seeded from (seed, CV fold): every candidate in a
        fold starts from the same random state.
    recycle_after_fits, recycle_above_memory : optional
        Restart a worker gracefully after this many fits, or once its resident
        memory exceeds this (e.g. ``"2 GiB"``). Finished fits are never lost.
    keras_backend : str, optional
        ``KERAS_BACKEND`` of the workers (default ``"tensorflow"``).
    progress : bool
        Draw a progress bar over fits on stderr.
    journal : path or Journal, optional
        SQLite journal of finished fits. Each fit is committed as soon as it
        returns; fits already in the journal (same estimator, data, fold, seed)
        are not run again, so rerunning an interrupted sweep resumes it.
    max_retries : int, optional
        Times a fit whose worker died is retried elsewhere (default 2); after
        that it is recorded as failed and the sweep goes on.
    fast_path : bool, optional
        Run whole epochs per Keras execution (``steps_per_execution`` = batches
        per epoch) unless a callback needs every batch (default: on,
        ``sweep.fit.fast-path``). Same losses and scores, less overhead.
    compiled_loop : bool, optional
        On the fast path, train with sweep's compiled loop (one traced call per
        epoch) where it is exact (default: on, ``sweep.fit.compiled-loop``).
    xla : bool, optional
        XLA-compile that loop for models without random layers (default: off,
        ``sweep.fit.xla``): a step costs about a tenth, the compile 1-2 s per
        fit, and losses differ from Keras' fit in the last bits.
    fail_on_nan : bool, optional
        A loss that becomes NaN or infinite fails the fit at that epoch
        (default: on, ``sweep.fit.fail-on-nan``); off keeps Keras' behaviour.
    mlflow : str, optional
        An MLflow tracking URI: each search in the block is logged as a parent
        run with a child run per candidate (fold scores, fit times, learning
        curves), from a thread (a server that is down does not slow the fits).
        Needs ``pip install 'keras-sweep[mlflow]'``.
    mlflow_experiment : str
        The MLflow experiment's name (default ``"sweep"``).
    name : str, optional
        The sweep's name, for the resources a backend tags (EC2 instances).
    **backend_options
        Options of the backend, e.g. ``address=`` for ``"attach"``, ``hosts=``
        for ``"ssh"``, ``queue=`` for ``"slurm"``.

    Yields
    ------
    Session
        The client, the cluster, the resolved settings and the records of
        finished fits.

    Examples
    --------
    >>> with sweep.cluster("local", workers=2, seed=7):   # doctest: +SKIP
    ...     GridSearchCV(model, grid, cv=3, n_jobs=-1).fit(X, y)
    """
    settings = resolve(
        backend=backend, workers=workers, threads_per_worker=threads_per_worker,
        recycle_after_fits=recycle_after_fits, recycle_above_memory=recycle_above_memory,
        keras_backend=keras_backend, max_retries=max_retries, fast_path=fast_path,
        compiled_loop=compiled_loop, xla=xla, fail_on_nan=fail_on_nan, name=name,
        **backend_options)
    tracking = None
    if mlflow is not None:
        tracking = TrackingConfig(mlflow, mlflow_experiment)
        check_installed()  # before any cluster starts
    # a journal that is not one stops the sweep before any cluster starts
    store = Journal(journal) if isinstance(journal, (str, Path)) else journal
    try:
        started = clusters.start(settings)
    except BaseException:
        if store is not None and store is not journal:
            store.close()
        raise
    client = None
    watch = ExpiryWatch(started, settings.expiry_margin)
    try:
        with dask.config.set(started.config):  # in force until the cluster is closed
            try:
                client = _connect(started, settings)
                watch.start()
                try:
                    yield from _session(started, settings, client, store, seed, progress,
                                        tracking)
                except KeyboardInterrupt:
                    if watch.fired:
                        raise watch.error() from None
                    raise
            finally:
                watch.cancel()
                _close(started, client, store if store is not journal else None)
    finally:
        if started.cleanup is not None:
            started.cleanup()


def _session(started: clusters.Started, settings: Settings, client: Client,
             store: Journal | None, seed: int | None, progress: bool,
             tracking: TrackingConfig | None = None) -> Iterator[Session]:
    """Set the workers up, make joblib use sweep's backend, yield the session."""
    # a worker recycled twice within Dask's lost-worker timeout is not lost
    patch_lost_worker_judgement(started.cluster)
    _register(client, _worker_setup(settings, seed))
    _register(client, ExitReporter())  # nannies report how their worker exited
    try:  # one round trip: the canary's outcome and the CPU of every worker
        reports = client.run(worker_report)
    except OSError:  # a worker went away meanwhile: its fits will say what it had
        reports = {}
    _say_canary(reports)
    monitor = FitMonitor(show=progress)
    if seed is not None:
        cpus = CpuKinds({worker: report["cpu"] for worker, report in reports.items()
                         if report.get("cpu")}, refuse=not settings.allow_mixed_cpus)
        monitor.listeners.append(cpus.on_fit)
    searches = None
    if tracking is not None:
        searches = SearchTracking(tracking, store.path.parent if store is not None else None)
        monitor.listeners.append(searches.on_fit)
    # end states of fits that set their epochs, beside the journal's fits
    checkpoints = CheckpointStore(store.path if store is not None else None)
    backend = SweepBackend(client, seed=seed, on_submit=monitor.on_submit,
                           on_fit=monitor.on_fit, workers=started.max_workers,
                           journal=store, paths=settings.paths, checkpoints=checkpoints,
                           on_start=searches.start if searches is not None else None,
                           place_by_kind=settings.place_by_kind,
                           max_retries=settings.max_retries)
    backend.deaths.explain_job = started.explain_job  # why a batch job ended, if asked
    asked = started.max_workers or started.expected_workers or settings.workers or 1
    monitor.workers = lambda: (backend.workers_up, asked)
    session = Session(client, started.cluster, backend, monitor, settings, store)
    # a search's refit (GridSearchCV(refit=True)) runs on a worker; fits the user
    # leaves in the driver take sweep's fast path there
    with joblib.parallel_config(backend=backend), driver_fits(settings.paths), \
            search_refits_on_workers(session):
        try:
            yield session
        except BaseException:
            backend.stopping = True  # what is cancelled from now on was not lost
            raise
        finally:
            monitor.close()
            checkpoints.close()
            backend.deaths.close()  # before the client closes: no event to a closed client
            if searches is not None:
                searches.finish()
    # a normal exit lets a restart asked for by the last fits finish (not Ctrl-C)
    backend.recycler.settle(settings.startup_timeout)


def _say_canary(reports: dict[str, dict[str, Any]]) -> None:
    """One warning for the paths the workers' canary switched off (fits.csv says it per
    fit too, in ``fallback``); ``reports``: :func:`worker_report` of each worker."""
    failed: dict[str, str] = {}
    for report in reports.values():
        failed.update((report.get("canary") or {}).get("failed") or {})
    if failed:
        logger.warning("sweep: the canary switched off %s on the workers (their fits take "
                       "the next path down): %s", ", ".join(sorted(failed)),
                       "; ".join(failed[k] for k in sorted(failed)))


class CpuKinds:
    """The CPU kinds (:func:`~keras_sweep.protocol.cpu_kind`) a seeded sweep runs on:
    more than one instruction set, and a fold's last bits may depend on its host."""

    def __init__(self, kinds: dict[str, str], refuse: bool = False) -> None:
        self.seen: dict[str, str] = {}  # instruction set -> a worker of it
        for worker, kind in sorted(kinds.items()):
            self.seen.setdefault(kind.split(" (")[0], f"{kind} at {worker}")
        self.warned = False
        if len(self.seen) > 1:
            if refuse:
                raise ClusterError(
                    f"the workers' CPUs differ ({self._listed()}): a seeded sweep's folds "
                    "could differ in their last bits with the host that ran them.\n"
                    "  Fix: run on hosts of one CPU type (a SLURM constraint, one instance "
                    "type), or set sweep.fit.allow-mixed-cpus: true to accept it.")
            self._warn()

    def _listed(self) -> str:
        return "; ".join(self.seen.values())

    def _warn(self) -> None:
        self.warned = True
        logger.warning("sweep: workers with different CPUs run this seeded sweep (%s): a "
                       "fold's last bits may depend on which of them ran it (fits.csv, "
                       "column cpu)", self._listed())

    def on_fit(self, record: FitRecord) -> None:
        """A worker of another kind that joined later is noticed at its first fit."""
        if record.cpu is None or record.resumed:
            return
        isa = record.cpu.split(" (")[0]
        if isa not in self.seen:
            self.seen[isa] = f"{record.cpu} at {record.worker}"
            if not self.warned:
                self._warn()


#: tries to register a plugin while workers die under it
REGISTER_ATTEMPTS = 3


def _register(client: Client, plugin: Any) -> None:
    """Register ``plugin`` on every worker (or nanny), now and later; tried again when a
    worker dies during the registration.

    The scheduler keeps the plugin before it sends it to the workers, so a worker
    that replaces the lost one gets it; the call itself fails ("CommClosedError")
    when one of the workers it is sent to dies meanwhile (a worker killed while
    starting). Raises :class:`ClusterError` when every try failed so.
    """
    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            with _quiet_broadcasts():
                client.register_plugin(plugin)
            return
        except OSError as exc:  # distributed's CommClosedError is one
            if attempt == REGISTER_ATTEMPTS:
                raise ClusterError(
                    f"could not set the workers up: a worker went away during each of "
                    f"{REGISTER_ATTEMPTS} tries ({exc}).\n  Fix: read the worker log above "
                    "(workers killed while starting: the out-of-memory killer, a batch "
                    "system); then run the sweep again: its journal keeps finished fits."
                ) from exc
            logger.warning("sweep: a worker went away while sweep set the workers up (%s); "
                           "trying again", exc)
            time.sleep(1.0)


class _BroadcastFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("broadcast to ")


@contextlib.contextmanager
def _quiet_broadcasts() -> Iterator[None]:
    """Without the (local) scheduler's ERROR line "broadcast to ... failed" for a worker
    that died during a registration: :func:`_register` says so once, in a warning."""
    log, quiet = logging.getLogger("distributed.scheduler"), _BroadcastFailures()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def _close(started: clusters.Started, client: Client | None, store: Journal | None) -> None:
    """Close what the session opened: the journal, the client, the cluster."""
    if store is not None:
        store.close()
    if client is not None:
        client.close()
    if started.cluster is not None:
        started.cluster.close()


def _connect(started: clusters.Started, settings: Settings) -> Client:
    timeout = settings.startup_timeout
    try:
        client = Client(started.address, security=started.security, timeout=timeout,
                        set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {started.address}: {exc}\n"
            "  Fix: check the address and that the scheduler is running."
        ) from exc
    expected = started.expected_workers
    if expected is None:
        expected = settings.workers or 1
    asked = started.max_workers or expected
    if settings.min_workers is not None and settings.min_workers < expected:
        expected = settings.min_workers
        logger.warning("sweep: the sweep starts once %d of %d worker(s) are up; the others "
                       "join as they arrive", expected, asked)
    try:
        client.wait_for_workers(expected, timeout=timeout)
    except TimeoutError as exc:
        arrived = len(client.scheduler_info()["workers"])
        client.close()
        raise ClusterError(
            f"only {arrived} of {expected} worker(s) of the '{settings.backend}' cluster "
            f"arrived within {timeout:.0f} s.{_diagnosis(started)}\n"
            "  Fix: raise sweep.cluster.startup-timeout (e.g. DASK_SWEEP__CLUSTER__"
            "STARTUP_TIMEOUT=600 for a busy queue) or look at the worker logs above."
        ) from exc
    if started.check_versions is not None:
        from ..clusters.versions import check_workers

        try:
            check_workers(client, started.check_versions)
        except BaseException:
            client.close()
            raise
    return client


def _diagnosis(started: clusters.Started) -> str:
    if started.diagnose is None:
        return ""
    try:
        return "\n" + started.diagnose()
    except Exception as why:  # a diagnosis must not hide the error
        return f"\n  (no diagnosis: {why})"
