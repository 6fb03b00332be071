"""What the driver and its workers agree on: the ways a fit may train, the event topics,
the threads a worker runs with, the traces it keeps, what a worker's exit code means,
which CPU kind a fit's last bits depend on.

Both sides import this module; it imports neither side (only, for type
checking, the continuation a fit path names).
"""

from __future__ import annotations

import functools
import platform
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker.training.continuation import Continuation


#: the event topic a nanny reports its worker process's exit under
EXIT_TOPIC = "sweep-worker-exit"
#: a worker's batch job (SLURM's ``SLURM_JOB_ID``), announced when it starts, so the
#: driver can ask the batch system why the job ended if the worker vanishes
JOB_TOPIC = "sweep-worker-job"


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


def interop_threads(threads: int) -> int:
    """Threads of TensorFlow's inter-op pool in a worker of ``threads`` threads.

    Two at least: a traced epoch on TensorFlow's single-threaded executor holds one
    pool thread while another runs its step (:mod:`keras_sweep.worker.training.executor`); they
    take turns, so a one-thread worker still computes on one core.
    """
    return max(2, threads)


#: templates kept per worker thread (least recently used dropped first); the driver's
#: placement counts the kinds a worker holds with the same number
MAX_TEMPLATES = 8


@dataclass(frozen=True)
class TrainingPaths:
    """How fits train: the paths they may take, and a diverging loss (see keras_sweep.config)."""

    #: Keras' fit with whole epochs per execution, or better (``sweep.fit.fast-path``)
    fast: bool = True
    #: sweep's compiled loop where it is exact (``sweep.fit.compiled-loop``)
    compiled_loop: bool = True
    #: XLA-compile the loop for models without random layers (``sweep.fit.xla``);
    #: not bitwise equal to Keras' fit
    xla: bool = False
    #: a loss that becomes NaN or infinite fails the fit at that epoch
    #: (``sweep.fit.fail-on-nan``, :mod:`keras_sweep.worker.training.nonfinite`)
    fail_on_nan: bool = True
    #: fits of one kind of model reuse one traced loop (``sweep.fit.share-traces``,
    #: :mod:`keras_sweep.worker.training.traces`); bitwise the same
    share_traces: bool = True
    #: a fit of a candidate and fold continues from a shorter fit of theirs on the
    #: compiled loop (``sweep.fit.continue-training``,
    #: :mod:`keras_sweep.worker.training.continuation`); bitwise the same
    continue_training: bool = True
    #: a template's epoch runs on TensorFlow's single-threaded executor
    #: (``sweep.fit.single-threaded-epochs``, :mod:`keras_sweep.worker.training.executor`)
    single_threaded_epochs: bool = True
    #: there, Keras' train step is inlined in the epoch's loop rather than called
    #: (``sweep.fit.inline-steps``); bitwise the same either way
    inline_steps: bool = True


@dataclass
class FitPath:
    """Which way one fit trained, for its :class:`~keras_sweep.store.records.FitRecord`."""

    #: "compiled loop", "compiled loop + XLA" (sweep's loop,
    #: :mod:`keras_sweep.worker.training.loop`), "fast path" (Keras' fit, whole epochs
    #: per execution) or "keras" (Keras' fit as it comes)
    name: str = "keras"
    #: why the fit did not take the fastest path asked for (None: it did)
    fallback: str | None = None
    #: seconds of tracing: making a new template (rebuilding the model, tracing
    #: its epoch), then the first epoch's time beyond a later one's (instantiating
    #: the trace, and with XLA compiling); None: not the compiled loop
    trace_seconds: float | None = None
    #: the compiled loop's trace: "new" (made for this fit's kind of model, then
    #: kept), "reused" (made by an earlier fit of the same kind) or "own (why)"
    #: (traced for this fit alone); None: not the compiled loop
    trace: str | None = None
    #: short name of the kind of model whose template trained the fit (None: none)
    kind: str | None = None
    #: what the fit continues from and keeps for a longer fit of its lineage
    #: (:mod:`keras_sweep.worker.training.continuation`); None: neither
    continuation: Continuation | None = None

    @property
    def fast(self) -> bool:
        """Whether a fast path (the compiled loop or whole epochs) trained it."""
        return self.name != "keras"


#: the default choice: the fastest path that is bitwise equal to Keras' fit
FASTEST = TrainingPaths()
#: Keras' fit as it comes (one call per batch)
KERAS_FIT = TrainingPaths(fast=False, fail_on_nan=False)


#: what a signal usually means for a worker process
SIGNAL_HINTS = {
    signal.SIGKILL: "killed from outside: the kernel's out-of-memory killer, kill -9, or "
                    "the batch system",
    signal.SIGTERM: "terminated: its batch job ended (walltime, scancel, preemption) or "
                    "kill",
    signal.SIGSEGV: "crashed (segmentation fault) in native code",
    signal.SIGABRT: "aborted by native code (a failed check in TensorFlow or a library)",
    signal.SIGBUS: "crashed (bus error): memory-mapped data or shared memory gone",
}


def exit_reason(exitcode: int) -> str:
    """``killed by signal 9 (SIGKILL: ...)`` or ``exited with status 3``."""
    if exitcode >= 0:
        return f"exited with status {exitcode}"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    hint = SIGNAL_HINTS.get(signal.Signals(number))
    return f"killed by signal {number} ({name}" + (f": {hint})" if hint else ")")


#: vector instruction sets whose presence changes which kernels oneDNN and Eigen run,
#: widest first (``/proc/cpuinfo`` flag -> name)
INSTRUCTION_SETS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"))


@functools.cache
def cpu_kind() -> str:
    """This machine's CPU as far as a fit's last bits go: its widest vector instruction
    set, then its model, e.g. ``"avx2 (AMD EPYC 7B13)"``; the part before `` (`` is
    what two hosts must share for bitwise-equal folds."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name":
                    model = value.strip()
    except OSError:  # not Linux
        pass
    isa = next((name for flag, name in INSTRUCTION_SETS if flag in flags),
               platform.machine() or "unknown")
    return f"{isa} ({model})"
