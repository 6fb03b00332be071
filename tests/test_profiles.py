"""Cluster profiles (cluster/*.yaml), --cluster and --set: parsed and validated, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from keras_sweep.cli import main as cli
from keras_sweep.exceptions import SpecError
from keras_sweep.spec import reading as specmod

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"data": {"dataset": "breast_cancer"}, "param_grid": {"model__neurons": [2, 4]},
        "cluster": {"backend": "local", "workers": 3, "memory_limit": "1 GiB"}}


def _load(*argv: str, spec: dict | None = None) -> specmod.Spec:
    args = cli.build_parser().parse_args(["run", "SPEC", *argv])
    return cli._load(spec or SPEC, args)


@pytest.mark.parametrize("profile", sorted((ROOT / "cluster").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_profile_validates(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the ssh profile names ~/.ssh files
    (tmp_path / ".ssh").mkdir()
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / ".ssh" / name).write_text("")
    spec = _load("--cluster", str(profile))
    assert spec.cluster["backend"] == specmod.read_profile(profile)["backend"]


def test_profile_replaces_other_backend_options_keeps_common_ones():
    spec = _load("--cluster", str(ROOT / "cluster" / "slurm.yaml"))
    assert spec.cluster["backend"] == "slurm" and spec.cluster["queue"] == "debug"
    assert spec.cluster["workers"] == 3          # common: kept from the spec
    assert "memory_limit" not in spec.cluster     # a local-only option: dropped


def test_backend_name_and_set_overrides():
    spec = _load("--cluster", "slurm", "--set", "cluster.jobs=7", "--set",
                 "cluster.job_extra_directives=['--qos=low']", "--set", "fit.batch_size=20")
    assert spec.cluster == {"backend": "slurm", "workers": 3, "jobs": 7,
                            "job_extra_directives": ["--qos=low"]}
    assert spec.fit["batch_size"] == 20


def test_set_needs_key_value():
    with pytest.raises(SpecError, match="--set"):
        _load("--set", "cluster.jobs")


def test_set_value_is_validated_like_the_spec():
    with pytest.raises(SpecError) as info:
        _load("--cluster", "slurm", "--set", "cluster.walltime=whenever")
    assert info.value.field == "cluster.walltime" and "HH:MM:SS" in str(info.value)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(SpecError) as info:
        _load("--cluster", "kubernetes")
    assert "local" in info.value.fix and "slurm" in info.value.fix


def test_profile_without_backend_is_refused(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("cluster: {workers: 2}\n")
    with pytest.raises(SpecError, match="backend"):
        _load("--cluster", str(bad))
