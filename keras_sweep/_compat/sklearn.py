"""Touches of scikit-learn's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from .registry import touch


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
    """The fit ``kwargs`` of one ``_fit_and_score`` call describe."""
    candidate, n_candidates = kwargs.get("candidate_progress", (None, None))
    split, n_splits = kwargs.get("split_progress", (None, None))
    return FitTask(candidate, n_candidates, split, n_splits, kwargs.get("parameters"),
                   kwargs.get("train"), kwargs.get("test"), kwargs.get("scorer"),
                   kwargs.get("error_score"), bool(kwargs.get("return_train_score")))


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
    names = getattr(kwargs.get("scorer"), "_scorers", None)
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
    if context is None or getattr(context, "_callbacks", None):
        return kwargs
    return {**kwargs, "callback_ctx": None, "caller": None}


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


@touch("scikit-learn", ">=1.4, tested 1.9.1", "the fit_error key of _fit_and_score's result")
def fit_error(result: Any) -> str | None:
    """The error text of a ``_fit_and_score`` result (None: the fit succeeded)."""
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
