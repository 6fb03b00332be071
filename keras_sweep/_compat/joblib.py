"""Touches of joblib's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

from typing import Any

from .registry import touch


@touch("joblib", ">=1.4, tested 1.6.0",
       "BatchedCalls.items: the (function, args, kwargs) tasks of the batch that "
       "Parallel hands to a backend's submit()")
def batch_tasks(batch: Any) -> list[tuple[Any, Any, Any]]:
    """The ``(function, args, kwargs)`` tasks of the batch joblib hands to ``submit``.

    joblib documents ``submit(func, callback)`` with ``func`` a callable; sweep runs
    each of its tasks in a worker's isolated fit instead, so it reads them here.
    """
    items = batch.items
    if not isinstance(items, list) or any(len(item) != 3 for item in items):
        raise TypeError(f"joblib's batch has no list of (function, args, kwargs): {items!r}")
    return list(items)


@touch("joblib", ">=1.4, tested 1.6.0",
       "Parallel keeps its pre_dispatch argument as the attribute pre_dispatch and reads "
       "it after calling backend.configure(parallel=self); its default is '2 * n_jobs', "
       "scikit-learn's searches pass '2*n_jobs'")
def patch_pre_dispatch(parallel: Any, wider: str) -> bool:
    """Make ``parallel`` dispatch ``wider`` (e.g. ``"4*n_jobs"``) tasks ahead if it was
    left at joblib's or scikit-learn's default; whether it did."""
    current = getattr(parallel, "pre_dispatch", None)
    if not isinstance(current, str) or current.replace(" ", "") != "2*n_jobs":
        return False
    parallel.pre_dispatch = wider
    return True
