"""Worker-side isolation of TensorFlow: one runtime per process, pinned threads.

Everything here runs inside a Dask worker process. The thread settings must be in
the environment before the process imports NumPy or TensorFlow
(:func:`worker_environment`, applied by the cluster factories before they spawn
workers); :class:`TensorFlowIsolation` then imports TensorFlow once per worker
(a warm pool) and sets TensorFlow's own thread pools, which it does not take
from ``OMP_NUM_THREADS``. :func:`isolated_fit` wraps every single fit.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from distributed import WorkerPlugin, get_worker

logger = logging.getLogger(__name__)

#: Thread-count variables honoured by OpenMP, the BLAS libraries and TensorFlow.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)

PLUGIN_NAME = "sweep-tensorflow-isolation"


def worker_environment(threads: int, keras_backend: str = "tensorflow") -> dict[str, str]:
    """Environment a worker process must start with.

    Parameters
    ----------
    threads : int
        Threads of the worker; every thread pool is pinned to this number.
    keras_backend : str
        Value of ``KERAS_BACKEND`` for the worker.
    """
    env = {name: str(threads) for name in THREAD_VARIABLES}
    env.update(
        KERAS_BACKEND=keras_backend,
        TF_CPP_MIN_LOG_LEVEL="2",
        TF_ENABLE_ONEDNN_OPTS="0",
        PYTHONWARNINGS="ignore::UserWarning",
        # Dask's statistical profiler samples the fit's thread every 10 ms and
        # takes the GIL to do it; Keras' per-step Python loop was ~11 % slower
        DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="False",
    )
    if keras_backend == "jax":
        # XLA's CPU client: one intra-op pool of the worker's size
        flags = [f"--xla_cpu_multi_thread_eigen={'false' if threads == 1 else 'true'}",
                 f"intra_op_parallelism_threads={threads}"]
        env["XLA_FLAGS"] = " ".join(flags)
    return env


def pin_tensorflow_threads(threads: int) -> dict[str, int]:
    """Import TensorFlow and set its intra- and inter-op pools to ``threads``.

    Returns the counts TensorFlow reports afterwards. Setting them fails once
    TensorFlow has run an op; then the counts it already has are reported.
    """
    import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def enable_determinism() -> str:
    """Turn on TensorFlow op determinism; say whether results can be bitwise exact.

    On CPUs every op TensorFlow runs here has a deterministic kernel. GPUs may
    lack one for some ops (TensorFlow then raises at that op), and a different
    GPU model or driver can change results; both are reported.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        logger.warning("sweep: %d GPU(s) visible: fits are deterministic only on the same "
                       "GPU model and driver, and ops without deterministic GPU kernels fail",
                       len(gpus))
        return f"gpu ({len(gpus)} device(s)): same hardware and driver only"
    return "cpu: bitwise"


@dataclass
class WorkerState:
    """What one worker process knows about its own fits."""

    threads: int
    recycle_after_fits: int | None
    recycle_above_bytes: int | None
    fits: int = 0
    recycling: bool = False
    freeze_gc: bool = False
    full_gc_every: int = 0
    frozen_objects: int = 0
    exclusive: bool = False
    purge_gradients: bool = False
    gradient_keys: set[str] | None = None
    tensorflow_threads: dict[str, int] = field(default_factory=dict)
    determinism: str = "not requested"
    lock: threading.Lock = field(default_factory=threading.Lock)


class TensorFlowIsolation(WorkerPlugin):
    """Worker plugin: pin TensorFlow's threads and prepare fit bookkeeping.

    Registered once per client; Dask also runs it on every worker that joins
    later, including workers restarted by recycling.
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(
        self,
        threads: int = 1,
        recycle_after_fits: int | None = None,
        recycle_above_bytes: int | None = None,
        preload_tensorflow: bool = True,
        deterministic: bool = True,
        freeze_gc: bool = True,
        full_gc_every: int = 100,
        purge_gradients: bool = True,
    ) -> None:
        self.threads = threads
        self.recycle_after_fits = recycle_after_fits
        self.recycle_above_bytes = recycle_above_bytes
        self.preload_tensorflow = preload_tensorflow
        self.deterministic = deterministic
        self.freeze_gc = freeze_gc
        self.full_gc_every = full_gc_every
        self.purge_gradients = purge_gradients

    def setup(self, worker: Any) -> None:
        state = WorkerState(self.threads, self.recycle_after_fits, self.recycle_above_bytes)
        if self.preload_tensorflow and _uses_tensorflow():
            state.tensorflow_threads = pin_tensorflow_threads(self.threads)
            if self.deterministic:
                state.determinism = enable_determinism()
        elif self.preload_tensorflow:  # another Keras backend (jax): import it now
            import keras  # noqa: F401

            state.determinism = f"{os.environ.get('KERAS_BACKEND')}: cpu (XLA, seeded)"
        # one fit at a time in this process: its clean-up may touch process-wide state
        state.exclusive = getattr(getattr(worker, "state", None), "nthreads", 1) == 1
        state.purge_gradients = self.purge_gradients and state.exclusive
        if self.freeze_gc and state.exclusive:  # TensorFlow's import-time objects
            state.freeze_gc, state.full_gc_every = True, self.full_gc_every
            state.frozen_objects = freeze_heap()
        worker._sweep_state = state


def isolation_ready(dask_worker: Any) -> bool:
    """Whether this worker has run the isolation plugin's setup (through ``client.run``).

    The setup imports TensorFlow on the worker's event loop, so a worker that has
    just registered may not answer for seconds; closing it then makes Dask log errors.
    """
    return getattr(dask_worker, "_sweep_state", None) is not None


def _uses_tensorflow() -> bool:
    return os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


def _worker_state() -> WorkerState | None:
    try:
        return getattr(get_worker(), "_sweep_state", None)
    except ValueError:  # not inside a Dask task (e.g. joblib's sequential fallback)
        return None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras (hence TensorFlow) for one fit.

    Keras draws the seeds of unseeded initializers from Python's process-wide
    ``random`` generator, which Dask's own threads in the worker also draw from
    (timings, worker choice) while a fit runs. Seeding it is therefore not
    enough: Keras gets a private generator, seeded for this fit.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)
        _private_keras_python_rng(seed)


def _keras_seed_module() -> Any:
    """Keras' module that holds its default seed source (None: Keras not imported)."""
    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.random import seed_generator
    except ImportError:  # pragma: no cover - other Keras layout
        return None
    return seed_generator


def _private_keras_python_rng(seed: int) -> None:
    seed_generator = _keras_seed_module()  # Keras is imported here: None means another layout
    if seed_generator is None:  # pragma: no cover
        logger.warning("sweep: cannot isolate Keras' default seeds; fits may not be exact")
        return
    if hasattr(seed_generator, "python_random"):
        seed_generator.python_random = random.Random(seed)


def clear_keras_session(state: WorkerState | None = None) -> None:
    """Drop Keras' global state and collect the fit's garbage.

    In a worker, the objects alive after TensorFlow's import (about half a
    million) and the survivors of every fit are frozen (:func:`gc.freeze`), so
    the per-fit collection only walks what the last fit made: ~0.01 s instead
    of the ~0.3 s a full collection of a TensorFlow process costs. Every
    ``full_gc_every`` fits the freeze is lifted for one full collection, so
    cyclic garbage among frozen objects (e.g. Dask's own task records) is
    freed too. Outside a worker: one full collection, as Keras does it.
    """
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session(free_memory=False)
    if state is None or not state.freeze_gc:
        gc.collect()
        return
    if state.full_gc_every and (state.fits + 1) % state.full_gc_every == 0:
        gc.unfreeze()
    elif not _worth_collecting():
        return
    _collect_and_freeze()


#: Python's automatic collections since sweep's last one (see _count_collections)
_automatic_collections = 0


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


def _gradient_registry() -> dict[str, Any] | None:
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def custom_gradient_keys() -> set[str] | None:
    """Names in TensorFlow's global gradient registry now (None: not imported)."""
    registry = _gradient_registry()
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
    registry = _gradient_registry()
    if registry is None:
        return 0
    stale = [k for k in registry if k not in before and str(k).startswith("CustomGradient-")]
    for key in stale:
        del registry[key]
    return len(stale)


def freeze_heap() -> int:
    """Collect garbage, then freeze everything alive; returns the frozen count."""
    _collect_and_freeze()
    return gc.get_freeze_count()


def resident_bytes() -> int:
    """Resident memory of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


@contextlib.contextmanager
def isolated_fit(seed: int | None, clean: bool = True) -> Iterator[dict[str, Any]]:
    """Run one fit: seed it, then clear Keras and maybe recycle the worker.

    Yields a dict that is filled with facts about the fit (process id, worker
    address, fit seconds, memory after the fit, how many fits this process has
    run). With ``clean=False`` the caller runs :func:`end_fit` itself, once it
    has dropped its own references to the fitted model (so the clean-up can
    free it).
    """
    facts: dict[str, Any] = {"pid": os.getpid(), "seed": seed}
    state = _worker_state()
    # outside a worker (tests, joblib's sequential fallback) leave Keras' default
    # seed source as it was: a later plain run in this process draws as without us
    keras_rng: Any = _keras_seed_module() if state is None else None
    saved = getattr(keras_rng, "python_random", None)
    if seed is not None:
        seed_everything(seed)
    if state is not None and state.purge_gradients:
        state.gradient_keys = custom_gradient_keys()
    facts["started"] = time.time()
    start = time.perf_counter()
    try:
        yield facts
    finally:
        facts["seconds"] = time.perf_counter() - start
        if clean:
            end_fit(facts)
        if keras_rng is not None and saved is not None:
            keras_rng.python_random = saved


def end_fit(facts: dict[str, Any]) -> dict[str, Any]:
    """After a fit: clear Keras, collect garbage, record memory, maybe recycle."""
    start = time.perf_counter()
    state = _worker_state()
    if state is not None and state.gradient_keys is not None:
        facts["purged_gradients"] = purge_custom_gradients(state.gradient_keys)
        state.gradient_keys = None
    clear_keras_session(state)
    facts["cleanup_seconds"] = time.perf_counter() - start
    facts["rss"] = resident_bytes()
    _after_fit(facts)
    facts["ended"] = time.time()
    return facts


def _after_fit(facts: dict[str, Any]) -> None:
    state = _worker_state()
    if state is None:
        return
    facts["worker"] = get_worker().address
    with state.lock:
        state.fits += 1
        facts["process_fits"] = state.fits
        reason = _recycle_reason(state, facts["rss"])
    if reason is not None:
        facts["recycle_due"] = reason
        facts["nanny"] = get_worker().nanny  # its restarted process registers under it


async def recycle_worker(dask_worker: Any, reason: str = "recycle") -> bool:
    """Restart this worker process without losing work (run through ``client.run``).

    First the scheduler retires the worker: results only it holds are copied to
    other workers, and its queued tasks go back to the scheduler as expected
    (not suspicious) departures. Then its nanny kills the process and starts a
    fresh one, which imports TensorFlow again and rejoins the cluster.
    """
    state: WorkerState | None = getattr(dask_worker, "_sweep_state", None)
    if state is None or state.recycling or dask_worker.nanny is None:
        return False
    state.recycling = True
    logger.info("sweep: recycling worker %s (%s)", dask_worker.address, reason)
    identity = await dask_worker.scheduler.identity(n_workers=-1)
    if len(identity.get("workers", {})) > 1:
        await dask_worker.scheduler.retire_workers(
            workers=[dask_worker.address],
            close_workers=False,
            remove=True,
            stimulus_id=f"sweep-recycle-{time.time()}",
        )
    # else: nowhere to move its results (Dask recomputes them). Retiring anyway
    # fails, and the scheduler's status messages then race the restart's close:
    # Dask logged "Invalid Worker.status transition" and "ConnectionPool is closed".
    dask_worker.loop.add_callback(_restart_by_nanny, dask_worker.nanny, reason)
    return True


async def _restart_by_nanny(nanny_address: str, reason: str) -> None:
    from distributed.core import rpc

    async with rpc(nanny_address) as nanny:
        await nanny.restart(reason=f"sweep-recycle: {reason}")


def _recycle_reason(state: WorkerState, rss: int) -> str | None:
    if state.recycle_after_fits and state.fits >= state.recycle_after_fits:
        return f"{state.fits} fits"
    if state.recycle_above_bytes and rss >= state.recycle_above_bytes:
        return f"resident memory {rss} bytes"
    return None


def worker_report(dask_worker: Any = None) -> dict[str, Any]:
    """Facts about a worker: pid, thread variables, thread counts TensorFlow reports.

    Run it with ``client.run(worker_report)``; Dask passes ``dask_worker``.
    """
    report: dict[str, Any] = {"pid": os.getpid()}
    report["environment"] = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    state = getattr(dask_worker, "_sweep_state", None)
    if state is not None:
        report["fits"] = state.fits
        report["tensorflow_threads"] = dict(state.tensorflow_threads)
        report["determinism"] = state.determinism
        report["frozen_objects"] = state.frozen_objects
    return report
