"""Shared by the seven plain-Python article scripts: arguments, data, run, summary.

Each ``expN_*.py`` is the article's script modernised (Keras 3, scikeras, sweep's
public API): its own ``create_model`` and grid, then ``recipe.main(...)``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import keras_sweep as sweep

DEFAULT_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "pima-indians-diabetes.csv"


def main(create_model: Any, param_grid: dict[str, list[Any]], *, epochs: int = 100,
         batch_size: int = 10, seed: int = 7, **wrapper: Any) -> GridSearchCV:
    """Parse the command line, run the grid on a sweep cluster, print the summary."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="the Pima CSV (no header)")
    parser.add_argument("--quick", action="store_true", help="2 epochs per fit, same grid")
    parser.add_argument("--cluster", default="local",
                        help="sweep backend (local, slurm, ...), or loky: the recipe's own "
                        "n_jobs=-1 without sweep (for comparison)")
    parser.add_argument("--workers", type=int, help="worker processes (default: cores)")
    parser.add_argument("--seed", type=int, default=seed)
    args = parser.parse_args()
    # load the dataset: 8 features, the label last
    dataset = np.loadtxt(args.csv, delimiter=",", dtype="float32")
    X, Y = dataset[:, 0:8], dataset[:, 8].astype(int)
    model = KerasClassifier(model=create_model, epochs=2 if args.quick else epochs,
                            batch_size=batch_size, verbose=0, **wrapper)
    grid = dict(param_grid)
    if args.quick and "epochs" in grid:
        grid["epochs"] = [2]
    search = GridSearchCV(estimator=model, param_grid=grid, n_jobs=-1,
                          cv=StratifiedKFold(3, shuffle=True, random_state=args.seed))
    start = time.perf_counter()
    if args.cluster == "loky":  # the recipe as published: joblib's default backend
        search.set_params(n_jobs=args.workers or -1)
        result = search.fit(X, Y)
    else:
        with sweep.cluster(args.cluster, workers=args.workers, seed=args.seed):
            result = search.fit(X, Y)
    # summarize results, as the article does
    print(f"Best: {result.best_score_:f} using {result.best_params_}")
    cv = result.cv_results_
    for mean, stdev, param in zip(cv["mean_test_score"], cv["std_test_score"], cv["params"],
                                  strict=True):
        print(f"{mean:f} ({stdev:f}) with: {param!r}")
    print(f"({len(cv['params'])} candidates x 3 folds in {time.perf_counter() - start:.1f} s)")
    return result
