"""Every seeding rule of sweep, driver side and worker side, in one place.

Rules:

- **Common random numbers.** With a sweep seed, every candidate of one CV fold
  gets the same seed (:func:`fit_seed`): candidates are compared on the same
  initial weights and the same batch order, so a "best" candidate cannot be a
  lucky seed.
- **The estimator's own seed wins.** An estimator with an integer
  ``random_state`` is seeded with it for every fit, as scikeras does in a
  serial run, so a sweep draws what the user's ``n_jobs=1`` run draws.
- **The refit** has a stream of its own (:func:`refit_seed`), apart from every
  fold's.
- **Op determinism** (TensorFlow) is on only for seeded sweeps
  (:func:`op_determinism`): it refuses unseeded random ops.
- **In a fit** (:func:`seeded`), Python, NumPy and Keras are seeded, and Keras
  draws the seeds of unseeded initializers from a private generator.
- **Kernels kept.** TensorFlow's ``set_seed`` also clears its kernel cache, so
  every traced function is instantiated (rewritten by Grappler) again: ~0.25 s
  per fit even for a shared trace. The clear only matters to kernels that keep
  random state (``tf.random.uniform`` and kin, which take ``seed``/``seed2``
  attributes; Keras 3 draws with stateless ops). A worker thread watches every
  op it runs or traces (:func:`kernels_clean`); until one such op has been seen,
  a fit's seeding keeps the cache, which is then the same as clearing it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._compat.keras import keras_seed_source, set_random_seed
from .._compat.tensorflow import watch_ops

logger = logging.getLogger(__name__)

#: the refit's seed stream, apart from every CV fold's
REFIT_STREAM = 2**31 - 1


def estimator_seed(estimator: Any) -> int | None:
    """The estimator's own integer ``random_state``, if it has one."""
    value = getattr(estimator, "random_state", None)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def _derived(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def fit_seed(seed: int | None, split: int | None, estimator: Any = None) -> int | None:
    """Seed of one fit of CV fold ``split``: the same for every candidate of the fold."""
    own = estimator_seed(estimator)
    if own is not None:
        return own
    if seed is None:
        return None
    return _derived(seed, split or 0)


def refit_seed(seed: int | None, estimator: Any = None) -> int | None:
    """Seed of the final refit: derived from the sweep seed, distinct from every fold's."""
    own = estimator_seed(estimator)
    if own is not None:
        return own
    return None if seed is None else _derived(seed, REFIT_STREAM)


def op_determinism(seed: int | None, wanted: bool) -> bool:
    """Whether workers turn on TensorFlow op determinism (only for seeded sweeps)."""
    return seed is not None and wanted


class _Watch(threading.local):
    installed = False


_WATCH = _Watch()
#: a kernel that may keep random state was run or traced in this process
_random_kernels_seen: str | None = None


def _on_op(op_type: str, attributes: tuple[str, ...], graph: str | None) -> None:
    global _random_kernels_seen
    if _random_kernels_seen is None and "seed2" in attributes \
            and not (graph or "").startswith("Dataset_"):
        # tf.data's functions get fresh kernels per iterator: their state never carries
        _random_kernels_seen = op_type


def kernels_clean(start: bool = True) -> bool:
    """Whether TensorFlow's kernel cache can hold no random state: no op with a
    ``seed2`` attribute (the stateful random ops) was run eagerly or traced, outside
    ``tf.data``, since this thread started watching. The first call in a thread starts
    the watch (``start`` False: does not) and says False (what ran before is unknown)."""
    if "tensorflow" not in sys.modules:
        return False
    if not _WATCH.installed:
        if not start:
            return False
        watch_ops(_on_op)
        _WATCH.installed = True
        return False
    return _random_kernels_seen is None


def seed_everything(seed: int, keep_kernels: bool = False) -> None:
    """Seed Python, NumPy and Keras (hence TensorFlow) for one fit.

    Keras draws the seeds of unseeded initializers from Python's process-wide
    ``random`` generator, which Dask's own threads in the worker also draw from
    (timings, worker choice) while a fit runs. Seeding it is therefore not
    enough: Keras gets a private generator, seeded for this fit. With
    ``keep_kernels`` TensorFlow's kernel cache is not cleared (callers check
    :func:`kernels_clean`).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "keras" in sys.modules:
        set_random_seed(seed, clear_kernels=not keep_kernels)
        if keras_seed_source(random.Random(seed)) is None:  # pragma: no cover
            logger.warning("sweep: cannot isolate Keras' default seeds; fits may not be exact")


class _OutsideWorkers:
    """Fits seeded outside a worker that run now, and Keras' own seed source meanwhile."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.saved: Any = None

    def enter(self) -> None:
        with self.lock:
            if self.running == 0:
                self.saved = keras_seed_source()
            self.running += 1

    def leave(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0 and self.saved is not None:
                keras_seed_source(self.saved)
                self.saved = None


_OUTSIDE = _OutsideWorkers()


@contextlib.contextmanager
def seeded(seed: int | None, in_worker: bool) -> Iterator[None]:
    """Within the block, the fit is seeded with ``seed`` (None: left as it is).

    Outside a worker (tests, joblib's sequential fallback, an in-process Dask
    cluster) Keras' default seed source is put back once the last such fit
    ends, so a later plain run in the same process draws as it would without
    sweep, even when fits overlapped in threads (each would otherwise put back
    the private generator of the one that started before it).
    """
    if not in_worker:
        _OUTSIDE.enter()
    try:
        if seed is not None:
            seed_everything(seed, keep_kernels=in_worker and kernels_clean())
        yield
    finally:
        if not in_worker:
            _OUTSIDE.leave()
