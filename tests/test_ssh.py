"""Several hosts over SSH, with TLS: real sshd in network namespaces (cluster/ssh/up).

The hosts share this machine's filesystem, like hosts with a shared (NFS) home:
``remote_python`` is a wrapper that runs this Python with this checkout and
``tests/`` on ``PYTHONPATH`` (workers import ``sweep`` and the test models).
The TLS files are still copied to every host over SFTP, as on separate machines.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, TESTS, scores
from distributed.comm import get_address_host
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

import keras_sweep as sweep
from keras_sweep import ClusterError
from keras_sweep.clusters import tls

STATE = Path(os.environ.get("SWEEP_SSH_STATE", "/tmp/sweep-ssh"))
pytestmark = [
    pytest.mark.ssh,
    # a refused asynchronous Client leaves distributed's own cleanup to __del__
    pytest.mark.filterwarnings("ignore:coroutine 'wait_for' was never awaited"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def hosts() -> dict:
    """What cluster/ssh/up wrote; skip (or fail, under SWEEP_REQUIRE_SERVICES) if absent."""
    path = STATE / "hosts.yaml"
    if not path.is_file():
        reason = f"no sshd test hosts ({path} missing): run cluster/ssh/up as root first"
        if os.environ.get("SWEEP_REQUIRE_SERVICES"):
            pytest.fail(reason + " (SWEEP_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    return dict(yaml.safe_load(path.read_text()))


@pytest.fixture(scope="module")
def remote_python(tmp_path_factory) -> str:
    wrapper = tmp_path_factory.mktemp("remote") / "python"
    path = os.pathsep.join([str(ROOT), str(TESTS)])
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={path} exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="module")
def options(hosts, remote_python) -> dict:
    return {"hosts": hosts["hosts"], "user": hosts["user"], "key": hosts["key"],
            "known_hosts": hosts["known_hosts"], "remote_python": remote_python,
            "interface": hosts["interface"]}


@pytest.fixture(scope="module")
def ssh_session(options):
    import scikeras.wrappers  # noqa: F401 - imported before the session, as in a user's script:
    # only then does the session send GridSearchCV's refit to a worker
    start = time.perf_counter()
    with sweep.cluster("ssh", seed=3, threads_per_worker=1, **options) as session:
        session.seconds_to_workers = time.perf_counter() - start
        yield session


def veth_bytes_in(hosts: dict) -> dict[str, int]:
    """Bytes that entered each namespace "host" through its network cable."""
    return {veth: int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())
            for veth in hosts["host_veths"]}


# -- a sweep across hosts ---------------------------------------------------------------

@pytest.mark.slow
def test_keras_sweep_on_three_hosts_matches_local_cluster(ssh_session, cancer,
                                                          tiny_classifier):
    X, y = cancer
    grid = {"model__neurons": [1, 2, 3]}
    print(f"\ntime to workers (3 hosts, TLS, TensorFlow preloaded): "
          f"{ssh_session.seconds_to_workers:.1f} s")
    assert len(ssh_session.client.scheduler_info()["workers"]) == 3
    assert ssh_session.client.scheduler.address.startswith("tls://")
    before = len(ssh_session.fits)
    remote = GridSearchCV(tiny_classifier, grid, cv=3, n_jobs=-1).fit(X, y)
    fits = [f for f in ssh_session.fits[before:] if not f.refit]
    refits = [f for f in ssh_session.fits[before:] if f.refit]
    with sweep.cluster("local", workers=2, seed=3):
        local = GridSearchCV(tiny_classifier, grid, cv=3, n_jobs=-1).fit(X, y)
    np.testing.assert_array_equal(scores(remote), scores(local))
    hosts_used = {get_address_host(f.worker) for f in fits}
    assert len(fits) == 9 and len(hosts_used) >= 2, hosts_used
    # the refit too ran on a host, on the compiled loop, across TLS
    assert len(refits) == 1 and refits[0].fit_path == "compiled loop", refits
    assert all(f.fit_error is None for f in fits)


def test_workers_run_on_every_host_with_pinned_threads(ssh_session, hosts):
    reports = ssh_session.worker_reports()
    assert {get_address_host(a) for a in reports} == set(hosts["hosts"])
    for report in reports.values():
        assert report["environment"]["OMP_NUM_THREADS"] == "1"
        assert report["tensorflow_threads"] == {"intra_op": 1, "inter_op": 2}


def test_data_crosses_the_network_once_per_worker_not_per_fit(ssh_session, hosts):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 25))  # 8 MB, incompressible
    y = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(int)
    data = X.nbytes + y.nbytes
    grid = {"C": [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]}
    n_workers = len(ssh_session.client.scheduler_info()["workers"])
    sent_before, before = len(ssh_session.backend.data_sent), veth_bytes_in(hosts)
    search = GridSearchCV(LogisticRegression(max_iter=50), grid, cv=3, n_jobs=-1).fit(X, y)
    into_hosts = {v: b - before[v] for v, b in veth_bytes_in(hosts).items()}
    n_fits = len(grid["C"]) * 3
    per_worker = ssh_session.client.run(_data_bytes_received)
    shared = sum(ssh_session.backend.data_sent[sent_before:])  # X, y and the CV folds
    print(f"\ndata {data / 1e6:.1f} MB (shared with the folds: {shared / 1e6:.1f} MB), "
          f"{n_fits} fits, {n_workers} workers: "
          f"{sum(into_hosts.values()) / 1e6:.1f} MB entered the hosts "
          f"({ {v: round(b / 1e6, 1) for v, b in into_hosts.items()} } MB); "
          f"data received by workers from peers: "
          f"{ {get_address_host(a): round(b / 1e6, 1) for a, b in per_worker.items()} } MB")
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert shared >= data  # X and y travel as shared data, not inside each fit's task
    # one copy per worker (+ the copy the scheduler receives with the small task that
    # returns it, + at most one more when the scheduler's work stealing moves that task,
    # which has no dependencies, before it ran: seen once in CI, 4.77 copies), not one
    # per fit (18 copies here)
    assert sum(into_hosts.values()) < (n_workers + 2.5) * shared < n_fits * data / 2
    assert all(b <= 1.05 * shared for b in per_worker.values())


def _data_bytes_received(dask_worker=None) -> int:
    return sum(nbytes for entry in dask_worker.transfer_incoming_log
               for key, nbytes in entry["keys"].items() if "sweep-data-" in str(key))


# -- TLS: who may connect ---------------------------------------------------------------

def test_clients_without_the_clusters_certificate_are_refused(ssh_session, tmp_path):
    address = ssh_session.client.scheduler.address
    other_ca = tls.client_security(tls.create(tmp_path / "other", hosts=["10.77.0.11"]))
    plain = address.replace("tls://", "tcp://")
    _scheduler_refuses_tls_without_client_certificate(
        address, ssh_session.client.security.tls_ca_file)
    for target, security in ((address, None), (address, other_ca), (plain, None)):
        start = time.perf_counter()
        with pytest.raises((OSError, TimeoutError, ValueError, TypeError)) as refused:
            asyncio.run(_client_submits(target, security))
        seconds = time.perf_counter() - start
        print(f"\nrefused in {seconds:.2f} s: {target[:3]}, {security}: {refused.value!r:.80}")
        assert seconds < 10
    assert ssh_session.client.submit(sum, [1, 2]).result() == 3  # the cluster is unharmed


def _scheduler_refuses_tls_without_client_certificate(address: str, ca_file: str) -> None:
    """Dask's client will not even try without a certificate; a raw TLS client does."""
    import socket
    import ssl

    from distributed.comm import parse_host_port

    context = ssl.create_default_context(cafile=ca_file)  # trusts the cluster's CA
    context.check_hostname = False
    with socket.create_connection(parse_host_port(address.split("://")[1]), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError), match="certificate|reset|closed|EOF"):
            with context.wrap_socket(raw) as conn:
                conn.sendall(b"hello")
                if not conn.recv(1):  # TLS 1.3: the refusal arrives after the handshake
                    raise ConnectionError("closed by the scheduler")


async def _client_submits(address: str, security) -> None:
    from distributed import Client

    async with Client(address, security=security, asynchronous=True, timeout=3) as client:
        await client.submit(sum, [1, 2])


def test_attach_to_a_tls_scheduler_started_by_hand(hosts, tmp_path):
    files = tls.create(tmp_path / "tls", hosts=["10.77.0.1"])
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
           "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    procs = [_dask("scheduler", "--host", "10.77.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(scheduler_file), *_tls_args(files, "scheduler"),
                   env=env)]
    try:
        address = _wait_for_address(scheduler_file)
        procs.append(_dask("worker", address, "--nthreads", "1", "--no-dashboard",
                           *_tls_args(files, "worker"), env=env))
        with pytest.raises(ClusterError, match="Fix: --tls-ca"):
            sweep.cluster("attach", address=address).__enter__()
        with sweep.cluster("attach", address=address, tls_ca=str(files.ca_file),
                           tls_cert=str(files.cert("client")),
                           tls_key=str(files.key("client"))) as session:
            search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2, n_jobs=-1)
            search.fit(*_small_data())
            assert len(session.fits) == 4
            assert session.client.scheduler.address.startswith("tls://10.77.0.1:")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_attach_refuses_plain_tcp_to_another_machine_unless_asked():
    with pytest.raises(ClusterError, match="plain TCP to another machine.*\n.*Fix: .*--insecure"):
        sweep.cluster("attach", address="tcp://10.77.0.1:8786").__enter__()


def _dask(role: str, *args: str, env: dict) -> subprocess.Popen:
    module = f"distributed.cli.dask_{role}"
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tls_args(files: tls.TlsFiles, role: str) -> list[str]:
    return ["--tls-ca-file", str(files.ca_file), "--tls-cert", str(files.cert(role)),
            "--tls-key", str(files.key(role))]


def _wait_for_address(scheduler_file: Path, timeout: float = 60) -> str:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler_file.is_file() and scheduler_file.stat().st_size:
            return str(json.loads(scheduler_file.read_text())["address"])
        time.sleep(0.2)
    raise AssertionError("the hand-started scheduler did not write its address")


def _small_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 5))
    return X, (X[:, 0] > 0).astype(int)


# -- errors, before anything starts -----------------------------------------------------

def _start(**options):
    with sweep.cluster("ssh", **options):
        pass


def test_unreachable_host_names_the_fix(options):
    with pytest.raises(ClusterError, match=r"10\.77\.0\.99 is unreachable(.|\n)*Fix: check"):
        _start(**{**options, "hosts": ["10.77.0.99"], "connect_timeout": 2})


@pytest.mark.slow
def test_an_unreachable_worker_host_is_skipped_when_min_workers_allows(options, cancer,
                                                                        tiny_classifier,
                                                                        caplog):
    """A host that is down at start (nothing answers at 10.77.0.99): with min_workers 1
    the sweep runs on the host that answered, and one warning names the other."""
    X, y = cancer
    up = options["hosts"][0]
    with sweep.cluster("ssh", seed=3, **{**options, "hosts": [up, "10.77.0.99"],
                                         "connect_timeout": 2, "min_workers": 1}) as session:
        GridSearchCV(tiny_classifier, {"model__neurons": [1, 2]}, cv=2, n_jobs=-1,
                     refit=False).fit(X, y)
    assert {get_address_host(f.worker) for f in session.fits} == {up}
    assert len(session.fits) == 4 and all(f.fit_error is None for f in session.fits)
    assert "10.77.0.99 is unreachable" in caplog.text and "other 1 host(s)" in caplog.text


def test_refused_key_names_the_fix(options, hosts):
    bad = {**options, "key": hosts["wrong_key"]}
    with pytest.raises(ClusterError, match=r"refused the key(.|\n)*Fix: .*ssh-copy-id"):
        _start(**bad)


def test_unknown_host_key_names_the_fix(options, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ClusterError, match=r"not in known_hosts(.|\n)*Fix: .*ssh-keyscan"):
        _start(**{**options, "known_hosts": str(empty)})


def test_missing_remote_python_names_the_fix(options):
    with pytest.raises(ClusterError, match=r"not found(.|\n)*Fix: .*remote_python"):
        _start(**{**options, "remote_python": "/nonexistent/bin/python3"})


def test_python_without_sweep_names_the_fix(options):
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("needs a system Python without sweep at /usr/bin/python3")
    with pytest.raises(ClusterError, match=r"cannot import keras_sweep(.|\n)*Fix: .*"
                                           r"python3 -m pip install keras-sweep=="):
        _start(**{**options, "remote_python": "/usr/bin/python3"})


def test_workers_that_cannot_start_name_the_fix(options):
    start = time.perf_counter()
    with pytest.raises(ClusterError, match=r"did not start(.|\n)*Fix: .*interface"):
        _start(**{**options, "interface": "nosuchnic0"})
    assert time.perf_counter() - start < 60


def test_version_mismatch_names_the_packages_and_the_fix():
    from keras_sweep.clusters.versions import check_versions, local_versions

    here = local_versions()
    there = {**here, "distributed": "2023.1.0"}
    install = "/usr/bin/python3 -m pip install"
    with pytest.raises(ClusterError, match=r"host 10\.0\.0\.9: package versions differ"
                                           r"(.|\n)*distributed: here .*, there 2023\.1\.0(.|\n)*"
                                           r"Fix: .*python3 -m pip install distributed=="):
        check_versions("host 10.0.0.9", here, there, install)
    check_versions("host 10.0.0.9", here, dict(here), install)  # equal: fine
    # TensorFlow's arithmetic is the fit's: another version gives other bits
    tf = "tensorflow-cpu" if here.get("tensorflow-cpu") else "tensorflow"
    with pytest.raises(ClusterError, match=rf"{tf}: here .*, there 2\.16\.2"):
        check_versions("host 10.0.0.9", here, {**here, tf: "2.16.2"}, install)


# -- certificates that end before the sweep does ----------------------------------------

@pytest.mark.slow
def test_sweep_outliving_its_certificates_renews_the_cluster_and_loses_nothing(options,
                                                                                tmp_path):
    """Certificates valid 120 s, the sweep stopped 60 s before: `sweep run` starts a new
    cluster (new CA) and continues from the journal; scores equal a local run's."""
    import dask.config

    from keras_sweep.cli import runner
    from keras_sweep.spec import reading as specmod

    def spec(cluster: dict, out: str):
        return specmod.load({
            "name": "renew", "data": {"dataset": "breast_cancer", "scale": True},
            "model": {"builder": "mlp", "optimizer": "adam"},
            "fit": {"epochs": 4, "batch_size": 16}, "cv": 3, "seed": 5, "refit": False,
            # 300 fits: 72, then 120, all finished within the first certificates' 60 s
            # in CI as fits got faster (the last time on 2026-11-30)
            "param_grid": {"model__neurons": list(range(1, 101))}, "report": False,
            "cluster": cluster, "output": str(tmp_path / out)})

    said: list[str] = []

    def echo(line: str) -> None:
        said.append(line)
        if "a new cluster continues" in line:
            # one renewal proves it: the next cluster's certificates outlast the sweep
            # (each renewal starts three hosts' workers again: on a slow machine the sweep
            # renewed several times: 487 s, the suite's slowest test on 2026-12-07)
            dask.config.set({"sweep.tls.valid-days": 1})

    with dask.config.set({"sweep.tls.valid-days": 120 / 86400,
                          "sweep.cluster.expiry-margin": 60}):
        remote = runner.run(spec({"backend": "ssh", **options}, "ssh"), progress=False,
                            echo=echo)
    renewals = [line for line in said if "a new cluster continues" in line]
    assert len(renewals) == 1, said
    assert "TLS certificates expire" in renewals[0]
    assert any("came from the journal" in line for line in said), said
    local = runner.run(spec({"backend": "local", "workers": 2}, "local"), progress=False,
                       echo=lambda _: None)
    np.testing.assert_array_equal(scores(remote.search), scores(local.search))
    assert not remote.failed and len(remote.search.cv_results_["params"]) == 100
