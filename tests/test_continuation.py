"""A longer fit continues from a shorter fit of its candidate and fold: bitwise training
from scratch, in one process and through a halving search on the cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scikeras.wrappers import KerasClassifier

from keras_sweep.protocol import TrainingPaths
from keras_sweep.spec.models import mlp
from keras_sweep.store.checkpoints import Checkpoint, CheckpointStore
from keras_sweep.worker.fit import isolated_fit
from keras_sweep.worker.setup import enable_determinism
from keras_sweep.worker.training import fastpath
from keras_sweep.worker.training.continuation import Continuation


@pytest.fixture(scope="module")
def pima(pima_path):
    data = np.loadtxt(pima_path, delimiter=",")
    return data[:130, :8].astype("float32"), data[:130, 8].astype("int64")


def _fit(estimator: Any, X: Any, y: Any, epochs: int, carry: Continuation | None,
         share: bool = True, seed: int = 3) -> Any:
    """One seeded fit as a worker runs it, with ``carry`` as its continuation."""
    enable_determinism()
    estimator.set_params(epochs=epochs)
    with fastpath.enabled(estimator, TrainingPaths(share_traces=share)) as path, \
            isolated_fit(seed):
        path.continuation = carry
        estimator.fit(X, y)
    return estimator


CASES = {
    "adam": {"optimizer": "adam"},
    "sgd-momentum": {"optimizer": "sgd", "optimizer__learning_rate": 0.05,
                     "optimizer__momentum": 0.9},
    "dropout-maxnorm": {"optimizer": "nadam", "model__dropout": 0.3, "model__max_norm": 2.0},
    "partial-batch": {"optimizer": "rmsprop", "batch_size": 7},
}


@pytest.mark.parametrize("share", [True, False], ids=["shared trace", "own trace"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_continued_fit_is_bitwise_the_fit_from_scratch(pima, case, share):
    """3 epochs kept, then 7 by continuing = 7 from scratch: weights, optimizer state,
    every epoch's loss and metric, predictions; the kept state survives bytes."""
    X, y = pima
    params = {"batch_size": 10, "model__neurons": 5, "metrics": ["accuracy"], **CASES[case]}

    def make() -> Any:
        return KerasClassifier(model=mlp, loss="binary_crossentropy", verbose=0, **params)

    scratch = _fit(make(), X, y, 7, None, share)
    short = Continuation(keep=True)
    _fit(make(), X, y, 3, short, share)
    assert short.end is not None and short.end.epochs == 3 and short.continued_from is None
    start = Checkpoint.from_bytes(short.end.to_bytes())
    longer = Continuation(start=start, keep=True)
    continued = _fit(make(), X, y, 7, longer, share)

    assert longer.continued_from == 3 and longer.end is not None and longer.end.epochs == 7
    assert continued.history_.keys() == scratch.history_.keys()
    for key in scratch.history_:
        assert len(continued.history_[key]) == 7
        np.testing.assert_array_equal(continued.history_[key], scratch.history_[key], key)
    for a, b in zip(continued.model_.get_weights(), scratch.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(continued.model_.optimizer.variables, scratch.model_.optimizer.variables,
                    strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(continued.predict_proba(X), scratch.predict_proba(X))


def test_what_cannot_continue_exactly_trains_from_scratch(pima):
    """A stateful callback (EarlyStopping) or a longer state than the fit: from scratch,
    and nothing is kept for a fit that cannot be continued either."""
    import keras

    X, y = pima
    make = lambda **kw: KerasClassifier(  # noqa: E731
        model=mlp, loss="binary_crossentropy", optimizer="adam", verbose=0, batch_size=10,
        model__neurons=3, **kw)
    kept = Continuation(keep=True)
    _fit(make(), X, y, 2, kept)
    assert kept.end is not None
    stopping = Continuation(start=kept.end, keep=True)
    _fit(make(callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=50)]),
         X, y, 4, stopping)
    assert stopping.continued_from is None and stopping.end is None
    shorter = Continuation(start=Checkpoint.from_bytes(kept.end.to_bytes()), keep=True)
    fitted = _fit(make(), X, y, 2, shorter)  # as long as the state: nothing to take over
    assert shorter.continued_from is None and len(fitted.history_["loss"]) == 2


def test_the_store_keeps_the_longest_state_per_lineage(tmp_path):
    """Per lineage only a longer state replaces the kept one; a fit gets a state only if
    it is shorter than the fit; the states outlive the store (a resumed sweep)."""
    def state(epochs: int) -> bytes:
        return Checkpoint(epochs, [np.full(2, epochs, "float32")], [np.int64(epochs)],
                          {"loss": [0.5] * epochs}).to_bytes()

    for path in (tmp_path / "journal.sqlite", None):
        store = CheckpointStore(path)
        store.put("a", 3, state(3))
        store.put("a", 2, state(2))  # shorter: ignored
        assert Checkpoint.from_bytes(store.before("a", 9) or b"").epochs == 3
        assert store.before("a", 3) is None and store.before("b", 9) is None
        store.put("a", 9, state(9))
        assert Checkpoint.from_bytes(store.before("a", 27) or b"").history["loss"] == [0.5] * 9
        store.close()
    again = CheckpointStore(tmp_path / "journal.sqlite")
    assert len(again) == 1 and Checkpoint.from_bytes(again.before("a", 10) or b"").epochs == 9
    again.close()


@pytest.mark.slow
def test_a_halving_sweep_continues_its_survivors_also_after_a_killed_driver(tmp_path,
                                                                             pima_path):
    """`sweep run` of a halving over epochs (1, 3, 9): the driver is SIGKILLed in the second
    rung; the rerun continues the survivors from the states kept in the output folder
    (`continued_from` in fits.csv), and every per-fold score equals the same sweep with
    continuation off, bitwise."""
    import os
    import signal
    import subprocess
    import textwrap
    import time

    import pandas as pd
    from conftest import sweep_env
    from test_fault_tolerance import journal_count, sweep_cmd

    def spec(name: str) -> Any:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: {name}
            data: {{csv: {pima_path}, target: -1}}
            fit: {{epochs: 9, batch_size: 32}}
            search: {{kind: halving, resource: epochs, factor: 3, min_resources: 1}}
            param_grid: {{model__neurons: [1, 2, 3, 4, 5, 6, 7, 8, 9]}}
            cv: 2
            seed: 4
            cluster: {{workers: 2}}
            output: {tmp_path / name}
            """))
        return path

    proc = subprocess.Popen(sweep_cmd(spec("killed")), env=sweep_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "killed" / "journal.sqlite"
    deadline = time.monotonic() + 300
    while journal_count(journal) < 20 and time.monotonic() < deadline:  # rung 1: 18 fits
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = journal_count(journal)
    assert 20 <= done < 24, done
    rerun = subprocess.run(sweep_cmd(spec("killed")), env=sweep_env(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    plain = subprocess.run(sweep_cmd(spec("plain")), capture_output=True, text=True,
                           timeout=600,
                           env={**sweep_env(), "DASK_SWEEP__FIT__CONTINUE_TRAINING": "false"})
    assert plain.returncode == 0, plain.stderr[-3000:]

    fits = pd.read_csv(tmp_path / "killed" / "fits.csv")
    ran = fits[~fits["resumed"].fillna(False).astype(bool)]
    rung2, rung3 = ran[ran["n_candidates"] == 3], ran[ran["n_candidates"] == 1]
    assert len(rung3) == 2 and (rung3["continued_from"] == 3).all()
    # (a fit killed between keeping its state and its journal entry starts afresh)
    assert len(rung2) >= 2 and (rung2["continued_from"] == 1).sum() >= len(rung2) - 1
    assert pd.read_csv(tmp_path / "plain" / "fits.csv")["continued_from"].isna().all()
    a = pd.read_csv(tmp_path / "killed" / "cv_results.csv")
    b = pd.read_csv(tmp_path / "plain" / "cv_results.csv")
    columns = [c for c in a if c.startswith("split") and c.endswith("_test_score")]
    assert columns
    np.testing.assert_array_equal(a[columns].to_numpy(), b[columns].to_numpy())
