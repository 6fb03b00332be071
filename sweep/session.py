"""The user's entry point: a context manager around an unchanged ``grid.fit``.

>>> with sweep.cluster("local", workers=2) as session:   # doctest: +SKIP
...     grid.fit(X, y)

Inside the block, a Dask cluster and ``Client`` are up, TensorFlow is imported
and pinned in every worker, and joblib's default backend is sweep's Dask backend,
so ``n_jobs=-1`` means every worker of the cluster.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import joblib
from dask.utils import parse_bytes, parse_timedelta
from distributed import Client

from . import clusters
from ._main_guard import check_main_guard
from .backend import SweepBackend
from .config import setting
from .exceptions import ClusterError
from .isolation import TensorFlowIsolation, worker_report
from .journal import Journal
from .progress import FitMonitor


@dataclass
class Session:
    """A running sweep cluster: its client, its backend and the fits seen so far."""

    client: Client
    cluster: Any
    backend: SweepBackend
    monitor: FitMonitor
    backend_name: str
    journal: Journal | None = None

    @property
    def fits(self) -> list[dict[str, Any]]:
        """One record per finished fit (worker, pid, seconds, memory, error)."""
        return self.monitor.records

    @property
    def dashboard_link(self) -> str | None:
        """Address of the Dask dashboard, if it runs (needs ``bokeh``)."""
        try:
            return str(self.client.dashboard_link)
        except Exception:
            return None

    def refit(self, search: Any, X: Any, y: Any, **fit_params: Any) -> dict[str, Any]:
        """Refit ``search``'s best candidate on all rows on a worker (isolated, seeded).

        Use with ``GridSearchCV(..., refit=False)``: afterwards the search has
        ``best_estimator_`` and predicts as if refitted by scikit-learn. See
        :func:`sweep.refit.refit_on_worker`.
        """
        from .refit import refit_on_worker

        facts = refit_on_worker(self, search, X, y, **fit_params)
        self.monitor.records.append(facts)
        return facts

    def worker_reports(self) -> dict[str, dict[str, Any]]:
        """Per worker: pid, thread variables, thread counts TensorFlow reports."""
        return dict(self.client.run(worker_report))


def _settings(workers: int | None, threads: int | None, keras_backend: str | None,
              max_retries: int | None, extra: dict[str, Any]) -> clusters.ClusterSettings:
    requested = setting("cluster.workers", workers)
    return clusters.ClusterSettings(
        workers=int(requested or clusters.default_workers()),
        requested_workers=int(requested) if requested else None,
        threads_per_worker=int(setting("cluster.threads-per-worker", threads)),
        keras_backend=str(setting("worker.keras-backend", keras_backend)),
        max_retries=int(setting("fit.max-retries", max_retries)),
        extra=extra,
    )


def _isolation_plugin(threads: int, after: int | None, above: Any,
                      seeded: bool) -> TensorFlowIsolation:
    after = setting("worker.recycle-after-fits", after)
    above = setting("worker.recycle-above-memory", above)
    return TensorFlowIsolation(
        threads=threads,
        recycle_after_fits=int(after) if after else None,
        recycle_above_bytes=parse_bytes(above) if isinstance(above, str) else above,
        preload_tensorflow=bool(setting("worker.preload-tensorflow")),
        # TensorFlow's op determinism refuses unseeded random ops: only with a seed
        deterministic=seeded and bool(setting("fit.deterministic")),
        freeze_gc=bool(setting("worker.freeze-gc")),
        full_gc_every=int(setting("worker.full-gc-every") or 0),
        purge_gradients=bool(setting("worker.purge-custom-gradients")),
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
    **backend_options: Any,
) -> Iterator[Session]:
    """Run every joblib-parallel fit inside the block on an isolated Dask cluster.

    Parameters
    ----------
    backend : str, optional
        Cluster backend by name: ``"local"`` (default) or ``"attach"``.
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
    **backend_options
        Passed to the backend factory, e.g. ``address=`` for ``"attach"``.

    Yields
    ------
    Session
        The client, the cluster and the records of finished fits.

    Examples
    --------
    >>> with sweep.cluster("local", workers=2, seed=7):   # doctest: +SKIP
    ...     GridSearchCV(model, grid, cv=3, n_jobs=-1).fit(X, y)
    """
    name = str(setting("cluster.backend", backend))
    settings = _settings(workers, threads_per_worker, keras_backend, max_retries,
                         backend_options)
    store = Journal(journal) if isinstance(journal, (str, Path)) else journal
    stack = contextlib.ExitStack()
    if name == "local":
        check_main_guard()
        # A LocalCluster closes the nanny of a worker that has been gone this long; a
        # recycled worker re-importing TensorFlow on a loaded machine can take longer
        # than Dask's 15 s, and its nanny (hence the worker) was then lost for good.
        grace = max(float(setting("cluster.startup-timeout")), float(parse_timedelta(
            dask.config.get("distributed.deploy.lost-worker-timeout"))))
        stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout":
                                             f"{grace}s"}))
    environ = dict(os.environ)
    try:
        started = clusters.start(name, settings)
        stack.enter_context(dask.config.set(started.config))
    except BaseException:
        stack.close()
        raise
    finally:
        _restore_environ(environ)
    client = None
    try:
        client = _connect(started, settings, name)
        client.register_plugin(
            _isolation_plugin(settings.threads_per_worker, recycle_after_fits,
                              recycle_above_memory, seeded=seed is not None)
        )
        monitor = FitMonitor(show=progress)
        sweep_backend = SweepBackend(
            client, sweep_seed=seed, on_submit=monitor.on_submit, on_fit=monitor.on_fit,
            workers=_capacity(started, settings),
            journal=store, fast_path=bool(setting("fit.fast-path", fast_path)),
        )
        with joblib.parallel_config(backend=sweep_backend):
            try:
                yield Session(client, started.cluster, sweep_backend, monitor, name, store)
            finally:
                monitor.close()
        # a normal exit lets a restart asked for by the last fits finish (not Ctrl-C)
        sweep_backend.recycler.settle(float(setting("cluster.startup-timeout")))
    finally:
        if isinstance(journal, (str, Path)) and store is not None:
            store.close()
        if client is not None:
            client.close()
        if started.cluster is not None:
            started.cluster.close()
        _restore_environ(environ)
        stack.close()


def _restore_environ(saved: dict[str, str]) -> None:
    """Undo what starting workers wrote into this process's environment.

    distributed's nanny copies its pre-spawn variables (the thread counts) into
    the parent's ``os.environ`` before spawning a worker; without this, the
    user's process (and e.g. a loky pool it starts later) would inherit them.
    """
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _capacity(started: clusters.Started, settings: clusters.ClusterSettings) -> int | None:
    """Workers the backend plans to run at most (``None``: unknown, attached)."""
    if started.max_workers is not None:
        return started.max_workers
    return settings.workers if started.cluster is not None else None


def _connect(started: clusters.Started, settings: clusters.ClusterSettings, name: str) -> Client:
    timeout = float(setting("cluster.startup-timeout"))
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
        expected = (settings.workers if started.cluster is not None
                    else settings.requested_workers or 1)
    try:
        client.wait_for_workers(expected, timeout=timeout)
    except TimeoutError as exc:
        arrived = len(client.scheduler_info()["workers"])
        client.close()
        details = ""
        if started.diagnose is not None:
            try:
                details = "\n" + started.diagnose()
            except Exception as why:  # a diagnosis must not hide the error
                details = f"\n  (no diagnosis: {why})"
        raise ClusterError(
            f"only {arrived} of {expected} worker(s) of the '{name}' cluster arrived within "
            f"{timeout:.0f} s.{details}\n"
            "  Fix: raise sweep.cluster.startup-timeout (e.g. DASK_SWEEP__CLUSTER__"
            "STARTUP_TIMEOUT=600 for a busy queue) or look at the worker logs above."
        ) from exc
    return client
