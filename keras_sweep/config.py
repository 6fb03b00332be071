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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dask.config
import yaml

from .exceptions import SpecError
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


def _problem(name: str, value: Any, problem: str, example: str) -> SpecError:
    setting = SETTINGS_BY_NAME[name]
    return SpecError(name, value, f"{problem}: {setting.doc}",
                     f"{name}={example}, or leave it out (then sweep.{setting.key} of the "
                     "Dask config applies)", example=example)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _problem(name, value, "must be a non-empty string", "local")
    return value


def _flag(name: str, value: Any) -> bool:
    """A boolean; ``"true"``/``"false"`` as environment variables give them too."""
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, bool) and value not in (0, 1):
        raise _problem(name, value, "must be true or false", "true")
    return bool(value)


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _problem(name, value, f"must be a whole number of {least} or more", "2")
    return value


def _positive(name: str, value: Any) -> int:
    return _whole(name, value, 1)


def _count(name: str, value: Any) -> int:
    return _whole(name, value, 0)


def _positive_or_none(name: str, value: Any) -> int | None:
    """A positive whole number; ``null`` or 0: none (no limit, the default count)."""
    return None if value is None or value == 0 else _positive(name, value)


def _seconds(name: str, value: Any) -> float:
    """Seconds: a number, or a duration such as ``"10m"``."""
    from dask.utils import parse_timedelta

    try:
        seconds = float(parse_timedelta(value, default="seconds"))
    except (TypeError, ValueError, KeyError):
        raise _problem(name, value, "must be seconds or a duration", "600 (or 10m)") from None
    if seconds < 0:
        raise _problem(name, value, "must not be negative", "600 (or 10m)")
    return seconds


def _bytes_or_none(name: str, value: Any) -> int | None:
    """A size such as ``"2 GiB"`` (or bytes); ``null``: none."""
    from dask.utils import parse_bytes

    if value is None:
        return None
    try:
        size = int(parse_bytes(value)) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise _problem(name, value, "must be a size", '"2 GiB"') from None
    if isinstance(value, bool) or size <= 0:
        raise _problem(name, value, "must be a positive size", '"2 GiB"')
    return size


def _memory_limit(name: str, value: Any) -> Any:
    """``auto``, a size such as ``"4 GiB"`` or bytes, or ``null``/0 (no limit);
    kept as given, for ``LocalCluster``."""
    if value is None or value == 0 or value == "auto":
        return value
    _bytes_or_none(name, value)
    return value


@dataclass(frozen=True)
class Setting:
    """One setting: declared here once, with everything each layer derives from it."""

    #: its name in :class:`Settings`, ``sweep.cluster()``'s keywords and a spec's fields
    name: str
    #: its key below ``sweep.`` in the Dask configuration and ``sweep.yaml``
    key: str
    #: checks and converts a value (a spec's, a keyword's, the config's); raises
    #: :class:`~keras_sweep.exceptions.SpecError` naming the setting and the fix
    convert: Callable[[str, Any], Any]
    #: what it does, in a line (error messages; docs/settings.md says more)
    doc: str


#: Every setting of :class:`Settings` but the backend's own options: the one schema.
#: ``tests/test_config.py`` checks sweep.yaml, :class:`Settings`, ``sweep.cluster()``,
#: the spec's ``cluster:`` keys, the CLI's flags and docs/settings.md against it.
SETTINGS: tuple[Setting, ...] = (
    Setting("backend", "cluster.backend", _text, "the cluster backend"),
    Setting("workers", "cluster.workers", _positive_or_none,
            "worker processes; null: one per CPU core"),
    Setting("min_workers", "cluster.min-workers", _positive_or_none,
            "workers the first fit waits for; null: every worker asked"),
    Setting("threads_per_worker", "cluster.threads-per-worker", _positive,
            "threads per worker"),
    Setting("memory_limit", "cluster.memory-limit", _memory_limit,
            "memory per local worker: auto, a size, or null"),
    Setting("host", "cluster.host", _text, "where the local scheduler and workers listen"),
    Setting("dashboard_address", "cluster.dashboard-address", _text,
            "the dashboard's address"),
    Setting("startup_timeout", "cluster.startup-timeout", _seconds,
            "seconds to wait for the workers"),
    Setting("expiry_margin", "cluster.expiry-margin", _seconds,
            "seconds before a cluster's end that the sweep stops"),
    Setting("recycle_after_fits", "worker.recycle-after-fits", _positive_or_none,
            "fits after which a worker restarts"),
    Setting("recycle_above_memory", "worker.recycle-above-memory", _bytes_or_none,
            "resident memory above which a worker restarts"),
    Setting("keras_backend", "worker.keras-backend", _text, "KERAS_BACKEND of the workers"),
    Setting("preload_tensorflow", "worker.preload-tensorflow", _flag,
            "import TensorFlow when a worker starts"),
    Setting("fork_workers", "worker.fork-workers", _flag,
            "local workers are forked from a server that imported TensorFlow once"),
    Setting("freeze_gc", "worker.freeze-gc", _flag,
            "freeze live objects out of Python's collector after each fit"),
    Setting("full_gc_every", "worker.full-gc-every", _count,
            "fits between two full collections (0: never)"),
    Setting("purge_custom_gradients", "worker.purge-custom-gradients", _flag,
            "drop the custom gradients a fit registered"),
    Setting("keep_kernels", "worker.keep-kernels", _flag,
            "fits on shared traces keep TensorFlow's kernel cache for the next"),
    Setting("max_retries", "fit.max-retries", _count,
            "runs of a fit that may die with their worker, less one"),
    Setting("deterministic", "fit.deterministic", _flag, "TensorFlow op determinism"),
    Setting("allow_mixed_cpus", "fit.allow-mixed-cpus", _flag,
            "a seeded sweep may run on workers of different CPU types (a warning)"),
    Setting("fast_path", "fit.fast-path", _flag, "whole epochs per Keras execution"),
    Setting("canary", "fit.canary", _flag,
            "each worker proves the fast paths against Keras' fit before they serve fits"),
    Setting("compiled_loop", "fit.compiled-loop", _flag, "sweep's compiled loop where exact"),
    Setting("xla", "fit.xla", _flag, "XLA-compile the compiled loop (not bitwise)"),
    Setting("fail_on_nan", "fit.fail-on-nan", _flag, "a non-finite loss fails the fit"),
    Setting("share_traces", "fit.share-traces", _flag,
            "fits of one kind of model reuse one trace"),
    Setting("continue_training", "fit.continue-training", _flag,
            "a fit continues from a shorter fit of its lineage"),
    Setting("place_by_kind", "fit.place-by-kind", _flag,
            "fits go to a worker holding their kind's trace"),
    Setting("single_threaded_epochs", "fit.single-threaded-epochs", _flag,
            "a shared trace's epoch runs on TensorFlow's single-threaded executor"),
    Setting("inline_steps", "fit.inline-steps", _flag,
            "there, Keras' train step is inlined in the epoch's loop"),
    Setting("tls", "tls.enabled", _flag, "mutual TLS between the cluster's processes"),
    Setting("tls_valid_days", "tls.valid-days", _seconds,
            "days the certificates sweep makes are valid"),
    Setting("report_interval", "report.live-interval", _seconds,
            "seconds between two live report pages (0: none)"),
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: Settings fields -> their key below ``sweep`` in the Dask configuration
KEYS: dict[str, str] = {s.name: s.key for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Every setting of one sweep, resolved (see the module's precedence); one field per
    entry of :data:`SETTINGS`, plus the sweep's name and the backend's options."""

    backend: str
    workers: int | None
    min_workers: int | None
    threads_per_worker: int
    memory_limit: Any
    host: str
    dashboard_address: str
    startup_timeout: float
    expiry_margin: float
    recycle_after_fits: int | None
    #: bytes
    recycle_above_memory: int | None
    keras_backend: str
    preload_tensorflow: bool
    fork_workers: bool
    freeze_gc: bool
    full_gc_every: int
    purge_custom_gradients: bool
    keep_kernels: bool
    max_retries: int
    deterministic: bool
    allow_mixed_cpus: bool
    fast_path: bool
    canary: bool
    compiled_loop: bool
    xla: bool
    fail_on_nan: bool
    share_traces: bool
    continue_training: bool
    place_by_kind: bool
    single_threaded_epochs: bool
    inline_steps: bool
    tls: bool
    tls_valid_days: float
    report_interval: float
    #: the sweep's name (a spec's ``name``): tags cloud resources, names jobs
    name: str = "sweep"
    #: the backend's own options: explicit values over ``sweep.<backend>.*``
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> TrainingPaths:
        """The training paths fits may take (fast path, compiled loop, XLA)."""
        return TrainingPaths(self.fast_path, self.compiled_loop, self.xla, self.fail_on_nan,
                             self.share_traces, self.continue_training,
                             self.single_threaded_epochs, self.inline_steps)

    def option(self, name: str, default: Any = None) -> Any:
        """A backend option (``None`` counts as unset)."""
        value = self.options.get(name)
        return default if value is None else value


def resolve(**explicit: Any) -> Settings:
    """Resolve explicit values (``None``: unset) over the configuration.

    Keywords are the names of :data:`SETTINGS` and the backend's options; each
    value, explicit or configured, goes through its setting's converter (a bad one
    raises :class:`~keras_sweep.exceptions.SpecError` naming it, before anything
    starts). :attr:`Settings.options` holds every explicit value over the
    backend's section ``sweep.<backend>.*``, so a backend may default a common key
    its own way (e.g. the ssh scheduler's ``dashboard_address``).

    Examples
    --------
    >>> resolve(backend="local", workers=2).workers
    2
    """
    values = {}
    for s in SETTINGS:
        given = explicit.get(s.name)
        values[s.name] = s.convert(s.name, setting(s.key) if given is None else given)
    return Settings(**values, name=str(explicit.get("name") or "sweep"),
                    options=MappingProxyType(_backend_options(values["backend"], explicit)))


def _backend_options(backend: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` over the backend's section ``sweep.<backend>`` (keys with underscores)."""
    section = dask.config.get(f"sweep.{backend}", default=None)
    configured = ({str(k).replace("-", "_"): v for k, v in section.items()}
                  if isinstance(section, dict) else {})
    return {**configured, **{k: v for k, v in given.items() if v is not None}}


def default_output(name: str) -> str:
    """The results folder of a sweep called ``name``: ``<sweep.output>/<name>``."""
    return f"{setting('output')}/{name}"
