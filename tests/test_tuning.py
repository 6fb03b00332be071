"""Train on a sample (class proportions kept) and coarse-to-fine grids."""

from __future__ import annotations

import numpy as np

from keras_sweep.search.refine import refine_spec, refine_values
from keras_sweep.spec.datasets import stratified_sample


def test_sample_keeps_class_proportions(pima_path):
    data = np.loadtxt(pima_path, delimiter=",")
    X, y = data[:, :8], data[:, 8].astype(int)
    Xs, ys = stratified_sample(X, y, 0.25, seed=3)
    assert len(ys) == round(0.25 * len(y)) and Xs.shape == (len(ys), 8)
    assert abs(ys.mean() - y.mean()) < 0.005
    assert stratified_sample(X, y, 1.0)[0] is X


def test_refine_contains_best_and_is_finer_around_it():
    coarse = [0.001, 0.01, 0.1, 0.2, 0.3]
    fine = refine_values(coarse, 0.1)
    assert 0.1 in fine and min(fine) == 0.01 and max(fine) == 0.2
    assert len(fine) > 3
    assert max(np.diff(fine)) < min(0.1 - 0.01, 0.2 - 0.1)
    assert refine_values([10, 20, 40], 10) == [10, 12, 15, 18, 20]
    assert refine_values(["adam", "sgd"], "adam") == ["adam"]


def test_refine_spec_keeps_everything_else():
    spec = {"name": "s", "param_grid": {"batch_size": [10, 20, 40], "optimizer": ["a", "b"]},
            "output": "out/s", "cv": 3}
    new = refine_spec(spec, {"batch_size": 20, "optimizer": "b"})
    assert new["param_grid"] == {"batch_size": [10, 18, 20, 25, 32, 40], "optimizer": ["b"]}
    assert new["cv"] == 3 and new["output"] == "out/s-fine" and new["name"] == "s-fine"


def test_refine_command_writes_a_valid_finer_spec(tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    from keras_sweep.spec import reading as specmod

    results = tmp_path / "coarse"
    results.mkdir()
    spec = {"name": "coarse", "data": {"dataset": "breast_cancer"},
            "param_grid": {"model__neurons": [4, 16, 64], "optimizer__learning_rate":
                           [0.001, 0.01, 0.1]}, "output": str(results)}
    (results / "spec.yaml").write_text(yaml.safe_dump(spec))
    best = {"model__neurons": 16, "optimizer__learning_rate": 0.01}
    (results / "best.json").write_text(json.dumps({"best_params": best}))
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "refine", str(results)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fine = specmod.load(tmp_path / "coarse-fine.yaml")
    grid = fine.param_grid[0]
    assert 16 in grid["model__neurons"] and min(grid["model__neurons"]) == 4
    assert max(grid["model__neurons"]) == 64 and len(grid["model__neurons"]) >= 5
    assert 0.01 in grid["optimizer__learning_rate"]
    assert fine.output == f"{results}-fine"


def test_refine_command_explains_a_wrong_folder(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "refine", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Fix:" in proc.stderr and "Traceback" not in proc.stderr


def test_sample_field_is_validated():
    import pytest

    from keras_sweep import SpecError
    from keras_sweep.spec import reading as specmod

    with pytest.raises(SpecError, match="data.sample"):
        specmod.load({"data": {"dataset": "iris", "sample": 1.5},
                      "param_grid": {"model__neurons": [2]}})
