"""Bad input: one clear message naming the field, the value and the fix; exit code 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keras_sweep import ClusterError, DataError, SpecError
from keras_sweep.spec import reading as specmod
from keras_sweep.spec.datasets import load

BASE = {"data": {"dataset": "breast_cancer"}, "param_grid": {"model__neurons": [2, 4]}}


def spec_with(**changes):
    raw = {**BASE, **changes}
    return {k: v for k, v in raw.items() if v is not None}


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (spec_with(epochz=3), "epochz", "unknown field"),
        (spec_with(cv="three"), "cv", "wrong type"),
        (spec_with(cv=1), "cv", "at least 2"),
        (spec_with(param_grid={}), "param_grid", "empty"),
        (spec_with(param_grid=None), "param_grid", "needs a parameter grid"),
        (spec_with(param_grid={"model__neurons": []}), "param_grid.model__neurons",
         "non-empty list"),
        (spec_with(param_grid={"model__neuronz": [1]}), "param_grid.model__neuronz",
         "no argument 'neuronz'"),
        (spec_with(param_grid={"colour": [1]}), "param_grid.colour", "not a parameter"),
        (spec_with(data={"dataset": "mnist"}), "data.dataset", "bundled"),
        (spec_with(data={"dataset": "iris", "csv": "x.csv"}), "data", "exactly one"),
        (spec_with(model={"builder": "no_such_module:build"}), "model.builder",
         "cannot be imported"),
        (spec_with(model={"builder": "tiny_models:nothing"}), "model.builder", "no function"),
        (spec_with(model={"builder": "tiny_models"}), "model.builder", "module:function"),
        (spec_with(model={"params": {"wings": 2}}), "model.params.wings", "no argument"),
        (spec_with(fit={"epochs": 0}), "fit.epochs", "positive integer"),
        (spec_with(scoring="acuracy"), "scoring", "not a scikit-learn scorer"),
        (spec_with(cluster={"backend": "kubernetes"}), "cluster.backend", "unknown"),
        (spec_with(cluster={"workers": 0}), "cluster.workers", "positive integer"),
        (spec_with(cluster={"worker": 2}), "cluster.worker", "unknown field"),
        (spec_with(max_retries=-1), "max_retries", "0 or more"),
        (spec_with(error_score="sometimes"), "error_score", "nan"),
    ],
)
def test_bad_spec_names_field_and_fix(raw, field, words):
    with pytest.raises(SpecError) as info:
        specmod.load(raw)
    assert info.value.field == field
    message = str(info.value)
    assert words in message and "Fix:" in message


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load({"csv": str(tmp_path / "nope.csv")})


def test_non_numeric_csv(tmp_path):
    path = write(tmp_path, "d.csv", "1,a,0\n2,b,1\n3,c,0\n")
    with pytest.raises(DataError, match="not numeric"):
        load({"csv": str(path)})


def test_header_row_read_as_data_is_explained(tmp_path):
    path = write(tmp_path, "d.csv", "x,z,label\n1,2,0\n2,3,1\n")
    with pytest.raises(DataError, match="header: true"):
        load({"csv": str(path)})


def test_missing_target_column(tmp_path):
    path = write(tmp_path, "d.csv", "x,z,label\n1,2,0\n2,3,1\n")
    with pytest.raises(DataError, match="data.target"):
        load({"csv": str(path), "header": True, "target": "outcome"})


def test_unreadable_csv(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x00" * 10)
    with pytest.raises(DataError):
        load({"csv": str(path)})


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "s.yaml", "data: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        specmod.load(path)


def test_cli_bad_spec_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "s.yaml", """\
        data: {dataset: breast_cancer}
        param_grid: {model__neurons: [2]}
        epochz: 3
        """)
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "epochz" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_data_exits_2_before_any_cluster(tmp_path):
    path = write(tmp_path, "s.yaml", """\
        data: {csv: missing.csv}
        param_grid: {model__neurons: [2]}
        """)
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert "cluster" not in proc.stdout


def test_unguarded_script_gets_the_main_guard_fix(tmp_path):
    script = write(tmp_path, "unguarded.py", """\
        import keras_sweep as sweep
        with sweep.cluster("local", workers=1):
            pass
        """)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr
    assert ClusterError.__name__ in proc.stderr


def test_unknown_backend_in_api():
    import keras_sweep as sweep

    with pytest.raises(ClusterError, match="use one of"):
        with sweep.cluster("kubernetes"):
            pass
