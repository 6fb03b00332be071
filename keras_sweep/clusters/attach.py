"""The ``attach`` backend: connect to a Dask scheduler someone else runs.

The address comes from ``address`` or from a scheduler file (``dask scheduler
--scheduler-file PATH``, as the one-allocation SLURM script writes it). Off this
machine, plain TCP is refused unless the user says ``tls: false``: a Dask
scheduler runs whatever pickled code a client sends it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings
from ..exceptions import ClusterError, SpecError
from . import Started

logger = logging.getLogger(__name__)

#: ``cluster:`` keys of this backend besides the common ones
OPTIONS = frozenset({"address", "scheduler_file", "tls", "tls_ca", "tls_cert", "tls_key"})
TLS_FILE_KEYS = ("tls_ca", "tls_cert", "tls_key")


def check(options: dict[str, Any]) -> None:
    """TLS files, when given, must exist."""
    from pathlib import Path

    for key in TLS_FILE_KEYS:
        value = options.get(key)
        if value is not None and not (isinstance(value, str)
                                      and Path(value).expanduser().is_file()):
            raise SpecError(f"cluster.{key}", value, "no such file",
                            f"give the path of an existing file: {key}: "
                            f"/path/to/{key[4:]}.pem")


def start(settings: Settings) -> Started:
    """Connect to a scheduler that is already running (``address`` setting)."""
    address = settings.option("address")
    scheduler_file = settings.option("scheduler_file")
    if scheduler_file and not address:
        address = _read_scheduler_file(str(scheduler_file), settings.startup_timeout)
    if not address:
        raise ClusterError(
            "the 'attach' backend needs a scheduler address.\n"
            "  Fix: sweep run SPEC --scheduler tcp://HOST:8786 "
            "(or cluster: {backend: attach, address: tcp://HOST:8786}, or "
            "scheduler_file: PATH written by `dask scheduler --scheduler-file PATH`)"
        )
    security = attach_security(str(address), settings.options, settings.tls)
    return Started(None, str(address), security)


def attach_security(address: str, options: Any, tls: bool = True) -> Any:
    """``Security`` for attaching: TLS files if given; plain TCP off-host only if asked."""
    files = [str(options.get(k) or "") for k in TLS_FILE_KEYS]
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
        _refuse_plain_tcp(address, tls)
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


def _read_scheduler_file(path: str, timeout: float) -> str:
    """Address in a Dask scheduler file, waiting up to ``timeout`` s for the scheduler."""
    import json
    import time

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

