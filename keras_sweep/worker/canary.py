"""The canary: before a fast path serves fits, it proves itself against Keras' own fit.

sweep's fast paths re-create Keras and TensorFlow behaviour (the shuffle of
``ArrayDataAdapter``, Dropout's seed arithmetic, Grappler's rewrites of the inlined
step). Their equality is proven by tests on the versions installed when the tests ran;
the canary proves it where the fits run. It fits a few small canonical models for 2
epochs each, seeded as a worker seeds a fit, through plain Keras ``Model.fit``
(:data:`~keras_sweep.protocol.KERAS_FIT`) and through each path sweep would use,
and compares every epoch's loss and metric, the final weights and the predictions,
bit for bit. A path that differs on any case is switched off in that worker: its
fits take the next path down, ``fits.csv`` says why (``fallback``), and one warning
names the library versions.

The result is kept on disk per (library versions, sweep's training code, CPU kind,
threads) in ``~/.cache/keras-sweep/`` (``SWEEP_CACHE_DIR`` overrides), so a worker
that starts on a machine where it was already run costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol import KERAS_FIT, TrainingPaths, cpu_kind

logger = logging.getLogger(__name__)

#: the paths the canary proves, each the fastest way a fit could take, in order:
#: name -> the paths that make a fit take it
PATHS: dict[str, TrainingPaths] = {
    "fast path": TrainingPaths(compiled_loop=False),
    "compiled loop": TrainingPaths(share_traces=False),
    "shared trace": TrainingPaths(),
}
#: library versions the result depends on
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "scikeras", "scikit-learn", "numpy")
#: rows of the canary's data: with a batch of 16, two full batches and one of 13
ROWS, FEATURES, BATCH, EPOCHS, SEED = 45, 6, 16, 2, 1234


def _dense_dropout(meta: dict[str, Any]) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(8, activation="relu",
                           kernel_constraint=keras.constraints.MaxNorm(2.0)),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def _dense(meta: dict[str, Any]) -> Any:
    import keras

    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(5, activation="tanh", kernel_initializer="he_normal"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


#: the canonical fits: name -> (builder, estimator keywords, fit keywords)
CASES: dict[str, tuple[Callable[[dict[str, Any]], Any], dict[str, Any], dict[str, Any]]] = {
    "Dense + Dropout + MaxNorm, Adam": (_dense_dropout, {"optimizer": "adam"}, {}),
    "Dense, SGD with momentum, sample weights": (
        _dense, {"optimizer": "sgd", "optimizer__learning_rate": 0.05,
                 "optimizer__momentum": 0.9}, {"sample_weight": "ramp"}),
}


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    X = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int64")
    return X, y, np.linspace(0.5, 1.5, ROWS).astype("float32")


def _fit(case: str, paths: TrainingPaths) -> tuple[dict[str, Any], str | None]:
    """One canonical fit through ``paths``: its numbers, and the path it took."""
    from scikeras.wrappers import KerasClassifier

    from .memory import clear_keras_session
    from .seeding import seeded
    from .training import fastpath

    build, params, fit_params = CASES[case]
    X, y, weights = _data()
    estimator = KerasClassifier(model=build, loss="binary_crossentropy", metrics=["accuracy"],
                                epochs=EPOCHS, batch_size=BATCH, verbose=0, **params)
    kwargs = {k: (weights if v == "ramp" else v) for k, v in fit_params.items()}
    with fastpath.enabled(estimator, paths) as path, seeded(SEED, in_worker=False):
        estimator.fit(X, y, **kwargs)
    numbers = {"history": {k: [float(v) for v in vs] for k, vs in estimator.history_.items()},
               "weights": [w.copy() for w in estimator.model_.get_weights()],
               "predictions": estimator.predict_proba(X)}
    del estimator
    clear_keras_session(freeze=False, full_collection=True)
    return numbers, path.name


def _differs(reference: dict[str, Any], other: dict[str, Any]) -> str | None:
    if reference["history"] != other["history"]:
        return "its losses or metrics differ from Keras' fit"
    if any(not np.array_equal(a, b) for a, b in zip(reference["weights"], other["weights"],
                                                     strict=True)):
        return "its final weights differ from Keras' fit"
    if not np.array_equal(reference["predictions"], other["predictions"]):
        return "its predictions differ from Keras' fit"
    return None


def run() -> dict[str, str]:
    """Prove every path against Keras' fit here; ``{path: why it is off}`` (empty: all
    exact). A case a path does not serve (it fell back to a slower one) proves nothing
    against it."""
    from .training import traces

    traces.forget()  # templates are made now, from this installation's Keras
    try:
        return _run()
    finally:
        traces.forget()  # the canary's models do not stay in the worker


def _run() -> dict[str, str]:
    failed: dict[str, str] = {}
    for case in CASES:
        reference, _ = _fit(case, KERAS_FIT)
        for name, paths in PATHS.items():
            if name in failed:
                continue
            try:
                numbers, taken = _fit(case, paths)
            except Exception as exc:  # a path that raises is no more exact than one that differs
                failed[name] = f"canary '{case}' raised {type(exc).__name__}: {exc}"
                continue
            if taken != ("fast path" if name == "fast path" else "compiled loop"):
                continue  # this path does not serve this case: nothing proven
            why = _differs(reference, numbers)
            if why is not None:
                failed[name] = f"canary '{case}': {why} ({versions()})"
    return failed


def versions() -> str:
    """The versions the canary's result depends on, e.g. ``keras 3.15.1, ...``."""
    found = []
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def _key(threads: int) -> str:
    """What the result depends on, hashed: versions, sweep's code that trains, the CPU."""
    here = Path(__file__).resolve().parent
    code = sorted([*here.glob("training/*.py"), *here.parent.glob("_compat/*.py"),
                   here / "canary.py", here / "seeding.py"])
    digest = hashlib.sha256()
    for part in (versions(), cpu_kind(), str(threads), os.environ.get("KERAS_BACKEND", "")):
        digest.update(part.encode())
    for path in code:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def cache_dir() -> Path:
    """Where results are kept: ``SWEEP_CACHE_DIR``, else ``~/.cache/keras-sweep``, else
    (a home that cannot be written) a folder of this user's in the temporary directory."""
    given = os.environ.get("SWEEP_CACHE_DIR")
    if given:
        return Path(given)
    home = Path.home() / ".cache" / "keras-sweep"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    import tempfile

    return Path(tempfile.gettempdir()) / f"keras-sweep-cache-{os.getuid()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers starting together run it once
        yield


def checked(threads: int) -> tuple[dict[str, str], float, bool]:
    """:func:`run`'s result for this machine, from the cache when it holds it.

    Returns ``(failed paths, seconds spent, whether it came from the cache)``. A
    cache that cannot be read or written only costs the run.
    """
    began = time.perf_counter()
    path = cache_dir() / f"canary-{_key(threads)}.json"
    try:
        with _locked(path):
            if path.is_file():
                return dict(json.loads(path.read_text())), time.perf_counter() - began, True
            failed = run()
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(failed))
            os.replace(partial, path)  # whole or absent, even if this process is killed
    except (OSError, ValueError) as exc:
        logger.info("sweep: canary cache %s not usable (%s); running it", path, exc)
        failed = run()
    if failed:
        logger.warning("sweep: the canary switched off %s in this worker: %s",
                       ", ".join(failed), "; ".join(failed.values()))
    return failed, time.perf_counter() - began, False


def restricted(paths: TrainingPaths, failed: dict[str, str]) -> tuple[TrainingPaths, str | None]:
    """``paths`` without what the canary switched off; and why, for ``fits.csv``."""
    from dataclasses import replace

    if not failed:
        return paths, None
    if "fast path" in failed and paths.fast:
        return replace(paths, fast=False), failed["fast path"]
    if "compiled loop" in failed and paths.compiled_loop:
        return replace(paths, compiled_loop=False), failed["compiled loop"]
    if "shared trace" in failed and paths.share_traces:
        return replace(paths, share_traces=False), failed["shared trace"]
    return paths, None
