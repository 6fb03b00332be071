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

import numpy as np
from sklearn.base import clone

from .exceptions import SweepError

#: the refit's seed stream, apart from every CV fold's
REFIT_STREAM = 2**31 - 1


def refit_seed(sweep_seed: int | None) -> int | None:
    """Seed of the refit: derived from the sweep seed, distinct from every fold's."""
    if sweep_seed is None:
        return None
    return int(np.random.SeedSequence([sweep_seed, REFIT_STREAM]).generate_state(1)[0])


def _refit_task(estimator: Any, X: Any, y: Any, seed: int | None, fast: bool,
                fit_params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from .fastpath import enabled
    from .isolation import isolated_fit

    with enabled(estimator, fast) as on, isolated_fit(seed) as facts:
        estimator.fit(X, y, **fit_params)
    facts["fast_path"] = on
    return estimator, facts


def refit_on_worker(session: Any, search: Any, X: Any, y: Any,
                    **fit_params: Any) -> dict[str, Any]:
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
    dict
        Facts of the refit (worker, pid, seconds, memory, seed, fast path).
    """
    if not hasattr(search, "best_params_"):
        raise SweepError("refit_on_worker needs a fitted search with best_params_ (run "
                         "search.fit first; multi-metric searches need refit=NAME).")
    estimator = clone(clone(search.estimator).set_params(**clone(search.best_params_,
                                                                  safe=False)))
    backend = session.backend
    client = session.client
    start = time.perf_counter()
    from .backend import _data, estimator_seed

    data = [client.submit(_data, v, pure=False, key=f"sweep-data-refit-{i}-{time.time_ns()}")
            for i, v in enumerate((X, y))]
    own = estimator_seed(estimator)  # scikeras seeds a refit with it too
    seed = own if own is not None else refit_seed(backend.sweep_seed)
    future = client.submit(_refit_task, estimator, data[0], data[1],
                           seed, backend.fast_path, fit_params,
                           pure=False, key=f"sweep-refit-{id(search)}-{time.time_ns()}")
    fitted, facts = future.result()
    search.best_estimator_ = fitted
    search.refit_time_ = float(facts.get("seconds", time.perf_counter() - start))
    search.refit = True
    facts["wall_seconds"] = time.perf_counter() - start
    facts["refit"] = True
    return facts
