"""The ``sweep`` command: its arguments, and a spec run from end to end.

- :mod:`~keras_sweep.cli.doctor`: ``sweep doctor``: versions against the declared range, the CPU,
  the checks of what sweep relies on in other libraries.
- :mod:`~keras_sweep.cli.main`: The ``sweep`` command line: ``sweep run SPEC``, ``sweep demo``,
  ``sweep validate SPEC``.
- :mod:`~keras_sweep.cli.runner`: Run a validated spec: data, search, cluster, results. Used by the
  CLI.
"""
