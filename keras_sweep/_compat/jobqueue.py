"""Touches of dask-jobqueue's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import threading
from typing import Any

from .registry import touch


@touch("dask-jobqueue", ">=0.8.5, tested 0.9.0",
       "dask_jobqueue.runner installs signal.signal(SIGINT, lambda *_: sys.exit()) "
       "when imported")
def import_slurm_cluster() -> Any:
    """``dask_jobqueue.SLURMCluster``, without the SIGINT handler its import installs.

    That handler turns Ctrl-C into ``sys.exit()`` (exit status 0, clean-up
    skipped); the previous handler is put back.
    """
    import signal

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    from dask_jobqueue import SLURMCluster

    if main:
        if previous is None or getattr(previous, "__module__", "") == "dask_jobqueue.runner":
            previous = signal.default_int_handler
        signal.signal(signal.SIGINT, previous)
    return SLURMCluster
