#!/usr/bin/env python
"""Soak: 10,000 fits of a trivial scikit-learn estimator through sweep's backend.

The estimator is ``DummyClassifier(strategy="stratified")``, one candidate per
``random_state``: every fit costs the same, so what grows is sweep's.

What must not grow with the number of fits: the driver's resident memory (sampled
as fits finish: MB at 1k and at 10k fits), the journal per fit (bytes), and the
rate (fits per second, per thousand fits). And no worker may be lost on the way:
the share of time all workers were registered, the most registered over the last
quarter of the run, and how long the session took to close (it waits for restarts).

    python scripts/soak_10k.py                    # 10,000 fits (2,000 candidates x 5 folds)
    python scripts/soak_10k.py --candidates 200   # 1,000 fits, a quick look
    python scripts/soak_10k.py --output docs/measurements/soak-10k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def _cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` (0 once it is gone)."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def soak(candidates: int, workers: int, folds: int = 5) -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import GridSearchCV

    import keras_sweep as sweep

    X, y = load_iris(return_X_y=True)
    # the same cost for every candidate: what changes over the run is sweep's, not the fit's
    grid = {"random_state": list(range(candidates))}
    me = psutil.Process()
    samples: list[tuple[int, float, float]] = []  # (fits, seconds, driver RSS MB)
    cpu: list[tuple[int, float, float]] = []  # (fits, driver CPU s, workers' CPU s)
    seen: dict[int, float] = {}  # CPU seconds of each worker process (and nanny) seen
    up: list[int] = []  # workers registered, per sample (a recycle takes one away a while)
    with tempfile.TemporaryDirectory() as folder:
        journal = Path(folder) / "journal.sqlite"
        with sweep.cluster("local", workers=workers, seed=1, journal=journal) as session:
            stop = threading.Event()
            start = time.perf_counter()

            def sample() -> None:
                while not stop.wait(0.25):
                    samples.append((len(session.fits), time.perf_counter() - start,
                                    me.memory_info().rss / 2**20))
                    for child in me.children(recursive=True):  # a recycled process's
                        seen[child.pid] = max(seen.get(child.pid, 0.0), _cpu(child))  # stays
                    cpu.append((len(session.fits), _cpu(me), sum(seen.values())))
                    up.append(len(session.cluster.scheduler_info["workers"]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            search = GridSearchCV(DummyClassifier(strategy="stratified"), grid, cv=folds,
                                  n_jobs=-1, refit=False).fit(X, y)
            seconds = time.perf_counter() - start
            stop.set()
            sampler.join()
            fits = len(session.fits)
            records = list(session.fits)
            samples.append((fits, seconds, me.memory_info().rss / 2**20))
            # the last quarter's samples: a worker lost for good shows as fewer up here
            late = up[-max(1, len(up) // 4):]
            closing = time.perf_counter()
        close_seconds = time.perf_counter() - closing  # waits for restarts under way
        journal_bytes = journal.stat().st_size
    assert fits == candidates * folds and not np.isnan(search.cv_results_["mean_test_score"]).any()

    def at(n: int) -> tuple[float, float]:
        """(seconds, RSS MB) when n fits had finished."""
        first = next((s for s in samples if s[0] >= n), samples[-1])
        return first[1], first[2]

    marks = sorted({min(fits, k) for k in (1000, fits // 2, fits)})
    per_thousand = []
    previous = (0, 0.0)
    for k in range(1000, fits + 1, 1000):
        t, _ = at(k)
        per_thousand.append(round(1000 / max(1e-9, t - previous[1]), 1))
        previous = (k, t)
    # where each thousand's time went: in a worker (the fit, its clean-up) or between
    # fits (the driver, the scheduler, the wire)
    inside, cleanup = [], []
    for k in range(0, fits - 999, 1000):
        chunk = records[k:k + 1000]
        inside.append(round(1000 * float(np.mean([(f.ended or 0) - (f.started or 0)
                                                  for f in chunk])), 2))
        cleanup.append(round(1000 * float(np.mean([f.cleanup_seconds or 0.0
                                                   for f in chunk])), 2))
    # CPU milliseconds per fit, per thousand: the driver's (it hosts the scheduler too)
    # and the worker processes' (nannies included)
    driver_ms, workers_ms = [], []
    for k in range(1000, fits + 1, 1000):
        a = next((c for c in cpu if c[0] >= k - 1000), cpu[0])
        b = next((c for c in cpu if c[0] >= k), cpu[-1])
        n = max(1, b[0] - a[0])
        driver_ms.append(round(1000 * (b[1] - a[1]) / n, 2))
        workers_ms.append(round(1000 * (b[2] - a[2]) / n, 2))
    return {
        "fits": fits, "workers": workers, "seconds": round(seconds, 1),
        "driver_cpu_ms_per_fit_each_thousand": driver_ms,
        "workers_cpu_ms_per_fit_each_thousand": workers_ms,
        "worker_ms_per_fit_each_thousand": inside,
        "cleanup_ms_per_fit_each_thousand": cleanup,
        "fits_per_second": round(fits / seconds, 1),
        "fits_per_second_each_thousand": per_thousand,
        "driver_rss_mb": {str(k): round(at(k)[1], 1) for k in marks},
        "journal_bytes_per_fit": round(journal_bytes / fits),
        "workers_all_up_share": round(sum(n >= workers for n in up) / max(1, len(up)), 3),
        "workers_most_in_last_quarter": max(late),
        "close_seconds": round(close_seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=2000, help="x 5 folds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    figures = soak(args.candidates, args.workers)
    print(json.dumps(figures))
    if args.output:
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
            "cpus": os.cpu_count(), "command": "python scripts/soak_10k.py --output "
            f"{args.output} --candidates {args.candidates} --workers {args.workers}",
            **figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
