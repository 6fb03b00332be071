#!/usr/bin/env python
"""Benchmark: a worker keeping TensorFlow's kernel cache across fits, against clearing it.

Keras' ``clear_session`` after each fit clears TensorFlow's kernel cache, so each fit's
first call of its (shared) traced epoch and of its traced predict instantiates them again
(Grappler). Workers now keep the cache where that is exact and bounded
(``keras_sweep/worker/fit.py::kernels_kept``). This runs the recipe's network (8-12-1,
Adam, batch 10, uniform initializer) on Pima, 3-fold, on a local cluster of **one**
worker (no second process sharing the cores), both ways interleaved per repetition (a new
cluster each), fits of 1, 20 and 100 epochs; reported: the median seconds of a fit inside
the worker per way and epochs, and the ratio.

    python scripts/bench_kernel_cache.py --reps 3 --output docs/measurements/bench-kernel-cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent / "article"))
from report import cpu_model  # noqa: E402  (the article page's helper)

PIMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pima-indians-diabetes.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs="*", default=[1, 20, 100])
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import dask.config
    import numpy as np
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    import keras_sweep as sweep
    from keras_sweep.spec.models import mlp

    data = np.loadtxt(PIMA, delimiter=",")
    X, y = data[:, :8].astype("float32"), data[:, 8].astype("int64")
    cv = StratifiedKFold(3, shuffle=True, random_state=7)
    rates = list(np.linspace(0.001, 0.01, args.candidates))
    seconds: dict[str, dict[int, list[float]]] = {
        way: {e: [] for e in args.epochs} for way in ("kept", "cleared")}
    for rep in range(args.reps):
        for way in ("kept", "cleared") if rep % 2 == 0 else ("cleared", "kept"):
            with dask.config.set({"sweep.worker.keep-kernels": way == "kept"}), \
                    sweep.cluster("local", workers=1, seed=7) as session:
                for epochs in args.epochs:
                    model = KerasClassifier(
                        model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                        batch_size=10, epochs=epochs, model__kernel_initializer="uniform",
                        metrics=["accuracy"])
                    before = len(session.fits)
                    GridSearchCV(model, {"optimizer__learning_rate": rates}, cv=cv,
                                 refit=False, n_jobs=-1).fit(X, y)
                    fits = session.fits[before:]
                    # each way's first fit of the session makes the template: left out
                    seconds[way][epochs] += [f.seconds for f in fits if f.trace == "reused"]
            print(f"rep {rep + 1}/{args.reps}: {way} done", flush=True)
    rows = []
    for epochs in args.epochs:
        kept = statistics.median(seconds["kept"][epochs])
        cleared = statistics.median(seconds["cleared"][epochs])
        rows.append({"epochs": epochs, "kept_s": kept, "cleared_s": cleared,
                     "saved_s": cleared - kept, "speedup": cleared / kept,
                     "fits_per_way": len(seconds["kept"][epochs])})
        print(f"{epochs:>4} epochs: fit {cleared * 1000:.0f} ms cleared, {kept * 1000:.0f} ms "
              f"kept: {cleared - kept:+.3f} s saved per fit ({cleared / kept:.2f}x)")
    if args.output:
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
            "cpu": cpu_model(), "cpus": os.cpu_count(),
            "command": f"python scripts/bench_kernel_cache.py --reps {args.reps}",
            "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
