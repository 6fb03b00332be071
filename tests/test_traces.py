"""Shared traces: fits of one kind of model reuse one traced loop, bitwise as if they had not."""

from __future__ import annotations

import pickle
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
from keras_sweep.worker.training import fastpath, traces


def _fit(estimator: Any, X: Any, y: Any, compiled: bool = True, share: bool = True,
         seed: int = 3, rows: slice = slice(None)) -> tuple[dict[str, Any], Any, FitPath]:
    """Fit and score in this process as a worker does (scoring inside the fit's scope)."""
    enable_determinism()
    paths = TrainingPaths(compiled_loop=compiled, share_traces=share)
    with fastpath.enabled(estimator, paths) as path, isolated_fit(seed):
        estimator.fit(X[rows], y[rows])
        predicted = (estimator.predict_proba(X) if hasattr(estimator, "predict_proba")
                     else estimator.predict(X))
    assert "predict" not in vars(estimator.model_)  # the patch is gone after the fit
    return dict(estimator.history_), predicted, path


def _assert_same(a: tuple[dict[str, Any], Any, FitPath],
                 b: tuple[dict[str, Any], Any, FitPath]) -> None:
    assert a[0].keys() == b[0].keys()
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)
    np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture(scope="module")
def pima(pima_path):
    data = np.loadtxt(pima_path, delimiter=",")
    return data[:130, :8].astype("float32"), data[:130, 8].astype("int64")


@pytest.fixture(autouse=True)
def fresh_templates():
    traces.forget()
    yield
    traces.forget()


CASES = {  # the article's grids, in small; "other" changes what shares a trace
    "adam-learning-rate": ({"optimizer": "adam", "optimizer__learning_rate": 0.01},
                           {"optimizer__learning_rate": 0.003}),
    "sgd-momentum": ({"optimizer": "sgd", "optimizer__learning_rate": 0.05,
                      "optimizer__momentum": 0.9}, {"optimizer__learning_rate": 0.1}),
    "adagrad-initializer": ({"optimizer": "adagrad", "model__kernel_initializer": "uniform"},
                            {"model__kernel_initializer": "he_normal"}),
    "rmsprop-tanh-epochs": ({"optimizer": "rmsprop", "model__activation": "tanh"},
                            {"epochs": 2}),
    # dropout rates and max-norm limits are variables of the trace: one trace serves all
    "nadam-dropout-maxnorm": ({"optimizer": "nadam", "model__dropout": 0.2,
                               "model__max_norm": 3.0},
                              {"model__dropout": 0.5, "model__max_norm": 1.5}),
    "adam-dropout-maxnorm-int": ({"optimizer": "adam", "model__dropout": 0.9,
                                  "model__max_norm": 4, "model__activation": "linear"},
                                 {"model__dropout": 0.1, "model__max_norm": 1}),
    "adamax-batch-7": ({"optimizer": "adamax", "batch_size": 7}, {}),  # partial last batch
    "metrics": ({"optimizer": "adam", "metrics": ["accuracy", "AUC"]}, {}),
    # Grappler rewrites hard_sigmoid in graphs: the traced predict must be Keras' graph
    "hard-sigmoid": ({"optimizer": "adam", "model__activation": "hard_sigmoid"},
                              {"epochs": 1}),
    "softplus": ({"optimizer": "adam", "model__activation": "softplus"}, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reused_trace_trains_and_predicts_bitwise_as_keras_fit(pima, case):
    """The first fit makes the kind's trace (on other rows, another seed and maybe another
    learning rate, initializer or epochs), the second reuses it: equal to Keras' fit."""
    X, y = pima
    mine, other = CASES[case]
    params = {"batch_size": 10, "epochs": 3, "model__neurons": 6, **mine}

    def est(**more: Any) -> KerasClassifier:
        return KerasClassifier(model=mlp, loss="binary_crossentropy", verbose=0,
                               **{**params, **more})

    first = _fit(est(**other), X, y, seed=11, rows=slice(0, 97))
    second = _fit(est(), X, y, seed=5, rows=slice(20, 130))
    assert first[2].trace == "new" and second[2].trace == "reused", (first[2], second[2])
    assert second[2].trace_seconds is not None
    template = next(iter(traces._CACHE.templates.values()))
    assert list(template.predicts) == [params["batch_size"]]  # scoring ran the traced predict
    keras_fit = _fit(est(), X, y, compiled=False, seed=5, rows=slice(20, 130))
    assert keras_fit[2].name != "compiled loop"
    _assert_same(second, keras_fit)


def test_multiclass_and_regression_heads_share_bitwise():
    X, y = load_iris(return_X_y=True)
    X = X.astype("float32")
    clf = {"loss": "sparse_categorical_crossentropy", "optimizer": "adam", "verbose": 0,
           "batch_size": 16, "epochs": 3, "model__neurons": 5}
    _fit(KerasClassifier(model=mlp, **clf), X, y, seed=1)
    shared = _fit(KerasClassifier(model=mlp, **clf), X, y, seed=2)
    assert shared[2].trace == "reused"
    _assert_same(shared, _fit(KerasClassifier(model=mlp, **clf), X, y, compiled=False, seed=2))
    Xr, yr = load_diabetes(return_X_y=True)
    Xr = Xr.astype("float32")
    reg = {"loss": "mse", "optimizer": "adam", "verbose": 0, "batch_size": 32, "epochs": 3,
           "model__neurons": 5, "metrics": ["mae"]}
    _fit(KerasRegressor(model=mlp, **reg), Xr, yr, seed=1)
    shared = _fit(KerasRegressor(model=mlp, **reg), Xr, yr, seed=2)
    assert shared[2].trace == "reused"
    _assert_same(shared, _fit(KerasRegressor(model=mlp, **reg), Xr, yr, compiled=False, seed=2))


def test_what_changes_the_graph_makes_a_new_trace(pima):
    X, y = pima
    base = {"loss": "binary_crossentropy", "optimizer": "sgd", "verbose": 0, "batch_size": 10,
            "epochs": 1, "model__neurons": 4}
    seen = []
    for more in ({}, {"optimizer__momentum": 0.5}, {"model__neurons": 5}, {"batch_size": 8},
                 {"model__activation": "tanh"}, {"model__dropout": 0.3},
                 {"model__max_norm": 2.0}, {}, {"optimizer__learning_rate": 0.2},
                 {"model__dropout": 0.6}, {"model__max_norm": 3}):
        seen.append(_fit(KerasClassifier(model=mlp, **{**base, **more}), X, y)[2].trace)
    # a dropout rate or max-norm limit is a variable of the trace: only their presence counts
    assert seen == ["new"] * 7 + ["reused"] * 4


def _custom_loss(y_true: Any, y_pred: Any) -> Any:
    return keras.losses.binary_crossentropy(y_true, y_pred)


class _Peek(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.weights = self.model.get_weights()


@pytest.mark.parametrize("more, why", [
    ({"loss": _custom_loss}, "custom code: _custom_loss"),
    ({"callbacks": [_Peek()]}, "callback _Peek"),
    ({"callbacks": [keras.callbacks.EarlyStopping(monitor="loss", restore_best_weights=True)]},
     "callback EarlyStopping"),
])
def test_custom_code_and_weight_reading_callbacks_trace_their_own(pima, more, why):
    X, y = pima
    params = {"loss": "binary_crossentropy", "optimizer": "adam", "verbose": 0,
              "batch_size": 10, "epochs": 2, "model__neurons": 4, **more}
    for _ in range(2):
        history, predicted, path = _fit(KerasClassifier(model=mlp, **params), X, y)
        assert path.name == "compiled loop" and path.trace.startswith(f"own ({why}"), path
    _assert_same((history, predicted, path),
                 _fit(KerasClassifier(model=mlp, **params), X, y, compiled=False))


def test_switched_off_every_fit_traces_its_own(pima):
    X, y = pima
    params = {"loss": "binary_crossentropy", "optimizer": "adam", "verbose": 0,
              "batch_size": 10, "epochs": 1, "model__neurons": 4}
    for _ in range(2):
        assert _fit(KerasClassifier(model=mlp, **params), X, y, share=False)[2].trace == \
            "own (off)"


def test_templates_are_bounded_and_the_fitted_model_is_its_own(pima):
    X, y = pima
    params = {"loss": "binary_crossentropy", "optimizer": "adam", "verbose": 0,
              "batch_size": 10, "epochs": 1}
    fitted = []
    for neurons in range(1, traces.MAX_TEMPLATES + 3):
        est = KerasClassifier(model=mlp, model__neurons=neurons, **params)
        _fit(est, X, y)
        fitted.append(est)
    assert len(traces._CACHE.templates) == traces.MAX_TEMPLATES
    # a later fit of the first kind reuses nothing of the first model: its weights stay
    before = [w.copy() for w in fitted[-1].model_.get_weights()]
    again = KerasClassifier(model=mlp, model__neurons=traces.MAX_TEMPLATES + 2, **params)
    assert _fit(again, X, y, seed=9)[2].trace == "reused"
    for a, b in zip(before, fitted[-1].model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    restored = pickle.loads(pickle.dumps(fitted[-1]))
    np.testing.assert_array_equal(restored.predict_proba(X), fitted[-1].predict_proba(X))
