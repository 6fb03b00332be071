"""A loss that becomes NaN or infinite fails the fit at that epoch, with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from scikeras.wrappers import KerasClassifier

from keras_sweep.protocol import TrainingPaths
from keras_sweep.spec.models import mlp
from keras_sweep.worker.fit import isolated_fit
from keras_sweep.worker.setup import enable_determinism
from keras_sweep.worker.training import fastpath
from keras_sweep.worker.training.nonfinite import NonFiniteLossError


@pytest.fixture(scope="module")
def pima(pima_path):
    data = np.loadtxt(pima_path, delimiter=",")
    return data[:200, :8].astype("float32"), data[:200, 8].astype("int64")


def _diverging(epochs: int = 6) -> KerasClassifier:
    # raw (unscaled) features and a huge SGD step: the weights overflow within an epoch
    return KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="sgd",
                           optimizer__learning_rate=1e12, verbose=0, batch_size=20,
                           epochs=epochs, model__neurons=8, model__activation="linear")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled loop", "keras fit"])
def test_diverging_fit_fails_at_the_epoch_it_diverged(pima, compiled):
    X, y = pima
    enable_determinism()
    est = _diverging()
    with pytest.raises(NonFiniteLossError, match=r"loss became (NaN|infinite) at epoch 1\b"):
        with fastpath.enabled(est, TrainingPaths(compiled_loop=compiled)), isolated_fit(3):
            est.fit(X, y)


def test_fail_on_nan_off_trains_to_the_last_epoch_as_keras_does(pima):
    X, y = pima
    enable_determinism()
    est = _diverging(epochs=3)
    with fastpath.enabled(est, TrainingPaths(fail_on_nan=False)), isolated_fit(3):
        est.fit(X, y)
    assert len(est.history_["loss"]) == 3
    assert not np.isfinite(est.history_["loss"]).all()


def test_a_finite_fit_is_untouched_by_the_guard(pima):
    X, y = pima
    enable_determinism()
    runs = []
    for guard in (True, False):
        est = KerasClassifier(model=mlp, loss="binary_crossentropy", optimizer="adam",
                              verbose=0, batch_size=20, epochs=3, model__neurons=4)
        with fastpath.enabled(est, TrainingPaths(fail_on_nan=guard)), isolated_fit(3):
            est.fit(X, y)
        runs.append(np.array(est.history_["loss"]))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.slow
def test_sweep_records_the_diverged_fits_and_finishes_the_rest(tmp_path, pima_path):
    import json
    import subprocess
    import sys
    import textwrap

    import pandas as pd
    from conftest import sweep_env

    spec = tmp_path / "nan.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: nan
        data: {{csv: {pima_path}, target: -1}}
        model: {{optimizer: sgd, params: {{neurons: 8, activation: linear}}}}
        fit: {{epochs: 4, batch_size: 32}}
        param_grid: {{optimizer__learning_rate: [0.0001, 1.0e+12]}}
        cv: 2
        seed: 3
        cluster: {{workers: 2}}
        output: {tmp_path / 'out'}
        """))
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "run", str(spec),
                           "--no-progress"], env=sweep_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]   # fits failed, not allowed by the spec
    assert "2 fit(s) failed" in proc.stderr and "at epoch 1" in proc.stderr
    fits = pd.read_csv(tmp_path / "out" / "fits.csv")
    failed = fits[fits["fit_error"].notna()]
    assert len(failed) == 2 and failed["params"].str.contains("1000000000000").all()
    assert failed["fit_error"].str.contains("NonFiniteLossError: loss became").all()
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["best_params"] == {"optimizer__learning_rate": 0.0001}
