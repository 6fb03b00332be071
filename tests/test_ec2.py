"""The ec2 backend against a real EC2 API: moto's server on a loopback port.

moto's instances never boot, so every run here ends on the path that leaks
instances in real life (no scheduler, Ctrl-C while waiting, a killed driver);
each test asserts what DescribeInstances then shows: nothing of the run left
running. moto's request recorder shows the exact calls (and that refusals make
none that create anything).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TESTS, sweep_env

pytest.importorskip("moto")
pytest.importorskip("dask_cloudprovider")
botocore_session = pytest.importorskip("botocore.session")

AMI = "ami-1e749f67"  # one of moto's images (Ubuntu 14.04)
DRIVER = str(TESTS / "ec2_driver.py")
CREATING = {"RunInstances", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress",
            "CreateTags"}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its request recorder writes moto_recording into its working folder
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=tmp_path_factory.mktemp("moto"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def aws(moto_endpoint, monkeypatch, tmp_path):
    """A fresh moto account; AWS settings in this process and for subprocesses."""
    _post(f"{moto_endpoint}/moto-api/reset")
    _post(f"{moto_endpoint}/moto-api/recorder/reset-recording")
    _post(f"{moto_endpoint}/moto-api/recorder/start-recording")
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield moto_endpoint
    _post(f"{moto_endpoint}/moto-api/recorder/stop-recording")


def _post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).close()


def _calls(endpoint: str) -> list[dict[str, str]]:
    """Every EC2 API call recorded since the test began, as its form fields."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording") as r:
        lines = r.read().decode().splitlines()
    calls = []
    for line in lines:
        body = json.loads(line).get("body")
        if body:
            fields = urllib.parse.parse_qs(base64.b64decode(body).decode())
            calls.append({k: v[0] for k, v in fields.items()})
    return calls


def _ec2():
    return botocore_session.get_session().create_client(
        "ec2", region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing")


def _instances() -> list[dict]:
    return [i for r in _ec2().describe_instances()["Reservations"] for i in r["Instances"]]


def _profile(tmp_path: Path, **ec2) -> Path:
    profile = {"backend": "ec2", "workers": 2, "ec2": {
        "region": "us-east-1", "instance_type": "c6i.large", "ami": AMI,
        "docker_image": "sweep-worker:test", "allow_from": "198.51.100.7/32", **ec2}}
    path = tmp_path / "ec2.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def _driver(tmp_path: Path, *args: str, timeout: int = 3) -> subprocess.Popen:
    env = {**sweep_env(), "DASK_SWEEP__CLUSTER__STARTUP_TIMEOUT": str(timeout)}
    # a child inherits an ignored SIGINT (as under `.ci/run &`), not a handler: set one
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([sys.executable, DRIVER, "demo", "--cluster",
                                 str(_profile(tmp_path)), "--output", str(tmp_path / "out"),
                                 "--no-progress", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait_for_instance(proc: subprocess.Popen, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        live = [i for i in _instances() if i["State"]["Name"] in ("pending", "running")]
        if live:
            return live[0]
        time.sleep(0.3)
    out, err = proc.communicate(timeout=30)
    pytest.fail(f"no instance appeared (exit {proc.returncode}):\n{out}\n{err}")


def _tags(instance: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_no_scheduler_in_time_terminates_every_instance_it_requested(aws, tmp_path):
    proc = _driver(tmp_path, "--yes")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err
    assert "did not answer within 3 s" in err and "every instance of the run was terminated" \
        in err and "Traceback" not in err
    instances = _instances()
    assert instances and all(i["State"]["Name"] == "terminated" for i in instances)
    calls = _calls(aws)
    [run] = [c for c in calls if c["Action"] == "RunInstances"]  # workers come after
    assert run["InstanceType"] == "c6i.large" and run["ImageId"] == AMI
    tags = {run[k]: run[k.replace(".Key", ".Value")] for k in run
            if k.startswith("TagSpecification.1.Tag.") and k.endswith(".Key")}
    assert tags["sweep:spec"] == "demo" and tags["sweep:run"] in err
    assert {"sweep:owner", "sweep:created", "sweep:expires"} <= set(tags)
    # the run's own group, opened to the driver's address only, then deleted
    [group] = [c for c in calls if c["Action"] == "CreateSecurityGroup"]
    assert group["GroupName"] == f"sweep-{tags['sweep:run']}"
    [ingress] = [c for c in calls if c["Action"] == "AuthorizeSecurityGroupIngress"]
    cidrs = {v for k, v in ingress.items() if k.endswith("CidrIp")}
    assert cidrs == {"198.51.100.7/32"}
    assert ingress["IpPermissions.1.FromPort"] == "8786" and \
        ingress["IpPermissions.1.ToPort"] == "8787"
    assert run["NetworkInterface.1.SecurityGroupId.1"] == ingress["GroupId"]
    assert any(c["Action"] == "DeleteSecurityGroup" for c in calls)
    # TLS material travels in the user data (dask-cloudprovider's temporary CA)
    user_data = base64.b64decode(run["UserData"]).decode()
    inherited = user_data.split('DASK_INTERNAL_INHERIT_CONFIG="')[1].split('"')[0]
    config = base64.b64decode(inherited).decode()
    assert "require-encryption" in config and "BEGIN CERTIFICATE" in config
    # and the scheduler's own settings: retries, one fit per free thread, every replica
    assert "allowed-failures" in config and "worker-saturation" in config
    assert "active-memory-manager" in config
    # safety nets of a killed driver: an idle scheduler closes, its instance terminates
    assert "--idle-timeout 30m" in user_data and run["InstanceInitiatedShutdownBehavior"] \
        == "terminate"


def test_private_ip_instances_get_no_public_address(aws, tmp_path, monkeypatch, capsys):
    """In this process: EC2Cluster's process-wide TLS settings are undone afterwards."""
    import dask.config
    import dask_cloudprovider.generic.vmcluster as vmcluster

    from keras_sweep.cli.main import main

    monkeypatch.setattr(vmcluster, "is_socket_open", lambda ip, port: False)
    path = _profile(tmp_path, use_private_ip=True, allow_from="10.1.2.3/32")
    with dask.config.set({"sweep.cluster.startup-timeout": 2}):
        code = main(["demo", "--cluster", str(path), "--output", str(tmp_path / "out"),
                     "--no-progress", "--yes"])
    assert code == 2 and "did not answer within 2 s" in capsys.readouterr().err
    [run] = [c for c in _calls(aws) if c["Action"] == "RunInstances"]
    assert run["NetworkInterface.1.AssociatePublicIpAddress"] == "false"
    assert all(i["State"]["Name"] == "terminated" for i in _instances())
    assert not dask.config.get("distributed.comm.require-encryption", False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_waiting_terminates_the_instances(aws, tmp_path, signum):
    proc = _driver(tmp_path, "--yes", timeout=600)
    _wait_for_instance(proc)
    time.sleep(1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert all(i["State"]["Name"] == "terminated" for i in _instances())


def test_killed_driver_then_cloud_cleanup_leaves_nothing_running(aws, tmp_path):
    proc = _driver(tmp_path, "--yes", timeout=600)
    instance = _wait_for_instance(proc)
    proc.kill()
    proc.communicate(timeout=30)
    run = _tags(instance)["sweep:run"]
    assert instance["State"]["Name"] in ("pending", "running")

    def cloud(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "keras_sweep", "cloud", *args],
                              capture_output=True, text=True, env=sweep_env(), timeout=120)

    listed = cloud("list")
    assert listed.returncode == 0 and instance["InstanceId"] in listed.stdout and run in \
        listed.stdout
    kept = cloud("cleanup", "--older-than", "1d")  # too young: left alone
    assert kept.returncode == 0 and "nothing to terminate" in kept.stdout
    assert any(i["State"]["Name"] == "running" for i in _instances())
    done = cloud("cleanup", "--run", run)
    assert done.returncode == 0 and f"terminated 1 instance(s) of run(s) {run}" in done.stdout
    assert all(i["State"]["Name"] == "terminated" for i in _instances())
    groups = _ec2().describe_security_groups()["SecurityGroups"]
    assert f"sweep-{run}" not in {g["GroupName"] for g in groups}
    assert "no instance of any sweep run" in cloud("list").stdout


@pytest.mark.parametrize("case, ec2, workers, env, expect", [
    ("above max_instances", {}, 20, {}, "above your limit sweep.ec2.max-instances = 10"),
    ("hours above max-hours", {"hours": 48}, 2, {}, "above your limit sweep.ec2.max-hours"),
    ("unknown region", {"region": "eu-nowhere-1"}, 2, {}, "not an AWS region with EC2"),
    ("no credentials", {}, 2, {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
     "no AWS credentials found"),
    ("image not found", {"ami": "ami-0123456789abcdef0"}, 2, {},
     "the image is not in this region"),
    ("type not offered", {"instance_type": "x9.mega"}, 2, {},
     "instance type x9.mega is not offered in us-east-1"),
    ("not confirmed", {}, 2, {"yes": None}, "without a yes"),
])
def test_refusals_exit_2_with_one_message_and_create_nothing(aws, tmp_path, monkeypatch, capsys,
                                                             case, ec2, workers, env, expect):
    from keras_sweep.cli.main import main

    profile = yaml.safe_load(_profile(tmp_path, **ec2).read_text())
    profile["workers"] = workers
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile))
    for key in env:
        if key != "yes":
            monkeypatch.delenv(key)
    args = ["demo", "--cluster", str(path), "--output", str(tmp_path / "out"),
            "--no-progress", *([] if "yes" in env else ["--yes"])]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expect in err and "Fix:" in err and "Traceback" not in err
    assert not {c["Action"] for c in _calls(aws)} & CREATING
    assert _instances() == []


def test_api_errors_name_the_fix_even_inside_ec2cluster_cleanup_errors():
    from botocore.exceptions import ClientError

    from keras_sweep.clusters.ec2.aws import api_error

    quota = ClientError({"Error": {"Code": "VcpuLimitExceeded", "Message": "You have "
                                   "requested more vCPU capacity than your limit"}},
                        "RunInstances")
    try:  # as EC2Cluster raises it: its clean-up fails, the API error is the context
        try:
            raise quota
        except ClientError:
            raise TypeError("'NoneType' object is not subscriptable")  # noqa: B904
    except TypeError as outer:
        error = api_error(outer, "start the instances")
    assert error is not None
    assert "VcpuLimitExceeded" in str(error) and "Service Quotas" in str(error)
    assert api_error(ValueError("x"), "do it") is None


def test_worker_versions_are_compared_with_the_drivers():
    from distributed import Client, LocalCluster

    from keras_sweep import ClusterError
    from keras_sweep.clusters.versions import check_workers, local_versions

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        check_workers(client, "pip install")  # the same Python: equal
        here = {**local_versions(), "distributed": "2023.1.0"}
        with pytest.raises(ClusterError, match=r"(?s)worker .*: package versions differ .*"
                           r"distributed: here 2023\.1\.0, there .*Fix: .*pip install "
                           r"distributed==2023\.1\.0"):
            check_workers(client, "pip install", here=here)


def test_requirements_pin_the_drivers_versions(capsys):
    from importlib import metadata

    from keras_sweep.cli.main import main

    assert main(["cloud", "requirements"]) == 0
    pins = dict(line.split("==") for line in capsys.readouterr().out.splitlines()
                if "==" in line)
    for name in ("dask", "distributed", "keras", "scikeras", "scikit-learn", "numpy"):
        assert pins[name] == metadata.version(name)
    assert os.path.exists(TESTS.parent / "cluster" / "ec2" / "Dockerfile")


def test_validate_checks_an_ec2_profile_without_any_aws_call(aws, tmp_path, capsys):
    from keras_sweep.cli.main import main
    from keras_sweep.spec import reading as specmod

    demo = str(tmp_path / "demo.yaml")
    Path(demo).write_text(yaml.safe_dump(specmod.demo_spec()))
    assert main(["validate", demo, "--cluster", str(_profile(tmp_path))]) == 0
    assert main(["validate", demo, "--cluster", str(_profile(tmp_path)), "--workers",
                 "12"]) == 2
    assert "12 workers need 13 instances" in capsys.readouterr().err
    assert _calls(aws) == []
