import json

import torch

from rdistill.flops import hardware


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "measure_cpu_peak", lambda: calls.append(1) or 1.5e11)
    assert hardware.peak_flops("cpu") == 1.5e11
    assert hardware.peak_flops("cpu", torch.float32) == 1.5e11
    assert calls == [1]
    cached = json.loads((tmp_path / "rdistill" / "peak_flops.json").read_text())
    assert list(cached.values()) == [1.5e11]
    assert hardware.peak_flops("cpu", torch.bfloat16) is None


def test_gpu_table():
    assert hardware.gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert hardware.gpu_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert hardware.gpu_peak_flops("NVIDIA H200", "tf32") == 494e12
    assert hardware.gpu_peak_flops("Some Future GPU", "bf16") is None


def test_measured_peak_is_a_positive_rate():
    assert hardware.measure_cpu_peak(size=64, repeats=2) > 0
