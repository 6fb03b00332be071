"""What a finished sweep leaves behind: the summary users know, and files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .records import FitRecord


def summary_lines(cv_results: dict[str, Any], best_index: int | None) -> list[str]:
    """The recipe's summary: ``Best: ... using {...}``, then one line per candidate."""
    means, stds = cv_results["mean_test_score"], cv_results["std_test_score"]
    lines = []
    if best_index is not None:
        lines.append(f"Best: {means[best_index]:f} using {cv_results['params'][best_index]}")
    for mean, std, params in zip(means, stds, cv_results["params"], strict=False):
        lines.append(f"{mean:f} ({std:f}) with: {params}")
    return lines


def failed_fits(records: list[FitRecord]) -> list[FitRecord]:
    """The fit records that carry an error."""
    return [r for r in records if r.fit_error]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def cv_results_frame(cv_results: dict[str, Any]) -> pd.DataFrame:
    """``cv_results_`` as a table, parameters as plain columns."""
    frame = pd.DataFrame({k: list(v) for k, v in cv_results.items() if k != "params"})
    frame.insert(0, "params", [json.dumps(_jsonable(p), sort_keys=True)
                               for p in cv_results["params"]])
    return frame


def save(output: Path, *, cv_results: dict[str, Any], best: dict[str, Any],
         spec: dict[str, Any], fits: list[FitRecord]) -> list[Path]:
    """Write ``cv_results.csv/.json``, ``best.json``, ``spec.yaml`` and ``fits.csv``."""
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "cv_results.csv": lambda p: cv_results_frame(cv_results).to_csv(p, index=False),
        "cv_results.json": lambda p: p.write_text(json.dumps(_jsonable(cv_results), indent=1)),
        "best.json": lambda p: p.write_text(json.dumps(_jsonable(best), indent=1)),
        "spec.yaml": lambda p: p.write_text(yaml.safe_dump(_jsonable(spec), sort_keys=False)),
        "fits.csv": lambda p: pd.DataFrame([_jsonable(f.as_dict()) for f in fits]).to_csv(
            p, index=False),
    }
    written = []
    for name, write in paths.items():
        write(output / name)
        written.append(output / name)
    return written
