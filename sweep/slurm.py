"""The ``slurm`` backend: Dask workers as SLURM jobs, through dask-jobqueue.

A thin factory over :class:`dask_jobqueue.SLURMCluster`; sweep adds what an HPC
sweep needs and jobqueue leaves to the user:

- every worker process pinned like a local one (thread variables exported in the
  job script, the same isolation plugin once it connects);
- a worker lifetime shorter than the walltime, staggered, with adaptive scaling
  between ``minimum_jobs`` and ``maximum_jobs``, so jobs that reach their walltime
  (or are cancelled, or preempted) are replaced and their fits retried;
- checks before anything is submitted (``sbatch`` on the PATH, the partition
  exists), and a diagnosis (job states, log tails) when no worker arrives.

Settings come, in this order, from the spec's ``cluster:`` section (or keyword
arguments of :func:`sweep.cluster`), ``sweep.slurm.*`` in ``dask.config``, and
dask-jobqueue's own ``jobqueue.slurm.*``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dask.config

from .clusters import ClusterSettings, Started, register
from .exceptions import ClusterError, SpecError

logger = logging.getLogger(__name__)

#: cluster keys the slurm backend understands (besides the common ones)
OPTIONS = frozenset({
    "queue", "partition", "account", "jobs", "processes", "cores", "memory", "walltime",
    "minimum_jobs", "maximum_jobs", "interface", "job_extra_directives",
    "job_script_prologue", "log_directory", "python", "lifetime_margin",
    "lifetime_stagger", "local_directory", "job_name", "death_timeout",
    "dashboard_address",
})


def _conf(extra: dict[str, Any], key: str) -> Any:
    """Spec/keyword value of ``key``, else ``sweep.slurm.<key>`` from dask.config."""
    if extra.get(key) is not None:
        return extra[key]
    return dask.config.get(f"sweep.slurm.{key.replace('_', '-')}", None)


def parse_walltime(text: str) -> int:
    """Seconds of a SLURM time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        raise SpecError("cluster.walltime", text, "not a SLURM time limit",
                        "write HH:MM:SS, e.g. walltime: '01:00:00' (or D-HH:MM:SS)")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def lifetime(walltime: str, margin: str | None = None,
             stagger: str | None = None) -> tuple[int, int]:
    """Worker lifetime and stagger (seconds) for jobs of ``walltime``.

    A worker retires gracefully ``margin`` before the walltime, minus a random
    share of ``stagger`` (so the workers of a sweep do not all leave at once);
    its running fit is rescheduled and adaptive scaling submits a replacement job.
    By default the margin is 10 % of the walltime (at least 1 minute, at most
    10) and the stagger a quarter of the margin.
    """
    from dask.utils import parse_timedelta

    total = parse_walltime(walltime)
    gap = (parse_timedelta(margin) if margin is not None
           else min(600.0, max(60.0, 0.1 * total)))
    spread = parse_timedelta(stagger) if stagger is not None else gap / 4
    life = int(total - gap)
    if life <= spread or life < 30:
        raise SpecError("cluster.walltime", walltime,
                        f"too short for a worker lifetime (walltime minus {gap:.0f} s margin)",
                        "ask for a longer walltime, or set cluster.lifetime_margin lower")
    return life, int(spread)


def check_options(extra: dict[str, Any]) -> None:
    """Validate slurm options without touching SLURM (called by spec validation)."""
    for key in ("jobs", "processes", "cores", "minimum_jobs", "maximum_jobs"):
        value = extra.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if key == "minimum_jobs" else 1)):
            raise SpecError(f"cluster.{key}", value, "must be a positive integer",
                            f"cluster: {{{key}: 2}}")
    for key in ("job_extra_directives", "job_script_prologue"):
        value = extra.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            raise SpecError(f"cluster.{key}", value, "must be a list of strings",
                            f"cluster: {{{key}: ['--constraint=cpu']}}")
    lo, hi = extra.get("minimum_jobs"), extra.get("maximum_jobs")
    if lo is not None and hi is not None and lo > hi:
        raise SpecError("cluster.minimum_jobs", lo, f"is above maximum_jobs ({hi})",
                        "set minimum_jobs <= maximum_jobs")
    if extra.get("walltime") is not None:
        lifetime(str(extra["walltime"]), extra.get("lifetime_margin"),
                 extra.get("lifetime_stagger"))


def job_options(settings: ClusterSettings) -> tuple[dict[str, Any], int, int]:
    """Keyword arguments of ``SLURMCluster`` and the (minimum, maximum) jobs.

    Pure: builds everything from settings and configuration, runs nothing, so
    a spec can be checked (and a job script shown) before any submission.
    """
    extra = dict(settings.extra)
    if extra.get("partition") is not None and extra.get("queue") is None:
        extra["queue"] = extra["partition"]
    check_options(extra)
    processes = int(_conf(extra, "processes") or 1)
    threads = settings.threads_per_worker
    cores = int(_conf(extra, "cores") or processes * threads)
    if cores < processes * threads:
        raise SpecError("cluster.cores", cores,
                        f"fewer cores than processes x threads ({processes} x {threads})",
                        f"set cores: {processes * threads} (or fewer processes/threads)")
    memory = _conf(extra, "memory") or f"{processes * 2} GiB"
    walltime = str(_conf(extra, "walltime"))
    life, stagger = lifetime(walltime, _conf(extra, "lifetime_margin"),
                             _conf(extra, "lifetime_stagger"))
    jobs = _conf(extra, "jobs")
    if jobs is None:
        jobs = (math.ceil(settings.requested_workers / processes)
                if settings.requested_workers else 2)
    minimum = int(_conf(extra, "minimum_jobs") if _conf(extra, "minimum_jobs") is not None
                  else jobs)
    maximum = int(_conf(extra, "maximum_jobs") or max(jobs, minimum))
    interface = _conf(extra, "interface")
    env = settings.environment
    prologue = [f"export {k}={v}" for k, v in sorted(env.items())]
    prologue += list(_conf(extra, "job_script_prologue") or [])
    kwargs: dict[str, Any] = {
        "queue": _conf(extra, "queue"),
        "account": _conf(extra, "account"),
        "cores": cores,
        "processes": processes,
        "memory": memory,
        "walltime": walltime,
        "interface": interface,
        "job_name": _conf(extra, "job_name") or "sweep-worker",
        "job_extra_directives": list(_conf(extra, "job_extra_directives") or []),
        "job_script_prologue": prologue,
        "worker_extra_args": ["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"],
        "log_directory": _conf(extra, "log_directory"),
        "python": _conf(extra, "python"),
        "local_directory": _conf(extra, "local_directory"),
        "death_timeout": _conf(extra, "death_timeout"),
        "scheduler_options": {
            **({"interface": interface} if interface else {}),
            "dashboard_address": _conf(extra, "dashboard_address") or ":0",
        },
    }
    return {k: v for k, v in kwargs.items() if v is not None}, minimum, maximum


def preflight(queue: str | None) -> None:
    """Fail early, with the fix, when SLURM cannot take jobs from here."""
    if shutil.which("sbatch") is None:
        raise ClusterError(
            "the slurm backend needs SLURM's `sbatch` on the PATH, and it is not there.\n"
            "  Fix: run sweep on a login node of your SLURM cluster (or `module load slurm`); "
            "to try SLURM on this machine, run cluster/slurm/up as root.")
    if queue is None:
        return
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R", "-p", str(queue)], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`sinfo` failed: {exc}\n  Fix: check that SLURM's controller "
                           "answers (`sinfo`).") from exc
    if out.returncode != 0 or not out.stdout.strip():
        known = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                               timeout=30).stdout.split()
        raise ClusterError(
            f"SLURM partition {queue!r} does not exist{': ' + out.stderr.strip() if out.stderr.strip() else ''}.\n"  # noqa: E501
            f"  Fix: set cluster.queue to one of: {', '.join(sorted(set(known))) or '(none)'}")


def diagnose(cluster: Any) -> str:
    """Job states and log tails of ``cluster``'s jobs, for a 'no worker arrived' error."""
    ids = [str(job.job_id) for job in list(cluster.workers.values())
           if getattr(job, "job_id", None)]
    lines = []
    if ids:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %R"],
                             capture_output=True, text=True, timeout=30)
        states = out.stdout.strip() or "(no longer in the queue: ended or failed at start)"
        lines.append("  SLURM jobs (id, state, reason):\n    " + states.replace("\n", "\n    "))
    else:
        lines.append("  no SLURM job was submitted (see the error above)")
    folder = getattr(cluster, "_dummy_job", None)
    log_dir = getattr(folder, "log_directory", None)
    for job_id in ids[:2]:
        for path in sorted(Path(log_dir or ".").glob(f"*{job_id}*")):
            tail = path.read_text(errors="replace").splitlines()[-8:]
            lines.append(f"  tail of {path}:\n    " + "\n    ".join(tail))
    if not log_dir:
        lines.append("  (set cluster.log_directory to keep the workers' logs)")
    return "\n".join(lines)


def _import_slurm_cluster() -> Any:
    """``dask_jobqueue.SLURMCluster``, without the SIGINT handler its import installs.

    dask-jobqueue's ``runner`` module replaces the SIGINT handler with
    ``sys.exit()`` when imported: Ctrl-C would then exit with status 0 and skip
    our clean-up. The previous handler is put back.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    from dask_jobqueue import SLURMCluster

    if main:
        if previous is None or getattr(previous, "__module__", "") == "dask_jobqueue.runner":
            previous = signal.default_int_handler
        signal.signal(signal.SIGINT, previous)
    return SLURMCluster


@register("slurm", options=OPTIONS, check=check_options)
def slurm(settings: ClusterSettings) -> Started:
    """Workers as SLURM jobs (dask-jobqueue's ``SLURMCluster``), adaptive between bounds."""
    kwargs, minimum, maximum = job_options(settings)
    preflight(kwargs.get("queue"))
    if kwargs.get("log_directory"):
        Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    SLURMCluster = _import_slurm_cluster()
    try:
        with dask.config.set(settings.scheduler_config):
            cluster = SLURMCluster(**kwargs)
    except Exception as exc:
        raise ClusterError(f"could not set up the SLURM cluster: {exc}\n"
                           "  Fix: check the cluster: options against `sinfo`.") from exc
    logger.info("SLURM job script:\n%s", cluster.job_script())
    try:
        cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum, interval="2s",
                      wait_count=10)
    except Exception:
        cluster.close()
        raise
    processes = int(kwargs["processes"])
    return Started(cluster, cluster.scheduler_address, expected_workers=max(1, minimum) *
                   processes, max_workers=maximum * processes,
                   diagnose=lambda: diagnose(cluster))
