#!/usr/bin/env python
"""How a TensorFlow worker's memory grows over sequential fits, and what it costs to stop it.

Runs the recipe's network (8-12-1) on the Pima data on one worker, FITS sequential
fits per configuration, and reports the resident memory after each fit (sweep records
it): growth from the first fit to the last (MB and %), MB per fit (least-squares
slope), peak, processes used, and the wall time of the whole run (so a recycling
worker's restarts are paid for in the number). Configurations:

* ``full-gc``: a full garbage collection after every fit (Keras' own clear_session);
* ``freeze``: sweep's default: frozen heap, one full collection every 100 fits;
* ``freeze-never-full``: frozen heap, never a full collection;
* ``freeze+recycle-N``: the default plus a worker restart every N fits.

    python scripts/memory_growth.py --fits 100 --recycle 50 --output bench-results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, KFold

import keras_sweep as sweep
from keras_sweep.spec.models import mlp


def run(X: np.ndarray, y: np.ndarray, fits: int, recycle: int,
        config: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
    model = KerasClassifier(model=mlp, model__neurons=12, loss="binary_crossentropy",
                            optimizer="adam", epochs=2, batch_size=32, verbose=0)
    grid = GridSearchCV(model, {"model__activation": ["relu"] * (fits // 2)}, n_jobs=-1,
                        cv=KFold(2), refit=False)
    with dask.config.set(config), sweep.cluster(
            "local", workers=1, seed=0, recycle_after_fits=recycle) as session:
        start = time.perf_counter()
        grid.fit(X, y)
        return list(session.fits), time.perf_counter() - start


def summary(records: list[Any], wall: float) -> dict[str, Any]:
    rss = np.array([r.rss for r in records]) / 2**20
    slope = float(np.polyfit(np.arange(len(rss)), rss, 1)[0])
    return {"fits": len(rss), "growth_mb": round(rss[-1] - rss[0], 1),
            "growth_pct": round(100 * (rss[-1] / rss[0] - 1), 1),
            "mb_per_fit": round(slope, 2), "first_mb": round(rss[0], 1),
            "last_mb": round(rss[-1], 1), "peak_mb": round(rss.max(), 1),
            "processes": len({r.pid for r in records}), "wall_s": round(wall, 1),
            "median_cleanup_ms": round(1000 * float(np.median(
                [r.cleanup_seconds or 0.0 for r in records])), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="../shared/data/pima-indians-diabetes.csv")
    parser.add_argument("--fits", type=int, default=100)
    parser.add_argument("--recycle", type=int, default=50)
    parser.add_argument("--output", default="bench-results")
    args = parser.parse_args()
    data = np.loadtxt(args.csv, delimiter=",", dtype="float32")
    X, y = data[:, :8], data[:, 8].astype(int)
    configs: dict[str, tuple[int, dict[str, Any]]] = {
        "full-gc": (0, {"sweep.worker.freeze-gc": False}),
        "freeze": (0, {}),
        "freeze-never-full": (0, {"sweep.worker.full-gc-every": 0}),
        f"freeze+recycle-{args.recycle}": (args.recycle, {}),
    }
    report = {}
    for name, (recycle, config) in configs.items():
        report[name] = summary(*run(X, y, args.fits, recycle, config))
        print(name, report[name], flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory-growth.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
