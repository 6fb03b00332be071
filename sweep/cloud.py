"""The ``ec2`` backend: fresh AWS instances through dask-cloudprovider (optional extra).

:func:`ec2_arguments` turns a profile (``cluster/ec2.yaml``) into the keywords of
``dask_cloudprovider.aws.EC2Cluster``; it imports nothing from dask-cloudprovider,
so it is tested without AWS. dask-cloudprovider makes its own temporary TLS
certificates (``security=True``) and ships them to the instances.
"""

from __future__ import annotations

import logging
from typing import Any

from .clusters import ClusterSettings, Started, register
from .exceptions import ClusterError

logger = logging.getLogger(__name__)

#: Keys of the profile's ``ec2:`` mapping passed on to ``EC2Cluster`` unchanged.
EC2_KEYS = {"region", "availability_zone", "instance_type", "scheduler_instance_type",
            "worker_instance_type", "ami", "docker_image", "filesystem_size", "key_name",
            "vpc", "subnet_id", "security_groups", "iam_instance_profile", "auto_shutdown",
            "use_private_ip", "instance_tags", "bootstrap", "debug"}


def ec2_arguments(settings: ClusterSettings) -> dict[str, Any]:
    """Keywords of ``EC2Cluster`` for a profile: workers, threads, environment, TLS."""
    options = dict(settings.extra.get("ec2") or {})
    unknown = sorted(set(options) - EC2_KEYS)
    if unknown:
        raise ClusterError(f"unknown ec2 setting(s) {', '.join(unknown)}.\n"
                           f"  Fix: use only: {', '.join(sorted(EC2_KEYS))}")
    tls = settings.extra.get("tls", True) is not False
    return {
        **{k: v for k, v in options.items() if v is not None},
        "n_workers": settings.workers,
        "worker_options": {"nthreads": settings.threads_per_worker},
        "env_vars": settings.environment,
        "security": tls,
    }


@register("ec2", options={"ec2", "tls"})
def ec2(settings: ClusterSettings) -> Started:
    """A scheduler and one EC2 instance per worker; TLS from dask-cloudprovider."""
    try:
        from dask_cloudprovider.aws import EC2Cluster
    except ImportError as exc:
        raise ClusterError("the 'ec2' backend needs dask-cloudprovider.\n"
                           '  Fix: pip install "sweep[cloud]"') from exc
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
    return Started(cluster, cluster.scheduler_address, getattr(cluster, "security", None))
