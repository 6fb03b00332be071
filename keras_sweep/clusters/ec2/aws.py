"""What sweep itself asks of the EC2 API (botocore, synchronous), beside ``EC2Cluster``.

dask-cloudprovider's ``EC2Cluster`` launches the instances; sweep owns their
lifecycle around it: checks before anything is created (credentials, region,
image, instance type), a security group per run that opens the scheduler's ports
to the driver's address only, tags on every instance, and terminating every
instance of a run by its tag, whatever the ending (see :mod:`keras_sweep.clusters.ec2.cluster`).
``sweep cloud list`` and ``sweep cloud cleanup`` use the same calls.

Every AWS call sweep makes is one of: DescribeImages, DescribeInstanceTypeOfferings,
DescribeVpcs, CreateSecurityGroup, AuthorizeSecurityGroupIngress,
DescribeInstances, TerminateInstances, DescribeSecurityGroups,
DeleteSecurityGroup (and, inside ``EC2Cluster``: DescribeSubnets,
RunInstances, CreateTags).
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...exceptions import ClusterError, SpecError

logger = logging.getLogger(__name__)

#: tags on every instance and security group sweep creates
TAG_RUN, TAG_OWNER, TAG_CREATED, TAG_SPEC, TAG_EXPIRES = (
    "sweep:run", "sweep:owner", "sweep:created", "sweep:spec", "sweep:expires")
#: instance states that still cost money (or may again)
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
#: the ports of a Dask scheduler on an EC2Cluster: comms and dashboard
SCHEDULER_PORTS = (8786, 8787)

#: what to do about an EC2 API error, by its code
FIXES: dict[str, str] = {
    "AuthFailure": "the AWS credentials were refused: check them with "
                   "`aws sts get-caller-identity` (or AWS_PROFILE)",
    "UnrecognizedClientException": "the AWS credentials were refused: check them with "
                                   "`aws sts get-caller-identity`",
    "InvalidClientTokenId": "the AWS access key is unknown: check AWS_ACCESS_KEY_ID or "
                            "~/.aws/credentials",
    "OptInRequired": "this region is not enabled for the account: enable it in the AWS "
                     "console (Account > AWS Regions) or use another region",
    "UnauthorizedOperation": "the credentials lack an EC2 permission: allow ec2:RunInstances, "
                             "ec2:TerminateInstances, ec2:Describe*, ec2:CreateTags and "
                             "ec2:*SecurityGroup* (see docs/cloud.md)",
    "InstanceLimitExceeded": "the account's instance quota is reached: ask for more "
                             "(Service Quotas > EC2) or set fewer workers",
    "VcpuLimitExceeded": "the account's vCPU quota for this instance family is reached: "
                         "ask for more (Service Quotas > EC2 'Running On-Demand ... "
                         "instances') or use fewer or smaller instances",
    "InsufficientInstanceCapacity": "AWS has no capacity for this type in this zone now: "
                                    "try another availability_zone or instance_type",
    "Unsupported": "the instance type is not offered in this zone: set availability_zone "
                   "or another instance_type",
    "InvalidAMIID.NotFound": "the image is not in this region: copy it here or use this "
                             "region's image id (`aws ec2 describe-images --owners self`)",
    "InvalidAMIID.Malformed": "an image id looks like ami-0123456789abcdef0",
    "InvalidParameterValue": "a value of the ec2: profile is not accepted (see the message)",
}


def session() -> Any:
    """A botocore session: AWS settings as the aws CLI reads them; the fix if missing."""
    try:
        import botocore.session
    except ImportError as exc:
        raise ClusterError("the 'ec2' backend needs dask-cloudprovider[aws].\n"
                           '  Fix: pip install "keras-sweep[cloud]"') from exc
    return botocore.session.get_session()


def check_region(region: str) -> None:
    """Raise :class:`SpecError` unless ``region`` is an EC2 region botocore knows."""
    boto = session()
    known = set(boto.get_available_regions("ec2"))
    for partition in ("aws-cn", "aws-us-gov"):
        known |= set(boto.get_available_regions("ec2", partition_name=partition))
    if region not in known:
        near = sorted(r for r in known if r.split("-")[0] == str(region).split("-")[0])
        raise SpecError("cluster.ec2.region", region, "not an AWS region with EC2",
                        f"use one of: {', '.join(near or sorted(known)[:8])}, ...")


def client(region: str) -> Any:
    """An EC2 client of ``region``; :class:`ClusterError` without credentials.

    Honours the usual AWS settings (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_ENDPOINT_URL``, ``~/.aws``).
    """
    boto = session()
    if boto.get_credentials() is None:
        raise ClusterError(
            "no AWS credentials found (environment, ~/.aws/credentials, AWS_PROFILE, "
            "instance role).\n  Fix: run `aws configure`, or set AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return boto.create_client("ec2", region_name=region)


def api_error(exc: BaseException, doing: str) -> ClusterError | None:
    """A :class:`ClusterError` with the fix for an EC2 API error in ``exc``'s chain.

    ``EC2Cluster`` may raise an unrelated error whose ``__context__`` holds the
    API's (its clean-up fails after a failed start), so the whole chain is read.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        response = getattr(error, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            message = str(response["Error"].get("Message", ""))
            fix = FIXES.get(code, "see the AWS message above")
            return ClusterError(f"EC2 refused to {doing}: {code}: {message}\n  Fix: {fix}")
        error = error.__cause__ or error.__context__
    return None


def call(ec2: Any, operation: str, doing: str, **params: Any) -> dict[str, Any]:
    """One EC2 API call; an API error becomes one :class:`ClusterError` with the fix."""
    try:
        return dict(getattr(ec2, operation)(**params))
    except Exception as exc:
        error = api_error(exc, doing)
        if error is None:
            raise ClusterError(f"could not {doing}: {exc}\n  Fix: check the network and "
                               "AWS_ENDPOINT_URL / the region") from exc
        raise error from exc


def preflight(ec2: Any, region: str, ami: str | None, types: Iterable[str]) -> None:
    """Read-only checks before anything is created: the image and the instance types."""
    if ami:
        images = call(ec2, "describe_images", f"find image {ami}", ImageIds=[ami])["Images"]
        if not images:
            raise ClusterError(f"image {ami} not found in {region}.\n  Fix: "
                               f"{FIXES['InvalidAMIID.NotFound']}")
    wanted = sorted(set(types))
    offered = {o["InstanceType"] for o in call(
        ec2, "describe_instance_type_offerings", "list the instance types of the region",
        LocationType="region", Filters=[{"Name": "instance-type", "Values": wanted}],
    )["InstanceTypeOfferings"]}
    missing = [t for t in wanted if t not in offered]
    if missing:
        raise ClusterError(
            f"instance type {', '.join(missing)} is not offered in {region}.\n  Fix: use "
            "another instance_type (list: aws ec2 describe-instance-type-offerings "
            f"--region {region}) or another region")


def driver_address(use_private_ip: bool) -> str:
    """This machine's address as the instances see it, as a ``/32`` (``/128``) network.

    With private IPs (the driver in the same VPC): the address of the interface
    of the default route. Otherwise the public address AWS reports
    (``https://checkip.amazonaws.com``).
    """
    if use_private_ip:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent (UDP connect)
            ip = probe.getsockname()[0]
    else:
        import urllib.request

        try:
            with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as r:
                ip = r.read().decode().strip()
        except OSError as exc:
            raise ClusterError(
                f"cannot find this machine's public address ({exc}).\n  Fix: set "
                "ec2: {allow_from: YOUR.PUBLIC.IP/32} in the profile") from exc
    return str(ipaddress.ip_network(ip))


@dataclass(frozen=True)
class RunTags:
    """The tags of one sweep run's instances and security group."""

    run: str
    spec: str
    owner: str
    created: dt.datetime
    expires: dt.datetime

    @classmethod
    def new(cls, run: str, spec: str, max_hours: float) -> RunTags:
        """Tags of a run starting now that may live ``max_hours``."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        return cls(run, spec, f"{getpass.getuser()}@{socket.gethostname()}", now,
                   now + dt.timedelta(hours=max_hours))

    def as_dict(self) -> dict[str, str]:
        """Key -> value, as EC2 stores them."""
        return {TAG_RUN: self.run, TAG_SPEC: self.spec, TAG_OWNER: self.owner,
                TAG_CREATED: self.created.isoformat(), TAG_EXPIRES: self.expires.isoformat()}


def group_name(run: str) -> str:
    """Name of the security group of run ``run``."""
    return f"sweep-{run}"


def create_group(ec2: Any, tags: RunTags, vpc: str | None, allow_from: str) -> str:
    """A security group for one run: scheduler ports from ``allow_from`` only.

    The instances reach each other on every TCP port (workers and scheduler talk
    on random ports), through the group itself; nothing else gets in.
    """
    if vpc is None:
        vpcs = call(ec2, "describe_vpcs", "find the default VPC",
                    Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ClusterError("this region has no default VPC.\n  Fix: set ec2: {vpc: "
                               "vpc-..., subnet_id: subnet-...} in the profile")
        vpc = str(vpcs[0]["VpcId"])
    group = call(ec2, "create_security_group", "create the run's security group",
                 GroupName=group_name(tags.run), VpcId=vpc,
                 Description=f"sweep run {tags.run}: Dask scheduler from {allow_from} only",
                 TagSpecifications=[{"ResourceType": "security-group",
                                     "Tags": _aws_tags(tags.as_dict())}])["GroupId"]
    low, high = SCHEDULER_PORTS
    ranges = ({"Ipv6Ranges": [{"CidrIpv6": allow_from}]} if ":" in allow_from
              else {"IpRanges": [{"CidrIp": allow_from, "Description": "sweep driver"}]})
    call(ec2, "authorize_security_group_ingress", "open the scheduler's ports",
         GroupId=group, IpPermissions=[
             {"IpProtocol": "tcp", "FromPort": low, "ToPort": high, **ranges},
             {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535,
              "UserIdGroupPairs": [{"GroupId": group}]}])
    return str(group)


def _aws_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@dataclass(frozen=True)
class Instance:
    """One instance of a sweep run, as DescribeInstances shows it."""

    id: str
    state: str
    type: str
    run: str
    spec: str
    owner: str
    created: dt.datetime | None
    expires: dt.datetime | None


def _parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def instances(ec2: Any, run: str | None = None,
              states: Iterable[str] = LIVE_STATES) -> list[Instance]:
    """Instances sweep created (of run ``run``, or of every run) in ``states``."""
    filters = [{"Name": "instance-state-name", "Values": list(states)},
               ({"Name": f"tag:{TAG_RUN}", "Values": [run]} if run is not None
                else {"Name": "tag-key", "Values": [TAG_RUN]})]
    found = []
    token: dict[str, str] = {}
    while True:
        page = call(ec2, "describe_instances", "list the sweep's instances",
                    Filters=filters, **token)
        for reservation in page["Reservations"]:
            for item in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                found.append(Instance(
                    item["InstanceId"], item["State"]["Name"], item["InstanceType"],
                    tags.get(TAG_RUN, "?"), tags.get(TAG_SPEC, "?"),
                    tags.get(TAG_OWNER, "?"), _parse_time(tags.get(TAG_CREATED)),
                    _parse_time(tags.get(TAG_EXPIRES))))
        if not page.get("NextToken"):
            return found
        token = {"NextToken": page["NextToken"]}


def terminate(ec2: Any, ids: list[str]) -> list[str]:
    """Terminate instances ``ids`` (any number); returns them."""
    for start in range(0, len(ids), 500):
        call(ec2, "terminate_instances", "terminate the sweep's instances",
             InstanceIds=ids[start:start + 500])
    return ids


def terminate_run(ec2: Any, run: str) -> list[str]:
    """Terminate every live instance of run ``run`` and delete its security group.

    Best effort on the group: while its instances are shutting down AWS refuses to
    delete it; ``sweep cloud cleanup`` deletes it later.
    """
    ids = terminate(ec2, [i.id for i in instances(ec2, run) if i.state != "shutting-down"])
    delete_groups(ec2, [run])
    return ids


def delete_groups(ec2: Any, runs: Iterable[str]) -> None:
    """Delete the security groups of ``runs`` that no instance uses any more."""
    for run in runs:
        groups = call(ec2, "describe_security_groups", "find the run's security group",
                      Filters=[{"Name": "group-name", "Values": [group_name(run)]}])
        for group in groups["SecurityGroups"]:
            try:
                ec2.delete_security_group(GroupId=group["GroupId"])
            except Exception as exc:  # still in use by instances shutting down
                logger.info("sweep: security group %s not deleted yet: %s",
                            group["GroupId"], exc)
