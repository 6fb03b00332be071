"""The fits held back in the driver: which goes to which free worker thread, and when.

joblib dispatches a few fits ahead of the free threads. Sent all at once, a worker
would hold a queued fit beside the one it runs, and Dask counts a worker's death
against every fit the worker holds: an innocent queued fit could use up its retries.
So the backend (:mod:`keras_sweep.driver.backend`) holds fits here until the scheduler
sees a thread free, and sends each to that free worker only
(:class:`~keras_sweep.driver.placement.Placement` picks which fit); if the worker leaves
before the fit is back, the fit is taken back and held again first in line, or failed
once its runs have died more than ``max_retries`` times.

This class does no I/O: the backend asks the scheduler (``nthreads``, ``processing``)
and the death watch, and passes their answers in; the class decides. Its unit tests
feed it the scheduler's answers directly (``tests/test_admission.py``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store.records import FitRecord
from .deaths import WorkerDeath
from .placement import Placement


@dataclass
class Held:
    """A fit joblib dispatched, held in the driver until a worker thread is free."""

    #: joblib's batch (its tasks), the callback it waits on, and its future
    func: Any
    callback: Any
    cf_future: Any
    #: the journal's keys of its fits (empty: no journal)
    keys: list[str | None]
    #: its candidate (:func:`~keras_sweep.driver.placement.candidate_key`)
    candidate: str
    #: deaths of the workers that ran it in its earlier tries (placed fits only)
    lost: list[WorkerDeath] = field(default_factory=list)
    #: earlier tries cut short by a worker that left without dying (retired)
    cut: int = 0


@dataclass
class Sent:
    """A held fit sent to the cluster: to ``worker`` only, or (None) where Dask likes."""

    held: Held
    worker: str | None


class Admission:
    """The held-back queue, the fits out on the cluster, and where each goes.

    Parameters
    ----------
    placement : Placement, optional
        Chooses which held fit a free worker gets; each is then restricted to that
        worker. None: the oldest fit first, sent where Dask likes (a caller that
        restricts its fits to workers of its own).
    max_retries : int
        Runs of a placed fit that may die with their worker, less one.
    """

    def __init__(self, placement: Placement | None, max_retries: int) -> None:
        self.placement = placement
        self.max_retries = max_retries
        #: fits held back, oldest first
        self.waiting: list[Held] = []
        #: fits sent, by the key of their Dask task
        self.out: dict[str, Sent] = {}
        #: fits chosen and not yet sent, and those sent and not back
        self.in_flight = 0
        #: per worker: fits chosen for it whose tasks are not made yet
        self.heading: collections.Counter[str] = collections.Counter()

    def hold(self, held: Held, first: bool = False) -> None:
        """Hold ``held`` back until a thread is free (``first``: ahead of the others)."""
        if first:
            self.waiting.insert(0, held)
        else:
            self.waiting.append(held)

    def placed_anywhere(self) -> bool:
        """Whether a fit out on the cluster is restricted to one worker (to watch)."""
        return any(sent.worker is not None for sent in self.out.values())

    def wants_scheduler(self) -> bool:
        """Whether the scheduler must be asked: fits wait, or placed fits are watched."""
        return bool(self.waiting) or self.placed_anywhere()

    def load(self, processing: Mapping[str, Iterable[str]]) -> collections.Counter[str]:
        """Per worker: the tasks the scheduler has it run now, and the fits sent there
        that the scheduler has not placed yet (or that wait for their data)."""
        placed = {key: worker for worker, keys in processing.items() for key in keys}
        load = collections.Counter(placed.values()) + self.heading
        for key, sent in self.out.items():
            if sent.worker is not None and key not in placed:
                load[sent.worker] += 1
        return load

    def admit(self, nthreads: dict[str, int],
              processing: Mapping[str, Iterable[str]] | None) -> list[Sent]:
        """The held fits to send now, each with its worker (None: anywhere).

        ``nthreads`` and ``processing`` are the scheduler's answers (threads per
        worker; task keys each worker runs). With placement, only threads the
        scheduler sees free get a fit; without, as many as threads are not taken by
        fits in flight, oldest first.
        """
        free = max(1, sum(int(n) for n in nthreads.values())) - self.in_flight
        if free <= 0 or not self.waiting:
            return []
        if self.placement is None:
            order: list[tuple[int, str | None]] = [
                (i, None) for i in range(min(free, len(self.waiting)))]
        else:
            idle = self.placement.idle(nthreads, self.load(processing or {}))[:free]
            order = list(self.placement.choose([h.candidate for h in self.waiting], idle))
        sends = [Sent(self.waiting[i], worker) for i, worker in order]
        for i in sorted((i for i, _ in order), reverse=True):
            del self.waiting[i]
        for sent in sends:
            self.in_flight += 1
            if sent.worker is not None:
                self.heading[sent.worker] += 1
        return sends

    def sent(self, key: str, sent: Sent) -> None:
        """``sent`` is out as the Dask task ``key``: counted by its task from now on."""
        self._headed(sent.worker)
        self.out[key] = sent

    def dropped(self, sent: Sent) -> None:
        """``sent`` was not sent after all (the search stopped meanwhile)."""
        self._headed(sent.worker)

    def _headed(self, worker: str | None) -> None:
        if worker is not None and self.heading[worker] > 0:
            self.heading[worker] -= 1

    def departed(self, present: set[str], left: Callable[[str], bool],
                 unfinished: Callable[[str], bool]) -> list[tuple[str, Sent]]:
        """The placed fits whose worker left the cluster, taken out (to take back).

        ``present``: the workers the scheduler knows now; ``left(worker)``: the
        worker's removal was heard (else it is left for a later tick);
        ``unfinished(key)``: the fit's task has not finished and is still tracked.
        """
        gone = [(key, sent) for key, sent in self.out.items()
                if sent.worker is not None and sent.worker not in present
                and unfinished(key) and left(sent.worker)]
        for key, _ in gone:
            del self.out[key]
        return gone

    def taken_back(self, sent: Sent, deaths: list[WorkerDeath], stopping: bool) -> bool:
        """A fit :meth:`departed` returned, with its run's deaths: held again first in
        line (True) or, after more than ``max_retries`` deaths, failed (False)."""
        held = sent.held
        held.lost = held.lost + deaths
        self.in_flight = max(0, self.in_flight - 1)
        if self.placement is not None and sent.worker is not None:
            self.placement.back(held.candidate, sent.worker)
        if stopping:
            return True  # dropped with the others: nothing is failed, nothing sent
        if len(held.lost) <= self.max_retries:
            self.hold(held, first=True)
            return True
        return False

    def back(self, key: str, records: Sequence[FitRecord] = ()) -> Sent | None:
        """The fit of task ``key`` came back (``records``: its fits' records), or failed."""
        self.in_flight = max(0, self.in_flight - 1)
        sent = self.out.pop(key, None)
        if sent is not None and self.placement is not None:
            self.placement.back(sent.held.candidate, sent.worker, records)
        return sent

    def start(self, in_flight: int) -> None:
        """A new ``Parallel`` call begins with ``in_flight`` fits still out."""
        self.waiting.clear()
        self.in_flight = in_flight

    def clear(self) -> None:
        """Forget every fit (the search stopped)."""
        self.waiting.clear()
        self.in_flight = 0
        self.out.clear()
        self.heading.clear()
        if self.placement is not None:
            self.placement.forget_running()
