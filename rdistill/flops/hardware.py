"""Peak FLOP/s of the device a run trains on, for MFU and HFU.

MFU = useful (exact) FLOPs per second / peak; HFU = executed FLOPs per second / peak.

GPUs: dense (no sparsity) tensor-core peaks from the vendors' data sheets, by device name and dtype.
CPUs: no data sheet is reliable across machines, so the peak is measured once, as the best of a few
square fp32 matmuls at torch's current thread count, and cached in ~/.cache/rdistill/peak_flops.json
keyed by processor, thread count and torch version. An unknown device gives None: MFU is reported as
unknown rather than guessed.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from rdistill.io import write_json_atomic

# name fragment -> {dtype: dense FLOP/s}; the first fragment found in the device name wins
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12, "tf32": 494e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12, "tf32": 378e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12, "tf32": 494e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12, "tf32": 156e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "fp32": 91.6e12, "tf32": 183e12},
    "A10G": {"bf16": 70e12, "fp16": 70e12, "fp32": 31.2e12, "tf32": 35e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "fp32": 82.6e12, "tf32": 82.6e12},
}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "rdistill" / "peak_flops.json"


def measure_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s at torch's current thread count."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def cpu_peak_flops() -> float:
    """The measured CPU peak, from the cache when this processor, thread count and torch were seen."""
    key = f"{platform.processor() or platform.machine()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = measure_cpu_peak()
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass  # a read-only home still gets the measured value, just not cached
    return float(cache[key])


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> float | None:
    """Peak dense FLOP/s for ``dtype`` on ``device``, or None when unknown."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_peak_flops() if dtype == torch.float32 else None
    if device.type == "cuda":
        kind = DTYPE_NAMES.get(dtype)
        if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
            kind = "tf32"
        return gpu_peak_flops(torch.cuda.get_device_name(device), kind)
    return None


def gpu_peak_flops(name: str, kind: str | None) -> float | None:
    """Data-sheet peak of a GPU by (part of) its name and a dtype name (bf16, fp16, fp32, tf32)."""
    for fragment, peaks in GPU_PEAKS.items():
        if fragment in name:
            return peaks.get(kind) if kind else None
    return None
