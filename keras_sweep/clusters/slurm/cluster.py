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
arguments of :func:`keras_sweep.cluster`), ``sweep.slurm.*`` in ``dask.config`` (both
resolved by :func:`keras_sweep.config.resolve`), and dask-jobqueue's own
``jobqueue.slurm.*``.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import dask.config

from ..._compat.jobqueue import import_slurm_cluster
from ...config import Settings
from ...exceptions import ClusterError, SpecError
from .. import Started, run_command
from ..environment import scheduler_config, settings_environment

logger = logging.getLogger(__name__)

#: ``cluster:`` keys of this backend besides the common ones
OPTIONS = frozenset({
    "queue", "partition", "account", "jobs", "processes", "cores", "memory", "walltime",
    "minimum_jobs", "maximum_jobs", "interface", "job_extra_directives",
    "job_script_prologue", "log_directory", "python", "lifetime_margin",
    "lifetime_stagger", "local_directory", "job_name", "death_timeout",
    "dashboard_address",
})


def queue(settings: Settings) -> str | None:
    """The partition: ``queue``, or its SLURM name ``partition``."""
    return settings.option("queue") or settings.option("partition")


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


def check(extra: dict[str, Any]) -> None:
    """Validate slurm options without touching SLURM (spec validation and start)."""
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


def job_options(settings: Settings) -> tuple[dict[str, Any], int, int]:
    """Keyword arguments of ``SLURMCluster`` and the (minimum, maximum) jobs.

    Pure: builds everything from settings, runs nothing, so a spec can be
    checked (and a job script shown) before any submission.
    """
    opt = settings.option
    processes = int(opt("processes", 1))
    threads = settings.threads_per_worker
    cores = int(opt("cores") or processes * threads)
    if cores < processes * threads:
        raise SpecError("cluster.cores", cores,
                        f"fewer cores than processes x threads ({processes} x {threads})",
                        f"set cores: {processes * threads} (or fewer processes/threads)")
    walltime = str(opt("walltime"))
    life, stagger = lifetime(walltime, opt("lifetime_margin"), opt("lifetime_stagger"))
    jobs = opt("jobs")
    if jobs is None:
        jobs = math.ceil(settings.workers / processes) if settings.workers else 2
    minimum = int(opt("minimum_jobs", jobs))
    maximum = int(opt("maximum_jobs") or max(jobs, minimum))
    interface = opt("interface")
    prologue = [f"export {k}={v}" for k, v in sorted(settings_environment(settings).items())]
    prologue += list(opt("job_script_prologue") or [])
    kwargs: dict[str, Any] = {
        "queue": queue(settings),
        "account": opt("account"),
        "cores": cores,
        "processes": processes,
        "memory": opt("memory") or f"{processes * 2} GiB",
        "walltime": walltime,
        "interface": interface,
        "job_name": opt("job_name", "sweep-worker"),
        "job_extra_directives": list(opt("job_extra_directives") or []),
        "job_script_prologue": prologue,
        "worker_extra_args": ["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"],
        "log_directory": opt("log_directory"),
        "python": opt("python"),
        "local_directory": opt("local_directory"),
        "death_timeout": opt("death_timeout"),
        "scheduler_options": {
            **({"interface": interface} if interface else {}),
            "dashboard_address": opt("dashboard_address", ":0"),
        },
    }
    return {k: v for k, v in kwargs.items() if v is not None}, minimum, maximum


def preflight(partition: str | None) -> None:
    """Fail early, with the fix, when SLURM cannot take jobs from here."""
    if shutil.which("sbatch") is None:
        raise ClusterError(
            "the slurm backend needs SLURM's `sbatch` on the PATH, and it is not there.\n"
            "  Fix: run sweep on a login node of your SLURM cluster (or `module load slurm`); "
            "to try SLURM on this machine, run cluster/slurm/up as root.")
    if partition is None:
        return
    fix = "check that SLURM's controller answers (`sinfo`)"
    out = run_command(["sinfo", "-h", "-o", "%R", "-p", str(partition)], fix=fix, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        known = run_command(["sinfo", "-h", "-o", "%R"], fix=fix).stdout.split()
        why = f": {out.stderr.strip()}" if out.stderr.strip() else ""
        raise ClusterError(
            f"SLURM partition {partition!r} does not exist{why}.\n"
            f"  Fix: set cluster.queue to one of: {', '.join(sorted(set(known))) or '(none)'}")


#: SLURM job states that end a job, as a worker's death reason says them
JOB_ENDS = {
    "TIMEOUT": "hit its time limit (walltime)",
    "CANCELLED": "was cancelled (scancel, or an administrator)",
    "PREEMPTED": "was preempted by a higher-priority job",
    "NODE_FAIL": "lost its node (node failure)",
    "OUT_OF_MEMORY": "ran out of its memory allocation",
    "FAILED": "failed",
    "BOOT_FAIL": "failed to boot its node",
    "DEADLINE": "passed its deadline",
}


def job_end(job: str) -> str | None:
    """Why SLURM job ``job`` ended ("its SLURM job 12 hit its time limit (walltime)"),
    from ``scontrol show job`` (kept ``MinJobAge`` seconds after the end) or, on
    clusters with accounting, ``sacct``; None when SLURM does not say."""
    state, match = None, None
    try:
        if shutil.which("scontrol"):
            out = run_command(["scontrol", "-o", "show", "job", job], fix="", check=False,
                              timeout=10)
            match = re.search(r"\bJobState=(\S+)", out.stdout)
        if match is None and shutil.which("sacct"):
            out = run_command(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], fix="",
                              check=False, timeout=10)
            match = re.match(r"\s*([A-Z_]+)", out.stdout)
    except ClusterError:  # SLURM did not answer: the reason stays the generic one
        return None
    if match is not None:
        state = match.group(1).split()[0]
    if state is None or state not in JOB_ENDS:
        return None
    return f"its SLURM job {job} {JOB_ENDS[state]}"


def diagnose(cluster: Any, log_dir: str | None) -> str:
    """Job states and log tails of ``cluster``'s jobs, for a 'no worker arrived' error."""
    ids = [str(job.job_id) for job in list(cluster.workers.values())
           if getattr(job, "job_id", None)]
    lines = []
    if ids:
        out = run_command(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %R"],
                          fix="check that SLURM's controller answers (`squeue`)", check=False)
        states = out.stdout.strip() or "(no longer in the queue: ended or failed at start)"
        lines.append("  SLURM jobs (id, state, reason):\n    " + states.replace("\n", "\n    "))
    else:
        lines.append("  no SLURM job was submitted (see the error above)")
    for job_id in ids[:2]:
        for path in sorted(Path(log_dir or ".").glob(f"*{job_id}*")):
            tail = path.read_text(errors="replace").splitlines()[-8:]
            lines.append(f"  tail of {path}:\n    " + "\n    ".join(tail))
    if not log_dir:
        lines.append("  (set cluster.log_directory to keep the workers' logs)")
    return "\n".join(lines)


def start(settings: Settings) -> Started:
    """Workers as SLURM jobs (dask-jobqueue's ``SLURMCluster``), adaptive between bounds."""
    kwargs, minimum, maximum = job_options(settings)
    preflight(kwargs.get("queue"))
    if kwargs.get("log_directory"):
        Path(kwargs["log_directory"]).mkdir(parents=True, exist_ok=True)
    SLURMCluster = import_slurm_cluster()
    try:
        with dask.config.set(scheduler_config(settings)):
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
                   diagnose=lambda: diagnose(cluster, _log_directory(kwargs)),
                   explain_job=job_end)


def _log_directory(kwargs: dict[str, Any]) -> str | None:
    """Where the jobs' logs go: ours, else dask-jobqueue's ``jobqueue.slurm.log-directory``."""
    return kwargs.get("log_directory") or dask.config.get("jobqueue.slurm.log-directory", None)
