"""The slurm backend against a real single-node SLURM (cluster/slurm/up).

scripts/test starts SLURM when run as root. Without it these tests skip, unless
SWEEP_REQUIRE_SERVICES is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import sweep_env

from keras_sweep.cli.runner import run
from keras_sweep.clusters.slurm.cluster import job_options, lifetime, parse_walltime
from keras_sweep.exceptions import ClusterError, SpecError
from keras_sweep.spec import reading as specmod

pytestmark = [pytest.mark.slurm]

JOB_NAME = "sweep-worker"


def _slurm_ready() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no SLURM here ({exc}); run cluster/slurm/up as root"
    if "idle" not in out.stdout and "mix" not in out.stdout and "alloc" not in out.stdout:
        return f"SLURM node not ready ({out.stdout.strip() or out.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = _slurm_ready()
    if problem:
        if os.environ.get("SWEEP_REQUIRE_SERVICES"):
            pytest.fail(problem)
        pytest.skip(problem)


def _jobs(name: str = JOB_NAME) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", "PENDING,CONFIGURING,RUNNING",
                          "-o", "%i"], capture_output=True, text=True, timeout=10)
    return out.stdout.split()


@contextlib.contextmanager
def _jobs_seen(every: float = 0.3) -> Iterator[set[str]]:
    """Within the block, collect the ids of every worker job squeue shows."""
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_jobs())
            time.sleep(every)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


@contextlib.contextmanager
def _mid_sweep(spec: specmod.Spec, fits: int, jobs: int, act: Callable[[str], object],
               timeout: float = 180) -> Iterator[list[str]]:
    """Within the block, ``act(job)`` once on the first worker job, as soon as ``jobs``
    jobs run and the sweep's journal holds ``fits`` fits; yields the jobs acted on."""
    from test_fault_tolerance import journal_count

    done: list[str] = []

    def watch() -> None:
        journal = Path(spec.output) / "journal.sqlite"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = _jobs()
            if len(running) >= jobs and journal_count(journal) >= fits:
                act(running[0])
                done.append(running[0])
                return
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield done
    finally:
        watcher.join()


def _wait_no_jobs(name: str = JOB_NAME, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _jobs(name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _spec(tmp_path: Path, backend: dict, epochs: int = 1, grid=None) -> specmod.Spec:
    return specmod.load({
        "name": "slurm-test",
        "data": {"dataset": "breast_cancer"},
        "model": {"builder": "mlp", "params": {"neurons": 4}},
        "fit": {"epochs": epochs, "batch_size": 64},
        "param_grid": grid or {"model__neurons": [2, 4]},
        "cv": 3,
        "seed": 11,
        "cluster": backend,
        "output": str(tmp_path / backend["backend"]),
    })


SLURM = {"backend": "slurm", "queue": "debug", "jobs": 2, "interface": "lo",
         "walltime": "00:30:00", "memory": "2 GiB"}


def _fold_scores(result) -> np.ndarray:
    cv = result.search.cv_results_
    return np.array([cv[f"split{i}_test_score"] for i in range(3)])


# -- pure: options, walltime arithmetic, validation ---------------------------------


def test_walltime_formats():
    assert parse_walltime("90") == 5400
    assert parse_walltime("10:30") == 630
    assert parse_walltime("01:00:00") == 3600
    assert parse_walltime("2-00") == 2 * 86400
    assert parse_walltime("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    with pytest.raises(SpecError, match="HH:MM:SS"):
        parse_walltime("one hour")


def test_lifetime_is_shorter_than_walltime_and_staggered():
    life, stagger = lifetime("01:00:00")
    assert life == 3600 - 360 and stagger == 90
    life, stagger = lifetime("00:02:00", margin="20s", stagger="10s")
    assert (life, stagger) == (100, 10)
    with pytest.raises(SpecError, match="lifetime_margin"):
        lifetime("00:01:00")


def test_job_options_pin_threads_and_set_lifetime():
    from keras_sweep.config import resolve

    settings = resolve(backend="slurm", workers=4, threads_per_worker=2, partition="gpu",
                       processes=2, walltime="02:00:00",
                       job_script_prologue=["module load python"])
    kwargs, lo, hi = job_options(settings)
    assert kwargs["queue"] == "gpu" and kwargs["cores"] == 4 and kwargs["processes"] == 2
    assert (lo, hi) == (2, 2)  # 4 workers / 2 per job
    assert "export OMP_NUM_THREADS=2" in kwargs["job_script_prologue"]
    assert "export TF_NUM_INTRAOP_THREADS=2" in kwargs["job_script_prologue"]
    assert kwargs["job_script_prologue"][-1] == "module load python"
    assert kwargs["worker_extra_args"][:2] == ["--lifetime", f"{7200 - 600}s"]


@pytest.mark.parametrize("cluster, field", [
    ({"backend": "slurm", "jobs": 0}, "cluster.jobs"),
    ({"backend": "slurm", "walltime": "soon"}, "cluster.walltime"),
    ({"backend": "slurm", "minimum_jobs": 5, "maximum_jobs": 2}, "cluster.minimum_jobs"),
    ({"backend": "slurm", "job_extra_directives": "--qos=x"}, "cluster.job_extra_directives"),
    ({"backend": "slurm", "hosts": ["a"]}, "cluster.hosts"),
])
def test_bad_slurm_options_are_rejected_before_any_job(cluster, field, tmp_path):
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, cluster)
    assert info.value.field == field and "Fix:" in str(info.value)


def test_missing_sbatch_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM commands on it
    with pytest.raises(ClusterError, match="sbatch.*PATH") as info:
        run(_spec(tmp_path, SLURM), progress=False, echo=lambda _: None)
    assert "Fix:" in str(info.value)


# -- real SLURM ----------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_on_slurm_jobs_matches_local_and_leaves_no_job(slurm, tmp_path):
    start = time.perf_counter()
    with _jobs_seen() as seen:
        on_slurm = run(_spec(tmp_path, SLURM), progress=False, echo=lambda _: None)
    wall = time.perf_counter() - start
    assert len(seen) >= 2, f"worker jobs seen in squeue: {seen}"
    assert _wait_no_jobs() == [], "worker jobs left running after the sweep"
    assert not on_slurm.failed
    local = run(_spec(tmp_path, {"backend": "local", "workers": 2}), progress=False,
                echo=lambda _: None)
    np.testing.assert_array_equal(_fold_scores(on_slurm), _fold_scores(local))
    print(f"slurm sweep: {wall:.1f} s wall, jobs {sorted(seen)}")


@pytest.mark.slow
def test_cancelled_worker_job_is_replaced_and_sweep_completes(slurm, tmp_path):
    spec = _spec(tmp_path, SLURM, epochs=3,
                 grid={"model__neurons": [2, 3, 4, 5, 6, 7]})
    with _mid_sweep(spec, fits=2, jobs=2,
                    act=lambda job: subprocess.run(["scancel", job], check=True)) as cancelled:
        result = run(spec, progress=False, echo=lambda _: None)
    assert cancelled, "the sweep ended before a job could be cancelled"
    cv = result.search.cv_results_
    assert len(cv["params"]) == 6
    assert not result.failed, [f.fit_error for f in result.failed]
    assert all(np.isfinite(cv[f"split{i}_test_score"]).all() for i in range(3))
    assert _wait_no_jobs() == []


@pytest.mark.slow
def test_workers_retire_before_walltime_and_are_replaced(slurm, tmp_path):
    """Jobs of 1 minute walltime: workers leave after ~40 s, new jobs take over."""
    spec = _spec(tmp_path, {**SLURM, "walltime": "00:01:00", "lifetime_margin": "20s",
                            "lifetime_stagger": "5s"},
                 epochs=80, grid={"model__neurons": list(range(2, 10))})
    # long enough fits, so the sweep outlives a 40 s worker (24 fits: ~130 s here; 48
    # took 263 s, the slowest test of CI, 2026-11-30)
    spec.fast_path = False
    with _jobs_seen(0.5) as seen:
        result = run(spec, progress=False, echo=lambda _: None)
    assert result.wall_seconds > 45, "the sweep must outlive a worker's lifetime to test this"
    assert len(seen) > 2, f"no replacement job was submitted: {seen}"
    assert not result.failed
    assert len(result.search.cv_results_["params"]) == 8
    assert _wait_no_jobs() == []


@pytest.mark.slow
def test_a_job_that_hits_its_walltime_mid_fit_costs_only_a_rerun(slurm, tmp_path):
    """A worker job whose time limit ends while it runs a fit (its limit cut to a minute
    with scontrol, so SLURM ends it as TIMEOUT): the fit reruns on the replacement job,
    none fails, and the fit's record says why its first run was lost."""
    spec = _spec(tmp_path, {**SLURM, "jobs": 1}, epochs=150,
                 grid={"model__neurons": list(range(2, 10))})
    spec.fast_path = False  # fits of several seconds: the limit ends one mid-way
    with _mid_sweep(spec, fits=1, jobs=1, act=lambda job: subprocess.run(
            ["scontrol", "update", f"JobId={job}", "TimeLimit=1"], check=True)) as cut:
        result = run(spec, progress=False, echo=lambda _: None)
    assert cut, "the sweep ended before the job's limit could be cut"
    state = subprocess.run(["scontrol", "show", "job", cut[0]], capture_output=True,
                           text=True).stdout
    assert "JobState=TIMEOUT" in state or not state.strip(), state
    assert not result.failed, [f.fit_error for f in result.failed]
    assert len(result.search.cv_results_["params"]) == 8
    lost = [run for f in result.fits for run in (f.lost_runs or [])]
    print(f"\nruns lost with the timed-out job: {lost}")
    assert lost, "no fit says its run was lost with the job"
    assert all(f"its SLURM job {cut[0]} hit its time limit (walltime)" in r["reason"]
               for r in lost), lost
    assert _wait_no_jobs() == []


@pytest.mark.slow
def test_one_allocation_batch_script(slurm, tmp_path):
    out = tmp_path / "batch"
    spec_file = tmp_path / "spec.yaml"
    import yaml

    spec = _spec(tmp_path, {**SLURM, "walltime": "00:10:00"})
    spec_file.write_text(yaml.safe_dump(spec.resolved()))
    proc = subprocess.run(
        [sys.executable, "-m", "keras_sweep", "batch", str(spec_file), "--set", f"output={out}",
         "--submit", "--wait"], capture_output=True, text=True, env=sweep_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "sweep-batch.sh").read_text().count("srun ") == 2
    assert (out / "cv_results.csv").is_file() and (out / "best.json").is_file()
    logs = list(out.glob("sweep-*.log"))
    assert logs and "Best:" in logs[0].read_text()
    assert _wait_no_jobs(f"sweep-{spec.name}") == []


@pytest.mark.slow
def test_interrupt_cancels_jobs(slurm, tmp_path):
    import yaml

    spec = _spec(tmp_path, SLURM, epochs=300, grid={"model__neurons": [2, 3, 4, 5]})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.resolved()))
    # A child inherits an ignored SIGINT (a non-interactive shell's background job,
    # e.g. `.ci/run &`, starts with SIGINT ignored) and Python then keeps ignoring it:
    # the sweep ran to its end and exited 0. A handler is not inherited, so with one
    # set here the driver starts with Python's default Ctrl-C handling.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "keras_sweep", "run", str(spec_file),
                                 "--no-progress"], env=sweep_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        seen = []
        for line in proc.stdout:  # wait until the workers are up and fits are running
            seen.append(line)
            if "cluster 'slurm' with" in line:
                break
        assert len(_jobs()) >= 2, "".join(seen)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        # it closes in ~20 s here; a sweep that ignored the signal ends with status 0
        output, _ = proc.communicate(timeout=120)
        output = "".join(seen) + output
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert _wait_no_jobs(timeout=15) == [], "Ctrl-C left worker jobs in the queue"


def test_killed_driver_leaves_no_job_behind(slurm, tmp_path):
    import yaml

    spec = _spec(tmp_path, SLURM, epochs=300, grid={"model__neurons": [2, 3, 4, 5]})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.resolved()))
    proc = subprocess.Popen([sys.executable, "-m", "keras_sweep", "run", str(spec_file),
                             "--no-progress"], env=sweep_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "cluster 'slurm' with" in line:
                break
        assert len(_jobs()) >= 2, "".join(seen)
        time.sleep(2)
        proc.kill()  # SIGKILL: no clean-up runs in the driver (nor its scheduler)
        proc.wait()
        killed = time.monotonic()
        left = _wait_no_jobs(timeout=60)
        gone = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert left == [], "worker jobs outlived the killed driver by a minute"
    print(f"\nworker jobs ended {gone:.1f} s after the driver's SIGKILL")
    assert gone < 30, f"jobs ended {gone:.1f} s after the driver died (death-timeout 15 s)"


@pytest.mark.slow
def test_unknown_partition_and_no_worker_errors(slurm, tmp_path, monkeypatch):
    with pytest.raises(ClusterError, match="partition 'nope' does not exist") as info:
        run(_spec(tmp_path, {**SLURM, "queue": "nope"}), progress=False, echo=lambda _: None)
    assert "debug" in str(info.value)  # the fix lists the partitions there are

    monkeypatch.setenv("DASK_SWEEP__CLUSTER__STARTUP_TIMEOUT", "8")
    import dask.config

    dask.config.refresh()
    try:
        logs = tmp_path / "logs"
        with pytest.raises(ClusterError) as info:
            run(_spec(tmp_path, {**SLURM, "python": "/nonexistent/python",
                                 "log_directory": str(logs)}),
                progress=False, echo=lambda _: None)
    finally:
        monkeypatch.delenv("DASK_SWEEP__CLUSTER__STARTUP_TIMEOUT")
        dask.config.refresh()
    message = str(info.value)
    assert "0 of 2 worker(s)" in message and "Fix:" in message
    assert "SLURM jobs" in message and "/nonexistent/python" in message  # the log's tail
    assert _wait_no_jobs() == []
