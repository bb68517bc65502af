"""Peak FLOP/s of the device a run trains on, for MFU and HFU.

MFU = useful (exact) FLOPs per second / peak; HFU = executed FLOPs per second / peak.

GPUs: dense (no sparsity) tensor-core peaks from the vendors' data sheets, by device name and dtype.
CPUs: no data sheet is reliable across machines, so the peak is measured, as the best of several short
square matmuls in the run's dtype (a CPU runs bf16 and fp16 matmuls at other speeds than fp32) at torch's
current thread count. It is cached in ~/.cache/rdistill/peak_flops.json keyed by processor, thread
count, torch version and dtype, but only when the machine was idle as it was measured (see
``machine_idle``): on the 2-core machines another torch process halves the measured peak, which then
shows as an MFU above 100%. A trainer that sees one asks for ``peak_flops(..., refresh=True)``: a fresh
measurement that replaces the cached value when it is higher (a peak is the fastest the device has been
seen to run, so a slower re-measurement only means the machine is busy now). An unknown device or dtype
gives None: MFU is reported as unknown rather than guessed.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from rdistill.io import write_json_atomic
from rdistill.model import DTYPES

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
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "rdistill" / "peak_flops.json"


def measure_cpu_peak(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 8,
                     pause_seconds: float = 0.02) -> float:
    """Best matmul FLOP/s in ``dtype`` at torch's current thread count over ``repeats`` trials, with a
    short pause between them so that a burst of other work is unlikely to cover every trial."""
    gen = torch.Generator().manual_seed(0)  # its own: measuring never moves the training's random state
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for i in range(repeats):
        if i:
            time.sleep(pause_seconds)
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def machine_idle() -> bool:
    """Whether nothing else competes for torch's threads: the 1-minute load average is at most the cores
    torch leaves free plus one (this process's own recent work counts in it). True where the system
    keeps no load average."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return True
    return load <= max((os.cpu_count() or 1) - torch.get_num_threads(), 0) + 1


def _processor() -> str:
    """The processor's model name (Linux leaves platform.processor() empty; machines here differ)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_peak_flops(dtype: torch.dtype = torch.float32, *, refresh: bool = False) -> float:
    """The measured CPU peak for ``dtype``: cached when this processor, thread count, torch and dtype
    were measured before, else measured now and cached if the machine was idle. ``refresh`` measures
    again and returns the higher of that and the cached value, caching it when it is higher."""
    key = (f"{_processor()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
           f"|dtype={DTYPE_NAMES[dtype]}")
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    cached = cache.get(key)
    if cached is not None and not refresh:
        return float(cached)
    idle = machine_idle()  # before measuring: the measurement's own load must not count
    value = measure_cpu_peak(dtype)
    persist = value > cached if cached is not None else idle
    if persist:
        cache[key] = value
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass  # a read-only home still gets the measured value, just not cached
    return value if cached is None else max(value, float(cached))


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, *, refresh: bool = False) -> float | None:
    """Peak dense FLOP/s for ``dtype`` on ``device``, or None when unknown. ``refresh`` measures a CPU
    peak again (see ``cpu_peak_flops``; for when an MFU above 100% shows the cached one too low); a GPU's
    comes from its data sheet either way."""
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_peak_flops(dtype, refresh=refresh) if dtype in DTYPE_NAMES else None
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


DEVICES: dict[str, str] = {
    "h200": "H200",
    "h100": "H100",
    "h100-pcie": "H100 PCIe",
    "a100": "A100",
    "l40s": "L40S",
    "a10g": "A10G",
    "rtx4090": "RTX 4090",
}
"""Short device names (``rdistill plan --device``) -> their entry in ``GPU_PEAKS``; ``cpu`` is this
machine's CPU, measured (``cpu_peak_flops``)."""


def named_peak_flops(device: str, dtype: str) -> float:
    """Peak dense FLOP/s of a device named in ``DEVICES`` (or ``cpu``) for a dtype name (bf16, fp16,
    fp32, tf32); ValueError naming the choices for an unknown device or a dtype it has no peak for."""
    if device == "cpu":
        if dtype not in DTYPES:
            raise ValueError(f"the CPU peak is measured in {', '.join(DTYPES)}, not {dtype!r}")
        return cpu_peak_flops(DTYPES[dtype])
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}, cpu")
    peak = gpu_peak_flops(DEVICES[device], dtype)
    if peak is None:
        raise ValueError(f"no {dtype} peak known for {device}; choose one of {', '.join(GPU_PEAKS[DEVICES[device]])}")
    return peak
