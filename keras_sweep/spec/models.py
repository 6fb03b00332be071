"""Model builders and the scikeras estimator a spec describes.

:func:`mlp` is the built-in, configurable network of the classic recipe
(inputs -> N hidden units -> output). A user builder is any importable
``module:function`` that returns a Keras model; scikeras passes it the
``model__*`` parameters and, if it asks for it, ``meta`` (shapes, classes).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from ..exceptions import SpecError


def mlp(
    meta: dict[str, Any],
    neurons: int = 12,
    hidden_layers: int = 1,
    activation: str = "relu",
    kernel_initializer: str = "glorot_uniform",
    dropout: float = 0.0,
    max_norm: float | None = None,
) -> Any:
    """The recipe's network: ``hidden_layers`` dense layers of ``neurons`` units.

    Parameters
    ----------
    meta : dict
        Filled by scikeras: input width, task, number of classes.
    neurons, hidden_layers, activation, kernel_initializer : optional
        Shape and activation of the hidden layers.
    dropout : float
        Dropout rate after each hidden layer (0 disables it).
    max_norm : float, optional
        Max-norm constraint on the hidden layers' weights.
    """
    import keras

    constraint = keras.constraints.MaxNorm(max_norm) if max_norm else None
    layers: list[Any] = [keras.Input(shape=(meta["n_features_in_"],))]
    for _ in range(hidden_layers):
        layers.append(keras.layers.Dense(neurons, activation=activation,
                                         kernel_initializer=kernel_initializer,
                                         kernel_constraint=constraint))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(_output_layer(meta, kernel_initializer))
    return keras.Sequential(layers)


def _output_layer(meta: dict[str, Any], kernel_initializer: str) -> Any:
    import keras

    if "n_classes_" not in meta:  # a regressor (scikeras gives classifiers their classes),
        # even when its targets look like classes (integer-valued, as diabetes' are)
        return keras.layers.Dense(meta.get("n_outputs_expected_", 1) or 1)
    if meta.get("target_type_") == "binary":
        return keras.layers.Dense(1, activation="sigmoid", kernel_initializer=kernel_initializer)
    if meta.get("target_type_") in ("multiclass", "multiclass-multioutput"):
        return keras.layers.Dense(meta["n_classes_"], activation="softmax",
                                  kernel_initializer=kernel_initializer)
    return keras.layers.Dense(meta.get("n_outputs_expected_", 1) or 1)


def default_loss(task: str, n_classes: int) -> str:
    """Loss for the built-in network: the recipe's binary cross-entropy, etc."""
    if task == "regression":
        return "mean_squared_error"
    return "binary_crossentropy" if n_classes <= 2 else "sparse_categorical_crossentropy"


def import_builder(path: str, field: str = "model.builder") -> Callable[..., Any]:
    """Import ``module:function``; raise :class:`SpecError` that says how to fix it."""
    if path == "mlp":
        return mlp
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(field, path, "a builder is 'mlp' or 'module:function'",
                        "write e.g. builder: mymodels:build_model (mymodels.py importable)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(field, path, f"module {module_name!r} cannot be imported ({exc})",
                        "run sweep from the folder that holds the module, or add that folder "
                        "to PYTHONPATH") from exc
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise SpecError(field, path, f"module {module_name!r} has no function {attr!r}",
                        f"define def {attr}(...): returning a Keras model in {module_name}")
    return builder


def builder_arguments(builder: Callable[..., Any]) -> tuple[set[str], bool]:
    """Names a builder accepts, and whether it takes ``**kwargs``."""
    params = inspect.signature(builder).parameters.values()
    names = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"meta", "compile_kwargs", "params"}, any(
        p.kind is p.VAR_KEYWORD for p in params
    )


def make_estimator(task: str, builder: Callable[..., Any], *, loss: str, optimizer: Any,
                   builder_params: dict[str, Any], fit_params: dict[str, Any],
                   extra: dict[str, Any]) -> Any:
    """A scikeras ``KerasClassifier`` or ``KerasRegressor`` for the spec."""
    from scikeras.wrappers import KerasClassifier, KerasRegressor

    cls = KerasRegressor if task == "regression" else KerasClassifier
    routed = {f"model__{k}": v for k, v in builder_params.items()}
    fit = {"verbose": 0, **fit_params}
    return cls(model=builder, loss=loss, optimizer=optimizer, **fit, **routed, **extra)
