"""A fit whose loss becomes NaN or infinite fails at once, with the epoch, not after all epochs.

Left alone, such a fit trains to its last epoch on NaN weights and is scored as
if it were merely bad (predictions of NaN fall to one class). sweep checks the
epoch's loss after each epoch instead and raises :class:`NonFiniteLossError`;
scikit-learn records the fit as failed (``error_score``) with that message, and
``fits.csv`` shows it. ``sweep.fit.fail-on-nan: false`` keeps Keras' behaviour
(the scores of a serial run, bitwise).
"""

from __future__ import annotations

import math
from typing import Any


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite."""


def check_loss(logs: dict[str, Any] | None, epoch: int) -> None:
    """Raise :class:`NonFiniteLossError` if ``logs``' loss is not finite (``epoch`` from 0)."""
    loss = (logs or {}).get("loss")
    if loss is None:
        return
    value = float(loss)
    if not math.isfinite(value):
        kind = "NaN" if math.isnan(value) else "infinite"
        raise NonFiniteLossError(
            f"loss became {kind} at epoch {epoch + 1}: the fit diverged (lower the learning "
            "rate, scale the features, or clip gradients)")


def guard() -> Any:
    """A Keras callback that applies :func:`check_loss` at the end of every epoch."""
    import keras

    class FailOnNonFiniteLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            check_loss(logs, epoch)

    return FailOnNonFiniteLoss()
