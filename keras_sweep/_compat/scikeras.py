"""Touches of scikeras's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .registry import touch


@touch("scikeras", ">=0.13, tested 0.13.0",
       "BaseWrapper._fit_keras_model(X, y, ...): the call that trains model_")
def patch_keras_fit(estimator: Any, wrapper: Callable[..., Any]) -> bool:
    """Route ``estimator``'s Keras training through ``wrapper(original, X, y, ...)``.

    Patches the instance only. Returns False, changing nothing, when the
    estimator is not a scikeras wrapper.
    """
    original = getattr(estimator, "_fit_keras_model", None)
    if original is None or not hasattr(estimator, "get_params"):
        return False

    def fit_keras_model(X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(original, X, y, *args, **kwargs)

    estimator._fit_keras_model = fit_keras_model
    return True


@touch("scikeras", ">=0.13, tested 0.13.0",
       "BaseWrapper._fit_keras_model trains through self.model_.fit(x=X, y=y, **fit_args) "
       "and reads the returned History's .history")
@contextlib.contextmanager
def patch_model_fit(model: Any, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, ``model.fit`` is ``make(keras_fit)`` (on this instance only)."""
    keras_fit = model.fit
    model.fit = make(keras_fit)
    try:
        yield
    finally:
        model.__dict__.pop("fit", None)


def keras_fit_patched(estimator: Any) -> bool:
    """Whether :func:`patch_keras_fit` patched ``estimator`` (and it is not undone yet)."""
    return "_fit_keras_model" in vars(estimator)


def unpatch_keras_fit(estimator: Any) -> None:
    """Undo :func:`patch_keras_fit` (the estimator pickles as if never touched)."""
    estimator.__dict__.pop("_fit_keras_model", None)
