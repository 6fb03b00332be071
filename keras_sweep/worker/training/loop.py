"""sweep's compiled training loop: a whole epoch per call, Keras' own train step inside.

Keras' ``fit`` spends a fixed 35-45 ms per epoch on its machinery (data iterator,
callbacks, step bookkeeping) and ~0.3 ms per step around its compiled train
function; for the small networks of a grid search that is most of the time
(``docs/performance.md``). :func:`fit` stands in for ``model.fit`` during a
worker's fit: one traced function per epoch loops over the epoch's batches and
calls the model's own ``train_step`` (the same function Keras traces, with the
same ``jit_compile``), so the arithmetic is op for op Keras' own.

Bitwise equality with Keras' ``fit`` is the contract:

- the epoch's row order is drawn by the same operations as in Keras'
  ``ArrayDataAdapter`` (so with the same seeds; a seeded fit repeats one order
  every epoch, as Keras does), and batch k holds the permuted rows
  ``k*b .. (k+1)*b``, the last one partial;
- each batch is gathered and handed to ``train_step`` as ``(x, y)`` or
  ``(x, y, sample_weight)``, as Keras' pipeline yields it;
- metrics are reset every epoch, epoch-level callbacks (``History``,
  ``EarlyStopping``, ``ModelCheckpoint``, ...) run between epochs with the
  model's metric results, ``stop_training`` is honoured, and ``fit`` returns
  the model's ``History``.

Whatever it cannot serve exactly (validation data, class weights, steps per
epoch, inputs other than dense NumPy arrays, ``shuffle="batch"``, callbacks
that restore epochs) goes to Keras' ``fit``; :func:`unsupported` says why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..._compat.keras import (
    ArrayInputs,
    all_layers,
    array_data_adapter,
    array_inputs,
    build_for_training,
)
from ...protocol import FitPath, TrainingPaths
from . import continuation

#: arguments of ``Model.fit`` that leave the loop when given (with their "unset" value)
FALLBACK_ARGUMENTS = {"validation_split": 0.0, "validation_data": None, "class_weight": None,
                      "steps_per_epoch": None, "validation_steps": None,
                      "validation_batch_size": None}
#: callbacks the loop cannot honour exactly (they change the starting epoch)
FALLBACK_CALLBACKS = ("BackupAndRestore",)


def unsupported(model: Any, x: Any, y: Any, sample_weight: Any, shuffle: Any,
                callbacks: Any, extra: dict[str, Any]) -> str | None:
    """Why the loop cannot run this fit exactly as Keras would (None: it can)."""
    for name, unset in FALLBACK_ARGUMENTS.items():
        value = extra.get(name, unset)
        if value is not unset and value != unset:
            return f"{name} given"
    unknown = set(extra) - set(FALLBACK_ARGUMENTS) - {"validation_freq"}
    if unknown:
        return f"fit argument(s) {', '.join(sorted(unknown))}"
    for name, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        if value is None and name != "sample_weight":
            return f"{name} missing"
        if value is not None and not (isinstance(value, np.ndarray)
                                      and value.dtype.kind in "biuf"):
            return f"{name} is not a numeric NumPy array"
    if shuffle not in (True, False):
        return f"shuffle={shuffle!r}"
    names = [type(cb).__name__ for cb in (callbacks or [])]
    blocked = [n for n in names if n in FALLBACK_CALLBACKS]
    if blocked:
        return f"callback {blocked[0]}"
    if not getattr(model, "compiled", True) or getattr(model, "optimizer", None) is None:
        return "model not compiled"
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"Keras backend {keras.backend.backend()}"
    return None


def permutations(num_samples: int, shuffle: bool | str) -> Any:
    """A one-element dataset of an epoch's row order, drawn as Keras draws it.

    The same operations as ``ArrayDataAdapter.get_tf_dataset``'s ``permutation``
    (``tf.range`` then ``tf.random.shuffle``, mapped over ``Dataset.range(1)``),
    so its random operation gets the same seed. Both the compiled loop and the
    fast path's whole-epoch pipeline (:mod:`keras_sweep.worker.training.fastpath`) draw from it.
    """
    import tensorflow as tf

    def permutation(_: Any) -> Any:
        indices = tf.range(num_samples, dtype=tf.int64)
        if shuffle:
            indices = tf.random.shuffle(indices)
        return indices

    return tf.data.Dataset.range(1).map(permutation)


def epoch_orders(dataset: Any) -> Iterator[Any]:
    """The row order of each epoch: a new iterator of ``dataset`` per epoch, as Keras makes.

    Making a ``tf.data`` iterator costs ~17 ms, more than a small network's whole
    epoch. A new iterator re-runs the permutation with the same op seeds, so
    under a global seed every epoch gets the same order (Keras' documented
    behaviour); when the first two epochs' orders are equal, the first is reused.
    """
    import tensorflow as tf

    first = next(iter(dataset))
    yield first
    second = next(iter(dataset))
    yield second
    repeats = bool(tf.reduce_all(tf.equal(first, second)))
    while True:
        yield first if repeats else next(iter(dataset))


def random_layers(model: Any) -> list[str]:
    """Names of ``model``'s layers that draw random numbers while training (e.g. Dropout)."""
    return [layer.name for layer in (all_layers(model) if hasattr(model, "layers") else [])
            if getattr(layer, "seed_generator", None) is not None]


def epoch_function(model: Any, inputs: ArrayInputs, xla: bool = False) -> Callable[[Any], None]:
    """One traced function that trains ``model`` on one epoch, given its row order.

    With ``xla`` the whole epoch is compiled by XLA (``jit_compile``): a step
    costs a tenth, the compile ~1-2 s per fit, and results differ from Keras'
    fit in the last bits.
    """
    import tensorflow as tf
    from keras import tree

    data = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
    size, rows = inputs.batch_size, inputs.num_samples
    full, tail = divmod(rows, size)

    # one trace serves the full batches and the partial last one: the batch
    # dimension is left unknown, as Keras' own step ends up after its retrace
    spec = tree.map_structure(
        lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), data)
    step = tf.function(tf.autograph.experimental.do_not_convert(model.train_step),
                       input_signature=[spec],
                       jit_compile=bool(getattr(model, "jit_compile", False)))

    def batch_of(indices: Any) -> Any:
        return tree.map_structure(lambda t: tf.gather(t, indices, axis=0), data)

    # variables made now, not in the first trace: the step is traced once, not twice
    build_for_training(model, batch_of(tf.range(min(size, rows), dtype=tf.int64)))

    @tf.function(jit_compile=xla)
    def epoch(order: Any) -> None:
        for k in tf.range(full):
            step(batch_of(order[k * size:(k + 1) * size]))
        if tail:
            step(batch_of(order[full * size:]))

    return epoch


def fit(model: Any, x: Any = None, y: Any = None, batch_size: int | None = None,
        epochs: int = 1, verbose: Any = "auto", callbacks: Any = None, shuffle: Any = True,
        sample_weight: Any = None, initial_epoch: int = 0, *, xla: bool = False,
        share: bool = True, path: FitPath | None = None, traced: TrainingPaths | None = None,
        **extra: Any) -> Any:
    """Train ``model`` as ``model.fit`` would, one traced call per epoch.

    Callers check :func:`unsupported` first. With ``xla``, models without
    random layers train XLA-compiled (:func:`epoch_function`). With ``share``,
    a model of a kind this thread trained before reuses that kind's trace
    (:mod:`keras_sweep.worker.training.traces`), bitwise the same. ``path``, when given, is
    filled in: the loop's name, why XLA was skipped, the trace cost, whether
    the trace was shared. ``traced`` says how a shared trace's epoch runs (the
    single-threaded executor, inlined steps; default: both). Returns the model's
    ``History``.
    """
    import keras
    import tensorflow as tf
    from keras import tree

    from . import traces

    path = path if path is not None else FitPath()
    path.name = "compiled loop"
    if xla:
        randoms = random_layers(model)
        if randoms:
            xla = False
            path.fallback = (f"XLA skipped: random layer {randoms[0]} (slower and not "
                             "reproducible under XLA)")
        else:
            path.name = "compiled loop + XLA"

    adapter = array_data_adapter()(x, y, sample_weight=sample_weight,
                                   batch_size=batch_size or 32, shuffle=shuffle)
    inputs = array_inputs(adapter)
    orders = epoch_orders(permutations(inputs.num_samples, inputs.shuffle))
    steps = -(-inputs.num_samples // inputs.batch_size)
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0,
            verbose=verbose, epochs=epochs, steps=steps, model=model)
    template, why = None, "off"  # type: traces.Template | None, str | None
    made_in = 0.0  # seconds a new template took to make
    if share:
        why = traces.passive(callbacks)
        if why is None:
            how = dataclasses.replace(traced or TrainingPaths(), xla=xla)
            template, made, why = traces.template_for(model, inputs, how)
            path.trace = ("new" if made else "reused") if template is not None else None
            if template is not None:
                path.kind = template.kind
                made_in = template.make_seconds if made else 0.0
    if template is not None:
        try:
            template.load(model)
        except ValueError:  # variables that do not line up: never seen, but never wrong
            template, why = None, "template does not match the model"
    if template is None:
        path.trace, path.kind, made_in = f"own ({why})", None, 0.0
        trainee, own = model, epoch_function(model, inputs, xla)
    else:
        data = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
        trainee = template.model

    def run(order: Any) -> dict[str, Any]:
        """One epoch; the metrics' results. A template's call also resets them first
        (its fits' callbacks read no metrics at epoch begin: ``traces.passive``)."""
        if template is not None:
            return dict(template.epoch(order, data))
        own(order)
        return dict(trainee.get_metrics_result())

    first = initial_epoch
    carry = path.continuation
    if carry is not None and continuation.why_not(model, callbacks, initial_epoch) is not None:
        carry.start, carry.keep = None, False
    if carry is not None and carry.start is not None and carry.start.epochs < epochs \
            and continuation.load(trainee, carry.start):
        first = carry.continued_from = carry.start.epochs
        for _ in range(first):  # epoch k trains on the k-th draw of the row order
            next(orders)

    model.stop_training = False
    callbacks.on_train_begin()
    if first and carry is not None and carry.start is not None:
        history = model.history
        history.epoch = list(range(first))
        history.history = {k: list(v) for k, v in carry.start.history.items()}
    logs: dict[str, Any] | None = None
    took: list[float] = []
    for number in range(first, epochs):
        if template is None:
            trainee.reset_metrics()
        callbacks.on_epoch_begin(number)
        start = time.perf_counter()
        logs = run(next(orders))
        took.append(time.perf_counter() - start)
        callbacks.on_epoch_end(number, logs)
        if model.stop_training:
            break
    if carry is not None and carry.keep and epochs > first and not model.stop_training:
        carry.end = continuation.capture(trainee, epochs, model.history.history)
    if epochs > 0 and isinstance(trainee.optimizer, keras.optimizers.Optimizer):
        trainee.optimizer.finalize_variable_values(trainee.trainable_weights)
    if template is not None:
        template.store(model)
        traces.serve_predictions(model, template)
    callbacks.on_train_end(logs=logs)
    if took:
        path.trace_seconds = made_in + max(0.0, took[0] - (min(took[1:]) if len(took) > 1
                                                           else 0.0))
    return model.history
