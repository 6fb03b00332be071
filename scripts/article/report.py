"""Pictures and a Markdown page that review a whole grid, as the recipe advises."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def varying_params(cv_results: dict[str, Any]) -> list[str]:
    """Grid parameters that take more than one value, in grid order."""
    names = [k[len("param_"):] for k in cv_results if k.startswith("param_")]
    return [n for n in names if len({repr(v) for v in cv_results[f"param_{n}"]}) > 1]


def _label(name: str) -> str:
    return name.split("__")[-1]


def plot(cv_results: dict[str, Any], path: Path, title: str) -> Path:
    """Heatmap for two-parameter grids; error bars (mean ± std) otherwise. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = varying_params(cv_results)
    mean = np.asarray(cv_results["mean_test_score"], dtype=float)
    std = np.asarray(cv_results["std_test_score"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if len(params) == 2:
        rows = _unique(cv_results[f"param_{params[0]}"])
        cols = _unique(cv_results[f"param_{params[1]}"])
        table = np.full((len(rows), len(cols)), np.nan)
        for m, a, b in zip(mean, cv_results[f"param_{params[0]}"],
                           cv_results[f"param_{params[1]}"], strict=True):
            table[rows.index(a), cols.index(b)] = m
        image = ax.imshow(table, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(_label(params[1]))
        ax.set_ylabel(_label(params[0]))
        for (i, j), value in np.ndenumerate(table):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(image, ax=ax, label="mean CV score")
    else:
        labels = ([str(v) for v in cv_results[f"param_{params[0]}"]] if params
                  else [str(p) for p in cv_results["params"]])
        ax.errorbar(range(len(mean)), mean, yerr=std, fmt="o-", capsize=4)
        ax.set_xticks(range(len(mean)), labels, rotation=30, ha="right")
        ax.set_xlabel(_label(params[0]) if params else "candidate")
        ax.set_ylabel("mean CV score (± std)")
        ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _unique(values: Any) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def grid_table(cv_results: dict[str, Any]) -> str:
    """The whole grid as a Markdown table, best first."""
    params = varying_params(cv_results) or [
        k[len("param_"):] for k in cv_results if k.startswith("param_")]
    header = "| rank | " + " | ".join(_label(p) for p in params) + " | mean | std |"
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
above; per experiment, `cv_results.csv`, `best.json`, `spec.yaml` and `fits.csv` (worker,
process, seconds, memory and training path of every fit) are in its folder.
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


def previous_wall_times(page: Path) -> dict[str, str]:
    """Wall times of an earlier results page: per experiment, and ``"total"`` (empty: none)."""
    if not page.exists():
        return {}
    text, times = page.read_text(), {}
    total = re.search(r"total wall time (\d+ s)", text)
    if total:
        times["total"] = total.group(1)
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
        grid_table(search.cv_results_), "",
    ])
