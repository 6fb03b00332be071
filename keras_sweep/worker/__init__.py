"""What runs inside a Dask worker: set-up, one isolated fit, seeding, memory, fast path.

- :mod:`~sweep.worker.plugin`: the worker plugin (TensorFlow imported and pinned once).
- :mod:`~sweep.worker.fit`: one isolated fit, and the worker's recycle request.
- :mod:`~sweep.worker.seeding`: every seeding rule (driver and worker side).
- :mod:`~sweep.worker.memory`: garbage collection and TensorFlow's gradient registry.
- :mod:`~sweep.worker.fastpath`: whole epochs per Keras execution.
"""
