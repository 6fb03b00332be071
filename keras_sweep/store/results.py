"""What a finished sweep leaves behind: the summary users know, and files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .records import FitRecord, jsonable


def curves_frame(fits: list[FitRecord]) -> pd.DataFrame:
    """The learning curves of the cross-validation fits, one row per epoch and metric."""
    rows = [(f.candidate, f.split, epoch + 1, metric, value)
            for f in fits if f.history and not f.refit
            for metric, values in f.history.items() for epoch, value in enumerate(values)]
    return pd.DataFrame(rows, columns=["candidate", "split", "epoch", "metric", "value"])


def summary_lines(cv_results: dict[str, Any], best_index: int | None,
                  metric: str = "score") -> list[str]:
    """The recipe's summary: ``Best: ... using {...}``, then one line per candidate
    (``metric``: the scorer of a multi-metric search that ranked them)."""
    means, stds = cv_results[f"mean_test_{metric}"], cv_results[f"std_test_{metric}"]
    lines = []
    if best_index is not None:
        lines.append(f"Best: {means[best_index]:f} using {cv_results['params'][best_index]}")
    for mean, std, params in zip(means, stds, cv_results["params"], strict=False):
        lines.append(f"{mean:f} ({std:f}) with: {params}")
    return lines


def failed_fits(records: list[FitRecord]) -> list[FitRecord]:
    """The fit records that carry an error."""
    return [r for r in records if r.fit_error]


def _fit_row(record: FitRecord) -> dict[str, Any]:
    """A fit's row of ``fits.csv``: its record, parameters as JSON, history left to
    ``curves.csv``."""
    row = jsonable({k: v for k, v in record.as_dict().items() if k != "history"})
    row["params"] = json.dumps(row["params"], sort_keys=True)
    row["lost_runs"] = json.dumps(row["lost_runs"]) if row["lost_runs"] else None
    return row


def cv_results_frame(cv_results: dict[str, Any]) -> pd.DataFrame:
    """``cv_results_`` as a table, parameters as plain columns."""
    frame = pd.DataFrame({k: list(v) for k, v in cv_results.items() if k != "params"})
    frame.insert(0, "params", [json.dumps(jsonable(p), sort_keys=True)
                               for p in cv_results["params"]])
    return frame


def rungs_frame(cv_results: dict[str, Any]) -> pd.DataFrame | None:
    """A halving search's rungs: resources, candidates, best and median mean score
    (Hyperband: per bracket and rung; None: the search had no rungs)."""
    if "iter" not in cv_results:
        return None
    frame = pd.DataFrame({"rung": cv_results["iter"], "resources": cv_results["n_resources"],
                          "mean": cv_results["mean_test_score"] if "mean_test_score" in
                          cv_results else float("nan"),
                          "params": [json.dumps(jsonable(p), sort_keys=True)
                                     for p in cv_results["params"]]})
    by = ["rung"]
    if "bracket" in cv_results:
        frame.insert(0, "bracket", cv_results["bracket"])
        by = ["bracket", "rung"]
    rows = []
    for keys, group in frame.groupby(by, sort=False):
        best = group.loc[group["mean"].idxmax()] if group["mean"].notna().any() else None
        rows.append({**{k: int(v) for k, v in zip(by, keys, strict=True)},
                     "resources": int(group["resources"].iloc[0]),
                     "candidates": len(group),
                     "best_mean_score": None if best is None else float(best["mean"]),
                     "median_mean_score": float(group["mean"].median()),
                     "best_params": None if best is None else best["params"]})
    return pd.DataFrame(rows)


def save(output: Path, *, cv_results: dict[str, Any], best: dict[str, Any],
         spec: dict[str, Any], fits: list[FitRecord],
         run: dict[str, Any] | None = None) -> list[Path]:
    """Write ``cv_results.csv/.json``, ``best.json``, ``spec.yaml``, ``fits.csv``,
    ``curves.csv`` (each fit's Keras history: one row per epoch and metric) and
    ``run.json`` (cluster, workers, wall time, sweep version)."""
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "cv_results.csv": lambda p: cv_results_frame(cv_results).to_csv(p, index=False),
        "cv_results.json": lambda p: p.write_text(json.dumps(jsonable(cv_results), indent=1)),
        "best.json": lambda p: p.write_text(json.dumps(jsonable(best), indent=1)),
        "spec.yaml": lambda p: p.write_text(yaml.safe_dump(jsonable(spec), sort_keys=False)),
        "fits.csv": lambda p: pd.DataFrame([_fit_row(f) for f in fits]).to_csv(
            p, index=False),
        "curves.csv": lambda p: curves_frame(fits).to_csv(p, index=False),
        "run.json": lambda p: p.write_text(json.dumps(jsonable(run or {}), indent=1)),
    }
    rungs = rungs_frame(cv_results)
    if rungs is not None:  # halving: which candidates went on, with what
        paths["rungs.csv"] = lambda p: rungs.to_csv(p, index=False)
    written = []
    for name, write in paths.items():
        write(output / name)
        written.append(output / name)
    return written
