"""The package's layout: rooms along the data flow, no import circle, upstream internals
touched only in the seam, every module reference in the docs real.

Walks the AST of every module of the package (no import runs). Prints the
module import graph (``pytest -s tests/test_layout.py``).
"""

from __future__ import annotations

import ast
import re
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

#: the rooms of the package, in the order data flows through them, and the rooms each
#: may import (besides the neutral modules: exceptions, version, config, protocol, _compat)
ROOMS: dict[str, set[str]] = {
    "spec": {"search", "clusters", "report"},  # checking a spec asks each what it accepts
    "search": {"spec"},
    "store": set(),
    "report": {"store"},
    "worker": {"store"},  # a fit's record and checkpoint cross back as store's types
    "clusters": set(),
    "driver": {"clusters", "store", "report", "worker"},
    "cli": {"spec", "search", "driver", "store", "report", "clusters"},
}
NEUTRAL = {"exceptions", "version", "config", "protocol", "_compat"}
#: what the driver takes from the worker's room: only what it ships to workers (functions
#: run there, plugins installed there) and the one context that routes fits in the driver
SHIPPED = {
    "worker.fit": {"Carry", "FitOutcome", "IsolatedBatch", "identify", "isolated_fit",
                   "end_fit", "describe_path", "recycle_worker"},
    "worker.setup": {"WorkerSetup", "ExitReporter", "worker_report", "setup_done"},
    "worker.seeding": {"refit_seed", "op_determinism"},
    "worker.training.fastpath": {"driver_fits", "enabled", "wrapper_fit_replaced"},
}


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


def _edges() -> dict[str, set[tuple[str, str | None]]]:
    """Module -> (module of the package it imports, name taken from it or None)."""
    modules = _modules()
    edges: dict[str, set[tuple[str, str | None]]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, name, _ in _imports(module, path):
            if name and f"{target}.{name}" in modules:
                target, name = f"{target}.{name}", None
            if target in modules and target != module:
                edges[module].add((target, name))
    return edges


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` counts as x)."""
    return {m: {t for t, _ in targets} for m, targets in _edges().items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


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


def test_a_cycle_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_lives_in_a_room_or_is_neutral():
    top = {_room(m) for m in _modules()} - {""}
    assert top <= set(ROOMS) | NEUTRAL | {"__main__"}, sorted(top - set(ROOMS) - NEUTRAL)


def test_each_room_imports_only_the_rooms_it_may():
    offenders = []
    for module, targets in _edges().items():
        room = _room(module)
        if room not in ROOMS:
            continue
        for target, _ in targets:
            other = _room(target)
            if other and other != room and other not in NEUTRAL and other not in ROOMS[room]:
                offenders.append(f"{module} imports {target}")
    assert not offenders, "imports across rooms not in ROOMS:\n  " + "\n  ".join(offenders)


def test_the_driver_takes_from_the_worker_only_what_it_ships():
    offenders = []
    for module, targets in _edges().items():
        if _room(module) != "driver":
            continue
        for target, name in targets:
            short = target.removeprefix(PACKAGE + ".")
            if _room(target) == "worker" and name not in SHIPPED.get(short, set()):
                offenders.append(f"{module} imports {name or '(module)'} from {target}")
    assert not offenders, ("the driver imports worker internals (move them to "
                           "keras_sweep.protocol or add a shipped function to SHIPPED):\n  "
                           + "\n  ".join(offenders))


def test_the_neutral_modules_import_no_room():
    for module, targets in _edges().items():
        if _room(module) in NEUTRAL - {"_compat"} and module.count(".") == 1:
            rooms = {_room(t) for t, _ in targets} - NEUTRAL - {""}
            assert not rooms or module == f"{PACKAGE}.protocol" and rooms == {"worker"}, \
                f"{module} imports {sorted(rooms)}"


def test_each_package_lists_its_modules():
    """A package's docstring names every module and subpackage in it."""
    missing = []
    for init in SOURCE.rglob("__init__.py"):
        package = init.parent
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        dotted = ".".join(package.relative_to(ROOT).parts)
        children = [p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__",
                                                                             "version")]
        children += [p.name for p in package.iterdir() if (p / "__init__.py").is_file()]
        if package == SOURCE:
            continue  # the top level's docstring is the public API's; docs/design.md maps it
        missing += [f"{dotted}.{c}" for c in children if f"{dotted}.{c}" not in doc]
    assert not missing, "modules a package's docstring does not name:\n  " + "\n  ".join(missing)


def test_only_the_seam_imports_private_names_of_other_libraries():
    offenders = [f"{path.relative_to(ROOT)}:{line}: {target}{'.' + name if name else ''}"
                 for module, path in _modules().items()
                 if module != SEAM and not module.startswith(SEAM + ".")
                 for target, name, line in _imports(module, path) if _private(target, name)]
    assert not offenders, ("private upstream names imported outside keras_sweep/_compat/:\n  "
                           + "\n  ".join(offenders))


def test_the_seam_does_touch_private_names():
    """The check above can fail: the seam itself is full of what it looks for."""
    seam = [m for m in _modules() if m.startswith(SEAM + ".")]
    assert any(_private(t, n) for m in seam for t, n, _ in _imports(m, _modules()[m]))


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


# -- references in docstrings and docs ---------------------------------------------------

REFERENCE = re.compile(r"\b(keras_sweep(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
FILE = re.compile(r"\b(keras_sweep(?:/[A-Za-z_][A-Za-z0-9_]*)+(?:\.py|/))")


def _top_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def dangling(text: str) -> list[str]:
    """``keras_sweep.x.y`` names and ``keras_sweep/x.py`` paths in ``text`` that do not exist."""
    modules = _modules()
    bad = []
    for ref in set(REFERENCE.findall(text)):
        parts = ref.split(".")
        known = max((k for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in modules),
                    default=0)
        rest = parts[known:]
        if not known or (rest and rest[0] not in _top_names(modules[".".join(parts[:known])])):
            bad.append(ref)
    for ref in set(FILE.findall(text)):
        if not (ROOT / ref).exists():
            bad.append(ref)
    return sorted(bad)


def test_a_dangling_reference_is_found():
    assert dangling("see keras_sweep.backend and keras_sweep/records.py") == [
        "keras_sweep.backend", "keras_sweep/records.py"]
    assert dangling("see :func:`keras_sweep.driver.placement.candidate_key`") == []


def test_every_module_reference_is_real():
    """Docstrings, comments, docs and tests name modules and files that exist."""
    files = [*SOURCE.rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md",
             *(ROOT / "tests").glob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    bad = {str(f.relative_to(ROOT)): found for f in files
           if f.name != "test_layout.py" and (found := dangling(f.read_text()))}
    assert not bad, f"references to modules or files that do not exist: {bad}"


def test_no_docstring_names_a_sweep_module():
    """The package is ``keras_sweep``; ``sweep.x`` as a module is a dangling name."""
    role = re.compile(r":(?:mod|class|func|data|meth|attr|exc|obj):`~?sweep\.")
    offenders = [str(p.relative_to(ROOT)) for p in SOURCE.rglob("*.py")
                 if role.search(p.read_text())]
    assert not offenders, offenders


def test_every_local_link_in_the_docs_exists():
    """Markdown links from the README and docs/ to files of the repository resolve."""
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    bad = []
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in link.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                bad.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not bad, "links to files that do not exist:\n  " + "\n  ".join(bad)
