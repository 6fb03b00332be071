"""The final refit (best candidate on all rows) on a worker, isolated like every fit.

scikit-learn's ``GridSearchCV(refit=True)`` refits in the calling process: in
the driver, outside the pinned, seeded workers, and serially after the search.
:func:`refit_on_worker` runs it as one more isolated fit on the cluster (seeded,
threads pinned, fast path) and hands back a search that predicts like a refitted
one: ``best_estimator_``, ``refit_time_`` and ``predict``/``score`` work.
"""

from __future__ import annotations

import time
from typing import Any

from sklearn.base import clone

from .backend import data_future
from .exceptions import SweepError
from .records import FitRecord
from .worker.fastpath import enabled
from .worker.fit import describe_path, isolated_fit
from .worker.paths import TrainingPaths
from .worker.seeding import refit_seed


def _refit_task(estimator: Any, X: Any, y: Any, seed: int | None, paths: TrainingPaths,
                fit_params: dict[str, Any]) -> tuple[Any, FitRecord]:
    with enabled(estimator, paths) as path, isolated_fit(seed) as record:
        estimator.fit(X, y, **fit_params)
    describe_path(record, path)
    return estimator, record


def refit_on_worker(session: Any, search: Any, X: Any, y: Any,
                    **fit_params: Any) -> FitRecord:
    """Fit ``search``'s best candidate on all of ``X, y`` on a worker of ``session``.

    Parameters
    ----------
    session : Session
        The running sweep session (its client, seed and fast-path setting).
    search : GridSearchCV
        A search fitted with ``refit=False`` (single metric), so ``best_params_``
        is known and nothing was refitted in the driver.
    X, y : array-like
        All training rows, as given to ``search.fit``.
    **fit_params
        Passed to the estimator's ``fit``.

    Returns
    -------
    FitRecord
        The refit's record (worker, pid, seconds, memory, seed, fast path).
    """
    if not hasattr(search, "best_params_"):
        raise SweepError("refit_on_worker needs a fitted search with best_params_ (run "
                         "search.fit first; multi-metric searches need refit=NAME).")
    estimator = clone(clone(search.estimator).set_params(**clone(search.best_params_,
                                                                  safe=False)))
    backend, client = session.backend, session.client
    start = time.perf_counter()
    data = [data_future(client, value, "refit-data") for value in (X, y)]
    seed = refit_seed(backend.seed, estimator)  # scikeras seeds a refit with its own too
    future = client.submit(_refit_task, estimator, data[0], data[1], seed,
                           backend.paths, fit_params, pure=False,
                           key=f"sweep-refit-{id(search)}-{time.time_ns()}")
    fitted, record = future.result()
    search.best_estimator_ = fitted
    search.refit_time_ = float(record.seconds or time.perf_counter() - start)
    search.refit = True
    record.wall_seconds = time.perf_counter() - start
    record.refit = True
    return record
