#!/usr/bin/env python
"""Benchmark: per-step and per-fit cost of each way one worker trains a small Keras model.

In one process pinned to one thread (as a sweep worker is), op determinism on,
the recipe net (8 -> N -> 1, batch 10) on Pima's first 512 rows: Keras' ``fit``
as it comes, the fast path (whole epochs per Keras execution), sweep's
compiled loop tracing its own epoch, the loop reusing the trace of an earlier
fit of the same kind of model (``sweep.fit.share-traces``, the default), the
loop XLA-compiled, and K loops fused into one traced function per epoch (K = 1,
3, 7; per member: a measurement, not a shipped path). Each way fits and scores
the same seeded model for a few epochs and for many; the difference gives the
cost per step without the one-off tracing, the short run the fixed cost per
fit. Repetitions are interleaved, medians reported; ratios within one run are
the claim, not seconds.

    python scripts/bench_loop.py --reps 5 --output docs/measurements/bench-loop.json
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

WAYS = ("keras", "fast path", "compiled loop", "compiled loop, shared trace",
        "compiled loop + XLA")
#: fused ways: K models trained in one traced function per epoch (measured, not shipped)
FUSED = (1, 3, 7)
META = {"n_features_in_": 8, "n_classes_": 2, "target_type_": "binary",
        "n_outputs_expected_": 1}
PIMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pima-indians-diabetes.csv"


def _estimator(epochs: int, neurons: int, dropout: float) -> Any:
    from scikeras.wrappers import KerasClassifier

    from keras_sweep.spec.models import mlp

    return KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam",
                           batch_size=10, epochs=epochs, verbose=0, model__neurons=neurons,
                           model__kernel_initializer="uniform", model__dropout=dropout)


def fit_seconds(way: str, epochs: int, X: np.ndarray, y: np.ndarray, neurons: int,
                dropout: float) -> tuple[float, str]:
    """Seconds of one seeded fit the given way (and the path it took)."""
    from keras_sweep.protocol import TrainingPaths
    from keras_sweep.worker.fit import isolated_fit
    from keras_sweep.worker.training import fastpath

    est = _estimator(epochs, neurons, dropout)
    start = time.perf_counter()
    paths = TrainingPaths(fast=way != "keras", compiled_loop=way.startswith("compiled loop"),
                          xla=way.endswith("XLA"), share_traces=way.endswith("shared trace"))
    with fastpath.enabled(est, paths) as path, \
            isolated_fit(3):
        est.fit(X, y)
        est.score(X, y)  # as a grid search scores each fit (the training rows here)
    shared = ", shared trace" if path.trace in ("new", "reused") else ""
    return time.perf_counter() - start, path.name + shared


def fused_step_ms(k: int, epochs: int, X: np.ndarray, y: np.ndarray, neurons: int,
                  dropout: float) -> float:
    """Median ms per member-step of ``k`` seeded models trained in one traced function per epoch.

    Each member keeps its own data order, optimizer and metrics; the function
    calls each member's epoch (sweep's loop: Keras' train step over its batches)
    in turn. Timed per epoch call after the first (tracing) one, so the figure
    is the steady-state cost the fusion changes; with ``k=1`` it is the
    compiled loop's own epoch call.
    """
    import keras
    import tensorflow as tf

    from keras_sweep._compat.keras import array_data_adapter, array_inputs
    from keras_sweep.spec.models import mlp
    from keras_sweep.worker.training import loop

    members = []
    for i in range(k):
        keras.utils.set_random_seed(3 + i)
        model = mlp(META, neurons=neurons, kernel_initializer="uniform", dropout=dropout)
        model.compile(loss="binary_crossentropy", optimizer="adam")
        inputs = array_inputs(array_data_adapter()(X, y, batch_size=10, shuffle=True))
        orders = loop.epoch_orders(loop.permutations(inputs.num_samples, True))
        members.append((model, loop.epoch_function(model, inputs).python_function, orders))
    steps = -(-len(X) // 10)

    @tf.function
    def fused(*orders: Any) -> None:
        for (_, epoch, _), order in zip(members, orders, strict=True):
            epoch(order)

    took = []
    for _ in range(epochs):
        for model, _, _ in members:
            model.reset_metrics()
        orders = [next(orders) for _, _, orders in members]
        start = time.perf_counter()
        fused(*orders)
        took.append(time.perf_counter() - start)
    return 1000 * statistics.median(took[1:]) / (k * steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--short", type=int, default=2, help="epochs of the short fit")
    parser.add_argument("--long", type=int, default=22, help="epochs of the long fit")
    parser.add_argument("--neurons", type=int, default=12)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_sweep.worker.setup import enable_determinism, pin_tensorflow_threads

    pin_tensorflow_threads(1)
    enable_determinism()
    data = np.loadtxt(PIMA, delimiter=",")
    X, y = data[:512, :8].astype("float32"), data[:512, 8].astype("int64")
    steps = -(-len(X) // 10) * (args.long - args.short)
    ways = list(WAYS)
    seconds: dict[str, dict[int, list[float]]] = {w: {args.short: [], args.long: []}
                                                   for w in ways}
    fit_seconds(WAYS[3], args.short, X, y, args.neurons, args.dropout)  # makes the trace
    for rep in range(args.reps):
        order = ways if rep % 2 == 0 else list(reversed(ways))
        for epochs in (args.short, args.long):
            for way in order:
                took, path = fit_seconds(way, epochs, X, y, args.neurons, args.dropout)
                assert path == way, (path, way)
                seconds[way][epochs].append(took)
    fused: dict[int, list[float]] = {k: [] for k in FUSED}
    for rep in range(args.reps):
        for k in (FUSED if rep % 2 == 0 else tuple(reversed(FUSED))):
            fused[k].append(fused_step_ms(k, args.long, X, y, args.neurons, args.dropout))
    rows = {}
    for way in ways:
        short, long = (statistics.median(seconds[way][e]) for e in (args.short, args.long))
        rows[way] = {"ms_per_step": 1000 * (long - short) / steps,
                     "fit_seconds_short": short, "fit_seconds_long": long}
    base = rows["keras"]["ms_per_step"]
    print(f"{'way':<28} {'ms/step':>8} {'vs keras':>9} {'short fit s':>12} {'long fit s':>11}")
    for way, row in rows.items():
        print(f"{way:<28} {row['ms_per_step']:8.3f} {base / row['ms_per_step']:8.2f}x "
              f"{row['fit_seconds_short']:12.2f} {row['fit_seconds_long']:11.2f}")
    fused_rows = {k: statistics.median(v) for k, v in fused.items()}
    print("\nfused: steady-state ms per member-step (one epoch call of K members)")
    for k, ms in fused_rows.items():
        print(f"K={k:<3} {ms:8.3f}  ({fused_rows[1] / ms:.2f}x K=1)")
    if args.output:
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "args": {k: str(v) for k, v in vars(args).items()},
            "steps_between_short_and_long": steps, "ways": rows, "seconds": seconds,
            "fused_ms_per_member_step": fused_rows, "fused_samples": fused,
        }, indent=1))


if __name__ == "__main__":
    main()
