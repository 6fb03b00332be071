"""Every touch of another library's internals (keras_sweep/_compat/), on the installed versions.

Each test exercises one touch for real; a failure names the library, its
installed version, what sweep relies on and the versions it was checked against,
so an upgrade that breaks a touch says so at once.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from keras_sweep import _compat

PROBES: dict[str, Callable[[], None]] = {}


def probe(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        PROBES[name] = fn
        return fn
    return register


@contextlib.contextmanager
def upstream(name: str) -> Iterator[None]:
    touch = _compat.TOUCHES[name]
    try:
        yield
    except Exception as exc:
        pytest.fail(f"{touch.installed()} broke keras_sweep._compat.{name}: {exc!r}\n"
                    f"  sweep relies on: {touch.what}\n  checked against: {touch.checked}\n"
                    "  Fix: adapt that function in keras_sweep/_compat/ to the new version.",
                    pytrace=True)


def _fit_kwargs(**extra: Any) -> dict[str, Any]:
    """The keyword arguments scikit-learn's search really passes to _fit_and_score."""
    from joblib import parallel_config
    from joblib._parallel_backends import ThreadingBackend
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    seen: list[dict[str, Any]] = []

    class Spy(ThreadingBackend):
        def submit(self, func: Any, callback: Any = None) -> Any:
            seen.extend(kwargs for _, _, kwargs in func.items)
            return super().submit(func, callback)

        def compute_batch_size(self) -> int:
            return 1

    X, y = np.random.default_rng(0).random((30, 2)), np.arange(30) % 2
    with parallel_config(backend=Spy()):
        GridSearchCV(LogisticRegression(), {"C": [1.0, 2.0]}, cv=3, n_jobs=2, **extra).fit(X, y)
    return max(seen, key=lambda kw: (kw["candidate_progress"][0], kw["split_progress"][0]))


@probe("patch_pre_dispatch")
def test_a_dispatch_window_widened_in_configure_is_the_one_parallel_uses():
    from joblib import Parallel, delayed, parallel_config
    from joblib._parallel_backends import ThreadingBackend

    def dispatched_ahead(widen: bool, pre_dispatch: str) -> int:
        sent, release = [0], threading.Event()

        class Spy(ThreadingBackend):
            def configure(self, n_jobs: int = 1, parallel: Any = None, **kw: Any) -> Any:
                n = super().configure(n_jobs=n_jobs, parallel=parallel, **kw)
                if widen:
                    _compat.joblib.patch_pre_dispatch(parallel, "5*n_jobs")
                return n

            def submit(self, func: Any, callback: Any = None) -> Any:
                sent[0] += 1
                return super().submit(func, callback)

            def compute_batch_size(self) -> int:
                return 1

        seen: list[int] = []
        threading.Timer(0.5, lambda: (seen.append(sent[0]), release.set())).start()
        with parallel_config(backend=Spy()):
            Parallel(n_jobs=2, pre_dispatch=pre_dispatch)(
                delayed(release.wait)(5) for _ in range(30))
        return seen[0]  # sent before any task could finish

    with upstream("patch_pre_dispatch"):
        assert dispatched_ahead(False, "2 * n_jobs") == 4
        assert dispatched_ahead(True, "2 * n_jobs") == 10  # joblib's default, widened
        assert dispatched_ahead(True, "2*n_jobs") == 10  # scikit-learn's
        assert dispatched_ahead(True, "3*n_jobs") == 6  # the user's own choice is kept


@probe("fit_task")
def test_fit_task_reads_sklearns_fit_and_score_arguments():
    with upstream("fit_task"):
        task = _compat.sklearn.fit_task(_fit_kwargs())
        assert (task.candidate, task.n_candidates, task.split, task.n_splits) == (1, 2, 2, 3)
        assert task.params == {"C": 2.0}
        assert len(task.train) + len(task.test) == 30 and task.scorer is not None


@probe("search_refitting")
def test_a_searchs_refit_is_told_from_its_cross_validation_fits():
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.model_selection import GridSearchCV

    seen: list[tuple[int, bool]] = []

    class Spy(ClassifierMixin, BaseEstimator):
        def __init__(self, C: float = 1.0) -> None:
            self.C = C

        def fit(self, X: Any, y: Any) -> Spy:
            search = _compat.sklearn.search_refitting(self)
            seen.append((len(X), search is not None and search.best_estimator_ is self))
            self.classes_ = np.unique(y)
            return self

        def predict(self, X: Any) -> Any:
            return np.zeros(len(X), dtype=int)

    with upstream("search_refitting"):
        X, y = np.zeros((30, 2)), np.arange(30) % 2
        GridSearchCV(Spy(), {"C": [1.0, 2.0]}, cv=3, n_jobs=1).fit(X, y)
        # six cross-validation fits on 20 rows, then the refit on all 30, and only it
        assert seen == [(20, False)] * 6 + [(30, True)]
        seen.clear()
        Spy().fit(X, y)  # a fit of the user's own: not a refit
        assert seen == [(30, False)]


@probe("failed_fit_result")
def test_a_failed_fit_result_is_what_sklearn_aggregates():
    from sklearn.model_selection._validation import _aggregate_score_dicts

    with upstream("failed_fit_result"):
        kwargs = _fit_kwargs(scoring=["accuracy", "f1"], refit=False, return_train_score=True)
        result = _compat.sklearn.failed_fit_result(kwargs, "worker lost")
        assert set(result["test_scores"]) == {"accuracy", "f1"}
        assert _aggregate_score_dicts([result, result])["fit_error"] == ["worker lost"] * 2
        assert np.isnan(result["train_scores"]["f1"])


@probe("fit_error")
def test_fit_error_is_read_from_a_real_failed_fit():
    from sklearn.base import BaseEstimator
    from sklearn.model_selection._validation import _fit_and_score

    class Broken(BaseEstimator):
        def __init__(self, C: float = 1.0) -> None:
            self.C = C

        def fit(self, X: Any, y: Any) -> None:
            raise ValueError("boom")

    with upstream("fit_error"):
        X, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
        kwargs = _fit_kwargs()
        kwargs.update(error_score=np.nan, train=np.arange(2), test=np.arange(2, 4),
                      scorer=lambda est, X, y: 0.0)
        result = _fit_and_score(Broken(), X, y, **kwargs)
        assert "boom" in str(_compat.sklearn.fit_error(result))
        assert _compat.sklearn.fit_error({"test_scores": 1.0}) is None


@probe("batch_tasks")
def test_joblib_batches_list_their_tasks():
    from joblib import Parallel, ParallelBackendBase, delayed, parallel_config

    seen: list[Any] = []

    class Spy(ParallelBackendBase):
        supports_retrieve_callback = True

        def effective_n_jobs(self, n_jobs: int | None) -> int:
            return 2

        def submit(self, func: Any, callback: Any = None) -> Any:
            import concurrent.futures

            tasks = _compat.joblib.batch_tasks(func)
            seen.extend(tasks)
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result([f(*args, **kwargs) for f, args, kwargs in tasks])
            callback(future.result())
            return future

        def retrieve_result_callback(self, out: Any) -> Any:
            return out

    with upstream("batch_tasks"), parallel_config(backend=Spy()):
        out = Parallel(n_jobs=2)(delayed(pow)(i, 2, mod=None) for i in range(4))
    assert out == [0, 1, 4, 9]
    assert [(f, list(args), kwargs) for f, args, kwargs in seen] == [
        (pow, [i, 2], {"mod": None}) for i in range(4)]


@probe("keras_seed_source")
def test_keras_default_seeds_come_from_the_replaced_generator():
    import keras

    with upstream("keras_seed_source"):
        draws = []
        for _ in range(2):
            old = _compat.keras.keras_seed_source(random.Random(3))
            try:
                draws.append(keras.layers.Dense(2).build((None, 3)) or
                             keras.initializers.GlorotUniform()((3, 2)).numpy())
            finally:
                _compat.keras.keras_seed_source(old)
        assert old is not None and np.array_equal(draws[0], draws[1])


def _adapter(**kwargs: Any) -> Any:
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    X = np.arange(20, dtype="float32").reshape(10, 2)
    return ArrayDataAdapter(X, np.arange(10), batch_size=4, **kwargs)


@probe("array_data_adapter")
def test_keras_array_adapter_is_built_as_fit_builds_it():
    with upstream("array_data_adapter"):
        adapter = _compat.keras.array_data_adapter()(np.zeros((10, 2), "float32"), np.arange(10),
                                               batch_size=4, shuffle=False)
        batches = [tuple(np.asarray(t) for t in batch) for batch in adapter.get_tf_dataset()]
        assert [len(b[1]) for b in batches] == [4, 4, 2]


@probe("patch_model_fit")
def test_scikeras_trains_through_model_fit():
    from scikeras.wrappers import KerasRegressor

    seen = []

    def make(keras_fit: Callable[..., Any]) -> Callable[..., Any]:
        def fit(**kwargs: Any) -> Any:
            seen.append(sorted(kwargs))
            return keras_fit(**kwargs)
        return fit

    def wrapper(original: Callable[..., Any], X: Any, y: Any, *a: Any, **kw: Any) -> Any:
        with _compat.scikeras.patch_model_fit(est.model_, make):
            return original(X, y, *a, **kw)

    with upstream("patch_model_fit"):
        est = KerasRegressor(model=_model, epochs=2, verbose=0)
        assert _compat.scikeras.patch_keras_fit(est, wrapper)
        est.fit(np.zeros((6, 2), dtype="float32"), np.zeros(6))
        _compat.scikeras.unpatch_keras_fit(est)
        assert seen and {"x", "y", "epochs"} <= set(seen[0])
        assert len(est.history_["loss"]) == 2 and "fit" not in vars(est.model_)


@probe("array_inputs")
def test_array_inputs_reads_keras_adapter():
    with upstream("array_inputs"):
        inputs = _compat.keras.array_inputs(_adapter(shuffle=False))
        assert (inputs.shuffle, inputs.num_samples, inputs.batch_size) == (False, 10, 4)
        assert np.asarray(inputs.inputs[0]).shape == (10, 2)


@probe("patch_array_pipeline")
def test_keras_pipeline_can_be_replaced_and_restored():
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    original = ArrayDataAdapter.get_tf_dataset
    with upstream("patch_array_pipeline"):
        restore = _compat.keras.patch_array_pipeline(lambda inputs: "mine")
        try:
            assert restore is not None and _adapter().get_tf_dataset() == "mine"
            assert _compat.keras.patch_array_pipeline(lambda inputs: None) is None  # nested
        finally:
            if restore is not None:
                restore()
        assert ArrayDataAdapter.get_tf_dataset is original


def _model() -> Any:
    import keras

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    return model


@probe("set_steps_per_execution")
def test_steps_per_execution_is_taken_by_the_next_fit():
    with upstream("set_steps_per_execution"):
        model = _model()
        X = np.zeros((8, 2), dtype="float32")
        model.fit(X, X[:, :1], batch_size=2, epochs=1, verbose=0)
        assert _compat.keras.set_steps_per_execution(model, 4)
        assert model.train_function is None and model.steps_per_execution == 4
        model.fit(X, X[:, :1], batch_size=2, epochs=1, verbose=0)
        assert model.steps_per_execution == 4
        assert not _compat.keras.set_steps_per_execution(object(), 4)


@probe("build_for_training")
def test_a_built_model_is_traced_once():
    import tensorflow as tf

    with upstream("build_for_training"):
        model = _model()
        model.compile(loss="mse", optimizer="adam", metrics=["mae"])
        batch = (tf.zeros((4, 2)), tf.zeros((4, 1)))
        _compat.keras.build_for_training(model, batch)
        assert model.optimizer.built and len(model.optimizer.variables) > 1
        before = len(model.variables) + len(model.optimizer.variables)
        traces = []

        @tf.function
        def step(data: Any) -> Any:
            traces.append(1)
            return model.train_step(data)

        step(batch)
        assert len(traces) == 1  # nothing left to create: no second trace
        assert len(model.variables) + len(model.optimizer.variables) == before


@probe("compile_arguments")
def test_compile_arguments_are_the_objects_given():
    import keras

    with upstream("compile_arguments"):
        model = _model()
        optimizer = keras.optimizers.SGD(0.1)
        metric = keras.metrics.AUC()
        model.compile(loss=keras.losses.mean_squared_error, optimizer=optimizer,
                      metrics=["mae", metric])
        given = _compat.keras.compile_arguments(model)
        assert given["optimizer"] is optimizer
        assert given["loss"] is keras.losses.mean_squared_error
        assert given["metrics"] == ["mae", metric]


@probe("all_layers")
def test_all_layers_reach_into_nested_models():
    import keras

    with upstream("all_layers"):
        inner = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2),
                                  keras.layers.Dropout(0.5)])
        outer = keras.Sequential([keras.Input(shape=(3,)), inner, keras.layers.Dense(1)])
        found = _compat.keras.all_layers(outer)
        assert found[0] is outer and inner in found and inner.layers[1] in found
        assert [type(x).__name__ for x in found].count("Dense") == 2


@probe("dropout_with_tensors")
def test_dropout_from_tensors_equals_keras_dropout_bitwise():
    import keras
    import tensorflow as tf

    with upstream("dropout_with_tensors"):
        x = tf.constant(np.random.default_rng(0).normal(size=(7, 5)), dtype="float32")
        for rate in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1 / 3):
            outputs, grads = [], []
            for ours in (False, True):
                layer = keras.layers.Dropout(rate, seed=4)
                r = tf.Variable(np.float32(rate))
                s = tf.Variable(np.float32(1 / (1 - rate)))

                @tf.function
                def run(x: Any, layer: Any = layer, r: Any = r, s: Any = s,
                        ours: bool = ours) -> Any:
                    with tf.GradientTape() as tape:
                        tape.watch(x)
                        out = (_compat.keras.dropout_with_tensors(layer, x, r, s) if ours
                               else layer(x, training=True))
                        total = tf.reduce_sum(out * out)
                    return out, tape.gradient(total, x)

                first, second = run(x), run(x)  # the seed moves on between calls
                outputs.append([first[0].numpy(), second[0].numpy()])
                grads.append([first[1].numpy(), second[1].numpy()])
            np.testing.assert_array_equal(outputs[0], outputs[1], err_msg=str(rate))
            np.testing.assert_array_equal(grads[0], grads[1], err_msg=str(rate))
            assert not np.array_equal(outputs[0][0], outputs[0][1])


@probe("set_random_seed")
def test_keeping_kernels_keeps_a_stateful_kernels_stream_and_clearing_restarts_it():
    import keras
    import tensorflow as tf

    with upstream("set_random_seed"):
        keras.utils.set_random_seed(1)
        first = tf.random.uniform([4]).numpy()
        _compat.keras.set_random_seed(1, clear_kernels=False)
        assert not np.array_equal(first, tf.random.uniform([4]).numpy())  # the kernel went on
        _compat.keras.set_random_seed(1, clear_kernels=False)
        _compat.keras.set_random_seed(1, clear_kernels=True)
        np.testing.assert_array_equal(first, tf.random.uniform([4]).numpy())
        # the global seed and the op seeds drawn after it are set either way
        _compat.keras.set_random_seed(2, clear_kernels=True)
        full = [tf.compat.v1.get_seed(None) for _ in range(3)]
        _compat.keras.set_random_seed(2, clear_kernels=False)
        assert [tf.compat.v1.get_seed(None) for _ in range(3)] == full and full[0][0] == 2
        assert tf.random.set_seed.__module__.startswith("tensorflow")  # put back


@probe("clear_session")
def test_clearing_the_session_resets_keras_and_clears_kernels_only_when_asked():
    import keras
    from tensorflow.python import pywrap_tfe

    with upstream("clear_session"):
        real, calls = pywrap_tfe.TFE_ContextClearCaches, []

        def counted(handle: Any) -> None:
            calls.append(handle)
            real(handle)

        pywrap_tfe.TFE_ContextClearCaches = counted
        try:
            for clear in (True, False):
                keras.layers.Dense(1)
                before = len(calls)
                _compat.keras.clear_session(clear_kernels=clear)
                assert len(calls) - before == int(clear), clear  # Keras' clear hits it
                assert keras.layers.Dense(1).name == "dense", clear  # names start again
        finally:
            pywrap_tfe.TFE_ContextClearCaches = real
        from tensorflow.python.eager import context

        assert "clear_kernel_cache" not in vars(context.context())  # the method is back


@probe("watch_ops")
def test_op_watch_sees_eager_and_traced_ops_with_their_attributes():
    import tensorflow as tf

    with upstream("watch_ops"):
        seen: list = []

        def run() -> None:
            _compat.tensorflow.watch_ops(lambda op, attributes, graph: seen.append((op, attributes,
                                                                         graph)))
            tf.random.uniform([2])
            tf.function(lambda: tf.random.normal([2]))()
            tf.random.stateless_uniform([2], seed=[1, 2])

        thread = threading.Thread(target=run)  # the watch is this thread's only
        thread.start()
        thread.join()
        tf.random.uniform([2])
        assert ("RandomUniform", ("seed", "seed2", "dtype", "T"), None) in [
            (op, tuple(sorted(a, key=("seed", "seed2", "dtype", "T").index)), g)
            for op, a, g in seen if op == "RandomUniform"]
        assert any(op == "RandomStandardNormal" and "seed2" in a and g for op, a, g in seen)
        assert [op for op, *_ in seen].count("RandomUniform") == 1
        assert not any("seed2" in a for op, a, _ in seen if op.startswith("Stateless"))


@probe("sequential_has_layers")
def test_sequential_layers_count_the_input():
    import keras

    with upstream("sequential_has_layers"):
        model = keras.Sequential()
        assert not _compat.keras.sequential_has_layers(model)
        model.add(keras.Input(shape=(3,)))
        assert _compat.keras.sequential_has_layers(model)


@probe("patch_keras_fit")
def test_scikeras_training_goes_through_the_wrapper():
    from scikeras.wrappers import KerasRegressor

    calls = []

    def wrapper(original: Callable[..., Any], X: Any, y: Any, *a: Any, **kw: Any) -> Any:
        calls.append(len(X))
        return original(X, y, *a, **kw)

    with upstream("patch_keras_fit"):
        est = KerasRegressor(model=_model, epochs=1, verbose=0)
        assert _compat.scikeras.patch_keras_fit(est, wrapper)
        est.fit(np.zeros((6, 2), dtype="float32"), np.zeros(6))
        _compat.scikeras.unpatch_keras_fit(est)
        assert calls == [6] and "_fit_keras_model" not in est.__dict__
        assert not _compat.scikeras.patch_keras_fit(object(), wrapper)


@probe("registered_gradients")
def test_custom_gradients_land_in_tensorflows_registry():
    import tensorflow as tf

    with upstream("registered_gradients"):
        registry = _compat.tensorflow.registered_gradients()
        assert isinstance(registry, dict)
        before = set(registry)

        @tf.custom_gradient
        def double(x: Any) -> Any:
            return 2 * x, lambda dy: 2 * dy

        tf.function(double).get_concrete_function(tf.TensorSpec([], tf.float32))
        assert any(str(k).startswith("CustomGradient-") for k in set(registry) - before)


@probe("patch_grappler_rewrites")
def test_grappler_sums_in_name_order_and_divides_by_reciprocal_roots_as_mimicked():
    import tensorflow as tf

    spec = [tf.TensorSpec([], tf.float32)] * 3

    def three(z: Any, a: Any, m: Any) -> Any:  # 1 in name order (a, m, z), 0 as given
        return tf.math.add_n([tf.identity(z, name="z"), tf.identity(a, name="a"),
                              tf.identity(m, name="m")])

    def root(x: Any, y: Any, _: Any) -> Any:
        return x / tf.sqrt(y)

    values = [tf.constant(v, tf.float32) for v in (1.0, 1e8, -1e8)]
    rng = np.random.default_rng(0)
    x, y = (tf.constant(rng.normal(size=1024).astype("float32")),
            tf.constant(rng.uniform(0.1, 10, size=1024).astype("float32")))
    vectors = [tf.TensorSpec([None], tf.float32)] * 3
    with upstream("patch_grappler_rewrites"):
        # Grappler (a called function) sums in name order; eager ops as given
        assert float(tf.function(three, input_signature=spec)(*values)) == 1.0
        assert float(three(*values)) == 0.0
        # and multiplies by reciprocal roots (which differ from dividing, here ~half)
        rooted = (x * tf.math.rsqrt(y)).numpy()
        assert (rooted != (x / tf.sqrt(y)).numpy()).any()
        np.testing.assert_array_equal(
            tf.function(root, input_signature=vectors)(x, y, x).numpy(), rooted)
        # the mimicry builds the same, and notices a root it must not rewrite
        with _compat.tensorflow.patch_grappler_rewrites() as done:
            graph = tf.function(three, input_signature=spec).get_concrete_function().graph
        [add] = [op for op in graph.get_operations() if op.type == "AddN"]
        assert [t.op.name[0] for t in add.inputs] == ["a", "m", "z"] and done.sums == 1

        def shared(x: Any, y: Any, _: Any) -> Any:
            r = tf.sqrt(y)
            return x / r + r

        for fn, faithful in ((root, True), (shared, False)):
            with _compat.tensorflow.patch_grappler_rewrites() as done:
                graph = tf.function(fn, input_signature=spec).get_concrete_function().graph
            types = {op.type for op in graph.get_operations()}
            assert "Rsqrt" in types and "RealDiv" not in types and len(done.square_roots) == 1
            assert (done.unfaithful() is None) == faithful
        assert float(tf.math.add_n([values[0], values[1], values[2]])) == 0.0  # restored


@probe("worker_extension")
def test_state_kept_on_a_real_worker():
    from distributed import Client, LocalCluster

    def keep(dask_worker: Any) -> Any:
        _compat.distributed.worker_extension(dask_worker, "sweep-test", {"fits": 1})
        return _compat.distributed.worker_extension(dask_worker, "sweep-test")

    with upstream("worker_extension"), \
            LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert list(client.run(keep).values()) == [{"fits": 1}]


@probe("drop_unused_callback_context")
def test_a_search_without_callbacks_sends_no_callback_context():
    import cloudpickle
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection._validation import _fit_and_score

    with upstream("drop_unused_callback_context"):
        kwargs = _fit_kwargs()
        dropped = _compat.sklearn.drop_unused_callback_context(kwargs)
        assert dropped.get("callback_ctx") is None and dropped.get("caller") is None
        if "callback_ctx" in kwargs:  # scikit-learn >= 1.9: much less to send per fit
            assert len(cloudpickle.dumps(dropped)) < len(cloudpickle.dumps(kwargs)) / 2
        X, y = np.random.default_rng(0).random((30, 2)), np.arange(30) % 2  # as _fit_kwargs
        kept = _fit_and_score(LogisticRegression(), X, y, **kwargs)
        without = _fit_and_score(LogisticRegression(), X, y, **dropped)
        assert without["test_scores"] == kept["test_scores"]


@probe("fit_score")
def test_fit_score_is_read_from_a_real_fit():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection._validation import _fit_and_score

    with upstream("fit_score"):
        X, y = np.random.default_rng(0).random((30, 2)), np.arange(30) % 2  # as _fit_kwargs
        result = _fit_and_score(LogisticRegression(), X, y, **_fit_kwargs())
        assert result.get("fit_error") is None, result.get("fit_error")
        score = _compat.sklearn.fit_score(result)
        assert isinstance(score, float) and 0.0 <= score <= 1.0
        assert _compat.sklearn.fit_score({"test_scores": {"f1": 0.25, "acc": 0.5}}, "acc") == 0.5


@probe("patch_nanny_exit_report")
def test_a_nanny_reports_its_worker_killed_by_a_signal():
    import os
    import signal
    import time

    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import NannyPlugin

    seen: list[tuple[float, Any]] = []

    class Report(NannyPlugin):
        name = "sweep-test-exit"

        def setup(self, nanny: Any) -> None:
            def report(exitcode: int, memory_limit: int | None) -> None:
                nanny.log_event("sweep-test-exit", {"exitcode": exitcode,
                                                    "memory_limit": memory_limit})

            assert _compat.distributed.patch_nanny_exit_report(nanny, report)

    with upstream("patch_nanny_exit_report"), \
            LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                         memory_limit="1 GiB") as cluster, Client(cluster) as client:
        client.register_plugin(Report())
        client.subscribe_topic("sweep-test-exit", seen.append)
        pid = next(iter(client.run(os.getpid).values()))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen and seen[0][1] == {"exitcode": -signal.SIGKILL, "memory_limit": 2**30}


@probe("retire_and_restart")
def test_a_worker_is_retired_and_restarted_by_its_nanny():
    """Even when a heartbeat reaches the scheduler after the retirement and before the
    nanny ends the process (a loaded machine: CI lost a worker so), which the scheduler
    answers "missing" and the worker answers by closing itself: its nanny must stay
    and start a new process."""
    import time

    from distributed import Client, LocalCluster

    async def recycle(dask_worker: Any) -> bool:
        import asyncio

        restart = _compat.distributed._restart_by_nanny

        async def slow_restart(*args: Any) -> None:  # as on a loaded machine
            await asyncio.sleep(2)
            await restart(*args)

        _compat.distributed._restart_by_nanny = slow_restart  # (this worker process is ended next)
        await _compat.distributed.retire_and_restart(dask_worker, "test")
        await dask_worker.heartbeat()  # the late heartbeat, sent for sure
        return True

    with upstream("retire_and_restart"), \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        old = sorted(client.scheduler_info()["workers"])
        client.run(recycle, workers=[old[0]], wait=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = set(client.scheduler_info()["workers"])
            if old[0] not in now and len(now) == 2:
                break
            time.sleep(0.2)
        assert old[0] not in now and len(now) == 2, now
        time.sleep(3)  # a nanny told to close would take its new worker with it
        assert len(cluster.workers) == 2 and len(client.scheduler_info()["workers"]) == 2


@probe("patch_lost_worker_judgement")
def test_a_worker_restarted_twice_within_the_lost_worker_timeout_keeps_its_nanny(tmp_path):
    """Dask's timer closes a nanny when no worker of its name is registered a timeout
    after *a* removal; a worker restarted twice within the timeout is away again when
    the first timer fires (the 10k soak lost a worker so). Here the second restart is
    made slow on purpose (a preload sleeps) and spans the first removal's timer: the
    nanny must stay and its worker come back. Without the touch the nanny is closed."""
    import time

    import dask
    from distributed import Client, LocalCluster

    delay = tmp_path / "delay"
    delay.write_text("0")
    preload = ("import pathlib, time\n"
               "def dask_setup(worker):\n"
               f"    time.sleep(float(pathlib.Path({str(delay)!r}).read_text()))\n")
    timeout = 10.0
    with upstream("patch_lost_worker_judgement"), \
            dask.config.set({"distributed.deploy.lost-worker-timeout": f"{timeout}s"}), \
            LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                         preload=[preload]) as cluster, \
            Client(cluster) as client:
        assert _compat.distributed.patch_lost_worker_judgement(cluster)
        assert not _compat.distributed.patch_lost_worker_judgement(cluster)  # once
        client.wait_for_workers(1)
        first = time.monotonic()
        client.restart_workers(list(client.scheduler_info()["workers"]))  # removal 1
        time.sleep(max(0.0, first + timeout - 2 - time.monotonic()))
        delay.write_text("5")  # restart 2: away from timeout - 2 s to timeout + 3 s or more
        try:
            client.restart_workers(list(client.scheduler_info()["workers"]), timeout=60)
        except Exception as exc:  # noqa: BLE001 - the nanny closed under it: asserted below
            print(f"restart 2: {exc!r}")
        assert time.monotonic() > first + timeout, "the first removal's timer did not fire yet"
        time.sleep(1)
        assert list(cluster.workers) == [0], "the cluster closed the worker's nanny"
        assert len(client.scheduler_info()["workers"]) == 1


@probe("import_slurm_cluster")
def test_importing_slurm_cluster_keeps_our_sigint_handler():
    import signal

    with upstream("import_slurm_cluster"):
        before = signal.getsignal(signal.SIGINT)
        cls = _compat.jobqueue.import_slurm_cluster()
        assert cls.__name__ == "SLURMCluster"
        assert signal.getsignal(signal.SIGINT) is before


@probe("forkserver_running")
def test_a_process_knows_whether_it_started_its_fork_server() -> None:
    # in a fresh process: this one may have started its server already
    code = ("from keras_sweep._compat.multiprocessing import forkserver_running as r\n"
            "from multiprocessing import forkserver\n"
            "before = r(); forkserver.ensure_running(); print(before, r())")
    with upstream("forkserver_running"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=True).stdout.split()
        assert out == ["False", "True"], out




@probe("worker_exits")
def test_a_nannys_line_on_its_worker_dying_gives_the_exit_code() -> None:
    import os
    import signal
    import time

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        pid = next(iter(client.run(os.getpid).values()))
        with upstream("worker_exits"), _compat.distributed.worker_exits() as codes:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not codes and time.monotonic() < deadline:
                time.sleep(0.1)
            assert codes == [-signal.SIGKILL], codes


# -- loud or safe: a changed layout raises one clear error or takes the safe path ------

def test_a_renamed_fit_and_score_keyword_stops_with_the_library_and_the_fix(monkeypatch):
    """Were ``split_progress`` renamed, every fold would be seeded as fold 0."""
    from sklearn.model_selection import _validation

    from keras_sweep.exceptions import LibraryChangedError

    def renamed(estimator, X, y, *, scorer, train, test, verbose, parameters, fit_params,
                score_params, return_train_score=False, return_parameters=False,
                return_n_test_samples=False, return_times=False, return_estimator=False,
                fold_progress=None, candidate_progress=None, error_score=np.nan):
        raise AssertionError("not called")

    monkeypatch.setattr(_validation, "_fit_and_score", renamed)
    _compat.sklearn._check_fit_and_score.cache_clear()
    try:
        with pytest.raises(LibraryChangedError) as caught:
            _compat.sklearn.fit_task(_fit_kwargs())
    finally:
        _compat.sklearn._check_fit_and_score.cache_clear()
    message = str(caught.value)
    assert "scikit-learn" in message and "no keyword split_progress" in message
    assert "Fix: install the version sweep was checked against" in message


def test_a_callback_context_without_its_callbacks_list_is_kept(caplog):
    """Renamed ``_callbacks``: whether the search has callbacks is unknown, so the
    context travels with each fit (the safe way), with one warning."""
    context = type("CallbackContext", (), {})()
    kwargs = {"callback_ctx": context, "caller": "search"}
    assert _compat.sklearn.drop_unused_callback_context(kwargs) is kwargs
    assert "CallbackContext has no _callbacks" in caplog.text
    with_none = type("CallbackContext", (), {"_callbacks": []})()
    assert _compat.sklearn.drop_unused_callback_context(
        {"callback_ctx": with_none, "caller": "search"})["caller"] is None


def test_results_and_scorers_sweep_cannot_read_stop_with_the_fix():
    from keras_sweep.exceptions import LibraryChangedError

    with pytest.raises(LibraryChangedError, match="a result with keys"):
        _compat.sklearn.fit_error({"scores": 1.0, "error": None})
    multimetric = type("_MultimetricScorer", (), {})()
    with pytest.raises(LibraryChangedError, match="no _scorers"):
        _compat.sklearn.failed_fit_result({"scorer": multimetric}, "worker lost")


def test_a_search_whose_refit_moved_refits_in_the_driver_with_a_warning(monkeypatch, caplog):
    """``search_refitting`` looks for ``BaseSearchCV.fit``'s frame in its module: moved
    elsewhere, the refit is not recognised, and the session says so once."""
    import inspect
    import types

    from sklearn.model_selection._search import BaseSearchCV

    inner = inspect.unwrap(BaseSearchCV.fit)
    moved = types.FunctionType(inner.__code__, {**inner.__globals__, "__name__": "elsewhere"},
                               "fit", inner.__defaults__, inner.__closure__)
    moved.__kwdefaults__ = inner.__kwdefaults__
    assert _compat.sklearn.refits_recognised()
    monkeypatch.setattr(BaseSearchCV, "fit", moved)
    _compat.sklearn.refits_recognised.cache_clear()
    try:
        assert not _compat.sklearn.refits_recognised()
        from keras_sweep.driver.refit import search_refits_on_workers

        with search_refits_on_workers(session=None):
            pass
        assert "refit runs in this process" in caplog.text
    finally:
        _compat.sklearn.refits_recognised.cache_clear()


def test_every_touch_has_a_probe_and_says_what_it_relies_on():
    assert set(_compat.TOUCHES) == set(PROBES), "add a probe for each touch in _compat.py"
    for touch in _compat.TOUCHES.values():
        assert touch.what and touch.checked and "not installed" not in touch.installed()

