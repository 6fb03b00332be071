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

With whole epochs per execution, Keras' input pipeline for NumPy arrays becomes
the largest cost on TensorFlow: it gathers every batch in a ``tf.data`` map call
of its own (~0.4 ms per batch on one core, more than the train step of a small
network). During a fast-path fit the arrays are gathered once per epoch instead,
in the same shuffled order, and cut into the same batches (:func:`epoch_batches`).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..._compat.keras import ArrayInputs, patch_array_pipeline, set_steps_per_execution
from ..._compat.scikeras import (
    keras_fit_patched,
    patch_keras_fit,
    patch_model_fit,
    unpatch_keras_fit,
)
from ...protocol import FASTEST, FitPath, TrainingPaths
from .loop import fit as loop_fit
from .loop import permutations, unsupported
from .nonfinite import guard
from .traces import release

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


def enable(estimator: Any, paths: TrainingPaths = FASTEST,
           cap: int = 1000) -> FitPath | None:
    """Make this scikeras estimator's next fits take the fastest path ``paths`` allow.

    The compiled loop first (with ``paths.compiled_loop``, XLA-compiled with
    ``paths.xla``), else Keras' ``fit`` with whole epochs per execution. Patches
    the instance (not the class), so only this fit in this worker is affected.
    Returns the :class:`FitPath` the fits will fill in, or None, changing
    nothing, when the estimator is not a scikeras wrapper or a callback needs
    every batch.
    """
    if not hasattr(estimator, "get_params"):
        return None
    params = estimator.get_params()
    if needs_every_batch(params.get("callbacks")) + needs_every_batch(
            params.get("fit__callbacks")):
        return None
    path = FitPath()

    def fit_keras_model(original: Any, X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        model = getattr(estimator, "model_", None)
        if model is None:
            return original(X, y, *args, **kwargs)
        params = estimator.get_params()
        batch = (kwargs.get("batch_size") or params.get("fit__batch_size")
                 or params.get("batch_size"))
        steps = steps_for(_rows(X) or 0, batch, cap)
        with patch_model_fit(model, lambda keras_fit: _loop_or_keras(
                model, path, keras_fit, paths)):
            return _whole_epochs(model, path, steps, original, X, y, *args, **kwargs)

    return path if patch_keras_fit(estimator, fit_keras_model) else None


def _whole_epochs(model: Any, path: FitPath, steps: int, train: Any, X: Any, y: Any,
                  *args: Any, **kwargs: Any) -> Any:
    """Train through ``train``, Keras' fit running ``steps`` batches per execution if it runs."""
    if (getattr(model, "steps_per_execution", None) != 1 or steps <= 1
            or not set_steps_per_execution(model, steps)):
        return train(X, y, *args, **kwargs)
    path.name = "fast path"
    try:
        with epoch_batches():
            return train(X, y, *args, **kwargs)
    finally:
        # predictions take the plain path: one pass, bitwise the same
        set_steps_per_execution(model, 1)


def _loop_or_keras(model: Any, path: FitPath, keras_fit: Any, paths: TrainingPaths) -> Any:
    """A stand-in for ``model.fit``: the compiled loop when allowed and exact, else
    ``keras_fit``; either way with the non-finite loss guard if ``paths`` ask for it."""

    def fit(x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        if paths.fail_on_nan:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), guard()]
        if not paths.compiled_loop:
            return keras_fit(x=x, y=y, **kwargs)
        known = {k: kwargs.pop(k) for k in ("batch_size", "epochs", "verbose", "callbacks",
                                            "shuffle", "sample_weight", "initial_epoch")
                 if k in kwargs}
        reason = unsupported(model, x, y, known.get("sample_weight"),
                                  known.get("shuffle", True), known.get("callbacks"), kwargs)
        if reason is None:
            return loop_fit(model, x, y, **known, **kwargs, xla=paths.xla,
                            share=paths.share_traces, path=path, traced=paths)
        path.fallback = reason
        return keras_fit(x=x, y=y, **known, **kwargs)

    return fit


@contextlib.contextmanager
def enabled(estimator: Any, paths: TrainingPaths = FASTEST,
            cap: int = 1000) -> Iterator[FitPath]:
    """Within the block, ``estimator`` fits on the fastest path ``paths`` allow.

    Yields the :class:`FitPath` its fits take. The patch is removed afterwards,
    so the estimator pickles (e.g. a refitted model sent back to the driver) as
    if never touched.
    """
    path = enable(estimator, paths, cap) if paths.fast else None
    try:
        yield path or FitPath()
    finally:
        if path is not None:
            unpatch_keras_fit(estimator)
            release(getattr(estimator, "model_", None))


@contextlib.contextmanager
def wrapper_fit_replaced(make: Callable[[Callable[..., Any]], Callable[..., Any]]
                         ) -> Iterator[None]:
    """Within the block, scikeras' ``BaseWrapper.fit`` is ``make(fit it replaces)``.

    Nested blocks restore in order; ``fit.__wrapped_original__`` is scikeras' own.
    Only where Keras or scikeras is imported already: importing scikeras would
    load TensorFlow into the driver (~600 MB, the 10k-fit soak of a scikit-learn
    estimator).
    """
    if "keras" not in sys.modules and "scikeras" not in sys.modules:
        yield
        return
    try:
        from scikeras.wrappers import BaseWrapper
    except ImportError:
        yield
        return
    inner = BaseWrapper.fit
    fit = make(inner)
    fit.__doc__ = inner.__doc__
    fit.__wrapped_original__ = getattr(inner, "__wrapped_original__", inner)  # type: ignore[attr-defined]
    BaseWrapper.fit = fit
    try:
        yield
    finally:
        BaseWrapper.fit = inner


@contextlib.contextmanager
def driver_fits(paths: TrainingPaths = FASTEST) -> Iterator[None]:
    """Within the block, scikeras fits in this process take the fastest path ``paths`` allow.

    For fits a session leaves in the driver: bitwise the same model as Keras'
    ``fit`` gives, in a fraction of the time. A NaN loss keeps Keras' behaviour
    there (the guard is for fits on workers, recorded in ``fits.csv``). Replaces
    ``BaseWrapper.fit`` for the block (:func:`wrapper_fit_replaced`); a fit it
    does not serve trains with Keras' ``fit``, to the same numbers.
    """
    quiet = replace(paths, fail_on_nan=False)

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def fit(self: Any, X: Any, y: Any = None, **kwargs: Any) -> Any:
            if not quiet.fast or keras_fit_patched(self):  # off, or fast already
                return original(self, X, y, **kwargs)
            with enabled(self, quiet):
                return original(self, X, y, **kwargs)

        return fit

    with wrapper_fit_replaced(make):
        yield


#: above this many bytes of training arrays, Keras' per-batch pipeline is kept
#: (the whole-epoch gather holds a second, shuffled copy of the arrays)
EPOCH_COPY_MAX_BYTES = 256 * 2**20


@contextlib.contextmanager
def epoch_batches() -> Iterator[None]:
    """Within the block, Keras feeds NumPy arrays to TensorFlow a whole epoch at a time.

    Keras' pipeline for arrays is replaced by :func:`_epoch_dataset`, which
    makes the same batches in the same order (the epoch's permutation is drawn
    by the same operations as Keras', so with the same seeds) but gathers the
    rows once per epoch rather than in one ``tf.data`` call per batch. Inputs it
    does not cover (sparse, ``shuffle="batch"``, larger than
    :data:`EPOCH_COPY_MAX_BYTES`) and other backends take Keras' own pipeline.
    A class-level replacement: concurrent fits in one process
    (threads_per_worker > 1) may see it set or restored mid-fit, which is
    harmless as both give the same batches.
    """
    restore = patch_array_pipeline(_epoch_dataset)
    try:
        yield
    finally:
        if restore is not None:
            restore()


def _epoch_dataset(adapter: ArrayInputs) -> Any:
    """Keras' ``ArrayDataAdapter`` batches, gathered a whole epoch at a time, or None.

    Mirrors ``get_tf_dataset`` of Keras 3's ``ArrayDataAdapter``: the
    permutation is drawn as there (:func:`~keras_sweep.worker.training.loop.permutations`),
    so with the same seed; batch k holds the permuted rows ``k*b .. (k+1)*b`` as there, the last
    one partial. ``tests/test_fastpath.py`` checks the batches against Keras'
    for shuffled and ordered data, partial batches and sample weights.
    """
    import tensorflow as tf
    from keras import tree

    shuffle = adapter.shuffle
    if shuffle not in (True, False):  # "batch": shuffles within batches
        return None
    inputs = tree.lists_to_tuples(adapter.inputs)
    leaves = tree.flatten(inputs)
    dense = all((isinstance(x, np.ndarray) and x.dtype.kind in "biuf")
                or (tf.is_tensor(x) and not isinstance(x, tf.SparseTensor)) for x in leaves)
    if not leaves or not dense:
        return None
    sizes = [x.nbytes if isinstance(x, np.ndarray) else
             (x.shape.num_elements() or -1) * x.dtype.size for x in leaves]
    if min(sizes) < 0 or sum(sizes) > EPOCH_COPY_MAX_BYTES:  # unknown shape, or too big
        return None
    inputs = tree.map_structure(tf.convert_to_tensor, inputs)  # as Dataset.from_tensors does
    num_samples, batch_size = adapter.num_samples, adapter.batch_size

    def batches(indices: Any) -> Any:
        epoch = tree.map_structure(lambda x: tf.gather(x, indices, axis=0), inputs)
        return tf.data.Dataset.from_tensor_slices(epoch).batch(batch_size)

    dataset = permutations(num_samples, shuffle).flat_map(batches)  # Keras' order, seed
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    if shuffle:
        options.experimental_external_state_policy = (
            tf.data.experimental.ExternalStatePolicy.IGNORE)
    return dataset.with_options(options)


def _rows(X: Any) -> int | None:
    try:
        return int(X.shape[0])
    except (AttributeError, TypeError, IndexError):
        return None
