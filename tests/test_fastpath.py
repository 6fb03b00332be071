"""The fast fit path: whole epochs per Keras execution, same numbers as the plain path."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import scores
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import keras_sweep as sweep
from keras_sweep._compat.keras import array_inputs
from keras_sweep.protocol import TrainingPaths
from keras_sweep.worker.fit import isolated_fit
from keras_sweep.worker.setup import enable_determinism
from keras_sweep.worker.training import fastpath


class SeenStepsPerExecution(keras.callbacks.Callback):
    """Epoch-level callback (allowed): records the model's steps_per_execution."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(int(self.model.steps_per_execution))


def test_steps_per_epoch_arithmetic():
    assert fastpath.steps_for(512, 10, 1000) == 52
    assert fastpath.steps_for(512, None, 1000) == 16      # Keras' default batch size 32
    assert fastpath.steps_for(10**7, 1, 1000) == 1000     # capped
    assert fastpath.steps_for(5, 10, 1000) == 1


def test_callbacks_that_need_every_batch_block_the_fast_path():
    from tiny_models import per_batch_callback

    assert fastpath.needs_every_batch([keras.callbacks.EarlyStopping()]) == []
    assert fastpath.needs_every_batch([SeenStepsPerExecution()]) == []
    assert fastpath.needs_every_batch([per_batch_callback()]) == ["CountBatches"]
    assert fastpath.needs_every_batch(None) == []


@pytest.mark.parametrize("rows, weighted", [(400, False), (390, True)])
def test_fast_path_gives_bitwise_the_same_losses_and_predictions(cancer, tiny_classifier,
                                                                 rows, weighted):
    X, y = cancer
    weights = np.random.default_rng(0).random(rows) if weighted else None
    enable_determinism()
    runs = {}
    for fast in (False, True):
        model = tiny_classifier.set_params(epochs=3, batch_size=16)
        probe = SeenStepsPerExecution()
        model.set_params(callbacks=[probe])
        if fast:
            assert fastpath.enable(model, TrainingPaths(compiled_loop=False))
        with isolated_fit(3):
            model.fit(X[:rows], y[:rows], sample_weight=weights)
            runs[fast] = (np.array(model.history_["loss"]), model.predict_proba(X[400:]),
                          probe.seen)
    assert runs[False][2] == [1, 1, 1]
    assert runs[True][2] == [25, 25, 25]              # ceil(rows / 16) batches per call
    np.testing.assert_array_equal(runs[False][0], runs[True][0])
    np.testing.assert_array_equal(runs[False][1], runs[True][1])


def _batches(dataset: Any, epochs: int = 2) -> list[list[np.ndarray]]:
    return [[np.asarray(t) for t in tf.nest.flatten(batch)]
            for _ in range(epochs) for batch in dataset]  # a new iterator per epoch, as Keras


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_epoch_batches_are_keras_batches(shuffle, weighted):
    """The whole-epoch pipeline yields Keras' batches: same rows, order, dtypes, shapes."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(103, 4)), rng.integers(0, 2, 103)  # 10 full batches + 3 rows
    weights = rng.random(103).astype("float32") if weighted else None
    got = {}
    for way in ("keras", "sweep"):
        keras.utils.set_random_seed(7)
        adapter = ArrayDataAdapter(X, y, sample_weight=weights, batch_size=10, shuffle=shuffle)
        dataset = adapter.get_tf_dataset() if way == "keras" else fastpath._epoch_dataset(
            array_inputs(adapter))
        got[way] = _batches(dataset)
    assert len(got["keras"]) == len(got["sweep"]) == 22
    assert [b[0].shape[0] for b in got["sweep"]][10] == 3
    for ours, theirs in zip(got["sweep"], got["keras"], strict=True):
        assert len(ours) == len(theirs) == (3 if weighted else 2)
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    if shuffle:  # the rows really were permuted
        assert not np.array_equal(np.concatenate([b[0] for b in got["sweep"][:11]]), X)


def test_epoch_batches_leave_what_they_do_not_cover_to_keras(monkeypatch):
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    X, y = np.zeros((20, 2)), np.zeros(20)
    assert fastpath._epoch_dataset(array_inputs(ArrayDataAdapter(X, y, batch_size=4,
                                                                  shuffle="batch"))) is None
    assert fastpath._epoch_dataset(array_inputs(ArrayDataAdapter(X, y, batch_size=4))) is not None
    monkeypatch.setattr(fastpath, "EPOCH_COPY_MAX_BYTES", 20 * 3 * 4 - 1)  # X and y, float32
    assert fastpath._epoch_dataset(array_inputs(ArrayDataAdapter(X, y, batch_size=4))) is None
    original = ArrayDataAdapter.get_tf_dataset
    with fastpath.epoch_batches():
        assert ArrayDataAdapter.get_tf_dataset is not original
        with fastpath.epoch_batches():  # nested: still one layer
            pass
        assert ArrayDataAdapter.get_tf_dataset is not original
    assert ArrayDataAdapter.get_tf_dataset is original


@pytest.mark.slow
def test_sweep_scores_equal_with_and_without_fast_path(cancer, tiny_classifier):
    from tiny_models import per_batch_callback

    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=16)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    got = {}
    with sweep.cluster("local", workers=2, seed=5, fast_path=True) as session:
        got["fast"] = scores(GridSearchCV(tiny_classifier, {"model__neurons": [1, 2]}, cv=cv,
                                          n_jobs=-1).fit(X, y))
        # six fits and the refit, on workers too
        assert [f.fast_path for f in session.fits] == [True] * 7
        assert [f.fit_path for f in session.fits] == ["compiled loop"] * 7
        blocked = tiny_classifier.set_params(callbacks=[per_batch_callback()])
        GridSearchCV(blocked, {"model__neurons": [1]}, cv=cv, n_jobs=-1, refit=False).fit(X, y)
        assert [f.fast_path for f in session.fits[7:]] == [False] * 3
        assert [f.fit_path for f in session.fits[7:]] == ["keras"] * 3
    tiny_classifier.set_params(callbacks=None)
    with sweep.cluster("local", workers=2, seed=5, fast_path=False) as session:
        got["plain"] = scores(GridSearchCV(tiny_classifier, {"model__neurons": [1, 2]}, cv=cv,
                                           n_jobs=-1).fit(X, y))
        assert not any(f.fast_path for f in session.fits)
    np.testing.assert_array_equal(got["fast"], got["plain"])


def _backend_of_worker() -> str:
    import keras

    return keras.backend.backend()


@pytest.mark.slow
def test_jax_workers_are_opt_in_and_reproducible(cancer, tiny_classifier):
    """keras_backend="jax": workers build and train on JAX; seeded runs repeat exactly."""
    X, y = cancer
    tiny_classifier.set_params(epochs=2, batch_size=16)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    runs = []
    import os

    environ = dict(os.environ)
    with sweep.cluster("local", workers=2, seed=5, keras_backend="jax") as session:
        # the workers' settings do not leak into this process (a later loky pool or
        # Keras import here would inherit them)
        assert dict(os.environ) == environ
        assert set(session.client.run(_backend_of_worker).values()) == {"jax"}
        for _ in range(2):
            runs.append(scores(GridSearchCV(tiny_classifier, {"model__neurons": [1, 2]},
                                            cv=cv, n_jobs=-1).fit(X, y)))
        assert all(f.fast_path for f in session.fits)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.isfinite(runs[0]).all()


@pytest.mark.slow
def test_jax_workers_even_when_the_main_module_imports_keras(tmp_path):
    """Spawned workers re-import the main script first: KERAS_BACKEND must already be set."""
    import subprocess
    import sys

    from conftest import sweep_env

    script = tmp_path / "main.py"
    script.write_text(
        "import os\n"
        "import keras  # imported before the cluster starts, as most scripts do\n"
        "import keras_sweep as sweep\n\n"
        "def backend():\n"
        "    import keras\n"
        "    return keras.backend.backend()\n\n"
        "if __name__ == '__main__':\n"
        "    before = dict(os.environ)\n"
        "    with sweep.cluster('local', workers=1, keras_backend='jax') as s:\n"
        "        print(sorted(set(s.client.run(backend).values())), dict(os.environ) == before)\n"
        "    print(keras.backend.backend())\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-2:] == ["['jax'] True", "tensorflow"]
