"""The ``ec2`` backend: fresh AWS instances through dask-cloudprovider (optional extra).

:func:`ec2_arguments` turns a profile (``cluster/ec2.yaml``) into the keywords of
``dask_cloudprovider.aws.EC2Cluster``; it imports nothing from dask-cloudprovider,
so it is tested without AWS. dask-cloudprovider makes its own temporary TLS
certificates (``security=True``) and ships them to the instances.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings
from ..exceptions import ClusterError, SpecError
from . import Started, default_workers
from .environment import settings_environment

logger = logging.getLogger(__name__)

#: Keys of the profile's ``ec2:`` mapping passed on to ``EC2Cluster`` unchanged.
EC2_KEYS = {"region", "availability_zone", "instance_type", "scheduler_instance_type",
            "worker_instance_type", "ami", "docker_image", "filesystem_size", "key_name",
            "vpc", "subnet_id", "security_groups", "iam_instance_profile", "auto_shutdown",
            "use_private_ip", "instance_tags", "bootstrap", "debug"}


#: ``cluster:`` keys of this backend besides the common ones
OPTIONS = frozenset({"ec2", "tls"})


def check(options: dict[str, Any]) -> None:
    """The ``ec2:`` mapping: a region, and only settings sweep passes on."""
    ec2 = options.get("ec2")
    if not isinstance(ec2, dict) or not ec2.get("region"):
        raise SpecError("cluster.ec2", ec2, "the ec2 backend needs at least a region",
                        "ec2: {region: eu-west-1, instance_type: c6i.large, docker_image: ...}")
    for key, value in ec2.items():
        if key not in EC2_KEYS:
            raise SpecError(f"cluster.ec2.{key}", value, "not an EC2Cluster setting sweep "
                            "passes on", f"use one of: {', '.join(sorted(EC2_KEYS))}")


def ec2_arguments(settings: Settings) -> dict[str, Any]:
    """Keywords of ``EC2Cluster`` for a profile: workers, threads, environment, TLS."""
    options = dict(settings.option("ec2", {}))
    return {
        **{k: v for k, v in options.items() if v is not None},
        "n_workers": settings.workers or default_workers(),
        "worker_options": {"nthreads": settings.threads_per_worker},
        "env_vars": settings_environment(settings),
        "security": settings.tls,
    }


def start(settings: Settings) -> Started:
    """A scheduler and one EC2 instance per worker; TLS from dask-cloudprovider."""
    try:
        from dask_cloudprovider.aws import EC2Cluster
    except ImportError as exc:
        raise ClusterError("the 'ec2' backend needs dask-cloudprovider.\n"
                           '  Fix: pip install "keras-sweep[cloud]"') from exc
    arguments = ec2_arguments(settings)
    if not arguments["security"]:
        logger.warning("sweep: TLS IS OFF for EC2 (tls: false): anyone who reaches the "
                       "scheduler's port can run code on your instances")
    try:
        cluster = EC2Cluster(**arguments)
    except Exception as exc:  # translate at the edge
        raise ClusterError(f"could not start the EC2 cluster: {exc}\n  Fix: check your AWS "
                           "credentials (aws sts get-caller-identity), region and "
                           "instance quota") from exc
    workers = arguments["n_workers"]
    return Started(cluster, cluster.scheduler_address, getattr(cluster, "security", None),
                   expected_workers=workers, max_workers=workers)
