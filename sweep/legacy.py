"""The recipe's Keras-2 names, mapped onto today's stack (Keras 3 + scikeras).

The classic recipe wrote ``KerasClassifier(build_fn=create_model, ...)`` with
``SGD(lr=...)``, ``maxnorm(...)``, ``init='uniform'`` and grid keys such as
``init_mode``, ``learn_rate`` or ``weight_constraint``. Grid keys with a known new
name are renamed (and reported); names that are gone raise with the new name.
"""

from __future__ import annotations

from .exceptions import SpecError

#: Recipe / Keras-2 grid keys -> the parameter of sweep's built-in ``mlp`` or scikeras.
GRID_KEYS: dict[str, str] = {
    "init": "model__kernel_initializer",
    "init_mode": "model__kernel_initializer",
    "kernel_initializer": "model__kernel_initializer",
    "dropout_rate": "model__dropout",
    "weight_constraint": "model__max_norm",
    "maxnorm": "model__max_norm",
    "learn_rate": "optimizer__learning_rate",
    "lr": "optimizer__learning_rate",
    "nb_epoch": "epochs",
}

#: Keras-2 names that no longer exist, and what to write instead.
REMOVED: dict[str, str] = {
    "build_fn": "model (scikeras: KerasClassifier(model=create_model))",
    "decay": "optimizer__weight_decay, or a learning-rate schedule",
}


def rename_grid_key(key: str) -> str | None:
    """The current name of a recipe-era grid key, or None if it is not one."""
    if key in REMOVED:
        raise SpecError(f"param_grid.{key}", key, "this Keras 2 name no longer exists",
                        f"use {REMOVED[key]}")
    return GRID_KEYS.get(key)
