"""Run a validated spec: data, search, cluster, results. Used by the CLI."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import ParameterGrid, ParameterSampler

from .. import clusters, report
from ..config import resolve
from ..driver.session import Session, cluster
from ..exceptions import ClusterExpired, Interrupted, SpecError
from ..report.live import LiveReport
from ..report.tracking import MlflowTracker
from ..search.build import Rung, build_search, resource_bounds, select_best
from ..spec import datasets as datamod
from ..spec.checks import check_folds
from ..spec.distributions import sampled
from ..spec.reading import HALVING_KINDS, Spec
from ..store import results
from ..store.journal import Journal
from ..store.output import claim
from ..store.records import FitRecord
from ..version import __version__

JOURNAL_NAME = "journal.sqlite"


@dataclass
class SweepResult:
    """Outcome of :func:`run`: the fitted search, fit records and written files."""

    search: Any
    fits: list[FitRecord]
    output: Path
    files: list[Path]
    wall_seconds: float
    dashboard: str | None
    failed: list[FitRecord] = field(default_factory=list)
    #: the scorer that ranked the candidates (``score``: the only one)
    metric: str = "score"

    @property
    def summary(self) -> list[str]:
        best = self.search.best_index_ if hasattr(self.search, "best_index_") else None
        return results.summary_lines(self.search.cv_results_, best, self.metric)


def run(spec: Spec, *, progress: bool = True, echo: Callable[[str], None] = print,
        session: Session | None = None) -> SweepResult:
    """Load the data, start the spec's cluster (or use ``session``), fit, save results.

    Everything that can be checked is checked before a cluster starts: the data
    against the folds, the output folder (writable, and not in use by another
    sweep: it stays claimed until the results are written), its journal.
    """
    start = time.perf_counter()
    if session is None:
        with contextlib.suppress(SpecError):  # the cluster's own start says what is wrong
            clusters.prestart(resolve(**spec.cluster))
    dataset, search = prepare(spec, echo)
    with claim(spec.output):
        if session is not None:
            return _fit(spec, session, dataset, search, echo, start)
        path = Path(spec.output) / JOURNAL_NAME
        resuming = path.exists()
        journal = Journal(path)  # a foreign or damaged file stops here, before the cluster
        if resuming:
            echo(f"sweep: journal {path} found: {len(journal)} finished fit(s) it holds are "
                 "not run again")
        own: Session | None = None
        try:
            while True:
                kept = len(journal)
                try:
                    with cluster(seed=spec.seed, progress=progress, journal=journal,
                                 max_retries=spec.max_retries, fast_path=spec.fast_path,
                                 compiled_loop=spec.compiled_loop, xla=spec.xla,
                                 fail_on_nan=spec.fail_on_nan, name=spec.name,
                                 **spec.cluster) as own:
                        return _fit(spec, own, dataset, search, echo, start)
                except ClusterExpired as exc:
                    if not exc.renewable:
                        raise
                    if len(journal) == kept:  # no fit finished in a whole cluster's life
                        raise ClusterExpired(exc.what, False, "no fit finished during the "
                                             "cluster's life: raise sweep.tls.valid-days (or "
                                             "lower sweep.cluster.expiry-margin)") from None
                    echo(f"\nsweep: {exc.what} soon: {len(journal)} finished fit(s) are "
                         "kept; a new cluster continues the sweep")
        except KeyboardInterrupt as exc:
            if isinstance(exc, Interrupted):
                raise
            finished = sum(1 for f in (own.fits if own else []) if not f.refit)
            total = spec.n_fits(len(dataset.y), n_classes(spec, dataset))
            raise Interrupted(finished, total, journaled=True) from None
        finally:
            journal.close()


def prepare(spec: Spec, echo: Callable[[str], None] = print) -> tuple[Any, Any]:
    """The spec's data (sampled if asked) and its unfitted ``GridSearchCV``."""
    dataset = datamod.load(spec.data, spec.base_dir)
    task = spec.model.get("task") or dataset.task
    if spec.data.get("sample", 1.0) < 1.0:
        dataset.X, dataset.y = datamod.stratified_sample(
            dataset.X, dataset.y, spec.data["sample"], spec.seed or 0,
            stratify=task == "classification")
        echo(f"sweep: training on a stratified sample of {spec.data['sample']:.0%} of the rows")
    check_folds(spec.cv, dataset.y, task, str(spec.data.get("target", "target")))
    classes = n_classes(spec, dataset)
    check_rungs(spec, dataset.X.shape[0], classes)
    echo(f"sweep: {spec.name}: {spec.describe(dataset.X.shape[0], classes)} on "
         f"{dataset.source} ({dataset.X.shape[0]} rows, {dataset.X.shape[1]} features)")
    search = build_search(spec.model, spec.fit, spec.param_grid, cv=spec.cv,
                          scoring=spec.search_scoring, seed=spec.seed,
                          error_score=spec.error_score, task=task, n_classes=classes,
                          options=spec.search, return_train_score=spec.return_train_score)
    return dataset, search


def n_classes(spec: Spec, dataset: Any) -> int:
    """The target's classes (0 for a regression)."""
    task = spec.model.get("task") or dataset.task
    return int(len(np.unique(dataset.y))) if task == "classification" else 0


def check_rungs(spec: Spec, n_samples: int, classes: int) -> None:
    """A halving search whose smallest rung exceeds its largest stops here, with the fix."""
    options = spec.search
    if options.kind not in HALVING_KINDS or options.resource != "n_samples":
        return
    low, high = resource_bounds(options, spec.param_grid, n_samples=n_samples,
                                n_splits=spec.cv, n_classes=classes)
    if low > high:
        raise SpecError("search.min_resources", low, f"above the rows a rung can have ({high})",
                        f"give min_resources at most {high}, or fewer folds")


def _fit(spec: Spec, session: Session, dataset: Any, search: Any,
         echo: Callable[[str], None], start: float) -> SweepResult:
    n_workers = len(session.client.scheduler_info()["workers"])
    echo(f"sweep: cluster '{session.backend_name}' with {n_workers} worker(s); "
         f"dashboard: {session.dashboard_link or 'not available'}")
    before = len(session.fits)
    run_info = {"backend": session.backend_name, "workers": n_workers,
                "dashboard": session.dashboard_link, "version": __version__,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    resolved = spec.resolved(session.settings)  # the spec as it runs: saved, shown, logged
    expected = spec.n_fits(dataset.X.shape[0], n_classes(spec, dataset))
    live = _live_report(spec, resolved, session, before, run_info, expected)
    if live is not None:
        echo(f"sweep: live report: {live.start()}")
    tracker = None
    if spec.tracking is not None:
        tracker = MlflowTracker(spec.tracking, spec.output, spec.name, spec.cv)
        session.monitor.listeners.append(tracker.on_fit)
        echo(f"sweep: logging to MLflow {spec.tracking.uri}, experiment "
             f"'{spec.tracking.experiment}'")
    rungs = spec.rungs(dataset.X.shape[0], n_classes(spec, dataset))
    session.monitor.expect_rounds(round_labels(rungs) if spec.search.kind in HALVING_KINDS
                                  else None)
    try:
        search.fit(dataset.X, dataset.y)
        select_best(search, spec.metric)
        if spec.refit and hasattr(search, "best_params_"):
            try:
                record = session.refit(search, dataset.X, dataset.y)
                echo(f"sweep: refit of the best candidate on all {dataset.X.shape[0]} rows "
                     f"on worker {record.worker}: {record.seconds or 0.0:.1f} s")
            except Exception as exc:  # the cross-validation results are kept regardless
                echo(f"sweep: the refit of the best candidate failed ({exc!r}); "
                     "cross-validation results are saved anyway")
    except BaseException as exc:
        if live is not None:
            live.stop()
            _stopped_page(live, exc)
        if tracker is not None:
            session.monitor.listeners.remove(tracker.on_fit)
            echo(tracker.finish(wait=5.0))  # what finished is logged; no summary
        raise
    if live is not None:
        live.stop()
    if tracker is not None:
        session.monitor.listeners.remove(tracker.on_fit)
    fits = [f for f in session.fits[before:] if not f.refit]
    resumed = sum(1 for f in fits if f.resumed)
    if resumed:
        echo(f"sweep: {resumed} fit(s) came from the journal, {len(fits) - resumed} ran now")
    output = Path(spec.output)
    run_info["wall_seconds"] = round(time.perf_counter() - start, 3)
    files = results.save(output, cv_results=search.cv_results_, best=_best(search),
                         spec=resolved, fits=fits, run=run_info)
    if spec.report:
        files.append(_final_report(search, session.fits[before:], spec, resolved, run_info,
                                   output, echo))
    if tracker is not None:
        artifacts = tuple(output / name for name in ("spec.yaml", "cv_results.csv",
                                                     "best.json", report.REPORT_NAME))
        echo(tracker.finish(_best(search), search.cv_results_, artifacts))
    return SweepResult(search, fits, output, files, time.perf_counter() - start,
                       session.dashboard_link, results.failed_fits(fits),
                       "score" if isinstance(spec.scoring, str) else spec.metric)


def round_labels(rungs: list[Rung]) -> list[str]:
    """Each round's name in the progress bar: "rung 2/4", or "bracket 3, rung 2/4"."""
    labels = []
    for rung in rungs:
        mine = [r for r in rungs if r.bracket == rung.bracket]
        where = f"rung {mine.index(rung) + 1}/{len(mine)}"
        labels.append(where if rung.bracket is None else f"bracket {rung.bracket}, {where}")
    return labels


def _live_report(spec: Spec, resolved: dict[str, Any], session: Session, before: int,
                 run_info: dict[str, Any], expected_fits: int) -> LiveReport | None:
    """The live page of this sweep (None: reports or live pages are off)."""
    if not spec.report or session.settings.report_interval <= 0:
        return None
    candidates = search_candidates(spec)
    return LiveReport(spec.output, lambda: session.fits[before:],
                      session.settings.report_interval, title=spec.name,
                      n_candidates=len(candidates) if candidates is not None else None,
                      n_splits=spec.cv, params=candidates, expected_fits=expected_fits,
                      scoring=spec.metric, spec=resolved, run=run_info)


def search_candidates(spec: Spec) -> list[dict[str, Any]] | None:
    """The candidates a grid or random search will cross-validate, in its order
    (None for halving: later rungs depend on the scores)."""
    if spec.search.kind in HALVING_KINDS:
        return None
    space = [{k: sampled(v) for k, v in grid.items()} for grid in spec.param_grid]
    if spec.search.kind == "random":  # as RandomizedSearchCV draws them
        return [dict(p) for p in ParameterSampler(
            space if len(space) > 1 else space[0], spec.search.n_iter,
            random_state=spec.seed if spec.seed is not None else 0)]
    return [dict(p) for p in ParameterGrid(space)]


def _stopped_page(live: LiveReport, exc: BaseException) -> None:
    """The last live page of a sweep that stopped: says so, and stops reloading."""
    why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {exc!r}"
    try:
        report.write(report.from_records(list(live.fits()), ended=why, **live.context),
                     live.folder)
    except Exception:  # the sweep's own error matters more than its page
        pass


def _final_report(search: Any, fits: list[FitRecord], spec: Spec, resolved: dict[str, Any],
                  run_info: dict[str, Any], output: Path, echo: Callable[[str], None]) -> Path:
    start = time.perf_counter()
    data = report.from_cv_results(search.cv_results_, fits, title=spec.name,
                                  scoring=spec.metric, spec=resolved, run=run_info)
    path = report.write(data, output)
    echo(f"sweep: report: {path} ({time.perf_counter() - start:.1f} s)")
    return path


def _best(search: Any) -> dict[str, Any]:
    if not hasattr(search, "best_index_"):
        return {}
    metric = search.scoring if isinstance(search.scoring, str) else search.scoring[0]
    return {"best_params": search.best_params_, "best_score": search.best_score_,
            "best_index": int(search.best_index_), "scoring": search.scoring,
            "metric": metric}
