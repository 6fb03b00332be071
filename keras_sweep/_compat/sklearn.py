"""Touches of scikit-learn's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from dataclasses import dataclass
from typing import Any

from .registry import changed, touch

logger = logging.getLogger(__name__)

#: the keywords of ``_fit_and_score`` that :func:`fit_task` reads
FIT_AND_SCORE_KEYWORDS = ("candidate_progress", "split_progress", "parameters", "train", "test",
                          "scorer", "error_score", "return_train_score")


@dataclass(frozen=True)
class FitTask:
    """What scikit-learn's search passes to ``_fit_and_score`` for one fit."""

    candidate: int | None
    n_candidates: int | None
    split: int | None
    n_splits: int | None
    params: dict[str, Any] | None
    train: Any
    test: Any
    scorer: Any
    error_score: Any
    return_train_score: bool


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "keyword names of sklearn.model_selection._validation._fit_and_score "
       "(candidate_progress, split_progress, parameters, train, test, scorer, error_score, "
       "return_train_score)")
def fit_task(kwargs: dict[str, Any]) -> FitTask:
    """The fit ``kwargs`` of one ``_fit_and_score`` call describe.

    A call may leave keywords out (``cross_validate`` passes no progress), so their
    absence proves nothing; ``_fit_and_score``'s own signature does: should it lose
    one of :data:`FIT_AND_SCORE_KEYWORDS` (renamed), every fold would be seeded as
    fold 0, so :class:`~keras_sweep.exceptions.LibraryChangedError` is raised instead.
    """
    _check_fit_and_score()
    candidate, n_candidates = kwargs.get("candidate_progress", (None, None))
    split, n_splits = kwargs.get("split_progress", (None, None))
    return FitTask(candidate, n_candidates, split, n_splits, kwargs.get("parameters"),
                   kwargs.get("train"), kwargs.get("test"), kwargs.get("scorer"),
                   kwargs.get("error_score"), bool(kwargs.get("return_train_score")))


@functools.cache
def _check_fit_and_score() -> None:
    from sklearn.model_selection import _validation

    try:
        names = set(inspect.signature(_validation._fit_and_score).parameters)
    except (AttributeError, TypeError, ValueError) as exc:
        raise changed("fit_task", f"no _fit_and_score to read ({exc})") from None
    missing = [k for k in FIT_AND_SCORE_KEYWORDS if k not in names]
    if missing:
        raise changed("fit_task", f"_fit_and_score has no keyword {', '.join(missing)} "
                                  f"(it has: {', '.join(sorted(names))})")


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "the result dict of _fit_and_score (test_scores, train_scores, fit_error, "
       "n_test_samples, fit_time, score_time, parameters, estimator) and _MultimetricScorer's "
       "_scorers")
def failed_fit_result(kwargs: dict[str, Any], reason: str) -> dict[str, Any]:
    """What ``_fit_and_score`` returns for a fit that raised, for a fit that never
    returned (its worker died). Follows ``error_score`` as scikit-learn does."""
    import numpy as np

    error_score = kwargs.get("error_score", np.nan)
    if error_score == "raise":
        raise RuntimeError(reason)
    scorer = kwargs.get("scorer")
    names = getattr(scorer, "_scorers", None)
    if names is None and type(scorer).__name__ == "_MultimetricScorer":
        # one score where scikit-learn expects a dict per metric: it would fail later,
        # far from the cause
        raise changed("failed_fit_result", "its _MultimetricScorer has no _scorers")
    scores: Any = {name: error_score for name in names} if names else error_score
    result: dict[str, Any] = {"test_scores": scores, "fit_error": reason}
    if kwargs.get("return_train_score"):
        result["train_scores"] = dict(scores) if names else scores
    if kwargs.get("return_n_test_samples"):
        result["n_test_samples"] = len(kwargs.get("test", ()))
    if kwargs.get("return_times"):
        result["fit_time"], result["score_time"] = 0.0, 0.0
    if kwargs.get("return_parameters"):
        result["parameters"] = kwargs.get("parameters")
    if kwargs.get("return_estimator"):
        result["estimator"] = None
    return result


@touch("scikit-learn", ">=1.4 (1.9 added them), tested 1.9.1",
       "_fit_and_score's caller= and callback_ctx= keywords; CallbackContext._callbacks")
def drop_unused_callback_context(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the search (``caller``) and its callback context when the
    search has no callbacks (they are used for callbacks only).

    scikit-learn 1.9 passes each fit the search object and a context linked to the
    whole task tree (a node per fit made ahead): pickled with every fit, the task
    grows with the grid, and a sweep's driver time with the square of its fits
    (measured: 80 KB per fit at the start of a 10,000-fit search, 300 KB later).
    """
    context = kwargs.get("callback_ctx")
    if context is None:
        return kwargs
    if not hasattr(context, "_callbacks"):
        # renamed: whether the search has callbacks is unknown, so keep them (safe; the
        # cost is the driver time above)
        _warn_once("scikit-learn's CallbackContext has no _callbacks: sweep sends each fit "
                   "its search's callback context (correct, but slower for large grids)")
        return kwargs
    if context._callbacks:
        return kwargs
    return {**kwargs, "callback_ctx": None, "caller": None}


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning("sweep: %s", message)


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "BaseSearchCV.fit (module sklearn.model_selection._search) refits by calling "
       "self.best_estimator_.fit(X, y, ...) itself, the search being its local self")
def search_refitting(estimator: Any, depth: int = 4) -> Any | None:
    """The search whose refit ``estimator.fit`` is, if the caller is scikit-learn's
    ``BaseSearchCV.fit`` refitting it (``refit=True``), else None.

    Looks at most ``depth`` frames above this one for that function's frame whose
    ``self.best_estimator_`` is ``estimator``: a fit the user calls, or any other,
    is never taken for a refit.
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        if frame.f_code.co_name == "fit" and \
                frame.f_globals.get("__name__") == "sklearn.model_selection._search":
            search = frame.f_locals.get("self")
            found = getattr(search, "__dict__", {}).get("best_estimator_")
            return search if found is estimator else None
    return None


@functools.cache
def refits_recognised() -> bool:
    """Whether :func:`search_refitting` recognises the refit of this scikit-learn's
    searches: a tiny ``GridSearchCV`` (in this process, no parallelism) refits an
    estimator that asks. Checked once per process; False means scikit-learn changed
    the frame :func:`search_refitting` looks for."""
    import joblib
    import numpy as np
    from sklearn.base import BaseEstimator
    from sklearn.model_selection import GridSearchCV

    seen: list[bool] = []

    class Asks(BaseEstimator):
        def __init__(self, c: int = 0) -> None:
            self.c = c

        def fit(self, X: Any, y: Any = None) -> Any:
            seen.append(search_refitting(self) is not None)
            return self

        def score(self, X: Any, y: Any = None) -> float:
            return 0.0

    X = np.zeros((4, 1))
    with joblib.parallel_config(backend="sequential"):
        GridSearchCV(Asks(), {"c": [0]}, cv=2, refit=True).fit(X)
    return seen[-1:] == [True] and not any(seen[:-1])


@touch("scikit-learn", ">=1.4, tested 1.9.1", "the fit_error key of _fit_and_score's result")
def fit_error(result: Any) -> str | None:
    """The error text of a ``_fit_and_score`` result (None: the fit succeeded).

    A result with neither ``fit_error`` nor ``test_scores`` is not one sweep can read
    (a failed fit would pass for a good one): :class:`~keras_sweep.exceptions.LibraryChangedError`.
    """
    if isinstance(result, dict) and "fit_error" not in result and "test_scores" not in result:
        raise changed("fit_error", f"a result with keys {sorted(result)}")
    error = result.get("fit_error") if isinstance(result, dict) else None
    return None if error is None else str(error)


@touch("scikit-learn", ">=1.4, tested 1.9.1", "the test_scores key of _fit_and_score's result")
def fit_score(result: Any, metric: str | None = None) -> float | None:
    """The test score of a ``_fit_and_score`` result (``metric``: for multi-metric scoring,
    the one to report; default the first). None when there is none."""
    scores = result.get("test_scores") if isinstance(result, dict) else None
    if isinstance(scores, dict):
        scores = scores.get(metric) if metric in scores else next(iter(scores.values()), None)
    try:
        return None if scores is None else float(scores)
    except (TypeError, ValueError):
        return None
