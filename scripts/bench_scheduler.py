#!/usr/bin/env python
"""Scheduler and dispatch overhead, measured with fits that do nothing or only sleep.

Three measurements on a LocalCluster (default 2 workers), in one run:

1. ``dask``: N no-op tasks through plain ``client.map`` — Dask's own per-task cost;
2. ``sweep``: N no-op "fits" through sweep's joblib backend (what a real fit pays
   around itself: joblib dispatch, one Dask future per fit, seeding, Keras clean-up,
   the per-fit report back to the driver, the journal write);
3. ``sleep``: M fits of a fixed duration (0.2 s) through sweep's backend: the
   overhead as a share of useful time, ``wall x workers / (M x 0.2 s) - 1``.

Plus the journal's commit rate (one fsync'ed SQLite transaction per fit). The
closing lines extrapolate to a 1,000-worker cluster; see README "Performance".

    python scripts/bench_scheduler.py --noop 10000 --sweep-noop 500 --sleep 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import joblib

import keras_sweep as sweep
from keras_sweep.store.journal import Journal
from keras_sweep.store.records import FitRecord


def noop(i: int) -> int:
    return i


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noop", type=int, default=10_000)
    parser.add_argument("--sweep-noop", type=int, default=500)
    parser.add_argument("--sleep", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--output", default="bench-results")
    args = parser.parse_args()
    out: dict[str, float | int | str] = {"workers": args.workers}
    # recycling off: thousands of no-op fits would restart workers every 100 of them
    with tempfile.TemporaryDirectory() as tmp, sweep.cluster(
            "local", workers=args.workers, seed=0, journal=Path(tmp) / "j.sqlite",
            recycle_after_fits=0) as session:
        client = session.client
        client.gather(client.map(noop, range(200)))  # warm up
        start = time.perf_counter()
        client.gather(client.map(noop, range(args.noop), pure=False))
        dask_wall = time.perf_counter() - start
        out["dask_noop_tasks"] = args.noop
        out["dask_per_task_ms"] = 1000 * dask_wall / args.noop

        start = time.perf_counter()
        joblib.Parallel(n_jobs=-1)(joblib.delayed(noop)(i) for i in range(args.sweep_noop))
        sweep_wall = time.perf_counter() - start
        out["sweep_noop_fits"] = args.sweep_noop
        out["sweep_per_fit_ms"] = 1000 * sweep_wall / args.sweep_noop
        out["sweep_per_fit_worker_ms"] = 1000 * sweep_wall * args.workers / args.sweep_noop

        start = time.perf_counter()
        joblib.Parallel(n_jobs=-1)(joblib.delayed(nap)(args.seconds)
                                   for _ in range(args.sleep))
        sleep_wall = time.perf_counter() - start
        ideal = args.sleep * args.seconds / args.workers
        out["sleep_fits"] = args.sleep
        out["sleep_fit_seconds"] = args.seconds
        out["sleep_wall_s"] = sleep_wall
        out["sleep_ideal_s"] = ideal
        out["sleep_overhead_pct"] = 100 * (sleep_wall / ideal - 1)

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "rate.sqlite")
        result = {"test_scores": 0.5, "fit_time": 1.0}
        n = 300
        start = time.perf_counter()
        for i in range(n):
            journal.record(f"key-{i}", result, FitRecord(seconds=1.0))
        out["journal_ms_per_fit"] = 1000 * (time.perf_counter() - start) / n
        journal.close()

    per_fit = float(out["sweep_per_fit_worker_ms"]) / 1000
    driver_ms = float(out["sweep_per_fit_ms"])
    lines = [
        f"Per task, plain Dask (client.map, {args.noop} no-op tasks, {args.workers} workers): "
        f"{out['dask_per_task_ms']:.2f} ms",
        f"Per fit, sweep's backend ({args.sweep_noop} no-op fits): {driver_ms:.1f} ms of "
        f"wall time, {per_fit * 1000:.0f} ms of worker time (seeding, Keras clean-up, report)",
        f"{args.sleep} fits of {args.seconds} s on {args.workers} workers: {sleep_wall:.1f} s "
        f"wall vs {ideal:.1f} s ideal: {out['sleep_overhead_pct']:.1f} % overhead",
        f"Journal commit: {out['journal_ms_per_fit']:.2f} ms per fit",
    ]
    # Extrapolation to 1,000 workers. Central, serial costs per fit: the scheduler's
    # per-task work (bounded here by the plain-Dask cost per task, measured with the
    # client and 2 workers on the same 2 cores) and the journal commit. Worker-side
    # costs (seeding, Keras clean-up) run in parallel on every worker and do not add up.
    central_ms = float(out["dask_per_task_ms"]) + float(out["journal_ms_per_fit"])
    for fit_s in (10.0, 60.0):
        rate = 1000 / fit_s
        lines.append(
            f"1,000 workers, fits of {fit_s:.0f} s: {rate:.0f} fits/s; scheduler + journal "
            f"~{central_ms:.1f} ms per fit -> {100 * rate * central_ms / 1000:.0f} % of one "
            f"core; per-fit worker overhead {per_fit:.2f} s = "
            f"{100 * per_fit / fit_s:.1f} % of each fit")
    out["summary"] = " | ".join(lines)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-scheduler.json").write_text(json.dumps(out, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
