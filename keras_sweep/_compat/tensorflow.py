"""Touches of TensorFlow's internals (see :mod:`keras_sweep._compat`)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .registry import touch


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
    """What :func:`patch_grappler_rewrites` did to the ops built under it."""

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
def patch_grappler_rewrites() -> Iterator[GrapplerRewrites]:
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
