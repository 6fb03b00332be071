"""Driver-side worker recycling: restart workers one at a time, never all at once.

A worker reports ``recycle_due`` with a fit when it has run its quota of fits or
grown past its memory limit (see :mod:`sweep.isolation`). The driver then asks
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

from .isolation import recycle_worker

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

    def fit_done(self, facts: dict[str, Any]) -> None:
        """Look at one finished fit's facts; maybe restart its worker.

        Called on the client's event loop thread. A fit from a worker never seen
        before means a restarted worker is back, which frees a restart slot.
        """
        now = time.monotonic()
        address, reason = facts.get("worker"), facts.get("recycle_due")
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
        coro = self.client.run(
            recycle_worker, reason=reason, workers=[address], wait=False, asynchronous=True
        )
        asyncio.ensure_future(coro)
