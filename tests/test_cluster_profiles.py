"""Cluster profiles (cluster/*.yaml) and ssh/attach/ec2 settings: checked before any start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from keras_sweep import ClusterError, SpecError
from keras_sweep.cli.main import _load, build_parser, overrides
from keras_sweep.clusters.attach import attach_security
from keras_sweep.clusters.ec2.cluster import ec2_arguments
from keras_sweep.spec import reading as specmod


@pytest.fixture()
def key(tmp_path) -> str:
    path = tmp_path / "id_ed25519"
    path.write_text("not really a key")
    return str(path)


def _ssh_profile(key: str, tmp_path: Path) -> Path:
    profile = yaml.safe_load((ROOT / "cluster" / "ssh.yaml").read_text())
    profile.update(key=key, known_hosts=key)  # the copy a user has edited
    path = tmp_path / "ssh.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_ssh_profile_validates_and_becomes_cli_overrides(key, tmp_path):
    path = _ssh_profile(key, tmp_path)
    args = build_parser().parse_args(["run", "spec.yaml", "--cluster", str(path)])
    spec = _load(specmod.demo_spec(), args)
    assert spec.cluster["backend"] == "ssh"
    assert spec.cluster["hosts"] == ["10.0.0.5", "10.0.0.6", "10.0.0.7"]
    assert spec.cluster["tls"] is True
    assert spec.cluster["workers_per_host"] == 2


def test_insecure_and_tls_files_flags(tmp_path):
    args = build_parser().parse_args(["run", "--scheduler", "tls://10.0.0.5:8786",
                                      "--tls-ca", "ca.pem", "--tls-cert", "c.pem",
                                      "--tls-key", "k.pem", "--insecure"])
    out = overrides(args)
    assert (out["cluster.tls_ca"], out["cluster.tls_cert"], out["cluster.tls_key"]) == (
        "ca.pem", "c.pem", "k.pem")
    assert out["cluster.tls"] is False


@pytest.mark.parametrize("change, field, fix", [
    ({"hosts": []}, "cluster.hosts", "hosts: [10.0.0.5"),
    ({"port": 70000}, "cluster.port", "port: 22"),
    ({"workers_per_host": 0}, "cluster.workers_per_host", "workers_per_host: 2"),
    ({"key": "/nonexistent/id"}, "cluster.key", "key: ~/.ssh/id_ed25519"),
    ({"known_hosts": "/nonexistent/kh"}, "cluster.known_hosts", "ssh-keyscan"),
    ({"tls": "yes"}, "cluster.tls", "tls: false"),
    ({"interface": ""}, "cluster.interface", "interface: eth0"),
    ({"tls_ca": "ca.pem"}, "cluster.tls_ca", "backend: attach"),
])
def test_bad_ssh_settings_name_field_and_fix(key, change, field, fix):
    cluster = {"backend": "ssh", "hosts": ["10.0.0.5"], "key": key, **change}
    with pytest.raises(SpecError) as err:
        specmod.load(specmod.demo_spec(), {"cluster": cluster})
    assert err.value.field == field and fix in str(err.value)


def test_ssh_settings_are_refused_for_other_backends():
    with pytest.raises(SpecError, match="only the 'ssh' backend uses it"):
        specmod.load(specmod.demo_spec(), {"cluster": {"backend": "local", "hosts": ["a"]}})


def test_a_profile_must_name_its_backend(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("hosts: [a]\n")
    with pytest.raises(SpecError, match="backend: ssh"):
        specmod.load_profile(path)


def test_attach_needs_all_tls_files_and_refuses_plain_tcp_off_host(tmp_path, caplog):
    with pytest.raises(ClusterError, match="needs all three files"):
        attach_security("tls://10.0.0.5:8786", {"tls_ca": "ca.pem"})
    with pytest.raises(ClusterError, match="no certificate was given"):
        attach_security("tls://10.0.0.5:8786", {})
    with pytest.raises(ClusterError, match="Fix: start the scheduler and workers with TLS"):
        attach_security("tcp://10.0.0.5:8786", {})
    assert attach_security("tcp://127.0.0.1:8786", {}) is None  # one machine: as before
    assert attach_security("tcp://10.0.0.5:8786", {}, tls=False) is None
    assert "PLAIN TCP" in caplog.text


def test_ec2_profile_validates_and_builds_ec2cluster_arguments():
    """dask-cloudprovider is not needed (nor imported) to build the arguments."""
    profile = specmod.load_profile(ROOT / "cluster" / "ec2.yaml")
    spec = specmod.load(specmod.demo_spec(), {"cluster": profile})
    args = ec2_arguments(spec.settings())
    assert args["n_workers"] == 4 and args["worker_options"]["nthreads"] == 2
    assert args["security"] is True and args["auto_shutdown"] is True
    # sweep's own keys stay with sweep; the safety nets of a killed driver go along
    assert "hours" not in args and "allow_from" not in args
    assert args["scheduler_options"] == {"idle_timeout": "30m"}
    assert args["worker_options"]["death_timeout"] == 60
    assert args["region"] == "eu-west-1" and args["instance_type"] == "c6i.large"
    assert args["env_vars"]["OMP_NUM_THREADS"] == "2"
    assert "key_name" not in args  # null in the profile: EC2Cluster's default


def test_ec2_profile_errors_name_the_fix():
    with pytest.raises(SpecError, match="needs at least a region"):
        specmod.load(specmod.demo_spec(), {"cluster": {"backend": "ec2", "ec2": {}}})
    with pytest.raises(SpecError, match="use one of"):
        specmod.load(specmod.demo_spec(), {"cluster": {"backend": "ec2",
                                                       "ec2": {"region": "x", "cpus": 4}}})
