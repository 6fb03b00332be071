"""Random and successive-halving searches: planned as scikit-learn runs them, and on the
cluster equal to their ``n_jobs=1`` run, resumable from the journal."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from conftest import scores
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
)

import keras_sweep as sweep
from keras_sweep.search.build import Rung, SearchOptions, plan
from keras_sweep.search.hyperband import HyperbandSearchCV, brackets
from keras_sweep.spec.distributions import parse


@pytest.mark.parametrize("options, grid", [
    (SearchOptions("halving"), {"C": [0.01, 0.1, 1, 10, 100, 1000, 0.5]}),
    (SearchOptions("halving", factor=2), {"C": list(np.logspace(-3, 3, 11))}),
    (SearchOptions("halving", min_resources="smallest"), {"C": [0.01, 0.1, 1, 10, 100]}),
    (SearchOptions("halving", min_resources=60, aggressive_elimination=True),
     {"C": list(np.logspace(-3, 3, 40))}),
    (SearchOptions("halving", resource="max_iter", max_resources=90),
     {"C": [0.01, 0.1, 1, 10, 100, 1000]}),
    (SearchOptions("halving", n_candidates=20), {"C": "loguniform(1e-3, 1e3)"}),
    (SearchOptions("halving"), {"C": "loguniform(1e-3, 1e3)"}),  # as many as rows allow
    (SearchOptions("halving", resource="max_iter", max_resources=50, factor=2.5),
     {"C": "loguniform(1e-3, 1e3)"}),
])
def test_the_plan_is_what_scikit_learn_runs(cancer, options, grid):
    X, y = cancer
    grids = [{k: parse(k, v) if isinstance(v, str) else v for k, v in grid.items()}]
    space = {k: v.frozen() if hasattr(v, "frozen") else v for k, v in grids[0].items()}
    common = {"factor": options.factor, "resource": options.resource,
              "max_resources": options.max_resources, "cv": 3, "random_state": 0,
              "aggressive_elimination": options.aggressive_elimination,
              "min_resources": options.min_resources_for(grids)}
    estimator = LogisticRegression(max_iter=100)
    if options.sampling(grids):
        search = HalvingRandomSearchCV(estimator, space, n_candidates=options.n_candidates
                                       or "exhaust", **common)
    else:
        search = HalvingGridSearchCV(estimator, space, **common)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the small rungs
        search.fit(X, y)
    planned = plan(options, grids, n_samples=len(y), n_splits=3, n_classes=2)
    assert [r.candidates for r in planned] == search.n_candidates_
    assert [r.resources for r in planned] == search.n_resources_


def test_grid_and_random_plans_are_one_round():
    grids = [{"a": [1, 2, 3]}, {"b": [1, 2]}]
    assert plan(SearchOptions(), grids, n_samples=100, n_splits=3) == [Rung(5)]
    assert plan(SearchOptions("random", n_iter=3), grids, n_samples=100, n_splits=3) == [
        Rung(3)]
    assert plan(SearchOptions("random", n_iter=30), grids, n_samples=100, n_splits=3) == [
        Rung(5)]  # a grid of lists is drawn without replacement: at most its size


def test_distributions_draw_what_their_text_says():
    rng = np.random.RandomState(0)
    drawn = parse("x", "randint(4, 8)").frozen().rvs(size=400, random_state=rng)
    assert set(drawn) == {4, 5, 6, 7}
    logs = np.log10(parse("x", "loguniform(1e-4, 1e-1)").frozen().rvs(size=400,
                                                                      random_state=rng))
    assert -4 <= logs.min() < -3.5 and -1.5 < logs.max() <= -1
    flat = parse("x", "uniform(0.1, 0.3)").frozen().rvs(size=400, random_state=rng)
    assert 0.1 <= flat.min() < 0.12 and 0.28 < flat.max() <= 0.3


def test_hyperband_brackets_are_those_of_li_et_al():
    """Li et al. (JMLR 2018), Table 1's example: R = 81, eta = 3."""
    found = brackets(81, 1, 3)
    assert [b.index for b in found] == [4, 3, 2, 1, 0]
    assert [b.candidates for b in found] == [81, 34, 15, 8, 5]
    assert [b.min_resources for b in found] == [1, 3, 9, 27, 81]


def test_the_hyperband_plan_is_what_it_runs_and_its_best_ends_a_bracket(cancer):
    """Each bracket is scikit-learn's halving: the plan (``sweep validate``) equals the
    rounds run; ``cv_results_`` lists the brackets one after the other, ranked over all
    rows; the best is the top mean among the brackets' last rungs."""
    import warnings

    X, y = cancer
    options = SearchOptions("hyperband", resource="max_iter", max_resources=40, factor=2,
                            min_resources=5)
    grids = [{"C": parse("C", "loguniform(1e-3, 1e3)")}]
    search = HyperbandSearchCV(LogisticRegression(), {"C": grids[0]["C"].frozen()},
                               max_resources=40, resource="max_iter", min_resources=5,
                               factor=2, cv=3, random_state=0, refit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the small rungs
        search.fit(X, y)
    planned = plan(options, grids, n_samples=len(y), n_splits=3, n_classes=2)
    assert [r.candidates for r in planned] == search.n_candidates_
    assert [r.resources for r in planned] == search.n_resources_
    assert [r.bracket for r in planned] == [3] * 4 + [2] * 3 + [1] * 2 + [0]
    results = search.cv_results_
    assert list(results["bracket"]) == [r.bracket for r in planned
                                        for _ in range(r.candidates)]
    means = np.asarray(results["mean_test_score"])
    assert results["rank_test_score"][np.argmax(means)] == 1
    last = [i for i in range(len(means)) if results["iter"][i] == max(
        results["iter"][j] for j in range(len(means))
        if results["bracket"][j] == results["bracket"][i])]
    assert search.best_index_ == max(last, key=lambda i: (means[i], -i))
    assert search.best_params_["max_iter"] == results["n_resources"][search.best_index_]
    assert search.best_estimator_.max_iter == search.best_params_["max_iter"]
    # brackets draw their own candidates
    drawn = [{p["C"] for p, b in zip(results["params"], results["bracket"], strict=True)
              if b == k} for k in (3, 2)]
    assert not drawn[0] & drawn[1]


def test_the_report_maps_fits_by_round_when_round_sizes_repeat():
    """Hyperband's brackets repeat rung sizes (3 candidates in two brackets): fits carry
    their search round, which puts each on its own cv_results_ row."""
    from keras_sweep.report.data import from_records
    from keras_sweep.store.records import FitRecord

    rounds = ((1, 4), (2, 2), (3, 3), (4, 2), (5, 3))  # (round, candidates)
    fits = [FitRecord(candidate=c, n_candidates=n, split=s, n_splits=2, round=r,
                      test_score=0.5, params={"model__neurons": 10 * r + c})
            for r, n in rounds for c in range(n) for s in range(2)]
    data = from_records(fits, title="hyperband")
    assert [c.params["model__neurons"] for c in data.candidates] == [
        10 * r + c for r, n in rounds for c in range(n)]
    assert [data.index_of(f) for f in fits if f.split == 0] == list(range(14))


def _cv(n: int = 2) -> StratifiedKFold:
    return StratifiedKFold(n, shuffle=True, random_state=0)


def _searches(estimator):
    """The four kinds on a tiny Keras model, each with its own randomness seeded."""
    return {
        "random": lambda: RandomizedSearchCV(
            estimator, {"model__neurons": [1, 2, 3, 4, 5], "batch_size": [16, 32]}, n_iter=4,
            cv=_cv(), random_state=3, n_jobs=-1),
        "halving rows": lambda: HalvingGridSearchCV(
            estimator, {"model__neurons": [1, 2, 3, 4]}, factor=2, cv=_cv(),
            random_state=3, n_jobs=-1),
        "halving epochs": lambda: HalvingRandomSearchCV(
            estimator, {"model__neurons": [1, 2, 3, 4, 5, 6]}, resource="epochs",
            max_resources=4, min_resources=1, factor=2, n_candidates=6, cv=_cv(),
            random_state=3, n_jobs=-1),
        "hyperband epochs": lambda: HyperbandSearchCV(
            estimator, {"model__neurons": [1, 2, 3, 4, 5, 6]}, max_resources=4,
            min_resources=1, factor=2, cv=_cv(), random_state=3, refit=False, n_jobs=-1),
    }


@pytest.mark.slow
def test_each_kind_on_the_cluster_equals_its_serial_run_and_resumes(cancer, tiny_classifier,
                                                                    tmp_path):
    """Per fold equal to ``n_jobs=1`` (the estimator's ``random_state`` seeds both); a second
    run on the same journal runs no fit again and gives the same numbers. Hyperband's
    survivors continue from their shorter fits (and still equal the serial run)."""
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=32, random_state=5)
    makers = _searches(tiny_classifier)
    serial = {}
    for kind, make in makers.items():
        search = make().set_params(n_jobs=1).fit(X, y)
        serial[kind] = (scores(search), search.best_params_)
    journal = tmp_path / "journal.sqlite"
    for run in range(2):
        with sweep.cluster("local", workers=2, seed=11, journal=journal) as session:
            for kind, make in makers.items():
                before = len(session.fits)
                search = make().fit(X, y)
                fits = [f for f in session.fits[before:] if not f.refit]  # not journaled
                np.testing.assert_array_equal(scores(search), serial[kind][0], err_msg=kind)
                assert search.best_params_ == serial[kind][1], kind
                assert fits and all(f.resumed for f in fits) == (run == 1), kind
                if run == 0 and kind.startswith("hyperband"):  # a candidate two brackets
                    # drew is fitted once per epochs; the second comes from the journal
                    seen = [(repr(sorted(f.params.items())), f.split) for f in fits]
                    assert all(seen[:i].count(seen[i]) == int(f.resumed)
                               for i, f in enumerate(fits)), kind
                if kind.startswith("halving"):
                    assert len({f.n_candidates for f in fits}) == len(search.n_candidates_)
                if kind.startswith("hyperband"):
                    assert len({f.round for f in fits}) == len(search.n_candidates_) == 6
                    assert run == 1 or any(f.continued_from for f in fits), kind


@pytest.mark.slow
def test_multi_metric_refit_by_name_train_scores_and_a_list_of_grids(cancer, tiny_classifier):
    """scikit-learn's multi-metric search (``refit`` naming a metric, train scores, a
    list of grids) on the cluster: every per-fold test and train score of every metric
    equal to ``n_jobs=1``, the same best candidate and refitted model."""
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=32, random_state=5)

    def make() -> GridSearchCV:
        return GridSearchCV(
            tiny_classifier, [{"model__neurons": [1, 2]}, {"model__neurons": [3],
                                                           "batch_size": [16, 64]}],
            scoring={"acc": "accuracy", "f1": "f1"}, refit="f1",
            return_train_score=True, cv=_cv(3), n_jobs=-1)

    serial = make().set_params(n_jobs=1).fit(X, y)
    with sweep.cluster("local", workers=2, seed=11) as session:
        swept = make().fit(X, y)
        fits = [f for f in session.fits if not f.refit]
    keys = sorted(k for k in serial.cv_results_ if k.startswith("split"))
    assert len(keys) == 3 * 2 * 2  # folds x (test, train) x metrics
    for key in keys:
        np.testing.assert_array_equal(swept.cv_results_[key], serial.cv_results_[key],
                                      err_msg=key)
    assert len(fits) == 4 * 3 and len(np.unique(swept.cv_results_["split0_test_f1"])) > 1
    assert swept.best_params_ == serial.best_params_
    assert swept.best_score_ == serial.best_score_
    np.testing.assert_array_equal(swept.predict_proba(X), serial.predict_proba(X))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["halving", "hyperband"])
def test_a_halving_search_survives_a_killed_worker(cancer, tiny_classifier, kind):
    """A worker SIGKILLed mid-fit in a halving search over epochs (and in Hyperband's
    brackets of them): the fit it ran is retried, no other fit loses a run, and every
    rung's scores equal a fault-free run."""
    X, y = cancer
    tiny_classifier.set_params(batch_size=8, random_state=5)

    def make() -> HalvingRandomSearchCV | HyperbandSearchCV:
        if kind == "hyperband":
            return HyperbandSearchCV(
                tiny_classifier, {"model__neurons": [1, 2, 3, 4, 5, 6]}, max_resources=8,
                min_resources=2, factor=2, cv=_cv(), random_state=3, refit=False, n_jobs=-1)
        return HalvingRandomSearchCV(
            tiny_classifier, {"model__neurons": [1, 2, 3, 4, 5, 6]}, resource="epochs",
            max_resources=8, min_resources=2, factor=2, n_candidates=6, cv=_cv(),
            random_state=3, n_jobs=-1)

    with sweep.cluster("local", workers=2, seed=11) as session:
        clean = scores(make().fit(X, y))
        first = len(session.fits)
        killed: list = []

        def kill_a_busy_worker() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = [a for a, keys in session.client.processing().items()
                        if any("fit_and_score" in str(k) for k in keys)]
                if busy and len(session.fits) > first + 6:  # in the second rung
                    pid = session.worker_reports()[busy[0]]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed.extend([pid, busy[0]])
                time.sleep(0.05)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        faulty = scores(make().fit(X, y))
        killer.join()
        fits = session.fits[first:]
    assert killed, "no worker was killed"
    assert not [f for f in fits if f.fit_error]
    # the fit the worker ran (if its fit had not just ended) lost a run; no other did
    retried = [f for f in fits if f.lost_runs]
    assert len(retried) <= 1 and all(f.lost_runs[0]["worker"] == killed[1] for f in retried), [
        f.lost_runs for f in retried]
    np.testing.assert_array_equal(faulty, clean)


@pytest.mark.slow
def test_a_halving_spec_runs_end_to_end_with_its_rungs(tmp_path, pima_path):
    """`sweep validate` prints the rungs; `sweep run` runs them and writes rungs.csv and a
    report with a rungs section; the refit trains the best with the last rung's epochs."""
    import json
    import textwrap

    import pandas as pd
    from test_cli import run_cli

    spec = tmp_path / "halving.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: halving
        data: {{csv: {pima_path}, target: -1}}
        fit: {{epochs: 4, batch_size: 64}}
        search: {{kind: halving, resource: epochs, factor: 2, min_resources: 1}}
        param_grid: {{model__neurons: [1, 2, 3, 4]}}
        cv: 2
        cluster: {{workers: 2}}
        output: {tmp_path / 'out'}
        """))
    valid = run_cli("validate", str(spec))
    assert valid.returncode == 0, valid.stderr[-2000:]
    assert "successive halving in 3 rung(s)" in valid.stdout
    assert "(4 x 1 epochs, 2 x 2 epochs, 1 x 4 epochs), 2 folds each = 14 fits" in valid.stdout
    proc = run_cli("run", str(spec), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    rungs = pd.read_csv(out / "rungs.csv")
    assert list(rungs["candidates"]) == [4, 2, 1] and list(rungs["resources"]) == [1, 2, 4]
    assert len(pd.read_csv(out / "fits.csv")) == 14
    best = json.loads((out / "best.json").read_text())
    assert best["best_params"]["epochs"] == 4  # the best of the last rung
    page = (out / "report.html").read_text()
    assert 'id="rungs"' in page and 'id="rungs-chart"' in page


@pytest.mark.slow
def test_a_hyperband_spec_runs_its_brackets_end_to_end_and_after_a_killed_driver(tmp_path,
                                                                                 pima_path):
    """`sweep validate` prints each bracket's rungs; `sweep run` runs them (survivors
    continue), writes rungs.csv per bracket and rung, a report with the brackets, and
    the best is one of a bracket's last rung. A run whose driver is SIGKILLed mid-search
    and then rerun trains only the fits its journal lacks, and every per-fold score equals
    the uninterrupted run's, bitwise."""
    import json
    import subprocess
    import textwrap

    import pandas as pd
    from conftest import sweep_env
    from test_cli import run_cli
    from test_fault_tolerance import journal_count, sweep_cmd

    def spec(name: str) -> Any:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: hyperband
            data: {{csv: {pima_path}, target: -1}}
            fit: {{epochs: 4, batch_size: 64}}
            search: {{kind: hyperband, aggressiveness: 2}}
            param_grid: {{model__neurons: [1, 2, 3, 4]}}
            cv: 2
            seed: 3
            cluster: {{workers: 2}}
            output: {tmp_path / name}
            """))
        return path

    valid = run_cli("validate", str(spec("clean")))
    assert valid.returncode == 0, valid.stderr[-2000:]
    assert ("Hyperband in 3 bracket(s) of successive halving, candidates x epochs (bracket 2: "
            "4 x 1, 2 x 2, 1 x 4; bracket 1: 3 x 2, 2 x 4; bracket 0: 3 x 4), 2 folds each "
            "= 30 fits at most") in valid.stdout
    proc = run_cli("run", str(spec("clean")), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "clean"
    rungs = pd.read_csv(out / "rungs.csv")
    assert list(rungs["bracket"]) == [2, 2, 2, 1, 1, 0]
    assert list(rungs["candidates"]) == [4, 2, 1, 3, 2, 3]
    assert list(rungs["resources"]) == [1, 2, 4, 2, 4, 4]
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 30 and (fits["continued_from"].fillna(0) > 0).sum() >= 4
    cv = pd.read_csv(out / "cv_results.csv")
    best = json.loads((out / "best.json").read_text())
    assert best["best_params"]["epochs"] == 4
    assert cv["bracket"][best["best_index"]] in (2, 1, 0)
    page = (out / "report.html").read_text()
    assert "Brackets and rungs of the Hyperband search" in page and 'id="rungs-chart"' in page

    killed = subprocess.Popen(sweep_cmd(spec("killed")), env=sweep_env(),
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    journal = tmp_path / "killed" / "journal.sqlite"
    deadline = time.monotonic() + 300
    while journal_count(journal) < 8 and time.monotonic() < deadline:  # bracket 2's rung 1
        assert killed.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    done = journal_count(journal)
    trained = int((~fits["resumed"].fillna(False).astype(bool)).sum())  # the rest: journal
    assert 8 <= done < trained, done
    rerun = run_cli("run", str(spec("killed")), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = pd.read_csv(tmp_path / "killed" / "fits.csv")
    assert len(again) == 30
    assert int((~again["resumed"].fillna(False).astype(bool)).sum()) == trained - done
    a, b = pd.read_csv(tmp_path / "killed" / "cv_results.csv"), cv
    columns = [c for c in b if c.startswith("split") and c.endswith("_test_score")]
    assert columns
    np.testing.assert_array_equal(a[columns].to_numpy(), b[columns].to_numpy())


def test_the_report_puts_each_rungs_fits_on_its_own_rows():
    """A halving search numbers candidates afresh per rung; the report (and MLflow) map
    a fit to its cv_results_ row: rung after rung."""
    from keras_sweep.report.data import from_records
    from keras_sweep.store.records import FitRecord

    fits = [FitRecord(candidate=c, n_candidates=n, split=s, n_splits=2, test_score=0.5 + c / 10,
                      params={"model__neurons": c + 1, "epochs": e})
            for n, e in ((4, 1), (2, 2), (1, 4)) for c in range(n) for s in range(2)]
    data = from_records(fits, title="halving")
    assert [c.index for c in data.candidates] == list(range(7))
    assert [c.params["epochs"] for c in data.candidates] == [1] * 4 + [2] * 2 + [4]
    assert [data.index_of(f) for f in fits if f.split == 0] == list(range(7))


def test_validation_leaves_the_callers_grid_as_given(pima_path):
    from keras_sweep.spec import reading as specmod

    grid = {"optimizer__learning_rate": "loguniform(1e-4, 1e-1)", "model__neurons": [2, 4]}
    raw = {"data": {"csv": str(pima_path)}, "param_grid": grid,
           "search": {"kind": "random", "n_iter": 3}}
    first = specmod.validate(raw)
    second = specmod.validate(raw)  # e.g. the same overrides for a second search
    assert grid["optimizer__learning_rate"] == "loguniform(1e-4, 1e-1)"
    assert str(first.param_grid[0]["optimizer__learning_rate"]) == str(
        second.param_grid[0]["optimizer__learning_rate"])


def test_a_spec_with_several_scorers_ranks_by_refit_and_saves_train_scores(tmp_path,
                                                                            pima_path):
    """scoring: [accuracy, f1], refit: f1, return_train_score: every scorer's columns in
    cv_results.csv; the best, the summary and the report follow f1."""
    import json
    import textwrap

    import pandas as pd
    from test_cli import run_cli

    spec = tmp_path / "metrics.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: metrics
        data: {{csv: {pima_path}, target: -1}}
        fit: {{epochs: 3, batch_size: 64}}
        param_grid: {{model__neurons: [1, 4, 8]}}
        scoring: [accuracy, f1]
        refit: f1
        return_train_score: true
        cv: 2
        cluster: {{workers: 2}}
        output: {tmp_path / 'out'}
        """))
    proc = run_cli("run", str(spec), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    table = pd.read_csv(out / "cv_results.csv")
    for column in ("mean_test_accuracy", "mean_test_f1", "mean_train_accuracy",
                   "mean_train_f1", "rank_test_f1", "split1_train_f1"):
        assert column in table.columns, column
    best = json.loads((out / "best.json").read_text())
    top = int(table["rank_test_f1"].to_numpy().argmin())
    assert best["metric"] == "f1" and best["best_index"] == top
    assert best["best_score"] == pytest.approx(table["mean_test_f1"][top])
    assert f"Best: {table['mean_test_f1'][top]:f}" in proc.stdout
    assert "mean f1" in (out / "report.html").read_text()
    assert "refit of the best candidate" in proc.stdout



def test_the_progress_bar_names_each_round_even_one_taken_from_the_journal(capsys):
    """One bar per round, named by the plan ("bracket 2, rung 1/2"); a round whose fits
    all come from the journal (Hyperband: a candidate two brackets drew) gets its own."""
    from keras_sweep.cli.runner import round_labels
    from keras_sweep.driver.progress import FitMonitor
    from keras_sweep.store.records import FitRecord

    monitor = FitMonitor(show=True)
    monitor.expect_rounds(round_labels([Rung(2, 1, 2), Rung(1, 2, 2), Rung(1, 2, 0)]))
    for r, n in ((1, 2), (2, 1)):
        for c in range(n):
            record = FitRecord(candidate=c, n_candidates=n, split=0, n_splits=1, round=r)
            monitor.on_submit(record)
            monitor.on_fit(record, None)
    monitor.on_fit(FitRecord(candidate=0, n_candidates=1, split=0, n_splits=1, round=3,
                             resumed=True), None)
    monitor.close()
    err = capsys.readouterr().err
    for label in ("bracket 2, rung 1/2: fits (2 candidates", "bracket 2, rung 2/2: fits (1",
                  "bracket 0, rung 1/1: fits (1"):
        assert label in err, err
    assert len(monitor.records) == 4
