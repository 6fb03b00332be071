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
    concurrent : int
        Most workers restarting at the same time.
    patience : float
        Seconds after which a restart is assumed finished, even if unseen.
    """

    def __init__(self, client: Any, concurrent: int = 1, patience: float = 120.0) -> None:
        self.client = client
        self.concurrent = concurrent
        self.patience = patience
        self.restarting: dict[str, float] = {}
        self.restarts = 0
        self.expected = 0

    def fit_done(self, facts: dict[str, Any]) -> None:
        """Look at one finished fit's facts; maybe restart its worker.

        Called on the client's event loop thread.
        """
        now = time.monotonic()
        alive = self.client.scheduler_info().get("workers", {})
        self.expected = max(self.expected, len(alive))
        if len(alive) >= self.expected:  # every restart so far has come back
            self.restarting = {a: t for a, t in self.restarting.items() if a in alive}
        self.restarting = {a: t for a, t in self.restarting.items() if now - t < self.patience}
        address, reason = facts.get("worker"), facts.get("recycle_due")
        if not address or not reason or address in self.restarting:
            return
        if len(self.restarting) >= self.concurrent:
            return
        self.restarting[address] = now
        self.restarts += 1
        coro = self.client.scheduler.restart_workers(
            workers=[address],
            timeout=self.patience,
            on_error="return",
            stimulus_id=f"sweep-recycle-{time.time()}",
        )
        asyncio.ensure_future(coro)
