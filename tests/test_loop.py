"""sweep's compiled training loop: bitwise Keras' fit, or Keras' fit itself when it cannot be."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from scikeras.wrappers import KerasClassifier, KerasRegressor
from sklearn.datasets import load_diabetes, load_iris

from keras_sweep.protocol import FitPath, TrainingPaths
from keras_sweep.spec.models import mlp
from keras_sweep.worker.fit import isolated_fit
from keras_sweep.worker.setup import enable_determinism
from keras_sweep.worker.training import fastpath


def _fit(estimator: Any, X: Any, y: Any, compiled: bool, seed: int = 3, xla: bool = False,
         **fit_params: Any) -> tuple[Any, FitPath]:
    """Fit in this process as a worker does: seeded, fast path on, the loop on or off."""
    enable_determinism()
    paths = TrainingPaths(compiled_loop=compiled, xla=xla)
    with fastpath.enabled(estimator, paths) as path, isolated_fit(seed):
        estimator.fit(X, y, **fit_params)
    return estimator, path


def _same(estimator: Any, X: Any, y: Any, predict: Any, **fit_params: Any) -> str:
    """Fit twice, loop and Keras; assert every loss, metric and prediction equal."""
    runs = {}
    for compiled in (True, False):
        fitted, path = _fit(estimator, X, y, compiled, **fit_params)
        runs[compiled] = (dict(fitted.history_), predict(fitted), path)
    loop, plain = runs[True], runs[False]
    assert loop[2].name == "compiled loop" and plain[2].name != "compiled loop"
    assert loop[0].keys() == plain[0].keys()
    for key in loop[0]:
        np.testing.assert_array_equal(loop[0][key], plain[0][key], err_msg=key)
    np.testing.assert_array_equal(loop[1], plain[1])
    return loop[2].name


@pytest.fixture(scope="module")
def pima(pima_path):
    data = np.loadtxt(pima_path, delimiter=",")
    return data[:130, :8].astype("float32"), data[:130, 8].astype("int64")


CASES = {  # the article's grids, in small: optimizer, activation, initializer, regularisers
    "adam": {},
    "sgd-momentum": {"optimizer": "sgd", "optimizer__learning_rate": 0.05,
                     "optimizer__momentum": 0.9},
    "rmsprop-tanh": {"optimizer": "rmsprop", "model__activation": "tanh"},
    "nadam-he": {"optimizer": "nadam", "model__kernel_initializer": "he_normal"},
    "adagrad-uniform": {"optimizer": "adagrad", "model__kernel_initializer": "uniform"},
    "dropout-maxnorm": {"model__dropout": 0.2, "model__max_norm": 3.0},
    "batch-7": {"batch_size": 7},           # 130 rows: a partial last batch of 4
    "batch-130": {"batch_size": 130},       # one batch per epoch
    "metrics": {"metrics": ["accuracy", "AUC"]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loop_is_bitwise_keras_fit(pima, case):
    X, y = pima
    params = {"batch_size": 10, "epochs": 4, "model__neurons": 6, "optimizer": "adam",
              **CASES[case]}
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", verbose=0, **params)
    _same(est, X, y, lambda e: e.predict_proba(X))


def test_loop_with_sample_weights_is_bitwise_keras_fit(pima):
    X, y = pima
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                          batch_size=16, epochs=3, model__neurons=4)
    weights = np.linspace(0.2, 2.0, len(y))
    _same(est, X, y, lambda e: e.predict_proba(X), sample_weight=weights)


def test_loop_multiclass_and_regression_heads():
    X, y = load_iris(return_X_y=True)
    est = KerasClassifier(model=mlp, loss="sparse_categorical_crossentropy", optimizer="adam",
                          verbose=0, batch_size=16, epochs=3, model__neurons=5)
    _same(est, X.astype("float32"), y, lambda e: e.predict_proba(X.astype("float32")))
    Xr, yr = load_diabetes(return_X_y=True)
    reg = KerasRegressor(model=mlp, loss="mse", optimizer="adam", verbose=0, batch_size=32,
                         epochs=3, model__neurons=5, metrics=["mae"])
    _same(reg, Xr.astype("float32"), yr, lambda e: e.predict(Xr.astype("float32")))


def test_epoch_callbacks_run_and_early_stopping_stops_the_same_epoch(pima):
    X, y = pima
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                          batch_size=10, epochs=6, callbacks=[stop])
    _same(est, X, y, lambda e: e.predict_proba(X))
    assert len(est.history_["loss"]) == 2  # stopped after the second epoch, both ways


@pytest.mark.parametrize("fit_params, reason", [
    ({"validation_split": 0.2}, "validation_split given"),
    ({"class_weight": {0: 1.0, 1: 2.0}}, "class_weight given"),
])
def test_what_the_loop_cannot_serve_goes_to_keras_and_says_why(pima, fit_params, reason):
    X, y = pima
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                          batch_size=10, epochs=2, **{f"fit__{k}": v
                                                      for k, v in fit_params.items()})
    _, path = _fit(est, X, y, compiled=True)
    assert path.name == "fast path" and path.fallback == reason
    assert len(est.history_["loss"]) == 2


def test_the_model_keeps_no_trace_of_the_loop(pima):
    import pickle

    X, y = pima
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                          batch_size=10, epochs=1)
    fitted, path = _fit(est, X, y, compiled=True)
    assert path.name == "compiled loop"
    assert "fit" not in vars(fitted.model_) and "_fit_keras_model" not in vars(fitted)
    assert pickle.loads(pickle.dumps(fitted)).predict(X).shape == (len(X),)


class _Draws:
    """Stands in for the permutation dataset: counts iterators, each gives ``orders[i]``."""

    def __init__(self, orders: list[list[int]]) -> None:
        self.orders, self.made = orders, 0

    def __iter__(self) -> Any:
        import tensorflow as tf

        self.made += 1
        return iter([tf.constant(self.orders[min(self.made, len(self.orders)) - 1])])


def test_epoch_orders_reuse_a_repeating_order_and_redraw_a_changing_one():
    from keras_sweep.worker.training.loop import epoch_orders

    same = _Draws([[1, 0, 2]] * 9)
    orders = epoch_orders(same)
    assert [list(np.asarray(next(orders))) for _ in range(5)] == [[1, 0, 2]] * 5
    assert same.made == 2  # two iterators told the order repeats
    changing = _Draws([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]])
    orders = epoch_orders(changing)
    assert [list(np.asarray(next(orders))) for _ in range(4)] == changing.orders
    assert changing.made == 4


def test_xla_trains_models_without_random_layers_close_to_keras(pima):
    X, y = pima
    params = {"loss": "binary_crossentropy", "optimizer": "adam", "verbose": 0,
              "batch_size": 10, "epochs": 3, "model__neurons": 6}
    xla, path = _fit(KerasClassifier(model=mlp, **params), X, y, compiled=True, xla=True)
    plain, _ = _fit(KerasClassifier(model=mlp, **params), X, y, compiled=True)
    assert path.name == "compiled loop + XLA" and path.fallback is None
    assert path.trace_seconds is not None and path.trace_seconds > 0
    # the same training, compiled differently: equal to float32 rounding, not bitwise
    np.testing.assert_allclose(xla.history_["loss"], plain.history_["loss"], rtol=1e-5)
    np.testing.assert_allclose(xla.predict_proba(X), plain.predict_proba(X), atol=1e-5)


def test_xla_skips_models_with_dropout_and_says_why(pima):
    X, y = pima
    est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0,
                          batch_size=10, epochs=2, model__dropout=0.2)
    fitted, path = _fit(est, X, y, compiled=True, xla=True)
    assert path.name == "compiled loop"
    assert path.fallback is not None and path.fallback.startswith("XLA skipped: random layer")
    assert "dropout" in path.fallback
