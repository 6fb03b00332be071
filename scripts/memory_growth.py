#!/usr/bin/env python
"""Measure how a TensorFlow worker's memory grows per fit, with and without recycling.

Runs the recipe's network (8-12-1) on the Pima data, one worker, FITS sequential fits,
and reports the resident memory after each fit (sweep records it) as MB per fit
(least-squares slope), first and last values, and the peak with recycling on.

    python scripts/memory_growth.py --csv ../shared/data/pima-indians-diabetes.csv --fits 60
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, KFold

import sweep
from sweep.models import mlp


def run(X, y, fits: int, recycle: int | None) -> list[dict]:
    model = KerasClassifier(model=mlp, model__neurons=12, loss="binary_crossentropy",
                            optimizer="adam", epochs=2, batch_size=32, verbose=0)
    grid = GridSearchCV(model, {"model__activation": ["relu"] * (fits // 2)}, n_jobs=-1,
                        cv=KFold(2))
    with sweep.cluster("local", workers=1, seed=0, recycle_after_fits=recycle or 0) as session:
        grid.fit(X, y)
        return list(session.fits)


def summary(records: list[dict]) -> dict:
    rss = np.array([r["rss"] for r in records]) / 2**20
    slope = float(np.polyfit(np.arange(len(rss)), rss, 1)[0])
    return {"fits": len(rss), "mb_per_fit": round(slope, 2), "first_mb": round(rss[0], 1),
            "last_mb": round(rss[-1], 1), "peak_mb": round(rss.max(), 1),
            "processes": len({r["pid"] for r in records})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="../shared/data/pima-indians-diabetes.csv")
    parser.add_argument("--fits", type=int, default=60)
    parser.add_argument("--recycle", type=int, default=20)
    args = parser.parse_args()
    data = np.loadtxt(args.csv, delimiter=",", dtype="float32")
    X, y = data[:, :8], data[:, 8].astype(int)
    report = {"no_recycling": summary(run(X, y, args.fits, None)),
              f"recycle_after_{args.recycle}": summary(run(X, y, args.fits, args.recycle))}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
