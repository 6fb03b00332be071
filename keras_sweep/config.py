"""Settings: resolved once, in one place, into one frozen :class:`Settings`.

Precedence, highest first:

1. an explicit value: a spec field, a command-line flag (the CLI writes flags
   into the spec) or a keyword argument of :func:`keras_sweep.cluster`;
2. the user's Dask configuration (``~/.config/dask/*.yaml``, ``DASK_SWEEP__...``
   environment variables, ``dask.config.set``);
3. the packaged defaults in ``sweep.yaml`` beside this module.

``None`` (or a spec field left out) always means "use the configuration". Every
key of ``sweep.yaml`` is read here, and only here; the cluster backends get
their own section (``sweep.slurm.*``, ``sweep.ssh.*``) resolved the same way
into :attr:`Settings.options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask.config
import yaml

from .protocol import TrainingPaths

_DEFAULTS_FILE = Path(__file__).with_name("sweep.yaml")


def _load_defaults() -> None:
    with _DEFAULTS_FILE.open() as fh:
        defaults = yaml.safe_load(fh)
    dask.config.update_defaults(defaults)


_load_defaults()


def setting(key: str) -> Any:
    """The configured value of ``sweep.<key>`` (dashes and underscores alike)."""
    return dask.config.get(f"sweep.{key}")


@dataclass(frozen=True)
class Settings:
    """Every setting of one sweep, resolved (see the module's precedence)."""

    backend: str
    #: worker processes asked for (``None``: the backend's default)
    workers: int | None
    threads_per_worker: int
    keras_backend: str
    memory_limit: Any
    host: str
    dashboard_address: str
    startup_timeout: float
    recycle_after_fits: int | None
    recycle_above_bytes: int | None
    preload_tensorflow: bool
    freeze_gc: bool
    full_gc_every: int
    purge_custom_gradients: bool
    max_retries: int
    deterministic: bool
    fast_path: bool
    compiled_loop: bool
    xla: bool
    fail_on_nan: bool
    tls: bool
    tls_valid_days: float
    #: seconds before a cluster's end (certificates, hours) that the sweep stops
    expiry_margin: float = 300.0
    #: seconds between two live pages of report.html (0: no live page)
    report_interval: float = 5.0
    #: fits of one kind of model reuse one traced loop in a worker
    share_traces: bool = True
    #: a fit continues from a shorter fit of its candidate and fold where exact
    continue_training: bool = True
    #: fits go to a free worker that holds their kind of model's trace when one can
    place_by_kind: bool = True
    #: the sweep's name (a spec's ``name``): tags cloud resources, names jobs
    name: str = "sweep"
    #: the backend's own options: explicit values over ``sweep.<backend>.*``
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> TrainingPaths:
        """The training paths fits may take (fast path, compiled loop, XLA)."""
        return TrainingPaths(self.fast_path, self.compiled_loop, self.xla, self.fail_on_nan,
                             self.share_traces, self.continue_training)

    def option(self, name: str, default: Any = None) -> Any:
        """A backend option (``None`` counts as unset)."""
        value = self.options.get(name)
        return default if value is None else value


#: Settings fields -> their key below ``sweep`` in the Dask configuration
KEYS: dict[str, str] = {
    "backend": "cluster.backend",
    "workers": "cluster.workers",
    "threads_per_worker": "cluster.threads-per-worker",
    "memory_limit": "cluster.memory-limit",
    "host": "cluster.host",
    "dashboard_address": "cluster.dashboard-address",
    "startup_timeout": "cluster.startup-timeout",
    "expiry_margin": "cluster.expiry-margin",
    "recycle_after_fits": "worker.recycle-after-fits",
    "recycle_above_memory": "worker.recycle-above-memory",
    "keras_backend": "worker.keras-backend",
    "preload_tensorflow": "worker.preload-tensorflow",
    "freeze_gc": "worker.freeze-gc",
    "full_gc_every": "worker.full-gc-every",
    "purge_custom_gradients": "worker.purge-custom-gradients",
    "max_retries": "fit.max-retries",
    "deterministic": "fit.deterministic",
    "fast_path": "fit.fast-path",
    "compiled_loop": "fit.compiled-loop",
    "xla": "fit.xla",
    "fail_on_nan": "fit.fail-on-nan",
    "share_traces": "fit.share-traces",
    "continue_training": "fit.continue-training",
    "place_by_kind": "fit.place-by-kind",
    "tls": "tls.enabled",
    "tls_valid_days": "tls.valid-days",
    "report_interval": "report.live-interval",
}


def resolve(**explicit: Any) -> Settings:
    """Resolve explicit values (``None``: unset) over the configuration.

    Keywords are the names of :data:`KEYS` (``recycle_above_memory`` takes a
    size such as ``"2 GiB"``) and the backend's options. :attr:`Settings.options`
    holds every explicit value over the backend's section ``sweep.<backend>.*``,
    so a backend may default a common key its own way (e.g. the ssh
    scheduler's ``dashboard_address``).

    Examples
    --------
    >>> resolve(backend="local", workers=2).workers
    2
    """
    from dask.utils import parse_bytes

    def pick(name: str) -> Any:
        value = explicit.get(name)
        return setting(KEYS[name]) if value is None else value

    backend = str(pick("backend"))
    workers, after, above = pick("workers"), pick("recycle_after_fits"), pick(
        "recycle_above_memory")
    return Settings(
        backend=backend,
        workers=int(workers) if workers else None,
        threads_per_worker=int(pick("threads_per_worker")),
        keras_backend=str(pick("keras_backend")),
        memory_limit=pick("memory_limit"),
        host=str(pick("host")),
        dashboard_address=str(pick("dashboard_address")),
        startup_timeout=float(pick("startup_timeout")),
        expiry_margin=float(pick("expiry_margin")),
        recycle_after_fits=int(after) if after else None,
        recycle_above_bytes=parse_bytes(above) if isinstance(above, str) else above,
        preload_tensorflow=bool(pick("preload_tensorflow")),
        freeze_gc=bool(pick("freeze_gc")),
        full_gc_every=int(pick("full_gc_every") or 0),
        purge_custom_gradients=bool(pick("purge_custom_gradients")),
        max_retries=int(pick("max_retries")),
        deterministic=bool(pick("deterministic")),
        fast_path=bool(pick("fast_path")),
        compiled_loop=bool(pick("compiled_loop")),
        xla=bool(pick("xla")),
        fail_on_nan=bool(pick("fail_on_nan")),
        share_traces=bool(pick("share_traces")),
        continue_training=bool(pick("continue_training")),
        place_by_kind=bool(pick("place_by_kind")),
        tls=bool(pick("tls")),
        tls_valid_days=float(pick("tls_valid_days")),
        report_interval=float(pick("report_interval") or 0),
        name=str(explicit.get("name") or "sweep"),
        options=MappingProxyType(_backend_options(backend, explicit)),
    )


def _backend_options(backend: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over the backend's section ``sweep.<backend>`` (keys with underscores)."""
    section = dask.config.get(f"sweep.{backend}", default=None)
    configured = ({str(k).replace("-", "_"): v for k, v in section.items()}
                  if isinstance(section, dict) else {})
    return {**configured, **{k: v for k, v in given.items() if v is not None}}


def default_output(name: str) -> str:
    """The results folder of a sweep called ``name``: ``<sweep.output>/<name>``."""
    return f"{setting('output')}/{name}"
