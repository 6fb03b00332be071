"""Workers killed while a local cluster starts: the sweep starts anyway and loses nothing.

Faults come from a real SIGKILL of the worker process at a chosen moment
(``tests/start_faults.py``, a Dask worker preload).
"""

from __future__ import annotations

import dask.config
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

import keras_sweep as sweep
from keras_sweep.exceptions import WorkersDiedError

pytestmark = pytest.mark.slow


def _sweep(X, y, estimator, faults=None):
    config = {"distributed.worker.preload": ["start_faults"]}
    if faults is not None:
        config["sweep-test.start-faults"] = faults
    with dask.config.set(config), sweep.cluster("local", workers=2, seed=11) as session:
        grid = GridSearchCV(estimator, {"model__neurons": [1, 3]}, cv=2, n_jobs=-1,
                            refit=False).fit(X, y)
    return grid, session


@pytest.fixture(scope="module")
def undisturbed(cancer):
    from scikeras.wrappers import KerasClassifier
    from tiny_models import tiny

    estimator = KerasClassifier(model=tiny, loss="binary_crossentropy", optimizer="adam",
                                epochs=2, batch_size=64, verbose=0)
    grid, _ = _sweep(*cancer, estimator)
    return estimator, grid


@pytest.mark.parametrize("moment, kills", [("start", 2), ("setup", 1)])
def test_a_worker_killed_while_the_cluster_starts_costs_nothing(cancer, undisturbed, tmp_path,
                                                                  moment, kills, caplog):
    """Killed while starting (Dask fails the whole start: started again) or while sweep
    installs its set-up on it (the registration is tried again; the nanny restarts it):
    the sweep runs every fit, each per-fold score bitwise the undisturbed run's."""
    estimator, reference = undisturbed
    counter = tmp_path / "starts"
    grid, session = _sweep(*cancer, estimator,
                           {"counter": str(counter), "kills": kills, "moment": moment})
    assert len(counter.read_text().splitlines()) > kills  # the kills happened
    for key in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(grid.cv_results_[key], reference.cv_results_[key])
    assert len([f for f in session.fits if not f.refit]) == 4
    if moment == "start":
        assert "killed by signal 9 (SIGKILL" in caplog.text


def test_workers_that_always_die_while_starting_end_in_one_clear_error(cancer, undisturbed,
                                                                      tmp_path):
    estimator, _ = undisturbed
    faults = {"counter": str(tmp_path / "starts"), "kills": 1000, "moment": "start"}
    with pytest.raises(WorkersDiedError) as caught:
        _sweep(*cancer, estimator, faults)
    message = str(caught.value)
    assert "died while starting, 3 times" in message and "SIGKILL" in message
    assert "Fix:" in message and caught.value.exit_code == 1
