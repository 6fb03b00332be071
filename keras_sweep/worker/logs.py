"""Drop TensorFlow log lines known to be harmless from a worker's stderr.

With op determinism on (seeded sweeps), TensorFlow rewrites Keras' ``tf.data``
input pipeline for NumPy arrays (``make_deterministic``): the parallel map that
gathers each batch becomes a plain map but keeps its ``use_unbounded_threadpool``
attribute, which TensorFlow 2.21's plain map does not define. TensorFlow then
logs, at ERROR level, from C++, up to once every 5 s per process::

    E0000 ... NodeDef mentions attribute use_unbounded_threadpool which is not in
    the op definition ...

Nothing fails; a user reads it as a crash. The line comes from C++ straight to
file descriptor 2 (no Python logger to filter), so :func:`install` routes the
worker's fd 2 through ``grep -v`` for exactly these lines; every other byte
passes unchanged, and since ``grep`` is a process of its own, what the worker
writes just before it dies still comes out. ``TF_CPP_MIN_LOG_LEVEL=3`` would
hide every C++ error instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: a line containing one of these is dropped
HARMLESS = (
    "NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
    # absl's preamble to the first C++ log line of a process
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
)

_installed = False
_filter: subprocess.Popen[bytes] | None = None  # kept: no "still running" warning at exit


def install(patterns: tuple[str, ...] = HARMLESS) -> bool:
    """Route this process's stderr through a filter of ``patterns`` (once; POSIX only).

    Returns whether the filter is in place (``grep`` missing: nothing changes).
    """
    global _installed, _filter
    grep = shutil.which("grep")
    if _installed or grep is None or os.name != "posix":
        return _installed
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    args = [grep, "-v", "-F", "--line-buffered", *(f"-e{p}" for p in patterns)]
    # its own session: Ctrl-C in the terminal does not stop it before the worker
    # has written its last words; it ends when the worker's end of the pipe closes
    _filter = subprocess.Popen(args, stdin=read_end, stdout=original, stderr=original,
                               close_fds=True, start_new_session=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.close(original)
    _installed = True
    return True
