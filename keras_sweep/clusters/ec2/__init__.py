"""The ``ec2`` backend (dask-cloudprovider's ``EC2Cluster``) and ``sweep cloud``.

- :mod:`~keras_sweep.clusters.ec2.aws`: What sweep itself asks of the EC2 API (botocore,
  synchronous), beside ``EC2Cluster``.
- :mod:`~keras_sweep.clusters.ec2.cloud`: ``sweep cloud``: the EC2 instances sweep started, listed
  and removed, and the image's pins.
- :mod:`~keras_sweep.clusters.ec2.cluster`: The ``ec2`` backend: fresh AWS instances through dask-
  cloudprovider's ``EC2Cluster``.
"""
