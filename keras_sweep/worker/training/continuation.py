"""Continue a fit from a shorter fit of the same lineage, where that is provably exact.

A fit of ``E`` epochs from scratch and a fit that loads the state another fit
of its lineage (:mod:`keras_sweep.store.checkpoints`) ended in after ``e < E`` epochs, then
trains epochs ``e+1 .. E``, end in the same model when every part of epoch
``e+1``'s start is in that state or repeats by the seed:

- the fit is **seeded** (the seed is the same for every fit of a CV fold, so
  the initial weights are those the shorter fit started from);
- it trains on **sweep's compiled loop** (:mod:`keras_sweep.worker.training.loop`): the row
  order of epoch ``k`` is the ``k``-th draw of the same permutation, which the
  loop skips ``e`` draws ahead to reach; Keras' ``fit`` is left as it comes;
- the state holds **every variable** of the model (weights, seed-generator states
  of dropout layers) and of its optimizer (step count, slots);
- no callback keeps state across epochs beyond the logs: only ``History``,
  ``ProgbarLogger``, ``TerminateOnNaN`` and sweep's NaN guard (``EarlyStopping``
  counts its patience from the fit's start, so it restarts the fit);
- the optimizer keeps no moving average of the weights (``use_ema``), which
  ``fit`` swaps in at its end.

Anything else trains from scratch, which is always right; ``fits.csv``'s
``continued_from`` says how many epochs a fit took over (empty: none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...store.checkpoints import Checkpoint

#: callbacks that keep nothing across epochs but the logs
STATELESS_CALLBACKS = {"History", "ProgbarLogger", "TerminateOnNaN", "FailOnNonFiniteLoss"}


@dataclass
class Continuation:
    """What one fit continues from and keeps for the next (set by the worker's batch)."""

    #: the state to continue from (None: from scratch)
    start: Checkpoint | None = None
    #: keep this fit's final state for a longer fit of its lineage
    keep: bool = False
    #: the fit's final state, when kept
    end: Checkpoint | None = None
    #: epochs taken over from ``start`` (None: trained from scratch)
    continued_from: int | None = None


def why_not(model: Any, callbacks: Any, initial_epoch: int) -> str | None:
    """Why this (seeded) fit can neither continue nor be continued exactly (None: it can).

    Whether the fit is seeded is the caller's to check: a worker gives a
    :class:`Continuation` to seeded fits only.
    """
    if initial_epoch:
        return "initial_epoch given"
    names = {type(cb).__name__ for cb in getattr(callbacks, "callbacks", callbacks) or []}
    stateful = sorted(names - STATELESS_CALLBACKS)
    if stateful:
        return f"callback {stateful[0]}"
    if getattr(model.optimizer, "use_ema", False):
        return "optimizer use_ema"
    return None


def load(trainee: Any, checkpoint: Checkpoint) -> bool:
    """Put ``checkpoint``'s state into ``trainee`` (its optimizer built); False, changing
    nothing, when the variables do not line up."""
    targets = list(trainee.variables), list(trainee.optimizer.variables)
    for values, variables in zip((checkpoint.variables, checkpoint.optimizer), targets,
                                 strict=True):
        if len(values) != len(variables) or any(
                tuple(v.shape) != np.shape(a) for v, a in zip(variables, values, strict=True)):
            return False
    for values, variables in zip((checkpoint.variables, checkpoint.optimizer), targets,
                                 strict=True):
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
    return True


def capture(trainee: Any, epochs: int, history: dict[str, list[Any]]) -> Checkpoint:
    """``trainee``'s state after ``epochs`` epochs, with the fit's history so far."""
    return Checkpoint(epochs, [np.array(v.numpy()) for v in trainee.variables],
                      [np.array(v.numpy()) for v in trainee.optimizer.variables],
                      {str(k): [float(x) for x in v] for k, v in history.items()})
