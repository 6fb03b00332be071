"""The report as one self-contained HTML file: inline SVG pictures, inline CSS and a
few lines of inline JavaScript (sortable table). No network, no CDN."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import yaml

from . import charts
from .data import ReportData

#: the live page reloads itself this often (seconds)
RELOAD_SECONDS = 5

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1180px;padding:18px 24px;color:#1d1d1f}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
.status{color:#555;margin-bottom:12px}.live{color:#b35c00;font-weight:600}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
dl.summary dt{color:#666}dl.summary dd{margin:0}
.figures{display:flex;flex-wrap:wrap;gap:6px 28px;align-items:flex-start}
figure{margin:8px 0 18px}figure svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:12.5px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:right;white-space:nowrap}
th{cursor:pointer;background:#f5f5f7;position:sticky;top:0;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.param,th.param{text-align:left}tr.best td{background:#eef7ee;font-weight:600}
td.missing{color:#aaa}pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
.errors li{font-family:monospace;font-size:12px}
"""

#: click a header to sort by it (numbers as numbers, empty cells last)
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) {
        h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _status(data: ReportData, now: float) -> str:
    fits = data.cv_fits
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    if data.live:
        total = f" of {data.expected_fits}" if data.expected_fits else ""
        return (f'<p class="status"><span class="live">running</span>: {len(fits)}{total} '
                f"fits finished; updated {when}; this page reloads every "
                f"{RELOAD_SECONDS} s.</p>")
    if data.ended:
        return (f'<p class="status"><span class="live">{_e(data.ended)}</span>: {len(fits)} '
                f"fits finished; report written {when}.</p>")
    return f'<p class="status">finished; report written {when}.</p>'


def _summary(data: ReportData) -> str:
    fits = data.cv_fits
    failed = sum(1 for f in fits if f.fit_error and not f.worker_lost)
    lost = sum(1 for f in fits if f.worker_lost)
    resumed = sum(1 for f in fits if f.resumed)
    items: list[tuple[str, str]] = []
    best = data.best
    if best is not None:
        params = ", ".join(f"{_e(k)}={_e(charts.show(v))}" for k, v in best.params.items())
        items.append(("best", f"<b>{best.mean:.4f}</b> ± {best.std or 0.0:.4f} mean "
                      f"{_e(data.scoring)} over {data.n_splits} folds, with {params}"))
    items.append(("candidates", f"{len(data.candidates)} x {data.n_splits} folds"))
    done = f"{len(fits)} finished" + (f" of {data.expected_fits}" if data.expected_fits else "")
    retried = sum(1 for f in fits if f.lost_runs and not f.worker_lost)
    parts = [done, f"{failed} failed", f"{lost} lost with their worker",
             f"{retried} retried after their worker died"]
    if resumed:
        parts.append(f"{resumed} taken from the journal")
    items.append(("fits", ", ".join(parts)))
    run = data.run
    if run.get("wall_seconds") is not None:
        items.append(("wall time", f"{float(run['wall_seconds']):.1f} s"))
    if run.get("backend"):
        workers = f", {run['workers']} worker(s)" if run.get("workers") else ""
        items.append(("cluster", _e(f"{run['backend']}{workers}")))
    if run.get("dashboard"):
        items.append(("dashboard", _e(run["dashboard"])))
    for key, name in (("started", "started"), ("version", "sweep")):
        if run.get(key):
            items.append((name, _e(run[key])))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<dl class="summary" id="summary">{rows}</dl>'


def _figure(fig_id: str, make: Callable[[], Any], caption: str) -> str:
    fig = make()
    if fig is None:
        return ""
    return (f'<figure id="{fig_id}">{charts.svg(fig, fig_id)}'
            f"<figcaption>{caption}</figcaption></figure>")


def _scores_section(data: ReportData) -> str:
    varying = data.varying
    kind, caption = {
        0: ("error-bars", "mean score per candidate (± std over folds)"),
        1: ("error-bars", f"mean score by {_e(charts.label(varying[0]) if varying else '')} "
            "(± std over folds)"),
        2: ("heatmap", "mean score over the two parameters that vary"),
    }.get(len(varying), ("parallel-coordinates",
                         "one line per candidate through its parameter values to its mean "
                         "score (colour: the score; best candidates drawn last)"))
    parts = [_figure(kind, lambda: charts.scores(data), caption)]
    if len(varying) >= 3:
        parts.append(_figure("small-multiples", lambda: charts.small_multiples(data),
                             "each candidate's mean score by each parameter's value "
                             "(star: the best candidate)"))
    return f'<div class="figures">{"".join(parts)}</div>'


def _rungs_section(data: ReportData) -> str:
    """A halving search's rungs (Hyperband's, per bracket): a table (candidates,
    resources, best) and a picture."""
    if len(data.rungs) < 2:
        return ""
    resource = ((data.spec or {}).get("search") or {}).get("resource")
    resource = None if resource in (None, "n_samples") else str(resource)
    hyperband = any(b is not None for b, _ in data.rungs)
    rows = []
    for bracket, r in data.rungs:
        members = [c for c in data.candidates if (c.bracket, c.rung) == (bracket, r)]
        scored = [c for c in members if c.mean is not None]
        top = max(scored, key=lambda c: c.mean or 0.0) if scored else None
        rows.append("<tr>" + (f"<td>{bracket}</td>" if hyperband else "")
                    + f"<td>{r}</td><td>{members[0].resources}</td><td>{len(members)}</td>"
                    f"<td>{_num(top.mean) if top else ''}</td>"
                    f"<td>{_e(charts.show(top.params)) if top else ''}</td></tr>")
    table = ('<table id="rungs"><thead><tr>' + ("<th>bracket</th>" if hyperband else "")
             + f"<th>rung</th><th>{_e(resource or 'rows')}</th><th>candidates</th>"
             "<th>best mean</th><th>best parameters</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    title = ("Brackets and rungs of the Hyperband search" if hyperband
             else "Rungs of the halving search")
    return (f"<h2>{title}</h2>" + table
            + _figure("rungs-chart", lambda: charts.rungs(data, resource),
                      "each candidate's mean score per rung; the best third (by default) "
                      "of each rung goes on with more resources"))


def _table(data: ReportData) -> str:
    params = data.varying or sorted({k for c in data.candidates for k in c.params})
    head = (["rank"] + [charts.label(p) for p in params] + [f"mean {data.scoring}", "std"]
            + [f"fold {k}" for k in range(data.n_splits)] + ["fit s"])
    classes = ["num"] + ["param"] * len(params) + ["num"] * (data.n_splits + 3)
    header = "".join(f'<th class="{c}">{_e(h)}</th>' for h, c in zip(head, classes,
                                                                       strict=True))
    best = data.best
    body = []
    for c in sorted(data.candidates, key=lambda c: (c.rank is None, c.rank or 0, c.index)):
        cells = [_cell(c.rank, str(c.rank or ""))]
        cells += [_cell(c.params.get(p), charts.show(c.params.get(p)), "param")
                  for p in params]
        cells += [_cell(c.mean, _num(c.mean)), _cell(c.std, _num(c.std))]
        cells += [_cell(s, _num(s)) for s in c.fold_scores]
        cells.append(_cell(c.fit_seconds, _num(c.fit_seconds, 2)))
        mark = ' class="best"' if best is not None and c is best else ""
        body.append(f"<tr{mark}>{''.join(cells)}</tr>")
    return (f'<table class="sortable" id="cv-results"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _cell(value: Any, text: str, cls: str = "") -> str:
    sort_value = "" if value is None else (value if isinstance(value, (int, float))
                                            else str(value))
    classes = " ".join(x for x in (cls, "missing" if value is None else "") if x)
    return (f'<td data-v="{_e(sort_value)}"' + (f' class="{classes}"' if classes else "")
            + f">{_e(text) if text else '–'}</td>")


def _failures(data: ReportData, limit: int = 20) -> str:
    failed = [f for f in data.cv_fits if f.fit_error]
    if not failed:
        return ""
    items = "".join(f"<li>candidate {f.candidate}, fold {f.split}: {_e(f.fit_error)}</li>"
                    for f in failed[:limit])
    more = f"<p>… and {len(failed) - limit} more (fits.csv)</p>" if len(failed) > limit else ""
    return (f"<details open><summary>{len(failed)} failed fit(s)</summary>"
            f'<ul class="errors">{items}</ul>{more}</details>')


def render(data: ReportData, now: float | None = None) -> str:
    """The whole page for ``data`` (``now``: the time it says it was written)."""
    now = time.time() if now is None else now
    reload = (f'<meta http-equiv="refresh" content="{RELOAD_SECONDS}">' if data.live else "")
    spec = (f"<details><summary>spec</summary><pre>{_e(yaml.safe_dump(data.spec, sort_keys=False))}"
            "</pre></details>" if data.spec else "")
    sections = [
        f"<h1>sweep: {_e(data.title)}</h1>", _status(data, now), _summary(data),
        _failures(data), spec,
        _rungs_section(data),
        "<h2>Scores by parameter</h2>", _scores_section(data),
        "<h2>Per-fold scores</h2>",
        _figure("folds", lambda: charts.folds(data),
                f"the {min(charts.TOP_FOLDS, len(data.candidates))} best candidates: each "
                "fold's score, and their mean"),
        "<h2>Learning curves</h2>",
        _figure("learning-curves", lambda: charts.learning_curves(data),
                f"per epoch, mean over folds: the {charts.TOP_CURVES} best candidates "
                "against the median of all") or "<p>no Keras histories in these fits</p>",
        "<h2>Where the time went</h2>", '<div class="figures">',
        _figure("fit-times", lambda: charts.fit_times(data), "fit seconds"),
        _figure("timeline", lambda: charts.timeline(data),
                "one lane per worker process"), "</div>",
        f"<h2>All candidates ({len(data.candidates)})</h2>",
        "<p>click a column to sort</p>", _table(data),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"{reload}<title>sweep: {_e(data.title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(sections)}<script>{SCRIPT}</script></body></html>\n")
