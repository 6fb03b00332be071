"""A seeded sweep across CPUs of different instruction sets (driver.session.CpuKinds)."""

from __future__ import annotations

import pytest

from keras_sweep.driver.session import CpuKinds
from keras_sweep.exceptions import ClusterError
from keras_sweep.protocol import INSTRUCTION_SETS, cpu_kind
from keras_sweep.store.records import FitRecord

AVX2 = "avx2 (AMD EPYC 7B13)"
AVX512 = "avx512 (Intel Xeon Platinum 8375C)"


def test_this_machines_cpu_kind_names_its_instruction_set_and_model():
    isa, _, model = cpu_kind().partition(" (")
    assert model.endswith(")") and len(model) > 1
    with open("/proc/cpuinfo") as info:
        flags = next(line for line in info if line.startswith("flags")).split()
    assert isa == next(name for flag, name in INSTRUCTION_SETS if flag in flags)


def test_workers_of_two_instruction_sets_warn_at_start_or_refuse(caplog):
    CpuKinds({"tcp://a:1": AVX2, "tcp://b:1": AVX2.replace("7B13", "7763")})
    assert "different CPUs" not in caplog.text  # same instruction set: nothing to say
    CpuKinds({"tcp://a:1": AVX2, "tcp://b:1": AVX512})
    assert "different CPUs" in caplog.text and "avx512 (Intel" in caplog.text
    with pytest.raises(ClusterError, match=r"CPUs differ(.|\n)*Fix: .*allow-mixed-cpus"):
        CpuKinds({"tcp://a:1": AVX2, "tcp://b:1": AVX512}, refuse=True)


def test_a_worker_of_another_kind_joining_later_is_noticed_at_its_first_fit(caplog):
    kinds = CpuKinds({"tcp://a:1": AVX2})
    kinds.on_fit(FitRecord(cpu=AVX2, worker="tcp://a:1"))
    kinds.on_fit(FitRecord(cpu=AVX512, worker="tcp://c:1", resumed=True))  # not run now
    assert not kinds.warned
    kinds.on_fit(FitRecord(cpu=AVX512, worker="tcp://c:1"))
    assert kinds.warned and "tcp://c:1" in caplog.text
