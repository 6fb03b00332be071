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
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .clusters import ClusterSettings
from .exceptions import ClusterError, SpecError
from .isolation import worker_environment
from .slurm import _conf, preflight
from .spec import Spec

SCRIPT_NAME = "sweep-batch.sh"
SPEC_NAME = "batch-spec.yaml"


def batch_workers(spec: Spec) -> int:
    """Worker processes the allocation runs: ``workers``, else jobs x processes, else 2."""
    cluster = spec.cluster
    if cluster.get("workers"):
        return int(cluster["workers"])
    processes = int(_conf(cluster, "processes") or 1)
    jobs = _conf(cluster, "jobs")
    return int(jobs) * processes if jobs else 2


def write_script(spec: Spec, output: str | Path | None = None) -> Path:
    """Write the batch script (and the spec it runs) into the output folder.

    Parameters
    ----------
    spec : Spec
        A validated spec; its ``cluster:`` section gives the SLURM options
        (queue, account, walltime, memory, job_extra_directives,
        job_script_prologue, interface, python, threads_per_worker).
    output : path, optional
        Results folder (default: the spec's ``output``). Must be on a
        filesystem the compute nodes share.

    Returns
    -------
    Path
        The script, ready for ``sbatch``.
    """
    cluster = {k: v for k, v in spec.cluster.items() if k != "backend"}
    if cluster.get("partition") is not None and cluster.get("queue") is None:
        cluster["queue"] = cluster["partition"]
    folder = Path(output or spec.output).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    workers = batch_workers(spec)
    threads = int(cluster.get("threads_per_worker") or 1)
    settings = ClusterSettings(workers=workers, threads_per_worker=threads,
                               keras_backend=str(cluster.get("keras_backend") or "tensorflow"),
                               max_retries=spec.max_retries)
    python = str(_conf(cluster, "python") or sys.executable)
    interface = _conf(cluster, "interface")
    memory = _conf(cluster, "memory")

    # the driver attaches to the allocation's scheduler; everything else as given
    raw = spec.resolved()
    raw["output"] = str(folder)
    # the scheduler listens on the allocation's nodes (interface, e.g. ib0): plain TCP
    # inside the site's network, which attach refuses off-host unless told so
    raw["cluster"] = {"backend": "attach", "workers": workers, "tls": False}
    spec_path = folder / SPEC_NAME
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    directives = [f"--job-name=sweep-{spec.name}", f"--ntasks={workers + 1}",
                  f"--cpus-per-task={threads}", f"--time={_conf(cluster, 'walltime')}",
                  f"--output={folder}/sweep-%j.log"]
    if _conf(cluster, "queue"):
        directives.append(f"--partition={_conf(cluster, 'queue')}")
    if _conf(cluster, "account"):
        directives.append(f"--account={_conf(cluster, 'account')}")
    if memory:
        directives.append(f"--mem={_slurm_memory(memory)}")
    directives += list(_conf(cluster, "job_extra_directives") or [])

    iface = f" --interface {shlex.quote(str(interface))}" if interface else ""
    q = shlex.quote
    env = {**worker_environment(threads, settings.keras_backend),
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(spec.max_retries),
           "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
    lines = ["#!/usr/bin/env bash", *[f"#SBATCH {d}" for d in directives], "",
             "# Written by `sweep batch`: scheduler, workers and driver in one allocation.",
             "set -euo pipefail",
             *list(_conf(cluster, "job_script_prologue") or []),
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
             f"{q(python)} -m sweep run {q(SPEC_NAME)} --no-progress "
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
    proc = subprocess.run(args, capture_output=True, text=True, cwd=script.parent)
    job_id = proc.stdout.strip().split(";")[0]
    if proc.returncode != 0 and not job_id:
        raise ClusterError(f"sbatch refused {script}: {proc.stderr.strip()}\n"
                           "  Fix: check the #SBATCH lines (partition, account, time) "
                           "against `sinfo` and your site's limits.")
    return job_id, proc.returncode
