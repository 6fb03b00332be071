"""The progress line (keras_sweep.driver.progress.FitMonitor), alone."""

from __future__ import annotations

from keras_sweep.driver.progress import FitMonitor
from keras_sweep.store.records import FitRecord


def _run(capsys, up: int, failed: bool) -> str:
    monitor = FitMonitor(show=True)
    monitor.workers = lambda: (up, 3)
    records = [FitRecord(candidate=c, n_candidates=2, split=s, n_splits=2,
                         fit_error="boom" if failed and c == 1 else None)
               for c in range(2) for s in range(2)]
    for record in records:
        monitor.on_submit(record)
    for record in records:
        monitor.on_fit(record, None)
    assert len(monitor.records) == 4
    return capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]


def test_the_progress_line_says_how_many_workers_are_up_and_whether_fits_failed(capsys):
    line = _run(capsys, up=2, failed=True)
    assert "4/4" in line and line.endswith("workers 2/3, some fits failed]"), line
    line = _run(capsys, up=3, failed=False)
    assert line.endswith("workers 3/3]"), line
