"""Cluster backends: small factories over real Dask cluster classes, chosen by name.

Each backend is a module of this package with three names:

- ``OPTIONS``: the ``cluster:`` keys it accepts besides :data:`COMMON_KEYS`;
- ``check(options)``: validates them without starting anything (raises
  :class:`~keras_sweep.exceptions.SpecError` naming the field and the fix); spec
  validation and :func:`start` both call it;
- ``start(settings)``: starts (or finds) the cluster and returns :class:`Started`;
- optionally ``prestart(settings)``: begins what :func:`start` will need (the local
  backend's fork server imports TensorFlow) while the driver still prepares.

:data:`BACKENDS` maps names to modules, imported on first use:

- :mod:`keras_sweep.clusters.local`: worker processes on this machine;
- :mod:`keras_sweep.clusters.attach`: a scheduler someone else runs;
- :mod:`keras_sweep.clusters.slurm`: SLURM jobs (and ``sweep batch``);
- :mod:`keras_sweep.clusters.ssh`: SSH hosts, with :mod:`keras_sweep.clusters.tls`;
- :mod:`keras_sweep.clusters.ec2`: AWS instances (and ``sweep cloud``).

Beside them, :mod:`keras_sweep.clusters.environment` (what a worker process starts
with), :mod:`keras_sweep.clusters.forkserver` (local workers forked from a server that
imported TensorFlow once), :mod:`keras_sweep.clusters.versions` (the versions driver and
workers share) and :mod:`keras_sweep.clusters.expiry` (a cluster that ends stops the sweep in time).
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..config import Settings
from ..exceptions import ClusterError, SpecError

logger = logging.getLogger(__name__)

#: backend name -> the module of this package that implements it
BACKENDS: dict[str, str] = {
    "local": ".local",
    "attach": ".attach",
    "slurm": ".slurm.cluster",
    "ssh": ".ssh",
    "ec2": ".ec2.cluster",
}

#: ``cluster:`` keys every backend accepts
COMMON_KEYS = frozenset({"backend", "workers", "min_workers", "threads_per_worker",
                         "recycle_after_fits", "recycle_above_memory", "keras_backend"})


@dataclass
class Started:
    """A cluster a backend started (or ``None``) and the address to connect to.

    ``expected_workers`` is how many workers to wait for before the first fit
    (``None``: the requested number, or 1 when attaching); ``max_workers`` how
    many may work at once; ``diagnose`` explains (job states, logs) why workers
    did not arrive; ``cleanup`` runs after the cluster is closed.
    """

    cluster: Any
    address: str
    security: Any = None
    expected_workers: int | None = None
    max_workers: int | None = None
    diagnose: Callable[[], str] | None = None
    #: dask settings to keep in force while the cluster runs: a nanny that
    #: replaces a recycled worker later takes its pre-spawn variables and its
    #: workers' config from this process's config at that time
    config: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[], None] | None = None
    #: workers that do not come from this machine's Python (an image): once they
    #: have connected, their package versions are compared with ours; the value
    #: says how to install a package there (``"... pip install"``)
    check_versions: str | None = None
    #: when the cluster stops working (epoch seconds): its TLS certificates
    #: expire, its instances' hours end; the session stops the sweep cleanly
    #: ``sweep.cluster.expiry-margin`` before (:class:`~keras_sweep.exceptions.ClusterExpired`)
    expires: float | None = None
    #: what ends then, for the message ("its TLS certificates expire")
    expiry: str = ""
    #: a new cluster cures it (fresh certificates): ``sweep run`` starts one and resumes
    renewable: bool = False
    #: why a worker's batch job ended, asked of the batch system (its job id ->
    #: e.g. "its SLURM job 12 hit its time limit"; None: not known), for workers
    #: that vanish without an exit report
    explain_job: Callable[[str], str | None] | None = None


def known_backends() -> list[str]:
    """Names of every backend."""
    return sorted(BACKENDS)


def backend(name: str) -> ModuleType:
    """The module of backend ``name``; raises :class:`SpecError` for an unknown name."""
    if name not in BACKENDS:
        raise SpecError("cluster.backend", name, "unknown cluster backend",
                        f"use one of: {', '.join(known_backends())}")
    return importlib.import_module(BACKENDS[name], __name__)


def options(name: str) -> frozenset[str]:
    """``cluster:`` keys backend ``name`` accepts besides :data:`COMMON_KEYS`."""
    return frozenset(backend(name).OPTIONS)


def owners(key: str) -> list[str]:
    """Backends that accept ``key`` as their own option."""
    return [name for name in known_backends() if key in options(name)]


def check(settings: Settings) -> None:
    """Validate the backend's options of ``settings``, starting nothing."""
    backend(settings.backend).check(dict(settings.options))


def start(settings: Settings) -> Started:
    """Check the options, then start (or find) the cluster of ``settings.backend``."""
    if settings.backend not in BACKENDS:
        raise ClusterError(f"unknown cluster backend {settings.backend!r}.\n"
                           f"  Fix: use one of: {', '.join(known_backends())}")
    module = backend(settings.backend)
    module.check(dict(settings.options))
    started = module.start(settings)
    if not isinstance(started, Started):  # pragma: no cover - a backend's bug
        raise ClusterError(f"backend {settings.backend!r} returned {started!r}")
    return started


def prestart(settings: Settings) -> None:
    """Let the backend begin what its start will need, if it has anything to begin;
    a failure only costs the head start (it is logged)."""
    try:
        hook = getattr(backend(settings.backend), "prestart", None)
        if hook is not None:
            hook(settings)
    except Exception as exc:  # the start itself reports what is wrong
        logger.info("sweep: no head start for the %s cluster: %s", settings.backend, exc)


def default_workers() -> int:
    """One worker per CPU core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_command(args: list[str], *, fix: str, check: bool = True, timeout: float | None = 30,
                cwd: Any = None) -> subprocess.CompletedProcess[str]:
    """Run a command (``sbatch``, ``sinfo``, ...), logged, its output captured.

    Raises :class:`ClusterError` with the command, its exit code, its stderr and
    ``fix`` when it cannot run, runs past ``timeout`` seconds, or (with
    ``check``) exits non-zero.
    """
    command = shlex.join(args)
    logger.info("sweep: running %s", command)
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{command}` could not run: {exc}\n  Fix: {fix}") from exc
    logger.debug("sweep: %s exited with %d", command, proc.returncode)
    if check and proc.returncode != 0:
        raise ClusterError(f"`{command}` failed with exit code {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}\n  Fix: {fix}")
    return proc
