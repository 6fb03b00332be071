"""Workers are recycled after N fits without losing a fit or stalling the sweep."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

import sweep

pytestmark = pytest.mark.slow

RECYCLE_AFTER = 3


def test_workers_recycle_and_no_fit_is_lost(cancer, tiny_classifier):
    X, y = cancer
    candidates = list(range(1, 41))
    grid = GridSearchCV(tiny_classifier, {"model__neurons": candidates}, cv=2, n_jobs=-1)
    with sweep.cluster("local", workers=2, recycle_after_fits=RECYCLE_AFTER) as session:
        first = {r["pid"] for r in session.worker_reports().values()}
        grid.fit(X, y)
        fits = list(session.fits)
        restarts = session.backend.recycler.restarts
    assert len(fits) == len(candidates) * 2, "every fit is reported exactly once"
    assert {(f["candidate"], f["split"]) for f in fits} == {
        (c, s) for c in range(len(candidates)) for s in range(2)}
    assert not [f for f in fits if f.get("fit_error")]
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    per_process = Counter(f["pid"] for f in fits)
    assert restarts >= 2 and len(per_process) > 2, per_process
    # both original worker processes were replaced: restarts are staggered (one at a
    # time, so the sweep never stalls), yet no worker escapes recycling
    assert first and all(per_process[pid] < len(fits) / 2 for pid in first), per_process
    late = [f["pid"] for f in fits[-10:]]
    assert not first & set(late), "original workers still ran the last fits"

