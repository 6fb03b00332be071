"""``sweep doctor``: what this machine runs sweep with, and whether sweep's reliances on
other libraries' internals hold on the installed versions.

Prints sweep's and Python's versions, the CPU kind a fit's last bits depend on, each
library sweep depends on with its installed version against the range
``pyproject.toml`` declares, the training paths the settings turn on, every touch of
:mod:`keras_sweep._compat` (the library, the versions it was checked against, the
installed one), then runs the checks that can run here in a second or two. Exit 1 when
a check fails or a library is outside its declared range, else 0.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from .. import _compat
from ..config import resolve
from ..version import __version__

#: what to check (a name, and a callable that raises or returns False when it fails)
Check = tuple[str, Callable[[], Any]]


def _checks() -> list[Check]:
    sk = _compat.sklearn

    def keras_seeds() -> bool:
        import keras  # noqa: F401  (the touch reads Keras' module once imported)

        return _compat.keras.keras_seed_source() is not None

    def gradients() -> bool:
        import tensorflow  # noqa: F401

        return _compat.tensorflow.registered_gradients() is not None

    return [
        ("the canary on a local worker: each fast path bitwise Keras' fit", _canary),
        ("scikit-learn's _fit_and_score keywords (fold seeds)", sk._check_fit_and_score),
        ("a search's refit recognised (it runs on a worker)", sk.refits_recognised),
        ("Keras' source of default seeds", keras_seeds),
        ("Keras' NumPy data adapter (the shuffle the fast paths repeat)",
         _compat.keras.array_data_adapter),
        ("TensorFlow's custom-gradient registry (per-fit clean-up)", gradients),
        ("dask-jobqueue's SLURMCluster", _compat.jobqueue.import_slurm_cluster),
    ]


def _canary() -> str:
    """Start one local worker (it runs the canary as every worker does) and read its
    result; raises with the paths it switched off."""
    from ..driver.session import cluster

    with cluster("local", workers=1, seed=0, progress=False) as session:
        reports = session.worker_reports()
    result = next(iter(reports.values())).get("canary") or {}
    if result.get("failed"):
        raise RuntimeError("; ".join(f"{k} off: {v}" for k, v in result["failed"].items()))
    if result.get("seconds") is None:
        raise RuntimeError("the worker ran no canary (sweep.fit.canary or fast-path off)")
    how = "from the cache" if result.get("cached") else "run now"
    return f"{result['seconds']:.1f} s, {how}"


def _declared() -> dict[str, str]:
    """``name -> specifier`` of sweep's own dependencies, as installed."""
    out: dict[str, str] = {}
    for line in metadata.requires("keras-sweep") or []:
        if "extra ==" in line:
            continue
        requirement, _, marker = line.partition(";")
        if marker and "platform_machine" in marker:
            machine = platform.machine()
            wanted = re.search(r"platform_machine\s*(==|!=)\s*['\"]([^'\"]+)", marker)
            if wanted and (wanted[1] == "==") != (machine == wanted[2]):
                continue
        found = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
        if found:
            out[found[1]] = found[2].strip() or "any"
    return out


def _within(version: str, specifier: str) -> bool | None:
    """Whether ``version`` meets ``specifier`` (None: cannot tell without packaging)."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - packaging comes with pip and setuptools
        return None
    return specifier == "any" or version in SpecifierSet(specifier)


def report(echo: Callable[[str], None] = print) -> int:
    """Print the doctor's report; the exit code (0: all well, 1: something failed)."""
    from ..protocol import cpu_kind

    failed = 0
    echo(f"sweep {__version__} on Python {platform.python_version()} "
         f"({sys.executable}), {platform.system()} {platform.machine()}")
    echo(f"CPU: {cpu_kind()} (a seeded sweep's folds are bitwise equal on workers of the "
         "same instruction set)")
    echo("\nlibraries (installed, and the range keras-sweep declares):")
    for name, specifier in sorted(_declared().items()):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            echo(f"  MISSING  {name} {specifier}")
            failed += 1
            continue
        ok = _within(version, specifier)
        failed += ok is False
        mark = {True: "ok", False: "OUTSIDE", None: "?"}[ok]
        echo(f"  {mark:<8} {name} {version} ({specifier})")
    settings = resolve()
    paths = {"fast-path": settings.fast_path, "compiled-loop": settings.compiled_loop,
             "xla": settings.xla, "deterministic": settings.deterministic,
             "fork-workers": settings.fork_workers}
    echo("\ntraining paths (sweep.fit.*, sweep.worker.fork-workers): " +
         ", ".join(f"{k} {'on' if v else 'off'}" for k, v in paths.items()))
    echo(f"\nreliances on other libraries' internals (keras_sweep/_compat: "
         f"{len(_compat.TOUCHES)}):")
    for touch in sorted(_compat.TOUCHES.values(), key=lambda t: (t.library, t.name)):
        echo(f"  {touch.name:<34} {touch.installed():<24} checked: {touch.checked}")
    echo("\nchecks:")
    for what, check in _checks():
        try:
            outcome = check()
        except Exception as exc:  # a check that raises failed: say why
            outcome = exc
        good = outcome is not False and not isinstance(outcome, Exception)
        failed += not good
        reason = f": {str(outcome).splitlines()[0]}" if isinstance(outcome, Exception) else (
            f" ({outcome})" if isinstance(outcome, str) else "")
        echo(f"  {'ok' if good else 'FAILED':<8} {what}{reason}")
    echo("\nsweep doctor: " + ("all well" if not failed else
                               f"{failed} problem(s) above. Fix: install the versions "
                               "keras-sweep declares (pip install -c constraints.txt ... in "
                               "its repository pins the set its CI tested)"))
    return 1 if failed else 0
