import json
import os
from types import SimpleNamespace

import pytest
import torch

from rdistill.flops import hardware


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """CPU peaks from a fake measurement (no real timing): ``measured.rates[dtype]`` is what the next
    measurement returns, ``measured.calls`` the dtypes measured, ``measured.cache()`` the cache file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hardware, "machine_idle", lambda: True)
    state = SimpleNamespace(rates={torch.float32: 1.5e11, torch.bfloat16: 3e11}, calls=[])

    def measure(dtype):
        state.calls.append(dtype)
        return state.rates[dtype]

    monkeypatch.setattr(hardware, "measure_cpu_peak", measure)
    state.cache = lambda: json.loads((tmp_path / "rdistill" / "peak_flops.json").read_text())
    return state


def test_cpu_peak_is_measured_once_per_dtype_and_cached(measured):
    assert hardware.peak_flops("cpu") == 1.5e11
    assert hardware.peak_flops("cpu", torch.float32) == 1.5e11
    assert hardware.peak_flops("cpu", torch.bfloat16) == 3e11
    assert hardware.peak_flops("cpu", torch.bfloat16) == 3e11
    assert measured.calls == [torch.float32, torch.bfloat16]
    cache = measured.cache()
    assert sorted(cache.values()) == [1.5e11, 3e11]
    assert {k.rsplit("|", 1)[1] for k in cache} == {"dtype=fp32", "dtype=bf16"}
    assert hardware.peak_flops("cpu", torch.float64) is None


def test_a_busy_machine_measures_but_does_not_cache(measured, monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "machine_idle", lambda: False)
    assert hardware.peak_flops("cpu") == 1.5e11
    assert hardware.peak_flops("cpu") == 1.5e11
    assert measured.calls == [torch.float32, torch.float32]
    assert not (tmp_path / "rdistill" / "peak_flops.json").exists()


def test_refresh_keeps_the_higher_peak_and_caches_it(measured, monkeypatch):
    assert hardware.peak_flops("cpu") == 1.5e11  # e.g. measured while another process ran
    measured.rates[torch.float32] = 3e11
    assert hardware.peak_flops("cpu", refresh=True) == 3e11
    assert list(measured.cache().values()) == [3e11]
    assert hardware.peak_flops("cpu") == 3e11 and len(measured.calls) == 2
    measured.rates[torch.float32] = 1e11  # busy now: a slower re-measurement never lowers the peak
    monkeypatch.setattr(hardware, "machine_idle", lambda: False)
    assert hardware.peak_flops("cpu", refresh=True) == 3e11
    assert list(measured.cache().values()) == [3e11]


def test_refresh_caches_a_higher_peak_even_on_a_busy_machine(measured, monkeypatch):
    hardware.peak_flops("cpu")
    monkeypatch.setattr(hardware, "machine_idle", lambda: False)  # this process's own training, say
    measured.rates[torch.float32] = 2e11
    assert hardware.peak_flops("cpu", refresh=True) == 2e11
    assert list(measured.cache().values()) == [2e11]


@pytest.mark.parametrize("load,cores,threads,idle", [
    (0.2, 2, 2, True), (1.0, 2, 2, True), (1.9, 2, 2, False), (4.0, 16, 4, True), (14.0, 16, 4, False),
])
def test_machine_idle_reads_the_load_average(monkeypatch, load, cores, threads, idle):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert hardware.machine_idle() is idle


def test_gpu_table():
    assert hardware.gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert hardware.gpu_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert hardware.gpu_peak_flops("NVIDIA H200", "tf32") == 494e12
    assert hardware.gpu_peak_flops("Some Future GPU", "bf16") is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_measured_peak_is_a_positive_rate(dtype):
    assert hardware.measure_cpu_peak(dtype, size=64, repeats=2, pause_seconds=0) > 0
