"""What a sweep keeps: fit records, the journal, checkpoints, the output folder, results.

- :mod:`~keras_sweep.store.checkpoints`: A fit's trained state, kept so a longer fit of the same
  candidate continues from it.
- :mod:`~keras_sweep.store.journal`: The journal of finished fits: durable, crash-safe, keyed so
  nothing is mistaken.
- :mod:`~keras_sweep.store.output`: The output folder: writable before anything starts, and used by
  one sweep at a time.
- :mod:`~keras_sweep.store.records`: The typed record of one fit, shared by the worker, the backend
  and every listener.
- :mod:`~keras_sweep.store.results`: What a finished sweep leaves behind: the summary users know,
  and files.
"""
