"""A Dask worker preload that SIGKILLs its own worker process at one moment of start-up.

Configured through Dask's config, which a nanny hands to every worker it starts:
``sweep-test.start-faults`` = ``{"counter": PATH, "kills": N, "moment": M}``. Each worker
start takes the next number from the file ``counter``; the first ``N`` starts die:

- ``"start"``: in ``dask_setup``, while the worker starts, before it joins the scheduler;
- ``"setup"``: once sweep's worker set-up plugin is being installed on it (a thread
  watches ``Worker.plugins``), i.e. while the driver registers its plugins.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from typing import Any

import dask.config

PLUGIN = "sweep-tensorflow-isolation"


def _take_number(path: str) -> int:
    with open(path, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        number = len(file.read().splitlines()) + 1
        file.write(f"{os.getpid()}\n")
        return number


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def dask_setup(worker: Any) -> None:
    faults = dask.config.get("sweep-test.start-faults", default=None)
    if not faults or _take_number(faults["counter"]) > int(faults["kills"]):
        return
    if faults["moment"] == "start":
        _die()

    def watch() -> None:
        deadline = time.monotonic() + 300
        while PLUGIN not in worker.plugins and time.monotonic() < deadline:
            time.sleep(0.005)
        _die()

    threading.Thread(target=watch, daemon=True).start()
