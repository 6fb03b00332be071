"""TensorFlow's single-threaded executor for a traced epoch, where it cannot hang.

TensorFlow runs a graph with its default executor, whose bookkeeping per
kernel (ready queues, pending counts, loop frames) is a large part of a small
network's train step. Its single-threaded executor runs the kernels in order on
the calling thread instead: an epoch of the article's networks runs 1.09-1.22x
faster (``scripts/bench_executor.py``, paired), with the same kernels in the same
order, so bitwise the same results (``tests/test_executor.py``).

One catch makes it opt-in per traced function. When that executor meets an
asynchronous kernel (a loop, a function call), it *waits* for it, holding its
thread, while the kernel's function runs on TensorFlow's inter-op pool. An
epoch is a loop whose body calls the train step: the body waits on one pool
thread while the step runs on another. So :class:`SingleThreaded` is used only

- for steps with no loop, conditional or call of their own (one level of waiting),
  which :func:`waits_within` checks on the traced step; or for a loop whose body
  holds the whole step and calls nothing (:func:`single_threaded_loop`, the
  default for templates: no call per step, ``sweep.worker.traces``);
- with an inter-op pool of at least two threads (workers set two,
  :mod:`keras_sweep.worker.setup`);
- by at most ``pool - 1`` calls at once in a process: a call that finds no room
  runs on the default executor (same graph, same results, ~10 % slower) rather
  than wait;
- on CPUs only: with an accelerator TensorFlow splits a graph by device and joins
  the parts with send/receive kernels, which that executor does not run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

#: TensorFlow's name of the executor
SINGLE_THREADED = "SINGLE_THREADED_EXECUTOR"
#: parts of op type names whose kernels run functions or wait on other threads
WAITING_OPS = ("While", "If", "Case", "Call", "Iterator", "Dataset", "Recv", "Send",
               "Collective", "PyFunc", "Barrier", "Queue")


def pool_size() -> int:
    """Threads in TensorFlow's inter-op pool (0, "let TensorFlow choose", means one per CPU)."""
    import tensorflow as tf

    configured = tf.config.threading.get_inter_op_parallelism_threads()
    if configured > 0:
        return int(configured)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


class _Room:
    """How many single-threaded calls may run at once in this process (pool - 1)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0

    def enter(self, limit: int) -> bool:
        with self.lock:
            if self.running >= limit:
                return False
            self.running += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


_ROOM = _Room()


def waits_within(concrete: Any) -> str | None:
    """An op of the traced function ``concrete`` that would make the single-threaded
    executor wait on another thread (None: there is none)."""
    graph = concrete.graph
    for op in graph.get_operations():
        if any(part in op.type for part in WAITING_OPS):
            return op.type
    if graph.as_graph_def().library.function:
        return "a nested function"
    return None


class SingleThreaded:
    """``function`` (a ``tf.function`` with an input signature) traced and run by the
    single-threaded executor, while there is room; by the default executor otherwise.

    Traced here, under that executor: TensorFlow then keeps the function's loop a
    ``While`` op (it lowers loops to control-flow frames, which the single-threaded
    executor cannot run, only for the default executor).
    """

    def __init__(self, function: Any) -> None:
        import tensorflow as tf

        with tf.experimental.function_executor_type(SINGLE_THREADED):
            self.concrete = function.get_concrete_function()
        self.room = pool_size() - 1  # fixed once TensorFlow has run an op, as here

    def __call__(self, *args: Any) -> Any:
        import tensorflow as tf

        if not _ROOM.enter(self.room):
            return self.concrete(*args)
        try:
            with tf.experimental.function_executor_type(SINGLE_THREADED):
                return self.concrete(*args)
        finally:
            _ROOM.leave()


def single_threaded(function: Any, step: Any) -> Callable[..., Any] | None:
    """``function`` run by the single-threaded executor (:class:`SingleThreaded`), or
    None when that could hang or fail: ``step`` (the traced function its loop calls)
    waits on something of its own, the inter-op pool has fewer than two threads, or
    TensorFlow sees an accelerator."""
    if pool_size() < 2 or accelerators() or waits_within(step.get_concrete_function()):
        return None
    return SingleThreaded(function)


def single_threaded_loop(function: Any, why_not: Callable[[Any], str | None] | None = None
                         ) -> SingleThreaded | None:
    """``function``, whose loop body holds the whole step (no call of its own), run by
    the single-threaded executor; None when that could hang or fail (see
    :func:`loop_waits`, :func:`single_threaded`) or when ``why_not(concrete)``, asked
    of the traced function, gives a reason."""
    if pool_size() < 2 or accelerators():
        return None
    candidate = SingleThreaded(function)
    if loop_waits(candidate.concrete) or (why_not is not None and why_not(candidate.concrete)):
        return None
    return candidate


def loop_waits(concrete: Any) -> str | None:
    """What in the traced ``concrete`` would make the single-threaded executor wait on
    more than one thread (None: nothing): the function must hold exactly one loop,
    whose condition and body wait on nothing and call no function."""
    graph = concrete.graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    if len(loops) != 1:
        return f"{len(loops)} loops"
    for op in graph.get_operations():
        if op is not loops[0] and any(part in op.type for part in WAITING_OPS):
            return op.type
    own = {loops[0].get_attr("body").name, loops[0].get_attr("cond").name}
    for function in graph.as_graph_def().library.function:
        if function.signature.name not in own:
            return "a nested function"
        for node in function.node_def:
            if any(part in node.op for part in WAITING_OPS):
                return node.op
    return None


def accelerators() -> list[str]:
    """The GPUs and TPUs TensorFlow sees (their logical device names)."""
    import tensorflow as tf

    return [d.name for kind in ("GPU", "TPU") for d in tf.config.list_logical_devices(kind)]
