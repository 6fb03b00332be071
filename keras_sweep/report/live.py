"""The live report: ``report.html`` rewritten every few seconds while a sweep runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..store.records import FitRecord
from . import write
from .data import from_records

logger = logging.getLogger(__name__)


class LiveReport:
    """Rewrites ``folder/report.html`` from the fits finished so far, in a thread.

    The page is replaced atomically (never half-written) and only when fits
    finished since the last one. Drawing takes driver CPU, so the pause between
    two pages is at least five times the last drawing's cost.

    Parameters
    ----------
    folder : path
        The sweep's output folder.
    fits : callable
        Returns the fit records finished so far (read, never changed).
    interval : float
        Seconds between pages, at least.
    **context
        Passed to :func:`~keras_sweep.report.data.from_records` (``title``,
        ``n_candidates``, ``n_splits``, ``params``, ``spec``, ``run``,
        ``expected_fits``...).
    """

    def __init__(self, folder: str | Path, fits: Callable[[], list[FitRecord]],
                 interval: float, **context: Any) -> None:
        self.folder = Path(folder)
        self.fits = fits
        self.interval = interval
        self.context = context
        self.pages = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = -1
        self._pause = interval

    def start(self) -> Path:
        """Write the first page now, then keep it fresh in a thread; returns its path."""
        path = self.refresh()
        self._thread = threading.Thread(target=self._run, name="sweep-live-report",
                                        daemon=True)
        self._thread.start()
        return path

    def refresh(self) -> Path:
        """Draw and write the page of the fits finished so far."""
        records = list(self.fits())
        start = time.perf_counter()
        path = write(from_records(records, live=True, **self.context), self.folder)
        self._pause = max(self.interval, 5 * (time.perf_counter() - start))
        self._drawn = len(records)
        self.pages += 1
        return path

    def _run(self) -> None:
        while not self._stop.wait(self._pause):
            if len(self.fits()) == self._drawn:
                continue
            try:
                self.refresh()
            except OSError as exc:  # a full disk: the journal's own error says the fix
                logger.warning("sweep: the live report could not be written to %s: %s",
                               self.folder, exc)
                self._pause = max(self._pause, 60.0)
            except Exception:  # a picture that fails must not stop the sweep
                logger.exception("sweep: the live report could not be drawn")
                self._pause = max(self._pause, 60.0)

    def stop(self) -> None:
        """Stop refreshing (the page drawn last stays until the final one replaces it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
