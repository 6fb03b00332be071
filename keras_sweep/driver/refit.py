"""The final refit (best candidate on all rows) on a worker, isolated like every fit.

scikit-learn's ``GridSearchCV(refit=True)`` refits in the calling process: in
the driver, outside the pinned, seeded workers, and serially after the search.
Inside a session, :func:`search_refits_on_workers` sends that refit of a
scikeras estimator to a worker instead (the one holding its kind's trace, when
one does): seeded from the sweep's refit stream, threads pinned, the compiled
loop; the fitted estimator comes back into the object scikit-learn holds, so
``best_estimator_``, ``refit_time_``, ``predict`` and ``score`` work unchanged.
:func:`refit_on_worker` does the same for a search run with ``refit=False``
(what ``sweep run`` does).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
from sklearn.base import clone

from .._compat.sklearn import refits_recognised, search_refitting
from ..exceptions import SweepError
from ..protocol import TrainingPaths
from ..store.records import FitRecord
from ..worker.fit import describe_path, end_fit, isolated_fit
from ..worker.seeding import refit_seed
from ..worker.training.fastpath import enabled, wrapper_fit_replaced
from .backend import data_future
from .placement import candidate_key

logger = logging.getLogger(__name__)


def _refit_task(estimator: Any, X: Any, y: Any, seed: int | None, paths: TrainingPaths,
                fit_params: dict[str, Any]) -> tuple[bytes, FitRecord]:
    """Refit a copy of ``estimator`` (Dask keeps the task's arguments until it is
    released) and send it back pickled: the fitted model is gone from the worker before
    the fit's clean-up, which would otherwise freeze it alive (a leak once released).
    The clean-up runs whether the fit succeeds or raises."""
    fitted = copy.copy(estimator)
    record: FitRecord | None = None
    try:
        with isolated_fit(seed, clean=False) as record:
            with enabled(fitted, paths) as path:
                fitted.fit(X, y, **fit_params)
        describe_path(record, path)
        return cloudpickle.dumps(fitted), record
    finally:
        del fitted
        if record is not None:
            end_fit(record)


def fit_on_worker(session: Any, estimator: Any, X: Any, y: Any, fit_params: dict[str, Any],
                  params: dict[str, Any] | None = None) -> tuple[Any, FitRecord]:
    """Fit ``estimator`` on all of ``X, y`` on a worker of ``session``; the fitted copy.

    Seeded from the sweep's refit stream (or the estimator's own ``random_state``).
    ``params``, the candidate's parameters, lets the fit go to a worker that holds
    its kind of model's trace. The fit's record (``refit=True``) is added to the
    session's fits.
    """
    backend, client = session.backend, session.client
    start = time.perf_counter()
    data = [data_future(client, value, "refit-data") for value in (X, y)]
    seed = refit_seed(backend.seed, estimator)  # scikeras seeds a refit with its own too
    worker = (backend.placement.worker_for(candidate_key(estimator, params))
              if backend.placement is not None and params is not None else None)
    where = {"workers": [worker], "allow_other_workers": True} if worker else {}
    future = client.submit(_refit_task, estimator, data[0], data[1], seed,
                           backend.paths, fit_params, pure=False,
                           key=f"sweep-refit-{id(estimator)}-{time.time_ns()}", **where)
    pickled, record = future.result()
    fitted = pickle.loads(pickled)
    record.wall_seconds = time.perf_counter() - start
    record.refit, record.params = True, params
    session.monitor.records.append(record)
    return fitted, record


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
    fitted, record = fit_on_worker(session, estimator, X, y, fit_params,
                                   params=search.best_params_)
    search.best_estimator_ = fitted
    search.refit_time_ = float(record.seconds or record.wall_seconds or 0.0)
    search.refit = True
    return record


def shares_a_trace(session: Any, estimator: Any, params: dict[str, Any] | None) -> bool:
    """Whether the search's fits of this candidate shared a trace (so its model is made
    of Keras' own classes alone: it travels back to the driver whatever the user's
    code), and the session is not stopping."""
    placement = session.backend.placement
    return (not session.backend.stopping and placement is not None and params is not None
            and candidate_key(estimator, params) in placement.kinds)


@contextlib.contextmanager
def search_refits_on_workers(session: Any) -> Iterator[None]:
    """Within the block, a search's refit of a scikeras estimator runs on a worker.

    Only the call scikit-learn's ``BaseSearchCV.fit`` makes to refit its
    ``best_estimator_`` (:func:`keras_sweep._compat.sklearn.search_refitting`), and only for a
    candidate whose fits shared a trace (:func:`shares_a_trace`); every other fit
    in the driver runs there as before. Should the refit on a worker fail (a lost
    worker, a model the driver cannot unpickle), it runs in the driver after all,
    with a warning. Replaces ``BaseWrapper.fit`` for the block
    (:func:`~keras_sweep.worker.training.fastpath.wrapper_fit_replaced`: only where scikeras is
    imported already, a driver without Keras stays without TensorFlow).
    """

    def make(inner: Callable[..., Any]) -> Callable[..., Any]:
        def fit(self: Any, X: Any, y: Any = None, **kwargs: Any) -> Any:
            search = search_refitting(self)
            params = getattr(search, "best_params_", None)
            if search is None or not shares_a_trace(session, self, params):
                return inner(self, X, y, **kwargs)
            try:
                fitted, _ = fit_on_worker(session, self, X, y, kwargs, params=params)
            except Exception as exc:  # noqa: BLE001 - scikit-learn's own refit decides
                logger.warning("sweep: the refit on a worker failed (%s: %s); refitting in "
                               "this process, as scikit-learn does", type(exc).__name__, exc)
                return inner(self, X, y, **kwargs)
            vars(self).update(vars(fitted))
            return self

        return fit

    if not refits_recognised():
        logger.warning("sweep: this scikit-learn's search refits in a way sweep does not "
                       "recognise: a search's refit runs in this process (scikit-learn's own "
                       "way), not on a worker with the refit seed")
        yield
        return
    with wrapper_fit_replaced(make):
        yield
