"""One trace per kind of model: the fits of a grid reuse their traced epoch and predict.

Tracing the compiled loop's epoch function costs ~0.5-1 s per fit, more than a
small network's whole training (``docs/performance.md``), and every fit of a
grid search builds a new model, so each would trace again. Yet most fits of a
grid train *the same computation*: the candidates differ in initial weights,
learning rate, data fold or number of epochs, none of which changes the traced
graph. This module keeps, per worker thread, one **template** model per kind of
model, with its own variables and its traced epoch (and predict) function. A
fit of a kind seen before copies its model's initial state into the template
(weights, seed-generator states, optimizer slots and learning rate), trains the
template with the fit's own row orders, and copies the trained state back, so
the fitted model is what Keras' ``fit`` would have left; scoring then runs the
template's traced predict. The arithmetic is op for op the same graph as the
fit's own trace, so results are bitwise equal (``tests/test_loop.py``).

The **kind** of a model is its serialized architecture and compile
configuration without what only sets initial values (initializers, seeds,
names) and without the learning rate (a variable, copied), plus the input
shapes and dtypes, the batch size and XLA. Only models built entirely from
Keras' own classes share: a custom layer, loss, metric or optimizer may keep
behaviour its configuration does not show (a closure, a Python attribute), so
such a model traces its own loop, as :func:`kind` says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._compat.keras import (
    ArrayInputs,
    all_layers,
    array_data_adapter,
    array_inputs,
    build_for_training,
    compile_arguments,
    dropout_with_tensors,
)
from ..._compat.tensorflow import GrapplerRewrites, patch_grappler_rewrites
from ...protocol import MAX_TEMPLATES, TrainingPaths
from . import executor

logger = logging.getLogger(__name__)

#: configuration keys that only set initial values or names (not the traced graph)
INITIAL_ONLY = ("name", "seed")
#: callbacks that only read the epoch's logs or set ``stop_training``: fits with
#: others (they may read or set the fit's weights between epochs) trace their own
PASSIVE_CALLBACKS = {"History", "ProgbarLogger", "TerminateOnNaN", "CSVLogger",
                     "FailOnNonFiniteLoss"}


@dataclass
class Template:
    """A model of one kind with its own variables and traced functions."""

    model: Any
    #: ``epoch(order, data)``: one epoch over ``data``'s rows in ``order``, its metrics
    #: reset first; returns their results
    epoch: Callable[[Any, Any], dict[str, Any]]
    batch_size: int
    #: traced forward passes, per predict batch size
    predicts: dict[int, Callable[[Any], Any]] = field(default_factory=dict)
    #: the model whose state the template holds now (weakly: the fit owns it)
    owner: Any = None
    #: settings the trace reads from variables (dropout rates, max-norm limits):
    #: each sets its variable from the fit's model
    knobs: list[Callable[[Any], None]] = field(default_factory=list)
    #: short name of the template's kind (:func:`kind_name`), reported with each fit
    kind: str = ""
    #: seconds it took to make (rebuild the model, trace its epoch)
    make_seconds: float = 0.0

    def load(self, model: Any) -> None:
        """Copy ``model``'s state (weights, seed states, optimizer slots) and settings
        (dropout rates, max-norm limits) into the template."""
        _build_optimizer(model)
        _copy(model.variables, self.model.variables)
        _copy(model.optimizer.variables, self.model.optimizer.variables)
        for knob in self.knobs:
            knob(model)
        self.owner = weakref.ref(model)

    def store(self, model: Any) -> None:
        """Copy the template's trained state back into ``model``."""
        _copy(self.model.variables, model.variables)
        _copy(self.model.optimizer.variables, model.optimizer.variables)

    def holds(self, model: Any) -> bool:
        """Whether the template holds ``model``'s state now."""
        return self.owner is not None and self.owner() is model

    def predict(self, x: Any, batch_size: int) -> Any | None:
        """``model.predict(x, batch_size)`` as Keras computes it (None: not servable)."""
        import tensorflow as tf

        inputs = array_inputs(array_data_adapter()(x, batch_size=batch_size, shuffle=False))
        leaves = inputs.inputs if isinstance(inputs.inputs, tuple) else (inputs.inputs,)
        if len(leaves) != 1 or not hasattr(leaves[0], "shape") or len(self.model.outputs) != 1:
            return None  # several inputs or outputs: Keras' own predict
        data = tf.convert_to_tensor(leaves[0])
        if batch_size not in self.predicts:
            self.predicts[batch_size] = _predict_function(self.model, data, batch_size)
        return self.predicts[batch_size](data).numpy()


def _build_optimizer(model: Any) -> None:
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _copy(source: list[Any], target: list[Any]) -> None:
    for a, b in zip(source, target, strict=True):
        b.assign(a)


class _Cache(threading.local):
    def __init__(self) -> None:
        self.templates: OrderedDict[str, Template] = OrderedDict()
        #: a template was dropped since :func:`dropped_any` last asked
        self.dropped = False


_CACHE = _Cache()
#: every template model alive, of any thread (the worker's heap census counts them)
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


def live_templates() -> int:
    """Template models alive in this process (at most :data:`MAX_TEMPLATES` per thread)."""
    return len(_LIVE)


def kind(model: Any, inputs: ArrayInputs,
         how: TrainingPaths) -> tuple[str | None, str | None]:
    """The kind of ``model`` for these inputs, traced as ``how`` says (XLA, the
    single-threaded executor, inlined steps), or (None, why it cannot share a trace)."""
    import keras
    from keras import tree

    try:
        architecture = keras.saving.serialize_keras_object(model)
        compiled = model.get_compile_config()
    except Exception as exc:  # a model Keras cannot describe
        return None, f"model not serializable ({type(exc).__name__})"
    custom = _custom_code(model) or next(
        iter(sorted(_custom_modules(architecture) | _custom_modules(compiled))), None)
    if custom:
        return None, f"custom code: {custom}"
    compiled = dict(compiled or {})
    optimizer = compiled.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("config"), dict):
        config = dict(optimizer["config"])
        if isinstance(config.get("learning_rate"), float):
            config.pop("learning_rate")  # a variable: copied with the optimizer's state
        compiled["optimizer"] = {**optimizer, "config": config}
    shapes = [(str(np.asarray(leaf).dtype) if not hasattr(leaf, "dtype") else str(leaf.dtype),
               tuple(leaf.shape[1:])) for leaf in tree.flatten(inputs.inputs)]
    if isinstance(architecture, dict):  # its compile config is the one below
        architecture = {**architecture, "compile_config": None}
    described = {"model": _scrub(architecture), "compile": _scrub(compiled),
                 "inputs": shapes, "structure": str(tree.map_structure(lambda _: 0,
                                                                       inputs.inputs)),
                 "batch_size": inputs.batch_size, "xla": how.xla,
                 "jit_compile": bool(getattr(model, "jit_compile", False)),
                 "keras": keras.__version__}
    if not (how.single_threaded_epochs and how.inline_steps):  # (the default: as before)
        described["epoch"] = [how.single_threaded_epochs, how.inline_steps]
    return json.dumps(described, sort_keys=True, default=repr), None


def kind_name(key: str) -> str:
    """A short, stable name of a kind (:func:`kind`'s key): the same in every worker,
    so the driver can send fits of a kind to a worker that holds its template."""
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


def _keras_made(value: Any) -> bool:
    module = (value.__module__ if isinstance(value, types.FunctionType)
              else type(value).__module__)
    # sweep's own patches of a model (its fit, its predict) count as Keras'
    return module in ("keras", "keras_sweep") or str(module).startswith(("keras.",
                                                                          "keras_sweep."))


def _custom_code(model: Any) -> str | None:
    """A class or function of ``model`` (its layers, their attributes, what it was
    compiled with) that is not Keras' own, or None."""
    from keras import tree

    layers, seen = [model], 0
    while seen < len(layers):
        layer = layers[seen]
        seen += 1
        if not _keras_made(layer) or type(layer).__name__ == "Lambda":
            return type(layer).__qualname__
        for value in vars(layer).values():
            if callable(value) and not isinstance(value, type) and not _keras_made(value):
                return getattr(value, "__qualname__", type(value).__qualname__)
        layers.extend(getattr(layer, "layers", []))
    try:
        arguments = compile_arguments(model)
    except TypeError:
        return "compile arguments unknown"
    for leaf in tree.flatten(arguments):
        if leaf is not None and not isinstance(leaf, (str, int, float, bool)) \
                and not _keras_made(leaf):
            return getattr(leaf, "__qualname__", type(leaf).__qualname__)
    return None


def _custom_modules(config: Any) -> set[str]:
    """Modules outside Keras that a serialized configuration refers to (functions are
    serialized as from ``builtins`` whoever wrote them: :func:`_custom_code` checks those)."""
    found: set[str] = set()
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and module != "keras" and not module.startswith("keras.") \
                and (module, config.get("class_name")) != ("builtins", "function"):
            found.add(module)
        if config.get("registered_name") not in (None, "function", config.get("class_name")):
            found.add(str(config.get("registered_name")))
        for value in config.values():
            found |= _custom_modules(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= _custom_modules(value)
    return found


def _scrub(config: Any) -> Any:
    """``config`` without names, seeds and initializers (they set no part of the graph),
    and without the settings a template reads from variables (:func:`_knobs`): a
    ``Dropout``'s rate (only whether it is 0, 1 or between) and a ``MaxNorm``'s limit."""
    if isinstance(config, dict):
        kept = {k: _scrub(v) for k, v in config.items()
                if k not in INITIAL_ONLY and not k.endswith("initializer")}
        inner = kept.get("config")
        if config.get("module") == "keras.layers" and config.get("class_name") == "Dropout" \
                and isinstance(inner, dict) and isinstance(inner.get("rate"), (int, float)):
            rate = inner["rate"]
            kept["config"] = {**inner, "rate": rate if rate in (0, 1) else "in (0, 1)"}
        if config.get("module") == "keras.constraints" and config.get("class_name") == "MaxNorm" \
                and isinstance(inner, dict):
            kept["config"] = {k: v for k, v in inner.items() if k != "max_value"}
        return kept
    if isinstance(config, (list, tuple)):
        return [_scrub(v) for v in config]
    return config


def passive(callbacks: Any) -> str | None:
    """Why these callbacks keep a fit from sharing a trace (None: they do not)."""
    items = getattr(callbacks, "callbacks", callbacks) or []
    for cb in items:
        name = type(cb).__name__
        if name == "EarlyStopping" and not getattr(cb, "restore_best_weights", True):
            continue  # without restoring, it reads the logs only
        if name not in PASSIVE_CALLBACKS:
            return f"callback {type(cb).__name__}"
    return None


def template_for(model: Any, inputs: ArrayInputs,
                 how: TrainingPaths) -> tuple[Template | None, bool, str | None]:
    """This thread's template for ``model``'s kind: (template, made now, why none).

    ``how`` says how its epoch is traced (``xla``, ``single_threaded_epochs``,
    ``inline_steps``); templates traced otherwise are other kinds.
    A new template is made from ``model``'s configuration, its variables built
    and its epoch traced; the random states the construction touches (Python's
    and NumPy's) are put back, so the fit's own draws are unchanged.
    """
    key, why = kind(model, inputs, how)
    if key is None:
        return None, False, why
    cache = _CACHE.templates
    if key in cache:
        cache.move_to_end(key)
        return cache[key], False, None
    start = time.perf_counter()
    try:
        with _random_states_kept():
            template = _make(model, inputs, how)
    except Exception as exc:  # a model Keras cannot rebuild from its configuration
        return None, False, f"model not rebuildable ({type(exc).__name__}: {exc})"
    if template is None:
        return None, False, "template differs from the model"
    template.kind, template.make_seconds = kind_name(key), time.perf_counter() - start
    cache[key] = template
    _LIVE.add(template.model)
    while len(cache) > MAX_TEMPLATES:
        cache.popitem(last=False)
        _CACHE.dropped = True
    return template, True, None


def forget() -> None:
    """Drop this thread's templates (e.g. before measuring memory)."""
    _CACHE.dropped = _CACHE.dropped or bool(_CACHE.templates)
    _CACHE.templates.clear()


def dropped_any() -> bool:
    """Whether this thread dropped a template since the last call (its functions'
    instantiations then linger in TensorFlow's kernel cache until it is cleared)."""
    dropped, _CACHE.dropped = _CACHE.dropped, False
    return dropped


@contextlib.contextmanager
def _random_states_kept() -> Iterator[None]:
    python, numpy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def _make(model: Any, inputs: ArrayInputs, how: TrainingPaths) -> Template | None:
    """A template of ``model``'s kind: rebuilt from its configuration, epoch traced."""
    import keras
    import tensorflow as tf
    from keras import tree

    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    clone.compile_from_config(model.get_compile_config())
    data = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
    size = inputs.batch_size
    first = tree.map_structure(lambda t: t[: min(size, inputs.num_samples)], data)
    build_for_training(clone, first)
    _build_optimizer(model)
    if ([tuple(v.shape) for v in clone.variables] != [tuple(v.shape) for v in model.variables]
            or [tuple(v.shape) for v in clone.optimizer.variables]
            != [tuple(v.shape) for v in model.optimizer.variables]):
        return None
    knobs = _knobs(clone, model)
    if knobs is None:
        return None
    return Template(clone, epoch_function(clone, data, size, how), size, knobs=knobs)


def _knobs(template: Any, model: Any) -> list[Callable[[Any], None]] | None:
    """Turn ``template``'s dropout rates and max-norm limits into variables.

    A grid over dropout or max-norm would otherwise trace once per value (they
    are constants in Keras' graph). Each ``Dropout`` of the template with a rate
    strictly between 0 and 1 computes with its rate read from a variable
    (:func:`keras_sweep._compat.keras.dropout_with_tensors`: TensorFlow's operations in
    order, so bitwise the layer's own), each ``MaxNorm`` constraint with its
    limit. Returns one setter per variable, each taking the fit's model (whose
    layers and variables line up with the template's); None if they do not.
    """
    import keras
    import tensorflow as tf

    knobs: list[Callable[[Any], None]] = []
    mine, theirs = all_layers(template), all_layers(model)
    if [type(a) for a in mine] != [type(b) for b in theirs]:
        return None
    for index, layer in enumerate(mine):
        if type(layer) is keras.layers.Dropout and 0 < layer.rate < 1:
            rate = tf.Variable(np.float32(layer.rate), trainable=False)
            scale = tf.Variable(np.float32(1 / (1 - layer.rate)), trainable=False)

            def call(inputs: Any, training: bool = False, layer: Any = layer, rate: Any = rate,
                     scale: Any = scale) -> Any:
                if training and layer.rate > 0:
                    return dropout_with_tensors(layer, inputs, rate, scale)
                return inputs

            def set_rate(model: Any, index: int = index, rate: Any = rate,
                         scale: Any = scale) -> None:
                value = float(all_layers(model)[index].rate)
                rate.assign(np.float32(value))
                scale.assign(np.float32(1 / (1 - value)))

            layer.call = call
            knobs.append(set_rate)
    for index, variable in enumerate(template.variables):
        constraint = variable.constraint
        if type(constraint) is keras.constraints.MaxNorm:
            limit = tf.Variable(np.float32(constraint.max_value), trainable=False)
            constraint.max_value = limit

            def set_limit(model: Any, index: int = index, limit: Any = limit) -> None:
                limit.assign(np.float32(model.variables[index].constraint.max_value))

            knobs.append(set_limit)
    return knobs


def epoch_function(model: Any, data: Any, size: int,
                   how: TrainingPaths) -> Callable[[Any, Any], dict[str, Any]]:
    """``epoch(order, data)``: train ``model`` on ``data``'s rows in ``order``, one trace.

    The call resets the model's metrics, trains, and returns the metrics'
    results (what ``model.get_metrics_result()`` returns), as Keras does around
    an epoch, in one call instead of three (each eager call costs 0.1-0.5 ms, a
    few percent of a small network's epoch). Keras resets the metrics before the
    epoch-begin callbacks, so only fits whose callbacks do not read metrics there
    (:func:`passive`) train on a template.
    Batch k holds the rows ``order[k*size:(k+1)*size]``, the last one partial,
    each handed to the model's own ``train_step`` as Keras' pipeline yields it.
    The row count is left unknown, so folds of different sizes share the trace.
    """
    import tensorflow as tf
    from keras import tree

    spec = tree.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), data)
    step = tf.function(tf.autograph.experimental.do_not_convert(model.train_step),
                       input_signature=[spec],
                       jit_compile=bool(getattr(model, "jit_compile", False)))

    epoch = _epoch_loop(model, spec, size, step, how.xla)
    if how.xla or getattr(model, "jit_compile", False) or not how.single_threaded_epochs:
        return epoch
    if how.inline_steps:
        try:
            inlined = _inlined_epoch(model, spec, size)
        except Exception:  # a step that cannot be traced inline is called instead
            logger.debug("sweep: train step not inlined", exc_info=True)
            inlined = None
        if inlined is not None:
            return inlined
    return executor.single_threaded(epoch, step) or epoch


def _epoch_loop(model: Any, spec: Any, size: int, step: Callable[[Any], Any],
                xla: bool) -> Any:
    """The traced epoch: metrics reset, ``step`` on each batch of the rows in ``order``,
    the metrics' results."""
    import tensorflow as tf
    from keras import tree

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), spec], jit_compile=xla)
    def epoch(order: Any, data: Any) -> dict[str, Any]:
        model.reset_metrics()
        rows = tf.shape(order, out_type=tf.int64)[0]
        for k in tf.range((rows + size - 1) // size):
            rows_k = order[k * size:(k + 1) * size]
            step(tree.map_structure(lambda t, rows_k=rows_k: tf.gather(t, rows_k, axis=0),
                                    data))
        return metric_results(model)

    return epoch


def _inlined_epoch(model: Any, spec: Any, size: int) -> Callable[[Any, Any], Any] | None:
    """:func:`epoch_function`'s epoch with Keras' ``train_step`` inlined in the loop
    body instead of called, on the single-threaded executor; None where that could
    differ from Keras' step or wait twice.

    Inlined, a step skips the ~70 µs of calling a traced function, but the body is
    not optimized by Grappler as a called function is: its ops are built as
    Grappler would leave them (:func:`keras_sweep._compat.tensorflow.patch_grappler_rewrites`),
    in a name scope of their own, so their names (which order Grappler's sums)
    are those of the step traced alone.
    """
    import tensorflow as tf

    rewrites: list[GrapplerRewrites] = []

    @tf.autograph.experimental.do_not_convert
    def step(batch: Any) -> None:
        with tf.name_scope("step"), patch_grappler_rewrites() as done:
            model.train_step(batch)
        rewrites.append(done)

    epoch = _epoch_loop(model, spec, size, step, xla=False)

    def unfaithful(concrete: Any) -> str | None:
        return next((why for done in rewrites if (why := done.unfaithful())), None) \
            or unverified_op(concrete)

    return executor.single_threaded_loop(epoch, unfaithful)


#: op types of inlined steps checked bitwise against the called step, with op
#: determinism on as in workers: the article's seven grids (222 templates: every
#: optimizer, initializer, activation, dropout and max-norm there) and the tests'
#: nets (regression and multi-class heads). A step with another op type (which
#: another of Grappler's rewrites may touch) is called
INLINABLE_OPS = frozenset({
    "Abs", "AddN", "AddV2", "ArgMax", "AssignAddVariableOp", "AssignSubVariableOp",
    "AssignVariableOp", "BiasAdd", "BiasAddGrad", "Bitcast", "BitwiseAnd",
    "BroadcastGradientArgs", "BroadcastTo", "Cast", "ConcatV2", "Const", "DivNoNan",
    "DynamicStitch", "Equal", "Exp", "ExpandDims", "Fill", "FloorMod", "GatherV2",
    "Greater", "GreaterEqual", "Identity", "IdentityN", "Less", "Log1p", "LogSoftmax",
    "LogicalAnd", "LogicalOr", "MatMul", "Maximum", "Mean", "Minimum", "Mul", "Neg", "NoOp",
    "Pack", "Pow", "Prod", "Range", "ReadVariableOp", "RealDiv", "Reciprocal", "Relu",
    "Relu6", "Relu6Grad", "ReluGrad", "Reshape", "Rsqrt", "Select", "SelectV2", "Shape",
    "Sigmoid", "SigmoidGrad", "Size", "Softmax", "Softplus", "Softsign", "SoftsignGrad",
    "Sqrt", "Square", "Squeeze", "StatelessRandomGetKeyCounter", "StatelessRandomUniformV2",
    "StridedSlice", "Sub", "Sum", "Tanh", "TanhGrad", "Tile", "Transpose",
    "UnsortedSegmentSum", "ZerosLike",
})


def unverified_op(concrete: Any) -> str | None:
    """An op of ``concrete``'s loop body not known to inline bitwise (None: none is).

    A power with a constant exponent is one: Grappler turns some into squares or
    roots (Keras' optimizers raise constants to the step count, a variable).
    """
    for function in concrete.graph.as_graph_def().library.function:
        nodes = {node.name: node for node in function.node_def}
        for node in function.node_def:
            if node.op not in INLINABLE_OPS:
                return f"op {node.op}"
            if node.op == "Pow":
                exponent = nodes.get(node.input[1].split(":")[0])  # None: an argument
                if exponent is not None and exponent.op == "Const":
                    return "a power with a constant exponent"
    return None


def metric_results(model: Any) -> dict[str, Any]:
    """``model.get_metrics_result()``, as Keras 3 computes it (here inside a trace)."""
    results: dict[str, Any] = {}
    for metric in model.metrics:
        value = metric.result()
        if isinstance(value, dict):
            results.update(value)
        else:
            results[metric.name] = value
    return results


def _predict_function(model: Any, x: Any, size: int) -> Callable[[Any], Any]:
    """One traced call of Keras' ``predict_step`` over ``x`` in batches of ``size``."""
    import tensorflow as tf

    step = tf.function(tf.autograph.experimental.do_not_convert(model.predict_step),
                       input_signature=[(tf.TensorSpec([None, *x.shape[1:]], x.dtype),)])
    dtype = tf.as_dtype(model.outputs[0].dtype)

    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], x.dtype)])
    def predict(x: Any) -> Any:
        rows = tf.shape(x, out_type=tf.int64)[0]
        steps = (rows + size - 1) // size
        out = tf.TensorArray(dtype, size=tf.cast(steps, tf.int32), infer_shape=False)
        for k in tf.range(steps):
            out = out.write(tf.cast(k, tf.int32), step((x[k * size:(k + 1) * size],)))
        return out.concat()

    return predict


def serve_predictions(model: Any, template: Template) -> None:
    """Make ``model.predict`` (this instance) run ``template``'s traced predict.

    While the template still holds ``model``'s trained state and the call is a
    plain ``predict(x[, batch_size, verbose])`` on a NumPy array (no callbacks,
    no steps); otherwise
    Keras' own ``predict`` runs. :func:`release` removes it.
    """
    keras_predict = model.predict

    def predict(x: Any, batch_size: int | None = None, verbose: Any = "auto",
                **extra: Any) -> Any:
        plain = all(value is None or (key == "callbacks" and not value)
                    for key, value in extra.items())
        if (plain and template.holds(model) and isinstance(x, np.ndarray)
                and x.dtype.kind in "biuf" and len(x)):
            out = template.predict(x, batch_size or 32)
            if out is not None:
                return out
        return keras_predict(x, batch_size=batch_size, verbose=verbose, **extra)

    model.predict = predict


def release(model: Any) -> None:
    """Undo :func:`serve_predictions` (the model pickles as if never touched)."""
    if model is not None:
        model.__dict__.pop("predict", None)
