"""Progress over fits (candidates x folds) with an ETA, and the record of fits."""

from __future__ import annotations

import sys
import threading
from typing import Any

from tqdm.auto import tqdm


class FitMonitor:
    """Counts fits sent and finished; draws a progress bar when asked to.

    ``records`` keeps one dict per finished fit: candidate, fold, worker,
    process id, seconds, resident memory after the fit, and the fit error, if any.
    """

    def __init__(self, show: bool = False) -> None:
        self.show = show
        self.records: list[dict[str, Any]] = []
        self.submitted = 0
        self._bar: Any = None
        self._lock = threading.Lock()

    def on_submit(self, info: dict[str, Any]) -> None:
        with self._lock:
            self.submitted += 1
            if info.get("candidate") == 0 and info.get("split") == 0:
                self._new_bar(info)

    def _new_bar(self, info: dict[str, Any]) -> None:
        self.close()
        if not self.show or info.get("n_candidates") is None:
            return
        total = info["n_candidates"] * info["n_splits"]
        self._bar = tqdm(
            total=total,
            desc=f"fits ({info['n_candidates']} candidates x {info['n_splits']} folds)",
            unit="fit",
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_fit(self, facts: dict[str, Any], result: Any) -> None:
        record = dict(facts)
        if isinstance(result, dict):
            record["fit_error"] = result.get("fit_error")
        with self._lock:
            self.records.append(record)
            if self._bar is not None:
                self._bar.update(1)
                if record.get("fit_error"):
                    self._bar.set_postfix_str("some fits failed")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
