#!/usr/bin/env python
"""Chaos soak: a sweep whose workers are SIGKILLed every few seconds, and recycled often.

A grid of tiny Keras fits runs on a local cluster while a thread SIGKILLs a busy
worker process every ``--every`` seconds (the nanny starts a new one) and each
worker is recycled after ``--recycle`` fits. Then the same grid runs without
faults. The claim: the sweep completes, no fit is lost or recorded failed, and
every per-fold score equals the fault-free run's, bitwise.

    python scripts/chaos.py                       # the reported size: 216 fits, >= 20 kills
    python scripts/chaos.py --candidates 5 --every 1 --recycle 3 --min-kills 3    # CI size

Prints one line of figures and, with ``--output``, writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def search(candidates: int, epochs: int) -> Any:
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from keras_sweep.spec.models import mlp

    estimator = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam",
                                epochs=epochs, batch_size=32, verbose=0)
    grid = {"model__neurons": list(range(1, candidates + 1))}
    return GridSearchCV(estimator, grid, cv=StratifiedKFold(3, shuffle=True, random_state=0),
                        n_jobs=-1, refit=False)


def scores(fitted: Any) -> np.ndarray:
    return np.array([fitted.cv_results_[f"split{i}_test_score"] for i in range(3)])


def soak(candidates: int = 72, epochs: int = 4, workers: int = 3, every: float = 3.0,
         recycle: int = 10, seed: int = 11, max_retries: int = 5) -> dict[str, Any]:
    """Run the grid under kills and recycling, then fault-free; return the figures."""
    from sklearn.datasets import load_breast_cancer

    import keras_sweep as sweep

    X, y = load_breast_cancer(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype("float32")
    kills: list[int] = []
    misses: list[str] = []
    stop = threading.Event()
    rng = random.Random(seed)
    with sweep.cluster("local", workers=workers, seed=seed, recycle_after_fits=recycle,
                       max_retries=max_retries) as session:

        def killer() -> None:
            # Poll often; kill a busy worker once ``every`` seconds have passed and
            # ``workers`` more fits have finished since the last kill: a steady rate
            # that still lets the sweep move on. (A fixed tick missed most chances once
            # fits got short; a rate alone outpaced the restarts: every fit died.)
            pids: dict[str, int] = {}
            last, done = time.perf_counter(), 0
            while not stop.wait(0.1):
                if time.perf_counter() - last < every or len(session.fits) < done + workers:
                    continue
                try:
                    busy = [a for a, keys in session.client.processing().items() if keys]
                    unknown = [a for a in busy if a not in pids]
                    if unknown:  # a worker closing meanwhile is left out, not raised
                        pids.update(session.client.run(os.getpid, workers=unknown,
                                                       on_error="ignore"))
                except Exception as exc:  # the cluster is closing: keep the thread alive
                    misses.append(f"{type(exc).__name__}: {exc}")
                    continue
                known = [a for a in busy if a in pids]
                if known:
                    pid = pids.pop(rng.choice(known))  # its restart gets a new address
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass
                    last, done = time.perf_counter(), len(session.fits)

        thread = threading.Thread(target=killer, daemon=True)
        start = time.perf_counter()
        thread.start()
        faulty = search(candidates, epochs).fit(X, y)
        stop.set()
        thread.join()
        chaos_seconds = time.perf_counter() - start
        fits = list(session.fits)
    with sweep.cluster("local", workers=workers, seed=seed, max_retries=max_retries):
        start = time.perf_counter()
        clean = search(candidates, epochs).fit(X, y)
        clean_seconds = time.perf_counter() - start
    failed = [f for f in fits if f.fit_error]
    return {
        "date": time.strftime("%Y-%m-%d"), "fits": candidates * 3, "workers": workers,
        "kills": len(kills), "recycles": sum(1 for f in fits if f.recycle_due),
        "records": len(fits), "failed": len(failed),
        "lost": sum(1 for f in fits if f.worker_lost),
        "equal": bool(np.array_equal(scores(faulty), scores(clean))),
        "chaos_seconds": round(chaos_seconds, 1), "clean_seconds": round(clean_seconds, 1),
        "errors": sorted({str(f.fit_error).strip().splitlines()[-1] for f in failed}),
        "killer_errors": misses[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=72, help="grid size (x 3 folds)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--recycle", type=int, default=10, help="recycle after N fits")
    parser.add_argument("--min-kills", type=int, default=20)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    figures = soak(args.candidates, args.epochs, args.workers, args.every, args.recycle)
    print(json.dumps(figures))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=1))
    ok = (figures["kills"] >= args.min_kills and figures["failed"] == 0
          and figures["lost"] == 0 and figures["equal"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
