#!/usr/bin/env python
"""Per epoch: a template's traced epoch on TensorFlow's default and single-threaded
executors, its step called or inlined.

    python scripts/bench_executor.py --epochs 150 --output docs/measurements/bench-executor.json

One process set up as a worker is (one intra-op thread, an inter-op pool of
two, op determinism on, oneDNN off), the article's networks of exp3 (SGD with
momentum 0.2), exp5 (relu) and exp6 (dropout 0.2, max-norm 3) on Pima's first
512 rows, batch 10 (52 steps per epoch). Each network gets three templates
(:mod:`keras_sweep.worker.training.traces`): the default executor calling the step, the
single-threaded executor calling it, the single-threaded executor with the step
inlined. Their epochs are called in turn, the order rotated every round, and
each round's ratios kept: this VM's speed drifts by up to 2x within seconds, so
only ratios within a round are compared (their median). The templates' weights
after the run are checked bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIMA = ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
sys.path.insert(0, str(ROOT / "scripts" / "article"))


def _nets() -> dict[str, Any]:
    import exp3_sgd_lr_momentum
    import exp5_activation
    import exp6_dropout_maxnorm

    return {"exp3 (SGD, momentum 0.2)": lambda: exp3_sgd_lr_momentum.create_model(0.01, 0.2),
            "exp5 (relu)": lambda: exp5_activation.create_model("relu"),
            "exp6 (dropout 0.2, max-norm 3)":
                lambda: exp6_dropout_maxnorm.create_model(dropout_rate=0.2, weight_constraint=3.0)}


def measure(make: Any, X: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, Any]:
    """Paired per-epoch seconds of one network's template on both executors."""
    import keras
    import tensorflow as tf
    from keras import tree

    from keras_sweep._compat.keras import array_data_adapter, array_inputs
    from keras_sweep.protocol import TrainingPaths
    from keras_sweep.worker.training import executor, traces

    inputs = array_inputs(array_data_adapter()(X, y, batch_size=10, shuffle=True))
    data = tree.map_structure(tf.convert_to_tensor, tree.lists_to_tuples(inputs.inputs))
    order = tf.constant(np.random.RandomState(1).permutation(len(X)).astype("int64"))
    variants = {"default": (False, False), "single-threaded": (True, False),
                "inlined": (True, True)}
    templates = {}
    for name, (single, inlined) in variants.items():
        traces.forget()
        keras.utils.set_random_seed(5)
        model = make()
        how = TrainingPaths(single_threaded_epochs=single, inline_steps=inlined)
        template, _, why = traces.template_for(model, inputs, how)
        assert template is not None, why
        template.load(model)
        template.epoch(order, data)
        templates[name] = template
    assert isinstance(templates["single-threaded"].epoch, executor.SingleThreaded)
    assert executor.loop_waits(templates["inlined"].epoch.concrete) is None  # inlined
    seconds: dict[str, list[float]] = {name: [] for name in templates}
    pairs = {"default_over_single_threaded": ("default", "single-threaded"),
             "single_threaded_over_inlined": ("single-threaded", "inlined"),
             "default_over_inlined": ("default", "inlined")}
    ratios: dict[str, list[float]] = {key: [] for key in pairs}
    names = list(templates)
    for i in range(epochs):
        took = {}
        for name in names[i % 3:] + names[:i % 3]:
            start = time.perf_counter()
            templates[name].epoch(order, data)
            took[name] = time.perf_counter() - start
            seconds[name].append(took[name])
        for key, (slow, fast) in pairs.items():
            ratios[key].append(took[slow] / took[fast])
    weights = {name: [v.numpy() for v in t.model.variables] for name, t in templates.items()}
    equal = all(np.array_equal(a, b) for other in ("single-threaded", "inlined")
                for a, b in zip(weights["default"], weights[other], strict=True))
    return {"ms_per_epoch": {k: 1000 * statistics.median(v) for k, v in seconds.items()},
            **{key: statistics.median(values) for key, values in ratios.items()},
            "ratio_quartiles": {key: [float(np.percentile(values, q)) for q in (25, 75)]
                                for key, values in ratios.items()},
            "weights_bitwise_equal": equal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=150, help="pairs of epoch calls")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_sweep.worker.setup import enable_determinism, pin_tensorflow_threads

    threads = pin_tensorflow_threads(1)
    enable_determinism()
    data = np.loadtxt(PIMA, delimiter=",")
    X, y = data[:512, :8].astype("float32"), data[:512, 8:9].astype("float32")
    rows = {name: measure(make, X, y, args.epochs) for name, make in _nets().items()}
    print(f"{'network':<32} {'default':>8} {'single':>8} {'inlined':>8} ms  "
          f"{'default/single':>14} {'single/inlined':>14} {'default/inlined':>15} bitwise")
    for name, row in rows.items():
        ms = row["ms_per_epoch"]
        print(f"{name:<32} {ms['default']:8.2f} {ms['single-threaded']:8.2f} "
              f"{ms['inlined']:8.2f}     {row['default_over_single_threaded']:13.3f}x "
              f"{row['single_threaded_over_inlined']:13.3f}x "
              f"{row['default_over_inlined']:14.3f}x {row['weights_bitwise_equal']}")
    if args.output:
        args.output.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "tensorflow": tf.__version__, "threads": threads,
            "args": {k: str(v) for k, v in vars(args).items()}, "networks": rows,
        }, indent=1))


if __name__ == "__main__":
    main()
