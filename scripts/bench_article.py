#!/usr/bin/env python
"""Benchmark: the article's own scripts at full size, under sweep and under the recipe's loky.

Each experiment script (``scripts/article/expN_*.py``) runs as its own process,
once with ``--cluster local --workers W`` (sweep, its default training path) and
once with ``--cluster loky --workers W`` (``GridSearchCV(n_jobs=W)`` as the recipe
publishes it), in alternating order per repetition. Reported per experiment: the
search's wall time each way (from the script's own last line), the ratio, and
whether both found the same best parameters.

    python scripts/bench_article.py --only exp4_init exp5_activation exp7_neurons \\
        --output docs/measurements/bench-article.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "article"
WAYS = ("sweep", "loky")


def run(name: str, way: str, workers: int) -> tuple[float, str]:
    """(search seconds, best line) of one experiment script run one way."""
    cluster = "local" if way == "sweep" else "loky"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--cluster", cluster,
                           "--workers", str(workers)], capture_output=True, text=True,
                          cwd=HERE, env=env, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"{name} ({way}) failed:\n{proc.stderr[-3000:]}")
    seconds = re.search(r"folds in ([\d.]+) s\)", proc.stdout)
    best = re.search(r"^Best: .*$", proc.stdout, re.MULTILINE)
    assert seconds and best, proc.stdout[-2000:]
    return float(seconds.group(1)), best.group(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", required=True, help="experiment names")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = {}
    for name in args.only:
        seconds: dict[str, list[float]] = {w: [] for w in WAYS}
        best: dict[str, str] = {}
        for rep in range(args.reps):
            for way in (WAYS if rep % 2 == 0 else tuple(reversed(WAYS))):
                took, best[way] = run(name, way, args.workers)
                seconds[way].append(took)
                print(f"{name} {way}: {took:.1f} s  {best[way]}", flush=True)
        med = {w: statistics.median(v) for w, v in seconds.items()}
        rows[name] = {"sweep_seconds": med["sweep"], "loky_seconds": med["loky"],
                      "ratio": med["loky"] / med["sweep"], "best": best,
                      "same_best": best["sweep"].split(" using ")[1]
                      == best["loky"].split(" using ")[1], "samples": seconds}
    print(f"\n{'experiment':<24} {'sweep s':>8} {'loky s':>8} {'ratio':>7}  same best")
    for name, row in rows.items():
        print(f"{name:<24} {row['sweep_seconds']:8.1f} {row['loky_seconds']:8.1f} "
              f"{row['ratio']:6.2f}x  {row['same_best']}")
    if args.output:
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "workers": args.workers, "reps": args.reps,
            "experiments": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
