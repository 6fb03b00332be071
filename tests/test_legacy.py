"""The recipe's Keras 2 code, unchanged but for one import line, runs on Keras 3 + scikeras."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

import keras_sweep as sweep
from keras_sweep.spec import legacy


def test_keras2_calls_map_to_keras3():
    import keras

    layer = legacy.Dense(12, input_dim=8, init="uniform", W_constraint=legacy.maxnorm(3))
    assert isinstance(layer.kernel_initializer, keras.initializers.RandomUniform)
    assert isinstance(layer.kernel_constraint, keras.constraints.MaxNorm)
    assert layer.kernel_constraint.max_value == 3
    model = legacy.Sequential()
    model.add(layer)
    model.add(legacy.Dense(1, activation="sigmoid"))
    assert model.input_shape == (None, 8)
    sgd = legacy.SGD(lr=0.2, momentum=0.4)
    assert np.isclose(float(sgd.learning_rate), 0.2) and np.isclose(sgd.momentum, 0.4)


def test_removed_keras2_arguments_name_the_replacement():
    with pytest.raises(TypeError, match="decay.*weight_decay"):
        legacy.SGD(lr=0.1, decay=1e-6)
    with pytest.raises(TypeError, match="needs build_fn"):
        legacy.KerasClassifier(epochs=2)


def test_wrapper_routes_build_fn_arguments_like_keras2():
    from legacy_recipe import create_model_sgd

    model = legacy.KerasClassifier(build_fn=create_model_sgd, nb_epoch=3, batch_size=10,
                                   learn_rate=0.1, verbose=0)
    params = model.get_params()
    assert params["epochs"] == 3 and params["model__learn_rate"] == 0.1
    clone = model.set_params(momentum=0.9, batch_size=20)   # a Keras 2 grid point
    assert clone.get_params()["model__momentum"] == 0.9
    assert clone.get_params()["batch_size"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("builder, grid", [
    ("create_model_sgd", {"learn_rate": [0.01, 0.1], "momentum": [0.0, 0.9]}),
    ("create_model_dropout", {"dropout_rate": [0.0, 0.2], "weight_constraint": [1, 4]}),
    ("create_model_optimizer", {"optimizer": ["SGD", "Adam"]}),
])
def test_recipe_grids_run_on_the_cluster(pima_path, builder, grid):
    import legacy_recipe

    data = np.loadtxt(pima_path, delimiter=",", dtype="float32")
    X, Y = data[:, 0:8], data[:, 8].astype(int)
    model = legacy.KerasClassifier(build_fn=getattr(legacy_recipe, builder), epochs=2,
                                   batch_size=10, verbose=0)
    with sweep.cluster("local", workers=2, seed=7):
        result = GridSearchCV(estimator=model, param_grid=grid, n_jobs=-1, cv=3).fit(X, Y)
    n = int(np.prod([len(v) for v in grid.values()]))
    scores = result.cv_results_["mean_test_score"]
    assert len(scores) == n and np.isfinite(scores).all()
    assert set(result.best_params_) == set(grid)
