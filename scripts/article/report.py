"""Pictures and a Markdown page that review a whole grid, as the recipe advises."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

import numpy as np

from keras_sweep import report
from keras_sweep.report import charts


def picture(cv_results: dict[str, Any], path: Path, title: str) -> Path:
    """The experiment's scores by parameter as a PNG: the same picture as its
    report.html (sweep's report code: heatmap for two parameters, error bars for one)."""
    data = report.from_cv_results(cv_results, [], title=title, scoring="accuracy")
    figure = charts.scores(data)
    assert figure is not None, f"{title}: no scored candidate"
    figure.suptitle(title)
    figure.tight_layout()
    return charts.save_png(figure, path)


def grid_table(cv_results: dict[str, Any]) -> str:
    """The whole grid as a Markdown table, best first."""
    params = report.from_cv_results(cv_results, [], title="").varying or [
        k[len("param_"):] for k in cv_results if k.startswith("param_")]
    header = "| rank | " + " | ".join(charts.label(p) for p in params) + " | mean | std |"
    lines = [header, "|" + "---|" * (len(params) + 3)]
    for i in np.argsort(cv_results["rank_test_score"], kind="stable"):
        cells = [str(cv_results[f"param_{p}"][i]) for p in params]
        lines.append(f"| {cv_results['rank_test_score'][i]} | " + " | ".join(cells)
                     + f" | {cv_results['mean_test_score'][i]:.4f}"
                     f" | {cv_results['std_test_score'][i]:.4f} |")
    return "\n".join(lines)


#: why sweep's numbers differ from the article's (hand-written; the table above it is computed)
WHY_THEY_DIFFER = """\
Where the numbers differ, and why we think they do:

- **The winners are within noise of each other.** With 768 rows and 3 folds the standard
  deviation of a candidate's accuracy is 0.02-0.035; the article's pick is within about one
  standard deviation of sweep's best in every experiment, and usually ranks near the top.
  The article itself calls its results noisy. A different seed (or the article's unseeded
  run) reorders near-ties; `sweep refine` or more folds would be the way to separate them.
- **Levels are ~0.01-0.02 higher here** in most experiments. Our folds are stratified and
  shuffled (seeded), the article's `cv=3` used unshuffled stratified folds of the file's
  order; Keras 3's optimizers and training loop are not Keras 2's code (e.g. `decay` is
  gone), and while Keras 2's `uniform` initializer range (±0.05) matches Keras 3's, its
  random streams do not.
- **Experiment 3 (SGD):** the article found lr 0.01 without momentum best; here the top is
  a small learning rate with high momentum, about the same effective step size
  (lr / (1 - m)); large rates (0.2, 0.3) with high momentum diverge in both.
- **Experiment 6:** the whole 50-cell grid spans only a few points of accuracy; with a
  linear hidden layer, dropout and the max-norm constraint barely matter at 100 epochs.

The pictures (heatmaps for two-parameter grids, error bars for one) and full tables are
above; per experiment, its folder has `report.html` (the whole grid, per-fold scores,
learning curves, fit times and a per-worker timeline), `cv_results.csv`, `best.json`,
`spec.yaml`, `fits.csv` (worker, process, seconds, memory and training path of every fit)
and `curves.csv` (every fit's loss per epoch).
"""


def pick_rank(cv_results: dict[str, Any], pick: dict[str, Any]) -> str:
    """"rank R of N, mean ± std" of the candidate ``pick`` (the article's best) here."""
    for i, params in enumerate(cv_results["params"]):
        if all(params.get(k) == v for k, v in pick.items()):
            return (f"rank {int(cv_results['rank_test_score'][i])} of {len(cv_results['params'])}"
                    f", {cv_results['mean_test_score'][i]:.3f} ± "
                    f"{cv_results['std_test_score'][i]:.3f}")
    return "not in this grid"


def comparison_section(rows: list[tuple[str, str, str, str]], how: str) -> str:
    """The closing section: (experiment, article's best, sweep's best, article's pick here)."""
    table = ["| experiment | article's best (Keras 2) | sweep's best | the article's pick here |",
             "|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(["## How this compares with the article", "", how, "",
                      *table, "", WHY_THEY_DIFFER])


def cpu_model() -> str:
    """The CPU's model name (Linux), else what Python's platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def previous_wall_times(page: Path) -> dict[str, str]:
    """Wall times of an earlier results page: per experiment, ``"total"`` and the
    ``"cpu"`` it ran on (empty: none)."""
    if not page.exists():
        return {}
    text, times = page.read_text(), {}
    total = re.search(r"total wall time (\d+ s)", text)
    if total:
        times["total"] = total.group(1)
    cpu = re.search(r"worker\(s\) on \S+ \((.*?)\); total wall time", text)
    if cpu:
        times["cpu"] = cpu.group(1)
    for title, seconds in re.findall(r"^## (\S+)\n(?:.*\n)*?- wall time: (\d+ s)", text,
                                     re.MULTILINE):
        times[title] = seconds
    return times


def experiment_section(title: str, article_best: str, search: Any, picture: str,
                       seconds: float, before: str | None = None) -> str:
    """One experiment of the results page (``before``: the page's previous wall time)."""
    best = f"{search.best_score_:.3f} with {search.best_params_}"
    return "\n".join([
        f"## {title}", "",
        f"- article's best (Keras 2): {article_best}",
        f"- sweep's best: {best}",
        f"- wall time: {seconds:.0f} s" + (f" (previous page: {before})" if before else ""), "",
        f"![{title}]({picture})", "",
        f"The whole sweep: [{title}/report.html]({title}/report.html)", "",
        grid_table(search.cv_results_), "",
    ])
