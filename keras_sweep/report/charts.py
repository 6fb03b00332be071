"""The report's pictures, drawn with Matplotlib's object API (thread-safe: no pyplot).

Each function takes a :class:`~keras_sweep.report.data.ReportData` and returns a
``Figure`` (or None when it has nothing to show); :func:`svg` turns one into
inline SVG for the HTML page, :func:`save_png` into a PNG (the article's page).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..store.records import mean_history
from .data import Candidate, ReportData

#: at most this many candidates get a row in the per-fold picture (best first)
TOP_FOLDS = 40
#: learning curves of this many top candidates are drawn against the median
TOP_CURVES = 5


def label(name: str) -> str:
    """A parameter's short name: ``model__neurons`` -> ``neurons``."""
    return name.split("__")[-1]


def show(value: Any) -> str:
    """A parameter value as the page writes it."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _unique(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if not any(repr(v) == repr(s) for s in seen):
            seen.append(v)
    try:
        return sorted(seen)
    except TypeError:
        return seen


def _position(values: list[Any], value: Any) -> int:
    return next(i for i, v in enumerate(values) if repr(v) == repr(value))


def scores(data: ReportData) -> Figure | None:
    """Mean score by parameter: error bars (one parameter), heatmap (two),
    parallel coordinates (three or more)."""
    varying = data.varying
    scored = [c for c in data.candidates if c.mean is not None]
    if not scored:
        return None
    if len(varying) == 2:
        return heatmap(data, varying[0], varying[1])
    if len(varying) >= 3:
        return parallel_coordinates(data, varying)
    fig = Figure(figsize=(7, 3.8), dpi=100)
    ax = fig.add_subplot()
    if varying:
        values = _unique([c.params.get(varying[0]) for c in data.candidates])
        xs = [_position(values, c.params.get(varying[0])) for c in scored]
        ax.set_xticks(range(len(values)), [show(v) for v in values], rotation=30, ha="right")
        ax.set_xlabel(label(varying[0]))
    else:
        xs = list(range(len(scored)))
        ax.set_xticks(xs, [str(c.index) for c in scored])
        ax.set_xlabel("candidate")
    order = np.argsort(xs, kind="stable")
    ax.errorbar([xs[i] for i in order], [scored[i].mean for i in order],
                yerr=[scored[i].std or 0.0 for i in order], fmt="o-", capsize=4)
    ax.set_ylabel(f"mean {data.scoring} (± std over folds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap(data: ReportData, rows_param: str, cols_param: str) -> Figure:
    """Mean score over a grid of two parameters."""
    rows = _unique([c.params.get(rows_param) for c in data.candidates])
    cols = _unique([c.params.get(cols_param) for c in data.candidates])
    table = np.full((len(rows), len(cols)), np.nan)
    for c in data.candidates:
        if c.mean is not None:
            table[_position(rows, c.params.get(rows_param)),
                  _position(cols, c.params.get(cols_param))] = c.mean
    fig = Figure(figsize=(max(5.0, 1.0 + 0.7 * len(cols)), max(3.2, 1.2 + 0.42 * len(rows))),
                 dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(table), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [show(c) for c in cols], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [show(r) for r in rows])
    ax.set_xlabel(label(cols_param))
    ax.set_ylabel(label(rows_param))
    if table.size <= 400:
        middle = np.nanmean(table) if np.isfinite(table).any() else 0.0
        for (i, j), value in np.ndenumerate(table):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7,
                        color="black" if value > middle else "white")
    fig.colorbar(image, ax=ax, label=f"mean {data.scoring}")
    fig.tight_layout()
    return fig


def parallel_coordinates(data: ReportData, params: list[str]) -> Figure:
    """One line per candidate across every varying parameter and its score; best on top."""
    axes_values = [_unique([c.params.get(p) for c in data.candidates]) for p in params]
    scored = sorted((c for c in data.candidates if c.mean is not None),
                    key=lambda c: c.mean or 0.0)
    means = np.array([c.mean for c in scored], dtype=float)
    low, high = float(means.min()), float(means.max())
    span = (high - low) or 1.0
    lines = []
    for c in scored:
        ys = [_position(vals, c.params.get(p)) / max(1, len(vals) - 1)
              for p, vals in zip(params, axes_values, strict=True)]
        lines.append(list(zip(range(len(params) + 1), ys + [((c.mean or low) - low) / span],
                              strict=True)))
    fig = Figure(figsize=(max(7.0, 1.6 * (len(params) + 1)), 4.2), dpi=100)
    ax = fig.add_subplot()
    collection = LineCollection(lines, cmap="viridis", linewidths=1.2, alpha=0.75)
    collection.set_array(means)
    ax.add_collection(collection)
    for k, vals in enumerate(axes_values):
        ax.axvline(k, color="0.6", lw=0.8)
        for i, v in enumerate(vals):
            ax.text(k + 0.03, i / max(1, len(vals) - 1), show(v), fontsize=7, va="center")
    ax.axvline(len(params), color="0.6", lw=0.8)
    for t in (0.0, 0.5, 1.0):
        ax.text(len(params) + 0.03, t, f"{low + t * span:.3f}", fontsize=7, va="center")
    ax.set_xlim(-0.1, len(params) + 0.4)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(len(params) + 1), [label(p) for p in params] + [f"mean {data.scoring}"])
    ax.set_yticks([])
    fig.colorbar(collection, ax=ax, label=f"mean {data.scoring}", pad=0.08)
    fig.tight_layout()
    return fig


def small_multiples(data: ReportData) -> Figure | None:
    """For three or more parameters: one panel per parameter, each candidate's mean
    score over that parameter's values (the best candidate marked)."""
    params = data.varying
    scored = [c for c in data.candidates if c.mean is not None]
    if len(params) < 3 or not scored:
        return None
    columns = min(3, len(params))
    rows = math.ceil(len(params) / columns)
    fig = Figure(figsize=(3.3 * columns, 2.6 * rows), dpi=100)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    best = data.best
    for ax, p in zip(axes.flat, params, strict=False):
        values = _unique([c.params.get(p) for c in data.candidates])
        xs = np.array([_position(values, c.params.get(p)) for c in scored], dtype=float)
        jitter = (np.arange(len(scored)) % 7 - 3) * 0.03
        ax.scatter(xs + jitter, [c.mean for c in scored], s=8, alpha=0.5)
        if best is not None:
            ax.scatter([_position(values, best.params.get(p))], [best.mean], s=60,
                       marker="*", color="crimson", zorder=3)
        ax.set_xticks(range(len(values)), [show(v) for v in values], rotation=30,
                      ha="right", fontsize=7)
        ax.set_title(label(p), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(params):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel(f"mean {data.scoring}")
    fig.tight_layout()
    return fig


def folds(data: ReportData, top: int = TOP_FOLDS) -> Figure | None:
    """Each fold's score of the best candidates (a lucky fold stands out), best on top."""
    ranked = sorted((c for c in data.candidates if c.rank is not None),
                    key=lambda c: (c.rank, c.index))[:top]
    if not ranked:
        return None
    fig = Figure(figsize=(7, 0.9 + 0.22 * len(ranked)), dpi=100)
    ax = fig.add_subplot()
    for row, c in enumerate(ranked):
        ys = [s for s in c.fold_scores if s is not None]
        ax.plot(ys, [row] * len(ys), "o", ms=4, color="tab:blue", alpha=0.7)
        ax.plot([c.mean or 0.0], [row], "|", ms=12, mew=2, color="black")
    ax.set_yticks(range(len(ranked)), [_short(c) for c in ranked], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{data.scoring} per fold (dots) and mean (bar)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def _short(c: Candidate, width: int = 60) -> str:
    text = f"#{c.rank} " + ", ".join(f"{label(k)}={show(v)}" for k, v in c.params.items())
    return text if len(text) <= width else text[:width - 1] + "…"


def mean_curves(data: ReportData) -> dict[int, dict[str, list[float]]]:
    """Per candidate and metric: the per-epoch value averaged over its folds."""
    per: dict[int, list[dict[str, list[float]]]] = defaultdict(list)
    for f in data.cv_fits:
        row = data.index_of(f)
        if f.history and row is not None and not f.fit_error:
            per[row].append(f.history)
    return {candidate: mean_history(histories) for candidate, histories in per.items()}


def learning_curves(data: ReportData, top: int = TOP_CURVES) -> Figure | None:
    """Loss and the first metric per epoch (mean over folds) of the top candidates,
    against the median of all candidates."""
    curves = mean_curves(data)
    if not curves:
        return None
    metrics = [m for m in ("loss",) if any(m in c for c in curves.values())]
    metrics += [m for m in next(iter(curves.values())) if m != "loss" and
                not m.startswith("val_")][:1]
    ranked = sorted((c for c in data.candidates if c.rank is not None and c.index in curves),
                    key=lambda c: (c.rank, c.index))[:top]
    fig = Figure(figsize=(5.2 * len(metrics), 3.6), dpi=100)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        runs = [c[metric] for c in curves.values() if metric in c]
        longest = max(len(r) for r in runs)
        median = [float(np.median([r[e] for r in runs if len(r) > e])) for e in range(longest)]
        ax.plot(range(1, longest + 1), median, "--", color="0.4", lw=1.5,
                label=f"median of {len(runs)}")
        for c in ranked:
            values = curves[c.index].get(metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, lw=1.2, label=_short(c, 40))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{metric} (mean over folds)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def fit_times(data: ReportData) -> Figure | None:
    """Histogram of fit seconds (fits run now; journaled ones have none)."""
    seconds = [f.seconds for f in data.cv_fits if f.seconds is not None]
    if not seconds:
        return None
    fig = Figure(figsize=(5.2, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.hist(seconds, bins=min(40, max(5, len(seconds) // 4)), color="tab:blue", alpha=0.8)
    ax.set_xlabel("fit seconds")
    ax.set_ylabel("fits")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def rungs(data: ReportData, resource: str | None = None) -> Figure | None:
    """A halving search: each candidate's mean score in every rung it reached, joined
    by a line (survivors go on to the right; the search's best starred). Hyperband:
    its brackets' rungs one after the other."""
    rounds = data.rungs
    if len(rounds) < 2:
        return None
    at = {key: x for x, key in enumerate(rounds)}
    lines: dict[str, list[tuple[int, float]]] = {}
    for c in data.candidates:
        if c.rung is None or c.mean is None:
            continue
        params = {k: v for k, v in c.params.items() if k != resource}
        lines.setdefault(repr((c.bracket, sorted(params.items(), key=str))), []).append(
            (at[(c.bracket, c.rung)], c.mean))
    fig = Figure(figsize=(max(6.4, 0.55 * len(rounds)), 3.8), dpi=100)
    ax = fig.add_subplot()
    for points in lines.values():
        points.sort()
        xs, ys = zip(*points, strict=True)
        survived = len(points) > 1
        ax.plot(xs, ys, marker="o", markersize=3 if survived else 2,
                color="tab:blue" if survived else "0.7", alpha=0.8 if survived else 0.5,
                linewidth=1.2 if survived else 0.6)
    best = data.best
    if best is not None and best.rung is not None and best.mean is not None:
        ax.plot([at[(best.bracket, best.rung)]], [best.mean], marker="*", markersize=14,
                color="tab:orange")
    by_round = {(c.bracket, c.rung): c.resources for c in data.candidates
                if c.rung is not None}
    unit = resource or "rows"
    labels = [(f"b{b} r{r}\n{by_round.get((b, r))}" if b is not None
               else f"rung {r}\n{by_round.get((b, r))} {unit}") for b, r in rounds]
    ax.set_xticks(range(len(rounds)), labels, fontsize=8 if len(rounds) <= 6 else 6)
    if any(b is not None for b, _ in rounds):
        ax.set_xlabel(f"bracket b, rung r, {unit}", fontsize=8)
    ax.set_ylabel(f"mean {data.scoring}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def timeline(data: ReportData) -> Figure | None:
    """Which worker process ran which fit when; failed fits red, recycles and worker
    losses marked."""
    timed = [f for f in data.fits if f.started is not None and f.seconds is not None]
    if not timed:
        return None
    t0 = min(f.started for f in timed if f.started is not None)
    deaths = {(d["worker"], d["time"]): d for f in data.fits for d in (f.lost_runs or [])
              if d.get("worker") and d.get("time")}
    lanes = sorted({(f.worker or "?", f.pid or 0) for f in timed}
                   | {(w, 0) for w, _ in deaths
                      if not any(f.worker == w for f in timed)})
    fig = Figure(figsize=(8, 1.0 + 0.32 * len(lanes)), dpi=100)
    ax = fig.add_subplot()
    for row, (worker, pid) in enumerate(lanes):
        mine = [f for f in timed if (f.worker or "?", f.pid or 0) == (worker, pid)]
        for colour, which in (("tab:blue", lambda f: not f.refit and not f.fit_error),
                              ("crimson", lambda f: not f.refit and bool(f.fit_error)),
                              ("tab:green", lambda f: f.refit)):
            bars = [((f.started or t0) - t0, f.seconds or 0.0) for f in mine if which(f)]
            if bars:
                ax.broken_barh(bars, (row - 0.35, 0.7), color=colour, alpha=0.85)
        recycled = [(f.ended or t0) - t0 for f in mine if f.recycle_due]
        ax.plot(recycled, [row] * len(recycled), "v", color="black", ms=6)
        died = [t - t0 for w, t in deaths if w == worker]
        ax.plot(died, [row] * len(died), "x", color="crimson", ms=9, mew=2)
    labels = [f"{w.rsplit(':', 1)[0].split('//')[-1]}:{w.rsplit(':', 1)[-1]}"
              + (f" pid {p}" if p else "") for w, p in lanes]
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first fit (blue: fit, red: failed, green: refit, "
                  "▼ recycled, x: the worker died running a fit)", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def svg(fig: Figure, name: str) -> str:
    """``fig`` as an inline ``<svg>`` element (text as text; ids unique to ``name``)."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def save_png(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG file."""
    fig.savefig(path, format="png")
    return path
