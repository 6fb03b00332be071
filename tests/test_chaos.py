"""Chaos soak at CI size: a busy worker SIGKILLed every three seconds, recycling every 3 fits;
no fit lost or failed, scores bitwise those of a fault-free run (scripts/chaos.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _chaos():
    path = Path(__file__).resolve().parents[1] / "scripts" / "chaos.py"
    spec = importlib.util.spec_from_file_location("chaos", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chaos_soak_loses_nothing():
    figures = _chaos().soak(candidates=12, epochs=4, workers=3, every=3.0, recycle=3)
    print(f"\nchaos: {figures}")
    assert figures["kills"] >= 3 and figures["recycles"] >= 1, figures
    assert figures["failed"] == 0 and figures["lost"] == 0, figures
    assert figures["records"] == figures["fits"], figures
    assert figures["equal"], figures
