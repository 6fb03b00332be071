"""Touches of distributed's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from .registry import touch


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Worker.extensions as a place for a plugin's per-process state")
def worker_extension(worker: Any, name: str, value: Any = None) -> Any:
    """The object stored under ``name`` on a Dask worker; with ``value``, store it."""
    extensions = getattr(worker, "extensions", None)
    if extensions is None:
        return None
    if value is not None:
        extensions[name] = value
    return extensions.get(name)


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Worker.scheduler (the scheduler's rpc), Scheduler.retire_workers(close_workers, "
       "remove, stimulus_id), distributed.core.rpc and Nanny.restart(timeout, reason); "
       "Worker.periodic_callbacks['heartbeat'] and Worker.nanny, which Worker.close("
       "nanny=True) uses to close the nanny too")
async def retire_and_restart(worker: Any, reason: str, timeout: float = 120.0) -> None:
    """Retire ``worker`` (its results move elsewhere), then have its nanny restart it.

    With no other worker there is nowhere to move results (Dask recomputes them),
    and retiring anyway fails, racing the restart: only the restart is asked for.
    The nanny gets ``timeout`` seconds for the new process: its default (30 s)
    *cancels* a start that takes longer (a worker importing TensorFlow on a busy
    machine), which left the nanny without a worker.

    Retiring removes the worker from the scheduler before its process ends. A
    heartbeat sent in between is answered "missing", and the worker then closes
    itself *and its nanny* (``Worker.close(nanny=True)``): the cluster lost that
    worker for good (CI, 3 workers recycling after every fit on a loaded machine).
    So the worker stops its heartbeat and forgets its nanny first: whatever closes
    it now, the nanny stays and starts a new process.
    """
    import time

    nanny_address = worker.nanny
    heartbeat = getattr(worker, "periodic_callbacks", {}).get("heartbeat")
    if heartbeat is not None:
        heartbeat.stop()
    worker.nanny = None
    identity = await worker.scheduler.identity(n_workers=-1)
    if len(identity.get("workers", {})) > 1:
        await worker.scheduler.retire_workers(
            workers=[worker.address], close_workers=False, remove=True,
            stimulus_id=f"sweep-recycle-{time.time()}")
    worker.loop.add_callback(_restart_by_nanny, nanny_address, reason, timeout)


async def _restart_by_nanny(nanny_address: str, reason: str, timeout: float) -> None:
    from distributed.core import rpc

    # the rpc's own deadline covers the call, which lasts as long as the restart
    async with rpc(nanny_address, timeout=timeout + 30) as nanny:
        await nanny.restart(timeout=timeout, reason=f"sweep-recycle: {reason}")


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Nanny._on_worker_exit(exitcode), called (looked up on the instance) when its "
       "worker process exits; Nanny.status; Nanny.memory_manager.memory_limit")
def patch_nanny_exit_report(nanny: Any, report: Callable[[int, int | None], None]) -> bool:
    """Call ``report(exitcode, memory_limit)`` whenever ``nanny``'s worker process exits
    (before the nanny unregisters it). False: this distributed has no such hook."""
    original = getattr(nanny, "_on_worker_exit", None)
    if original is None or getattr(original, "sweep_reports_exits", False):
        return False

    async def reported(exitcode: int) -> Any:
        # only an unexpected exit: a nanny closing (the cluster shutting down) has no
        # scheduler left to tell
        if getattr(getattr(nanny, "status", None), "name", "") == "running":
            try:
                manager = getattr(nanny, "memory_manager", None)
                report(exitcode, getattr(manager, "memory_limit", None))
            except Exception:  # a report must never stop the nanny's own handling
                pass
        return await original(exitcode)

    reported.sweep_reports_exits = True  # type: ignore[attr-defined]
    nanny._on_worker_exit = reported
    return True


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "SpecCluster._update_worker_status(op, msg), called for each worker the scheduler "
       "adds ('add', {'workers': {address: info}}) or removes ('remove', address); on a "
       "removal SpecCluster starts a timer (distributed.deploy.lost-worker-timeout) that "
       "closes and forgets cluster.workers[name] when no worker of that name is "
       "registered as it fires; Cluster._update_worker_status keeps scheduler_info; "
       "SpecCluster._futures holds the closes it awaits")
def patch_lost_worker_judgement(cluster: Any) -> bool:
    """Make ``cluster`` close a worker's nanny (or job) only when that worker has not
    come back since its *last* removal. False: not a ``SpecCluster``, or done already.

    Dask's timer asks, ``lost-worker-timeout`` after each removal, whether a worker of
    that name is registered *at that moment*. A worker recycled (or killed and
    restarted) twice within the timeout is away again when the first removal's timer
    fires: Dask closed its nanny, and the cluster had one worker fewer for good
    (``scripts/soak_10k.py``: 2 of 6 runs of 10,000 fits on 2 workers ended on one,
    ~20 recycles each, the local timeout at 120 s). Here each removal's timer also
    asks whether a worker of that name has registered since; if one has, the worker
    was not lost.
    """
    import asyncio

    import dask
    from dask.utils import parse_timedelta
    from distributed.deploy.cluster import Cluster
    from distributed.deploy.spec import SpecCluster

    if (not isinstance(cluster, SpecCluster)
            or type(cluster)._update_worker_status is not SpecCluster._update_worker_status
            or getattr(cluster._update_worker_status, "sweep_last_removal", False)):
        return False  # (a subclass with its own version keeps it)

    arrivals: dict[Any, int] = {}  # worker name -> workers of that name registered so far

    def update(op: str, msg: Any) -> None:
        if op != "remove":
            for info in (msg.get("workers") or {}).values():
                name = info.get("name")
                arrivals[name] = arrivals.get(name, 0) + 1
            Cluster._update_worker_status(cluster, op, msg)
            return
        name = cluster.scheduler_info["workers"][msg]["name"]
        seen = arrivals.get(name, 0)
        Cluster._update_worker_status(cluster, op, msg)

        def judge() -> None:
            if arrivals.get(name, 0) != seen:
                return  # back since this removal: a later removal's timer decides
            registered = cluster.scheduler_info["workers"].values()
            if name in cluster.workers and not any(i.get("name") == name for i in registered):
                cluster._futures.add(asyncio.ensure_future(cluster.workers[name].close()))
                del cluster.workers[name]

        delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        asyncio.get_running_loop().call_later(delay, judge)

    update.sweep_last_removal = True  # type: ignore[attr-defined]
    cluster._update_worker_status = update  # type: ignore[method-assign]
    return True


_EXIT_LINE = re.compile(
    r"Worker process \d+ (?:was killed by signal (\d+)|exited with status (\d+))")


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "the line a nanny logs (logger distributed.nanny, INFO) when its worker process "
       "ends with a non-zero code: 'Worker process PID was killed by signal N' or "
       "'... exited with status N' (WorkerProcess.mark_stopped / _death_message)")
@contextlib.contextmanager
def worker_exits() -> Iterator[list[int]]:
    """Exit codes (negative: the signal) of the worker processes that nannies of this
    process saw end with a non-zero code inside the block; empty when none did (or
    when distributed's nanny logs below INFO here)."""
    codes: list[int] = []

    class Exits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = _EXIT_LINE.search(record.getMessage())
            if found:
                codes.append(-int(found[1]) if found[1] else int(found[2]))

    handler = Exits(logging.INFO)
    nanny = logging.getLogger("distributed.nanny")
    nanny.addHandler(handler)
    try:
        yield codes
    finally:
        nanny.removeHandler(handler)
