"""The one seam between sweep and other libraries' private internals.

Nothing else in sweep imports a private name of joblib, scikit-learn, Keras,
scikeras, TensorFlow, distributed or dask-jobqueue, or relies on one of their
undocumented attributes. Each touch is a small named function (or the one
class below) registered in :data:`TOUCHES` with the library it touches and the
versions it was checked against; ``tests/test_compat.py`` exercises every one
on the installed versions and names the library and version when one breaks.

When a library changes, read this package: it is the complete list of what sweep
assumes beyond the public API.

One module per library, the register of touches in
:mod:`keras_sweep._compat.registry`:

- :mod:`~keras_sweep._compat.joblib`
- :mod:`~keras_sweep._compat.sklearn`
- :mod:`~keras_sweep._compat.keras`
- :mod:`~keras_sweep._compat.scikeras`
- :mod:`~keras_sweep._compat.tensorflow`
- :mod:`~keras_sweep._compat.distributed`
- :mod:`~keras_sweep._compat.jobqueue`
- :mod:`~keras_sweep._compat.multiprocessing` (Python's own)

Functions that replace another library's objects at run time are named ``patch_*``
and say what they patch.
"""

from __future__ import annotations

from . import distributed, joblib, jobqueue, keras, multiprocessing, scikeras, sklearn, tensorflow
from .registry import TOUCHES, Touch, touch

__all__ = ["TOUCHES", "Touch", "touch", "distributed", "jobqueue", "joblib", "keras",
           "multiprocessing", "scikeras", "sklearn", "tensorflow"]
