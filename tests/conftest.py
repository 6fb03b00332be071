from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PIMA = ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def pima_path() -> Path:
    assert PIMA.is_file(), f"the article's dataset is expected at {PIMA}"
    return PIMA


@pytest.fixture(scope="session")
def cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype("float32")
    return X, y


@pytest.fixture()
def tiny_classifier():
    from scikeras.wrappers import KerasClassifier
    from tiny_models import tiny

    return KerasClassifier(model=tiny, loss="binary_crossentropy", optimizer="adam",
                           epochs=1, batch_size=64, verbose=0)


def sweep_env() -> dict[str, str]:
    """Environment for subprocesses that run sweep (tests importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def scores(search) -> np.ndarray:
    keys = sorted(k for k in search.cv_results_ if k.startswith("split") and "test" in k)
    return np.array([search.cv_results_[k] for k in keys])
