"""The fast fit path: whole epochs per Keras execution (``steps_per_execution``).

A small network on a small table spends most of a Keras ``fit`` in per-batch
overhead (a Python round trip into the compiled step, callbacks, logs), not in
arithmetic. Keras can run several batches per call of its compiled train
function (``steps_per_execution``); sweep sets that to the number of batches of
an epoch (capped), in the worker, for each fit, unless the user turned it off or
a callback needs per-batch calls (which Keras would make only once per execution).

The same batches are visited in the same order with the same updates, so loss
histories and scores stay bitwise equal to those of the plain path under op
determinism (``tests/test_fastpath.py``); only the overhead goes. Predictions
(scoring) run on the plain path: one pass over the test fold costs little, and
Keras' multi-step predict loop is not bitwise equal to the single-step one.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from typing import Any

#: batch-level hooks: a callback that overrides any of them disables the fast path
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin",
               "on_train_batch_end")
#: Keras callbacks that are fine with fewer batch calls
HARMLESS = {"History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN",
            "CSVLogger", "ReduceLROnPlateau", "LearningRateScheduler", "BackupAndRestore"}


def needs_every_batch(callbacks: Any) -> list[str]:
    """Names of callbacks that override a per-batch hook (they block the fast path)."""
    import keras

    if callbacks is None:
        return []
    items = callbacks.values() if isinstance(callbacks, dict) else (
        callbacks if isinstance(callbacks, (list, tuple)) else [callbacks])
    blocking = []
    for cb in items:
        cls = cb if isinstance(cb, type) else type(cb)
        if cls.__name__ in HARMLESS and cls.__module__.startswith("keras"):
            continue
        for hook in BATCH_HOOKS:
            mine = getattr(cls, hook, None)
            base = getattr(keras.callbacks.Callback, hook)
            if mine is not None and getattr(mine, "__code__", None) is not base.__code__:
                blocking.append(cls.__name__)
                break
    return blocking


def steps_for(rows: int, batch_size: int | None, cap: int) -> int:
    """Batches per epoch for ``rows`` (Keras' default batch size is 32), capped."""
    size = batch_size if batch_size and batch_size > 0 else 32
    return max(1, min(cap, math.ceil(rows / size)))


def enable(estimator: Any, cap: int = 1000) -> bool:
    """Make this scikeras estimator's next fits run whole epochs per execution.

    Patches the instance (not the class), so only this fit in this worker is
    affected. Returns False, changing nothing, when the estimator is not a
    scikeras wrapper or a callback needs every batch.
    """
    original = getattr(estimator, "_fit_keras_model", None)
    if original is None or not hasattr(estimator, "get_params"):
        return False
    params = estimator.get_params()
    blocked = needs_every_batch(params.get("callbacks")) + needs_every_batch(
        params.get("fit__callbacks"))
    if blocked:
        return False

    def fit_keras_model(self: Any, X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        model = getattr(self, "model_", None)
        rows = _rows(X)
        if model is not None and rows and hasattr(model, "steps_per_execution"):
            batch = kwargs.get("batch_size") or self.get_params().get(
                "fit__batch_size") or self.get_params().get("batch_size")
            steps = steps_for(rows, batch, cap)
            if steps > 1 and model.steps_per_execution == 1:
                model.steps_per_execution = steps
                model.train_function = None  # rebuilt with the new count
                try:
                    return original(X, y, *args, **kwargs)
                finally:
                    # predictions take the plain path: one pass, bitwise the same
                    model.steps_per_execution = 1
                    model.train_function = None
        return original(X, y, *args, **kwargs)

    estimator._fit_keras_model = types.MethodType(fit_keras_model, estimator)
    return True


@contextlib.contextmanager
def enabled(estimator: Any, on: bool = True, cap: int = 1000) -> Iterator[bool]:
    """Within the block, ``estimator`` fits on the fast path (if ``on`` and allowed).

    Yields whether it does. The patch is removed afterwards, so the estimator
    pickles (e.g. a refitted model sent back to the driver) as if never touched.
    """
    active = bool(on) and enable(estimator, cap)
    try:
        yield active
    finally:
        if active:
            estimator.__dict__.pop("_fit_keras_model", None)


def _rows(X: Any) -> int | None:
    try:
        return int(X.shape[0])
    except (AttributeError, TypeError, IndexError):
        return None
