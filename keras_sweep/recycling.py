"""Driver-side worker recycling: restart workers one at a time, never all at once.

A worker reports ``recycle_due`` with a fit when it has run its quota of fits or
grown past its memory limit (see :mod:`sweep.worker.fit`). The driver then asks
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

from .records import FitRecord
from .worker.fit import recycle_worker
from .worker.plugin import setup_done

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
        self.restarting: dict[str, float] = {}
        self.restarts = 0
        self.seen: set[str] = set()
        self.requests: list[asyncio.Future[Any]] = []
        self.nannies: dict[str, str] = {}

    def fit_done(self, record: FitRecord) -> None:
        """Look at one finished fit's record; maybe restart its worker.

        Called on the client's event loop thread. A fit from a worker never seen
        before means a restarted worker is back, which frees a restart slot.
        """
        now = time.monotonic()
        address, reason = record.worker, record.recycle_due
        if not address:
            return
        if address not in self.seen:
            if self.seen and self.restarting:
                oldest = min(self.restarting, key=self.restarting.__getitem__)
                del self.restarting[oldest]
            self.seen.add(address)
        self.restarting = {a: t for a, t in self.restarting.items() if now - t < self.patience}
        if not reason or address in self.restarting or len(self.restarting) >= self.concurrent:
            return
        self.restarting[address] = now
        self.restarts += 1
        self.nannies = {a: n for a, n in self.nannies.items() if a in self.restarting}
        if record.nanny:
            self.nannies[address] = record.nanny
        coro = self.client.run(
            recycle_worker, reason=reason, workers=[address], wait=False, asynchronous=True
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
        waiting = {a: n for a, n in self.nannies.items() if a in self.restarting}
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
