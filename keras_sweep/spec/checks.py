"""Value checks of a spec, before anything starts: Keras names, ranges, the folds.

:mod:`keras_sweep.spec.reading` checks a spec's shape (its fields, types and grid keys); this
module checks the values that would otherwise fail only on the cluster, after a
cluster start and a full set of failed fits: the built-in network's domains
(activation, initializer, dropout, sizes), optimizer names and each optimizer's
settings (resolved with Keras itself), the loss, the seed, and, once the data is
loaded, the target's classes and the folds against the rows. Each failure is one
:class:`~keras_sweep.exceptions.SpecError` naming the field, the value and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..exceptions import SpecError

#: seeds numpy, TensorFlow and Python all accept
SEED_RANGE = (0, 2**32 - 1)


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "must be a positive integer"
    return None


def _rate(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        return "must be a fraction in [0, 1) (the share of units dropped)"
    return None


def _max_norm(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return "must be a positive number (or null for no constraint)"
    return None


def _keras_name(kind: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        import keras

        getter = {"activation": keras.activations.get,
                  "kernel_initializer": keras.initializers.get}[kind]
        if value is None:
            return None
        if not isinstance(value, str):
            return f"must be the name of a Keras {kind.replace('_', ' ')}"
        try:
            getter(value)
        except (ValueError, TypeError):
            return f"Keras has no {kind.replace('_', ' ')} named {value!r}"
        return None

    return check


#: the built-in network's arguments and their domains
MLP_DOMAINS: dict[str, Callable[[Any], str | None]] = {
    "neurons": _positive_int,
    "hidden_layers": _positive_int,
    "dropout": _rate,
    "max_norm": _max_norm,
    "activation": _keras_name("activation"),
    "kernel_initializer": _keras_name("kernel_initializer"),
}
#: the examples each domain's fix names
MLP_EXAMPLES = {
    "neurons": "[4, 8, 16]", "hidden_layers": "[1, 2]", "dropout": "[0.0, 0.2, 0.5]",
    "max_norm": "[null, 3, 5]", "activation": "[relu, tanh, sigmoid, linear]",
    "kernel_initializer": "[uniform, glorot_uniform, he_normal]",
}
#: fit settings a grid may vary, and their domains
FIT_DOMAINS: dict[str, Callable[[Any], str | None]] = {
    "epochs": _positive_int, "batch_size": _positive_int,
}


def check_values(model: dict[str, Any], fit: dict[str, Any],
                 param_grid: list[dict[str, list[Any]]], seed: int | None) -> None:
    """Check every value a spec gives the network, the optimizer, the loss and the seed.

    ``param_grid`` holds canonical keys (``model__*``, ``optimizer__*``, ...),
    as :func:`keras_sweep.spec.reading.validate` leaves them.
    """
    _check_seed(seed)
    if model["builder"] == "mlp":
        for field, key, value in _values(model, param_grid, "model__", model["params"]):
            if key in MLP_DOMAINS:
                problem = MLP_DOMAINS[key](value)
                if problem:
                    raise SpecError(field, value, problem,
                                    f"give {key} values such as {MLP_EXAMPLES[key]}")
    for field, key, value in _values(model, param_grid, "", fit):
        if key in FIT_DOMAINS:
            problem = FIT_DOMAINS[key](value)
            if problem:
                raise SpecError(field, value, problem, f"e.g. {key}: [10, 20]")
    _check_loss(model.get("loss"))
    _check_optimizers(model, param_grid)


def _values(model: dict[str, Any], grid: list[dict[str, list[Any]]], prefix: str,
            fixed: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(field, argument, value) for each value of an argument with ``prefix`` in the
    grid, and for each fixed value in ``fixed``."""
    section = "model.params" if prefix else "fit"
    for key, value in fixed.items():
        yield f"{section}.{key}", key, value
    for sub in grid:
        for key, values in sub.items():
            if prefix and not key.startswith(prefix):
                continue
            if not prefix and "__" in key:
                continue
            for value in _listed(values):
                yield f"param_grid.{key}", key[len(prefix):], value


def _listed(values: Any) -> list[Any]:
    """A grid entry's values to check: its list, or a distribution's two ends."""
    probes = getattr(values, "probes", None)
    return probes() if callable(probes) else list(values)


def _check_seed(seed: int | None) -> None:
    low, high = SEED_RANGE
    if seed is not None and not low <= seed <= high:
        raise SpecError("seed", seed, f"must be between {low} and {high}",
                        "seed: 7 (or null for no seeding)")


def _check_loss(loss: Any) -> None:
    if loss is None:
        return
    import keras

    try:
        if not isinstance(loss, str):
            raise TypeError(type(loss).__name__)
        keras.losses.get(loss)
    except (ValueError, TypeError):
        raise SpecError("model.loss", loss, "not a Keras loss",
                        "use e.g. binary_crossentropy, sparse_categorical_crossentropy, "
                        "mean_squared_error (or leave it out for the task's default)"
                        ) from None


def optimizer_class(name: Any, field: str) -> type:
    """The Keras optimizer class a spec's optimizer name stands for."""
    import keras

    if not isinstance(name, str):
        raise SpecError(field, name, "must be the name of a Keras optimizer",
                        "e.g. adam, sgd, rmsprop, adagrad, adadelta, adamax, nadam")
    try:
        return type(keras.optimizers.get(name))
    except (ValueError, TypeError):
        known = sorted(k for k in dir(keras.optimizers)
                       if isinstance(getattr(keras.optimizers, k), type)
                       and issubclass(getattr(keras.optimizers, k), keras.optimizers.Optimizer)
                       and k not in ("Optimizer", "LossScaleOptimizer"))
        raise SpecError(field, name, "Keras has no optimizer of that name",
                        f"use one of: {', '.join(known)}") from None


def optimizer_settings(cls: type) -> set[str]:
    """The settings (``__init__`` arguments) a Keras optimizer class takes by name."""
    params = inspect.signature(cls).parameters.values()  # its __init__, self excluded
    return {p.name for p in params
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _check_optimizers(model: dict[str, Any], grid: list[dict[str, list[Any]]]) -> None:
    """Each optimizer name resolves in Keras and takes every ``optimizer__*`` setting."""
    fixed = {key: [value] for key, value in model["optimizer_params"].items()}
    for sub in grid or [{}]:
        names = _listed(sub.get("optimizer", [model["optimizer"]]))
        field = "param_grid.optimizer" if "optimizer" in sub else "model.optimizer"
        settings = {**{f"optimizer__{k}": v for k, v in fixed.items()},
                    **{k: v for k, v in sub.items() if k.startswith("optimizer__")}}
        for name in names:
            cls = optimizer_class(name, field)
            accepted = optimizer_settings(cls)
            for key, values in settings.items():
                setting = key[len("optimizer__"):]
                where = (f"param_grid.{key}" if key in sub
                         else f"model.optimizer_params.{setting}")
                if setting not in accepted:
                    raise SpecError(where, setting,
                                    f"the {cls.__name__} optimizer has no setting {setting!r}",
                                    f"use one of: {', '.join(sorted(accepted))}")
                for value in _listed(values):
                    _check_setting(where, setting, value)


def _check_setting(field: str, setting: str, value: Any) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if setting == "learning_rate" and not (number and value > 0):
        raise SpecError(field, value, "a learning rate must be a positive number",
                        "e.g. [0.001, 0.01, 0.1]")
    if setting == "momentum" and not (number and 0 <= value <= 1):
        raise SpecError(field, value, "momentum must be a number in [0, 1]",
                        "e.g. [0.0, 0.5, 0.9]")


def check_folds(cv: int, y: np.ndarray, task: str, target: str) -> None:
    """The target has something to learn, and every fold gets rows of every class.

    Parameters
    ----------
    cv : int
        Number of folds.
    y : array
        The target, after sampling.
    task : str
        ``"classification"`` (stratified folds) or ``"regression"``.
    target : str
        How the spec names the target, for the message.
    """
    rows = len(y)
    if task == "classification":
        labels, counts = np.unique(y, return_counts=True)
        if len(labels) < 2:
            raise SpecError("data.target", target,
                            f"the target has one class only ({labels[0]!r} in all {rows} "
                            "rows): there is nothing to classify",
                            "point data.target at the label column, or set model.task: "
                            "regression for a numeric target")
        smallest = int(counts.min())
        if cv > smallest:
            label = labels[int(counts.argmin())]
            raise SpecError("cv", cv, f"the smallest class ({label!r}) has {smallest} "
                            f"row(s); stratified {cv}-fold cross-validation needs at least "
                            f"{cv} of each class", f"set cv: {max(2, min(smallest, 5))} "
                            "(or sample less of the data)")
    elif cv > rows:
        raise SpecError("cv", cv, f"more folds than the {rows} rows",
                        f"set cv: {min(5, rows)}")
