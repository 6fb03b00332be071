"""A real 2-worker LocalCluster runs an unchanged GridSearchCV, isolated per worker."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

import keras_sweep as sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():
    with sweep.cluster("local", workers=2, seed=3) as s:
        yield s


def test_keras_grid_runs_every_candidate_on_two_worker_processes(session, cancer,
                                                                 tiny_classifier):
    X, y = cancer
    grid = GridSearchCV(tiny_classifier, {"model__neurons": [1, 2, 3, 4]}, cv=3, n_jobs=-1)
    before = len(session.fits)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    fits = [f for f in session.fits[before:] if not f.refit]
    assert len(fits) == 12
    assert len(session.fits[before:]) == 13  # and the refit, on a worker too
    assert {(f.candidate, f.split) for f in fits} == {(c, s) for c in range(4)
                                                            for s in range(3)}
    assert len({f.pid for f in fits}) >= 2, "fits must run in at least 2 worker processes"
    import os

    assert os.getpid() not in {f.pid for f in fits}
    from keras_sweep.protocol import cpu_kind

    assert {f.cpu for f in fits} == {cpu_kind()}  # fits.csv's cpu column: this machine's
    # each candidate is one kind of model, named alike by every worker process: what
    # the driver sends fits by (sweep.placement), whose books balance afterwards
    kinds: dict[int | None, set[str | None]] = {}
    for f in fits:
        kinds.setdefault(f.candidate, set()).add(f.trace_kind)
    assert all(len(names) == 1 and None not in names for names in kinds.values()), kinds
    named = set().union(*kinds.values())
    assert len(named) == 4
    placement = session.backend.placement
    assert placement is not None and not any(+c for c in placement.running.values())
    assert not session.backend.admission.out and not +session.backend.admission.heading
    assert named <= set(placement.kinds.values())


def test_workers_pin_tensorflow_and_blas_threads(session):
    reports = session.worker_reports()
    assert len(reports) == 2
    for report in reports.values():
        assert report["tensorflow_threads"] == {"intra_op": 1, "inter_op": 2}
        assert report["environment"]["OMP_NUM_THREADS"] == "1"
        assert report["environment"]["TF_NUM_INTRAOP_THREADS"] == "1"


def test_plain_sklearn_grid_equals_serial_run(session, cancer):
    X, y = cancer
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    on_cluster = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=4, n_jobs=-1).fit(X, y)
    import joblib

    with joblib.parallel_config(backend="sequential"):
        serial = GridSearchCV(LogisticRegression(max_iter=500), grid, cv=4, n_jobs=1).fit(X, y)
    for key in ("mean_test_score", "std_test_score", "split0_test_score", "rank_test_score"):
        np.testing.assert_array_equal(on_cluster.cv_results_[key], serial.cv_results_[key])
    assert on_cluster.best_params_ == serial.best_params_


def test_data_is_sent_once_per_search_not_once_per_fit(session, cancer, tiny_classifier):
    X, y = cancer
    sent = []
    for candidates in ([1, 2], [1, 2, 3, 4, 5, 6]):
        start = len(session.backend.data_sent)
        grid = GridSearchCV(tiny_classifier, {"model__neurons": candidates}, cv=2, n_jobs=-1)
        grid.fit(X, y)
        sent.append(session.backend.data_sent[start:])
    # X, y and the fold indices travel once per search: three times the fits, same data
    assert sent[0] and len(sent[0]) == len(sent[1])
    assert sum(sent[0]) == sum(sent[1]) >= X.nbytes


def test_each_worker_fetches_the_shared_data_once_per_search(session, cancer):
    # joblib hands fits out a few at a time; between two of them a worker may have no
    # fit waiting for the data, and Dask's active memory manager (ReduceReplicas)
    # dropped its copy, to fetch it again for the next fit: a second copy of X on
    # the network (seen in CI over SSH). sweep's scheduler keeps every copy.
    from tiny_models import SlowMajority

    X, y = cancer
    before = session.client.run(_data_fetches)
    GridSearchCV(SlowMajority(delay=0.25), {"C": list(range(8))}, cv=3, n_jobs=-1).fit(X, y)
    after = session.client.run(_data_fetches)
    fetched = {worker: {key: count - before.get(worker, {}).get(key, 0)
                        for key, count in counts.items()}
               for worker, counts in after.items()}
    assert any(fetched.values()), "no worker fetched the data from a peer: nothing tested"
    again = {worker: {k: n for k, n in keys.items() if n > 1}
             for worker, keys in fetched.items()}
    assert not any(again.values()), f"shared data fetched more than once: {again}"


def _data_fetches(dask_worker=None) -> dict[str, int]:
    import collections

    return dict(collections.Counter(str(key) for entry in dask_worker.transfer_incoming_log
                                    for key in entry["keys"] if "sweep-data-" in str(key)))


def test_a_search_that_raises_leaves_the_session_usable(session, cancer):
    from sklearn.tree import DecisionTreeClassifier

    X, y = cancer
    bad = GridSearchCV(DecisionTreeClassifier(), {"max_depth": [1, -5, 2, 3, 4, 5]}, cv=3,
                       n_jobs=-1, error_score="raise")
    with pytest.raises(ValueError):
        bad.fit(X, y)
    # the backend cancelled the rest; the next search runs every fit, none held back
    good = GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [1, 2, 3, 4]},
                        cv=3, n_jobs=-1).fit(X, y)
    assert np.isfinite(good.cv_results_["mean_test_score"]).all()
    assert session.backend.stopping is False and not session.backend.admission.waiting


def test_a_searchs_refit_runs_on_a_worker_and_a_drivers_own_fit_in_the_driver(
        session, cancer, tiny_classifier):
    """GridSearchCV(refit=True)'s refit runs on the worker holding its kind's trace,
    seeded from the sweep's refit stream: bitwise a plain Keras fit with that seed. A
    fit the user makes in the driver stays there, on the compiled loop (a shared trace
    in this thread), bitwise Keras' own fit."""
    import os

    from sklearn.base import clone

    from keras_sweep.worker.seeding import seeded
    from keras_sweep.worker.setup import enable_determinism
    from keras_sweep.worker.training import traces

    X, y = cancer
    enable_determinism()
    keras.utils.set_random_seed(1)  # determinism asks for a seed
    traces.forget()
    before = len(session.fits)
    grid = GridSearchCV(tiny_classifier, {"model__neurons": [2, 3]}, cv=2, n_jobs=-1)
    grid.fit(X, y)
    refits = [f for f in session.fits[before:] if f.refit]
    assert len(refits) == 1 and refits[0].pid != os.getpid(), refits
    refit = refits[0]
    assert refit.fit_path == "compiled loop" and refit.trace == "reused", refit
    assert refit.seed is not None and grid.refit_time_ > 0
    assert not traces._CACHE.templates  # nothing trained in the driver
    best = clone(tiny_classifier).set_params(**grid.best_params_)
    with sweep_off(), seeded(refit.seed, in_worker=False):
        plain = clone(best).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(grid.best_estimator_.predict_proba(X), plain)

    keras.utils.set_random_seed(5)
    fast = clone(best).fit(X, y).predict_proba(X)
    assert len(traces._CACHE.templates) == 1  # the user's own fit, in this thread
    with sweep_off():
        keras.utils.set_random_seed(5)
        plain = clone(best).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(fast, plain)
    traces.forget()


def sweep_off():
    """A block where scikeras' fit is Keras' own again (as outside any session)."""
    import contextlib

    from scikeras.wrappers import BaseWrapper

    @contextlib.contextmanager
    def block():
        patched = BaseWrapper.fit
        BaseWrapper.fit = patched.__wrapped_original__
        try:
            yield
        finally:
            BaseWrapper.fit = patched

    return block()


def test_a_sweep_of_a_scikit_learn_estimator_leaves_tensorflow_out_of_the_driver(tmp_path):
    """Only the workers import TensorFlow: a driver that never touches Keras stays small
    (the 10k-fit soak's driver held ~600 MB more while sweep imported scikeras there)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent("""\
        import sys
        from sklearn.datasets import load_iris
        from sklearn.dummy import DummyClassifier
        from sklearn.model_selection import GridSearchCV
        import keras_sweep as sweep

        if __name__ == "__main__":
            X, y = load_iris(return_X_y=True)
            with sweep.cluster("local", workers=1, progress=False) as session:
                GridSearchCV(DummyClassifier(), {"strategy": ["prior", "uniform"]}, cv=2,
                             n_jobs=-1).fit(X, y)
                assert len(session.fits) == 4, session.fits
            print("tensorflow" in sys.modules, "keras" in sys.modules)
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"], proc.stdout
