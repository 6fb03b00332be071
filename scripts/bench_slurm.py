#!/usr/bin/env python
"""SLURM overhead: the same grid on LocalCluster and on SLURM worker jobs, one run.

Measures, for each backend, the time from ``sweep.cluster(...)`` to the first
worker and to all workers (TensorFlow imported in each), and the wall time of the
same ``GridSearchCV.fit``; reports the SLURM/local ratios. Needs a SLURM (e.g.
the single-node one of ``cluster/slurm/up``, where both run on the same cores).

    python scripts/bench_slurm.py --pima ../shared/data/pima-indians-diabetes.csv
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import keras_sweep as sweep
from keras_sweep.spec.models import mlp


def search(epochs: int) -> GridSearchCV:
    model = KerasClassifier(model=mlp, model__kernel_initializer="uniform",
                            loss="binary_crossentropy", optimizer="adam", epochs=epochs,
                            batch_size=10, verbose=0)
    return GridSearchCV(model, {"model__neurons": [4, 8, 12, 16]}, n_jobs=-1, refit=False,
                        cv=StratifiedKFold(3, shuffle=True, random_state=0))


def one(backend: str, options: dict[str, Any], X: np.ndarray, y: np.ndarray,
        epochs: int) -> dict[str, Any]:
    start = time.perf_counter()
    with sweep.cluster(backend, seed=1, **options):
        ready = time.perf_counter() - start
        t0 = time.perf_counter()
        grid = search(epochs).fit(X, y)
        fit = time.perf_counter() - t0
    return {"backend": backend, "workers_ready_s": ready, "fit_s": fit,
            "total_s": time.perf_counter() - start,
            "best": grid.best_params_, "mean_scores": list(grid.cv_results_["mean_test_score"])}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timings over repetitions (scores from the first run)."""
    out = dict(runs[0])
    for key in ("workers_ready_s", "fit_s", "total_s"):
        out[key] = statistics.median(r[key] for r in runs)
        out[key + "_all"] = [r[key] for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pima", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2, help="repetitions (ABBA order)")
    parser.add_argument("--output", default="docs/measurements")
    args = parser.parse_args()
    data = np.loadtxt(args.pima, delimiter=",", dtype="float32")
    X, y = data[:, :8], data[:, 8].astype(int)
    options = {"local": {"workers": args.workers},
               "slurm": {"workers": args.workers, "queue": "debug", "interface": "lo",
                         "walltime": "00:30:00"}}
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "slurm": []}
    for rep in range(args.reps):
        order = ["local", "slurm"] if rep % 2 == 0 else ["slurm", "local"]
        for name in order:
            runs[name].append(one(name, options[name], X, y, args.epochs))
    local, slurm = (median_run(runs["local"]), median_run(runs["slurm"]))
    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "epochs": args.epochs, "fits": 12, "reps": args.reps, "workers": args.workers,
        "local": local, "slurm": slurm,
        "ratio_total": slurm["total_s"] / local["total_s"],
        "ratio_fit": slurm["fit_s"] / local["fit_s"],
        "same_scores": local["mean_scores"] == slurm["mean_scores"],
    }
    out = Path(args.output) / f"bench-slurm-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    for name in ("local", "slurm"):
        r = report[name]
        print(f"{name:6s} workers ready {r['workers_ready_s']:6.1f} s  fit {r['fit_s']:6.1f} s"
              f"  total {r['total_s']:6.1f} s")
    print(f"slurm/local: total {report['ratio_total']:.2f}x, fit phase "
          f"{report['ratio_fit']:.2f}x; identical scores: {report['same_scores']}; -> {out}")


if __name__ == "__main__":
    main()
