"""Memory hygiene after each fit: Keras' session, Python's garbage, TensorFlow's registry.

In a worker, the objects alive after TensorFlow's import (about half a million)
and the survivors of every fit are frozen (:func:`gc.freeze`), so the per-fit
collection only walks what the last fit made: ~0.01 s instead of the ~0.3 s a
full collection of a TensorFlow process costs.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from .._compat.keras import clear_session
from .._compat.tensorflow import registered_gradients

#: Python's automatic collections since sweep's last one (see _count_collections)
_automatic_collections = 0


def clear_keras_session(freeze: bool, full_collection: bool, keep_kernels: bool = False
                        ) -> None:
    """Drop Keras' global state and collect the fit's garbage.

    With ``freeze`` (a worker that runs one fit at a time), collect only what
    the fit left, then freeze the survivors; ``full_collection`` lifts the freeze
    first, so cyclic garbage among frozen objects (e.g. Dask's own task
    records) is freed too. Without ``freeze``: one full collection, as Keras does.
    With ``keep_kernels``, TensorFlow's kernel cache (traced functions'
    instantiations) outlives the fit: callers decide with
    :func:`keras_sweep.worker.fit.kernels_kept`.
    """
    if "keras" in sys.modules:
        clear_session(clear_kernels=not keep_kernels)
    if not freeze:
        gc.collect()
        return
    if full_collection:
        gc.unfreeze()
    elif not _worth_collecting():
        return
    _collect_and_freeze()


def _count_collections(phase: str, info: dict[str, Any]) -> None:
    global _automatic_collections
    if phase == "stop":
        _automatic_collections += 1


def _worth_collecting() -> bool:
    """Whether the fit left enough new container objects to be worth a collection.

    Fewer new objects than Python's own generation-0 threshold (700), and no
    automatic collection since sweep's last one, mean nothing big to free (a
    Keras model is thousands of objects); they wait for Python's next pass.
    """
    return _automatic_collections > 0 or gc.get_count()[0] >= gc.get_threshold()[0]


def _collect_and_freeze() -> None:
    global _automatic_collections
    gc.collect()
    gc.freeze()
    _automatic_collections = 0
    if _count_collections not in gc.callbacks:
        gc.callbacks.append(_count_collections)


def freeze_heap() -> int:
    """Collect garbage, then freeze everything alive; returns the frozen count."""
    _collect_and_freeze()
    return gc.get_freeze_count()


def custom_gradient_keys() -> set[str] | None:
    """Names in TensorFlow's global gradient registry now (None: not imported)."""
    registry = registered_gradients()
    return None if registry is None else set(registry)


def purge_custom_gradients(before: set[str]) -> int:
    """Drop the ``tf.custom_gradient`` registrations made since ``before``.

    Each time a graph with a custom gradient is traced (Keras' train step is,
    once per fit), TensorFlow registers the gradient function under a new
    global name (``CustomGradient-N``) and never removes it; the function's
    closure keeps the whole traced graph alive: ~6,000 Python objects and
    ~3.7 MB per fit of the recipe's network. After a fit its model is gone and
    the registrations are dropped. A module-level ``tf.function`` with a custom
    gradient, traced in one fit and reused by later ones, kept working in a trial
    (TensorFlow keeps its gradient with the traced function); should some code
    need them anyway, ``sweep.worker.purge-custom-gradients: false`` keeps them.
    """
    registry = registered_gradients()
    if registry is None:
        return 0
    stale = [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]
    for key in stale:
        del registry[key]
    return len(stale)


def resident_bytes() -> int:
    """Resident memory of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)
