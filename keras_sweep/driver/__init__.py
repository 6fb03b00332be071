"""The driver's side of a sweep: the session, the joblib backend and what it decides.

- :mod:`~keras_sweep.driver.admission`: The fits held back in the driver: which goes to which free
  worker thread, and when.
- :mod:`~keras_sweep.driver.backend`: The joblib backend that sends each scikit-learn fit to an
  isolated Dask worker.
- :mod:`~keras_sweep.driver.deaths`: Why a worker died, told per fit: the driver's record of worker
  deaths.
- :mod:`~keras_sweep.driver.placement`: Which worker runs which fit: fits of one kind of model go
  where its trace is.
- :mod:`~keras_sweep.driver.progress`: Progress over fits (candidates x folds) with an ETA, and the
  record of fits.
- :mod:`~keras_sweep.driver.recycling`: Driver-side worker recycling: restart workers one at a
  time, never all at once.
- :mod:`~keras_sweep.driver.refit`: The final refit (best candidate on all rows) on a worker,
  isolated like every fit.
- :mod:`~keras_sweep.driver.session`: The user's entry point: a context manager around an unchanged
  ``grid.fit``.
"""
