#!/usr/bin/env python
"""Benchmark: fits placed by kind of model against fits sent wherever a worker is free.

    python scripts/bench_placement.py --reps 3 --output docs/measurements/bench-placement.json
    python scripts/bench_placement.py --only exp7_neurons --reps 1      # a quick look

Each of the article's grids named (default: the three whose candidates are each a
kind of model of their own: hidden neurons, activations, optimizers) runs through
``sweep run`` on a fresh 2-worker local cluster, once with ``sweep.fit.place-by-kind``
on (the default) and once off, the two in turn and their order swapped every
repetition (this VM's speed drifts). Reported per grid: the sweep's wall seconds
(``run.json``, the cluster's start included), the fits' own seconds summed, the
templates made ("new" traces) and their seconds, the median of the paired ratios
off / on, and whether the per-fold scores of both modes are bitwise equal (they must
be: only where fits run changes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "scripts" / "article"
DEFAULT = ["exp7_neurons", "exp5_activation", "exp2_optimizer"]


def run_once(name: str, placed: bool, workers: int, out: Path) -> dict[str, Any]:
    """One ``sweep run`` of the article's grid ``name``; its figures."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               DASK_SWEEP__FIT__PLACE_BY_KIND="true" if placed else "false")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "keras_sweep", "run", f"{name}.yaml", "--workers", str(workers),
         "--output", str(out), "--no-progress", "--no-report"],
        cwd=ARTICLE, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: sweep run failed:\n{proc.stderr[-3000:]}")
    fits = pd.read_csv(out / "fits.csv")
    made = fits["trace"] == "new"
    cv = pd.read_csv(out / "cv_results.csv")
    splits = [c for c in cv.columns if c.startswith("split") and c.endswith("_test_score")]
    return {
        "placed": placed,
        "wall_seconds": json.loads((out / "run.json").read_text())["wall_seconds"],
        "process_seconds": round(elapsed, 2),
        "fit_seconds": round(float(fits["seconds"].sum()), 2),
        "new_traces": int(made.sum()),
        "new_trace_seconds": round(float(fits.loc[made, "trace_seconds"].sum()), 2),
        "kinds": int(fits["trace_kind"].nunique()),
        "scores": cv[splits].to_numpy().tobytes().hex(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=DEFAULT, help="article grids to run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", help="write the raw results here (JSON)")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name in args.only:
                for placed in ((True, False) if rep % 2 == 0 else (False, True)):
                    got = run_once(name, placed, args.workers, Path(tmp) / f"{name}-{rep}-{placed}")
                    got["rep"] = rep
                    results[name].append(got)
                    print(f"{name} rep {rep} placed={placed}: {got['wall_seconds']} s, "
                          f"{got['new_traces']} new traces", flush=True)
    summary = {}
    print("\n| grid | placed: wall s | not placed: wall s | off / on (paired median) "
          "| new traces on / off | fit seconds on / off | scores bitwise equal |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        on = [r for r in runs if r["placed"]]
        off = [r for r in runs if not r["placed"]]
        ratios = [b["wall_seconds"] / a["wall_seconds"] for a, b in zip(on, off, strict=True)]
        same = len({r["scores"] for r in runs}) == 1
        summary[name] = {
            "wall_on": statistics.median(r["wall_seconds"] for r in on),
            "wall_off": statistics.median(r["wall_seconds"] for r in off),
            "ratio_off_on": statistics.median(ratios),
            "new_on": statistics.median(r["new_traces"] for r in on),
            "new_off": statistics.median(r["new_traces"] for r in off),
            "fit_seconds_on": statistics.median(r["fit_seconds"] for r in on),
            "fit_seconds_off": statistics.median(r["fit_seconds"] for r in off),
            "scores_equal": same,
        }
        s = summary[name]
        print(f"| {name} | {s['wall_on']:.1f} | {s['wall_off']:.1f} | "
              f"**{s['ratio_off_on']:.2f}x** | {s['new_on']:.0f} / {s['new_off']:.0f} | "
              f"{s['fit_seconds_on']:.1f} / {s['fit_seconds_off']:.1f} | {same} |")
    if args.output:
        for runs in results.values():
            for r in runs:
                r.pop("scores")
        Path(args.output).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "workers": args.workers, "reps": args.reps,
            "command": "python scripts/bench_placement.py " + " ".join(sys.argv[1:]),
            "summary": summary, "runs": results}, indent=1) + "\n")
    return 0 if all(s["scores_equal"] for s in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
