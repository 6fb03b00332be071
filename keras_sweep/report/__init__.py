"""The report page of a sweep: ``report.html`` in its output folder, live and after.

>>> from keras_sweep import report                       # doctest: +SKIP
>>> report.write(report.from_folder("sweep-results/demo"), "sweep-results/demo")

:mod:`keras_sweep.report.data` gathers what the page shows,
:mod:`keras_sweep.report.charts` draws it, :mod:`keras_sweep.report.page` writes the HTML,
:mod:`keras_sweep.report.live` refreshes it while a sweep runs, and
:mod:`keras_sweep.report.tracking` sends the same fits to an MLflow server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..store.results import curves_frame
from .data import Candidate, ReportData, from_cv_results, from_folder, from_records
from .page import render

#: the report's file name in a sweep's output folder
REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "Candidate", "ReportData", "curves_frame", "from_cv_results",
           "from_folder", "from_records", "render", "write", "write_text"]


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically: a reader sees the old file or the new one,
    never half of one (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write(data: ReportData, folder: str | Path) -> Path:
    """Render ``data`` to ``folder/report.html`` (atomically) and return the path."""
    return write_text(render(data), Path(folder) / REPORT_NAME)
