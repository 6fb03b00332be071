"""Crashes cost only the fits that were running: driver kill + resume, worker kill, failing fits."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import scores, sweep_env
from sklearn.model_selection import GridSearchCV, StratifiedKFold

import keras_sweep as sweep

pytestmark = pytest.mark.slow


def write_spec(tmp_path, name, output, builder="tiny_models:tiny", grid=None, extra=""):
    """A spec of 6 candidates x 3 folds over the learning rate (one model structure: each
    worker traces it once), or over ``neurons`` when ``grid`` is given."""
    grid = f"{{neurons: {grid}}}" if grid else \
        "{optimizer__learning_rate: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{dataset: breast_cancer, scale: true}}
        model: {{builder: "{builder}"}}
        fit: {{epochs: 3, batch_size: 16}}
        param_grid: {grid}
        cv: 3
        seed: 5
        cluster: {{workers: 2}}
        output: {output}
        """) + extra)
    return spec


def sweep_cmd(spec):
    return [sys.executable, "-m", "keras_sweep", "run", str(spec), "--no-progress"]


def journal_count(path):
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM fits").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def split_scores(output):
    results = json.loads((output / "cv_results.json").read_text())
    return np.array([results[f"split{i}_test_score"] for i in range(3)])


def test_driver_sigkill_then_rerun_runs_only_unfinished_fits(tmp_path):
    out = tmp_path / "interrupted"
    spec = write_spec(tmp_path, "interrupted", out)
    proc = subprocess.Popen(sweep_cmd(spec), env=sweep_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "journal.sqlite"
    deadline = time.monotonic() + 300
    while journal_count(journal) < 5 and time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local cluster die at once
    proc.wait()
    done = journal_count(journal)
    assert 5 <= done < 18, done

    rerun = subprocess.run(sweep_cmd(spec), env=sweep_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done} fit(s) came from the journal, {18 - done} ran now" in rerun.stdout
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 18 and int(fits["resumed"].fillna(False).sum()) == done

    clean_out = tmp_path / "clean"
    clean = subprocess.run(sweep_cmd(write_spec(tmp_path, "clean", clean_out)), env=sweep_env(),
                           capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    np.testing.assert_array_equal(split_scores(out), split_scores(clean_out))
    print(f"\nresume: {done} of 18 fits came from the journal, {18 - done} ran on the rerun")


def test_ctrl_c_says_what_was_kept_and_nothing_about_lost_workers(tmp_path):
    out = tmp_path / "ctrl-c"
    spec = write_spec(tmp_path, "ctrl-c", out)
    # a child inherits an ignored SIGINT (as under `.ci/run &`), not a handler: set one
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(sweep_cmd(spec), env=sweep_env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    journal = out / "journal.sqlite"
    deadline = time.monotonic() + 300
    while journal_count(journal) < 4 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    done = journal_count(journal)
    assert f"interrupted: {done} of 18 fits finished and journaled, {18 - done} cancelled; " \
           "rerun the same command to continue" in err, err[-3000:]
    assert "worker lost" not in err and "Traceback" not in err, err[-3000:]


def test_a_changed_spec_does_not_reuse_the_journal(tmp_path):
    out = tmp_path / "out"
    first = subprocess.run(sweep_cmd(write_spec(tmp_path, "a", out, grid="[1, 2]")),
                           env=sweep_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    changed = write_spec(tmp_path, "a", out, grid="[1, 2]").read_text().replace(
        "seed: 5", "seed: 6")
    (tmp_path / "b.yaml").write_text(changed)
    second = subprocess.run(sweep_cmd(tmp_path / "b.yaml"), env=sweep_env(),
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "came from the journal" not in second.stdout
    assert journal_count(out / "journal.sqlite") == 12


def _slow_search(estimator):
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return GridSearchCV(estimator, {"model__neurons": [1, 2, 3, 4]}, cv=cv, n_jobs=-1)


def test_worker_sigkill_mid_fit_sweep_completes_with_same_results(cancer, tiny_classifier):
    X, y = cancer
    tiny_classifier.set_params(epochs=8, batch_size=8)
    with sweep.cluster("local", workers=2, seed=3) as session:
        start = time.perf_counter()
        clean = scores(_slow_search(tiny_classifier).fit(X, y))
        clean_seconds = time.perf_counter() - start
        killed = []

        def running() -> dict[str, set[str]]:
            return {a: {str(k) for k in keys if "fit_and_score" in str(k)}
                    for a, keys in session.client.processing().items()}

        def kill_a_busy_worker():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not killed:
                busy = {a: keys for a, keys in running().items() if keys}
                if busy and len(session.fits) > 12 + 1:
                    address, keys = next(iter(busy.items()))
                    pid = session.worker_reports()[address]["pid"]
                    # still on the same fit (these fits last ~0.5 s: a worker between
                    # two fits runs none, and its death would cost no fit a run)
                    if running().get(address) == keys:
                        os.kill(pid, signal.SIGKILL)
                        killed.extend([pid, address])
                time.sleep(0.02)

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        start = time.perf_counter()
        faulty = scores(_slow_search(tiny_classifier).fit(X, y))
        faulty_seconds = time.perf_counter() - start
        killer.join()
        fits = session.fits[12:]
    assert killed, "no worker was killed"
    assert killed[0] not in {f.pid for f in fits[-4:]}
    assert not [f for f in fits if f.fit_error]
    # the fit it was running says so, and why; no other fit lost a run
    retried = [f for f in fits if f.lost_runs]
    assert len(retried) == 1, [f.lost_runs for f in retried]
    (death,) = retried[0].lost_runs
    assert death["worker"] == killed[1] and death["reason"].startswith(
        "killed by signal 9 (SIGKILL"), death
    np.testing.assert_array_equal(faulty, clean)
    print(f"\nworker-kill run {faulty_seconds:.1f} s vs fault-free {clean_seconds:.1f} s")


def test_failing_candidate_is_recorded_and_the_rest_finish(tmp_path):
    out = tmp_path / "failing"
    spec = write_spec(tmp_path, "failing", out, builder="tiny_models:explode", grid="[2, 3]")
    proc = subprocess.run(sweep_cmd(spec), env=sweep_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "3 fit(s) failed" in proc.stderr
    assert "neurons=3 is not allowed" in proc.stderr
    assert "allow_failures" in proc.stderr
    fits = pd.read_csv(out / "fits.csv")
    failed = fits[fits["fit_error"].notna()]
    assert len(failed) == 3 and failed["params"].str.contains('"model__neurons": 3').all()
    assert "Traceback" in failed["fit_error"].iloc[0]
    results = pd.read_csv(out / "cv_results.csv")
    assert results["mean_test_score"].isna().sum() == 1
    assert json.loads((out / "best.json").read_text())["best_params"] == {"model__neurons": 2}
    with sqlite3.connect(out / "journal.sqlite") as db:
        errors = db.execute("SELECT COUNT(*) FROM fits WHERE error IS NOT NULL").fetchone()[0]
    assert errors == 3

    allowed = write_spec(tmp_path, "allowed", tmp_path / "allowed",
                         builder="tiny_models:explode", grid="[2, 3]",
                         extra="allow_failures: true\n")
    proc = subprocess.run(sweep_cmd(allowed), env=sweep_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "3 fit(s) failed" in proc.stderr


def test_fit_that_keeps_killing_workers_is_recorded_failed(tmp_path):
    out = tmp_path / "deadly"
    spec = write_spec(tmp_path, "deadly", out, builder="tiny_models:kill_worker",
                      grid="[2, 3]", extra="max_retries: 1\n")
    spec.write_text(spec.read_text().replace("cv: 3", "cv: 2"))
    proc = subprocess.run(sweep_cmd(spec), env=sweep_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "fit(s) failed" in proc.stderr and "worker lost" in proc.stderr, proc.stderr[-3000:]
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 4
    deadly = fits[fits["params"].str.contains('"model__neurons": 3')]
    assert deadly["fit_error"].str.startswith("worker lost").all(), deadly["fit_error"]
    # each of its 2 runs (max_retries 1) died, and the record says how
    assert deadly["fit_error"].str.contains(
        r"died each of the 2 time\(s\).*killed by signal 9 \(SIGKILL").all(), deadly
    assert deadly["lost_runs"].map(lambda x: len(json.loads(x))).eq(2).all()
    # only the fit's own runs count: a fit on the other worker, or waiting, lost none
    harmless = fits[fits["params"].str.contains('"model__neurons": 2')]
    assert harmless["fit_error"].isna().all() and harmless["lost_runs"].isna().all()
    # the sweep went on to the end: results and the journal hold all four fits
    assert len(pd.read_csv(out / "cv_results.csv")) == 2
    with sqlite3.connect(out / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM fits").fetchone()[0] == 4


def test_fit_out_of_memory_says_the_limit_and_the_peak(tmp_path):
    out = tmp_path / "hog"
    spec = write_spec(tmp_path, "hog", out, builder="tiny_models:hog_memory",
                      grid="[2, 3]", extra="max_retries: 0\n")
    spec.write_text(spec.read_text().replace("cv: 3", "cv: 2").replace(
        "cluster: {workers: 2}", 'cluster: {workers: 2, memory_limit: "1.5 GiB"}'))
    proc = subprocess.run(sweep_cmd(spec), env=sweep_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    fits = pd.read_csv(out / "fits.csv")
    hog = fits[fits["params"].str.contains('"model__neurons": 3')]
    assert len(hog) == 2 and hog["worker_lost"].all()
    for error in hog["fit_error"]:
        assert "out of memory: the worker's resident memory reached" in error, error
        assert "of its 1.50 GiB limit" in error, error
        peak = float(error.split("reached ")[1].split(" GiB")[0])
        assert 1.4 < peak < 3.0, error
    assert fits[fits["params"].str.contains('"model__neurons": 2')]["fit_error"].isna().all()


def test_disk_full_stops_cleanly_and_the_journal_resumes(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        out = disk / "out"
        spec = write_spec(tmp_path, "full", out)
        proc = subprocess.Popen(sweep_cmd(spec), env=sweep_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        journal = out / "journal.sqlite"
        deadline = time.monotonic() + 300
        while journal_count(journal) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # the disk fills up mid-sweep
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-3000:]
        assert "cannot write to the journal" in err and "rerun the same command" in err, \
            err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        kept = journal_count(journal)  # still readable
        assert 3 <= kept < 18, kept
        filler.unlink()
        rerun = subprocess.run(sweep_cmd(spec), env=sweep_env(), capture_output=True,
                               text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"{kept} fit(s) came from the journal" in rerun.stdout, rerun.stdout
        print(f"\ndisk full: stopped with {kept} of 18 fits journaled; the rerun finished")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
