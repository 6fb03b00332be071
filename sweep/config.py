"""Settings: packaged YAML defaults in ``dask.config``, overridden by keywords.

The defaults live in ``sweep.yaml`` beside this module. Users override them the
Dask way (``~/.config/dask/sweep.yaml``, ``DASK_SWEEP__...`` variables) or per call;
:func:`setting` is the one place where a keyword override meets the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

_DEFAULTS_FILE = Path(__file__).with_name("sweep.yaml")


def _load_defaults() -> None:
    with _DEFAULTS_FILE.open() as fh:
        defaults = yaml.safe_load(fh)
    dask.config.update_defaults(defaults)


_load_defaults()


def setting(key: str, override: Any = None) -> Any:
    """Return ``override`` if given, else the configured value of ``sweep.<key>``.

    Parameters
    ----------
    key : str
        Dotted key below ``sweep``, e.g. ``"cluster.workers"``; dashes and
        underscores are interchangeable, as everywhere in ``dask.config``.
    override : object, optional
        An explicit value from a keyword argument, spec or command-line flag.
    """
    if override is not None:
        return override
    return dask.config.get(f"sweep.{key}")
