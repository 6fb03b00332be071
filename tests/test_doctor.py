"""``sweep doctor``: versions against the declared range, the CPU, the seam's checks."""

from __future__ import annotations

from importlib import metadata

import pytest

from keras_sweep import _compat
from keras_sweep.cli import doctor
from keras_sweep.cli.main import main


@pytest.mark.slow  # one local worker, which runs the canary
def test_doctor_lists_versions_cpu_touches_and_passes_its_checks(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"ok       keras {metadata.version('keras')} (" in out
    assert "CPU: " in out and "checks:" in out and "sweep doctor: all well" in out
    assert "ok       the canary on a local worker" in out
    assert all(name in out for name in _compat.TOUCHES)  # every reliance, by name
    assert "FAILED" not in out and "OUTSIDE" not in out


def test_doctor_exits_1_when_a_check_fails_or_a_library_is_outside_its_range(monkeypatch):
    def broken() -> None:
        raise RuntimeError("scikit-learn 9.0 changed it")

    monkeypatch.setattr(doctor, "_checks", lambda: [("a reliance", broken)])
    monkeypatch.setattr(doctor, "_declared", lambda: {"keras": "<3.0"})
    lines: list[str] = []
    assert doctor.report(lines.append) == 1
    text = "\n".join(lines)
    assert "FAILED   a reliance: scikit-learn 9.0 changed it" in text
    assert f"OUTSIDE  keras {metadata.version('keras')} (<3.0)" in text
    assert "2 problem(s) above. Fix:" in text
