"""Local workers forked from a server that imported TensorFlow once (clusters.forkserver).

The server is per process, so each test runs its own Python process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import sweep_env

SCRIPT = textwrap.dedent('''
    import json, multiprocessing, os, sys

    def fit(queue):
        imported = "tensorflow" in sys.modules   # before this function imports anything
        import keras
        import numpy as np
        keras.utils.set_random_seed(3)
        x = np.random.default_rng(0).random((64, 5)).astype("float32")
        y = (x.sum(1) > 2.5).astype("float32")
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dropout(0.3), keras.layers.Dense(1, "sigmoid")])
        model.compile("adam", "binary_crossentropy")
        model.fit(x, y, epochs=3, batch_size=8, verbose=0)
        queue.put({"imported": imported, "threads": os.environ.get("OMP_NUM_THREADS"),
                   "weights": [w.tolist() for w in model.get_weights()]})

    def run(method):
        context = multiprocessing.get_context(method)
        queue = context.Queue()
        process = context.Process(target=fit, args=(queue,))
        process.start()
        result = queue.get(timeout=300)
        process.join()
        return result

    if __name__ == "__main__":
        from keras_sweep.clusters import forkserver
        from keras_sweep.clusters.environment import worker_environment

        one, two = worker_environment(1), worker_environment(2)
        methods = [forkserver.start_method(one), forkserver.start_method(one),
                   forkserver.start_method(two)]
        os.environ.update(one)   # the spawned reference starts with the same variables
        print(json.dumps({"methods": methods, "forked": run("forkserver"),
                          "spawned": run("spawn")}))
''')


def test_a_forked_worker_fits_bitwise_like_a_spawned_interpreter(tmp_path):
    """The server serves the environment it started with (another one gets spawned
    workers); a worker forked from it has TensorFlow imported already, the workers'
    thread variables, and fits (Dropout included) exactly as plain Keras in a fresh
    spawned interpreter."""
    script = tmp_path / "forked.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=sweep_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["methods"] == ["forkserver", "forkserver", "spawn"]
    forked, spawned = result["forked"], result["spawned"]
    assert forked["imported"] and not spawned["imported"]
    assert forked["threads"] == spawned["threads"] == "1"
    assert forked["weights"] == spawned["weights"]
