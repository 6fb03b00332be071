"""sweep: scikit-learn grid searches of Keras models on an isolated Dask cluster."""

from __future__ import annotations

from . import config as _config  # noqa: F401  (loads the packaged defaults)
from .driver.session import Session, cluster
from .exceptions import (
    ClusterError,
    ClusterExpired,
    DataError,
    FitsFailedError,
    SpecError,
    SweepError,
    WorkerImportError,
)
from .search.hyperband import HyperbandSearchCV
from .store.records import FitRecord
from .version import __version__

__all__ = [
    "cluster",
    "Session",
    "FitRecord",
    "HyperbandSearchCV",
    "SweepError",
    "SpecError",
    "DataError",
    "ClusterError",
    "ClusterExpired",
    "WorkerImportError",
    "FitsFailedError",
    "__version__",
]
