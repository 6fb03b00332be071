"""Same spec, same numbers: bitwise-identical per-fold scores across reruns and worker counts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import scores
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import sweep

pytestmark = pytest.mark.slow


def search(estimator):
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return GridSearchCV(estimator, {"model__neurons": [1, 2, 3]}, cv=cv, n_jobs=-1)


def test_scores_are_bitwise_identical_across_reruns_and_worker_counts(cancer, tiny_classifier):
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=32)
    with sweep.cluster("local", workers=2, seed=11) as session:
        first = scores(search(tiny_classifier).fit(X, y))
        second = scores(search(tiny_classifier).fit(X, y))
        assert all(r["determinism"] == "cpu: bitwise" for r in session.worker_reports().values())
    with sweep.cluster("local", workers=1, seed=11):
        single = scores(search(tiny_classifier).fit(X, y))
    assert len(np.unique(first)) > 1, "scores should differ between candidates and folds"
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, single)
    assert first.tobytes() == single.tobytes()


def test_a_different_seed_changes_the_scores(cancer, tiny_classifier):
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=32)
    with sweep.cluster("local", workers=2, seed=1):
        a = scores(search(tiny_classifier).fit(X, y))
    with sweep.cluster("local", workers=2, seed=2):
        b = scores(search(tiny_classifier).fit(X, y))
    assert not np.array_equal(a, b)


def test_an_estimators_own_random_state_gives_the_serial_runs_numbers(cancer,
                                                                      tiny_classifier):
    """With ``random_state`` on the estimator, scikeras seeds every fit with it; sweep
    seeds its fits the same way, so the scores equal a plain ``n_jobs=1`` run's."""
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=32, random_state=5)
    serial_search = search(tiny_classifier).set_params(n_jobs=1)
    serial = scores(serial_search.fit(X, y))
    with sweep.cluster("local", workers=2, seed=11):
        swept_search = search(tiny_classifier)
        swept = scores(swept_search.fit(X, y))
    assert len(np.unique(swept)) > 1
    np.testing.assert_array_equal(serial, swept)
    assert serial_search.best_params_ == swept_search.best_params_
