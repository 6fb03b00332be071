"""Touches of Keras's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .registry import touch


def _keras_seed_module() -> Any:
    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.random import seed_generator
    except ImportError:  # another Keras layout
        return None
    return seed_generator if hasattr(seed_generator, "python_random") else None


@touch("keras", ">=3.0, tested 3.15.1",
       "keras.src.random.seed_generator.python_random: the generator Keras draws the "
       "seeds of unseeded initializers from")
def keras_seed_source(new: Any = None) -> Any:
    """Keras' generator of default seeds; with ``new``, replace it (returns the old one).

    Returns None when Keras is not imported or keeps its seeds elsewhere.
    """
    module = _keras_seed_module()
    if module is None:
        return None
    old = module.python_random
    if new is not None:
        module.python_random = new
    return old


@touch("keras|tensorflow", "keras 3.15.1 with tensorflow 2.21.0",
       "keras.utils.set_random_seed seeds TensorFlow through tf.random.set_seed, which in "
       "eager mode is Context._set_global_seed: Context._seed = seed, Context._rng = "
       "random.Random(seed), then TFE_ContextClearCaches (every cached kernel and function "
       "instantiation dropped)")
def set_random_seed(seed: int, clear_kernels: bool = True) -> None:
    """``keras.utils.set_random_seed(seed)``; with ``clear_kernels`` False, TensorFlow's
    global seed is set without clearing its kernel cache.

    The cache holds each traced function's instantiation (Grappler's rewrite of
    the graph: ~0.25 s for sweep's epoch function) and the state of stateful
    random kernels (``tf.random.uniform``...). Clearing it restarts those
    kernels' streams; where none can be cached (:mod:`keras_sweep.worker.seeding`
    watches for them), keeping it changes nothing but the time.
    """
    import keras

    if clear_kernels:
        keras.utils.set_random_seed(seed)
        return
    import tensorflow as tf
    from tensorflow.python.eager import context

    real = tf.random.set_seed

    def seed_only(value: int) -> None:
        ctx = context.context()
        if not ctx.executing_eagerly():
            real(value)
            return
        ctx._seed = value
        ctx._rng = random.Random(value)

    tf.random.set_seed = seed_only
    try:
        keras.utils.set_random_seed(seed)
    finally:
        tf.random.set_seed = real


@touch("keras|tensorflow", "keras 3.15.1 with tensorflow 2.21.0",
       "keras.backend.clear_session() on TensorFlow ends with "
       "tensorflow.python.eager.context.context().clear_kernel_cache() "
       "(TFE_ContextClearCaches); Context.clear_kernel_cache is looked up on the instance")
def clear_session(clear_kernels: bool = True) -> None:
    """``keras.backend.clear_session(free_memory=False)``; with ``clear_kernels`` False,
    TensorFlow's kernel cache is kept.

    Keras' global state (layer names, the default graph) is dropped either way.
    The kernel cache holds each traced function's instantiation: cleared after
    every fit, a shared trace was instantiated again (Grappler, ~0.1-0.2 s) at
    its next fit's first call, and so was the traced predict. Keeping it is exact
    under the same condition as :func:`set_random_seed`'s.
    """
    import keras

    if clear_kernels:
        keras.backend.clear_session(free_memory=False)
        return
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.clear_kernel_cache = lambda: None
    try:
        keras.backend.clear_session(free_memory=False)
    finally:
        del ctx.clear_kernel_cache  # the class's method again




@touch("keras", ">=3.0, tested 3.15.1",
       "keras.src.trainers.data_adapters.array_data_adapter.ArrayDataAdapter(x, y, "
       "sample_weight, batch_size, shuffle): the adapter Model.fit makes for NumPy arrays")
def array_data_adapter() -> Any:
    """Keras' adapter class for NumPy inputs (the one ``fit`` builds its pipeline with)."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    return ArrayDataAdapter


@dataclass(frozen=True)
class ArrayInputs:
    """What Keras' ``ArrayDataAdapter`` holds for one fit."""

    inputs: Any  #: the (x, y, sample_weight) structure, sliceable arrays
    shuffle: bool | str
    num_samples: int
    batch_size: int


@touch("keras", ">=3.0, tested 3.15.1",
       "ArrayDataAdapter's _inputs, _shuffle, _num_samples, _batch_size; "
       "keras.src.trainers.data_adapters.array_slicing.convert_to_sliceable")
def array_inputs(adapter: Any) -> ArrayInputs:
    """What an ``ArrayDataAdapter`` holds, its arrays made sliceable as Keras does."""
    from keras.src.trainers.data_adapters import array_slicing

    inputs = array_slicing.convert_to_sliceable(adapter._inputs, target_backend="tensorflow")
    return ArrayInputs(inputs, adapter._shuffle, adapter._num_samples, adapter._batch_size)


@touch("keras", ">=3.0, tested 3.15.1",
       "keras.src.trainers.data_adapters.array_data_adapter.ArrayDataAdapter.get_tf_dataset "
       "builds the tf.data pipeline of NumPy inputs")
def patch_array_pipeline(make: Callable[[ArrayInputs], Any]) -> Callable[[], None] | None:
    """Make Keras build its ``tf.data`` pipeline for NumPy arrays with ``make``.

    ``make`` returns a dataset, or None to keep Keras' own. Returns the function
    that puts Keras' method back, or None (nothing replaced: another Keras
    layout, or already replaced by an enclosing fit).
    """
    try:
        adapter_class = array_data_adapter()
    except ImportError:
        return None
    original = adapter_class.get_tf_dataset
    if getattr(original, "_sweep_replaced", False):
        return None

    def get_tf_dataset(self: Any) -> Any:
        dataset = make(array_inputs(self))
        return original(self) if dataset is None else dataset

    get_tf_dataset._sweep_replaced = True  # type: ignore[attr-defined]
    adapter_class.get_tf_dataset = get_tf_dataset

    def restore() -> None:
        adapter_class.get_tf_dataset = original

    return restore


@touch("keras", ">=3.0, tested 3.15.1",
       "Trainer.steps_per_execution is read when train_function is (re)built; "
       "train_function = None makes the next fit rebuild it")
def set_steps_per_execution(model: Any, steps: int) -> bool:
    """Run ``steps`` batches per call of ``model``'s compiled train function.

    Returns False, changing nothing, if the model has no such setting.
    """
    if not hasattr(model, "steps_per_execution") or not hasattr(model, "train_function"):
        return False
    model.steps_per_execution = steps
    model.train_function = None  # rebuilt with the new count
    return True


@touch("keras", ">=3.0, tested 3.15.1",
       "Trainer._symbolic_build(data_batch=...): builds the layers, compiled loss and metrics "
       "and the optimizer's variables symbolically (no computation, no random draws)")
def build_for_training(model: Any, batch: Any) -> None:
    """Create every variable a train step of ``model`` on ``batch`` needs, before tracing it.

    A ``tf.function`` that creates variables on its first call is traced twice;
    built beforehand, the train step is traced once (about half the time).
    """
    model._symbolic_build(data_batch=batch)


@touch("keras", ">=3.0, tested 3.15.1",
       "Model._compile_config.config: the objects given to compile (loss, metrics, "
       "optimizer), before serialization")
def compile_arguments(model: Any) -> dict[str, Any]:
    """The loss, metrics, optimizer... objects ``model.compile`` was given."""
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(model).__name__} has no compile arguments")
    return dict(config)


@touch("keras", ">=3.0, tested 3.15.1",
       "Layer._flatten_layers(): the layer and every layer inside it, depth first, "
       "in a fixed order")
def all_layers(model: Any) -> list[Any]:
    """``model`` and every layer inside it (nested models' layers too), in a fixed order."""
    return list(model._flatten_layers())


@touch("keras|tensorflow", "keras 3.15.1 with tensorflow 2.21.0",
       "Dropout.call in training -> keras.src.backend.tensorflow.random.dropout "
       "(draw_seed, _cast_seed, _get_concrete_noise_shape) -> "
       "tf.nn.experimental.stateless_dropout with a Python rate: x * float32(1/(1-rate)), "
       "stateless_uniform(noise shape, seed) >= float32(rate), where_v2(mask, ., 0)")
def dropout_with_tensors(layer: Any, inputs: Any, rate: Any, scale: Any) -> Any:
    """What Keras' ``Dropout`` ``layer`` (0 < rate < 1) computes in training, with its
    constants read from tensors.

    ``rate`` holds ``float32(rate)`` and ``scale`` ``float32(1 / (1 - rate))``,
    the constants TensorFlow makes from a Python rate; the operations are those
    of ``tf.nn.experimental.stateless_dropout`` with a Python rate, in order, so
    the result (and its gradient) is bitwise the layer's own, while one traced
    graph serves every rate. Draws the layer's seed as the layer does.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow.random import _cast_seed, _get_concrete_noise_shape
    from keras.src.random.seed_generator import draw_seed

    seed = _cast_seed(draw_seed(layer.seed_generator))
    noise_shape = _get_concrete_noise_shape(inputs, layer.noise_shape)
    x = tf.convert_to_tensor(inputs)
    kept = tf.math.multiply(x, scale)
    uniform = tf.random.stateless_uniform(shape=noise_shape, seed=seed, dtype=x.dtype)
    out = tf.where(uniform >= rate, kept, tf.constant(0, dtype=x.dtype))
    if not tf.executing_eagerly():
        out.set_shape(x.get_shape())
    return out


@touch("keras", ">=3.0, tested 3.15.1",
       "Sequential._layers: the layers added so far, the Input layer included")
def sequential_has_layers(model: Any) -> bool:
    """Whether anything (an ``Input`` included) was added to a ``Sequential`` yet."""
    return bool(model._layers)
