"""MLflow tracking: one parent run per sweep, one child run per candidate.

The driver logs as fits finish, from a thread of its own: a child run per
candidate (its parameters, each fold's test score and fit time, each fold's
Keras history as step metrics; once all its folds are in, the mean and std
over folds and the mean learning curve), and at the end the parent's best
parameters and score, its spec, report and ``cv_results.csv`` as artifacts.

A tracker that is down never fails or slows the sweep: updates wait in a queue
and are retried (backoff up to 10 s); what is still not logged when the sweep
ends is reported, and rerunning the same command logs it (the fits come from
the journal). The runs' ids are kept in ``OUTPUT/mlflow.json``, so a resumed
sweep continues the same runs; fold metrics a run already has are not logged
twice.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.records import FitRecord, jsonable, mean_history
from .data import candidate_row, round_offsets

logger = logging.getLogger(__name__)

#: the runs of a sweep, in its output folder
STATE_NAME = "mlflow.json"
#: per HTTP request: no retries of MLflow's own (ours are in the thread), a short timeout
HTTP_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


@dataclass
class TrackingConfig:
    """Where to log: an MLflow tracking URI and an experiment name."""

    uri: str
    experiment: str = "sweep"

    @classmethod
    def from_spec(cls, value: Any) -> TrackingConfig | None:
        """``tracking: {mlflow: URI, experiment: NAME}`` of a spec (None: not asked)."""
        if not value or not value.get("mlflow"):
            return None
        return cls(str(value["mlflow"]), str(value.get("experiment") or "sweep"))


@dataclass
class _State:
    """Ids of the runs a sweep logs into (saved as ``mlflow.json``)."""

    uri: str
    #: tags every run of this sweep: a run made just before a crash (its id not saved
    #: yet) is found by it when the sweep resumes, not made twice
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    experiment_id: str | None = None
    parent: str | None = None
    children: dict[str, str] = field(default_factory=dict)
    #: read from a file: this sweep resumes an earlier one
    resumed: bool = False


def _mlflow() -> Any:
    for name, value in HTTP_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import mlflow
    except ImportError:
        from ..exceptions import SpecError

        raise SpecError("tracking.mlflow", "mlflow", "MLflow is not installed",
                        "pip install 'keras-sweep[mlflow]' (or pip install mlflow-skinny)"
                        ) from None
    return mlflow


def check_installed() -> None:
    """Raise :class:`~keras_sweep.exceptions.SpecError` unless MLflow can be imported."""
    _mlflow()


class MlflowTracker:
    """Logs one sweep into MLflow from a background thread.

    Parameters
    ----------
    config : TrackingConfig
        The tracking server and experiment.
    folder : path, optional
        The sweep's output folder: ``mlflow.json`` there keeps the runs' ids, so a
        resumed sweep continues them (None: not kept).
    name : str
        The sweep's name (the parent run's name).
    n_splits : int, optional
        Folds per candidate (a candidate's mean is logged once all are in);
        default: what the fits say.
    state_name : str
        The file name of the runs' ids in ``folder``.
    """

    def __init__(self, config: TrackingConfig, folder: str | Path | None, name: str,
                 n_splits: int | None = None, state_name: str = STATE_NAME) -> None:
        mlflow = _mlflow()
        self.config = config
        self.folder = None if folder is None else Path(folder)
        self.state_name = state_name
        self.name = name
        self.n_splits = n_splits
        self.client = mlflow.MlflowClient(config.uri)
        self.state = self._load_state()
        self._queue: collections.deque[tuple[str, Callable[[], None]]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: str | None = None
        self._folds: dict[int, dict[int, FitRecord]] = collections.defaultdict(dict)
        self._rounds: list[FitRecord] = []
        self._rows: dict[int, int] = {}
        self._logged: dict[str, set[str]] = {}
        self._with_params: set[str] = set()
        self._failing = False
        self.done = 0
        self._thread = threading.Thread(target=self._work, name="sweep-mlflow", daemon=True)
        self._thread.start()
        self._put("parent run", self._ensure_parent)

    # -- what the driver calls ---------------------------------------------------------

    def on_fit(self, record: FitRecord) -> None:
        """Queue a finished fit's logging (returns at once)."""
        if record.refit or record.candidate is None or record.split is None:
            return
        # a halving search numbers candidates afresh in each rung: one run per row of
        # cv_results_ (rung after rung), as the report counts them
        if all(f.n_candidates != record.n_candidates for f in self._rounds):
            self._rounds.append(record)  # one fit per rung size is enough
        row = candidate_row(record, round_offsets(self._rounds)) or 0
        self._rows[id(record)] = row
        folds = self._folds[row]
        folds[record.split] = record
        self._put(f"candidate {row} fold {record.split}", lambda: self._log_fit(record))
        if len(folds) == (self.n_splits or record.n_splits):
            done = [folds[k] for k in sorted(folds)]
            self._put(f"candidate {row} summary", lambda: self._log_candidate(row, done))

    def finish(self, best: dict[str, Any] | None = None,
               cv_results: dict[str, Any] | None = None, artifacts: tuple[Path, ...] = (),
               wait: float = 30.0) -> str:
        """Queue the parent's summary (``best``: ``best.json``'s content; None: the sweep
        stopped early, no summary) and wait for the queue to drain: up to ``wait``
        seconds, or 3 s while the server does not answer. Returns one line saying what
        was logged, and what was not."""
        if best is not None:
            self._put("parent summary", lambda: self._log_parent(best, cv_results,
                                                                 artifacts))
        start = time.monotonic()
        with self._cond:
            while self._queue and time.monotonic() - start < wait and not (
                    self._failing and time.monotonic() - start > 3.0):
                self._cond.wait(0.2)
            self._closing = True
            pending = [what for what, _ in self._queue]
            self._cond.notify_all()
        where = f"MLflow {self.config.uri}, experiment '{self.config.experiment}'"
        if not pending:
            return (f"sweep: logged to {where}: parent run {self.state.parent}, "
                    f"{len(self.state.children)} candidate run(s)")
        shown = ", ".join(pending[:4]) + (", ..." if len(pending) > 4 else "")
        return (f"sweep: {len(pending)} update(s) could not be logged to {where} "
                f"({self._error or 'no answer'}): {shown}. The results are saved; rerun the "
                "same command once the server is up to log them (the fits come from the "
                "journal).")

    def best(self) -> dict[str, Any]:
        """The best candidate of the fits seen (``best.json``'s keys), for searches run
        through :func:`keras_sweep.cluster` (no ``cv_results_`` here)."""
        import numpy as np

        means = {c: float(np.mean([f.test_score for f in folds.values()]))
                 for c, folds in self._folds.items()
                 if folds and all(f.test_score is not None for f in folds.values())}
        means = {c: m for c, m in means.items() if np.isfinite(m)}
        if not means:
            return {}
        best = max(means, key=lambda c: (means[c], -c))
        return {"best_params": next(iter(self._folds[best].values())).params or {},
                "best_score": means[best], "best_index": best}

    # -- the thread ------------------------------------------------------------------

    def _put(self, what: str, op: Callable[[], None]) -> None:
        with self._cond:
            if not self._closing:
                self._queue.append((what, op))
                self._cond.notify_all()

    def _work(self) -> None:
        pause = 0.5
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                what, op = self._queue[0]
            try:
                op()
            except Exception as exc:  # the server is down or refused: retry later
                self._error = str(exc).splitlines()[0][:200]
                self._failing = True
                logger.debug("sweep: MLflow: %s not logged yet: %s", what, exc)
                with self._cond:
                    self._cond.wait(pause)
                pause = min(10.0, pause * 2)
                continue
            pause, self._failing = 0.5, False
            with self._cond:
                if self._queue and self._queue[0][1] is op:
                    self._queue.popleft()
                self.done += 1
                self._cond.notify_all()

    # -- MLflow calls (in the thread) ---------------------------------------------------

    def _load_state(self) -> _State:
        if self.folder is None:
            return _State(self.config.uri)
        path = self.folder / self.state_name
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return _State(self.config.uri)
        if raw.get("uri") != self.config.uri or not raw.get("token"):
            return _State(self.config.uri)  # another server: start its own runs
        return _State(raw["uri"], raw["token"], raw.get("experiment_id"), raw.get("parent"),
                      dict(raw.get("children") or {}), resumed=True)

    def _save_state(self) -> None:
        from . import write_text

        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.state.__dict__.items() if k != "resumed"}
        write_text(json.dumps(state, indent=1), self.folder / self.state_name)

    def _ensure_parent(self) -> None:
        if self.state.experiment_id is None:
            experiment = self.client.get_experiment_by_name(self.config.experiment)
            self.state.experiment_id = (experiment.experiment_id if experiment is not None
                                        else self.client.create_experiment(
                                            self.config.experiment))
            self._save_state()  # the token first: runs made from now on carry it
        if self.state.parent is None:
            self.state.parent = self._made_before("")
        if self.state.parent is None:
            tags = {"sweep.name": self.name, "sweep.token": self.state.token}
            if self.folder is not None:
                tags["sweep.output"] = str(self.folder.resolve())
            run = self.client.create_run(self.state.experiment_id, run_name=self.name,
                                         tags=tags)
            self.state.parent = run.info.run_id
        else:
            self.client.set_terminated(self.state.parent, "RUNNING")
        self._save_state()

    def _made_before(self, candidate: str) -> str | None:
        """A run of this sweep (parent: ``candidate`` empty) made by an earlier try whose
        id was not saved (it crashed just after); None: there is none."""
        if not self.state.resumed:
            return None
        query = (f"tags.`sweep.token` = '{self.state.token}' and "
                 + (f"tags.`sweep.candidate` = '{candidate}'" if candidate
                    else "tags.`sweep.name` = '{}'".format(self.name.replace("'", ""))))
        runs = self.client.search_runs([self.state.experiment_id], query,
                                       order_by=["attributes.start_time ASC"])
        runs = [r for r in runs if bool(candidate) == ("mlflow.parentRunId" in r.data.tags)]
        return runs[0].info.run_id if runs else None

    def _child(self, record: FitRecord) -> str:
        key = str(self._rows.get(id(record), record.candidate))
        params = record.params or {}
        run_id = self.state.children.get(key) or self._made_before(key)
        if run_id is None:
            label = ", ".join(f"{k.split('__')[-1]}={v}" for k, v in params.items())
            run = self.client.create_run(
                self.state.experiment_id, run_name=f"candidate {key}: {label}"[:250],
                tags={"mlflow.parentRunId": self.state.parent, "sweep.candidate": key,
                      "sweep.token": self.state.token})
            run_id = run.info.run_id
            self.state.children[key] = run_id
            self._save_state()  # before anything else: a retry must not make a second run
            self._logged[run_id] = set()
        elif key not in self.state.children:  # found by its token: made by a crashed try
            self.state.children[key] = run_id
            self._save_state()
        if run_id not in self._logged:  # a resumed sweep: what the run has already
            self._logged[run_id] = set(self.client.get_run(run_id).data.metrics)
        if run_id not in self._with_params:  # the same values again are allowed
            self.client.log_batch(run_id, params=[self._param(k, v)
                                                  for k, v in params.items()])
            self._with_params.add(run_id)
        return run_id

    @staticmethod
    def _param(name: str, value: Any) -> Any:
        from mlflow.entities import Param

        return Param(name, str(jsonable(value))[:6000])

    def _log_fit(self, record: FitRecord) -> None:
        from mlflow.entities import Metric

        run_id = self._child(record)
        k = record.split
        if f"split{k}_test_score" in self._logged[run_id]:
            return  # logged by the run this sweep resumes
        stamp = int((record.ended or time.time()) * 1000)
        metrics = []
        if record.test_score is not None:
            metrics.append(Metric(f"split{k}_test_score", float(record.test_score), stamp, 0))
        if record.seconds is not None:
            metrics.append(Metric(f"split{k}_fit_time", float(record.seconds), stamp, 0))
        for name, values in (record.history or {}).items():
            metrics += [Metric(f"split{k}_{name}", float(v), stamp, epoch + 1)
                        for epoch, v in enumerate(values)]
        tags = []
        if record.fit_error:
            from mlflow.entities import RunTag

            tags.append(RunTag(f"sweep.split{k}_error", str(record.fit_error)[:5000]))
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000],
                                  tags=tags if start == 0 else [])
        self._logged[run_id].add(f"split{k}_test_score")

    def _log_candidate(self, candidate: int, folds: list[FitRecord]) -> None:
        import numpy as np
        from mlflow.entities import Metric

        run_id = self._child(folds[0])
        if "mean_test_score" in self._logged[run_id]:
            return
        stamp = int(time.time() * 1000)
        metrics = []
        if all(f.test_score is not None for f in folds):
            # as scikit-learn computes them, so they equal cv_results_ to the bit
            scores = np.array([f.test_score for f in folds], dtype=float)
            mean = np.average(scores)
            std = np.sqrt(np.average((scores - mean) ** 2))
            metrics += [Metric("mean_test_score", float(mean), stamp, 0),
                        Metric("std_test_score", float(std), stamp, 0)]
        seconds = [f.seconds for f in folds if f.seconds is not None]
        if seconds:
            metrics.append(Metric("mean_fit_time", float(np.mean(seconds)), stamp, 0))
        histories = [f.history for f in folds if f.history]
        curves = mean_history(histories) if len(histories) == len(folds) else {}
        for name, mean in curves.items():
            metrics += [Metric(name, v, stamp, epoch + 1) for epoch, v in enumerate(mean)]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        self._logged[run_id].add("mean_test_score")
        self.client.set_terminated(run_id)

    def _log_parent(self, best: dict[str, Any], cv_results: dict[str, Any] | None,
                    artifacts: tuple[Path, ...]) -> None:
        from mlflow.entities import Metric

        parent = self.state.parent
        assert parent is not None
        # one timestamp per sweep: a resumed sweep's identical values are not logged twice
        stamp = self.client.get_run(parent).info.start_time
        metrics = []
        if best.get("best_score") is not None:
            metrics.append(Metric("best_score", float(best["best_score"]), stamp, 0))
        if cv_results is not None:
            metric = best.get("metric") if "rank_test_score" not in cv_results else "score"
            for index, rank in enumerate(cv_results.get(f"rank_test_{metric}", [])):
                child = self.state.children.get(str(index))
                if child is not None:
                    self.client.log_batch(child, metrics=[
                        Metric("rank_test_score", float(rank), stamp, 0)])
        existing = self.client.get_run(parent).data.params
        params = [self._param(f"best__{k}", v) for k, v in
                  (best.get("best_params") or {}).items()]
        params = [p for p in params if p.key not in existing]  # resumed: logged already
        self.client.log_batch(parent, metrics=metrics, params=params)
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(parent, str(path))
        self.client.set_terminated(parent)


class SearchTracking:
    """MLflow tracking of every search in a :func:`keras_sweep.cluster` block: one parent
    run per search (``grid.fit``), a child per candidate."""

    def __init__(self, config: TrackingConfig, folder: Path | None) -> None:
        self.config = config
        self.folder = folder
        self.searches = 0
        self.tracker: MlflowTracker | None = None
        self.lines: list[str] = []

    def start(self) -> None:
        """A search begins: finish the previous one's runs, open its own."""
        self.finish()
        self.searches += 1
        self.tracker = MlflowTracker(self.config, self.folder, f"search {self.searches}",
                                     state_name=f"mlflow-search-{self.searches}.json")

    def on_fit(self, record: FitRecord) -> None:
        if self.tracker is not None:
            self.tracker.on_fit(record)

    def finish(self) -> list[str]:
        """Finish the current search's runs; returns what each search logged."""
        if self.tracker is not None:
            tracker, self.tracker = self.tracker, None
            best = tracker.best()
            self.lines.append(tracker.finish(best or None))
            logger.info(self.lines[-1])
        return self.lines
