"""Progress over fits (candidates x folds) with an ETA, and the record of fits."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from ..store.records import FitRecord

logger = logging.getLogger(__name__)


class FitMonitor:
    """Counts fits sent and finished; draws a progress bar when asked to.

    ``records`` keeps the :class:`~keras_sweep.store.records.FitRecord` of every finished fit;
    each of ``listeners`` is called with each record as it comes (e.g. MLflow
    tracking); a listener that raises is logged, never stops the sweep.
    """

    def __init__(self, show: bool = False) -> None:
        self.show = show
        self.records: list[FitRecord] = []
        self.listeners: list[Callable[[FitRecord], None]] = []
        #: (workers up, workers asked), for the bar's line; None: not shown
        self.workers: Callable[[], tuple[int, int]] | None = None
        self._failed = False  # a fit of the bar shown failed
        self.submitted = 0
        #: a halving search's rounds, one label each (set by the runner, e.g.
        #: "rung 2/4" or "bracket 3, rung 2/4"): each round's bar says which it is
        self.rounds: list[str] | None = None
        self._rounds_started = 0
        self._round: int | None = None  # the round of the bar shown
        self._bar: Any = None
        self._lock = threading.Lock()

    def on_submit(self, record: FitRecord) -> None:
        with self._lock:
            self.submitted += 1
            if self._starts_round(record):
                self._new_bar(record)

    def _starts_round(self, record: FitRecord) -> bool:
        """The first fit seen of a new round (by its ``round``, else: candidate 0 of
        fold 0); fits of a round taken from the journal count too."""
        if record.round is None:
            return record.candidate == 0 and record.split == 0
        if record.round == self._round:
            return False
        self._round = record.round
        return True

    def expect_rounds(self, labels: list[str] | None) -> None:
        """The next search runs these rounds (halving, Hyperband; None: one bar each)."""
        with self._lock:
            self.rounds, self._rounds_started = labels, 0

    def _new_bar(self, record: FitRecord) -> None:
        self.close()
        self._failed = False
        if not self.show or record.n_candidates is None or record.n_splits is None:
            return
        total = record.n_candidates * record.n_splits
        rung = ""
        if self.rounds:
            self._rounds_started += 1
            rung = f"{self.rounds[min(self._rounds_started, len(self.rounds)) - 1]}: "
        self._bar = tqdm(
            total=total,
            desc=f"{rung}fits ({record.n_candidates} candidates x {record.n_splits} folds)",
            unit="fit",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_fit(self, record: FitRecord, result: Any) -> None:
        with self._lock:
            self.records.append(record)
            if record.resumed and record.round is not None and self._starts_round(record):
                self._new_bar(record)
            if self._bar is not None:
                self._advance(self._bar, failed=bool(record.fit_error))
            listeners = list(self.listeners)
        for listener in listeners:
            try:
                listener(record)
            except Exception:
                logger.exception("sweep: a fit listener failed")

    def _advance(self, bar: Any, failed: bool) -> None:
        self._failed = self._failed or failed
        said = []
        if self.workers is not None:
            up, asked = self.workers()
            if up:
                said.append(f"workers {up}/{asked}")
        if self._failed:
            said.append("some fits failed")
        if said:
            bar.set_postfix_str(", ".join(said), refresh=False)
        if bar.n + 1 < bar.total:
            bar.update(1)
            return
        # the search's last fit: finish the bar now, before anything else is printed,
        # drawn once at 100 % (closing draws it; an update first would draw it twice)
        bar.n = bar.total
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
