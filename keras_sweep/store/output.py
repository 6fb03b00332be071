"""The output folder: writable before anything starts, and used by one sweep at a time.

:func:`claim` creates the folder, proves it can be written (a test file, so a
read-only mount, an immutable folder or a full disk show up now, not after the
sweep), and takes an exclusive ``flock`` on ``.sweep.lock`` in it. The lock
belongs to the process: it ends with it, even after ``kill -9``, so a crashed run
never leaves the folder stuck; a second sweep on a folder in use is refused with
the other run's PID, host and start time. (``flock`` works on local disks and on
NFSv4 and Lustre mounts with locking enabled, as HPC home directories have.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import OutputBusyError, SpecError

LOCK_NAME = ".sweep.lock"


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, or raise a :class:`SpecError` that says why."""
    probe = folder / f".sweep-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"sweep")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError("output", str(folder), f"the folder cannot be created or written "
                        f"({reason})", "choose a folder you can write: --output DIR, or "
                        "output: DIR in the spec") from None


@contextlib.contextmanager
def claim(folder: str | Path) -> Iterator[Path]:
    """Within the block this process is the only sweep writing to ``folder``.

    Raises
    ------
    SpecError
        The folder cannot be created or written (exit 2).
    OutputBusyError
        Another sweep holds it (exit 2); the message names its PID and host.
    """
    folder = Path(folder)
    check_writable(folder)
    path = folder / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise OutputBusyError(folder, _owner(handle.read())) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        yield folder
    finally:
        handle.close()  # releases the lock


def _owner(text: str) -> dict[str, object]:
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}
