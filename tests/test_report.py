"""report.html: what it shows equals the search's results; live pages are whole; it opens
in a real headless Chromium without errors or network, its pictures drawn."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from browser import drawn, open_report
from conftest import sweep_env
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from keras_sweep import report
from keras_sweep.cli.main import main
from keras_sweep.store import results
from keras_sweep.store.records import FitRecord

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "path", "rect", "circle", "use", "stop", "polyline", "line", "ellipse",
        "polygon"}


class Balance(HTMLParser):
    """Checks that every element opened is closed, in order (a cut-off page is not)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def whole(page: str) -> list[str]:
    """Problems of a page as HTML (empty: a whole, balanced document)."""
    checker = Balance()
    checker.feed(page)
    checker.close()
    problems = list(checker.problems)
    if not page.startswith("<!DOCTYPE html>") or not page.rstrip().endswith("</html>"):
        problems.append("not a whole document")
    if checker.stack:
        problems.append(f"left open: {checker.stack}")
    return problems


def _search(grid: dict) -> GridSearchCV:
    X, y = load_iris(return_X_y=True)
    return GridSearchCV(LogisticRegression(max_iter=200), grid, cv=3).fit(X, y)


def _records(search: GridSearchCV, history: bool = False) -> list[FitRecord]:
    cv = search.cv_results_
    out = []
    for i, params in enumerate(cv["params"]):
        for k in range(search.n_splits_):
            out.append(FitRecord(
                candidate=i, n_candidates=len(cv["params"]), split=k,
                n_splits=search.n_splits_, params=params,
                test_score=float(cv[f"split{k}_test_score"][i]), seconds=0.5 + i,
                started=1000.0 + i, worker="tcp://127.0.0.1:4000", pid=7,
                history={"loss": [1.0 / (e + 1 + i) for e in range(3)],
                         "accuracy": [0.5 + 0.1 * e for e in range(3)]} if history else None))
    return out


GRIDS = {
    1: {"C": [0.01, 0.1, 1.0]},
    2: {"C": [0.01, 0.1, 1.0], "fit_intercept": [True, False]},
    3: {"C": [0.01, 1.0], "fit_intercept": [True, False], "tol": [1e-4, 1e-2]},
}


def test_live_scores_from_records_equal_scikit_learns():
    """Candidates scored from fit records (the live page) as scikit-learn scores them."""
    search = _search(GRIDS[2])
    records = _records(search)
    random.Random(0).shuffle(records)  # fits finish in any order
    data = report.from_records(records, title="t")
    cv = search.cv_results_
    assert [c.params for c in data.candidates] == cv["params"]
    np.testing.assert_allclose([c.mean for c in data.candidates], cv["mean_test_score"],
                               rtol=1e-12)
    np.testing.assert_allclose([c.std for c in data.candidates], cv["std_test_score"],
                               rtol=1e-9, atol=1e-15)
    assert [c.rank for c in data.candidates] == list(cv["rank_test_score"])
    # midway: a candidate with a fold still running is scored on its finished folds
    partial = [r for r in records if not (r.candidate == 0 and r.split == 1)]
    first = report.from_records(partial, title="t", params=list(cv["params"])).candidates[0]
    assert first.fold_scores[1] is None
    assert first.mean == pytest.approx(np.mean([cv["split0_test_score"][0],
                                                cv["split2_test_score"][0]]))


@pytest.mark.parametrize("n", sorted(GRIDS))
def test_page_draws_what_the_grid_needs(n):
    search = _search(GRIDS[n])
    page = report.render(report.from_cv_results(search.cv_results_, _records(search, True),
                                                title=f"{n} params"))
    assert whole(page) == []
    expected = {1: ["error-bars"], 2: ["heatmap"],
                3: ["parallel-coordinates", "small-multiples"]}[n]
    for element in expected + ["folds", "learning-curves", "fit-times", "timeline"]:
        assert re.search(f'<figure id="{element}"><svg', page), element
    body = page.split('id="cv-results"')[1]
    assert body.count("<tr") == len(search.cv_results_["params"]) + 1  # + header
    # self-contained: nothing to fetch
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page


def test_folder_round_trip_and_cli(tmp_path, capsys):
    """What results.save writes, `sweep report` redraws: same candidates, same curves."""
    search = _search(GRIDS[3])
    fits = _records(search, history=True)
    results.save(tmp_path, cv_results=search.cv_results_, best={"scoring": "accuracy"},
                 spec={"name": "roundtrip"}, fits=fits, run={"backend": "local"})
    data = report.from_folder(tmp_path)
    assert data.title == "roundtrip" and data.scoring == "accuracy"
    assert [c.mean for c in data.candidates] == list(search.cv_results_["mean_test_score"])
    assert {(f.candidate, f.split): f.history for f in data.fits} == {
        (f.candidate, f.split): f.history for f in fits}
    assert main(["report", str(tmp_path)]) == 0
    assert f"{tmp_path / 'report.html'}" in capsys.readouterr().out
    assert whole((tmp_path / "report.html").read_text()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no cv_results.json" in err and "Fix:" in err and "Traceback" not in err


# -- real sweeps, a real browser ---------------------------------------------------------

THREE = """\
name: three
data: {{csv: {csv}, target: -1, header: false}}
model: {{builder: "tiny_models:tiny"}}
fit: {{epochs: 10, batch_size: 64}}
param_grid:
  model__neurons: [2, 4]
  batch_size: [32, 64]
  optimizer__learning_rate: [0.01, 0.1]
cv: 2
seed: 3
cluster: {{workers: 2}}
"""


@pytest.fixture(scope="module")
def three(tmp_path_factory, pima_path):
    """A 3-parameter sweep run by the CLI, its report.html read every 20 ms meanwhile."""
    folder = tmp_path_factory.mktemp("three")
    spec = folder / "three.yaml"
    spec.write_text(textwrap.dedent(THREE.format(csv=pima_path)))
    out = folder / "out"
    env = {**sweep_env(), "DASK_SWEEP__REPORT__LIVE_INTERVAL": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "keras_sweep", "run", str(spec),
                             "--output", str(out), "--no-progress"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pages: dict[str, str] = {}
    page_path = out / "report.html"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if page_path.exists():
            text = page_path.read_text()
            pages.setdefault(text, text)
        time.sleep(0.02)
    stdout = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, stdout[-3000:]
    return out, stdout, list(pages)


@pytest.mark.slow
def test_live_page_is_whole_at_every_read_and_shows_progress(three):
    out, stdout, pages = three
    assert f"live report: {out / 'report.html'}" in stdout
    live = [p for p in pages if "reloads every" in p]
    # the first page (0 fits) and at least one redrawn later; under load a page takes
    # longer to draw and the pause grows with it (5x), so there may be only a few
    assert len(live) >= 2, f"only {len(live)} live pages seen"
    for page in pages:
        assert whole(page) == [], page[-300:]
    finished = [int(m) for p in live for m in re.findall(r"running</span>: (\d+) of 16", p)]
    assert finished == sorted(finished) and finished[-1] > finished[0]
    final = (out / "report.html").read_text()
    assert "reloads every" not in final and 'http-equiv="refresh"' not in final


@pytest.mark.slow
def test_three_parameter_report_in_a_browser(three, tmp_path):
    out, _, pages = three
    seen = open_report(out / "report.html", ("parallel-coordinates", "small-multiples",
                                             "learning-curves", "timeline"),
                       sort_by="mean accuracy")
    assert seen.errors == []
    for element, png in seen.shots.items():
        colours, inked = drawn(png)
        assert colours > 20 and inked > 0.03, (element, colours, inked)
    assert seen.rows == 8
    # sorted by mean, descending: the best candidate (rank 1) comes first
    assert seen.first_rank_after_sort == "1"
    live = [p for p in pages if "reloads every" in p]
    snapshot = tmp_path / "live.html"
    snapshot.write_text(live[len(live) // 2])
    assert open_report(snapshot).errors == []


@pytest.mark.slow
def test_two_parameter_report_in_a_browser(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "keras_sweep", "demo", "--workers", "2",
                           "--epochs", "2", "--output", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=sweep_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in proc.stdout
    seen = open_report(out / "report.html", ("heatmap", "folds"), full_page=True)
    assert seen.errors == [] and seen.rows == 4
    colours, inked = drawn(seen.shots["heatmap"])
    assert colours > 20 and inked > 0.2, (colours, inked)
    if os.environ.get("SWEEP_SCREENSHOT"):  # docs/report.png is made this way
        Path(os.environ["SWEEP_SCREENSHOT"]).write_bytes(seen.page_png)
