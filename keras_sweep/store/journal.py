"""The journal of finished fits: durable, crash-safe, keyed so nothing is mistaken.

One SQLite file in the sweep's output folder. Each fit's outcome is committed by
the driver as soon as the fit comes back (one transaction per fit, full fsync),
so a killed driver loses only the fits that were running. SQLite's rollback
journal makes a write cut off mid-way vanish as a whole; earlier entries stay.

A fit's key hashes everything that decides its outcome: the estimator and its
parameters (a builder function by its source code), the data, the fold's train
and test rows, the scorer, the sweep seed and sweep's version. A changed spec,
data set or builder therefore never reuses an old entry.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import joblib

from .._compat.sklearn import fit_error, fit_task
from ..exceptions import JournalError
from .checkpoints import epochs_of
from .records import FitRecord, jsonable

SCHEMA = """
CREATE TABLE IF NOT EXISTS fits (
    key TEXT PRIMARY KEY,
    candidate INTEGER,
    split INTEGER,
    params TEXT,
    result BLOB NOT NULL,
    facts TEXT,
    error TEXT,
    finished REAL NOT NULL
)
"""
COLUMNS = ("key", "candidate", "split", "params", "result", "facts", "error", "finished")


class Journal:
    """Append-only store of fit outcomes.

    Parameters
    ----------
    path : path-like
        The SQLite file; created with its folder if missing.

    Raises
    ------
    JournalError
        The file exists but is not a sweep journal (another SQLite database, a
        damaged file, something else): the message says how to start fresh.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            columns = tuple(row[1] for row in self._db.execute("PRAGMA table_info(fits)"))
            self._db.execute("SELECT COUNT(*) FROM fits").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._foreign(str(exc)) from None
        if columns != COLUMNS:
            self._db.close()
            raise self._foreign(f"its table 'fits' has columns {list(columns)}")

    def _foreign(self, why: str) -> JournalError:
        return JournalError(
            f"{self.path} is not a sweep journal ({why}).\n"
            f"  Fix: to start fresh, move it away (mv {self.path} {self.path}.bak) or give "
            "the sweep another --output folder; to resume, restore the journal the earlier "
            "run wrote.")

    def get(self, key: str) -> Any | None:
        """The stored ``_fit_and_score`` result of ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT result FROM fits WHERE key=?", (key,)).fetchone()
        return None if row is None else pickle.loads(row[0])

    def facts(self, key: str) -> dict[str, Any]:
        """What the fit's record said when it was journaled (empty: not known; journals
        of sweep before 0.1.0's JSON facts)."""
        with self._lock:
            row = self._db.execute("SELECT facts FROM fits WHERE key=?", (key,)).fetchone()
        try:
            facts = json.loads(row[0]) if row and row[0] else {}
        except ValueError:
            return {}
        return facts if isinstance(facts, dict) else {}

    def record(self, key: str, result: Any, record: FitRecord) -> None:
        """Store one finished fit durably (committed before returning)."""
        facts = {k: v for k, v in record.as_dict().items() if k != "params"}
        row = (key, record.candidate, record.split, repr(record.params),
               pickle.dumps(result), json.dumps(jsonable(facts)), fit_error(result),
               time.time())
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO fits VALUES (?,?,?,?,?,?,?,?)", row)
        except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error
            raise JournalError(
                f"cannot write to the journal {self.path} ({exc}); the sweep stops here. "
                f"The {len(self)} fits journaled so far are kept.\n"
                "  Fix: free space on that disk (or fix its permissions), then rerun the "
                "same command: it continues from the journal.") from None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM fits").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _describe(value: Any) -> Any:
    """A stable description of a parameter value; functions by their source."""
    if callable(value) and hasattr(value, "__qualname__"):
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}:{source}"
    if hasattr(value, "get_params"):
        return (type(value).__qualname__, _describe(value.get_params(deep=False)))
    if isinstance(value, dict):
        return sorted((str(k), _describe(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value


class FitKeys:
    """Computes journal keys of the fits scikit-learn sends to joblib.

    ``X`` and ``y`` are hashed once per object; estimators (a fresh clone per
    fit) are described and hashed each time, without being kept.
    """

    def __init__(self, seed: int | None, version: str) -> None:
        self.salt = f"sweep-{version}-seed-{seed}"
        self._cache: dict[int, tuple[Any, str]] = {}

    def _hash(self, value: Any) -> str:
        if hasattr(value, "get_params"):
            return str(joblib.hash(_describe(value)))
        cached = self._cache.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1]
        digest = str(joblib.hash(value))
        self._cache[id(value)] = (value, digest)
        return digest

    def key(self, args: Any, kwargs: dict[str, Any]) -> str | None:
        """The key of one ``_fit_and_score(estimator, X, y, ...)`` call, else None."""
        task = fit_task(kwargs)
        if len(args) < 3 or task.train is None or task.params is None:
            return None
        estimator, X, y = args[:3]
        parts = [
            self.salt,
            self._hash(estimator),
            self._hash(X),
            self._hash(y),
            joblib.hash(task.train),
            joblib.hash(task.test),
            joblib.hash(_describe(task.params)),
            joblib.hash(repr(task.scorer)),
            repr(task.error_score),
            repr(task.return_train_score),
        ]
        return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()

    def lineage(self, args: Any, kwargs: dict[str, Any]) -> tuple[str, int] | None:
        """The fit's lineage and epochs: what its training depends on except the number of
        epochs its candidate sets (:mod:`keras_sweep.store.checkpoints`); None: it sets none."""
        task = fit_task(kwargs)
        found = epochs_of(task.params)
        if len(args) < 3 or task.train is None or task.params is None or found is None:
            return None
        estimator, X, y = args[:3]
        params = {k: v for k, v in task.params.items() if k != found[0]}
        parts = ["lineage", self.salt, self._hash(estimator), self._hash(X), self._hash(y),
                 joblib.hash(task.train), joblib.hash(_describe(params)), found[0]]
        return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest(), found[1]
