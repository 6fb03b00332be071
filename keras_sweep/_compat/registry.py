"""The register of every touch of another library's internals."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Touch:
    """One reliance on a library's internals."""

    name: str
    library: str  #: distribution name, e.g. "scikit-learn" (alternatives split by "|")
    checked: str  #: versions it was checked against, e.g. ">=1.4, tested 1.9.1"
    what: str  #: the private name or behaviour relied on

    def installed(self) -> str:
        """Name and installed version of :attr:`library`, e.g. ``"keras 3.15.1"``."""
        for name in self.library.split("|"):
            if name == "python":
                return f"python {platform.python_version()}"
            try:
                return f"{name} {metadata.version(name)}"
            except metadata.PackageNotFoundError:
                continue
        return f"{self.library} not installed"


#: every touch, by the name of the function or class that makes it
TOUCHES: dict[str, Touch] = {}


def touch(library: str, checked: str, what: str) -> Callable[[F], F]:
    """Register the decorated function or class as a touch of ``library``'s internals."""

    def register(obj: F) -> F:
        name = obj.__name__
        TOUCHES[name] = Touch(name, library, checked, what)
        return obj

    return register


def changed(name: str, detail: str) -> Exception:
    """The :class:`~keras_sweep.exceptions.LibraryChangedError` for touch ``name``: which
    library and version, what sweep relies on, what is different, and the fix."""
    from ..exceptions import LibraryChangedError

    found = TOUCHES[name]
    return LibraryChangedError(
        f"{found.installed()} changed an internal sweep relies on ({found.what}): "
        f"{detail}.\n  Fix: install the version sweep was checked against ({found.library} "
        f"{found.checked}), or a keras-sweep release that supports {found.installed()}; "
        "`sweep doctor` lists every such reliance.")
