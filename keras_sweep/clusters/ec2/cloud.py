"""``sweep cloud``: the EC2 instances sweep started, listed and removed, and the image's pins.

``sweep cloud list`` shows every live instance tagged by a sweep run in a region;
``sweep cloud cleanup`` terminates those of one run, those older than a duration,
or those past their run's expiry, and deletes the runs' security groups;
``sweep cloud requirements`` prints the pins a worker image needs (this machine's
versions of every package that must match).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from ...exceptions import SpecError
from ..versions import local_versions, pins
from . import aws


def region_or_default(region: str | None) -> str:
    """``region``, else the AWS default region (``AWS_DEFAULT_REGION``, ``~/.aws/config``)."""
    if region:
        aws.check_region(region)
        return region
    found = aws.session().get_config_variable("region")
    if not found:
        raise SpecError("--region", None, "no region given and no AWS default region",
                        "pass --region eu-west-1 (or set AWS_DEFAULT_REGION)")
    return str(found)


def _age(instance: aws.Instance, now: dt.datetime) -> str:
    if instance.created is None:
        return "?"
    minutes = (now - instance.created).total_seconds() / 60
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def table(found: Iterable[aws.Instance]) -> list[str]:
    """Lines of a table of instances, oldest first."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = sorted(found, key=lambda i: (i.created or now, i.id))
    head = f"{'instance':<21} {'state':<13} {'type':<12} {'run':<11} {'age':>8}  spec, owner"
    return [head] + [f"{i.id:<21} {i.state:<13} {i.type:<12} {i.run:<11} {_age(i, now):>8}  "
                     f"{i.spec}, {i.owner}" for i in rows]


def list_lines(region: str | None) -> list[str]:
    """``sweep cloud list``: the table, or a line saying there is nothing."""
    region = region_or_default(region)
    found = aws.instances(aws.client(region))
    if not found:
        return [f"sweep: no instance of any sweep run is live in {region}"]
    runs = len({i.run for i in found})
    return table(found) + [f"sweep: {len(found)} live instance(s) of {runs} run(s) in {region};"
                           " remove them with: sweep cloud cleanup --run ID"]


def select(found: list[aws.Instance], run: str | None, older_than: float | None,
           expired: bool) -> list[aws.Instance]:
    """The instances ``cleanup`` removes: of ``run``, older than, and/or past expiry."""
    now = dt.datetime.now(dt.timezone.utc)
    chosen = found
    if run is not None:
        chosen = [i for i in chosen if i.run == run]
    if older_than is not None:
        chosen = [i for i in chosen if i.created is None
                  or (now - i.created).total_seconds() >= older_than]
    if expired:
        chosen = [i for i in chosen if i.expires is None or i.expires <= now]
    return chosen


def cleanup_lines(region: str | None, run: str | None, older_than: str | None,
                  expired: bool, everything: bool) -> list[str]:
    """``sweep cloud cleanup``: terminate the chosen instances; what was done, as lines."""
    if not (run or older_than or expired or everything):
        raise SpecError("sweep cloud cleanup", None, "no instance chosen",
                        "pass --run ID, --older-than 2h, --expired, or --all")
    seconds = None
    if older_than is not None:
        from dask.utils import parse_timedelta

        try:
            seconds = float(parse_timedelta(older_than, default="h"))
        except (ValueError, KeyError, TypeError):
            raise SpecError("--older-than", older_than, "not a duration",
                            "write e.g. 90m, 2h or 1d") from None
    region = region_or_default(region)
    ec2 = aws.client(region)
    found = aws.instances(ec2)
    chosen = select(found, run, seconds, expired)
    runs = sorted({i.run for i in chosen} | ({run} if run else set()))
    aws.terminate(ec2, [i.id for i in chosen])
    aws.delete_groups(ec2, runs)  # after the instances: AWS refuses a group in use
    if not chosen:
        return [f"sweep: nothing to terminate in {region} ({len(found)} live instance(s) of "
                "sweep runs, none chosen)"]
    return table(chosen) + [f"sweep: terminated {len(chosen)} instance(s) of run(s) "
                            f"{', '.join(runs)} in {region}"]


def requirements_lines() -> list[str]:
    """``sweep cloud requirements``: the pins of a worker image, as requirements.txt."""
    from importlib import metadata

    here = local_versions()
    extra = []
    for name in ("tensorflow-cpu", "tensorflow", "jax", "joblib", "scipy", "pandas",
                 "psutil", "tqdm", "pyyaml"):
        try:
            extra.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return [f"# worker image requirements: the driver's versions (Python {here['python']}, "
            f"keras-sweep {here['sweep']})", *pins(here), *extra]
