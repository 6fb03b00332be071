#!/usr/bin/env python
"""Benchmark: local workers forked from a server that imported TensorFlow, against spawned.

Each repetition runs one fresh Python process per way (``sweep.worker.fork-workers``
true / false), interleaved; each process starts ``sweep.cluster("local", workers=2)``
three times in a row and records the seconds until the session is ready (the first
start includes the fork server's own imports; the later ones are what every worker
restart, recycle and replacement costs too). Reported: the median per way and start,
and the ratio.

    python scripts/bench_worker_start.py --reps 3 --output docs/measurements/bench-worker-start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "article"))
from report import cpu_model  # noqa: E402  (the article page's helper)

STARTS = 3
CHILD = """
import json, time
if __name__ == "__main__":
    import keras_sweep as sweep
    seconds = []
    for _ in range({starts}):
        began = time.perf_counter()
        with sweep.cluster("local", workers=2):
            seconds.append(time.perf_counter() - began)
    print(json.dumps(seconds))
"""


def one(fork: bool) -> list[float]:
    env = {**os.environ, "DASK_SWEEP__WORKER__FORK_WORKERS": str(fork).lower(),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(starts=STARTS)], env=env,
                         capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    runs: dict[str, list[list[float]]] = {"forked": [], "spawned": []}
    for rep in range(args.reps):
        for way, fork in (("forked", True), ("spawned", False)):
            runs[way].append(one(fork))
            print(f"rep {rep} {way}: " + ", ".join(f"{s:.1f}" for s in runs[way][-1]),
                  flush=True)
    medians = {way: [statistics.median(r[i] for r in rows) for i in range(STARTS)]
               for way, rows in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "command": "python scripts/bench_worker_start.py " + " ".join(sys.argv[1:]),
        "runs": runs, "median_seconds": medians,
        "ratio_spawned_over_forked": [s / f for s, f in zip(medians["spawned"],
                                                            medians["forked"], strict=True)],
    }
    print(json.dumps({k: result[k] for k in ("median_seconds", "ratio_spawned_over_forked")}))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
