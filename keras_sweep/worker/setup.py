"""Worker set-up: one TensorFlow runtime per process, pinned threads, fit bookkeeping.

:class:`WorkerSetup` is a Dask worker plugin, registered once per client and
run on every worker that joins, restarted (recycled) workers included. It
imports TensorFlow once per worker (a warm pool), sets TensorFlow's own thread
pools (which it does not take from ``OMP_NUM_THREADS``; the thread variables
themselves are set before the process starts, see
:mod:`keras_sweep.clusters.environment`), turns on op determinism for seeded sweeps,
and keeps a :class:`WorkerState` that every fit in this process updates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from distributed import WorkerPlugin, get_worker
from distributed.diagnostics.plugin import NannyPlugin

from .._compat.distributed import patch_nanny_exit_report, worker_extension
from ..protocol import EXIT_TOPIC, JOB_TOPIC, THREAD_VARIABLES, cpu_kind, interop_threads
from . import logs
from .memory import freeze_heap

logger = logging.getLogger(__name__)

PLUGIN_NAME = "sweep-tensorflow-isolation"
#: where a worker keeps its :class:`WorkerState`
STATE_NAME = "sweep"


@dataclass
class WorkerState:
    """What one worker process knows about its own fits."""

    threads: int
    recycle_after_fits: int | None
    recycle_above_memory: int | None
    fits: int = 0
    recycling: bool = False
    freeze_gc: bool = False
    full_gc_every: int = 0
    frozen_objects: int = 0
    exclusive: bool = False
    purge_custom_gradients: bool = False
    keep_kernels: bool = True
    gradient_keys: set[str] | None = None
    tensorflow_threads: dict[str, int] = field(default_factory=dict)
    determinism: str = "not requested"
    #: paths the canary switched off in this process -> why (:mod:`keras_sweep.worker.canary`)
    canary_failed: dict[str, str] = field(default_factory=dict)
    #: the canary's seconds here, and whether its result came from the disk cache
    canary_seconds: float | None = None
    canary_cached: bool | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def pin_tensorflow_threads(threads: int) -> dict[str, int]:
    """Import TensorFlow and set its intra-op pool to ``threads``, its inter-op pool to
    ``threads`` but at least 2.

    Returns the counts TensorFlow reports afterwards. Setting them fails once
    TensorFlow has run an op; then the counts it already has are reported.
    """
    import tensorflow as tf

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(interop_threads(threads))
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


class ExitReporter(NannyPlugin):
    """Nanny plugin: report each exit of the worker process (its exit code: a signal
    number when negative, and the worker's memory limit) as a Dask event, so the
    driver can say why a worker died (:mod:`keras_sweep.driver.deaths`)."""

    name = "sweep-exit-reporter"

    def setup(self, nanny: Any) -> None:
        def report(exitcode: int, memory_limit: int | None) -> None:
            nanny.log_event(EXIT_TOPIC, {"worker": nanny.worker_address,
                                         "exitcode": exitcode,
                                         "memory_limit": memory_limit})

        patch_nanny_exit_report(nanny, report)


class WorkerSetup(WorkerPlugin):
    """Worker plugin: pin TensorFlow's threads and prepare fit bookkeeping.

    Parameters
    ----------
    threads : int
        Threads of each worker.
    recycle_after_fits, recycle_above_memory : int, optional
        When a worker asks to be restarted (see :mod:`keras_sweep.worker.fit`).
    preload_tensorflow : bool
        Import TensorFlow (or the Keras backend) when the worker starts.
    deterministic : bool
        Turn on TensorFlow op determinism (seeded sweeps only).
    freeze_gc, full_gc_every, purge_custom_gradients, keep_kernels :
        Memory hygiene after each fit (see :mod:`keras_sweep.worker.memory`).
    """

    name = PLUGIN_NAME
    idempotent = True

    def __init__(
        self,
        threads: int = 1,
        recycle_after_fits: int | None = None,
        recycle_above_memory: int | None = None,
        preload_tensorflow: bool = True,
        deterministic: bool = True,
        freeze_gc: bool = True,
        full_gc_every: int = 100,
        purge_custom_gradients: bool = True,
        keep_kernels: bool = True,
        canary: bool = False,
    ) -> None:
        self.threads = threads
        self.recycle_after_fits = recycle_after_fits
        self.recycle_above_memory = recycle_above_memory
        self.preload_tensorflow = preload_tensorflow
        self.deterministic = deterministic
        self.freeze_gc = freeze_gc
        self.full_gc_every = full_gc_every
        self.purge_custom_gradients = purge_custom_gradients
        self.keep_kernels = keep_kernels
        self.canary = canary

    def setup(self, worker: Any) -> None:
        ignore_interrupts()
        state = WorkerState(self.threads, self.recycle_after_fits, self.recycle_above_memory)
        if self.preload_tensorflow and _uses_tensorflow():
            state.tensorflow_threads = pin_tensorflow_threads(self.threads)
            if self.deterministic:
                logs.install()  # before the first fit: drop TensorFlow's known false alarm
                state.determinism = enable_determinism()
            if self.canary:  # the fast paths prove themselves before the first fit
                from . import canary

                state.canary_failed, state.canary_seconds, state.canary_cached = \
                    canary.checked(self.threads)
        elif self.preload_tensorflow:  # another Keras backend (jax): import it now
            import keras  # noqa: F401

            state.determinism = f"{os.environ.get('KERAS_BACKEND')}: cpu (XLA, seeded)"
        # one fit at a time in this process: its clean-up may touch process-wide state
        state.exclusive = getattr(getattr(worker, "state", None), "nthreads", 1) == 1
        state.purge_custom_gradients = self.purge_custom_gradients and state.exclusive
        state.keep_kernels = self.keep_kernels
        if self.freeze_gc and state.exclusive:  # TensorFlow's import-time objects
            state.freeze_gc, state.full_gc_every = True, self.full_gc_every
            state.frozen_objects = freeze_heap()
        worker_extension(worker, STATE_NAME, state)
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            worker.log_event(JOB_TOPIC, {"worker": worker.address, "job": job})


def ignore_interrupts() -> bool:
    """Ignore SIGINT in this worker process; True if it could (main thread only).

    Ctrl-C in a terminal reaches every process of the foreground group, the
    local workers included. The driver handles it (it cancels the fits and
    closes the cluster); a worker that took it too would die mid-fit with a
    ``KeyboardInterrupt`` traceback on the user's terminal, and its fits would
    look lost.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return True


def _uses_tensorflow() -> bool:
    return os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"


def state_of(dask_worker: Any) -> WorkerState | None:
    """The :class:`WorkerState` of a worker (None: set-up not run yet)."""
    state = worker_extension(dask_worker, STATE_NAME)
    return state if isinstance(state, WorkerState) else None


def current_state() -> WorkerState | None:
    """The state of the worker running this code (None: not inside a Dask task)."""
    try:
        return state_of(get_worker())
    except ValueError:  # not inside a Dask task (e.g. joblib's sequential fallback)
        return None


def setup_done(dask_worker: Any) -> bool:
    """Whether this worker has run its set-up (run it through ``client.run``).

    The set-up imports TensorFlow on the worker's event loop, so a worker that
    has just registered may not answer for seconds; closing it then makes Dask
    log errors.
    """
    return state_of(dask_worker) is not None


def worker_report(dask_worker: Any = None) -> dict[str, Any]:
    """Facts about a worker: pid, CPU kind, thread variables, TensorFlow's thread counts, canary.

    Run it with ``client.run(worker_report)``; Dask passes ``dask_worker``.
    """
    report: dict[str, Any] = {"pid": os.getpid(), "cpu": cpu_kind()}
    report["environment"] = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    state = state_of(dask_worker)
    if state is not None:
        report["fits"] = state.fits
        report["tensorflow_threads"] = dict(state.tensorflow_threads)
        report["determinism"] = state.determinism
        report["frozen_objects"] = state.frozen_objects
        report["canary"] = {"failed": dict(state.canary_failed),
                            "seconds": state.canary_seconds, "cached": state.canary_cached}
    return report

