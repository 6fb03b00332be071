"""How a fit trains inside a worker: the fast path, sweep's compiled loop and its traces.

- :mod:`~keras_sweep.worker.training.continuation`: Continue a fit from a shorter fit of the same
  lineage, where that is provably exact.
- :mod:`~keras_sweep.worker.training.executor`: TensorFlow's single-threaded executor for a traced
  epoch, where it cannot hang.
- :mod:`~keras_sweep.worker.training.fastpath`: The fast fit path: whole epochs per Keras execution
  (``steps_per_execution``).
- :mod:`~keras_sweep.worker.training.loop`: sweep's compiled training loop: a whole epoch per call,
  Keras' own train step inside.
- :mod:`~keras_sweep.worker.training.nonfinite`: A fit whose loss becomes NaN or infinite fails at
  once, with the epoch, not after all epochs.
- :mod:`~keras_sweep.worker.training.traces`: One trace per kind of model: the fits of a grid reuse
  their traced epoch and predict.
"""
