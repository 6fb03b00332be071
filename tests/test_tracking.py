"""MLflow tracking against a real tracking server (``mlflow server``, SQLite backend).

The run tree and every fold's score equal ``cv_results_`` to the bit; a killed and
resumed sweep continues its runs (no duplicate child, no metric logged twice); with
the server stopped mid-sweep the sweep finishes with the same results, says what was
not logged, and a rerun once the server is back logs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import sweep_env

from keras_sweep.cli.main import main

pytestmark = pytest.mark.slow

SPEC = """\
name: tracked
data: {{csv: {csv}, target: -1, header: false}}
model: {{builder: "tiny_models:tiny"}}
fit: {{epochs: 3, batch_size: 64}}
param_grid:
  model__neurons: [2, 3, 4]
  optimizer__learning_rate: [0.01, 0.1]
cv: 2
seed: 5
cluster: {{workers: 2}}
tracking: {{mlflow: "{uri}", experiment: {experiment}}}
"""
CANDIDATES, FOLDS, EPOCHS = 6, 2, 3


class Server:
    """``mlflow server`` on a free loopback port; stop() and start() keep its data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri",
             f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination",
             str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"],
            stdout=open(self.folder / "server.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError((self.folder / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow"))
    srv.start()
    yield srv
    srv.stop()


def _spec(folder: Path, csv: Path, uri: str, experiment: str) -> Path:
    path = folder / f"{experiment}.yaml"
    path.write_text(textwrap.dedent(SPEC.format(csv=csv, uri=uri, experiment=experiment)))
    return path


def _start(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "keras_sweep", "run", str(spec),
                             "--output", str(out), "--no-progress"], env=sweep_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _journaled(out: Path) -> int:
    try:
        with sqlite3.connect(out / "journal.sqlite", timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM fits").fetchone()[0])
    except sqlite3.Error:
        return 0


def _wait_for(proc: subprocess.Popen, out: Path, fits: int) -> None:
    deadline = time.monotonic() + 300
    while _journaled(out) < fits:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)


def _wait_for_runs(proc: subprocess.Popen, out: Path) -> None:
    """Until ``mlflow.json`` names the parent run and at least one child: fits can be
    journaled before the tracker's thread has made its runs (it saves the experiment
    and token first), and a sweep killed then has no runs to continue."""
    deadline = time.monotonic() + 300
    while True:
        try:
            state = json.loads((out / "mlflow.json").read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("parent") and state.get("children"):
            return
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no MLflow runs made"
        time.sleep(0.1)


def _finish(proc: subprocess.Popen) -> str:
    stdout = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, stdout[-3000:]
    return stdout


def _tree(uri: str, out: Path) -> dict:
    """What the server holds of a sweep: parent, children, their params and metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    state = json.loads((out / "mlflow.json").read_text())
    runs = client.search_runs([state["experiment_id"]], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent"]]
    histories = {
        (r.data.tags["sweep.candidate"], key): [
            (m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)]
        for r in children for key in r.data.metrics}
    return {"state": state, "parents": parents, "children": children,
            "histories": histories, "client": client}


def _assert_matches(tree: dict, out: Path) -> None:
    """One parent, one child per candidate, values equal to cv_results_ exactly."""
    cv = json.loads((out / "cv_results.json").read_text())
    assert len(tree["parents"]) == 1 and tree["parents"][0].info.run_id == tree["state"][
        "parent"]
    children = {r.data.tags["sweep.candidate"]: r for r in tree["children"]}
    assert sorted(children) == [str(i) for i in range(CANDIDATES)]
    for i, params in enumerate(cv["params"]):
        run = children[str(i)]
        assert run.data.params == {k: str(v) for k, v in params.items()}
        for k in range(FOLDS):
            assert tree["histories"][(str(i), f"split{k}_test_score")] == [
                (0, cv[f"split{k}_test_score"][i])], (i, k)
            losses = tree["histories"][(str(i), f"split{k}_loss")]
            assert [step for step, _ in losses] == list(range(1, EPOCHS + 1))
        for name in ("mean_test_score", "std_test_score", "rank_test_score"):
            assert tree["histories"][(str(i), name)] == [(0, float(cv[name][i]))], (i, name)
        assert len(tree["histories"][(str(i), "loss")]) == EPOCHS
    parent = tree["parents"][0]
    best = json.loads((out / "best.json").read_text())
    assert parent.data.metrics["best_score"] == best["best_score"]
    assert {k[len("best__"):]: v for k, v in parent.data.params.items()} == {
        k: str(v) for k, v in best["best_params"].items()}
    artifacts = {a.path for a in tree["client"].list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "report.html", "cv_results.csv", "best.json"} <= artifacts


def test_killed_and_resumed_sweep_continues_its_runs(server, tmp_path, pima_path):
    spec = _spec(tmp_path, pima_path, server.uri, "resumed")
    out = tmp_path / "out"
    first = _start(spec, out)
    _wait_for(first, out, 4)
    _wait_for_runs(first, out)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its local cluster
    first.wait()
    parent = json.loads((out / "mlflow.json").read_text())["parent"]
    stdout = _finish(_start(spec, out))
    assert "came from the journal" in stdout and "logged to MLflow" in stdout
    tree = _tree(server.uri, out)
    assert tree["state"]["parent"] == parent  # the same runs, continued
    _assert_matches(tree, out)


def test_server_down_mid_sweep_loses_nothing(server, tmp_path, pima_path):
    spec = _spec(tmp_path, pima_path, server.uri, "outage")
    reference = tmp_path / "reference"
    assert main(["run", str(spec), "--output", str(reference), "--no-progress",
                 "--set", "tracking=null"]) == 0
    out = tmp_path / "out"
    proc = _start(spec, out)
    _wait_for(proc, out, 2)
    server.stop()
    try:
        stdout = _finish(proc)
        assert "could not be logged to MLflow" in stdout and "rerun the same command" in stdout
        same = json.loads((out / "cv_results.json").read_text())
        expected = json.loads((reference / "cv_results.json").read_text())
        for k in range(FOLDS):
            assert same[f"split{k}_test_score"] == expected[f"split{k}_test_score"]
    finally:
        server.start()
    stdout = _finish(_start(spec, out))  # every fit from the journal, the rest logged now
    assert "logged to MLflow" in stdout
    _assert_matches(_tree(server.uri, out), out)


def test_sweep_cluster_keyword_logs_each_search(server):
    """sweep.cluster(mlflow=...): each grid.fit in the block is a parent run with a child
    per candidate, scored as its cv_results_."""
    from mlflow import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    import keras_sweep as sweep

    X, y = load_iris(return_X_y=True)
    grids = [{"C": [0.1, 1.0, 10.0]}, {"C": [0.5, 5.0]}]
    with sweep.cluster("local", workers=2, seed=1, mlflow=server.uri,
                       mlflow_experiment="keyword"):
        searches = [GridSearchCV(LogisticRegression(max_iter=200), grid, cv=3,
                                 n_jobs=-1).fit(X, y) for grid in grids]
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("keyword")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == ["search 1", "search 2"]
    for name, search in zip(("search 1", "search 2"), searches, strict=True):
        parent = parents[name]
        assert parent.data.metrics["best_score"] == search.best_score_
        children = {int(r.data.tags["sweep.candidate"]): r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        cv = search.cv_results_
        assert sorted(children) == list(range(len(cv["params"])))
        for i, run in children.items():
            assert run.data.params == {"C": str(cv["params"][i]["C"])}
            assert run.data.metrics["mean_test_score"] == cv["mean_test_score"][i]
            for k in range(3):
                assert run.data.metrics[f"split{k}_test_score"] == cv[f"split{k}_test_score"][i]
