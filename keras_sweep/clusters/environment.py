"""What a worker process starts with: its environment and the scheduler's settings.

Computed on the driver and handed to every backend before it spawns workers: a
worker imports NumPy and TensorFlow (which read the thread variables) before
any later setting could apply.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config

from ..config import Settings
from ..protocol import THREAD_VARIABLES, interop_threads


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
    env["TF_NUM_INTEROP_THREADS"] = str(interop_threads(threads))
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


def settings_environment(settings: Settings) -> dict[str, str]:
    """:func:`worker_environment` of ``settings``."""
    return worker_environment(settings.threads_per_worker, settings.keras_backend)


def scheduler_config(settings: Settings) -> dict[str, Any]:
    """Dask settings the scheduler must start with."""
    return {
        "distributed.scheduler.allowed-failures": settings.max_retries,
        # a worker holds only the fits it runs, so a worker that dies takes no
        # queued (innocent) fit's retries with it
        "distributed.scheduler.worker-saturation": 1.0,
        # joblib hands fits out a few at a time: between two, a worker may hold the
        # search's data with no fit waiting for it, and the active memory manager's
        # ReduceReplicas would drop that copy, to be fetched again for the next fit
        # (retiring a worker for a recycle still uses a manager of its own)
        "distributed.scheduler.active-memory-manager.start": False,
        # workers started by a nanny inherit this config (see worker_environment)
        "distributed.worker.profile.enabled": False,
    }


def nanny_config(settings: Settings) -> dict[str, Any]:
    """:func:`scheduler_config` plus the environment every nanny gives its workers.

    A nanny hands its own ``dask.config`` (taken when it starts) to every
    worker it starts, restarts included, and that overrides the worker's
    environment variables: the worker environment goes in as pre-spawn
    variables, which are set before the worker process imports anything.
    """
    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                 **settings_environment(settings)}
    return {"distributed.nanny.pre-spawn-environ": pre_spawn, **scheduler_config(settings)}


def restore_environ(saved: dict[str, str]) -> None:
    """Undo what starting (or restarting) workers wrote into this process's environment."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
