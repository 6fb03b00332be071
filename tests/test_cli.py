"""The command line end to end, as a user runs it (real subprocesses, real cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml
from conftest import sweep_env

pytestmark = pytest.mark.slow


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "keras_sweep", *args], capture_output=True,
                          text=True, timeout=timeout, env=sweep_env())


def test_demo_end_to_end(tmp_path):
    """The demo as a new user sees it: stdout and stderr in one stream, as printed."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "demo", "--workers", "2",
                           "--epochs", "2", "--output", str(out)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600,
                          env={**sweep_env(), "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    # no TensorFlow false alarm from the workers, one finished progress bar, not glued
    # to the refit line (the bar used to be redrawn at 100 % after it)
    assert "E0000" not in proc.stdout and "NodeDef" not in proc.stdout, proc.stdout
    finished = [line for line in proc.stdout.split("\n") if "12/12" in line]
    assert len(finished) == 1 and "sweep:" not in finished[0], finished
    lines = proc.stdout.splitlines()
    best = [line for line in lines if line.startswith("Best: ")]
    assert len(best) == 1 and " using {" in best[0]
    assert sum(" with: {" in line for line in lines) == 4
    assert "dashboard: http://127.0.0.1:" in proc.stdout
    for name in ("cv_results.csv", "cv_results.json", "best.json", "spec.yaml", "fits.csv",
                 "curves.csv", "run.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert f"live report: {out / 'report.html'}" in proc.stdout
    curves = pd.read_csv(out / "curves.csv")  # every fit's loss at each of its 2 epochs
    assert len(curves[curves["metric"] == "loss"]) == 12 * 2
    table = pd.read_csv(out / "cv_results.csv")
    assert len(table) == 4 and {"mean_test_score", "rank_test_score"} <= set(table.columns)
    best_json = json.loads((out / "best.json").read_text())
    assert f"{best_json['best_score']:f}" in best[0]
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["fit"]["epochs"] == 2 and resolved["cluster"]["workers"] == 2
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 12 and fits["pid"].nunique() >= 2
    assert (fits["fit_path"] == "compiled loop").all() and fits["fallback"].isna().all()
    # candidates of one kind of model share a traced loop in each worker
    assert set(fits["trace"]) <= {"new", "reused"} and (fits["trace"] == "reused").any()


def test_csv_spec_with_user_builder_and_xla(tmp_path, pima_path):
    spec = tmp_path / "pima.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: pima
        data: {{csv: {pima_path}, target: -1, header: false}}
        model: {{builder: "tiny_models:tiny"}}
        fit: {{epochs: 1, batch_size: 64}}
        param_grid: {{neurons: [1, 2]}}
        cv: 2
        cluster: {{workers: 2}}
        output: {tmp_path / 'out'}
        """))
    proc = run_cli("run", str(spec), "--no-progress", "--xla", "--no-report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "out" / "report.html").exists() and "report" not in proc.stdout
    assert "768 rows, 8 features" in proc.stdout
    assert "Best: " in proc.stdout and "'model__neurons'" in proc.stdout
    fits = pd.read_csv(tmp_path / "out" / "fits.csv")
    assert (fits["fit_path"] == "compiled loop + XLA").all(), fits["fit_path"]
    made = fits["trace"] == "new"  # XLA compiled then, not when a later fit reused it
    assert made.any() and (fits.loc[made, "trace_seconds"] > 0).all()


def test_help_is_complete():
    top = run_cli("--help", timeout=60)
    assert top.returncode == 0
    for command in ("run", "demo", "validate", "report"):
        assert command in top.stdout
        sub = run_cli(command, "--help", timeout=60)
        assert sub.returncode == 0 and "usage: sweep " + command in sub.stdout
    assert "--workers" in run_cli("run", "--help", timeout=60).stdout


def test_builder_defined_in_users_main_script(tmp_path):
    """The __main__ pickling trap: a build function in the user's own script works."""
    script = tmp_path / "my_search.py"
    script.write_text(textwrap.dedent("""\
        import keras
        from scikeras.wrappers import KerasClassifier
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import GridSearchCV
        import keras_sweep as sweep

        def create_model(neurons=2):
            return keras.Sequential([keras.Input((30,)),
                                     keras.layers.Dense(neurons, activation="relu"),
                                     keras.layers.Dense(1, activation="sigmoid")])

        if __name__ == "__main__":
            X, y = load_breast_cancer(return_X_y=True)
            model = KerasClassifier(model=create_model, loss="binary_crossentropy",
                                    epochs=1, batch_size=64, verbose=0)
            grid = GridSearchCV(model, {"model__neurons": [1, 2]}, cv=2, n_jobs=-1)
            with sweep.cluster("local", workers=2) as session:
                grid.fit(X, y)
            print("candidates", len(grid.cv_results_["params"]), "fits",
                  sum(not f.refit for f in session.fits), "refits",
                  sum(f.refit for f in session.fits))
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the refit too ran on a worker: the builder in the user's script travelled there
    assert "candidates 2 fits 4 refits 1" in proc.stdout
