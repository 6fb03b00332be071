"""Load the data a spec names (any CSV file, or a dataset bundled with scikit-learn),
and sample it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import datasets as skdatasets

from ..exceptions import DataError

#: Datasets that ship inside scikit-learn (no download), and their task.
BUNDLED: dict[str, tuple[str, str]] = {
    "breast_cancer": ("load_breast_cancer", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "digits": ("load_digits", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


@dataclass
class Dataset:
    """Features, target and where they came from."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    source: str
    task: str  # "classification" or "regression"


def load(spec: dict[str, Any], base_dir: Path | None = None) -> Dataset:
    """Load ``spec['data']``: ``{dataset: NAME}`` or ``{csv: PATH, target: ..., header: ...}``."""
    data = spec
    if "dataset" in data:
        dataset = load_bundled(data["dataset"])
    else:
        dataset = load_csv(
            csv_path(data["csv"], base_dir), data.get("target", -1), data.get("header", False)
        )
    if data.get("scale", False):
        dataset.X = standardize(dataset.X)
    return dataset


def csv_path(path: str, base_dir: Path | None) -> Path:
    """``path`` as given, or relative to the spec's folder ``base_dir`` if it exists there."""
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.exists():
        candidate = base_dir / p
        if candidate.exists():
            return candidate
    return p


def load_bundled(name: str) -> Dataset:
    """A dataset bundled with scikit-learn, by name (see :data:`BUNDLED`)."""
    loader, task = BUNDLED[name]
    bunch = getattr(skdatasets, loader)()
    return Dataset(
        np.asarray(bunch.data, dtype="float32"),
        np.asarray(bunch.target, dtype="float32" if task == "regression" else "int64"),
        [str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1]))],
        f"scikit-learn:{name}",
        task,
    )


def load_csv(path: Path, target: int | str = -1, header: bool = False) -> Dataset:
    """Read a numeric CSV; ``target`` is a column index (may be negative) or name."""
    frame = _read_frame(path, header)
    column = _target_column(frame, target, path)
    features = frame.drop(columns=[column])
    _require_numeric(features, path)
    y_raw = frame[column]
    if y_raw.isna().any():
        raise DataError(f"{path}: target column {column!r} has missing values.\n"
                        "  Fix: drop or fill the rows with an empty target.")
    task = "classification" if _looks_categorical(y_raw) else "regression"
    y = y_raw.to_numpy()
    y = y.astype("int64") if task == "classification" and y.dtype.kind == "f" else y
    return Dataset(features.to_numpy(dtype="float32"), np.asarray(y),
                   [str(c) for c in features.columns], str(path), task)


def _read_frame(path: Path, header: bool) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data.csv: file {str(path)!r} does not exist or is not a file.\n"
                        "  Fix: give the path of a CSV file, relative to the spec or absolute.")
    try:
        frame = pd.read_csv(path, header=0 if header else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"data.csv: cannot read {str(path)!r} as CSV: {exc}\n"
                        "  Fix: check that the file is a comma-separated text file.") from exc
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise DataError(f"data.csv: {str(path)!r} has {frame.shape[0]} row(s) and "
                        f"{frame.shape[1]} column(s); need at least 2 of each.\n"
                        "  Fix: point data.csv at a table of features plus a target column.")
    return frame


def _target_column(frame: pd.DataFrame, target: int | str, path: Path) -> Any:
    columns = list(frame.columns)
    if isinstance(target, int) and not isinstance(target, bool):
        if -len(columns) <= target < len(columns):
            return columns[target]
    elif target in columns:
        return target
    raise DataError(
        f"data.target: column {target!r} is not in {str(path)!r} (columns: {columns[:10]}"
        f"{' ...' if len(columns) > 10 else ''}).\n"
        "  Fix: give a column index such as -1 (the last column), or a column name with "
        "data.header: true."
    )


def _require_numeric(features: pd.DataFrame, path: Path) -> None:
    bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        column = features[bad[0]]
        sample = next((v for v in column if not _is_number(v)), column.iloc[0])
        raise DataError(
            f"data.csv: feature column(s) {bad[:5]} of {str(path)!r} are not numeric "
            f"(column {bad[0]!r} holds {sample!r}).\n"
            "  Fix: encode them as numbers, or set data.header: true if the first row is a "
            "header."
        )
    if features.isna().to_numpy().any():
        raise DataError(f"data.csv: {str(path)!r} has missing feature values.\n"
                        "  Fix: drop or impute the rows with empty cells.")


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _looks_categorical(y: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(y):
        return True
    values = y.to_numpy()
    return bool(np.all(np.equal(np.mod(values, 1), 0)) and y.nunique() <= 20)


def standardize(X: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per column (constant columns left at zero)."""
    std = X.std(axis=0)
    std[std == 0] = 1.0
    return ((X - X.mean(axis=0)) / std).astype("float32")


def stratified_sample(X: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0,
                      stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A random ``fraction`` of the rows that keeps the class proportions.

    Parameters
    ----------
    fraction : float
        Share of rows to keep, in (0, 1]; 1 keeps everything.
    stratify : bool
        Keep class proportions (classification); False for regression.
    """
    from sklearn.model_selection import train_test_split

    if fraction >= 1:
        return X, y
    X_kept, _, y_kept, _ = train_test_split(X, y, train_size=fraction, random_state=seed,
                                            stratify=y if stratify else None)
    return X_kept, y_kept
