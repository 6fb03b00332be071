"""The one seam between sweep and other libraries' private internals.

Nothing else in sweep imports a private name of joblib, scikit-learn, Keras,
scikeras, TensorFlow, distributed or dask-jobqueue, or relies on one of their
undocumented attributes. Each touch is a small named function (or the one
class below) registered in :data:`TOUCHES` with the library it touches and the
versions it was checked against; ``tests/test_compat.py`` exercises every one
on the installed versions and names the library and version when one breaks.

When a library changes, read this file: it is the complete list of what sweep
assumes beyond the public API.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Touch:
    """One reliance on a library's internals."""

    name: str
    library: str  #: distribution name, e.g. "scikit-learn" (alternatives split by "|")
    checked: str  #: versions it was checked against, e.g. ">=1.4, tested 1.9.1"
    what: str  #: the private name or behaviour relied on

    def installed(self) -> str:
        """Name and installed version of :attr:`library`, e.g. ``"keras 3.15.1"``."""
        for name in self.library.split("|"):
            try:
                return f"{name} {metadata.version(name)}"
            except metadata.PackageNotFoundError:
                continue
        return f"{self.library} not installed"


#: every touch, by the name of the function or class that makes it
TOUCHES: dict[str, Touch] = {}


def touch(library: str, checked: str, what: str) -> Callable[[F], F]:
    """Register the decorated function or class as a touch of ``library``'s internals."""

    def register(obj: F) -> F:
        name = obj.__name__
        TOUCHES[name] = Touch(name, library, checked, what)
        return obj

    return register


# -- joblib ---------------------------------------------------------------------------

def _joblib_dask_backend() -> type:
    from joblib._dask import DaskDistributedBackend

    return DaskDistributedBackend


@touch("joblib", ">=1.4, tested 1.6.0",
       "joblib._dask.DaskDistributedBackend: _to_func_args, _results, _callbacks, "
       "client.scatter(asynchronous=True) for arguments > 1 kB; "
       "joblib._utils._TracebackCapturingWrapper")
class JoblibDaskBackend(_joblib_dask_backend()):  # type: ignore[misc]
    """joblib's Dask backend, with the private parts sweep builds on given names.

    sweep's backend derives from this and uses only the methods below (plus
    joblib's public backend API: ``submit``, ``retrieve_result_callback``,
    ``abort_everything``, ``effective_n_jobs``, ...).
    """

    async def split_batch(self, func: Any) -> tuple[Any, list[Any]]:
        """joblib's ``Batch`` for ``func`` and its ``(function, args, kwargs)`` tasks.

        Arguments larger than 1 kB (``X``, ``y``, folds) are replaced by Dask
        futures made once per ``Parallel`` call through ``self.client.scatter``.
        """
        batch, tasks = await self._to_func_args(func)
        return batch, tasks

    def track(self, future: Any, callback: Any, result: Any) -> None:
        """Remember the joblib ``callback`` and result future of a Dask ``future``."""
        self._callbacks[future] = callback
        self._results[future] = result

    def untrack(self, future: Any) -> tuple[Any, Any] | None:
        """Forget ``future``: its (result future, callback), or None if not tracked."""
        if future not in self._results:
            return None
        return self._results.pop(future), self._callbacks.pop(future)

    def is_tracked(self, future: Any) -> bool:
        """Whether ``future`` was submitted and not yet delivered."""
        return future in self._results

    def tracked(self) -> list[Any]:
        """Dask futures submitted and not yet delivered."""
        return list(self._results)

    @staticmethod
    def capture_traceback(batch: Any) -> Any:
        """Wrap ``batch`` as joblib does, so a worker's traceback reaches the driver."""
        from joblib._utils import _TracebackCapturingWrapper

        return _TracebackCapturingWrapper(batch)


@touch("joblib", ">=1.4, tested 1.6.0",
       "Parallel keeps its pre_dispatch argument as the attribute pre_dispatch and reads "
       "it after calling backend.configure(parallel=self); its default is '2 * n_jobs', "
       "scikit-learn's searches pass '2*n_jobs'")
def widen_dispatch(parallel: Any, wider: str) -> bool:
    """Make ``parallel`` dispatch ``wider`` (e.g. ``"4*n_jobs"``) tasks ahead if it was
    left at joblib's or scikit-learn's default; whether it did."""
    current = getattr(parallel, "pre_dispatch", None)
    if not isinstance(current, str) or current.replace(" ", "") != "2*n_jobs":
        return False
    parallel.pre_dispatch = wider
    return True


# -- scikit-learn ---------------------------------------------------------------------

@dataclass(frozen=True)
class FitTask:
    """What scikit-learn's search passes to ``_fit_and_score`` for one fit."""

    candidate: int | None
    n_candidates: int | None
    split: int | None
    n_splits: int | None
    params: dict[str, Any] | None
    train: Any
    test: Any
    scorer: Any
    error_score: Any
    return_train_score: bool


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "keyword names of sklearn.model_selection._validation._fit_and_score "
       "(candidate_progress, split_progress, parameters, train, test, scorer, error_score, "
       "return_train_score)")
def fit_task(kwargs: dict[str, Any]) -> FitTask:
    """The fit ``kwargs`` of one ``_fit_and_score`` call describe."""
    candidate, n_candidates = kwargs.get("candidate_progress", (None, None))
    split, n_splits = kwargs.get("split_progress", (None, None))
    return FitTask(candidate, n_candidates, split, n_splits, kwargs.get("parameters"),
                   kwargs.get("train"), kwargs.get("test"), kwargs.get("scorer"),
                   kwargs.get("error_score"), bool(kwargs.get("return_train_score")))


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "the result dict of _fit_and_score (test_scores, train_scores, fit_error, "
       "n_test_samples, fit_time, score_time, parameters, estimator) and _MultimetricScorer's "
       "_scorers")
def failed_fit_result(kwargs: dict[str, Any], reason: str) -> dict[str, Any]:
    """What ``_fit_and_score`` returns for a fit that raised, for a fit that never
    returned (its worker died). Follows ``error_score`` as scikit-learn does."""
    import numpy as np

    error_score = kwargs.get("error_score", np.nan)
    if error_score == "raise":
        raise RuntimeError(reason)
    names = getattr(kwargs.get("scorer"), "_scorers", None)
    scores: Any = {name: error_score for name in names} if names else error_score
    result: dict[str, Any] = {"test_scores": scores, "fit_error": reason}
    if kwargs.get("return_train_score"):
        result["train_scores"] = dict(scores) if names else scores
    if kwargs.get("return_n_test_samples"):
        result["n_test_samples"] = len(kwargs.get("test", ()))
    if kwargs.get("return_times"):
        result["fit_time"], result["score_time"] = 0.0, 0.0
    if kwargs.get("return_parameters"):
        result["parameters"] = kwargs.get("parameters")
    if kwargs.get("return_estimator"):
        result["estimator"] = None
    return result


@touch("scikit-learn", ">=1.4 (1.9 added them), tested 1.9.1",
       "_fit_and_score's caller= and callback_ctx= keywords; CallbackContext._callbacks")
def drop_unused_callback_context(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the search (``caller``) and its callback context when the
    search has no callbacks (they are used for callbacks only).

    scikit-learn 1.9 passes each fit the search object and a context linked to the
    whole task tree (a node per fit made ahead): pickled with every fit, the task
    grows with the grid, and a sweep's driver time with the square of its fits
    (measured: 80 KB per fit at the start of a 10,000-fit search, 300 KB later).
    """
    context = kwargs.get("callback_ctx")
    if context is None or getattr(context, "_callbacks", None):
        return kwargs
    return {**kwargs, "callback_ctx": None, "caller": None}


@touch("scikit-learn", ">=1.4, tested 1.9.1",
       "BaseSearchCV.fit (module sklearn.model_selection._search) refits by calling "
       "self.best_estimator_.fit(X, y, ...) itself, the search being its local self")
def search_refitting(estimator: Any, depth: int = 4) -> Any | None:
    """The search whose refit ``estimator.fit`` is, if the caller is scikit-learn's
    ``BaseSearchCV.fit`` refitting it (``refit=True``), else None.

    Looks at most ``depth`` frames above this one for that function's frame whose
    ``self.best_estimator_`` is ``estimator``: a fit the user calls, or any other,
    is never taken for a refit.
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        if frame.f_code.co_name == "fit" and \
                frame.f_globals.get("__name__") == "sklearn.model_selection._search":
            search = frame.f_locals.get("self")
            found = getattr(search, "__dict__", {}).get("best_estimator_")
            return search if found is estimator else None
    return None


@touch("scikit-learn", ">=1.4, tested 1.9.1", "the fit_error key of _fit_and_score's result")
def fit_error(result: Any) -> str | None:
    """The error text of a ``_fit_and_score`` result (None: the fit succeeded)."""
    error = result.get("fit_error") if isinstance(result, dict) else None
    return None if error is None else str(error)


@touch("scikit-learn", ">=1.4, tested 1.9.1", "the test_scores key of _fit_and_score's result")
def fit_score(result: Any, metric: str | None = None) -> float | None:
    """The test score of a ``_fit_and_score`` result (``metric``: for multi-metric scoring,
    the one to report; default the first). None when there is none."""
    scores = result.get("test_scores") if isinstance(result, dict) else None
    if isinstance(scores, dict):
        scores = scores.get(metric) if metric in scores else next(iter(scores.values()), None)
    try:
        return None if scores is None else float(scores)
    except (TypeError, ValueError):
        return None


# -- Keras ----------------------------------------------------------------------------

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
    kernels' streams; where none can be cached (:mod:`sweep.worker.seeding`
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


@touch("tensorflow|tensorflow-cpu", ">=2.16, tested 2.21.0",
       "tensorflow.python.framework.op_callbacks.add_op_callback(fn): fn(op_type, inputs, "
       "attrs, outputs, op_name, graph) runs, in the calling thread, after each op executed "
       "eagerly or added to a graph; attrs alternates names and values")
def watch_ops(callback: Callable[[str, tuple[str, ...], str | None], None]) -> None:
    """Call ``callback(op_type, attribute names, graph name or None)`` for every op this
    thread runs eagerly or adds to a graph from now on."""
    from tensorflow.python.framework import op_callbacks

    def seen(op_type: Any, inputs: Any, attrs: Any, outputs: Any, op_name: Any = None,
             graph: Any = None) -> None:
        names = tuple(attrs[::2]) if attrs else ()
        callback(str(op_type), names,
                 None if graph is None else str(getattr(graph, "name", "graph")))

    op_callbacks.add_op_callback(seen)


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
def replace_array_pipeline(make: Callable[[ArrayInputs], Any]) -> Callable[[], None] | None:
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


# -- scikeras -------------------------------------------------------------------------

@touch("scikeras", ">=0.13, tested 0.13.0",
       "BaseWrapper._fit_keras_model(X, y, ...): the call that trains model_")
def wrap_keras_fit(estimator: Any, wrapper: Callable[..., Any]) -> bool:
    """Route ``estimator``'s Keras training through ``wrapper(original, X, y, ...)``.

    Patches the instance only. Returns False, changing nothing, when the
    estimator is not a scikeras wrapper.
    """
    original = getattr(estimator, "_fit_keras_model", None)
    if original is None or not hasattr(estimator, "get_params"):
        return False

    def fit_keras_model(X: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(original, X, y, *args, **kwargs)

    estimator._fit_keras_model = fit_keras_model
    return True


@touch("scikeras", ">=0.13, tested 0.13.0",
       "BaseWrapper._fit_keras_model trains through self.model_.fit(x=X, y=y, **fit_args) "
       "and reads the returned History's .history")
@contextlib.contextmanager
def replace_model_fit(model: Any, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, ``model.fit`` is ``make(keras_fit)`` (on this instance only)."""
    keras_fit = model.fit
    model.fit = make(keras_fit)
    try:
        yield
    finally:
        model.__dict__.pop("fit", None)


def keras_fit_wrapped(estimator: Any) -> bool:
    """Whether :func:`wrap_keras_fit` patched ``estimator`` (and it is not undone yet)."""
    return "_fit_keras_model" in vars(estimator)


def unwrap_keras_fit(estimator: Any) -> None:
    """Undo :func:`wrap_keras_fit` (the estimator pickles as if never touched)."""
    estimator.__dict__.pop("_fit_keras_model", None)


# -- TensorFlow -----------------------------------------------------------------------

@touch("tensorflow|tensorflow-cpu", ">=2.16, tested 2.21.0",
       "tensorflow.python.framework.ops.gradient_registry._registry: the global "
       "registry of tf.custom_gradient functions")
def registered_gradients() -> dict[str, Any] | None:
    """TensorFlow's global registry of gradient functions (None: not imported)."""
    ops = sys.modules.get("tensorflow.python.framework.ops")
    registry = getattr(getattr(ops, "gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


@dataclass
class GrapplerRewrites:
    """What :func:`grappler_arithmetic_rewrites` did to the ops built under it."""

    #: ``AddN`` ops built with their inputs sorted
    sums: int = 0
    #: ``Sqrt`` ops whose division became a product with ``Rsqrt``: Grappler does so
    #: only when the division is the square root's one consumer
    square_roots: list[Any] = field(default_factory=list)

    def unfaithful(self) -> str | None:
        """Why the ops built may differ from what Grappler makes (None: they do not)."""
        for sqrt in self.square_roots:
            if sqrt.outputs[0].consumers():
                return f"{sqrt.name} has another consumer"
        return None


@touch("tensorflow|tensorflow-cpu", "tested 2.21.0 (bitwise on the article's nets)",
       "Grappler's arithmetic optimizer, on by default, rewrites a function's graph when it "
       "is instantiated: it sorts the inputs of AddN by name (summing in that order) and "
       "turns Div(x, Sqrt(y)) with one consumer into Mul(x, Rsqrt(y)); the ops come from "
       "tensorflow.python.ops.gen_math_ops.add_n and real_div, looked up at each call")
@contextlib.contextmanager
def grappler_arithmetic_rewrites() -> Iterator[GrapplerRewrites]:
    """Build graph ops as Grappler's arithmetic optimizer would leave them.

    A ``While`` loop's body run by TensorFlow's single-threaded executor is not
    optimized by Grappler, while a called ``tf.function`` is: Keras' train step
    inlined in a loop body then sums its gradients in another order and divides by
    square roots where Keras' own step multiplies by reciprocal ones, a last-bit
    difference. Under this context (while tracing only) ``AddN`` sums in Grappler's
    order and such divisions are built as Grappler rewrites them; check
    :meth:`GrapplerRewrites.unfaithful` once the trace is complete.
    """
    from tensorflow.python.ops import gen_math_ops

    done = GrapplerRewrites()
    with _GRAPPLER_LOCK:  # one tracing thread at a time; the others build ops as usual
        owner = threading.get_ident()
        add_n, real_div = gen_math_ops.add_n, gen_math_ops.real_div

        def sorted_add_n(inputs: Any, name: Any = None) -> Any:
            if threading.get_ident() == owner and isinstance(inputs, (list, tuple)) \
                    and all(_symbolic(t) for t in inputs):
                inputs = sorted(inputs, key=_grappler_name)
                done.sums += 1
            return add_n(inputs, name=name)

        def rsqrt_div(x: Any, y: Any, name: Any = None) -> Any:
            if threading.get_ident() == owner and _symbolic(y) and y.op.type == "Sqrt" \
                    and not y.consumers():
                done.square_roots.append(y.op)
                return gen_math_ops.mul(x, gen_math_ops.rsqrt(y.op.inputs[0]), name=name)
            return real_div(x, y, name=name)

        gen_math_ops.add_n, gen_math_ops.real_div = sorted_add_n, rsqrt_div
        try:
            yield done
        finally:
            gen_math_ops.add_n, gen_math_ops.real_div = add_n, real_div


_GRAPPLER_LOCK = threading.Lock()


def _symbolic(tensor: Any) -> bool:
    return hasattr(tensor, "op") and hasattr(tensor, "value_index") and \
        not hasattr(tensor, "numpy")


def _grappler_name(tensor: Any) -> str:
    """A tensor as a node's input names it (Grappler sorts these strings)."""
    return tensor.op.name if tensor.value_index == 0 else f"{tensor.op.name}:{tensor.value_index}"


# -- distributed ----------------------------------------------------------------------

@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Worker.extensions as a place for a plugin's per-process state")
def worker_extension(worker: Any, name: str, value: Any = None) -> Any:
    """The object stored under ``name`` on a Dask worker; with ``value``, store it."""
    extensions = getattr(worker, "extensions", None)
    if extensions is None:
        return None
    if value is not None:
        extensions[name] = value
    return extensions.get(name)


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Worker.scheduler (the scheduler's rpc), Scheduler.retire_workers(close_workers, "
       "remove, stimulus_id), distributed.core.rpc and Nanny.restart(timeout, reason); "
       "Worker.periodic_callbacks['heartbeat'] and Worker.nanny, which Worker.close("
       "nanny=True) uses to close the nanny too")
async def retire_and_restart(worker: Any, reason: str, timeout: float = 120.0) -> None:
    """Retire ``worker`` (its results move elsewhere), then have its nanny restart it.

    With no other worker there is nowhere to move results (Dask recomputes them),
    and retiring anyway fails, racing the restart: only the restart is asked for.
    The nanny gets ``timeout`` seconds for the new process: its default (30 s)
    *cancels* a start that takes longer (a worker importing TensorFlow on a busy
    machine), which left the nanny without a worker.

    Retiring removes the worker from the scheduler before its process ends. A
    heartbeat sent in between is answered "missing", and the worker then closes
    itself *and its nanny* (``Worker.close(nanny=True)``): the cluster lost that
    worker for good (CI, 3 workers recycling after every fit on a loaded machine).
    So the worker stops its heartbeat and forgets its nanny first: whatever closes
    it now, the nanny stays and starts a new process.
    """
    import time

    nanny_address = worker.nanny
    heartbeat = getattr(worker, "periodic_callbacks", {}).get("heartbeat")
    if heartbeat is not None:
        heartbeat.stop()
    worker.nanny = None
    identity = await worker.scheduler.identity(n_workers=-1)
    if len(identity.get("workers", {})) > 1:
        await worker.scheduler.retire_workers(
            workers=[worker.address], close_workers=False, remove=True,
            stimulus_id=f"sweep-recycle-{time.time()}")
    worker.loop.add_callback(_restart_by_nanny, nanny_address, reason, timeout)


async def _restart_by_nanny(nanny_address: str, reason: str, timeout: float) -> None:
    from distributed.core import rpc

    # the rpc's own deadline covers the call, which lasts as long as the restart
    async with rpc(nanny_address, timeout=timeout + 30) as nanny:
        await nanny.restart(timeout=timeout, reason=f"sweep-recycle: {reason}")


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "Nanny._on_worker_exit(exitcode), called (looked up on the instance) when its "
       "worker process exits; Nanny.status; Nanny.memory_manager.memory_limit")
def on_worker_exit(nanny: Any, report: Callable[[int, int | None], None]) -> bool:
    """Call ``report(exitcode, memory_limit)`` whenever ``nanny``'s worker process exits
    (before the nanny unregisters it). False: this distributed has no such hook."""
    original = getattr(nanny, "_on_worker_exit", None)
    if original is None or getattr(original, "sweep_reports_exits", False):
        return False

    async def reported(exitcode: int) -> Any:
        # only an unexpected exit: a nanny closing (the cluster shutting down) has no
        # scheduler left to tell
        if getattr(getattr(nanny, "status", None), "name", "") == "running":
            try:
                manager = getattr(nanny, "memory_manager", None)
                report(exitcode, getattr(manager, "memory_limit", None))
            except Exception:  # a report must never stop the nanny's own handling
                pass
        return await original(exitcode)

    reported.sweep_reports_exits = True  # type: ignore[attr-defined]
    nanny._on_worker_exit = reported
    return True


@touch("distributed", ">=2024.4, tested 2026.8.0",
       "SpecCluster._update_worker_status(op, msg), called for each worker the scheduler "
       "adds ('add', {'workers': {address: info}}) or removes ('remove', address); on a "
       "removal SpecCluster starts a timer (distributed.deploy.lost-worker-timeout) that "
       "closes and forgets cluster.workers[name] when no worker of that name is "
       "registered as it fires; Cluster._update_worker_status keeps scheduler_info; "
       "SpecCluster._futures holds the closes it awaits")
def judge_lost_workers_by_their_last_removal(cluster: Any) -> bool:
    """Make ``cluster`` close a worker's nanny (or job) only when that worker has not
    come back since its *last* removal. False: not a ``SpecCluster``, or done already.

    Dask's timer asks, ``lost-worker-timeout`` after each removal, whether a worker of
    that name is registered *at that moment*. A worker recycled (or killed and
    restarted) twice within the timeout is away again when the first removal's timer
    fires: Dask closed its nanny, and the cluster had one worker fewer for good
    (``scripts/soak_10k.py``: 2 of 6 runs of 10,000 fits on 2 workers ended on one,
    ~20 recycles each, the local timeout at 120 s). Here each removal's timer also
    asks whether a worker of that name has registered since; if one has, the worker
    was not lost.
    """
    import asyncio

    import dask
    from dask.utils import parse_timedelta
    from distributed.deploy.cluster import Cluster
    from distributed.deploy.spec import SpecCluster

    if (not isinstance(cluster, SpecCluster)
            or type(cluster)._update_worker_status is not SpecCluster._update_worker_status
            or getattr(cluster._update_worker_status, "sweep_last_removal", False)):
        return False  # (a subclass with its own version keeps it)

    arrivals: dict[Any, int] = {}  # worker name -> workers of that name registered so far

    def update(op: str, msg: Any) -> None:
        if op != "remove":
            for info in (msg.get("workers") or {}).values():
                name = info.get("name")
                arrivals[name] = arrivals.get(name, 0) + 1
            Cluster._update_worker_status(cluster, op, msg)
            return
        name = cluster.scheduler_info["workers"][msg]["name"]
        seen = arrivals.get(name, 0)
        Cluster._update_worker_status(cluster, op, msg)

        def judge() -> None:
            if arrivals.get(name, 0) != seen:
                return  # back since this removal: a later removal's timer decides
            registered = cluster.scheduler_info["workers"].values()
            if name in cluster.workers and not any(i.get("name") == name for i in registered):
                cluster._futures.add(asyncio.ensure_future(cluster.workers[name].close()))
                del cluster.workers[name]

        delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        asyncio.get_running_loop().call_later(delay, judge)

    update.sweep_last_removal = True  # type: ignore[attr-defined]
    cluster._update_worker_status = update  # type: ignore[method-assign]
    return True


# -- dask-jobqueue --------------------------------------------------------------------

@touch("dask-jobqueue", ">=0.8.5, tested 0.9.0",
       "dask_jobqueue.runner installs signal.signal(SIGINT, lambda *_: sys.exit()) "
       "when imported")
def import_slurm_cluster() -> Any:
    """``dask_jobqueue.SLURMCluster``, without the SIGINT handler its import installs.

    That handler turns Ctrl-C into ``sys.exit()`` (exit status 0, clean-up
    skipped); the previous handler is put back.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    from dask_jobqueue import SLURMCluster

    if main:
        if previous is None or getattr(previous, "__module__", "") == "dask_jobqueue.runner":
            previous = signal.default_int_handler
        signal.signal(signal.SIGINT, previous)
    return SLURMCluster
