"""The scikit-learn searches a spec builds: grid, random, halving, Hyperband, refine.

- :mod:`~keras_sweep.search.build`: Build the scikit-learn search a spec describes, from its
  sections.
- :mod:`~keras_sweep.search.hyperband`: Hyperband with k-fold cross-validation: brackets of scikit-
  learn's successive halving.
- :mod:`~keras_sweep.search.refine`: Coarse to fine, as the recipe advises: a finer grid around a
  finished sweep's best.
"""
