"""Touches of the standard library's multiprocessing internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

from .registry import touch


@touch("python", ">=3.10, tested 3.11.7",
       "multiprocessing.forkserver._forkserver._forkserver_pid: the process's fork "
       "server, None until ensure_running() starts it")
def forkserver_running() -> bool:
    """True when this process has started its multiprocessing fork server."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None) is not None
