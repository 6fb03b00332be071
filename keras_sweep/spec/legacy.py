"""The recipe's Keras-2 names, mapped onto today's stack (Keras 3 + scikeras).

The classic recipe wrote ``KerasClassifier(build_fn=create_model, ...)`` with
``SGD(lr=...)``, ``maxnorm(...)``, ``init='uniform'`` and grid keys such as
``init_mode``, ``learn_rate`` or ``weight_constraint``. Grid keys with a known new
name are renamed by spec validation (:data:`keras_sweep.spec.reading.GRID_KEYS`, re-exported
here); names that are gone raise with the new name.
"""

from __future__ import annotations

import inspect
from typing import Any

from .._compat.keras import sequential_has_layers
from .reading import GRID_KEYS, REMOVED, rename_grid_key

__all__ = ["GRID_KEYS", "REMOVED", "rename_grid_key", "KerasClassifier", "KerasRegressor",
           "Sequential", "Dense", "Dropout", "SGD", "Adam", "RMSprop", "maxnorm", "max_norm"]

# -- Python-level Keras 2 calls ----------------------------------------------------------
# The recipe's code, as written for Keras 2 and keras.wrappers.scikit_learn, runs on
# Keras 3 + scikeras when it imports these names from sweep.legacy instead:
#
#   from sweep.legacy import KerasClassifier, Sequential, Dense, Dropout, SGD, maxnorm
#
# Each maps its Keras 2 arguments to the new ones; an argument that no longer
# exists raises a TypeError that names its replacement.

#: Keras 2 layer arguments -> Keras 3
LAYER_ARGS = {"init": "kernel_initializer", "W_constraint": "kernel_constraint",
              "b_constraint": "bias_constraint", "W_regularizer": "kernel_regularizer",
              "b_regularizer": "bias_regularizer", "output_dim": "units"}
#: Keras 2 optimizer arguments -> Keras 3 (None: gone)
OPTIMIZER_ARGS: dict[str, str | None] = {"lr": "learning_rate", "decay": None}
#: Keras 2 wrapper / fit arguments -> scikeras
WRAPPER_ARGS = {"nb_epoch": "epochs"}


def _renamed(kwargs: dict[str, Any], table: dict[str, Any], what: str) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        if key in table:
            new = table[key]
            if new is None:
                raise TypeError(f"{what}: Keras 2's `{key}` no longer exists; "
                                f"use {REMOVED.get(key, 'a learning-rate schedule')}")
            key = new
        out[key] = value
    return out


def Dense(*args: Any, input_dim: int | None = None, **kwargs: Any) -> Any:  # noqa: N802
    """``keras.layers.Dense`` taking Keras 2 arguments (``init``, ``W_constraint``,
    ``input_dim``, ...). ``input_dim`` is honoured by :class:`Sequential`."""
    import keras

    layer = keras.layers.Dense(*args, **_renamed(kwargs, LAYER_ARGS, "Dense"))
    layer._sweep_input_dim = input_dim
    return layer


def Dropout(rate: float, **kwargs: Any) -> Any:  # noqa: N802
    """``keras.layers.Dropout`` (unchanged; here so one import line serves the recipe)."""
    import keras

    return keras.layers.Dropout(rate, **kwargs)


def _sequential_class() -> type:
    import keras

    class Sequential(keras.Sequential):
        """``keras.Sequential`` that turns a first layer's ``input_dim`` into an Input."""

        def add(self, layer: Any, rebuild: bool = True) -> None:
            dim = getattr(layer, "_sweep_input_dim", None)
            if dim is not None and not sequential_has_layers(self):
                super().add(keras.Input(shape=(dim,)), rebuild=False)
            super().add(layer, rebuild=rebuild)

    return Sequential


def Sequential(*args: Any, **kwargs: Any) -> Any:  # noqa: N802
    """A Keras 3 ``Sequential`` that accepts Keras 2's ``Dense(..., input_dim=N)`` first."""
    return _sequential_class()(*args, **kwargs)


def maxnorm(max_value: float = 2, axis: int = 0) -> Any:
    """Keras 2's ``maxnorm`` constraint: ``keras.constraints.MaxNorm``."""
    import keras

    return keras.constraints.MaxNorm(max_value=max_value, axis=axis)


max_norm = maxnorm


def _optimizer(name: str, kwargs: dict[str, Any]) -> Any:
    import keras

    return getattr(keras.optimizers, name)(**_renamed(kwargs, OPTIMIZER_ARGS, name))


def SGD(**kwargs: Any) -> Any:  # noqa: N802
    """``keras.optimizers.SGD`` taking Keras 2's ``lr``."""
    return _optimizer("SGD", kwargs)


def Adam(**kwargs: Any) -> Any:  # noqa: N802
    """``keras.optimizers.Adam`` taking Keras 2's ``lr``."""
    return _optimizer("Adam", kwargs)


def RMSprop(**kwargs: Any) -> Any:  # noqa: N802
    """``keras.optimizers.RMSprop`` taking Keras 2's ``lr``."""
    return _optimizer("RMSprop", kwargs)


def _build_fn_params(fn: Any) -> set[str]:
    try:
        return {name for name, p in inspect.signature(fn).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    except (TypeError, ValueError):
        return set()


def _legacy_params(fn: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Keras 2 wrapper keywords -> scikeras: the build function's own arguments get
    the ``model__`` prefix (Keras 2 routed them by name), ``nb_epoch`` becomes ``epochs``."""
    own = _build_fn_params(fn)
    out = {}
    for key, value in _renamed(params, WRAPPER_ARGS, "KerasClassifier").items():
        out[f"model__{key}" if "__" not in key and key in own else key] = value
    return out


def _legacy_wrapper(base_name: str) -> type:
    from scikeras import wrappers

    base = getattr(wrappers, base_name)

    class Legacy(base):  # type: ignore[misc, valid-type]
        def set_params(self, **params: Any) -> Any:
            fn = self.model if self.model is not None else self.build_fn
            return super().set_params(**_legacy_params(fn, params))

    Legacy.__name__ = Legacy.__qualname__ = f"Legacy{base_name}"
    Legacy.__module__ = __name__
    return Legacy


LegacyKerasClassifier = _legacy_wrapper("KerasClassifier")
LegacyKerasRegressor = _legacy_wrapper("KerasRegressor")


def KerasClassifier(build_fn: Any = None, **kwargs: Any) -> Any:  # noqa: N802
    """Keras 2's ``KerasClassifier(build_fn=create_model, epochs=..., neurons=...)``.

    Returns a scikeras ``KerasClassifier`` whose grid keys may be the build
    function's argument names, as in Keras 2 (``dict(neurons=[1, 5])``): they are
    routed to the build function (scikeras writes ``model__neurons``).
    """
    if build_fn is None:
        raise TypeError("KerasClassifier needs build_fn=create_model")
    return LegacyKerasClassifier(model=build_fn, **_legacy_params(build_fn, kwargs))


def KerasRegressor(build_fn: Any = None, **kwargs: Any) -> Any:  # noqa: N802
    """Keras 2's ``KerasRegressor(build_fn=...)``; see :func:`KerasClassifier`."""
    if build_fn is None:
        raise TypeError("KerasRegressor needs build_fn=create_model")
    return LegacyKerasRegressor(model=build_fn, **_legacy_params(build_fn, kwargs))
