"""Driver-side worker recycling: restart workers one at a time, never all at once.

A worker reports ``recycle_due`` with a fit when it has run its quota of fits or
grown past its memory limit (see :mod:`keras_sweep.worker.fit`). The driver then asks
that worker to close gracefully and restart (Dask's own lifetime-restart path:
the scheduler moves the worker's results elsewhere before it exits, and the
nanny starts a fresh process). Only a few workers recycle at a time, so the
sweep keeps running on the others and data held by the cluster is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..store.records import FitRecord
from ..worker.fit import recycle_worker
from ..worker.setup import setup_done

logger = logging.getLogger(__name__)


class Recycler:
    """Decides which workers restart, and when.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster.
    workers : int, optional
        Workers the cluster should have; default: those connected now. At most a
        quarter of them (at least one) restart at the same time.
    patience : float
        Seconds after which a restart is assumed finished, even if unseen.
    """

    def __init__(self, client: Any, workers: int | None = None, patience: float = 120.0) -> None:
        self.client = client
        self.expected = workers or len(client.scheduler_info().get("workers", {}))
        self.concurrent = max(1, self.expected // 4)
        self.patience = patience
        #: restarts under way: the worker's nanny (its address where it has none) ->
        #: (the old worker's address, when the restart was asked for)
        self.restarting: dict[str, tuple[str, float]] = {}
        self.restarts = 0
        self.requests: list[asyncio.Future[Any]] = []
        #: workers due for a restart while every slot was taken, oldest first: their
        #: nanny (or address) -> (address, reason). The driver sends them no more fits,
        #: so no later fit of theirs would come back to ask again: each starts when a
        #: slot frees (a worker left without its turn idled until the sweep ended)
        self.due: dict[str, tuple[str, str]] = {}

    def fit_done(self, record: FitRecord) -> None:
        """Look at one finished fit's record; maybe restart its worker.

        Called on the client's event loop thread. A restart is over when a fit comes
        back from a new process of the same nanny (or after ``patience`` seconds);
        that frees its slot. Counting any worker not seen before as a restarted one
        let the first fits of the original workers free slots they did not hold, so
        all workers of a sweep recycled after its first fits restarted at once and
        the sweep was left with none (3 workers, ``recycle_after_fits=1``, a loaded
        machine: ``tests/test_recycling.py``).
        """
        now = time.monotonic()
        address, reason = record.worker, record.recycle_due
        if not address:
            return
        key = record.nanny or address
        old = self.restarting.get(key)
        if old is not None and old[0] != address:
            del self.restarting[key]  # its new process is back and fitting
        self.restarting = {k: v for k, v in self.restarting.items()
                           if now - v[1] < self.patience}
        if key in self.due and self.due[key][0] != address:
            del self.due[key]  # its process was replaced meanwhile (it died)
        if reason and key not in self.restarting:
            self.due.setdefault(key, (address, reason))
        while self.due and len(self.restarting) < self.concurrent:
            key = next(iter(self.due))
            address, reason = self.due.pop(key)
            self._restart(key, address, reason, now)

    def _restart(self, key: str, address: str, reason: str, now: float) -> None:
        """Ask the worker at ``address`` to close gracefully; its nanny starts a new one."""
        self.restarting[key] = (address, now)
        self.restarts += 1
        coro = self.client.run(
            recycle_worker, reason=reason, timeout=self.patience, workers=[address], wait=False,
            asynchronous=True
        )
        self.requests = [r for r in self.requests if not r.done()]
        self.requests.append(asyncio.ensure_future(coro))

    def settle(self, timeout: float) -> bool:
        """Wait until the restarts asked for are over; True if they are, False on timeout.

        Called from the driver's thread before the cluster closes: closing while a
        worker is halfway through its restart makes Dask log errors (an invalid
        status transition, a closed connection pool) although nothing is lost.
        Done when each restarting worker has left the scheduler and a new process
        of its nanny has registered and finished its set-up (which imports
        TensorFlow: closing a worker in the middle of it logs the same errors).
        """
        waiting = {old: key for key, (old, _) in self.restarting.items() if key != old}
        if not waiting:
            return True
        logger.info("sweep: waiting for %d restarting worker(s) before closing", len(waiting))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(request.done() for request in self.requests):
                try:
                    if self._restarted(waiting):
                        self.restarting.clear()
                        return True
                except Exception as exc:  # noqa: BLE001 - a finished sweep must not fail here
                    logger.debug("sweep: restart not seen yet: %r", exc)
            time.sleep(0.1)
        logger.warning("sweep: %d worker restart(s) still running after %.0f s; closing anyway",
                       len(waiting), timeout)
        return False

    def _restarted(self, waiting: dict[str, str]) -> bool:
        """Each old worker gone, and its nanny's new process registered and set up."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        nannies = {info.get("nanny") for info in workers.values()}
        if not all(a not in workers and n in nannies for a, n in waiting.items()):
            return False
        new = [a for a, info in workers.items() if info.get("nanny") in set(waiting.values())]
        ready = self.client.run(setup_done, workers=new, on_error="return")
        return all(ok is True for ok in ready.values())
