#!/usr/bin/env python
"""Run the article's seven grid searches on one cluster and write a results page.

    python scripts/article/run_all.py                  # full size (the recipe's epochs)
    python scripts/article/run_all.py --quick          # 2 epochs, same grids (CI)
    python scripts/article/run_all.py --sample 0.5 --workers 4 --output results/article
    python scripts/article/run_all.py --resume         # after a crash: only unfinished fits

The page (README.md in the output folder) has, per experiment: the article's best,
sweep's best, the wall time, a picture (heatmap or error bars, PNG, drawn by the same
code as each experiment's report.html) and the whole grid.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from report import (
    comparison_section,
    cpu_model,
    experiment_section,
    pick_rank,
    picture,
    previous_wall_times,
)

import keras_sweep as sweep
from keras_sweep.cli.runner import JOURNAL_NAME, run
from keras_sweep.spec import reading as specmod

HERE = Path(__file__).resolve().parent
ARTICLE_BEST = {
    "exp1_batch_epochs": "0.686 (batch size 20, epochs 100)",
    "exp2_optimizer": "0.704 (Adam)",
    "exp3_sgd_lr_momentum": "0.681 (learning rate 0.01, momentum 0.0)",
    "exp4_init": "0.720 (uniform)",
    "exp5_activation": "0.723 (linear)",
    "exp6_dropout_maxnorm": "0.724 (dropout 0.2, max-norm 4)",
    "exp7_neurons": "0.715 (5 neurons)",
}
#: the article's best candidate of each experiment, as the grid names its parameters
ARTICLE_PICK = {
    "exp1_batch_epochs": {"batch_size": 20, "epochs": 100},
    "exp2_optimizer": {"optimizer": "Adam"},
    "exp3_sgd_lr_momentum": {"optimizer__learning_rate": 0.01, "optimizer__momentum": 0.0},
    "exp4_init": {"model__kernel_initializer": "uniform"},
    "exp5_activation": {"model__activation": "linear"},
    "exp6_dropout_maxnorm": {"model__dropout": 0.2, "model__max_norm": 4},
    "exp7_neurons": {"model__neurons": 5},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs per fit, same grids")
    parser.add_argument("--sample", type=float, help="stratified fraction of the rows")
    parser.add_argument("--workers", type=int, help="worker processes (default: cores)")
    parser.add_argument("--csv", help="the Pima CSV (default: ../shared/data/...)")
    parser.add_argument("--output", default="sweep-results/article")
    parser.add_argument("--only", nargs="*", help="run only these experiments")
    parser.add_argument("--resume", action="store_true",
                        help="keep the journal of an earlier run: its finished fits are not "
                             "run again (without it every fit runs: a measurement)")
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        (out / JOURNAL_NAME).unlink(missing_ok=True)
    names = args.only or list(ARTICLE_BEST)
    before = previous_wall_times(out / "README.md")  # shown beside the new times
    sections, compared, total = [], [], time.perf_counter()
    with sweep.cluster("local", workers=args.workers, seed=7, progress=True,
                       journal=out / JOURNAL_NAME) as session:
        workers = len(session.client.scheduler_info()["workers"])
        for name in names:
            overrides = {"output": str(out / name)}
            if args.quick:
                overrides.update({"fit.epochs": 2})
                if name == "exp1_batch_epochs":
                    overrides["param_grid.epochs"] = [1, 2, 3]
            if args.sample:
                overrides["data.sample"] = args.sample
            if args.csv:
                overrides["data.csv"] = args.csv
            spec = specmod.load(HERE / f"{name}.yaml", overrides)
            result = run(spec, session=session)
            print("\n".join(result.summary[:1]), flush=True)
            png = picture(result.search.cv_results_, out / f"{name}.png", name)
            sections.append(experiment_section(name, ARTICLE_BEST[name], result.search,
                                               png.name, result.wall_seconds,
                                               before.get(name)))
            compared.append((name, ARTICLE_BEST[name],
                             f"{result.search.best_score_:.3f} {result.search.best_params_}",
                             pick_rank(result.search.cv_results_, ARTICLE_PICK[name])))
    cpu = cpu_model()
    previous = ""
    if "total" in before:  # seconds on another CPU are not comparable: say so
        other = before.get("cpu", "")
        previous = f" (previous page: {before['total']}" + (
            f", on another CPU: {other}" if other != cpu else "") + ")"
    header = [
        "# The article's seven grid searches, run with sweep", "",
        f"Mode: {'quick (2 epochs)' if args.quick else 'full size (the recipe epochs)'}"
        f"{f', sample {args.sample}' if args.sample else ''}; cluster: local, {workers} "
        f"worker(s) on {platform.node() or 'this machine'} ({cpu}); "
        f"total wall time {time.perf_counter() - total:.0f} s{previous}; seed 7; 3-fold CV, "
        "accuracy; sweep's default training path.", "",
    ]
    how = (f"Run on {time.strftime('%Y-%m-%d')} with `python scripts/article/run_all.py "
           f"--workers {workers} --output {args.output}`{' --quick' if args.quick else ''} "
           "(TensorFlow / Keras 3 / scikeras on CPU, sweep's default training path, 3-fold "
           "stratified shuffled CV, seed 7).")
    sections.append(comparison_section(compared, how))
    (out / "README.md").write_text("\n".join(header + sections))
    print(f"results page: {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
