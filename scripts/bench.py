#!/usr/bin/env python
"""Benchmark: the same grid three ways, in one run on one machine.

1. the recipe's way: GridSearchCV(n_jobs=-1) with joblib's default (loky) backend;
2. serial: n_jobs=1;
3. sweep: the same GridSearchCV inside ``sweep.cluster("local")``, one worker per core.

Repetitions are interleaved (serial, loky, sweep, serial, ...), medians reported. Only
public APIs. Writes JSON and a Markdown table; ratios are the claim, not seconds.

    python scripts/bench.py --epochs 20 --reps 3 --output bench-results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sweep
from sweep.clusters import default_workers
from sweep.models import mlp


def make_search(epochs: int, n_jobs: int) -> GridSearchCV:
    model = KerasClassifier(model=mlp, model__kernel_initializer="uniform",
                            loss="binary_crossentropy", optimizer="adam", epochs=epochs,
                            batch_size=10, verbose=0, random_state=0)
    grid = {"model__neurons": [4, 8, 12, 16]}
    return GridSearchCV(model, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                        n_jobs=n_jobs, refit=False)


def timed(search: GridSearchCV, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start, search.best_params_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="../shared/data/pima-indians-diabetes.csv")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--output", default="bench-results")
    args = parser.parse_args()
    data = np.loadtxt(args.csv, delimiter=",", dtype="float32")
    X, y = data[:, :8], data[:, 8].astype(int)
    times: dict[str, list[float]] = {"serial": [], "loky": [], "sweep": []}
    best: dict[str, Any] = {}
    start = time.perf_counter()
    with sweep.cluster("local", workers=args.workers, seed=0) as session:
        startup = time.perf_counter() - start
        for _ in range(args.reps):
            for mode in times:
                if mode == "sweep":
                    seconds, best[mode] = timed(make_search(args.epochs, -1), X, y)
                else:
                    import joblib

                    with joblib.parallel_config(backend="loky"):
                        seconds, best[mode] = timed(
                            make_search(args.epochs, 1 if mode == "serial" else -1), X, y)
                times[mode].append(seconds)
                print(f"{mode}: {seconds:.1f} s", flush=True)
        fits = session.fits
    report(args, times, best, startup, fits)


def report(args: Any, times: dict[str, list[float]], best: dict[str, Any], startup: float,
           fits: list[dict[str, Any]]) -> None:
    med = {m: statistics.median(t) for m, t in times.items()}
    n_fits = 12
    fit_seconds = [f["seconds"] for f in fits]
    per_rep_fit = sum(fit_seconds) / args.reps
    overhead = (med["sweep"] * args.workers - per_rep_fit) / n_fits
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "grid": f"8-N-1 network, Pima, batch 10, epochs {args.epochs}, 4 candidates x 3 folds",
        "workers": args.workers, "reps": args.reps,
        "median_seconds": med, "all_seconds": times,
        "speedup_vs_serial": med["serial"] / med["sweep"],
        "speedup_vs_loky": med["loky"] / med["sweep"],
        "parallel_efficiency": med["serial"] / (med["sweep"] * args.workers),
        "dispatch_overhead_per_fit_s": overhead,
        "worker_startup_s": startup,
        "peak_worker_rss_mb": max(f["rss"] for f in fits) / 2**20,
        "best_params_agree": len({json.dumps(b, sort_keys=True) for b in best.values()}) == 1,
        "best_params": best,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    table = [
        f"Machine: {result['machine']}; {result['grid']}; {args.workers} workers; "
        f"median of {args.reps} interleaved runs; CV phase only (refit=False).", "",
        "| way | median wall (s) | sweep speed-up |", "|---|---|---|",
        f"| serial `n_jobs=1` | {med['serial']:.1f} | {result['speedup_vs_serial']:.2f}x |",
        f"| recipe `n_jobs=-1` (loky) | {med['loky']:.1f} | {result['speedup_vs_loky']:.2f}x |",
        f"| sweep, LocalCluster | {med['sweep']:.1f} | 1.00x |", "",
        f"Parallel efficiency {result['parallel_efficiency']:.0%}; dispatch overhead "
        f"{overhead * 1000:.0f} ms per fit; worker start-up (TensorFlow import, warm pool) "
        f"{startup:.1f} s; peak worker memory {result['peak_worker_rss_mb']:.0f} MB; best "
        f"parameters agree: {result['best_params_agree']}.",
    ]
    (out / "bench.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
