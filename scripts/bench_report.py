#!/usr/bin/env python
"""What report.html costs: drawing time and size for 150- and 1,000-candidate sweeps.

    python scripts/bench_report.py                 # 150 and 1000 candidates, 3 folds
    python scripts/bench_report.py --out docs/measurements/bench-report.json

The grids are real scikit-learn searches (LogisticRegression on iris: 150 candidates over
two parameters, a heatmap; 1,000 over four, parallel coordinates); each fit's record gets
the search's own fold score and fit time, a worker lane, and a 50-epoch history (the
size of the recipe's fits), as a Keras sweep's records have. Each way of drawing is timed
--reps times (median): the final page from cv_results_, the live page from fit records,
and `sweep report` from the results folder (files read and parsed too).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from keras_sweep import report
from keras_sweep.store import results
from keras_sweep.store.records import FitRecord

GRIDS = {
    150: {"C": list(np.logspace(-3, 2, 15)), "tol": list(np.logspace(-5, -1, 10))},
    1000: {"C": list(np.logspace(-3, 2, 10)), "tol": list(np.logspace(-5, -1, 5)),
           "fit_intercept": [True, False], "intercept_scaling": list(np.linspace(0.5, 5, 10))},
}
EPOCHS = 50


def records(search: GridSearchCV, workers: int = 2) -> list[FitRecord]:
    """One record per fit, as a sweep's driver holds them."""
    cv, rng = search.cv_results_, np.random.default_rng(0)
    lanes = [0.0] * workers
    out = []
    for i, params in enumerate(cv["params"]):
        for k in range(search.n_splits_):
            lane = int(np.argmin(lanes))
            seconds = float(cv["mean_fit_time"][i]) * 200  # a Keras fit, not a LogReg
            decay = rng.uniform(0.02, 0.1)
            loss = list(0.7 * np.exp(-decay * np.arange(EPOCHS)) + 0.3)
            out.append(FitRecord(
                candidate=i, n_candidates=len(cv["params"]), split=k,
                n_splits=search.n_splits_, params=params,
                test_score=float(cv[f"split{k}_test_score"][i]), seconds=seconds,
                started=1e9 + lanes[lane], ended=1e9 + lanes[lane] + seconds,
                worker=f"tcp://127.0.0.1:{4000 + lane}", pid=100 + lane,
                history={"loss": loss, "accuracy": list(1.0 - np.array(loss) / 2)}))
            lanes[lane] += seconds
    return out


def timed(fn, reps: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(n: int, grid: dict, reps: int) -> dict:
    """Figures of one grid size."""
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(LogisticRegression(max_iter=300), grid, cv=3).fit(X, y)
    fits = records(search)
    with tempfile.TemporaryDirectory() as folder:
        results.save(Path(folder), cv_results=search.cv_results_,
                     best={"best_score": search.best_score_}, spec={"name": f"n{n}"},
                     fits=fits)
        final, page = timed(lambda: report.render(report.from_cv_results(
            search.cv_results_, fits, title=f"n{n}")), reps)
        live, _ = timed(lambda: report.render(report.from_records(
            fits[: len(fits) // 2], title=f"n{n}", live=True)), reps)
        cli, path = timed(lambda: report.write(report.from_folder(folder), folder), reps)
        size = Path(str(path)).stat().st_size
    return {"candidates": n, "fits": len(fits), "varying": len(grid),
            "final_page_s": round(final, 3), "live_page_half_done_s": round(live, 3),
            "sweep_report_s": round(cli, 3), "html_kib": round(size / 1024, 1),
            "html_kib_gzip": round(len(gzip.compress(str(page).encode())) / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    rows = []
    for n, grid in GRIDS.items():
        rows.append(measure(n, grid, args.reps))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": platform.node(),
            "cpus": os.cpu_count(),
            "command": f"python scripts/bench_report.py --reps {args.reps} --out {args.out}",
            "results": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
