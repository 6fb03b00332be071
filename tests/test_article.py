"""The article's seven grid searches as specs, and the recipe's Keras-2 names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, sweep_env

from keras_sweep import SpecError
from keras_sweep.spec import reading as specmod

ARTICLE = ROOT / "scripts" / "article"
#: experiment -> number of candidates in the article's grid
GRID_SIZES = {"exp1_batch_epochs": 18, "exp2_optimizer": 7, "exp3_sgd_lr_momentum": 30,
              "exp4_init": 8, "exp5_activation": 8, "exp6_dropout_maxnorm": 50,
              "exp7_neurons": 7}


@pytest.mark.parametrize("name", sorted(GRID_SIZES))
def test_each_article_spec_validates_with_the_articles_grid(name, pima_path):
    spec = specmod.load(ARTICLE / f"{name}.yaml")
    assert spec.n_candidates == GRID_SIZES[name]
    assert spec.cv == 3 and spec.scoring == "accuracy"
    from keras_sweep.spec.datasets import load

    data = load(spec.data, spec.base_dir)
    assert data.X.shape == (768, 8) and Path(data.source).resolve() == pima_path.resolve()


def test_recipe_grid_keys_map_to_todays_names():
    spec = specmod.load(ARTICLE / "exp6_dropout_maxnorm.yaml")
    assert set(spec.param_grid[0]) == {"model__dropout", "model__max_norm"}
    assert spec.aliases == {"dropout_rate": "model__dropout",
                            "weight_constraint": "model__max_norm"}
    lr = specmod.load(ARTICLE / "exp3_sgd_lr_momentum.yaml")
    assert set(lr.param_grid[0]) == {"optimizer__learning_rate", "optimizer__momentum"}
    init = specmod.load(ARTICLE / "exp4_init.yaml")
    assert set(init.param_grid[0]) == {"model__kernel_initializer"}


def test_removed_keras2_name_says_the_new_one():
    raw = {"data": {"dataset": "iris"}, "param_grid": {"build_fn": ["x"]}}
    with pytest.raises(SpecError, match="KerasClassifier\\(model=create_model\\)"):
        specmod.load(raw)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_run_all_quick_writes_the_results_page(tmp_path, pima_path):
    """All seven experiments in --quick mode: full grids, summary lines, PNG pictures
    (on a third of the rows: 426 fits of the full data took 103 s here, 2026-12-07)."""
    out = tmp_path / "article"
    proc = subprocess.run(
        [sys.executable, str(ARTICLE / "run_all.py"), "--quick", "--workers", "2",
         "--sample", "0.33", "--csv", str(pima_path), "--output", str(out)],
        capture_output=True, text=True, timeout=1800, env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Best: ") == len(GRID_SIZES)
    page = (out / "README.md").read_text()
    for name, size in GRID_SIZES.items():
        picture = out / f"{name}.png"
        data = picture.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"## {name}" in page and f"]({name}.png)" in page
        assert f"]({name}/report.html)" in page and (out / name / "report.html").is_file()
        table = pd.read_csv(out / name / "cv_results.csv")
        assert len(table) == size, name
        # every recipe name (optimizers, initializers, activations) trains on Keras 3
        assert table["mean_test_score"].notna().all(), name
    assert "article's best (Keras 2): 0.724 (dropout 0.2, max-norm 4)" in page


def _script(name: str):
    import importlib.util

    sys.path.insert(0, str(ARTICLE))
    try:
        spec = importlib.util.spec_from_file_location(f"article_{name}", ARTICLE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ARTICLE))


@pytest.mark.parametrize("name", sorted(GRID_SIZES))
def test_each_python_script_has_the_same_grid_as_its_spec(name):
    """The plain-Python scripts and the specs describe the same experiments."""
    module = _script(name)
    spec = specmod.load(ARTICLE / f"{name}.yaml")
    script_values = sorted(map(repr, module.param_grid.values()))
    spec_values = sorted(map(repr, (spec.raw["param_grid"]).values()))
    assert script_values == spec_values
    model = module.create_model()  # builds and compiles on Keras 3 with default arguments
    assert model.compiled and model.input_shape == (None, 8)


@pytest.mark.slow
def test_python_script_runs_quick(pima_path):
    proc = subprocess.run(
        [sys.executable, str(ARTICLE / "exp7_neurons.py"), "--quick", "--workers", "2",
         "--csv", str(pima_path)], capture_output=True, text=True, timeout=900,
        env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Best: ") and "'model__neurons'" in lines[0]
    assert sum(" with: {'model__neurons': " in line for line in lines) == 7
