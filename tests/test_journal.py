"""The journal survives a crash mid-write and keys fits so that nothing is mistaken."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np

from keras_sweep.store.journal import FitKeys, Journal

WRITER = textwrap.dedent("""\
    import sys
    from keras_sweep.store.journal import Journal
    journal = Journal(sys.argv[1])
    i = 0
    while True:
        journal.record(f"key-{i}", {"test_scores": float(i), "fit_error": None,
                                    "blob": "x" * 5000}, {"candidate": i, "split": 0})
        print(i, flush=True)
        i += 1
    """)


def test_killed_writer_leaves_earlier_entries_intact(tmp_path):
    path = tmp_path / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 200:
            break
    proc.send_signal(signal.SIGKILL)  # mid-write of the next entries
    proc.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    journal = Journal(path)
    assert len(journal) >= last + 1
    for i in range(last + 1):
        assert journal.get(f"key-{i}")["test_scores"] == float(i)


def _kwargs(train, test, params):
    return {"train": train, "test": test, "parameters": params, "scorer": "accuracy",
            "error_score": np.nan}


def test_keys_change_with_data_params_fold_estimator_and_seed():
    from sklearn.linear_model import LogisticRegression

    X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    train, test = np.arange(5), np.arange(5, 10)
    keys = FitKeys(1, version="t")
    base = keys.key((LogisticRegression(), X, y), _kwargs(train, test, {"C": 1}))
    assert base == FitKeys(1, "t").key((LogisticRegression(), X.copy(), y.copy()),
                                        _kwargs(train.copy(), test, {"C": 1}))
    variants = [
        keys.key((LogisticRegression(), X + 1, y), _kwargs(train, test, {"C": 1})),
        keys.key((LogisticRegression(), X, y), _kwargs(train, test, {"C": 2})),
        keys.key((LogisticRegression(), X, y), _kwargs(test, train, {"C": 1})),
        keys.key((LogisticRegression(tol=1), X, y), _kwargs(train, test, {"C": 1})),
        FitKeys(2, "t").key((LogisticRegression(), X, y), _kwargs(train, test, {"C": 1})),
    ]
    assert len(set(variants)) == len(variants) and base not in variants


def test_keys_follow_the_builder_source(tmp_path, monkeypatch):
    import importlib

    from scikeras.wrappers import KerasClassifier

    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "journal_builder.py"
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    kw = _kwargs(np.arange(2), np.arange(2, 4), {})
    found = []
    for body in ("return 1", "return 1", "return 1 + 1"):
        module.write_text(f"def build(meta):\n    {body}\n")
        mod = importlib.reload(importlib.import_module("journal_builder"))
        found.append(FitKeys(0, "t").key((KerasClassifier(model=mod.build), X, y), kw))
    assert found[0] == found[1], "same code, same key"
    assert found[1] != found[2], "edited builder code must not reuse journal entries"
