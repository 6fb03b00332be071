"""What a worker's fork server imports once (see :mod:`keras_sweep.clusters.forkserver`).

Importing only: nothing here starts TensorFlow's runtime (its thread pools and
eager context are created by the first op, in the forked worker). The Keras
backend is the one ``KERAS_BACKEND`` names in the server's environment.
"""

from __future__ import annotations

import os

import keras  # noqa: F401  (imports the backend KERAS_BACKEND names)
import scikeras.wrappers  # noqa: F401
import sklearn.model_selection  # noqa: F401

from . import fit, setup  # noqa: F401
from .training import loop  # noqa: F401

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow  # noqa: F401
