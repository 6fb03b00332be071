"""Templates' epochs on TensorFlow's single-threaded executor: bitwise the default, never hung."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import tree

from keras_sweep._compat.keras import array_data_adapter, array_inputs
from keras_sweep.protocol import TrainingPaths
from keras_sweep.worker.setup import enable_determinism
from keras_sweep.worker.training import executor, traces


@pytest.fixture(scope="module")
def pima(pima_path):
    data = np.loadtxt(pima_path, delimiter=",", dtype="float32")
    return data[:203, :8], data[:203, 8:9]


@pytest.fixture(autouse=True)
def fresh_templates():
    if executor.accelerators():
        pytest.skip("the single-threaded executor serves CPU-only processes")
    traces.forget()
    yield
    traces.forget()


def _net(dropout: float = 0.3, optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(11)
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="relu",
                           kernel_constraint=keras.constraints.MaxNorm(2.0)),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def _head(head: str, optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(11)
    model = keras.Sequential([
        keras.Input(shape=(8,)),
        keras.layers.Dense(12, activation="tanh"),
        keras.layers.Dense(1) if head == "regression" else
        keras.layers.Dense(3, activation="softmax"),
    ])
    if head == "regression":
        model.compile(loss="mse", optimizer=optimizer, metrics=["mae"])
    else:
        model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer,
                      metrics=["accuracy"])
    return model


def _epochs(pima, single: bool, epochs: int = 3, inlined: bool = False, room: int | None = None,
            **net) -> tuple[list[np.ndarray], list, str]:
    """Train a fresh template of ``_net(**net)`` for a few epochs; its state and logs."""
    traces.forget()
    how = TrainingPaths(single_threaded_epochs=single, inline_steps=inlined)
    X, y = pima
    head = net.pop("head", None)
    if head == "regression":
        y = X[:, 1:2] / 100.0
    elif head == "multi-class":
        y = np.digitize(X[:, 1], [100.0, 130.0]).astype("int64")[:, None]
    model = _head(head, **net) if head else _net(**net)
    inputs = array_inputs(array_data_adapter()(X, y, batch_size=10, shuffle=True))
    template, made, why = traces.template_for(model, inputs, how)
    assert template is not None and made, why
    template.load(model)
    _INLINED.append(_calls_no_function(template.epoch))
    if room is not None:
        template.epoch.room = room
    data = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
    order = tf.constant(np.random.RandomState(3).permutation(len(X)).astype("int64"))
    logs = [{k: float(v) for k, v in template.epoch(order, data).items()}
            for _ in range(epochs)]
    state = [v.numpy() for v in template.model.variables + template.model.optimizer.variables]
    return state, logs, type(template.epoch).__name__


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_single_threaded_epochs_equal_the_default_executor_bitwise(pima, optimizer):
    enable_determinism()
    single, single_logs, kind = _epochs(pima, True, optimizer=optimizer)
    default, default_logs, other = _epochs(pima, False, optimizer=optimizer)
    assert (kind, other) == ("SingleThreaded", "Function")
    assert single_logs == default_logs
    for a, b in zip(single, default, strict=True):
        np.testing.assert_array_equal(a, b)


_INLINED: list[bool] = []


def _calls_no_function(epoch) -> bool:
    return isinstance(epoch, executor.SingleThreaded) and \
        executor.loop_waits(epoch.concrete) is None


@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum", "rmsprop", "adagrad",
                                       "adadelta", "nadam"])
def test_a_step_inlined_in_the_loop_equals_the_called_step_bitwise(pima, optimizer):
    # inlined, the step is not optimized by Grappler: without sweep's mimicry of its
    # arithmetic rewrites (sorted sums, x * rsqrt(y) for x / sqrt(y)) all 6 differ
    # in the last bits within 3 epochs (checked)
    enable_determinism()
    chosen = (keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
              if optimizer == "sgd-momentum" else optimizer)
    called, called_logs, _ = _epochs(pima, True, optimizer=chosen)
    chosen = (keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
              if optimizer == "sgd-momentum" else optimizer)
    inlined, inlined_logs, kind = _epochs(pima, True, inlined=True, optimizer=chosen)
    assert kind == "SingleThreaded" and _INLINED[-1], "the step was called, not inlined"
    assert inlined_logs == called_logs
    for a, b in zip(inlined, called, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("head", ["regression", "multi-class"])
def test_inlined_steps_of_regression_and_multi_class_heads_equal_called_steps(pima, head):
    enable_determinism()
    called, called_logs, _ = _epochs(pima, True, head=head, optimizer="rmsprop")
    inlined, inlined_logs, _ = _epochs(pima, True, inlined=True, head=head,
                                       optimizer="rmsprop")
    assert _INLINED[-1], "the step was called, not inlined"
    assert inlined_logs == called_logs
    for a, b in zip(inlined, called, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_step_refused_inline_is_called_and_trains_as_if_never_tried(pima, monkeypatch):
    enable_determinism()
    called, logs, _ = _epochs(pima, True, optimizer="rmsprop")
    monkeypatch.setattr(traces, "INLINABLE_OPS", frozenset())  # every op unverified
    refused, refused_logs, kind = _epochs(pima, True, inlined=True, optimizer="rmsprop")
    assert kind == "SingleThreaded" and not _INLINED[-1]
    assert refused_logs == logs
    for a, b in zip(refused, called, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_inlined_epoch_without_room_runs_on_the_default_executor_bitwise(pima):
    enable_determinism()
    inlined, logs, _ = _epochs(pima, True, inlined=True, optimizer="rmsprop")
    fallback, fallback_logs, _ = _epochs(pima, True, inlined=True, room=0, optimizer="rmsprop")
    assert fallback_logs == logs
    for a, b in zip(fallback, inlined, strict=True):
        np.testing.assert_array_equal(a, b)


def test_inlined_steps_call_no_function_and_a_loop_that_does_is_refused(pima):
    X, y = pima
    inputs = array_inputs(array_data_adapter()(X, y, batch_size=10, shuffle=True))
    template, _, why = traces.template_for(_net(), inputs, TrainingPaths())
    assert template is not None and _calls_no_function(template.epoch), why
    traces.forget()
    template, _, why = traces.template_for(_net(), inputs, TrainingPaths(inline_steps=False))
    assert template is not None, why
    # the body calls the step: a call op in it, or the step in the library
    assert executor.loop_waits(template.epoch.concrete) in ("a nested function",
                                                            "StatefulPartitionedCall")


def test_a_step_that_waits_on_a_function_of_its_own_is_not_run_single_threaded():
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def branching(x):
        return tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def plain(x):
        return x * 2.0

    assert executor.waits_within(branching.get_concrete_function()) in ("If", "StatelessIf")
    assert executor.waits_within(plain.get_concrete_function()) is None
    assert executor.single_threaded(plain, branching) is None


CONCURRENT = """
import sys, threading
import numpy as np, tensorflow as tf
from keras import tree
sys.path.insert(0, {tests!r})
from test_executor import _net
from keras_sweep._compat.keras import array_data_adapter, array_inputs
from keras_sweep.protocol import TrainingPaths
from keras_sweep.worker.training import executor, traces

data = np.loadtxt({pima!r}, delimiter=",", dtype="float32")[:203]
inputs = array_inputs(array_data_adapter()(data[:, :8], data[:, 8:], batch_size=10, shuffle=True))
tensors = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
order = tf.constant(np.arange(203, dtype="int64"))
threads = executor.pool_size() + 1
epochs = []
for i in range(threads):  # one template per thread: they share no variables
    template, _, why = traces.template_for(_net(dropout=0.1 * (i + 1)), inputs,
                                           TrainingPaths())
    assert isinstance(template.epoch, executor.SingleThreaded), why
    epochs.append(template.epoch)
    traces.forget()
start, done = threading.Barrier(threads), []

def train(epoch):
    start.wait()
    for _ in range(15):
        epoch(order, tensors)
    done.append(1)

workers = [threading.Thread(target=train, args=(e,)) for e in epochs]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(f"{{len(done)}} of {{threads}} threads done", flush=True)
"""


def test_more_concurrent_epochs_than_the_pool_allows_do_not_hang(pima_path, tmp_path):
    """With an inter-op pool of n threads, n concurrent single-threaded epochs would
    wait on each other for ever (each holds a pool thread while its step needs
    another); the calls beyond ``n - 1`` run on the default executor instead.
    Run in a child process: a hang there fails this test instead of hanging it."""
    script = tmp_path / "epochs_at_once.py"
    script.write_text(CONCURRENT.format(tests=str(Path(__file__).parent), pima=str(pima_path)))
    try:
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("concurrent single-threaded epochs hung (no result in 180 s)")
    assert run.returncode == 0, run.stderr[-2000:]
    done = [line for line in run.stdout.splitlines() if line.endswith("threads done")]
    assert done, run.stdout[-2000:]
    finished, _, threads = done[0].split()[:3]
    assert finished == threads and int(threads) >= 3
