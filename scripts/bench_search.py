#!/usr/bin/env python
"""Benchmark: successive halving and Hyperband over epochs against the full search.

For each space, in one invocation and one 2-worker session, the full search (every
candidate at the spec's epochs) and a halving search over epochs (``search: {kind:
halving, resource: epochs, factor: 3}``, scikit-learn's ``HalvingGridSearchCV`` /
``HalvingRandomSearchCV``) run one after the other. Reported per space: wall seconds,
compute (member-epochs: the sum over cross-validation fits of the epochs each trained),
the candidate halving picked, its rank in the full search and whether its full-search
mean is within one standard deviation of the full search's best.

With ``--hyperband``, a Hyperband search (``search: {kind: hyperband, factor: 3}``, its
brackets drawing their own candidates) runs too and is reported the same way; where its
pick is not among the full search's candidates (a random space), the pick is
cross-validated at the full epochs once more and ranked by that mean.

Spaces: the article's learning rate x momentum grid (30 candidates, 100 epochs), its
dropout x max-norm grid (50 candidates, 100 epochs) and a random space of 200 candidates
drawn over the recipe's parameters (50 epochs; the full search is ``RandomizedSearchCV``
with ``n_iter: 200``, halving draws the same 200 with the same seed).

    python scripts/bench_search.py --output docs/measurements/bench-search.json
    python scripts/bench_search.py --only exp3 --epochs 10     # a quick look
    python scripts/bench_search.py --only exp3 exp6 --hyperband \
        --output docs/measurements/bench-hyperband.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARTICLE = Path(__file__).resolve().parent / "article"
PIMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pima-indians-diabetes.csv"
RANDOM_SPACE = {
    "optimizer__learning_rate": "loguniform(1e-4, 1e-1)",
    "model__neurons": "randint(2, 33)",
    "model__dropout": "uniform(0.0, 0.5)",
    "model__activation": ["relu", "tanh", "softplus"],
}
SPACES = {
    "exp3": ("exp3_sgd_lr_momentum.yaml", {}),
    "exp6": ("exp6_dropout_maxnorm.yaml", {}),
    "random": ("exp2_optimizer.yaml", {"param_grid": RANDOM_SPACE, "fit.epochs": 50,
                                       "search": {"kind": "random", "n_iter": 200}}),
}


def _run(spec_file: str, overrides: dict[str, Any], session: Any, out: Path) -> dict[str, Any]:
    from keras_sweep.cli.runner import run
    from keras_sweep.spec import reading as specmod

    spec = specmod.load(ARTICLE / spec_file, {"output": str(out), "report": False,
                                               "data.csv": str(PIMA), **overrides})
    start = time.perf_counter()
    result = run(spec, session=session, progress=False, echo=lambda _: None)
    seconds = time.perf_counter() - start
    epochs = spec.fit["epochs"]
    # epochs trained: a fit that continued a shorter one of its candidate and fold
    # (`continued_from`) trained only the rest
    # (`continued_from`) trained only the rest; one taken from the journal (Hyperband:
    # a candidate two brackets drew, to the same epochs) trained nothing
    member_epochs = sum(int((f.params or {}).get("epochs", epochs)) - (f.continued_from or 0)
                        for f in result.fits if not f.resumed)
    # workers' busy share: fit seconds over wall x workers (idle: rung barriers, tails)
    busy = sum(f.seconds or 0.0 for f in result.fits if not f.resumed)
    return {"seconds": seconds, "member_epochs": member_epochs, "fits": len(result.fits),
            "busy": busy / (seconds * len(session.client.scheduler_info()["workers"])),
            "continued": sum(1 for f in result.fits if f.continued_from),
            "from_journal": sum(1 for f in result.fits if f.resumed),
            "search": result.search, "epochs": epochs}


def _key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "epochs"}, sort_keys=True,
                      default=float)


def compare(full: dict[str, Any], halving: dict[str, Any],
            restarted: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the halving pick stands in the full search, and what each cost."""
    results = full["search"].cv_results_
    ranks = {_key(p): int(r) for p, r in zip(results["params"], results["rank_test_score"],
                                              strict=True)}
    means = {_key(p): float(m) for p, m in zip(results["params"], results["mean_test_score"],
                                               strict=True)}
    best = int(full["search"].best_index_)
    best_mean, best_std = (float(results["mean_test_score"][best]),
                           float(results["std_test_score"][best]))
    picked = _key(halving["search"].best_params_)
    return {
        "full_best": {"params": _key(results["params"][best]), "mean": best_mean,
                      "std": best_std},
        "halving_pick": {"params": picked, "halving_score": float(
            halving["search"].best_score_), "full_mean": means.get(picked),
            "rank_in_full": ranks.get(picked)},
        "within_one_std": means.get(picked, -1.0) >= best_mean - best_std,
        "compute_fraction": halving["member_epochs"] / full["member_epochs"],
        "wall_ratio": halving["seconds"] / full["seconds"],
        "full": {k: full[k] for k in ("seconds", "member_epochs", "fits", "epochs", "busy")},
        "halving": {k: halving[k] for k in ("seconds", "member_epochs", "fits", "continued",
                                            "busy")}
        | {"rungs": [{"candidates": int(c), "epochs": int(r)} for c, r in zip(
            halving["search"].n_candidates_, halving["search"].n_resources_, strict=True)]},
        "halving_restarting": None if restarted is None else {
            k: restarted[k] for k in ("seconds", "member_epochs", "fits")} | {
            "same_scores": bool((_splits(restarted) == _splits(halving)).all())},
    }


def rank_pick(full: dict[str, Any], picked: dict[str, Any], mean: float | None
              ) -> dict[str, Any]:
    """Where a pick (its full-epoch mean) stands among the full search's candidates."""
    results = full["search"].cv_results_
    means = [float(m) for m in results["mean_test_score"]]
    best = int(full["search"].best_index_)
    best_mean, best_std = means[best], float(results["std_test_score"][best])
    return {"params": _key(picked), "full_mean": mean,
            "rank_in_full": None if mean is None else 1 + sum(m > mean for m in means),
            "within_one_std": mean is not None and mean >= best_mean - best_std}


def _splits(run: dict[str, Any]) -> Any:
    import numpy as np

    results = run["search"].cv_results_
    return np.array([results[k] for k in sorted(results)
                     if k.startswith("split") and k.endswith("_test_score")])


def _hyperband_row(full: dict[str, Any], hyperband: dict[str, Any], spec_file: str,
                   overrides: dict[str, Any], session: Any, out: Path) -> dict[str, Any]:
    """Hyperband's cost and its pick's full-epoch mean, ranked in the full search."""
    search = hyperband["search"]
    picked = {k: v for k, v in search.best_params_.items() if k != "epochs"}
    results = full["search"].cv_results_
    means = {_key(p): float(m) for p, m in zip(results["params"], results["mean_test_score"],
                                               strict=True)}
    mean = means.get(_key(picked))
    if mean is None:  # drawn by Hyperband only: cross-validate it at the full epochs
        one = _run(spec_file, {**overrides, "search": {"kind": "grid"},
                               "param_grid": {k: [v.item() if hasattr(v, "item") else v]
                                              for k, v in picked.items()}},
                   session, out)
        mean = float(one["search"].cv_results_["mean_test_score"][0])
    return {"seconds": hyperband["seconds"], "member_epochs": hyperband["member_epochs"],
            "busy": hyperband["busy"],
            "fits": hyperband["fits"], "continued": hyperband["continued"],
            "from_journal": hyperband["from_journal"],
            "compute_fraction": hyperband["member_epochs"] / full["member_epochs"],
            "wall_ratio": hyperband["seconds"] / full["seconds"],
            "brackets": [[{"candidates": int(c), "epochs": int(r)} for c, r in zip(
                b.n_candidates_, b.n_resources_, strict=True)] for b in search.searches_],
            "hyperband_score": float(search.best_score_),
            "pick_epochs": int(search.best_params_.get("epochs", 0)),
            "pick": rank_pick(full, picked, mean)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SPACES), default=sorted(SPACES))
    parser.add_argument("--epochs", type=int, help="override every space's epochs")
    parser.add_argument("--factor", type=float, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--restarting", action="store_true",
                        help="also run each halving with continued training off")
    parser.add_argument("--hyperband", action="store_true",
                        help="also run a Hyperband search over epochs on each space")
    args = parser.parse_args()

    import keras_sweep as sweep

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "workers": args.workers, "factor": args.factor,
        "command": "python scripts/bench_search.py " + " ".join(
            f"--only {' '.join(args.only)}".split() + (
                [f"--epochs {args.epochs}"] if args.epochs else []) + (
                ["--restarting"] if args.restarting else []) + (
                ["--hyperband"] if args.hyperband else [])),
        "spaces": {}}
    with tempfile.TemporaryDirectory() as tmp, sweep.cluster(
            "local", workers=args.workers, seed=7) as session:
        for name in args.only:
            spec_file, overrides = SPACES[name]
            overrides = dict(overrides)
            if args.epochs:
                overrides["fit.epochs"] = args.epochs
            full = _run(spec_file, overrides, session, Path(tmp) / f"{name}-full")
            halving_search = {"kind": "halving", "resource": "epochs", "factor": args.factor}
            if name == "random":
                halving_search["n_candidates"] = overrides["search"]["n_iter"]
            halving = _run(spec_file, {**overrides, "search": halving_search}, session,
                           Path(tmp) / f"{name}-halving")
            restarted = None
            if args.restarting:  # every survivor trained from scratch, as scikit-learn does
                paths = session.backend.paths
                session.backend.paths = replace(paths, continue_training=False)
                restarted = _run(spec_file, {**overrides, "search": halving_search}, session,
                                 Path(tmp) / f"{name}-halving-restarting")
                session.backend.paths = paths
            row = compare(full, halving, restarted)
            if args.hyperband:
                hyperband = _run(spec_file, {**overrides, "search": {
                    "kind": "hyperband", "factor": args.factor}}, session,
                    Path(tmp) / f"{name}-hyperband")
                row["hyperband"] = _hyperband_row(full, hyperband, spec_file, overrides,
                                                  session, Path(tmp) / f"{name}-pick")
            report["spaces"][name] = row
            print(f"{name}: full {row['full']['seconds']:.0f} s, "
                  f"{row['full']['member_epochs']} member-epochs; halving "
                  f"{row['halving']['seconds']:.0f} s, {row['halving']['member_epochs']} "
                  f"({row['halving']['continued']} fits continued"
                  + (f"; restarting: {row['halving_restarting']['seconds']:.0f} s, "
                     f"{row['halving_restarting']['member_epochs']}, same scores "
                     f"{row['halving_restarting']['same_scores']}"
                     if row["halving_restarting"] else "") + ") "
                  f"({row['compute_fraction']:.0%} of the compute, "
                  f"{row['wall_ratio']:.0%} of the wall time); pick ranks "
                  f"{row['halving_pick']['rank_in_full']} in the full search, within one std "
                  f"of its best: {row['within_one_std']}", flush=True)
            if "hyperband" in row:
                hb = row["hyperband"]
                print(f"{name}: hyperband {hb['seconds']:.0f} s, {hb['member_epochs']} "
                      f"member-epochs ({hb['compute_fraction']:.0%} of the full search's, "
                      f"{hb['continued']} fits continued, {hb['from_journal']} from the "
                      f"journal), pick ranks {hb['pick']['rank_in_full']} in the full search, "
                      f"within one std of its best: {hb['pick']['within_one_std']}",
                      flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
