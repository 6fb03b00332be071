"""Every bad input: exit 2 from ``sweep run``, one message naming field, value and fix, no
cluster started, nothing lost. One table, run through the command line's own entry point."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keras_sweep.cli import main as cli

BASE: dict[str, Any] = {
    "name": "bad",
    "data": {"csv": "PIMA", "target": -1},
    "model": {"builder": "mlp"},
    "fit": {"epochs": 1, "batch_size": 64},
    "param_grid": {"model__neurons": [2, 4]},
    "cv": 2,
    "cluster": {"workers": 1},
}


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    if value is DROP:
        node.pop(last, None)
    else:
        node[last] = value


DROP = object()

#: (case id, {dotted key: value}, words the one message must contain)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    # the nine the issue found passing validation
    ("activation typo", {"param_grid": {"model__activation": ["rleu"]}},
     ["param_grid.model__activation", "'rleu'", "relu"]),
    ("initializer typo", {"param_grid": {"model__kernel_initializer": ["unifrom"]}},
     ["param_grid.model__kernel_initializer", "'unifrom'", "uniform"]),
    ("optimizer typo", {"param_grid": {"optimizer": ["Adamm"]}},
     ["param_grid.optimizer", "'Adamm'", "Adam"]),
    ("dropout 1.5", {"param_grid": {"model__dropout": [0.2, 1.5]}},
     ["param_grid.model__dropout", "1.5", "[0, 1)"]),
    ("optimizer setting typo", {"param_grid": {"optimizer__lernrate": [0.1]}},
     ["param_grid.optimizer__lernrate", "'lernrate'", "learning_rate"]),
    ("cv above rows", {"cv": 1000}, ["'cv'", "1000", "set cv:"]),
    ("seed -1", {"seed": -1}, ["'seed'", "-1", "seed: 7"]),
    ("one-class target", {"data.csv": "ONE_CLASS"}, ["data.target", "one class"]),
    ("unwritable output", {"output": "/proc/sweep-cannot-write"},
     ["'output'", "/proc/sweep-cannot-write", "--output"]),
    # the network's domains
    ("dropout negative", {"param_grid": {"model__dropout": [-0.1]}}, ["-0.1", "[0, 1)"]),
    ("neurons zero", {"param_grid": {"model__neurons": [0, 4]}},
     ["param_grid.model__neurons", "positive integer"]),
    ("neurons fraction", {"param_grid": {"model__neurons": [2.5]}}, ["2.5", "positive"]),
    ("hidden layers zero", {"param_grid": {"model__hidden_layers": [0]}},
     ["model__hidden_layers", "positive"]),
    ("max-norm negative", {"param_grid": {"model__max_norm": [-1]}},
     ["model__max_norm", "-1", "positive number"]),
    ("fixed activation typo", {"model.params": {"activation": "sigmoidd"}},
     ["model.params.activation", "'sigmoidd'"]),
    ("recipe-era key, bad value", {"param_grid": {"init_mode": ["zeroes"]}},
     ["model__kernel_initializer", "'zeroes'"]),
    # fit settings
    ("grid batch size 0", {"param_grid": {"batch_size": [0, 10]}},
     ["param_grid.batch_size", "positive integer"]),
    ("grid epochs negative", {"param_grid": {"epochs": [-5]}}, ["param_grid.epochs", "-5"]),
    ("fit epochs 0", {"fit.epochs": 0}, ["fit.epochs", "positive integer"]),
    ("fit batch size text", {"fit.batch_size": "ten"}, ["fit.batch_size", "'ten'"]),
    # optimizer and loss
    ("fixed optimizer typo", {"model.optimizer": "adamm"}, ["model.optimizer", "'adamm'"]),
    ("optimizer setting it lacks", {"param_grid": {"optimizer": ["sgd", "adam"],
                                                   "optimizer__momentum": [0.9]}},
     ["optimizer__momentum", "Adam", "momentum"]),
    ("learning rate negative", {"param_grid": {"optimizer__learning_rate": [-0.1]}},
     ["optimizer__learning_rate", "-0.1", "positive"]),
    ("momentum 1.5", {"model.optimizer": "sgd",
                      "param_grid": {"optimizer__momentum": [1.5]}},
     ["optimizer__momentum", "1.5", "[0, 1]"]),
    ("optimizer_params typo", {"model.optimizer_params": {"lernrate": 0.1}},
     ["model.optimizer_params.lernrate", "learning_rate"]),
    ("loss typo", {"model.loss": "binary_crossentropyy"},
     ["model.loss", "'binary_crossentropyy'", "binary_crossentropy"]),
    ("task unknown", {"model.task": "clustering"}, ["model.task", "'clustering'"]),
    # search settings
    ("cv above smallest class", {"cv": 300}, ["'cv'", "300", "smallest class"]),
    ("cv 1", {"cv": 1}, ["'cv'", "at least 2"]),
    ("cv text", {"cv": "three"}, ["'cv'", "'three'"]),
    ("seed too big", {"seed": 2**33}, ["'seed'", str(2**33)]),
    ("scoring typo", {"scoring": "accurracy"}, ["'scoring'", "'accurracy'"]),
    ("scoring list typo", {"scoring": ["accuracy", "f11"]}, ["'scoring'", "'f11'"]),
    ("scoring empty", {"scoring": []}, ["'scoring'", "no scorer"]),
    ("scoring twice", {"scoring": ["f1", "f1"]}, ["'scoring'", "twice"]),
    ("refit not a scorer", {"scoring": ["accuracy", "f1"], "refit": "roc_auc"},
     ["'refit'", "'roc_auc'", "refit: accuracy"]),
    ("refit name, one scorer", {"refit": "f1"}, ["'refit'", "'f1'", "refit: true"]),
    ("halving, several scorers", {"scoring": ["accuracy", "f1"], "search": {"kind": "halving"}},
     ["'scoring'", "halving", "kind: grid"]),
    ("error score word", {"error_score": "maybe"}, ["error_score", "'maybe'"]),
    ("max retries negative", {"max_retries": -1}, ["max_retries", "-1"]),
    ("unknown field", {"param_gird": {"model__neurons": [2]}}, ["param_gird", "unknown"]),
    ("empty grid", {"param_grid": {}}, ["param_grid", "empty"]),
    ("grid value not a list", {"param_grid": {"model__neurons": 5}},
     ["param_grid.model__neurons", "list"]),
    ("unknown grid key", {"param_grid": {"colour": ["red"]}},
     ["param_grid.colour", "not a parameter"]),
    ("builder argument typo", {"param_grid": {"model__neuronz": [2]}},
     ["model__neuronz", "no argument"]),
    ("builder missing module", {"model.builder": "no_such_module:build"},
     ["model.builder", "cannot be imported"]),
    ("builder not module:function", {"model.builder": "mlp2"},
     ["model.builder", "'mlp2'"]),
    # data
    ("csv missing", {"data.csv": "/nonexistent/pima.csv"}, ["/nonexistent/pima.csv"]),
    ("target column out of range", {"data.target": 99}, ["data.target", "99"]),
    ("sample above 1", {"data.sample": 1.5}, ["data.sample", "1.5"]),
    ("unknown bundled dataset", {"data": {"dataset": "titanic"}},
     ["data.dataset", "'titanic'"]),
    ("non-numeric feature column", {"data.csv": "TEXT_COLUMN"},
     ["not numeric", "column 0 holds 'blue'"]),
    # cluster
    ("workers 0", {"cluster.workers": 0}, ["cluster.workers", "positive integer"]),
    ("unknown backend", {"cluster.backend": "kubernetes"}, ["kubernetes", "use one of"]),
    ("tls not a bool", {"cluster.tls": "yes"}, ["cluster.tls", "'yes'"]),
    ("memory limit not a size", {"cluster.memory_limit": "lots"},
     ["cluster.memory_limit", "'lots'", "2 GiB"]),
    ("recycle memory not a size", {"cluster.recycle_above_memory": "big"},
     ["cluster.recycle_above_memory", "'big'", "2 GiB"]),
    # report and tracking
    ("report not a bool", {"report": "yes"}, ["'report'", "'yes'"]),
    ("tracking not a URI", {"tracking": {"mlflow": "localhost"}},
     ["tracking.mlflow", "'localhost'", "http://127.0.0.1:5000"]),
    ("tracking option typo", {"tracking": {"mlflow": "http://127.0.0.1:5000",
                                           "experimnet": "x"}},
     ["tracking.experimnet", "experiment: NAME"]),
    # search kinds and distributions
    ("unknown search kind", {"search": {"kind": "bayes"}},
     ["search.kind", "'bayes'", "grid, random, halving, hyperband"]),
    ("hyperband: factor given twice", {"search": {"kind": "hyperband", "factor": 3,
                                                  "aggressiveness": 4}},
     ["search.aggressiveness", "give only factor"]),
    ("hyperband: min_resources exhaust", {"search": {"kind": "hyperband",
                                                     "min_resources": "exhaust"}},
     ["search.min_resources", "'exhaust'", "smallest"]),
    ("hyperband: option of halving", {"search": {"kind": "hyperband", "n_candidates": 30}},
     ["search.n_candidates", "kind: halving"]),
    ("hyperband: min above max", {"search": {"kind": "hyperband", "min_resources": 50,
                                             "max_resources": 27}},
     ["search.min_resources", "50", "at most 27"]),
    ("option of another kind", {"search": {"kind": "random", "factor": 2}},
     ["search.factor", "kind: halving"]),
    ("n_iter zero", {"search": {"kind": "random", "n_iter": 0}},
     ["search.n_iter", "positive integer"]),
    ("factor 1", {"search": {"kind": "halving", "factor": 1}},
     ["search.factor", "above 1"]),
    ("unknown distribution", {"search": {"kind": "random"},
                              "param_grid": {"model__dropout": "beta(1, 2)"}},
     ["param_grid.model__dropout", "'beta'", "loguniform(1e-4, 1e-1)"]),
    ("distribution bounds reversed", {"search": {"kind": "random"},
                                      "param_grid": {"optimizer__learning_rate":
                                                     "loguniform(0.1, 0.001)"}},
     ["param_grid.optimizer__learning_rate", "bad bounds", "loguniform(1e-4, 1e-1)"]),
    ("distribution out of domain", {"search": {"kind": "random"},
                                    "param_grid": {"model__dropout": "uniform(0.0, 1.5)"}},
     ["param_grid.model__dropout", "1.5", "[0, 1)"]),
    ("distribution in a grid search", {"param_grid": {"model__neurons": "randint(2, 9)"}},
     ["param_grid.model__neurons", "random or halving", "search: {kind: random"]),
    ("resource not a parameter", {"search": {"kind": "halving", "resource": "epoch"}},
     ["search.resource", "'epoch'", "epochs"]),
    ("resource also searched", {"search": {"kind": "halving", "resource": "epochs"},
                                "param_grid": {"epochs": [1, 2]}},
     ["param_grid.epochs", "cannot also be searched"]),
    ("min_resources above the rows", {"search": {"kind": "halving", "min_resources": 5000}},
     ["search.min_resources", "5000", "at most 768"]),
    # output folder and journal
    ("output under a file", {"output": "FILE/out"}, ["'output'", "--output"]),
    ("journal not a database", {"journal": "garbage"},
     ["journal.sqlite", "not a sweep journal", "mv "]),
    ("journal of another program", {"journal": "foreign"},
     ["journal.sqlite", "not a sweep journal", "columns"]),
]


def _files(tmp_path: Path, pima_path: Path) -> dict[str, str]:
    data = np.loadtxt(pima_path, delimiter=",")
    one = data.copy()
    one[:, -1] = 1
    np.savetxt(tmp_path / "one_class.csv", one, delimiter=",", fmt="%g")
    lines = pima_path.read_text().splitlines()[:60]
    (tmp_path / "text.csv").write_text(
        "\n".join(f"{'red' if i % 2 else 'blue'},{line}" for i, line in enumerate(lines)))
    (tmp_path / "a_file").write_text("not a folder")
    return {"PIMA": str(pima_path), "ONE_CLASS": str(tmp_path / "one_class.csv"),
            "TEXT_COLUMN": str(tmp_path / "text.csv"), "FILE": str(tmp_path / "a_file")}


@pytest.mark.parametrize(("changes", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_message_before_any_cluster(tmp_path, pima_path, capsys,
                                                               changes, words):
    import yaml

    files = _files(tmp_path, pima_path)
    raw = copy.deepcopy(BASE)
    raw["output"] = str(tmp_path / "out")
    journal = None
    for key, value in changes.items():
        if key == "journal":
            journal = value
            continue
        if isinstance(value, str):
            for name, path in files.items():
                value = value.replace(name, path) if value.startswith(name) else value
        _set(raw, key, value)
    if "csv" in raw["data"]:
        raw["data"]["csv"] = files.get(raw["data"]["csv"], raw["data"]["csv"])
    if journal:
        out = Path(raw["output"])
        out.mkdir()
        if journal == "garbage":
            (out / "journal.sqlite").write_bytes(b"this is not SQLite\n" * 100)
        else:
            db = sqlite3.connect(out / "journal.sqlite")
            db.execute("CREATE TABLE fits (id INTEGER, name TEXT)")
            db.commit()
            db.close()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))

    code = cli.main(["run", str(spec), "--no-progress"])

    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("sweep: error:")]
    assert len(errors) == 1, err
    assert "Fix:" in err and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert "sweep: cluster" not in out  # nothing started
    journal_file = Path(raw["output"]) / "journal.sqlite"
    assert journal is not None or not journal_file.exists()


def test_the_table_has_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
