"""The ``ssh`` backend: a Dask cluster on hosts you can reach with SSH, mutual TLS on.

A thin factory over :func:`distributed.deploy.ssh.SSHCluster`. Before anything
starts, every host is checked over SSH (reachable, key accepted, remote Python
found, the same versions of the packages that must match), and the TLS
certificates sweep made for this cluster are copied to each host over that
same SSH connection (SFTP). Then ``SSHCluster`` starts the scheduler and the
workers; they inherit the Dask settings (TLS files, worker environment) from
this process through ``DASK_INTERNAL_INHERIT_CONFIG``.

>>> with sweep.cluster("ssh", hosts=["10.0.0.5", "10.0.0.6"], user="me",
...                    key="~/.ssh/id_ed25519") as session:      # doctest: +SKIP
...     grid.fit(X, y)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import dask.config
from dask.utils import format_time

from ..config import Settings
from ..exceptions import ClusterError, SpecError
from . import Started, tls
from .environment import nanny_config, settings_environment
from .versions import PACKAGE, PROBE, check_versions, local_versions

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: ``cluster:`` keys of this backend besides the common ones
OPTIONS = frozenset({"hosts", "scheduler", "user", "port", "key", "known_hosts",
                     "remote_python", "workers_per_host", "interface", "scheduler_port",
                     "dashboard_address", "connect_timeout", "remote_tls_dir", "tls",
                     "memory_limit"})
@dataclass(frozen=True)
class SshOptions:
    """Every setting of the ssh backend, resolved from keywords and ``sweep.ssh.*``."""

    hosts: tuple[str, ...]
    scheduler: str
    user: str | None
    port: int
    key: str | None
    known_hosts: str | None
    remote_python: str
    workers_per_host: int
    interface: str | None
    scheduler_port: int
    dashboard_address: str | None
    connect_timeout: float
    remote_tls_dir: str
    tls: bool

    @property
    def all_hosts(self) -> list[str]:
        """Scheduler host first, then the worker hosts (what ``SSHCluster`` expects)."""
        return [self.scheduler, *self.hosts]


def check(options: dict[str, Any]) -> None:
    """The ssh settings, checked before any connection is made."""
    hosts = options.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(
            isinstance(h, str) and h.strip() for h in hosts):
        raise SpecError("cluster.hosts", hosts, "the ssh backend needs a list of host names "
                        "or addresses", "hosts: [10.0.0.5, 10.0.0.6] (workers run on each), "
                        "e.g. sweep run SPEC --cluster cluster/ssh.yaml")
    for key in ("scheduler", "user", "remote_python", "interface", "remote_tls_dir"):
        value = options.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise SpecError(f"cluster.{key}", value, "must be a non-empty string",
                            f"{key}: {_EXAMPLES[key]} (or leave it out for the default)")
    _int_in("cluster.port", options.get("port", 22), 1, 65535, "port: 22")
    _int_in("cluster.scheduler_port", options.get("scheduler_port", 0), 0, 65535,
            "scheduler_port: 0 (a free port)")
    _int_in("cluster.workers_per_host", options.get("workers_per_host", 1), 1, 4096,
            "workers_per_host: 2")
    timeout = options.get("connect_timeout", 15)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SpecError("cluster.connect_timeout", timeout, "must be a positive number of "
                        "seconds", "connect_timeout: 15")
    if options.get("key") is not None:
        _existing_file("cluster.key", options["key"], "key: ~/.ssh/id_ed25519")
    if options.get("known_hosts") not in (None, "ignore"):
        _existing_file("cluster.known_hosts", options["known_hosts"],
                       "known_hosts: ~/.ssh/known_hosts (fill it with ssh-keyscan HOST)")


_EXAMPLES = {"scheduler": "10.0.0.5", "user": "ubuntu",
             "remote_python": "/opt/venv/bin/python", "interface": "eth0",
             "remote_tls_dir": "/tmp/sweep-tls"}


def _int_in(field: str, value: Any, low: int, high: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(field, value, f"must be an integer from {low} to {high}", example)


def _existing_file(field: str, value: Any, example: str) -> None:
    if not isinstance(value, str) or not Path(value).expanduser().is_file():
        raise SpecError(field, value, "no such file", f"give the path of an existing file: "
                        f"{example}")


def resolve(settings: Settings) -> SshOptions:
    """The ssh options of resolved ``settings`` (spec, profile, CLI over ``sweep.ssh.*``)."""
    opt = settings.option
    hosts = opt("hosts")
    hosts = [hosts] if isinstance(hosts, str) else list(hosts or [])
    key = opt("key")
    return SshOptions(
        hosts=tuple(str(h) for h in hosts), scheduler=str(opt("scheduler") or hosts[0]),
        user=opt("user"), port=int(opt("port")),
        key=str(Path(key).expanduser()) if key else None, known_hosts=opt("known_hosts"),
        remote_python=str(opt("remote_python") or sys.executable),
        workers_per_host=int(opt("workers_per_host")), interface=opt("interface"),
        scheduler_port=int(opt("scheduler_port")),
        dashboard_address=opt("dashboard_address") or None,
        connect_timeout=float(opt("connect_timeout")),
        remote_tls_dir=str(opt("remote_tls_dir") or f"/tmp/sweep-tls-{uuid.uuid4().hex[:12]}"),
        tls=settings.tls,
    )


def connect_options(opts: SshOptions) -> dict[str, Any]:
    """Keywords of ``asyncssh.connect`` for every host."""
    out: dict[str, Any] = {"port": opts.port, "connect_timeout": opts.connect_timeout}
    if opts.user:
        out["username"] = opts.user
    if opts.key:
        out["client_keys"] = [opts.key]
    if opts.known_hosts == "ignore":
        out["known_hosts"] = None
    elif opts.known_hosts:
        out["known_hosts"] = str(Path(opts.known_hosts).expanduser())
    return out


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here (a script, or interpreter exit): run one
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # e.g. inside Jupyter
        return pool.submit(lambda: asyncio.run(make())).result()


def _ssh_command(opts: SshOptions, host: str) -> str:
    user = f"{opts.user}@" if opts.user else ""
    key = f" -i {opts.key}" if opts.key else ""
    return f"ssh -p {opts.port}{key} {user}{host}"


class HostUnreachable(ClusterError):
    """Nothing answers SSH at a host's address (down, or a firewall)."""


async def _connect(host: str, opts: SshOptions) -> Any:
    import asyncssh

    ssh = _ssh_command(opts, host)
    try:
        return await asyncssh.connect(host, **connect_options(opts))
    except asyncssh.PermissionDenied as exc:
        raise ClusterError(
            f"host {host}: SSH refused the key of user {opts.user or '(default)'}: {exc}\n"
            f"  Fix: authorize the key on the host ({ssh.replace('ssh ', 'ssh-copy-id ', 1)})"
            " or set the right user: and key: in the profile (key: ~/.ssh/id_ed25519); "
            f"check with: {ssh} true") from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        raise ClusterError(
            f"host {host}: its SSH host key is not in known_hosts: {exc}\n"
            f"  Fix: after checking the key's fingerprint, ssh-keyscan -p {opts.port} {host} "
            ">> ~/.ssh/known_hosts (or give known_hosts: FILE in the profile)") from exc
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise HostUnreachable(
            f"host {host} is unreachable on SSH port {opts.port}: "
            f"{type(exc).__name__}: {exc}\n"
            f"  Fix: check the address, that sshd runs there and that a firewall lets port "
            f"{opts.port} through; try: {ssh} true") from exc


async def _probe(conn: Any, host: str, opts: SshOptions) -> dict[str, Any]:
    result = await conn.run(f"{shlex.quote(opts.remote_python)} -c {shlex.quote(PROBE)}")
    if result.exit_status in (126, 127):
        raise ClusterError(
            f"host {host}: remote Python {opts.remote_python!r} not found "
            f"(exit {result.exit_status}: {str(result.stderr).strip()})\n"
            f"  Fix: install Python and sweep on {host}, or set remote_python: to its path "
            f"(find it with: {_ssh_command(opts, host)} 'command -v python3')")
    try:
        return dict(json.loads(str(result.stdout).strip().splitlines()[-1]))
    except (ValueError, IndexError):
        raise ClusterError(
            f"host {host}: {opts.remote_python} could not report its packages "
            f"(exit {result.exit_status}): {str(result.stderr).strip()[-500:]}\n"
            f"  Fix: check that {opts.remote_python} -c 'import {PACKAGE}' works on {host}"
        ) from None


async def _ship(conn: Any, files: tls.TlsFiles, roles: list[str], remote_dir: str) -> None:
    """Copy the CA certificate and the key pairs of ``roles`` to ``remote_dir`` (0700)."""
    await conn.run(f"umask 077 && mkdir -p {shlex.quote(remote_dir)}", check=True)
    paths = sorted({p for role in roles for p in files.for_role(role)})
    async with conn.start_sftp_client() as sftp:
        for path in paths:
            target = f"{remote_dir}/{path.name}"
            await sftp.put(str(path), target)
            await sftp.chmod(target, 0o600)


def _roles(host: str, opts: SshOptions) -> list[str]:
    return [r for r, on in (("scheduler", host == opts.scheduler),
                            ("worker", host in opts.hosts)) if on]


async def _prepare_host(host: str, opts: SshOptions, here: dict[str, Any],
                        files: tls.TlsFiles | None) -> None:
    conn = await _connect(host, opts)
    async with conn:
        check_versions(f"host {host}", here, await _probe(conn, host, opts),
                       f"{opts.remote_python} -m pip install")
        if files is not None:
            await _ship(conn, files, _roles(host, opts), opts.remote_tls_dir)


def prepare_hosts(opts: SshOptions, files: tls.TlsFiles | None,
                  min_workers: int | None = None) -> SshOptions:
    """Check every host (in parallel) and copy its TLS files to it; the options with the
    worker hosts that answered.

    A worker host that is unreachable is left out (one warning names it and why) when
    the others still give ``min_workers`` workers (``None``: every worker asked);
    otherwise, and for any other problem (a refused key, other package versions) or an
    unreachable scheduler host, the first problem is raised.
    """
    here = local_versions()
    hosts = list(dict.fromkeys(opts.all_hosts))

    async def all_hosts() -> list[Any]:
        return await asyncio.gather(*(_prepare_host(h, opts, here, files) for h in hosts),
                                    return_exceptions=True)

    outcomes = dict(zip(hosts, _run_async(all_hosts), strict=True))
    down = {h: e for h, e in outcomes.items() if isinstance(e, HostUnreachable)}
    for error in outcomes.values():
        if isinstance(error, BaseException) and not isinstance(error, HostUnreachable):
            raise error
    if not down:
        return opts
    up = tuple(h for h in opts.hosts if h not in down)
    needed = opts.workers_per_host * len(opts.hosts) if min_workers is None else min_workers
    if opts.scheduler in down or opts.workers_per_host * len(up) < needed:
        first = next(iter(down.values()))
        if len(down) > 1 or min_workers is not None:
            raise ClusterError(f"{first}\n  ({len(down)} of {len(hosts)} host(s) unreachable: "
                               f"{', '.join(down)}; the others give "
                               f"{opts.workers_per_host * len(up)} worker(s) of the "
                               f"{needed} min_workers asks)") from first
        raise first
    for error in down.values():
        logger.warning("sweep: %s; the sweep runs on the other %d host(s) (min_workers: %d)",
                       str(error).splitlines()[0], len(up), needed)
    return replace(opts, hosts=up)


def _remove_tls(opts: SshOptions, local_dir: str) -> None:
    """Delete the certificates here and on every host (when the cluster is gone)."""
    import shutil

    shutil.rmtree(local_dir, ignore_errors=True)

    async def remove(host: str) -> None:
        async with await _connect(host, opts) as conn:
            await conn.run(f"rm -rf {shlex.quote(opts.remote_tls_dir)}")

    async def everywhere() -> list[Any]:
        return await asyncio.gather(*(remove(h) for h in dict.fromkeys(opts.all_hosts)),
                                    return_exceptions=True)

    try:
        errors = [e for e in _run_async(everywhere) if isinstance(e, BaseException)]
    except Exception as exc:
        errors = [exc]
    for error in errors:  # best effort: the CA is per cluster and the files expire
        logger.warning("sweep: could not remove TLS files %s on a host: %s",
                       opts.remote_tls_dir, error)


def _warn_insecure(opts: SshOptions) -> None:
    logger.warning(
        "sweep: TLS IS OFF (tls: false). Scheduler and workers on %s accept PLAIN TCP: "
        "anyone who can reach their ports can run any code on every host. Use this only "
        "on a network no one else can reach.", ", ".join(opts.all_hosts))


def _dask_options(settings: Settings, opts: SshOptions) -> tuple[dict, dict]:
    """``scheduler_options`` and ``worker_options`` of ``SSHCluster`` (JSON only)."""
    address: dict[str, Any] = ({"interface": opts.interface} if opts.interface
                               else {"host": opts.scheduler})
    scheduler = {"port": opts.scheduler_port, "protocol": "tls" if opts.tls else "tcp",
                 "dashboard": opts.dashboard_address is not None,
                 "dashboard_address": opts.dashboard_address, **address}
    worker = {"nthreads": settings.threads_per_worker, "n_workers": opts.workers_per_host,
              "env": settings_environment(settings), "death_timeout": settings.startup_timeout,
              "memory_limit": settings.option("memory_limit", settings.memory_limit)}
    if opts.interface:
        worker["interface"] = opts.interface
    return scheduler, worker


def _dask_config(settings: Settings, opts: SshOptions) -> dict[str, Any]:
    config = nanny_config(settings)
    if opts.tls:
        config.update(tls.dask_config(opts.remote_tls_dir))
    return config


def _start_failed(exc: BaseException, opts: SshOptions) -> ClusterError:
    return ClusterError(
        f"the ssh cluster on {', '.join(opts.all_hosts)} did not start: "
        f"{type(exc).__name__}: {exc}\n"
        "  Fix: no worker reached the scheduler in time. Set interface: (e.g. eth0) to the "
        "network the hosts share, open the scheduler's and workers' ports between the hosts, "
        "raise sweep.cluster.startup-timeout, or run the command by hand to see its log: "
        f"{_ssh_command(opts, opts.hosts[0])} {opts.remote_python} -m distributed.cli.dask_spec")


def _timed(start: Callable[[], Any], opts: SshOptions) -> Any:
    began = time.perf_counter()
    try:
        cluster = start()
    except ClusterError:
        raise
    except Exception as exc:  # translate at the edge
        raise _start_failed(exc, opts) from exc
    logger.info("sweep: ssh cluster with %d worker(s) on %d host(s) up in %.1f s",
                opts.workers_per_host * len(opts.hosts), len(opts.hosts),
                time.perf_counter() - began)
    return cluster


def start(settings: Settings) -> Started:
    """Scheduler and workers on SSH hosts; mutual TLS unless ``tls: false``.

    The certificates are deleted here and on every host right after the
    cluster closes (while SSH still works). The CA is made per cluster, so files
    left behind (the process was killed) open nothing once the cluster is gone;
    they expire after ``sweep.tls.valid-days``.
    """
    from distributed import SSHCluster

    opts = resolve(settings)
    local_dir = tempfile.mkdtemp(prefix="sweep-tls-")
    expires = time.time() + settings.tls_valid_days * 86400 if opts.tls else None
    files = (tls.create(local_dir, hosts=opts.all_hosts, valid_days=settings.tls_valid_days)
             if opts.tls else None)
    if files is None:
        _warn_insecure(opts)
    security = tls.client_security(files) if files is not None else None
    scheduler_options, worker_options = _dask_options(settings, opts)
    try:
        opts = prepare_hosts(opts, files, settings.min_workers)
        with dask.config.set(_dask_config(settings, opts)):
            cluster = _timed(lambda: SSHCluster(
                opts.all_hosts, connect_options=connect_options(opts),
                worker_options=worker_options, scheduler_options=scheduler_options,
                remote_python=opts.remote_python, security=security), opts)
    except BaseException:
        _remove_tls(opts, local_dir)
        raise
    workers = opts.workers_per_host * len(opts.hosts)
    return Started(cluster, cluster.scheduler_address, security, expected_workers=workers,
                   max_workers=workers, cleanup=lambda: _remove_tls(opts, local_dir),
                   expires=expires, renewable=True,
                   expiry="its TLS certificates expire (valid "
                   f"{format_time(settings.tls_valid_days * 86400)}, sweep.tls.valid-days)")
