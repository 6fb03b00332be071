"""What runs inside a Dask worker: set-up, one isolated fit, seeding, memory.

- :mod:`~keras_sweep.worker.canary`: Before a fast path serves fits, it proves itself against
  Keras' own fit (cached per machine and versions).
- :mod:`~keras_sweep.worker.fit`: One isolated fit in a worker, and the worker's request to be
  recycled.
- :mod:`~keras_sweep.worker.logs`: Drop TensorFlow log lines known to be harmless from a worker's
  stderr.
- :mod:`~keras_sweep.worker.memory`: Memory hygiene after each fit: Keras' session, Python's
  garbage, TensorFlow's registry.
- :mod:`~keras_sweep.worker.preload`: What a local worker's fork server imports once (nothing
  more: TensorFlow's runtime starts in the forked worker).
- :mod:`~keras_sweep.worker.seeding`: Every seeding rule of sweep, driver side and worker side, in
  one place.
- :mod:`~keras_sweep.worker.setup`: Worker set-up: one TensorFlow runtime per process, pinned
  threads, fit bookkeeping.
- :mod:`~keras_sweep.worker.training`: How a fit trains inside a worker: the fast path, sweep's
  compiled loop and its traces.
"""
