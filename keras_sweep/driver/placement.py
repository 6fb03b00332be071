"""Which worker runs which fit: fits of one kind of model go where its trace is.

A worker keeps one traced template per kind of model it trained
(:mod:`keras_sweep.worker.training.traces`); the first fit of a kind in a worker makes one,
which costs that fit ~0.4-0.7 s on the article's networks, as much as training
it. When a worker thread frees up, the backend (:mod:`keras_sweep.driver.backend`) holds the
next few fits joblib dispatched and asks :meth:`Placement.choose` which one to
send there:

1. a fit whose kind this worker holds (or will, running one of its candidate now);
2. else a fit of a kind no worker holds or is making: this worker makes it;
3. else the oldest fit: a free worker never waits for another's template.

The fit is sent to that worker and restricted to it, so Dask cannot move it; if the
worker leaves, the backend takes the fit back (``SweepBackend._rescue``).

A fit's kind is learned from its first fit that comes back (the worker names it
in ``FitRecord.trace_kind``); until then fits of one candidate (equal
parameters) count as one kind. The choice only decides where fits run, never
what they compute: every fit is seeded by its fold, on any worker.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import MAX_TEMPLATES
from ..store.records import FitRecord


def candidate_key(estimator: Any, params: dict[str, Any] | None) -> str:
    """A key of one candidate: the estimator's class and the candidate's parameters."""
    described = json.dumps(params or {}, sort_keys=True, default=repr)
    return f"{type(estimator).__module__}.{type(estimator).__qualname__}:{described}"


@dataclass
class Placement:
    """What the driver knows of the workers' templates, and where fits go.

    Parameters
    ----------
    max_kinds : int
        Templates a worker keeps (its least recently used is dropped first).
    by_kind : bool
        Choose by kind (the rules above); False: the oldest fit, always.
    """

    max_kinds: int = MAX_TEMPLATES
    by_kind: bool = True
    #: per worker address: the kinds it holds, least recently used first
    held: dict[str, collections.OrderedDict[str, None]] = field(default_factory=dict)
    #: per candidate key: the kind its fits train (learned from a fit that came back)
    kinds: dict[str, str] = field(default_factory=dict)
    #: per candidate key: fits running now, per worker
    running: dict[str, collections.Counter[str]] = field(default_factory=dict)
    #: workers that asked to be recycled: their templates die with their process
    retiring: set[str] = field(default_factory=set)

    def idle(self, nthreads: dict[str, int], load: collections.Counter[str]) -> list[str]:
        """Free worker threads, one address per free thread.

        ``nthreads`` holds the scheduler's workers and their threads, ``load`` per
        worker the tasks it runs now, as the scheduler sees them, and the fits sent
        there that the scheduler has not placed yet. A worker's load is the
        scheduler's, not the driver's count of fits sent there: after a worker's
        death Dask may move a fit to another worker, which is then not free."""
        for gone in set(self.held) - set(nthreads):
            del self.held[gone]
        free = []
        for address, threads in nthreads.items():
            if address not in self.retiring:
                free += [address] * max(0, int(threads) - load[address])
        return free

    def _holds(self, worker: str, candidate: str) -> bool:
        kind = self.kinds.get(candidate)
        counts = self.running.get(candidate)
        return (kind is not None and kind in self.held.get(worker, ())) or bool(
            counts is not None and counts[worker] > 0)

    def _fresh(self, candidate: str) -> bool:
        """Whether no worker holds or is making the candidate's kind."""
        if any(self.running.get(candidate, {}).values()):
            return False
        kind = self.kinds.get(candidate)
        if kind is None:
            return True
        others = [c for c, k in self.kinds.items() if k == kind]
        return not any(kind in held for held in self.held.values()) and not any(
            any(self.running.get(c, {}).values()) for c in others)

    def choose(self, waiting: Sequence[str], idle: Sequence[str]) -> list[tuple[int, str]]:
        """Pair free worker threads with waiting fits: (index in ``waiting``, worker).

        ``waiting`` holds the candidate keys of the fits held back, oldest first.
        Each free thread gets one fit while any wait (rules in the module's text);
        each pick is counted as sent (:meth:`sent`).
        """
        picks: list[tuple[int, str]] = []
        taken: set[int] = set()
        for worker in idle:
            best: tuple[int, int] | None = None  # (rank, index)
            for index, candidate in enumerate(waiting):
                if index in taken:
                    continue
                rank = 0 if not self.by_kind else 2 if self._holds(worker, candidate) else (
                    1 if self._fresh(candidate) else 0)
                if best is None or rank > best[0]:
                    best = (rank, index)
                if rank == 2 or not self.by_kind:
                    break
            if best is None:
                break
            taken.add(best[1])
            picks.append((best[1], worker))
            self.sent(waiting[best[1]], worker)
        return picks

    def worker_for(self, candidate: str) -> str | None:
        """A worker that holds ``candidate``'s kind of model's trace (None: none known)."""
        kind = self.kinds.get(candidate)
        return next((worker for worker, held in self.held.items()
                     if kind is not None and kind in held and worker not in self.retiring),
                    None)

    def sent(self, candidate: str, worker: str) -> None:
        """Count a fit of ``candidate`` as running on ``worker``."""
        self.running.setdefault(candidate, collections.Counter())[worker] += 1

    def forget_running(self) -> None:
        """Forget the fits sent (the search stopped: they will not come back)."""
        self.running.clear()

    def back(self, candidate: str, worker: str | None,
             records: Sequence[FitRecord] = ()) -> None:
        """A fit sent to ``worker`` (None: sent unplaced) came back, or was lost:
        learn what its records say."""
        counts = self.running.get(candidate)
        if worker is not None and counts is not None:
            counts[worker] = max(0, counts[worker] - 1)
        for record in records:
            ran_on = record.worker or worker
            if ran_on is None:
                continue
            if record.recycle_due:
                self.retiring.add(ran_on)
                self.held.pop(ran_on, None)
                continue
            if record.trace_kind is None:
                continue
            self.kinds[candidate] = record.trace_kind
            held = self.held.setdefault(ran_on, collections.OrderedDict())
            held[record.trace_kind] = None
            held.move_to_end(record.trace_kind)
            while len(held) > self.max_kinds:
                held.popitem(last=False)
