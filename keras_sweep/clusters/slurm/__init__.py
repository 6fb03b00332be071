"""The ``slurm`` backend (dask-jobqueue's ``SLURMCluster``) and ``sweep batch``.

- :mod:`~keras_sweep.clusters.slurm.batch`: The whole sweep inside one SLURM allocation: a batch
  script, and its submission.
- :mod:`~keras_sweep.clusters.slurm.cluster`: The ``slurm`` backend: Dask workers as SLURM jobs,
  through dask-jobqueue.
"""
