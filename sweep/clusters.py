"""Cluster backends: small factories over real Dask cluster classes, by name.

Each factory takes resolved settings and returns a started Dask cluster object
(or ``None`` with an address, when attaching to a scheduler someone else runs).
New backends register themselves in :data:`BACKENDS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.config
from distributed import LocalCluster

from .config import setting
from .exceptions import ClusterError
from .isolation import worker_environment

logger = logging.getLogger(__name__)


@dataclass
class ClusterSettings:
    """Resolved settings every backend understands (plus backend extras)."""

    workers: int
    threads_per_worker: int
    keras_backend: str
    max_retries: int = 2
    #: workers the user asked for (``None``: the backend's default)
    requested_workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """Dask settings the scheduler must start with."""
        return {
            "distributed.scheduler.allowed-failures": self.max_retries,
            # a worker holds only the fits it runs, so a worker that dies takes no
            # queued (innocent) fit's retries with it
            "distributed.scheduler.worker-saturation": 1.0,
            # local workers inherit this config from their nanny (see worker_environment)
            "distributed.worker.profile.enabled": False,
        }

    @property
    def environment(self) -> dict[str, str]:
        return worker_environment(self.threads_per_worker, self.keras_backend)


@dataclass
class Started:
    """A cluster a backend started (or ``None``) and the address to connect to.

    ``expected_workers`` is how many workers to wait for before the first fit
    (``None``: the requested number, or 1 when attaching); ``max_workers`` how
    many may work at once; ``diagnose`` explains (job states, logs) why workers
    did not arrive.
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


Factory = Callable[[ClusterSettings], Started]
BACKENDS: dict[str, Factory] = {}
#: per backend: the ``cluster:`` keys it accepts besides :data:`COMMON_KEYS`
OPTIONS: dict[str, frozenset[str]] = {}
#: per backend: a check of its options that runs at spec validation (no cluster)
CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {}
#: ``cluster:`` keys every backend accepts
COMMON_KEYS = frozenset({"backend", "workers", "threads_per_worker", "recycle_after_fits",
                         "recycle_above_memory", "keras_backend"})


def register(name: str, options: Any = (),
             check: Callable[[dict[str, Any]], None] | None = None
             ) -> Callable[[Factory], Factory]:
    """Decorator: register a cluster factory under ``name``.

    Parameters
    ----------
    name : str
        The backend's name in specs and on the command line.
    options : iterable of str
        ``cluster:`` keys this backend accepts besides the common ones.
    check : callable, optional
        Validates a spec's backend options before any cluster starts; raises
        :class:`~sweep.exceptions.SpecError` naming the field and the fix.
    """

    def decorate(factory: Factory) -> Factory:
        BACKENDS[name] = factory
        OPTIONS[name] = frozenset(options)
        if check is not None:
            CHECKS[name] = check
        return factory

    return decorate


def default_workers() -> int:
    """One worker per CPU core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@register("local", options={"memory_limit", "dashboard_address", "host"})
def local(settings: ClusterSettings) -> Started:
    """Worker processes on this machine, listening on loopback only."""
    env = settings.environment
    # Before the worker process starts: a spawned worker first re-imports the user's
    # main module, which may import numpy, TensorFlow or Keras (reading the thread
    # variables and KERAS_BACKEND) before any later setting could apply. The nanny
    # writes these into this process's os.environ too; sweep.cluster() restores it.
    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **env}
    extra = settings.extra
    try:
        # the nanny hands its own dask.config (taken now) to every worker it starts,
        # restarts included, and that overrides the worker's environment variables
        config = {"distributed.nanny.pre-spawn-environ": pre_spawn,
                  "distributed.worker.profile.enabled": False,
                  **settings.scheduler_config}
        with dask.config.set(config):
            cluster = LocalCluster(
                n_workers=settings.workers,
                threads_per_worker=settings.threads_per_worker,
                processes=True,
                host=extra.get("host", setting("cluster.host")),
                dashboard_address=extra.get(
                    "dashboard_address", setting("cluster.dashboard-address")
                ),
                memory_limit=extra.get("memory_limit", setting("cluster.memory-limit")),
                silence_logs=logging.ERROR,
                env=env,
            )
    except Exception as exc:  # translate at the edge
        raise ClusterError(
            f"could not start a local Dask cluster with {settings.workers} worker(s): {exc}\n"
            "  Fix: use fewer workers (cluster: {workers: 2}) or check that loopback "
            "ports can be opened."
        ) from exc
    return Started(cluster, cluster.scheduler_address, config=config)


@register("attach", options={"address", "scheduler_file", "tls", "tls_ca", "tls_cert",
                             "tls_key"})
def attach(settings: ClusterSettings) -> Started:
    """Connect to a scheduler that is already running (``address`` setting)."""
    address = settings.extra.get("address")
    scheduler_file = settings.extra.get("scheduler_file")
    if scheduler_file and not address:
        address = _read_scheduler_file(str(scheduler_file))
    if not address:
        raise ClusterError(
            "the 'attach' backend needs a scheduler address.\n"
            "  Fix: sweep run SPEC --scheduler tcp://HOST:8786 "
            "(or cluster: {backend: attach, address: tcp://HOST:8786}, or "
            "scheduler_file: PATH written by `dask scheduler --scheduler-file PATH`)"
        )
    return Started(None, str(address), attach_security(str(address), settings.extra))


def attach_security(address: str, extra: dict[str, Any]) -> Any:
    """``Security`` for attaching: TLS files if given; plain TCP off-host only if asked."""
    files = [str(extra.get(k) or "") for k in ("tls_ca", "tls_cert", "tls_key")]
    if any(files):
        if not all(files):
            raise ClusterError(
                "attaching with TLS needs all three files: the CA certificate, the client "
                "certificate and its key.\n  Fix: --tls-ca ca.pem --tls-cert client.pem "
                "--tls-key client-key.pem (or cluster: {tls_ca: ..., tls_cert: ..., "
                "tls_key: ...})")
        from .tls import security

        return security(*files)
    if address.startswith("tls://"):
        raise ClusterError(
            f"the scheduler {address} speaks TLS but no certificate was given.\n"
            "  Fix: --tls-ca ca.pem --tls-cert client.pem --tls-key client-key.pem")
    if not _loopback(address):
        _refuse_plain_tcp(address, extra.get("tls"))
    return None


def _loopback(address: str) -> bool:
    from distributed.comm import get_address_host

    host = get_address_host(address)
    return host in ("localhost", "::1") or host.startswith("127.")


def _refuse_plain_tcp(address: str, tls: Any) -> None:
    if tls is not False:
        raise ClusterError(
            f"{address} is plain TCP to another machine: anyone who reaches that port can "
            "run code on the cluster, and sweep would send its pickles unencrypted.\n"
            "  Fix: start the scheduler and workers with TLS (dask scheduler --tls-ca-file "
            "ca.pem --tls-cert scheduler.pem --tls-key scheduler-key.pem) and attach with "
            "--scheduler tls://HOST:8786 --tls-ca ... --tls-cert ... --tls-key ...; only on an "
            "isolated network: --insecure (cluster: {tls: false})")
    logger.warning("sweep: PLAIN TCP to %s (tls: false): traffic is unencrypted and "
                   "anyone who reaches the scheduler can run code on it", address)


def _read_scheduler_file(path: str) -> str:
    """Address in a Dask scheduler file, waiting for the scheduler to write it."""
    import json
    import time

    timeout = float(setting("cluster.startup-timeout"))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as fh:
                return str(json.load(fh)["address"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"no Dask scheduler wrote its address to {path} within {timeout:.0f} s.\n"
                    "  Fix: start `dask scheduler --scheduler-file PATH` first (the "
                    "one-allocation SLURM script does), or check the path is on a "
                    "filesystem this machine shares with the scheduler."
                ) from None
            time.sleep(0.5)


#: backends in modules of their own, imported on first use
PLUGINS = ("sweep.slurm", "sweep.ssh", "sweep.cloud")


def _load_plugins() -> None:
    import importlib

    for module in PLUGINS:
        importlib.import_module(module)


def known_backends() -> list[str]:
    """Names of every backend (imports the backend modules)."""
    _load_plugins()
    return sorted(BACKENDS)


def start(name: str, settings: ClusterSettings) -> Started:
    """Start (or find) the cluster of backend ``name``."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        _load_plugins()
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ClusterError(
            f"unknown cluster backend {name!r}.\n  Fix: use one of: {known}"
        ) from None
    return factory(settings)

