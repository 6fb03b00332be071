"""A fit's trained state, kept so a longer fit of the same candidate continues from it.

A successive halving over epochs trains a surviving candidate for ``e`` epochs in
one rung and ``3e`` in the next; scikit-learn starts every fit from scratch, so
the first ``e`` epochs are trained again. Under a seed, epochs ``e+1 .. 3e`` of
the fit from scratch start from exactly the state the ``e``-epoch fit ended in
(same initial weights, same row order, same dropout draws), so the longer fit
may load that state and train only the missing epochs: bitwise the same model
and history (``tests/test_continuation.py``). The rules for when a worker does
so are in :mod:`keras_sweep.worker.training.continuation`.

A **lineage** is what a fit's outcome depends on except its number of epochs
(:meth:`keras_sweep.store.journal.FitKeys.lineage`): the fits of one lineage differ only in
how long they train. :class:`CheckpointStore` keeps, per lineage, the state of
the longest fit that came back, in the journal's SQLite file when there is one
(so a resumed sweep continues its survivors too) or in memory.
"""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: parameters of a scikeras estimator that set how many epochs a fit trains
EPOCH_PARAMS = ("epochs", "fit__epochs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    lineage TEXT PRIMARY KEY,
    epochs INTEGER NOT NULL,
    state BLOB NOT NULL
)
"""


@dataclass
class Checkpoint:
    """A model's state after ``epochs`` epochs of a fit, and the history so far."""

    epochs: int
    #: the values of ``model.variables`` (weights and seed-generator states), in order
    variables: list[np.ndarray]
    #: the values of ``model.optimizer.variables`` (its step count and slots), in order
    optimizer: list[np.ndarray]
    #: Keras' per-epoch logs of those epochs (``History.history``)
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The checkpoint as an ``.npz`` archive (no pickles)."""
        arrays: dict[str, Any] = {f"v{i}": a for i, a in enumerate(self.variables)}
        arrays |= {f"o{i}": a for i, a in enumerate(self.optimizer)}
        meta = {"epochs": self.epochs, "variables": len(self.variables),
                "optimizer": len(self.optimizer), "history": self.history}
        arrays["meta"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """The checkpoint :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            return cls(int(meta["epochs"]),
                       [archive[f"v{i}"] for i in range(meta["variables"])],
                       [archive[f"o{i}"] for i in range(meta["optimizer"])],
                       {str(k): [float(x) for x in v] for k, v in meta["history"].items()})


def epochs_of(params: dict[str, Any] | None) -> tuple[str, int] | None:
    """The epoch parameter a candidate sets and its value (None: it sets none)."""
    for name in EPOCH_PARAMS:
        value = (params or {}).get(name)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            return name, int(value)
    return None


class CheckpointStore:
    """The longest fit's state per lineage, in the journal's file or in memory.

    Parameters
    ----------
    path : path-like, optional
        The journal's SQLite file (its own table); None: kept in memory only.
    """

    def __init__(self, path: Any = None) -> None:
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[int, bytes]] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = sqlite3.connect(str(path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)

    def before(self, lineage: str, epochs: int) -> bytes | None:
        """The stored state of ``lineage`` if it has fewer than ``epochs`` epochs."""
        with self._lock:
            if self._db is None:
                row = self._memory.get(lineage)
            else:
                row = self._db.execute("SELECT epochs, state FROM checkpoints WHERE lineage=?",
                                       (lineage,)).fetchone()
        if row is None or int(row[0]) >= epochs:
            return None
        return bytes(row[1])

    def put(self, lineage: str, epochs: int, state: bytes) -> None:
        """Keep ``state`` unless the lineage already has one at least as long."""
        with self._lock:
            if self._db is None:
                if self._memory.get(lineage, (0, b""))[0] < epochs:
                    self._memory[lineage] = (epochs, state)
                return
            try:
                self._db.execute(
                    "INSERT INTO checkpoints VALUES (?,?,?) ON CONFLICT(lineage) DO UPDATE "
                    "SET epochs=excluded.epochs, state=excluded.state "
                    "WHERE excluded.epochs > checkpoints.epochs", (lineage, epochs, state))
            except sqlite3.OperationalError:
                pass  # a full disk: the journal itself says so on the fit's own write

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._memory)
            return int(self._db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
