"""The package's layout: no import circle, and upstream internals touched only in the seam.

Walks the AST of every module of the package (no import runs). Prints the
module import graph (``pytest -s tests/test_layout.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = "keras_sweep"
SOURCE = ROOT / PACKAGE
SEAM = f"{PACKAGE}._compat"
#: libraries whose private names only the seam may import
GUARDED = ("joblib", "sklearn", "keras", "scikeras", "tensorflow", "distributed",
           "dask_jobqueue")
#: module paths that are private by their library's convention, without a leading "_"
PRIVATE_PATHS = ("keras.src", "tensorflow.python")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) of every import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, path.name == "__init__.py")
            found += [(target, alias.name, node.lineno) for alias in node.names]
    return found


def _private(target: str, name: str | None) -> bool:
    if target.split(".")[0] not in GUARDED:
        return False
    parts = target.split(".") + ([name] if name else [])
    return (any(p.startswith("_") for p in parts)
            or any(target == p or target.startswith(p + ".") for p in PRIVATE_PATHS))


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` counts as x)."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, name, _ in _imports(module, path):
            if name and f"{target}.{name}" in modules:
                target = f"{target}.{name}"
            if target in modules and target != module:
                edges[module].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    edges = graph()
    print("\nimport graph of the package (module -> modules it imports):")
    for module in sorted(edges):
        print(f"  {module} -> {', '.join(sorted(edges[module])) or '(none)'}")
    assert _cycle(edges) is None, f"import circle: {' -> '.join(_cycle(edges) or [])}"


def test_only_the_seam_imports_private_names_of_other_libraries():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {target}{'.' + name if name else ''}"
                 for module, path in _modules().items() if module != SEAM
                 for target, name, line in _imports(module, path) if _private(target, name)]
    assert not offenders, ("private upstream names imported outside keras_sweep/_compat.py:\n  "
                           + "\n  ".join(offenders))


def test_the_seam_does_touch_private_names():
    """The check above can fail: the seam itself is full of what it looks for."""
    seam = _modules()[SEAM]
    assert any(_private(t, n) for t, n, _ in _imports(SEAM, seam))


@pytest.mark.parametrize("target, name, private", [
    ("joblib._dask", "DaskDistributedBackend", True),
    ("joblib", "Parallel", False),
    ("keras.src.random", "seed_generator", True),
    ("keras", "tree", False),
    ("sklearn.model_selection", "_validation", True),
    ("numpy", "_core", False),  # not a guarded library
])
def test_private_name_rule(target, name, private):
    assert _private(target, name) is private
