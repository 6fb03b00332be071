"""``sweep`` as the command line runs it, against moto's EC2 server (tests/test_ec2.py).

moto's instances never boot, and this sandbox answers a TCP connect to any
address, so dask-cloudprovider's wait for the scheduler's port would succeed at
once; here the port is reported closed (the scheduler "never arrives"), the
path that leaks instances in real life. Nothing else is changed.
"""

import sys

import dask_cloudprovider.generic.vmcluster as vmcluster

vmcluster.is_socket_open = lambda ip, port: False

from keras_sweep.cli.main import main  # noqa: E402

sys.exit(main())
