"""What a report shows, as typed records, from a finished results folder or live fits.

One :class:`ReportData` feeds every picture and table of the page, whether it
comes from a results folder (:func:`from_folder`: ``cv_results.json``,
``fits.csv``, ``curves.csv``, ``run.json``...) or from the fit records of a
sweep still running (:func:`from_records`), so the live page and the final one
are drawn by the same code.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..store.records import FitRecord

#: files of a results folder the report reads (``results.save`` writes them)
CV_RESULTS, FITS, CURVES, RUN, SPEC, BEST = (
    "cv_results.json", "fits.csv", "curves.csv", "run.json", "spec.yaml", "best.json")


@dataclass(frozen=True)
class Candidate:
    """One parameter set: its scores per fold and over folds."""

    index: int
    params: dict[str, Any]
    #: the test score of each fold (None: not finished yet, or no score)
    fold_scores: tuple[float | None, ...]
    mean: float | None
    std: float | None
    #: 1 is best (None: no finished fold yet)
    rank: int | None
    #: mean fit seconds over its folds
    fit_seconds: float | None = None
    #: a halving search's rung (from 0) and the resources it had there (None: no rungs)
    rung: int | None = None
    resources: int | None = None
    #: a Hyperband search's bracket (its ``s``; None: not Hyperband)
    bracket: int | None = None


@dataclass
class ReportData:
    """Everything the page shows about one sweep."""

    title: str
    candidates: list[Candidate]
    fits: list[FitRecord]
    n_splits: int
    scoring: str = "score"
    spec: dict[str, Any] | None = None
    #: what ran it, e.g. ``{"backend": "local", "workers": 2, "wall_seconds": 81.2}``
    run: dict[str, Any] = field(default_factory=dict)
    #: the sweep is still running: the page says so and reloads itself
    live: bool = False
    #: fits the sweep will run in all (None: not known)
    expected_fits: int | None = None
    #: why a sweep stopped before its end (e.g. "interrupted"); None: it did not
    ended: str | None = None

    @property
    def rungs(self) -> list[tuple[int | None, int]]:
        """A halving search's rungs as ``(bracket, rung)`` (bracket None but for
        Hyperband), in the search's order (empty: one round)."""
        seen: list[tuple[int | None, int]] = []
        for c in self.candidates:
            if c.rung is not None and (c.bracket, c.rung) not in seen:
                seen.append((c.bracket, c.rung))
        return seen

    @property
    def best(self) -> Candidate | None:
        """The best candidate (of a halving search: the best of its last rung; of
        Hyperband: the best of its brackets' last rungs)."""
        last: dict[int | None, int] = {}
        for bracket, rung in self.rungs:
            last[bracket] = max(last.get(bracket, rung), rung)
        ranked = [c for c in self.candidates if c.rank is not None
                  and (not last or last.get(c.bracket) == c.rung)]
        return min(ranked, key=lambda c: (c.rank, c.index)) if ranked else None

    @property
    def varying(self) -> list[str]:
        """Parameters that take more than one value, in the order the grid names them."""
        names: list[str] = []
        for c in self.candidates:
            names += [n for n in c.params if n not in names]
        return [n for n in names
                if len({repr(c.params.get(n)) for c in self.candidates}) > 1]

    @property
    def cv_fits(self) -> list[FitRecord]:
        """The cross-validation fits (not the final refit)."""
        return [f for f in self.fits if not f.refit]

    def index_of(self, fit: FitRecord) -> int | None:
        """The candidate (row of ``cv_results_``) a fit belongs to."""
        return candidate_row(fit, round_offsets(self.cv_fits))


def round_offsets(fits: list[FitRecord]) -> dict[int, int] | None:
    """A halving search numbers candidates afresh in each rung (``candidate`` of
    ``n_candidates``), and ``cv_results_`` lists the rungs one after the other: the row
    where each round starts, by the fits' ``round`` (or, for records without one, by
    the round's size: a halving's rungs shrink). None: one round."""
    if all(f.round is not None for f in fits if f.n_candidates):
        sizes: dict[int, int] = {}
        for f in fits:
            if f.round is not None and f.n_candidates:
                sizes[f.round] = f.n_candidates
        rounds = sorted(sizes)
    else:
        sizes = {n: n for n in {f.n_candidates for f in fits if f.n_candidates}}
        rounds = sorted(sizes, reverse=True)
    if len(rounds) < 2:
        return None
    starts, at = {}, 0
    for key in rounds:
        starts[key] = at
        at += sizes[key]
    return starts


def candidate_row(fit: FitRecord, offsets: dict[int, int] | None) -> int | None:
    """The ``cv_results_`` row of ``fit`` (``offsets``: :func:`round_offsets`)."""
    if fit.candidate is None:
        return None
    if offsets is None:
        return fit.candidate
    key = fit.round if fit.round is not None else fit.n_candidates
    return offsets.get(key or 0, 0) + fit.candidate


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ranks(means: list[float | None]) -> list[int | None]:
    """Ranks as scikit-learn gives them (ties share the lowest rank), best = 1."""
    order = sorted((m for m in means if m is not None), reverse=True)
    return [None if m is None else order.index(m) + 1 for m in means]


def from_cv_results(cv_results: dict[str, Any], fits: list[FitRecord], *, title: str,
                    **context: Any) -> ReportData:
    """A finished search's ``cv_results_`` (or its JSON), with its fit records."""
    wanted = context.get("scoring")  # a multi-metric search's ranking scorer
    metric = "score" if "mean_test_score" in cv_results else (
        wanted if f"mean_test_{wanted}" in cv_results else next(
            (k[len("mean_test_"):] for k in cv_results if k.startswith("mean_test_")), "score"))
    n_splits = sum(1 for k in cv_results if k.startswith("split") and k.endswith(
        f"_test_{metric}"))
    means = [_score(m) for m in cv_results[f"mean_test_{metric}"]]
    ranks = _ranks(means)
    fit_times = cv_results.get("mean_fit_time", [None] * len(means))
    rungs = cv_results.get("iter", [None] * len(means))
    resources = cv_results.get("n_resources", [None] * len(means))
    brackets = cv_results.get("bracket", [None] * len(means))
    candidates = [
        Candidate(
            index=i, params=dict(params),
            fold_scores=tuple(_score(cv_results[f"split{k}_test_{metric}"][i])
                              for k in range(n_splits)),
            mean=means[i], std=_score(cv_results[f"std_test_{metric}"][i]),
            rank=ranks[i], fit_seconds=_score(fit_times[i]),
            rung=None if rungs[i] is None else int(rungs[i]),
            resources=None if resources[i] is None else int(resources[i]),
            bracket=None if brackets[i] is None else int(brackets[i]))
        for i, params in enumerate(cv_results["params"])]
    context.setdefault("scoring", metric)
    return ReportData(title=title, candidates=candidates, fits=fits, n_splits=n_splits,
                      **context)


def from_records(fits: list[FitRecord], *, title: str, n_candidates: int | None = None,
                 n_splits: int | None = None, params: list[dict[str, Any]] | None = None,
                 **context: Any) -> ReportData:
    """A sweep in progress: candidates scored over the folds finished so far.

    ``params`` lists every candidate's parameters (so candidates with no finished
    fit yet are shown too); else the fits name them, and a candidate is one per
    round (a halving search numbers its candidates afresh in each rung, whose
    size tells the rungs apart: :func:`round_offsets`).
    """
    cv = [f for f in fits if not f.refit and f.candidate is not None]
    n_splits = n_splits or max((f.n_splits or 0 for f in cv), default=0) or 1
    n_candidates = n_candidates or max((f.n_candidates or 0 for f in cv), default=0)
    known: dict[int, dict[str, Any]] = dict(enumerate(params or []))
    scores: dict[int, list[float | None]] = defaultdict(lambda: [None] * n_splits)
    seconds: dict[int, list[float]] = defaultdict(list)
    offsets = round_offsets(cv) if params is None else None
    for f in cv:
        row = candidate_row(f, offsets)
        assert row is not None
        known.setdefault(row, dict(f.params or {}))
        if f.split is not None and f.split < n_splits:
            scores[row][f.split] = None if f.fit_error else _score(f.test_score)
        if f.seconds is not None:
            seconds[row].append(f.seconds)
    indices = sorted(known) if offsets else sorted(set(known) | set(range(n_candidates)))
    means: list[float | None] = []
    stds: list[float | None] = []
    for i in indices:
        done = [s for s in scores[i] if s is not None] if i in scores else []
        means.append(float(np.mean(done)) if done else None)
        stds.append(float(np.std(done)) if done else None)
    ranks = _ranks(means)
    candidates = [
        Candidate(index=i, params=known.get(i, {}),
                  fold_scores=tuple(scores[i]) if i in scores else (None,) * n_splits,
                  mean=means[k], std=stds[k], rank=ranks[k],
                  fit_seconds=float(np.mean(seconds[i])) if seconds.get(i) else None)
        for k, i in enumerate(indices)]
    return ReportData(title=title, candidates=candidates, fits=fits, n_splits=n_splits,
                      **context)


def _record(row: dict[str, Any]) -> FitRecord:
    facts: dict[str, Any] = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                             for k, v in row.items()}
    params = facts.get("params")
    if isinstance(params, str):
        try:
            facts["params"] = json.loads(params)
        except ValueError:
            facts["params"] = {"params": params}
    if isinstance(facts.get("lost_runs"), str):
        try:
            facts["lost_runs"] = json.loads(facts["lost_runs"])
        except ValueError:
            facts["lost_runs"] = None
    for name in ("candidate", "n_candidates", "split", "n_splits", "pid", "process_fits"):
        value = facts.get(name)
        if value is not None:
            facts[name] = int(value)
    return FitRecord.from_dict(facts)


def from_folder(folder: str | Path) -> ReportData:
    """A finished sweep's results folder (what ``sweep run`` wrote).

    Raises
    ------
    FileNotFoundError
        The folder has no ``cv_results.json`` (not a finished sweep's results).
    """
    folder = Path(folder)
    path = folder / CV_RESULTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CV_RESULTS}: not the results folder of a finished sweep.\n"
            "  Fix: give the folder `sweep run` wrote (its --output, or the spec's output:).")
    cv_results = json.loads(path.read_text())
    fits: list[FitRecord] = []
    if (folder / FITS).is_file() and (folder / FITS).stat().st_size > 1:
        fits = [_record(row) for row in pd.read_csv(folder / FITS).to_dict("records")]
    if (folder / CURVES).is_file():
        curves = pd.read_csv(folder / CURVES)
        by_fit: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(dict)
        for (candidate, split, metric), group in curves.groupby(
                ["candidate", "split", "metric"], sort=False):
            by_fit[(int(candidate), int(split))][str(metric)] = [
                float(v) for v in group.sort_values("epoch")["value"]]
        for f in fits:
            if not f.refit and f.candidate is not None and f.split is not None:
                f.history = by_fit.get((f.candidate, f.split))
    spec = yaml.safe_load((folder / SPEC).read_text()) if (folder / SPEC).is_file() else None
    run = json.loads((folder / RUN).read_text()) if (folder / RUN).is_file() else {}
    best = json.loads((folder / BEST).read_text()) if (folder / BEST).is_file() else {}
    title = (spec or {}).get("name") or folder.name
    scoring = best.get("metric") or (best.get("scoring") if isinstance(best.get("scoring"), str)
                                     else None)
    context: dict[str, Any] = {"spec": spec, "run": run}
    if scoring:
        context["scoring"] = scoring
    return from_cv_results(cv_results, fits, title=str(title), **context)
