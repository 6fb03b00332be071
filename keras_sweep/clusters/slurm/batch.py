"""The whole sweep inside one SLURM allocation: a batch script, and its submission.

Many sites forbid long-running processes on login nodes. ``sweep batch SPEC``
writes a batch script that runs the Dask scheduler, the workers and the driver
(``sweep run``) as steps of one multi-task allocation. They find each other
through a scheduler file in the output folder (a shared filesystem), and the
results land in that folder when the job ends. ``--submit`` hands the script
to ``sbatch`` (``--wait``: and waits for it).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from ...config import Settings
from ...exceptions import ClusterError, SpecError
from .. import run_command
from ..environment import scheduler_config, settings_environment
from .cluster import preflight, queue

SCRIPT_NAME = "sweep-batch.sh"
SPEC_NAME = "batch-spec.yaml"


def batch_workers(settings: Settings) -> int:
    """Worker processes the allocation runs: ``workers``, else jobs x processes, else 2."""
    if settings.workers:
        return settings.workers
    jobs = settings.option("jobs")
    return int(jobs) * int(settings.option("processes", 1)) if jobs else 2


def dask_environment(config: dict[str, Any]) -> dict[str, str]:
    """Dask settings as the ``DASK_...`` variables that set them in another process."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in config.items()}


def write_script(spec: dict[str, Any], name: str, settings: Settings,
                 output: str | Path) -> Path:
    """Write the batch script (and the spec it runs) into the output folder.

    Parameters
    ----------
    spec : dict
        The resolved spec (``Spec.resolved()``) the driver step runs.
    name : str
        The sweep's name (the job is called ``sweep-NAME``).
    settings : Settings
        The resolved slurm settings (queue, account, walltime, memory,
        job_extra_directives, job_script_prologue, interface, python,
        threads_per_worker, workers or jobs x processes).
    output : path
        Results folder; must be on a filesystem the compute nodes share.

    Returns
    -------
    Path
        The script, ready for ``sbatch``.
    """
    opt = settings.option
    folder = Path(output).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    workers = batch_workers(settings)
    threads = settings.threads_per_worker
    python = str(opt("python") or sys.executable)
    interface, memory = opt("interface"), opt("memory")

    # the driver attaches to the allocation's scheduler; everything else as given
    raw = dict(spec)
    raw["output"] = str(folder)
    # the scheduler listens on the allocation's nodes (interface, e.g. ib0): plain TCP
    # inside the site's network, which attach refuses off-host unless told so
    raw["cluster"] = {"backend": "attach", "workers": workers, "tls": False}
    (folder / SPEC_NAME).write_text(yaml.safe_dump(raw, sort_keys=False))

    directives = [f"--job-name=sweep-{name}", f"--ntasks={workers + 1}",
                  f"--cpus-per-task={threads}", f"--time={opt('walltime')}",
                  f"--output={folder}/sweep-%j.log"]
    if queue(settings):
        directives.append(f"--partition={queue(settings)}")
    if opt("account"):
        directives.append(f"--account={opt('account')}")
    if memory:
        directives.append(f"--mem={_slurm_memory(memory)}")
    directives += list(opt("job_extra_directives") or [])

    iface = f" --interface {shlex.quote(str(interface))}" if interface else ""
    q = shlex.quote
    env = {**settings_environment(settings), **dask_environment(scheduler_config(settings))}
    lines = ["#!/usr/bin/env bash", *[f"#SBATCH {d}" for d in directives], "",
             "# Written by `sweep batch`: scheduler, workers and driver in one allocation.",
             "set -euo pipefail",
             *list(opt("job_script_prologue") or []),
             *[f"export {k}={q(v)}" for k, v in sorted(env.items())],
             f"cd {q(str(folder))}",
             'SCHEDULER_FILE="$PWD/scheduler-${SLURM_JOB_ID}.json"',
             'rm -f "$SCHEDULER_FILE"',
             "stop_steps() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }",
             "trap stop_steps EXIT",
             f"srun --ntasks=1 --cpus-per-task=1 --exact {q(python)} -m "
             f'distributed.cli.dask_scheduler --scheduler-file "$SCHEDULER_FILE" '
             f"--dashboard-address :0{iface} &",
             f"srun --ntasks={workers} --cpus-per-task={threads} --exact {q(python)} -m "
             f'distributed.cli.dask_worker --scheduler-file "$SCHEDULER_FILE" '
             f"--nthreads {threads} --nworkers 1 --nanny --death-timeout 120{iface} &",
             f"{q(python)} -m {__package__.split('.')[0]} run {q(SPEC_NAME)} --no-progress "
             '--set cluster.scheduler_file="$SCHEDULER_FILE"',
             ""]
    script = folder / SCRIPT_NAME
    script.write_text("\n".join(lines))
    script.chmod(0o755)
    return script


def _slurm_memory(memory: Any) -> str:
    """``2 GiB`` -> ``2048M`` (SLURM's --mem wants an integer and a unit)."""
    from dask.utils import parse_bytes

    try:
        return f"{parse_bytes(memory) // 2**20}M"
    except (ValueError, TypeError) as exc:
        raise SpecError("cluster.memory", memory, "not a memory size",
                        "write e.g. memory: 4 GiB") from exc


def submit(script: Path, wait: bool = False) -> tuple[str, int]:
    """``sbatch`` the script; return (job id, exit code of the job if ``wait``, else 0)."""
    preflight(None)
    args = ["sbatch", "--parsable", *(["--wait"] if wait else []), str(script)]
    proc = run_command(args, fix="check the #SBATCH lines against `sinfo`", check=False,
                       timeout=None, cwd=script.parent)
    job_id = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 and not job_id:
        raise ClusterError(f"sbatch refused {script}: {proc.stderr.strip()}\n"
                           "  Fix: check the #SBATCH lines (partition, account, time) "
                           "against `sinfo` and your site's limits.")
    return job_id, proc.returncode
