#!/usr/bin/env python
"""Benchmark: the same grid three ways, in one run on one machine.

1. the recipe's way: GridSearchCV(n_jobs=-1) with joblib's default (loky) backend;
2. serial: n_jobs=1;
3. sweep: the same GridSearchCV inside ``sweep.cluster("local")``, one worker per core:
   its default (the compiled loop), the fast path of Keras' fit (whole epochs per
   execution, compiled loop off), and neither.

The cross-validation phase and the final refit are timed apart (the recipe refits in
the driver, sweep on a worker). Repetitions are interleaved, the order reversed every
other time; medians reported. Only public APIs. Writes JSON and a Markdown table;
ratios are the claim, not seconds.

    python scripts/bench.py --epochs 50 --reps 3 --output bench-results
    python scripts/bench.py --candidates 12 --epochs 50      # 36 fits, end to end
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

import keras_sweep as sweep
from keras_sweep.clusters import default_workers
from keras_sweep.protocol import TrainingPaths
from keras_sweep.spec.models import mlp


def make_search(epochs: int, n_jobs: int, candidates: int, refit: bool) -> GridSearchCV:
    """The recipe's search: scikeras defaults, batch 10, a grid over hidden neurons."""
    model = KerasClassifier(model=mlp, model__kernel_initializer="uniform",
                            loss="binary_crossentropy", optimizer="adam", epochs=epochs,
                            batch_size=10, verbose=0, random_state=0)
    grid = {"model__neurons": [4 * (i + 1) for i in range(candidates)]}
    return GridSearchCV(model, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                        n_jobs=n_jobs, refit=refit)


MODES = ("serial", "loky", "sweep", "sweep-fastpath", "sweep-plain")


def run_mode(mode: str, session: Any, args: Any, X: np.ndarray,
             y: np.ndarray) -> tuple[float, float, dict[str, Any], list[float]]:
    """(CV seconds, refit seconds, best params, mean test scores) of one way."""
    import joblib

    if mode.startswith("sweep"):
        session.backend.paths = TrainingPaths(fast=mode != "sweep-plain",
                                              compiled_loop=mode == "sweep")
        search = make_search(args.epochs, -1, args.candidates, refit=False)
        start = time.perf_counter()
        search.fit(X, y)
        cv = time.perf_counter() - start
        refit = session.refit(search, X, y).wall_seconds or 0.0
        return cv, refit, search.best_params_, list(search.cv_results_["mean_test_score"])
    search = make_search(args.epochs, 1 if mode == "serial" else -1, args.candidates,
                         refit=True)
    with joblib.parallel_config(backend="loky"):
        start = time.perf_counter()
        search.fit(X, y)
        total = time.perf_counter() - start
    return (total - search.refit_time_, search.refit_time_, search.best_params_,
            list(search.cv_results_["mean_test_score"]))


def consecutive_fits(fits: list[Any]) -> list[tuple[Any, Any]]:
    """Pairs of fits that ran one after the other on the same worker, less than
    2 s apart (longer: a worker idle between two searches)."""
    by_pid: dict[int, list[Any]] = {}
    for f in fits:
        if f.started is not None and f.ended is not None:
            by_pid.setdefault(f.pid, []).append(f)
    pairs = []
    for runs in by_pid.values():
        runs.sort(key=lambda f: f.started)
        pairs += [(a, b) for a, b in zip(runs, runs[1:], strict=False)
                  if b.started - a.ended < 2.0]
    return pairs


def dispatch_gaps(fits: list[Any]) -> list[float]:
    """Per fit, the time a worker waited between finishing one fit (clean-up done,
    result handed to Dask) and starting the next: Dask's round trip plus sweep's
    bookkeeping."""
    return [b.started - a.ended for a, b in consecutive_fits(fits)]


def worker_overheads(fits: list[Any]) -> list[float]:
    """Per fit, worker time between one fit's start and the next one's on the same
    worker, less the fit itself: clean-up, bookkeeping, and waiting for the next task."""
    return [b.started - a.started - a.seconds for a, b in consecutive_fits(fits)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="../shared/data/pima-indians-diabetes.csv")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=4, help="grid size (x 3 folds)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--keras-backend", default=None, help="e.g. jax (sweep modes only)")
    parser.add_argument("--output", default="bench-results")
    args = parser.parse_args()
    data = np.loadtxt(args.csv, delimiter=",", dtype="float32")
    X, y = data[:, :8], data[:, 8].astype(int)
    cv: dict[str, list[float]] = {m: [] for m in MODES}
    refit: dict[str, list[float]] = {m: [] for m in MODES}
    best: dict[str, Any] = {}
    means: dict[str, list[float]] = {}
    start = time.perf_counter()
    with sweep.cluster("local", workers=args.workers, seed=0,
                       keras_backend=args.keras_backend) as session:
        startup = time.perf_counter() - start
        for rep in range(args.reps):
            order = MODES if rep % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                seconds, refit_seconds, best[mode], means[mode] = run_mode(
                    mode, session, args, X, y)
                cv[mode].append(seconds)
                refit[mode].append(refit_seconds)
                print(f"{mode}: CV {seconds:.1f} s, refit {refit_seconds:.1f} s", flush=True)
        fits = [f for f in session.fits if not f.refit]
    report(args, cv, refit, best, means, startup, fits)


def report(args: Any, cv: dict[str, list[float]], refit: dict[str, list[float]],
           best: dict[str, Any], means: dict[str, list[float]], startup: float,
           fits: list[Any]) -> None:
    med = {m: statistics.median(t) for m, t in cv.items()}
    med_refit = {m: statistics.median(t) for m, t in refit.items()}
    n_fits = 3 * args.candidates
    plain = [f.seconds for f in fits if f.fit_path == "keras"]
    fast = [f.seconds for f in fits if f.fit_path == "fast path"]
    looped = [f.seconds for f in fits if f.fit_path == "compiled loop"]
    # idle share: wall x workers not spent inside fits, per fit (plain sweep); it
    # includes waiting at the end of the grid for the last, longest fit
    idle = (med["sweep-plain"] * args.workers - sum(plain) / args.reps) / n_fits
    gaps = worker_overheads(fits)
    overhead = statistics.median(gaps) if gaps else float("nan")
    cleanup = statistics.median((f.cleanup_seconds or 0.0) for f in fits)
    waits = dispatch_gaps(fits)
    dispatch = statistics.median(waits) if waits else float("nan")
    serial_means = np.array(means["serial"])
    end_to_end = {m: med[m] + med_refit[m] for m in MODES}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "grid": f"8-N-1 network, Pima, batch 10, epochs {args.epochs}, {args.candidates} "
                f"candidates x 3 folds = {n_fits} fits",
        "keras_backend": args.keras_backend or "tensorflow",
        "workers": args.workers, "reps": args.reps,
        "median_cv_seconds": med, "median_refit_seconds": med_refit,
        "all_cv_seconds": cv, "all_refit_seconds": refit,
        "mean_fit_seconds": {"plain": statistics.mean(plain) if plain else None,
                             "fast": statistics.mean(fast) if fast else None,
                             "compiled_loop": statistics.mean(looped) if looped else None},
        "cv_speedup_vs_serial": {m: med["serial"] / med[m] for m in MODES},
        "cv_speedup_vs_loky": {m: med["loky"] / med[m] for m in MODES},
        "end_to_end_speedup_vs_serial": {m: end_to_end["serial"] / end_to_end[m]
                                         for m in MODES},
        "end_to_end_speedup_vs_loky": {m: end_to_end["loky"] / end_to_end[m] for m in MODES},
        "parallel_efficiency_plain": med["serial"] / (med["sweep-plain"] * args.workers),
        "dispatch_wait_per_fit_s": dispatch,
        "dispatch_wait_p90_s": float(np.percentile(waits, 90)) if waits else None,
        "worker_overhead_per_fit_s": overhead,
        "worker_overhead_p90_s": float(np.percentile(gaps, 90)) if gaps else None,
        "cleanup_per_fit_s": cleanup,
        "idle_per_fit_s": idle,
        "mean_test_scores": means,
        "max_score_difference_vs_serial": {
            m: float(np.max(np.abs(np.array(v) - serial_means))) for m, v in means.items()},
        "worker_startup_s": startup,
        "peak_worker_rss_mb": max(f.rss for f in fits) / 2**20,
        "best_params": best,
        "best_params_agree": len({json.dumps(b, sort_keys=True) for b in best.values()}) == 1,
        "fits": [{k: getattr(f, k) for k in ("pid", "started", "ended", "seconds",
                                        "cleanup_seconds", "fit_path", "candidate", "split")}
                 for f in fits],
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    names = {"serial": "serial `n_jobs=1` (loky)", "loky": "recipe `n_jobs=-1` (loky)",
             "sweep": "sweep, compiled loop (default)",
             "sweep-fastpath": "sweep, fast path of Keras' fit (compiled loop off)",
             "sweep-plain": "sweep, fast path off"}
    table = [
        f"Machine: {result['machine']}; {result['grid']}; Keras backend "
        f"{result['keras_backend']}; {args.workers} workers; median of {args.reps} interleaved "
        "runs (order reversed every other run).", "",
        "| way | CV phase (s) | refit (s) | CV speed-up vs serial | vs recipe | "
        "end to end vs recipe |", "|---|---|---|---|---|---|",
    ]
    for m in MODES:
        table.append(f"| {names[m]} | {med[m]:.1f} | {med_refit[m]:.1f} | "
                     f"{result['cv_speedup_vs_serial'][m]:.2f}x | "
                     f"{result['cv_speedup_vs_loky'][m]:.2f}x | "
                     f"{result['end_to_end_speedup_vs_loky'][m]:.2f}x |")
    mean_fit = result["mean_fit_seconds"]
    table += ["", f"Mean fit in a worker: {mean_fit['plain'] or 0:.2f} s plain, "
              f"{mean_fit['fast'] or 0:.2f} s fast path, "
              f"{mean_fit['compiled_loop'] or 0:.2f} s compiled loop. Parallel efficiency "
              "(fast path off) "
              f"{result['parallel_efficiency_plain']:.0%}; per fit (medians): dispatch (a "
              f"worker waiting for its next fit) {dispatch * 1000:.1f} ms, clean-up after "
              f"the fit {cleanup * 1000:.0f} ms, worker time outside fits in all "
              f"{overhead * 1000:.0f} ms; idle "
              f"worker time per fit incl. the grid's tail {idle * 1000:.0f} ms; "
              f"worker start-up (Keras import, warm "
              f"pool) {startup:.1f} s; peak worker memory {result['peak_worker_rss_mb']:.0f} "
              f"MB; best parameters agree across the five ways: {result['best_params_agree']} "
              f"({best}); largest difference of a mean test score from serial's: "
              + ", ".join(f"{m} {d:.2g}" for m, d in
                          result["max_score_difference_vs_serial"].items()) + "."]
    (out / "bench.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
