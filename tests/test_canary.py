"""The canary: each fast path proves itself against Keras' own fit where fits run
(keras_sweep.worker.canary), in this process as a worker would run it."""

from __future__ import annotations

import pytest

from keras_sweep.protocol import FASTEST
from keras_sweep.worker import canary
from keras_sweep.worker.setup import enable_determinism

pytestmark = pytest.mark.slow  # 8-16 small fits per test


def test_every_path_is_exact_here_and_the_result_is_kept_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(tmp_path))
    enable_determinism()
    failed, seconds, cached = canary.checked(threads=1)
    assert failed == {} and not cached
    again, warm, cached = canary.checked(threads=1)
    assert again == {} and cached and warm < seconds / 10
    print(f"\ncanary: {seconds:.1f} s cold, {warm * 1000:.0f} ms from the cache")
    assert canary.restricted(FASTEST, {}) == (FASTEST, None)


def test_a_path_whose_arithmetic_drifts_from_keras_is_switched_off(monkeypatch):
    """As if Keras changed Dropout's arithmetic: the shared traces' copy of it (here
    made to divide where TensorFlow multiplies) no longer matches Keras' fit, so the
    canary switches shared traces off; fits then train on their own traces."""
    import tensorflow as tf

    from keras_sweep.worker.training import traces

    original = traces.dropout_with_tensors

    def drifted(layer, inputs, rate, scale):
        out = original(layer, inputs, rate, scale)
        return tf.math.divide(tf.math.multiply(out, scale), scale * 1.0000001)

    monkeypatch.setattr(traces, "dropout_with_tensors", drifted)
    enable_determinism()
    failed = canary.run()
    assert set(failed) == {"shared trace"}, failed
    assert "Dense + Dropout + MaxNorm" in failed["shared trace"]
    assert "differ from Keras' fit" in failed["shared trace"] and "keras " in failed["shared trace"]
    paths, why = canary.restricted(FASTEST, failed)
    assert not paths.share_traces and paths.compiled_loop and why == failed["shared trace"]
