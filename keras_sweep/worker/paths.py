"""Which way a fit may train (the choice) and which way it did (the outcome)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .continuation import Continuation


@dataclass(frozen=True)
class TrainingPaths:
    """How fits train: the paths they may take, and a diverging loss (:mod:`sweep.config`)."""

    #: Keras' fit with whole epochs per execution, or better (``sweep.fit.fast-path``)
    fast: bool = True
    #: sweep's compiled loop where it is exact (``sweep.fit.compiled-loop``)
    compiled_loop: bool = True
    #: XLA-compile the loop for models without random layers (``sweep.fit.xla``);
    #: not bitwise equal to Keras' fit
    xla: bool = False
    #: a loss that becomes NaN or infinite fails the fit at that epoch
    #: (``sweep.fit.fail-on-nan``, :mod:`sweep.worker.nonfinite`)
    fail_on_nan: bool = True
    #: fits of one kind of model reuse one traced loop (``sweep.fit.share-traces``,
    #: :mod:`sweep.worker.traces`); bitwise the same
    share_traces: bool = True
    #: a fit of a candidate and fold continues from a shorter fit of theirs on the
    #: compiled loop (``sweep.fit.continue-training``, :mod:`sweep.worker.continuation`);
    #: bitwise the same
    continue_training: bool = True


@dataclass
class FitPath:
    """Which way one fit trained, for its :class:`~sweep.records.FitRecord`."""

    #: "compiled loop", "compiled loop + XLA" (sweep's loop, :mod:`sweep.worker.loop`),
    #: "fast path" (Keras' fit, whole epochs per execution) or "keras" (Keras' fit
    #: as it comes)
    name: str = "keras"
    #: why the fit did not take the fastest path asked for (None: it did)
    fallback: str | None = None
    #: seconds of tracing: making a new template (rebuilding the model, tracing
    #: its epoch), then the first epoch's time beyond a later one's (instantiating
    #: the trace, and with XLA compiling); None: not the compiled loop
    trace_seconds: float | None = None
    #: the compiled loop's trace: "new" (made for this fit's kind of model, then
    #: kept), "reused" (made by an earlier fit of the same kind) or "own (why)"
    #: (traced for this fit alone); None: not the compiled loop
    trace: str | None = None
    #: short name of the kind of model whose template trained the fit (None: none)
    kind: str | None = None
    #: what the fit continues from and keeps for a longer fit of its lineage
    #: (:mod:`sweep.worker.continuation`); None: neither
    continuation: Continuation | None = None

    @property
    def fast(self) -> bool:
        """Whether a fast path (the compiled loop or whole epochs) trained it."""
        return self.name != "keras"


#: the default choice: the fastest path that is bitwise equal to Keras' fit
FASTEST = TrainingPaths()
#: Keras' fit as it comes (one call per batch)
KERAS_FIT = TrainingPaths(fast=False, fail_on_nan=False)
