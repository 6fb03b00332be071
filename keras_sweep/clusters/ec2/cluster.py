"""The ``ec2`` backend: fresh AWS instances through dask-cloudprovider's ``EC2Cluster``.

``EC2Cluster`` launches one instance for the scheduler and one per worker, each
running the profile's Docker image. Around it sweep owns the lifecycle (see
:mod:`keras_sweep.clusters.ec2.aws` for the API calls):

1. before anything is created: the profile's limits against the user's
   (``sweep.ec2.max-instances``, ``sweep.ec2.max-hours``), credentials, region,
   image and instance type; the plan (how many instances of which type) is
   printed and must be confirmed (``--yes`` or ``assume_yes: true`` when not interactive);
2. a security group per run that opens the scheduler's ports (8786-8787) to the
   driver's address only, and tags on every instance (run id, owner, creation,
   spec name, expiry);
3. the start runs in a thread of its own, so a timeout or Ctrl-C stops the
   waiting at once (``EC2Cluster`` itself waits for its scheduler forever);
4. whatever the ending (done, failed, Ctrl-C, SIGTERM, no worker in time, the
   profile's ``hours`` reached: the session stops the sweep) every instance tagged with the run is
   terminated and the group deleted. After a SIGKILL of the driver,
   ``sweep cloud cleanup --run ID`` does it, and the scheduler closes itself
   after ``sweep.ec2.idle-timeout`` without work (its instance then shuts
   down and terminates, and the workers follow it).

TLS is dask-cloudprovider's (``security=True``): a temporary CA and key pair
made per cluster, shipped in the instances' user data.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import dask.config

from ...config import Settings, setting
from ...exceptions import ClusterError, SpecError
from .. import Started
from ..environment import scheduler_config, settings_environment
from . import aws

logger = logging.getLogger(__name__)

#: Keys of the profile's ``ec2:`` mapping passed on to ``EC2Cluster`` unchanged.
EC2_KEYS = {"region", "availability_zone", "instance_type", "scheduler_instance_type",
            "worker_instance_type", "ami", "docker_image", "filesystem_size", "key_name",
            "vpc", "subnet_id", "security_groups", "iam_instance_profile",
            "use_private_ip", "instance_tags", "bootstrap", "debug"}
#: Keys of the ``ec2:`` mapping that sweep itself reads
SWEEP_KEYS = {"allow_from", "hours"}

#: ``cluster:`` keys of this backend besides the common ones
OPTIONS = frozenset({"ec2", "tls", "assume_yes"})


def _limit(name: str) -> float:
    return float(setting(f"ec2.{name}"))


def check(options: dict[str, Any]) -> None:
    """The ``ec2:`` mapping and the user's limits, starting nothing and calling no API."""
    ec2 = options.get("ec2")
    if not isinstance(ec2, dict) or not ec2.get("region"):
        raise SpecError("cluster.ec2", ec2, "the ec2 backend needs at least a region",
                        "ec2: {region: eu-west-1, instance_type: c6i.large, docker_image: ...}")
    for key, value in ec2.items():
        if key not in EC2_KEYS | SWEEP_KEYS:
            raise SpecError(f"cluster.ec2.{key}", value, "not a setting of the ec2 backend",
                            f"use one of: {', '.join(sorted(EC2_KEYS | SWEEP_KEYS))}")
    aws.check_region(str(ec2["region"]))
    workers = options.get("workers") or 1
    most = int(_limit("max-instances"))
    if workers + 1 > most:
        raise SpecError("cluster.workers", workers,
                        f"{workers} workers need {workers + 1} instances (one more for the "
                        f"scheduler), above your limit sweep.ec2.max-instances = {most}",
                        f"set workers: {most - 1} or less, or raise the limit (e.g. "
                        f"DASK_SWEEP__EC2__MAX_INSTANCES={workers + 1})")
    hours = ec2.get("hours")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, (int, float))
                              or hours <= 0):
        raise SpecError("cluster.ec2.hours", hours, "must be a positive number of hours",
                        "ec2: {hours: 4}")
    if hours is not None and hours > _limit("max-hours"):
        raise SpecError("cluster.ec2.hours", hours,
                        f"above your limit sweep.ec2.max-hours = {_limit('max-hours'):g}",
                        f"set hours: {_limit('max-hours'):g} or less, or raise the limit "
                        f"(e.g. DASK_SWEEP__EC2__MAX_HOURS={hours})")
    allow = ec2.get("allow_from")
    if allow is not None:
        import ipaddress

        try:
            ipaddress.ip_network(str(allow))
        except ValueError:
            raise SpecError("cluster.ec2.allow_from", allow, "not an address or network",
                            "allow_from: 203.0.113.7/32 (your public address), or leave it "
                            "out to detect it") from None


@dataclass(frozen=True)
class Ec2Plan:
    """What one run will start: instances, their types, image, tags, limits."""

    region: str
    workers: int
    scheduler_type: str
    worker_type: str
    ami: str | None
    image: str
    hours: float
    tags: aws.RunTags

    @property
    def instances(self) -> int:
        """Instances launched: the scheduler's and one per worker."""
        return self.workers + 1

    def describe(self) -> str:
        """The lines printed before launch."""
        types = (f"{self.instances} x {self.worker_type}" if self.scheduler_type ==
                 self.worker_type else f"1 x {self.scheduler_type} (scheduler) + "
                 f"{self.workers} x {self.worker_type}")
        return (f"sweep: EC2 run {self.tags.run} will start {self.instances} instances "
                f"({types}) in {self.region}, image {self.image}"
                f"{' on ' + self.ami if self.ami else ''};\n"
                f"  they are terminated when the sweep ends, at the latest after "
                f"{self.hours:g} h ({self.tags.expires:%Y-%m-%d %H:%M} UTC); "
                f"after a crash: sweep cloud cleanup --run {self.tags.run} "
                f"--region {self.region}")


def plan(settings: Settings) -> Ec2Plan:
    """The :class:`Ec2Plan` of resolved ``settings``."""
    ec2 = dict(settings.option("ec2", {}))
    kind = ec2.get("instance_type") or "t2.micro"  # EC2Cluster's default
    hours = float(ec2.get("hours") or _limit("max-hours"))
    run = uuid.uuid4().hex[:10]
    return Ec2Plan(
        region=str(ec2["region"]), workers=settings.workers or 1,
        scheduler_type=ec2.get("scheduler_instance_type") or kind,
        worker_type=ec2.get("worker_instance_type") or kind, ami=ec2.get("ami"),
        image=ec2.get("docker_image") or "daskdev/dask:latest", hours=hours,
        tags=aws.RunTags.new(run, settings.name, hours))


def ec2_arguments(settings: Settings, run: Ec2Plan | None = None,
                  security_group: str | None = None) -> dict[str, Any]:
    """Keywords of ``EC2Cluster`` for a profile: workers, threads, environment, TLS, tags."""
    options = dict(settings.option("ec2", {}))
    arguments = {k: v for k, v in options.items() if v is not None and k in EC2_KEYS}
    tags = {**dict(options.get("instance_tags") or {}), **(run.tags.as_dict() if run else {})}
    return {
        **arguments,
        "instance_tags": tags,
        **({"security_groups": [security_group]} if security_group else {}),
        "n_workers": settings.workers or 1,
        # a worker that lost its scheduler exits (and its instance shuts down)
        "worker_options": {"nthreads": settings.threads_per_worker, "death_timeout": 60},
        # a scheduler without work for this long closes (its instance too): the
        # safety net when the driver died without terminating anything
        "scheduler_options": {"idle_timeout": setting("ec2.idle-timeout")},
        "env_vars": settings_environment(settings),
        "security": settings.tls,
        "auto_shutdown": True,
    }


def _confirm(run: Ec2Plan, yes: bool) -> None:
    print(run.describe(), file=sys.stderr, flush=True)
    if yes:
        return
    if not sys.stdin.isatty():
        raise ClusterError(f"not starting {run.instances} EC2 instances without a yes.\n"
                           "  Fix: pass --yes (or assume_yes: true in the cluster profile) to "
                           "start them without asking")
    answer = input(f"Start {run.instances} instances? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ClusterError("not confirmed: nothing was started.\n  Fix: answer y, or pass "
                           "--yes")


class _Loop:
    """An asyncio loop in a daemon thread: the start can be abandoned at any moment."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sweep-ec2",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` there; on timeout or Ctrl-C cancel it (and wait ≤ 10 s)."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        deadline = time.monotonic() + timeout
        try:
            while True:  # short waits: Ctrl-C reaches this thread between them
                try:
                    return future.result(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                except FutureTimeout:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"not done within {timeout:.0f} s") from None
        except BaseException:
            future.cancel()
            try:
                future.result(timeout=10)
            except BaseException:  # cancelled, or its own error: both are expected here
                pass
            raise

    def stop(self) -> None:
        """Stop the loop (its thread ends)."""
        self.loop.call_soon_threadsafe(self.loop.stop)


class Ec2Run:
    """A started ``EC2Cluster`` and everything sweep made for it; :meth:`close` removes all.

    ``cluster`` is dask-cloudprovider's object; closing terminates by tag, so an
    instance ``EC2Cluster`` lost track of goes too.
    """

    def __init__(self, run: Ec2Plan, client: Any, loop: _Loop,
                 config: dict[str, Any]) -> None:
        self.plan, self.client, self.loop, self._config = run, client, loop, config
        self.cluster: Any = None
        self.closed = False

    @property
    def scheduler_address(self) -> str:
        """Address of the scheduler instance."""
        return str(self.cluster.scheduler_address)

    def close(self) -> None:
        """Close the cluster, terminate every instance of the run, delete its group."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.cluster is not None:
                self.loop.run(self.cluster.close(), timeout=60)
        except BaseException as exc:  # the terminate below is what must not fail
            logger.info("sweep: EC2Cluster.close: %r", exc)
        finally:
            try:
                ids = aws.terminate_run(self.client, self.plan.tags.run)
                if ids:
                    logger.warning("sweep: terminated %d instance(s) of run %s: %s",
                                   len(ids), self.plan.tags.run, " ".join(ids))
            finally:
                self.loop.stop()
                dask.config.config.clear()  # EC2Cluster changed the process' TLS settings
                dask.config.config.update(self._config)


def start(settings: Settings) -> Started:
    """A scheduler and one EC2 instance per worker, whose every ending terminates them."""
    try:
        from dask_cloudprovider.aws import EC2Cluster
    except ImportError as exc:
        raise ClusterError("the 'ec2' backend needs dask-cloudprovider.\n"
                           '  Fix: pip install "keras-sweep[cloud]"') from exc
    run = plan(settings)
    options = dict(settings.option("ec2", {}))
    client = aws.client(run.region)
    aws.preflight(client, run.region, run.ami, {run.scheduler_type, run.worker_type})
    allow = options.get("allow_from") or aws.driver_address(bool(options.get("use_private_ip")))
    _confirm(run, bool(settings.option("assume_yes", False)))
    if not settings.tls:
        logger.warning("sweep: TLS IS OFF for EC2 (tls: false): anyone who reaches the "
                       "scheduler's port can run code on your instances")
    owned = Ec2Run(run, client, _Loop(), copy.deepcopy(dask.config.config))
    try:
        group = None
        if not options.get("security_groups"):
            group = aws.create_group(client, run.tags, options.get("vpc"), str(allow))
        arguments = ec2_arguments(settings, run, group)

        async def make() -> Any:
            # the scheduler's settings travel with the instances' user data
            # (dask-cloudprovider passes the driver's dask.config on)
            with dask.config.set(scheduler_config(settings)):
                # held before it starts: a start abandoned half-way is still closed
                owned.cluster = EC2Cluster(asynchronous=True, **arguments)
                return await owned.cluster

        try:
            owned.loop.run(make(), timeout=settings.startup_timeout)
        except TimeoutError:
            raise ClusterError(
                f"the EC2 scheduler of run {run.tags.run} did not answer within "
                f"{settings.startup_timeout:.0f} s; every instance of the run was "
                "terminated.\n  Fix: check that the image starts (debug: true prints the "
                "user data), that this machine reaches port 8786 of the instances, or raise "
                "sweep.cluster.startup-timeout") from None
        except ClusterError:
            raise
        except Exception as exc:
            error = aws.api_error(exc, "start the instances")
            raise (error or ClusterError(
                f"could not start the EC2 cluster: {exc!r}\n  Fix: see the error above; "
                "every instance of the run was terminated")) from exc
    except BaseException:
        owned.close()
        raise
    workers = run.workers
    return Started(owned, owned.scheduler_address, owned.cluster.security,
                   expected_workers=workers, max_workers=workers,
                   check_versions=f"the worker image {run.image} (cluster/ec2/Dockerfile): "
                   "pip install",
                   cleanup=owned.close, expires=run.tags.expires.timestamp(),
                   expiry=f"run {run.tags.run} reached its {run.hours:g} h (ec2.hours)")

