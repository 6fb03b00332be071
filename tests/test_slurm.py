"""The slurm backend against a real single-node SLURM (cluster/slurm/up).

scripts/test starts SLURM when run as root. Without it these tests skip, unless
SWEEP_REQUIRE_SERVICES is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.config
import numpy as np
import pytest
from conftest import TESTS, sweep_env

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


def _job_states(name: str = JOB_NAME) -> dict[str, str]:
    """State of each worker job SLURM still knows, ended ones too (``MinJobAge``, 30 s
    here, after their end): ``{"12": "RUNNING", "11": "COMPLETED", ...}``."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", "all", "-o", "%i %T"],
                         capture_output=True, text=True, timeout=10)
    return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())


@contextlib.contextmanager
def _jobs_seen(every: float = 0.3, name: str = JOB_NAME) -> Iterator[dict[str, str]]:
    """Within the block, collect the ids of every worker job squeue shows, each with the
    last state seen (a job that ended within the block: how it ended)."""
    seen: dict[str, str] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_job_states(name))
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
               timeout: float = 180, when: Callable[[], bool] = lambda: True,
               name: str = JOB_NAME) -> Iterator[list[str]]:
    """Within the block, ``act(job)`` once on the first worker job, as soon as ``jobs``
    jobs run, the sweep's journal holds ``fits`` fits and ``when()`` is true; yields the
    jobs acted on."""
    from test_fault_tolerance import journal_count

    done: list[str] = []

    def watch() -> None:
        journal = Path(spec.output) / "journal.sqlite"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = _jobs(name)
            if len(running) >= jobs and journal_count(journal) >= fits and when():
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


def _spec(tmp_path: Path, backend: dict, epochs: int = 1, grid=None, model=None,
          **extra) -> specmod.Spec:
    return specmod.load({
        "name": "slurm-test",
        "data": {"dataset": "breast_cancer"},
        "model": model or {"builder": "mlp", "params": {"neurons": 4}},
        "fit": {"epochs": epochs, "batch_size": 64},
        "param_grid": grid or {"model__neurons": [2, 4]},
        "cv": 3,
        "seed": 11,
        "cluster": backend,
        "output": str(tmp_path / backend["backend"]),
        **extra,
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
def test_the_sweep_starts_on_the_first_job_when_min_workers_says_so(slurm, tmp_path):
    """Two jobs asked, room on the node for one (each takes all 8 of its CPUs): with
    ``min_workers: 1`` the sweep runs on the job that started while the other waits in
    the queue (without it, the sweep would wait for both: startup-timeout 60 s); the
    waiting job is cancelled with the cluster."""
    states: list[str] = []
    spec = _spec(tmp_path, {**SLURM, "cores": 8, "min_workers": 1})
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            out = subprocess.run(["squeue", "-h", "-n", JOB_NAME, "-o", "%T"],
                                 capture_output=True, text=True, timeout=10)
            states.append(" ".join(sorted(out.stdout.split())))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with dask.config.set({"sweep.cluster.startup-timeout": 60}):
            result = run(spec, progress=False, echo=lambda _: None)
    finally:
        stop.set()
        watcher.join()
    assert not result.failed and len(result.search.cv_results_["params"]) == 2
    assert "PENDING RUNNING" in states, states  # one job ran while the other waited
    assert "RUNNING RUNNING" not in states, states
    assert _wait_no_jobs() == []


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


#: worker jobs that import tests/tiny_models.py, and start on a slow or loaded machine
#: too: death_timeout also bounds a worker's start (the nanny waits that long for its
#: worker to import TensorFlow and join), and sweep's 15 s failed every job here while
#: other tests loaded the machine
TINY_JOBS = {"job_script_prologue": [f"export PYTHONPATH={TESTS}"], "death_timeout": 60}
#: Dask closes the job of a worker that left (retired, or its job ended) only
#: distributed.deploy.lost-worker-timeout (15 s) later, and only then does adaptive
#: scaling submit its replacement: 1 s spares these tests that wait
QUICK_REPLACEMENT = {"distributed.deploy.lost-worker-timeout": "1s"}


def _own_name(test: str) -> str:
    """A job name of this test run's own: squeue shows its jobs, not those of another
    run of the suite on the same SLURM."""
    return f"sweep-{test}-{os.getpid()}"


@pytest.mark.slow
def test_workers_retire_before_walltime_and_are_replaced(slurm, tmp_path):
    """Jobs of 1 minute walltime whose workers retire 20 s before it: replacement jobs
    take over, and the sweep loses nothing.

    Each fit sleeps 1.25 s on its worker until fits have started in a third job
    (tests/tiny_models.py:slept_until_jobs), then they run at full speed. A worker
    lives 40 +- 3 s from its start (lifetime margin 20 s, stagger 3 s), so each of the
    2 first workers finishes at most 34 of the 72 fits: a replacement must take over,
    whatever the machine's speed. A fit is far shorter than a worker's life, even less
    its start (30 s of it on this machine under a load of 8), so a retirement costs at
    most the rerun of a short fit (fits of 80 CPU-bound epochs once outlasted workers
    that spent most of their 40 s starting: each was cut short by its worker's
    retirement and sent again, for 1353 s in CI). The candidates differ in learning
    rate only: one kind of model, traced once per worker, so the fits after the sleeps
    take a fraction of a second."""
    pause, candidates = 1.25, 24
    name, jobs, logs = _own_name("retire"), tmp_path / "jobs", tmp_path / "logs"
    spec = _spec(tmp_path, {**SLURM, **TINY_JOBS, "job_name": name, "log_directory": str(logs),
                            "walltime": "00:01:00", "lifetime_margin": "20s",
                            "lifetime_stagger": "3s"},
                 model={"builder": "tiny_models:slept_until_jobs",
                        "params": {"neurons": 4, "pause": pause, "jobs": str(jobs), "until": 3}},
                 grid={"optimizer__learning_rate": [k / 1000 for k in range(1, 1 + candidates)]},
                 refit=False, report=False)
    with dask.config.set(QUICK_REPLACEMENT), _jobs_seen(0.5, name) as seen:
        result = run(spec, progress=False, echo=lambda _: None)
    retired = sorted(log.name for log in logs.iterdir()
                     if "Reason: worker-lifetime-reached" in log.read_text(errors="replace"))
    nanny_of = {job.name: job.read_text() for job in jobs.iterdir()}  # jobs that ran fits
    first = sorted(seen, key=int)[:2]
    ran = collections.Counter("first" if f.nanny in {nanny_of.get(j) for j in first}
                              else "replacement" for f in result.fits)
    print(f"\nworker jobs, the last state seen: {seen}; logs of retired workers: {retired}; "
          f"fits per job: {ran}")
    assert not result.failed, [f.fit_error for f in result.failed]
    assert len(result.search.cv_results_["params"]) == candidates
    assert all(np.isfinite(result.search.cv_results_["mean_test_score"]))
    # a retirement is no worker death: the fit it cut short is sent again, not charged
    assert not [f.lost_runs for f in result.fits if f.lost_runs]
    # workers left at the end of their lifetime, and replacement jobs ran fits
    assert retired, f"no worker's log says it reached its lifetime: {sorted(logs.iterdir())}"
    assert ran["replacement"] > 0 and len(seen) > 2, (ran, seen, nanny_of)
    assert "TIMEOUT" not in seen.values(), seen  # no job met its walltime
    assert _wait_no_jobs(name) == []


@pytest.mark.slow
def test_a_job_that_hits_its_walltime_mid_fit_costs_only_a_rerun(slurm, tmp_path):
    """A worker job whose time limit ends while it runs a fit: the fit reruns on the
    replacement job, none fails, and the fit's record says why its first run was lost.

    The first fit to start holds its worker (sleeps up to 2 minutes;
    tests/tiny_models.py:first_fit_sleeps). Once it runs, its job's end time is set to
    now (scontrol), so SLURM ends the job as TIMEOUT at its next time-limit check (every
    30 s): mid-fit for sure, whatever the machine's speed. The rerun and the other fits
    do not sleep."""
    hold, name = tmp_path / "held", _own_name("timeout")
    spec = _spec(tmp_path, {**SLURM, **TINY_JOBS, "job_name": name, "jobs": 1,
                            "log_directory": str(tmp_path / "logs")},
                 model={"builder": "tiny_models:first_fit_sleeps",
                        "params": {"neurons": 4, "hold": str(hold), "hold_for": 120}},
                 grid={"model__neurons": [2, 3]}, refit=False, report=False)
    # EndTime now + 2 s: slurmctld refuses an end time already past when it reads it
    with _mid_sweep(spec, fits=0, jobs=1, when=hold.exists, name=name,
                    act=lambda job: subprocess.run(["scontrol", "update", f"JobId={job}",
                                                    "EndTime=now+2"], check=True)) as cut:
        with dask.config.set(QUICK_REPLACEMENT):
            result = run(spec, progress=False, echo=lambda _: None)
    assert cut, "the sweep ended before the job's limit could be cut"
    assert hold.read_text() == cut[0], "the fit held another job than the one cut"
    state = subprocess.run(["scontrol", "show", "job", cut[0]], capture_output=True,
                           text=True).stdout
    assert "JobState=TIMEOUT" in state or not state.strip(), state
    assert not result.failed, [f.fit_error for f in result.failed]
    assert len(result.search.cv_results_["params"]) == 2
    lost = [run for f in result.fits for run in (f.lost_runs or [])]
    print(f"\nruns lost with the timed-out job: {lost}")
    # the held fit, and it alone, lost its run (the only fit out on the 1-thread job)
    assert len(lost) == 1, lost
    assert f"its SLURM job {cut[0]} hit its time limit (walltime)" in lost[0]["reason"], lost
    assert _wait_no_jobs(name) == []


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
