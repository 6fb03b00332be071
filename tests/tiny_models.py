"""Tiny model builders for tests (importable by worker processes)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


def tiny(meta: dict[str, Any], neurons: int = 2) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(neurons, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def tf_random_init(meta: dict[str, Any], neurons: int = 2) -> Any:
    """:func:`tiny` with its first kernel drawn by ``tf.random.uniform`` (a stateful
    kernel: its stream goes on between calls unless TensorFlow's seed is set again)."""
    import tensorflow as tf

    model = tiny(meta, neurons)
    kernel = model.layers[0].kernel
    kernel.assign(tf.random.uniform(kernel.shape, -0.5, 0.5))
    return model


def explode(meta: dict[str, Any], neurons: int = 2) -> Any:
    """Fails for neurons == 3: a candidate that always raises."""
    if neurons == 3:
        raise ValueError("neurons=3 is not allowed in this test builder")
    return tiny(meta, neurons)


def kill_worker(meta: dict[str, Any], neurons: int = 2) -> Any:
    """For neurons == 3, kills the worker process that builds it (SIGKILL)."""
    if neurons == 3:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return tiny(meta, neurons)


def hog_memory(meta: dict[str, Any], neurons: int = 2) -> Any:
    """For neurons == 3, grows the worker's memory 100 MB at a time (touched pages)
    until something stops it: a fit that runs out of memory."""
    if neurons == 3:
        import time

        import numpy as np

        hoard = []
        for _ in range(100):  # at most 10 GB
            hoard.append(np.ones(100 * 2**20 // 8))
            time.sleep(0.05)
    return tiny(meta, neurons)


def per_batch_callback() -> Any:
    """A callback that counts batches: it needs every batch, so no fast path."""
    return CountBatches()


try:
    import keras as _keras

    class CountBatches(_keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.batches = getattr(self, "batches", 0) + 1
except ImportError:  # pragma: no cover
    pass


_CLIPPED: Any = None


def _clipped_identity() -> Any:
    """A module-level tf.function with a custom gradient, traced once per process and
    reused by every later fit (the case sweep's gradient purge must not break)."""
    global _CLIPPED
    if _CLIPPED is None:
        import tensorflow as tf

        @tf.custom_gradient
        def clip(x: Any) -> Any:
            def grad(dy: Any) -> Any:
                return tf.clip_by_value(dy, -0.1, 0.1)

            return tf.identity(x), grad

        _CLIPPED = tf.function(clip)
    return _CLIPPED


def clipped(meta: dict[str, Any], neurons: int = 2) -> Any:
    import keras

    class ClipGradient(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return _clipped_identity()(x)

    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(neurons, activation="relu"),
        ClipGradient(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


class SlowMajority(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier whose ``fit`` sleeps ``delay`` seconds, then learns the
    majority class: fits long enough for the scheduler to act between them."""

    def __init__(self, C: float = 1.0, delay: float = 0.25) -> None:
        self.C = C
        self.delay = delay

    def fit(self, X: Any, y: Any) -> SlowMajority:
        time.sleep(self.delay)
        values, counts = np.unique(y, return_counts=True)
        self.classes_, self.majority_ = values, values[counts.argmax()]
        return self

    def predict(self, X: Any) -> Any:
        return np.full(len(X), self.majority_)



def _worker() -> Any:
    """The Dask worker this runs in; None in the driver (or a plain fit)."""
    try:
        from distributed import get_worker

        return get_worker()
    except ValueError:
        return None


def slept_until_jobs(meta: dict[str, Any], neurons: int = 2, pause: float = 0.0,
                     jobs: str = "", until: int = 3) -> Any:
    """:func:`tiny`, built after ``pause`` seconds of sleep on worker processes until
    fits have started in ``until`` SLURM jobs: each fit leaves a file named after its
    worker's ``SLURM_JOB_ID`` (holding the address of the worker's nanny) in the folder
    ``jobs``, and sleeps only while fewer than ``until`` are there. Fits whose wall time
    a sleep sets, not the machine's speed, until replacement jobs have taken over; then
    they run at full speed. The sleep changes no number (the model is built after it);
    nothing sleeps in the driver."""
    import os

    worker = _worker()
    if worker is None:
        return tiny(meta, neurons)
    os.makedirs(jobs, exist_ok=True)
    with open(os.path.join(jobs, os.environ.get("SLURM_JOB_ID", "none")), "w") as f:
        f.write(str(worker.nanny))
    if len(os.listdir(jobs)) < until:
        time.sleep(pause)
    return tiny(meta, neurons)


def first_fit_sleeps(meta: dict[str, Any], neurons: int = 2, hold: str = "",
                     hold_for: float = 0.0) -> Any:
    """:func:`tiny`; on worker processes, the first fit to get here creates the file
    ``hold`` (holding its worker's ``SLURM_JOB_ID``) and sleeps ``hold_for`` seconds: a
    fit that holds its worker (e.g. until its batch job is killed), whatever the
    machine's speed. The fits after it, its own rerun included, find the file and do
    not sleep; nothing sleeps in the driver."""
    import os
    import threading

    if _worker() is None:
        return tiny(meta, neurons)
    mine = f"{hold}.{os.getpid()}.{threading.get_ident()}"
    with open(mine, "w") as f:
        f.write(os.environ.get("SLURM_JOB_ID", ""))
    try:
        os.link(mine, hold)  # atomic: one fit only gets there first, its file complete
        first = True
    except FileExistsError:
        first = False
    finally:
        os.unlink(mine)
    if first:
        time.sleep(hold_for)
    return tiny(meta, neurons)


def waits_while(meta: dict[str, Any], neurons: int = 2, flag: str = "") -> Any:
    """:func:`tiny`, built on worker processes only once the file ``flag`` is gone (at
    most 10 minutes): a sweep that stays running until the test lets it go, whatever the
    machine's speed. Nothing waits in the driver."""
    import os

    if _worker() is not None:
        deadline = time.monotonic() + 600
        while flag and os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.1)
    return tiny(meta, neurons)
