"""The typed record of one fit, shared by the worker, the backend and every listener.

A worker fills a :class:`FitRecord` while it runs a fit (seed, process, times,
memory, recycling) and sends it back with the result; the driver adds the
fit's identity (candidate, fold, journal key) and outcome, then hands the same
object to the recycler, the journal, the progress bar and ``Session.fits``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FitRecord:
    """What is known about one fit (``None``: not known, or not applicable)."""

    #: index of the candidate (parameter set) in the search, and their number
    candidate: int | None = None
    n_candidates: int | None = None
    #: index of the CV fold, and their number
    split: int | None = None
    n_splits: int | None = None
    #: the candidate's parameters
    params: dict[str, Any] | None = None
    #: the search round the fit belongs to, counted by the session from 1: each
    #: round of a search starts with candidate 0 of fold 0 (a halving's rungs,
    #: Hyperband's brackets' rungs, one per grid search)
    round: int | None = None
    #: journal key (None: no journal)
    key: str | None = None
    #: seed the fit ran with (None: unseeded)
    seed: int | None = None
    #: process id and Dask address of the worker that ran it
    pid: int | None = None
    worker: str | None = None
    #: wall-clock start and end (``time.time()``), fit and clean-up seconds
    started: float | None = None
    ended: float | None = None
    seconds: float | None = None
    cleanup_seconds: float | None = None
    #: resident memory of the worker after the fit, in bytes
    rss: int | None = None
    #: fits this worker process has run, this one included
    process_fits: int | None = None
    #: the worker's CPU: widest vector instruction set and model, e.g. "avx2 (AMD EPYC
    #: 7B13)"; a seeded sweep's folds are bitwise equal across workers of one set
    cpu: str | None = None
    #: whether the fit ran on a fast path (sweep's compiled loop, or whole epochs per
    #: Keras execution)
    fast_path: bool = False
    #: how it trained: "compiled loop", "compiled loop + XLA", "fast path" (Keras'
    #: fit, whole epochs per execution) or "keras"
    fit_path: str | None = None
    #: why it did not take the fastest path asked for (e.g. why not the compiled loop)
    fallback: str | None = None
    #: seconds the compiled loop spent tracing: a new template's making, then the
    #: first epoch's time beyond a later one's (instantiation, XLA's compile)
    trace_seconds: float | None = None
    #: the compiled loop's trace: "new", "reused" (from an earlier fit of the same
    #: kind of model in that worker) or "own (why)" (:mod:`keras_sweep.worker.training.traces`)
    trace: str | None = None
    #: short name of the fit's kind of model (the same in every worker): fits of
    #: one kind share a trace; the driver sends them where it is
    #: (:mod:`keras_sweep.driver.placement`)
    trace_kind: str | None = None
    #: epochs taken over from a shorter fit of the same candidate and fold (the
    #: fit trained only the rest; :mod:`keras_sweep.worker.training.continuation`); None: none
    continued_from: int | None = None
    #: TensorFlow custom-gradient registrations dropped after the fit
    purged_gradients: int | None = None
    #: why the worker asked to be recycled after this fit; the address of the
    #: worker's nanny (a restarted worker process comes back under the same one)
    recycle_due: str | None = None
    nanny: str | None = None
    #: the outcome came from the journal (not run now)
    resumed: bool = False
    #: the fit never returned: its worker died each time it was tried
    worker_lost: bool = False
    #: runs of this fit lost with their worker before this outcome: one
    #: ``{"worker", "time", "reason"}`` per death (:mod:`keras_sweep.driver.deaths`)
    lost_runs: list[dict[str, Any]] | None = None
    #: the final refit of the best candidate on all rows
    refit: bool = False
    #: seconds the driver waited for the refit, transfers included
    wall_seconds: float | None = None
    #: the error of a failed fit (None: it succeeded)
    fit_error: str | None = None
    #: the fit's test score (the search's refit metric for multi-metric scoring)
    test_score: float | None = None
    #: Keras' per-epoch history of the fit (``{"loss": [...], "accuracy": [...]}``)
    history: dict[str, list[float]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (for CSV and JSON files)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, facts: dict[str, Any]) -> FitRecord:
        """A record from :meth:`as_dict`'s output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in facts.items() if k in names})


def jsonable(value: Any) -> Any:
    """``value`` made of JSON types only: NumPy scalars and arrays unwrapped, NaN as
    None, infinities as strings, anything else by its ``repr``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per metric, the per-epoch mean over the folds' Keras histories that have it.

    Histories of unequal length (early stopping) are cut to the shortest. The
    report's learning curves and MLflow's per-epoch metrics both use this.
    """
    runs: dict[str, list[list[float]]] = {}
    for history in histories:
        for metric, values in history.items():
            runs.setdefault(metric, []).append(list(values))
    out = {}
    for metric, folds in runs.items():
        length = min(len(v) for v in folds)
        out[metric] = [float(x) for x in np.mean([v[:length] for v in folds], axis=0)]
    return out

