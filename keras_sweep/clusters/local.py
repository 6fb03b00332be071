"""The ``local`` backend: worker processes on this machine, listening on loopback.

A thin factory over :class:`distributed.LocalCluster`, with what a local sweep
needs around it:

- the ``__main__`` trap caught before any worker is spawned. Dask starts worker
  processes with multiprocessing's *spawn* method, which re-imports the user's
  script in every worker; a script that calls sweep at module level, outside
  ``if __name__ == "__main__":``, would start a cluster from inside each worker
  (multiprocessing then fails with an opaque "bootstrapping phase" error). We
  find the calling line in the script and explain the fix instead;
- this process's environment restored after the cluster is gone: the nanny
  copies its pre-spawn variables (the thread counts) into the parent's
  ``os.environ`` before spawning a worker, and the user's process (and e.g. a
  loky pool it starts later) would otherwise inherit them.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed import LocalCluster

from .._compat.distributed import worker_exits
from ..config import Settings
from ..exceptions import ClusterError, WorkersDiedError
from ..protocol import exit_reason
from . import Started, default_workers, forkserver
from .environment import nanny_config, restore_environ, settings_environment

#: starts of the local cluster tried when worker processes die while it starts
START_ATTEMPTS = 3
#: ``cluster:`` keys of this backend besides the common ones
logger = logging.getLogger(__name__)

OPTIONS = frozenset({"memory_limit", "dashboard_address", "host"})


def check(options: dict[str, Any]) -> None:
    """Nothing to check before start: LocalCluster validates its own arguments."""


def start(settings: Settings) -> Started:
    """Worker processes on this machine, listening on loopback only."""
    check_main_guard()
    environ = dict(os.environ)
    config = {**nanny_config(settings), **_lost_worker_grace(settings)}
    config["distributed.worker.multiprocessing-method"] = _start_method(settings, config)
    workers = settings.workers or default_workers()
    try:
        cluster = _start_cluster(settings, config, workers)
    finally:
        restore_environ(environ)
    return Started(cluster, cluster.scheduler_address, expected_workers=workers,
                   max_workers=workers, config=config,
                   cleanup=lambda: restore_environ(environ))


def prestart(settings: Settings) -> None:
    """Start the fork server now, so that its imports overlap the driver's own."""
    config = nanny_config(settings)
    _start_method(settings, config)


def _start_cluster(settings: Settings, config: dict[str, Any], workers: int) -> LocalCluster:
    """A :class:`LocalCluster` of ``workers``; started again (up to :data:`START_ATTEMPTS`
    times) when a worker process dies while it starts (the out-of-memory killer while
    TensorFlow imports, a kill): Dask then fails the whole start ("Nanny failed to
    start"). Raises :class:`WorkersDiedError` (exit 1) when every attempt lost one,
    :class:`ClusterError` for anything else."""
    deaths: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        with worker_exits() as exits:
            try:
                with dask.config.set(config):
                    return LocalCluster(
                        n_workers=workers,
                        threads_per_worker=settings.threads_per_worker,
                        processes=True,
                        host=settings.option("host", settings.host),
                        dashboard_address=settings.option("dashboard_address",
                                                          settings.dashboard_address),
                        memory_limit=settings.option("memory_limit", settings.memory_limit),
                        silence_logs=logging.ERROR,
                        env=settings_environment(settings),
                    )
            except Exception as exc:  # translate at the edge
                if not exits:  # no worker died: the start itself is the problem
                    raise ClusterError(
                        f"could not start a local Dask cluster with {workers} worker(s): "
                        f"{exc}\n  Fix: check that loopback ports can be opened (sweep."
                        "cluster.host) and the worker log above."
                    ) from exc
                deaths.append(exit_reason(exits[0]))
                logger.warning("sweep: a worker process %s while the local cluster started "
                               "(attempt %d of %d)%s", deaths[-1], attempt, START_ATTEMPTS,
                               "; starting it again" if attempt < START_ATTEMPTS else "")
    raise WorkersDiedError(
        f"could not start a local Dask cluster with {workers} worker(s): a worker process "
        f"died while starting, {START_ATTEMPTS} times ({'; '.join(deaths)}).\n"
        "  Fix: if the out-of-memory killer ended them (`dmesg | tail` says so), use fewer "
        "workers (cluster: {workers: 1}) or free memory; else read the worker log above.")


def _start_method(settings: Settings, config: dict[str, Any]) -> str:
    """``forkserver`` when the workers can be forked from a server that imported
    TensorFlow once (:mod:`keras_sweep.clusters.forkserver`), else ``spawn``."""
    if not settings.fork_workers:
        return "spawn"
    # what a Nanny sets before it starts a worker: the configured pre-spawn variables
    # (this process's own values win), and a fixed hash seed unless one is given
    pre_spawn = {key: os.environ.get(key, str(value))
                 for key, value in config["distributed.nanny.pre-spawn-environ"].items()
                 if value is not None}
    if pre_spawn.get("PYTHONHASHSEED") in (None, "0"):
        pre_spawn["PYTHONHASHSEED"] = "6640"
    return forkserver.start_method(pre_spawn)


def _lost_worker_grace(settings: Settings) -> dict[str, Any]:
    """A LocalCluster closes the nanny of a worker that has been gone this long; a
    recycled worker re-importing TensorFlow on a loaded machine can take longer
    than Dask's 15 s, and its nanny (hence the worker) was then lost for good."""
    key = "distributed.deploy.lost-worker-timeout"
    grace = max(settings.startup_timeout, float(parse_timedelta(dask.config.get(key))))
    return {key: f"{grace}s"}


def _is_main_test(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)


def _guarded(tree: ast.Module, line: int) -> bool:
    """True if ``line`` sits inside a function, a class or a ``__main__`` test."""
    for node in ast.walk(tree):
        start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
        if start is None or end is None or not start <= line <= end:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return True
        if _is_main_test(node):
            return True
    return False


def check_main_guard() -> None:
    """Raise :class:`ClusterError` if the running script would start workers unguarded."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file is None or getattr(main, "__spec__", None) is not None:
        return  # interactive session, notebook or ``python -m``: nothing is re-run
    path = Path(main_file).resolve()
    frame = inspect.currentframe()
    while frame is not None:
        if Path(frame.f_code.co_filename).resolve() == path and frame.f_code.co_name == "<module>":
            break
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError):
        return
    if not _guarded(tree, line):
        raise ClusterError(
            f"{path.name}, line {line} starts a sweep cluster at the top level of the script.\n"
            "  Worker processes re-import the script, so this would start a cluster in "
            "every worker.\n"
            "  Fix: put the sweep code under a main guard:\n"
            "      if __name__ == \"__main__\":\n"
            "          with sweep.cluster(\"local\"):\n"
            "              grid.fit(X, y)"
        )
