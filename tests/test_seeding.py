"""Seeding inside a worker: TensorFlow's kernel cache is kept only while that is exact."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from keras_sweep._compat.keras import keras_seed_source
from keras_sweep.worker import seeding


@pytest.fixture
def fresh_watch(monkeypatch):
    """A watch of its own (the module's state is per process and sticky); Keras' seed
    source put back afterwards (a worker's seeding replaces it for good)."""
    monkeypatch.setattr(seeding, "_random_kernels_seen", None)
    monkeypatch.setattr(seeding, "_WATCH", seeding._Watch())
    import keras  # noqa: F401  (the source is Keras': imported first)

    saved = keras_seed_source()
    assert saved is not None
    yield
    keras_seed_source(saved)


def _in_thread(fn):
    """Run ``fn`` in a new thread (a watch is per thread, as a worker's fit thread)."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_stateless_keras_work_keeps_the_cache_and_a_stateful_op_ends_that(fresh_watch):
    import keras
    import tensorflow as tf

    def fits() -> list:
        states = []
        for _ in range(3):
            states.append(seeding.kernels_clean())
            with seeding.seeded(7, in_worker=True):
                model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                                          keras.layers.Dropout(0.5), keras.layers.Dense(1)])
                model.compile("adam", "mse")
                model.fit(np.ones((8, 3)), np.ones(8), epochs=1, verbose=0)  # tf.data inside
        return states

    assert _in_thread(fits) == [False, True, True]  # the first fit of a thread clears

    def stateful() -> list:
        seeding.kernels_clean()
        drawn = []
        for _ in range(2):
            with seeding.seeded(7, in_worker=True):
                drawn.append(tf.random.uniform([3]).numpy())
        return drawn

    # a stateful random op, now seen: every later fit clears, so each draws the same
    a, b = _in_thread(stateful)
    assert seeding._random_kernels_seen == "RandomUniform"
    np.testing.assert_array_equal(a, b)
    assert _in_thread(seeding.kernels_clean) is False  # a new thread starts its watch
    assert _in_thread(lambda: (seeding.kernels_clean(), seeding.kernels_clean())) == (
        False, False)  # and stays unclean: the stateful op was seen in this process


def _count_cache_clears() -> None:
    """In a worker: count TensorFlow's kernel-cache clears from now on."""
    from tensorflow.python import pywrap_tfe

    real = pywrap_tfe.TFE_ContextClearCaches

    def counted(handle):
        counted.calls += 1
        real(handle)

    counted.calls = 0
    pywrap_tfe.TFE_ContextClearCaches = counted


def _cache_clears() -> int:
    from tensorflow.python import pywrap_tfe

    return pywrap_tfe.TFE_ContextClearCaches.calls


@pytest.mark.slow
def test_a_worker_keeps_its_kernels_across_fits_of_one_shared_trace(cancer, tiny_classifier):
    """Fits on one shared trace keep TensorFlow's kernel cache (their trace's
    instantiation) from one fit to the next; fits that trace their own functions
    clear it after each (what they leave would pile up). Same scores either way."""
    import dask
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    import keras_sweep as sweep

    X, y = cancer
    # no random_state: scikeras' own seeding (tf.random.set_seed) would clear the cache
    tiny_classifier.set_params(epochs=1, batch_size=32)
    clears, results = {}, {}
    for share in (True, False):
        with dask.config.set({"sweep.fit.share-traces": share}), \
                sweep.cluster("local", workers=1, seed=3) as session:
            session.client.run(_count_cache_clears)
            search = GridSearchCV(tiny_classifier, {"optimizer__learning_rate": [
                0.001, 0.002, 0.003, 0.004]}, cv=StratifiedKFold(2), refit=False,
                n_jobs=-1).fit(X, y)
            (clears[share],) = session.client.run(_cache_clears).values()
            assert {f.trace for f in session.fits} == (
                {"new", "reused"} if share else {"own (off)"}), share
            results[share] = search.cv_results_["mean_test_score"]
    # shared: only the first fit's seeding (a new thread's watch) and nothing after
    assert clears[True] <= 1 and clears[False] >= 8, clears
    np.testing.assert_array_equal(results[True], results[False])


def test_fits_overlapping_outside_a_worker_leave_keras_its_own_seed_source():
    """Two fits in threads of one process (an in-process cluster): the first to start
    ends first; Keras draws from its own source afterwards, not from either fit's."""
    import random

    import keras  # noqa: F401

    assert keras_seed_source() is random
    first, second = seeding.seeded(1, in_worker=False), seeding.seeded(2, in_worker=False)
    first.__enter__()
    private = keras_seed_source()
    assert private is not random
    second.__enter__()
    first.__exit__(None, None, None)
    assert keras_seed_source() is not random  # the second fit still draws privately
    second.__exit__(None, None, None)
    assert keras_seed_source() is random
