"""Build the scikit-learn search a spec describes, from its sections.

Takes plain sections (``model:``, ``fit:``, ``param_grid:``, ...), not a
:class:`~keras_sweep.spec.reading.Spec`, so spec validation can ask it which parameters the
estimator accepts without an import circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

from ..spec.distributions import Distribution, sampled
from ..spec.models import default_loss, import_builder, make_estimator

#: the search kinds a spec's ``search.kind`` names
KINDS = ("grid", "random", "halving", "hyperband")


@dataclass(frozen=True)
class SearchOptions:
    """How a spec searches: ``search: {kind: ..., ...}`` (``grid`` when left out).

    ``random`` draws ``n_iter`` candidates from ``param_grid`` (lists: a uniform
    choice; distributions: :mod:`keras_sweep.spec.distributions`). ``halving`` is
    scikit-learn's successive halving: every candidate of the grid (or
    ``n_candidates`` drawn, when the grid has distributions or ``n_candidates``
    is given) is cross-validated with few resources, the best ``1/factor`` go on
    with ``factor`` times more, until one rung is left; the resource is the
    number of training rows (``n_samples``) or an estimator parameter such as
    ``epochs``. ``hyperband`` runs several such halvings (brackets,
    :mod:`keras_sweep.search.hyperband`), each drawing its own candidates, from many
    with few resources to few with all.
    """

    kind: str = "grid"
    n_iter: int = 10
    n_candidates: int | str | None = None
    factor: float = 3
    resource: str = "n_samples"
    #: None: scikit-learn's default ("exhaust" over a grid, "smallest" when drawing)
    min_resources: int | str | None = None
    #: "auto": all rows (resource n_samples) or fit.epochs (resource epochs)
    max_resources: int | str = "auto"
    aggressive_elimination: bool = False

    def min_resources_for(self, grids: list[dict[str, Any]]) -> int | str:
        """``min_resources`` with scikit-learn's default for this search filled in."""
        if self.min_resources is not None:
            return self.min_resources
        return "smallest" if self.sampling(grids) or self.kind == "hyperband" else "exhaust"

    def sampling(self, grids: list[dict[str, Any]]) -> bool:
        """Whether candidates are drawn (not enumerated) from ``grids``."""
        if self.kind == "random":
            return True
        has_distribution = any(isinstance(v, Distribution) for g in grids for v in g.values())
        if self.kind == "hyperband":
            return True
        return self.kind == "halving" and (self.n_candidates is not None or has_distribution)


@dataclass(frozen=True)
class Rung:
    """One round of a search: how many candidates it cross-validates, with what resource."""

    candidates: int
    resources: int | None = None  #: rows or the resource parameter's value (halving)
    bracket: int | None = None  #: Hyperband's bracket (its ``s``)


def grid_size(grids: list[dict[str, Any]]) -> int:
    """How many candidates a grid of lists enumerates (distributions count as infinite)."""
    total = 0
    for grid in grids:
        if any(isinstance(v, Distribution) for v in grid.values()):
            return math.inf  # type: ignore[return-value]
        total += math.prod(len(v) for v in grid.values())
    return total


def resource_bounds(options: SearchOptions, grids: list[dict[str, Any]], *, n_samples: int,
                    n_splits: int, n_classes: int = 0) -> tuple[Any, Any]:
    """A halving search's smallest and largest rung resources before ``exhaust`` applies,
    as scikit-learn's ``_check_input_parameters`` sets them (``n_classes`` 0: a regressor)."""
    wanted = options.min_resources_for(grids)
    if wanted in ("smallest", "exhaust"):
        low: Any = 2 * n_splits * max(n_classes, 1) if options.resource == "n_samples" else 1
    else:
        low = int(wanted)
    high = n_samples if options.max_resources == "auto" else int(options.max_resources)
    return low, high


def plan(options: SearchOptions, grids: list[dict[str, Any]], *, n_samples: int,
         n_splits: int, n_classes: int = 0) -> list[Rung]:
    """The rounds the search will run, computed as scikit-learn's searches compute them.

    For halving this follows ``BaseSuccessiveHalving`` (scikit-learn 1.4-1.9:
    ``_check_input_parameters``, ``_run_search``, ``_generate_candidate_params``):
    the rung count, each rung's candidates (``ceil`` of the previous over
    ``factor``) and resources; ``tests/test_search.py`` checks it against fitted
    searches' ``n_candidates_`` and ``n_resources_``. ``n_classes`` is 0 for a
    regressor.
    """
    size = grid_size(grids)
    if options.kind == "grid":
        return [Rung(int(size))]
    if options.kind == "random":
        return [Rung(int(min(options.n_iter, size)))]
    if options.kind == "hyperband":
        from dataclasses import replace

        from .hyperband import brackets

        low, high = resource_bounds(options, grids, n_samples=n_samples, n_splits=n_splits,
                                    n_classes=n_classes)
        out: list[Rung] = []
        for bracket in brackets(int(high), int(low), options.factor):
            halving = SearchOptions(kind="halving", n_candidates=bracket.candidates,
                                    factor=options.factor, resource=options.resource,
                                    min_resources=bracket.min_resources, max_resources=high)
            out += [replace(r, bracket=bracket.index) for r in plan(
                halving, grids, n_samples=n_samples, n_splits=n_splits, n_classes=n_classes)]
        return out
    factor, wanted = options.factor, options.min_resources_for(grids)
    low, high = resource_bounds(options, grids, n_samples=n_samples, n_splits=n_splits,
                                n_classes=n_classes)
    count = size
    if options.sampling(grids):
        first = options.n_candidates
        count = min(high // low if first in (None, "exhaust") else int(first), size)
    required = 1 + math.floor(math.log(count, factor))
    if wanted == "exhaust":
        low = max(low, high // factor ** (required - 1))
    possible = 1 + math.floor(math.log(high // low, factor))
    rounds = required if options.aggressive_elimination else min(possible, required)
    rungs, candidates = [], int(count)
    for i in range(rounds):
        power = max(0, i - required + possible) if options.aggressive_elimination else i
        rungs.append(Rung(candidates, min(int(factor ** power * low), high)))
        candidates = math.ceil(candidates / factor)
    return rungs


def build_estimator(model: dict[str, Any], fit: dict[str, Any],
                    task: str = "classification", n_classes: int = 2) -> Any:
    """The scikeras estimator of a spec's ``model:`` and ``fit:`` sections."""
    task = model.get("task") or task
    loss = model.get("loss") or default_loss(task, n_classes)
    return make_estimator(
        task,
        import_builder(model["builder"]),
        loss=loss,
        optimizer=model["optimizer"],
        builder_params=model["params"],
        fit_params=fit,
        extra={f"optimizer__{k}": v for k, v in model["optimizer_params"].items()},
    )


def estimator_params(model: dict[str, Any], fit: dict[str, Any]) -> set[str]:
    """Names ``set_params`` accepts on the estimator of these sections."""
    return set(build_estimator(model, fit).get_params(deep=False))


def build_search(model: dict[str, Any], fit: dict[str, Any],
                 param_grid: list[dict[str, Any]], *, cv: int, scoring: str | list[str],
                 seed: int | None, error_score: float | str, task: str,
                 n_classes: int, options: SearchOptions | None = None,
                 return_train_score: bool = False) -> Any:
    """An unchanged scikit-learn search with ``n_jobs=-1`` (every worker).

    ``GridSearchCV``, ``RandomizedSearchCV``, ``HalvingGridSearchCV``,
    ``HalvingRandomSearchCV`` or sweep's :class:`~keras_sweep.search.hyperband.HyperbandSearchCV`
    as ``options`` say. The folds are shuffled with
    ``seed`` (0 if None), stratified for classification; candidates are drawn
    with ``seed`` too, so a rerun (or a resume) draws the same ones. The refit
    is left to the runner, which runs it on a worker.
    """
    options = options or SearchOptions()
    seed = seed if seed is not None else 0
    splitter = (KFold if task == "regression" else StratifiedKFold)(
        n_splits=cv, shuffle=True, random_state=seed)
    estimator = build_estimator(model, fit, task, n_classes)
    grids = [{k: sampled(v) for k, v in grid.items()} for grid in param_grid]
    space = grids if len(grids) > 1 else grids[0]
    common = {"cv": splitter, "scoring": scoring, "n_jobs": -1,
              "refit": False,  # the runner refits on a worker (sweep.refit)
              "error_score": error_score, "return_train_score": return_train_score}
    if options.kind == "random":
        from sklearn.model_selection import RandomizedSearchCV

        return RandomizedSearchCV(estimator, space, n_iter=options.n_iter,
                                  random_state=seed, **common)
    if options.kind == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

        halving = {"factor": options.factor, "resource": options.resource,
                   "min_resources": options.min_resources_for(param_grid),
                   "aggressive_elimination": options.aggressive_elimination,
                   "max_resources": options.max_resources, "random_state": seed}
        if options.sampling(param_grid):
            return HalvingRandomSearchCV(estimator, space,
                                         n_candidates=options.n_candidates or "exhaust",
                                         **halving, **common)
        return HalvingGridSearchCV(estimator, space, **halving, **common)
    if options.kind == "hyperband":
        from .hyperband import HyperbandSearchCV

        return HyperbandSearchCV(estimator, space, max_resources=options.max_resources,
                                 resource=options.resource,
                                 min_resources=options.min_resources_for(param_grid),
                                 factor=options.factor, random_state=seed, **common)
    return GridSearchCV(estimator, space, **common)


def select_best(search: Any, metric: str) -> None:
    """Give a fitted multi-metric search (``refit=False``) its best candidate by ``metric``.

    scikit-learn sets ``best_index_``, ``best_score_`` and ``best_params_`` of a
    multi-metric search only when it refits in this process; sweep refits on a
    worker, so it picks them here as scikit-learn would (the lowest
    ``rank_test_<metric>``, the first on ties). A single-metric search has them.
    """
    if hasattr(search, "best_index_"):
        return
    results = search.cv_results_
    index = int(np.argmin(results[f"rank_test_{metric}"]))  # as scikit-learn picks it
    search.best_index_ = index
    search.best_score_ = float(results[f"mean_test_{metric}"][index])
    search.best_params_ = results["params"][index]

