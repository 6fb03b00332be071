"""Train on a sample (class proportions kept) and coarse-to-fine grids."""

from __future__ import annotations

import numpy as np

from sweep.tuning import refine_spec, refine_values, stratified_sample


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
