"""Worker processes forked from a server that has imported TensorFlow once.

Dask starts a worker process with multiprocessing's *spawn* method by default: a
fresh interpreter that imports NumPy, TensorFlow, Keras and scikit-learn again
(11-12 s of CPU on a 2-core VM, 2026-12-07), for every worker, every recycled
worker and every worker that replaces a dead one. With the *forkserver* method a
server process imports them once; each worker is then a fresh ``fork()`` of it:
its own process (as isolated as a spawned one: nothing of a previous worker's
TensorFlow state is in it), started in about a second.

Safe because the server only imports (:mod:`keras_sweep.worker.preload`):
TensorFlow creates its runtime (thread pools, the eager context) on first use,
which happens in the worker, after the fork; ``tests/test_forkserver.py`` checks
that a forked worker's fit equals a spawned interpreter's, bit for bit. Values
read at import time (the thread variables, ``KERAS_BACKEND``,
``TF_ENABLE_ONEDNN_OPTS``, ``PYTHONHASHSEED``) are the server's, so the server
starts with exactly the environment the workers would have been spawned with,
and serves only clusters that ask for that same environment; any other (a second
cluster in this process with other thread counts or another Keras backend) gets
spawned workers. Python reseeds :mod:`random` in a forked child; sweep seeds
every fit itself.

``sweep.worker.fork-workers: false`` turns it off.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from typing import Any

from .._compat.multiprocessing import forkserver_running
from .environment import restore_environ

logger = logging.getLogger(__name__)

#: what the server imports: everything a worker imports before its first fit
PRELOAD = ["distributed", "numpy", "keras_sweep.worker.preload"]

_lock = threading.Lock()
#: the environment the server was started with (None: not started by sweep)
_started_with: dict[str, str] | None = None


def start_method(environment: dict[str, str]) -> str:
    """``"forkserver"`` when this process's fork server runs (or now starts) with
    ``environment`` added to ours; else ``"spawn"``.

    Parameters
    ----------
    environment : dict of str to str
        Variables a worker process must start with (the nanny's pre-spawn ones).
    """
    global _started_with
    wanted = {**os.environ, **environment}
    with _lock:
        if _started_with is not None and forkserver_running():
            changed = _changed(_started_with, wanted)
            if not changed:
                return "forkserver"
            logger.info("sweep: workers spawned: this process's fork server started with "
                        "other values of %s", ", ".join(sorted(changed)))
            return "spawn"
        if forkserver_running():
            return "spawn"  # someone else's server: its environment is unknown
        saved = dict(os.environ)
        try:
            os.environ.update(environment)
            context: Any = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            from multiprocessing import forkserver
            forkserver.ensure_running()
        except OSError as exc:
            logger.warning("sweep: workers spawned: could not start a fork server (%s)", exc)
            return "spawn"
        finally:
            restore_environ(saved)
        _started_with = wanted
        return "forkserver"


#: variables TensorFlow and Keras set in the process that imports them (2.21 / 3.15):
#: set in this process after the server started, the server has them too
IMPORT_SET = ("TF2_BEHAVIOR", "TPU_", "HDF5_PLUGIN_PATH", "KMP_",
              "ENABLE_RUNTIME_UPTIME_TELEMETRY")


def _changed(started: dict[str, str], wanted: dict[str, str]) -> set[str]:
    """Variables whose values differ (an import's own added ones aside)."""
    keys = {k for k in set(started) | set(wanted) if started.get(k) != wanted.get(k)}
    return {k for k in keys if not (k not in started and k.startswith(IMPORT_SET))}
