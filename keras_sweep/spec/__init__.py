"""A spec, read and checked before anything starts: its fields, values, data and model.

- :mod:`~keras_sweep.spec.checks`: Value checks of a spec, before anything starts: Keras names,
  ranges, the folds.
- :mod:`~keras_sweep.spec.datasets`: Load the data a spec names (any CSV file, or a dataset bundled
  with scikit-learn),
- :mod:`~keras_sweep.spec.distributions`: Sampling distributions a spec's random and halving
  searches draw parameters from.
- :mod:`~keras_sweep.spec.legacy`: The recipe's Keras-2 names, mapped onto today's stack (Keras 3 +
  scikeras).
- :mod:`~keras_sweep.spec.models`: Model builders and the scikeras estimator a spec describes.
- :mod:`~keras_sweep.spec.reading`: Sweep specs: read YAML, check every field, resolve defaults. No
  cluster needed.
"""
