"""Hyperband with k-fold cross-validation: brackets of scikit-learn's successive halving.

Hyperband (Li et al., JMLR 2018) hedges successive halving's one bet, how few
resources are enough to tell candidates apart, by running several *brackets*:
the most aggressive starts many candidates with few epochs and halves often, the
most careful trains a few candidates with every epoch from the start. Each
bracket here is scikit-learn's own ``HalvingRandomSearchCV`` (so every rung
cross-validates each candidate on every fold, and candidates are ranked by the
mean over folds), with the bracket's candidate count and smallest resource.
dask-ml's ``HyperbandSearchCV`` scores each model on one validation split through
``partial_fit``: no k-fold, hence this. With sweep's continued training
(:mod:`keras_sweep.worker.training.continuation`), a survivor promoted from ``e`` to ``3e``
epochs trains only the ``2e`` new ones.

The brackets run one after the other, each on every worker (``n_jobs=-1``
under :func:`keras_sweep.cluster`); the best candidate is the best of the brackets'
last rungs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone


@dataclass(frozen=True)
class Bracket:
    """One bracket: ``candidates`` drawn, their first rung with ``min_resources``."""

    index: int  #: s, from the most aggressive (s_max) down to 0
    candidates: int
    min_resources: int


def brackets(max_resources: int, min_resources: int = 1, factor: float = 3) -> list[Bracket]:
    """Hyperband's brackets for resources ``min_resources .. max_resources``.

    ``s_max = floor(log_factor(max / min))``; bracket ``s`` (``s_max`` down to 0)
    draws ``ceil((s_max + 1) / (s + 1) * factor**s)`` candidates and starts them
    with ``max // factor**s`` (at least ``min_resources``), as in Li et al.'s
    Algorithm 1 with integer resources.
    """
    if min_resources < 1 or max_resources < min_resources:
        raise ValueError(f"resources must satisfy 1 <= min_resources ({min_resources}) "
                         f"<= max_resources ({max_resources})")
    if factor <= 1:
        raise ValueError(f"factor must be above 1, not {factor}")
    s_max = math.floor(math.log(max_resources / min_resources, factor) + 1e-9)
    return [Bracket(s, math.ceil((s_max + 1) / (s + 1) * factor ** s),
                    max(min_resources, int(max_resources // factor ** s)))
            for s in range(s_max, -1, -1)]


class HyperbandSearchCV(MetaEstimatorMixin, BaseEstimator):
    """Hyperband over ``resource`` (e.g. ``epochs``) with k-fold cross-validation.

    Parameters
    ----------
    estimator : estimator
        A scikit-learn estimator (e.g. scikeras' ``KerasClassifier``).
    param_distributions : dict or list of dicts
        As for ``RandomizedSearchCV``: lists (drawn uniformly) or distributions.
    max_resources : int or "auto"
        The most of ``resource`` a candidate gets (e.g. the epochs of a full fit;
        ``auto``: all rows, for ``resource="n_samples"`` only).
    resource : str
        ``n_samples`` (training rows) or an estimator parameter such as ``epochs``.
    min_resources : int or "smallest"
        The least a candidate gets in the most aggressive bracket (``smallest``:
        1, or for rows scikit-learn's smallest, 2 x folds x classes).
    factor : float
        Each rung keeps ``1/factor`` of its candidates and gives them ``factor``
        times more (dask-ml calls it ``aggressiveness``).
    cv, scoring, error_score, return_train_score, n_jobs, verbose
        As for scikit-learn's searches (one scorer: halving ranks by one).
    refit : bool
        Refit the best candidate on all rows (with its resource) as ``best_estimator_``.
    random_state : int or None
        Seeds every bracket's draw (each bracket its own stream).

    Attributes
    ----------
    cv_results_ : dict
        Every bracket's ``cv_results_`` one after the other, with ``bracket``
        (its ``s``), ``iter`` (its rung) and ``n_resources``; ranks over all rows.
    best_index_, best_score_, best_params_ : int, float, dict
        The best row among the brackets' last rungs.
    brackets_ : list of Bracket
    searches_ : list
        The fitted ``HalvingRandomSearchCV`` of each bracket.
    """

    def __init__(self, estimator: Any, param_distributions: Any, *,
                 max_resources: int | str = "auto", resource: str = "epochs",
                 min_resources: int | str = "smallest", factor: float = 3,
                 cv: Any = 5, scoring: Any = None, refit: bool = True,
                 error_score: Any = np.nan, return_train_score: bool = False,
                 random_state: int | None = None, n_jobs: int | None = None,
                 verbose: int = 0) -> None:
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.max_resources = max_resources
        self.resource = resource
        self.min_resources = min_resources
        self.factor = factor
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    def resource_bounds(self, X: Any, y: Any = None) -> tuple[int, int]:
        """``min_resources`` and ``max_resources`` as numbers, for these data."""
        from sklearn.base import is_classifier
        from sklearn.model_selection import check_cv

        high = self.max_resources
        if high == "auto":
            if self.resource != "n_samples":
                raise ValueError(f"max_resources='auto' means all rows: give the most "
                                 f"{self.resource} a candidate gets, e.g. max_resources=81")
            high = len(X)
        low = self.min_resources
        if low == "smallest":
            low = 1
            if self.resource == "n_samples":
                classifier = is_classifier(self.estimator)
                splits = check_cv(self.cv, y, classifier=classifier).get_n_splits(X, y)
                low = 2 * splits * (len(np.unique(y)) if classifier else 1)
        return int(low), int(high)

    def bracket_search(self, bracket: Bracket) -> Any:
        """The unfitted ``HalvingRandomSearchCV`` of one bracket."""
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        seed = None if self.random_state is None else int(
            np.random.SeedSequence([int(self.random_state), bracket.index]).generate_state(1)[0])
        return HalvingRandomSearchCV(
            self.estimator, self.param_distributions, n_candidates=bracket.candidates,
            factor=self.factor, resource=self.resource, min_resources=bracket.min_resources,
            max_resources=self.max_resources_, aggressive_elimination=False, cv=self.cv,
            scoring=self.scoring, refit=False, error_score=self.error_score,
            return_train_score=self.return_train_score, random_state=seed,
            n_jobs=self.n_jobs, verbose=self.verbose)

    def fit(self, X: Any, y: Any = None, **params: Any) -> HyperbandSearchCV:
        """Run every bracket on ``X``, ``y``; then pick the best and refit it."""
        if not (self.scoring is None or isinstance(self.scoring, str) or callable(
                self.scoring)):
            raise ValueError("HyperbandSearchCV ranks by one scorer: give scoring a string "
                             "or a callable (scikit-learn's halving does the same)")
        low, high = self.resource_bounds(X, y)
        self.brackets_ = brackets(high, low, self.factor)
        self.min_resources_, self.max_resources_ = low, high
        self.searches_ = []
        for bracket in self.brackets_:
            search = self.bracket_search(bracket)
            search.fit(X, y, **params)
            self.searches_.append(search)
        self.cv_results_ = merge_results([s.cv_results_ for s in self.searches_],
                                         [b.index for b in self.brackets_])
        self.n_resources_ = [r for s in self.searches_ for r in s.n_resources_]
        self.n_candidates_ = [c for s in self.searches_ for c in s.n_candidates_]
        self.scorer_ = self.searches_[0].scorer_
        self.n_splits_ = self.searches_[0].n_splits_
        self.best_index_ = best_of_last_rungs(self.cv_results_)
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_params_ = dict(self.cv_results_["params"][self.best_index_])
        if self.refit:
            self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_)
            self.best_estimator_.fit(X, y, **params)
        return self

    def predict(self, X: Any) -> Any:
        """The refitted best estimator's predictions."""
        return self.best_estimator_.predict(X)

    def score(self, X: Any, y: Any = None) -> float:
        """The refitted best estimator's score."""
        return float(self.scorer_(self.best_estimator_, X, y))


def merge_results(results: list[dict[str, Any]], bracket_ids: list[int]) -> dict[str, Any]:
    """Several ``cv_results_`` one after the other, with a ``bracket`` column and every
    ``rank_*`` recomputed over all rows (as scikit-learn ranks: NaN last, ties share)."""
    lengths = [len(r["params"]) for r in results]
    keys: list[str] = []
    for r in results:
        keys += [k for k in r if k not in keys]
    merged: dict[str, Any] = {"bracket": np.repeat(np.asarray(bracket_ids), lengths)}
    for key in keys:
        if key == "params":
            merged[key] = [p for r in results for p in r["params"]]
        elif key.startswith("param_"):
            parts = [np.ma.MaskedArray(np.asarray(r[key], dtype=object),
                                       mask=np.ma.getmaskarray(r[key]))
                     if key in r else np.ma.masked_all(n, dtype=object)
                     for r, n in zip(results, lengths, strict=True)]
            merged[key] = np.ma.concatenate(parts)
        elif key.startswith("rank_"):
            continue
        else:
            merged[key] = np.concatenate([np.asarray(r[key]) for r in results])
    for key in [k for k in keys if k.startswith("rank_")]:
        means = np.asarray(merged["mean_" + key[len("rank_"):]], dtype=float)
        if np.isnan(means).all():
            merged[key] = np.ones(len(means), dtype=np.int32)
        else:
            filled = np.nan_to_num(means, nan=np.nanmin(means) - 1)
            merged[key] = rankdata(-filled, method="min").astype(np.int32)
    return merged


def best_of_last_rungs(cv_results: dict[str, Any], metric: str = "score") -> int:
    """The row with the highest mean score among each bracket's last rung (the first
    on ties; rows whose mean is NaN never win unless all are)."""
    brackets_col = np.asarray(cv_results["bracket"])
    rungs = np.asarray(cv_results["iter"])
    means = np.asarray(cv_results[f"mean_test_{metric}"], dtype=float)
    last = np.zeros(len(means), dtype=bool)
    for b in np.unique(brackets_col):
        mine = brackets_col == b
        last |= mine & (rungs == rungs[mine].max())
    candidates = np.flatnonzero(last)
    scored = candidates[~np.isnan(means[candidates])]
    if not len(scored):
        return int(candidates[0])
    return int(scored[np.argmax(means[scored])])
