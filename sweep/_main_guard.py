"""Catch the ``__main__`` trap before any worker process is spawned.

Dask starts worker processes with multiprocessing's *spawn* method, which
re-imports the user's script in every worker. A script that calls sweep at
module level, outside ``if __name__ == "__main__":``, would start a cluster from
inside each worker; multiprocessing then fails with an opaque "bootstrapping
phase" error in the worker's log and "Nanny failed to start" in the driver. We
find the calling line in the script and explain the fix instead.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

from .exceptions import ClusterError


def _is_main_test(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)


def _guarded(tree: ast.Module, line: int) -> bool:
    """True if ``line`` sits inside a function, a class or a ``__main__`` test."""
    for node in ast.walk(tree):
        start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
        if start is None or end is None or not start <= line <= end:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return True
        if _is_main_test(node):
            return True
    return False


def check_main_guard() -> None:
    """Raise :class:`ClusterError` if the running script would start workers unguarded."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file is None or getattr(main, "__spec__", None) is not None:
        return  # interactive session, notebook or ``python -m``: nothing is re-run
    path = Path(main_file).resolve()
    frame = inspect.currentframe()
    while frame is not None:
        if Path(frame.f_code.co_filename).resolve() == path and frame.f_code.co_name == "<module>":
            break
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError):
        return
    if not _guarded(tree, line):
        raise ClusterError(
            f"{path.name}, line {line} starts a sweep cluster at the top level of the script.\n"
            "  Worker processes re-import the script, so this would start a cluster in "
            "every worker.\n"
            "  Fix: put the sweep code under a main guard:\n"
            "      if __name__ == \"__main__\":\n"
            "          with sweep.cluster(\"local\"):\n"
            "              grid.fit(X, y)"
        )
