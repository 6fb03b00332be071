"""Why a worker died, told per fit: the driver's record of worker deaths.

Dask says only that a worker went away. sweep listens to three of its events
(public ``Client.subscribe_topic``): the scheduler's ``remove-worker`` (which
worker, which tasks it was running, whether the departure was expected, e.g. a
recycle), the nanny's ``worker-restart-memory`` (it killed its worker for
passing the memory limit, with the resident memory then), and sweep's own
``sweep-worker-exit`` (the exit code the nanny saw, a signal number when
negative: :class:`~keras_sweep.worker.setup.ExitReporter`). Joined by worker address,
they give each unexpected death a reason, and each fit the deaths of its own
runs: a fit that ran on a worker when it died, not one merely queued there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from dask.utils import format_bytes

from ..protocol import EXIT_TOPIC, JOB_TOPIC, exit_reason

MEMORY_TOPIC = "worker-restart-memory"
#: the stimulus of a retirement a worker asks for itself (distributed's
#: ``Worker.close_gracefully``, at the end of its ``--lifetime``)
SELF_RETIREMENT = "worker-close-gracefully"
@dataclass(frozen=True)
class WorkerDeath:
    """One unexpected departure of a worker process."""

    worker: str
    #: when the scheduler removed it (``time.time()``)
    time: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeathWatch:
    """Collects worker deaths from the scheduler's events.

    Parameters
    ----------
    client : distributed.Client
        The sweep's client (events arrive on its event loop).
    explain_job : callable, optional
        Why a worker's batch job ended (its job id -> a reason, or None), asked of
        the batch system when a worker that announced its job vanishes without an
        exit report (:attr:`keras_sweep.clusters.Started.explain_job`).
    """

    def __init__(self, client: Any,
                 explain_job: Callable[[str], str | None] | None = None) -> None:
        self.client = client
        self.explain_job = explain_job
        self._lock = threading.Lock()
        self._removals: list[tuple[float, str, frozenset[str]]] = []
        #: every worker the scheduler removed, expected departures (recycles) included
        self._departed: set[str] = set()
        #: workers that retired themselves with nowhere to move their results
        self._retired: set[str] = set()
        self._exits: dict[str, dict[str, Any]] = {}
        self._memory: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, str] = {}
        #: why a vanished worker's job ended (None while asked, or not known)
        self._job_ends: dict[str, str | None] = {}
        self._topics = {"all": self._on_all, EXIT_TOPIC: self._on_exit,
                        MEMORY_TOPIC: self._on_memory, JOB_TOPIC: self._on_job}
        for topic, handler in self._topics.items():
            client.subscribe_topic(topic, handler)
        try:  # workers up before the watch announced their jobs already
            for event in client.get_events(JOB_TOPIC):
                self._on_job(event)
        except Exception:  # noqa: BLE001 - an asynchronous client, a closing scheduler
            pass

    def close(self) -> None:
        """Stop listening."""
        for topic in self._topics:
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:  # the client may be closing already
                pass

    def _on_all(self, event: tuple[float, Any]) -> None:
        stamp, msg = event
        if not isinstance(msg, dict):
            return
        if msg.get("action") == "retire-workers" \
                and str(msg.get("stimulus_id", "")).startswith(SELF_RETIREMENT):
            # a worker at the end of its lifetime with no other worker to take its
            # results (the last one, its replacement not yet up) closes all the same,
            # and the scheduler then removes it as unexpected: no death either
            with self._lock:
                self._retired.update(str(w) for w in msg.get("could-not-retire") or ())
            return
        if not (msg.get("action") == "remove-worker" and msg.get("worker")):
            return
        worker = str(msg["worker"])
        with self._lock:
            self._departed.add(worker)
            retired = worker in self._retired
        if msg.get("expected") or retired:
            return  # a recycle or a retirement: nobody died
        keys = frozenset(str(k) for k in msg.get("processing-tasks") or ())
        with self._lock:
            self._removals.append((float(stamp), worker, keys))
            job = self._jobs.get(worker)
            ask = job is not None and self.explain_job is not None \
                and worker not in self._job_ends
            if ask:
                self._job_ends[worker] = None
        if ask:  # the batch system is asked in a thread: never on the event loop
            threading.Thread(target=self._ask_job, args=(worker, job), daemon=True,
                             name="sweep-job-end").start()

    def _on_job(self, event: tuple[float, Any]) -> None:
        _, msg = event
        if isinstance(msg, dict) and msg.get("worker") and msg.get("job"):
            with self._lock:
                self._jobs[str(msg["worker"])] = str(msg["job"])

    def _ask_job(self, worker: str, job: str) -> None:
        assert self.explain_job is not None
        # the job's state may trail the lost connection by a moment
        for delay in (0.5, 2.0, 5.0):
            time.sleep(delay)
            try:
                why = self.explain_job(job)
            except Exception:  # noqa: BLE001 - a reason must never stop the sweep
                why = None
            if why:
                with self._lock:
                    self._job_ends[worker] = why
                return

    def _on_exit(self, event: tuple[float, Any]) -> None:
        stamp, msg = event
        if isinstance(msg, dict) and msg.get("worker"):
            with self._lock:
                self._exits[str(msg["worker"])] = {**msg, "time": float(stamp)}

    def _on_memory(self, event: tuple[float, Any]) -> None:
        stamp, msg = event
        if isinstance(msg, dict) and msg.get("worker"):
            with self._lock:
                self._memory[str(msg["worker"])] = {**msg, "time": float(stamp)}

    def reason(self, worker: str) -> str:
        """Why ``worker`` died, as far as the events tell."""
        with self._lock:
            memory, exit_ = self._memory.get(worker), self._exits.get(worker)
        limit = (exit_ or {}).get("memory_limit")
        if memory is not None:
            peak = format_bytes(int(memory.get("rss") or 0))
            of = f" of its {format_bytes(int(limit))} limit" if limit else ""
            return (f"out of memory: the worker's resident memory reached {peak}{of} "
                    "(distributed.worker.memory.terminate) and its nanny killed it")
        if exit_ is not None and exit_.get("exitcode") is not None:
            return exit_reason(int(exit_["exitcode"]))
        with self._lock:
            job_end = self._job_ends.get(worker)
        if job_end:
            return job_end
        return ("connection lost: the scheduler stopped hearing from it and no exit was "
                "reported (host down, network, or its nanny gone too)")

    def departed(self, worker: str) -> bool:
        """Whether the scheduler removed ``worker`` (died, recycled or retired), as far
        as its events arrived: after this, :meth:`deaths` knows whether it died."""
        with self._lock:
            return worker in self._departed

    def deaths(self, key: str) -> list[WorkerDeath]:
        """Deaths of workers while they ran the task ``key`` (oldest first)."""
        with self._lock:
            mine = [(t, w) for t, w, keys in self._removals if key in keys]
        return [WorkerDeath(w, t, self.reason(w)) for t, w in mine]

    def _explained(self, key: str) -> bool:
        with self._lock:
            workers = [w for _, w, keys in self._removals if key in keys]
            # the nanny's exit report carries the exit code and the memory limit; its
            # memory report (if any) comes before it on the same stream; a batch job's
            # end is asked of the batch system
            return all(w in self._exits or self._job_ends.get(w) for w in workers)

    async def settled(self, key: str, timeout: float = 2.0) -> list[WorkerDeath]:
        """:meth:`deaths` once each has its reason (a nanny's report can trail the
        scheduler's removal), or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._explained(key) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.deaths(key)


def describe(deaths: list[WorkerDeath]) -> str:
    """``killed by signal 9 (...) on tcp://...; out of memory ...`` for a fit's record."""
    return "; ".join(f"{d.reason} [worker {d.worker}]" for d in deaths)
