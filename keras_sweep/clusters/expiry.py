"""A cluster that ends (certificates that expire, instances' hours): the sweep stops in time.

:class:`ExpiryWatch` interrupts the sweep ``sweep.cluster.expiry-margin`` seconds before
:attr:`~keras_sweep.clusters.Started.expires`; the session turns that into
:class:`~keras_sweep.exceptions.ClusterExpired`, and ``sweep run`` starts a new cluster
where the backend can renew it (ssh: fresh certificates).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from ..exceptions import ClusterError, ClusterExpired
from . import Started

logger = logging.getLogger(__name__)


class ExpiryWatch:
    """Stops the sweep ``margin`` seconds before its cluster's end (``Started.expires``).

    At that moment it interrupts the main thread (SIGINT, as Ctrl-C: fits in
    flight are cancelled, finished ones are kept), and the session turns that
    interrupt into :class:`ClusterExpired`. While it is armed its own SIGINT
    handler is in place: it raises for the watch's interrupt whatever handler was
    there (SIGINT ignored in a background job, ``nohup sweep run ... &``, CI; a
    library's handler), and passes any other SIGINT to that handler. A session
    opened in another thread than the main one is not interrupted: it gets a warning.
    """

    def __init__(self, started: Started, margin: float) -> None:
        self.started, self.margin = started, margin
        self.fired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._previous: Any = None  # SIGINT's handler while the watch's is in place
        self._replaced = False

    def start(self) -> None:
        """Arm the timer (once the workers are there); refuse a cluster already too old."""
        if self.started.expires is None:
            return
        delay = self.started.expires - self.margin - time.time()
        if delay <= 0:
            raise ClusterError(
                f"the cluster ends ({self.started.expiry}) within {self.margin:.0f} s "
                "(sweep.cluster.expiry-margin) of its start.\n  Fix: raise "
                "sweep.tls.valid-days (or the EC2 profile's hours), or lower "
                "sweep.cluster.expiry-margin")
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._replaced = True
        self._timer = threading.Timer(delay, self._fire if main else self._warn)
        self._timer.daemon = True
        self._timer.start()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.fired:  # the watch's own interrupt
            raise KeyboardInterrupt
        previous = self._previous  # any other SIGINT: as before the watch
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    def _warn(self) -> None:
        logger.warning("sweep: the cluster ends in %.0f s (%s); this session runs outside "
                       "the main thread, so it is not stopped", self.margin,
                       self.started.expiry)

    def _fire(self) -> None:
        with self._lock:
            if self._timer is None:
                return  # cancelled meanwhile
            self.fired = True
            logger.warning("sweep: stopping the sweep %.0f s before its cluster's end (%s)",
                           self.margin, self.started.expiry)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def cancel(self) -> None:
        """Disarm: after this returns, no interrupt is sent (and SIGINT is as it was)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._replaced:
            previous = self._previous
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None
                          else previous)
            self._replaced = False

    def error(self) -> ClusterExpired:
        """What the interrupt it caused means."""
        fix = ("nothing: `sweep run` starts a new cluster itself; from Python, open a new "
               "sweep.cluster() with the same journal" if self.started.renewable else
               "rerun the same command (finished fits are kept in the journal); raise the "
               "limit to run longer")
        return ClusterExpired(self.started.expiry, self.started.renewable, fix)
