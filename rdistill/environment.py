"""The environment a measurement was taken in: versions, device, threads. One function, used by runs
(results.json) and benchmarks (every CSV row)."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from rdistill import __version__


def package_version(dist: str) -> str:
    """Installed version of a distribution, or "" when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name for a CUDA device (the current one by default, when CUDA is there), else the CPU's."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine() or "cpu"


def capture(device: torch.device | str | None = None, extra_packages: tuple[str, ...] = ()) -> dict[str, str | int]:
    """rdistill, torch, transformers, triton, python and CUDA versions, the device, torch's thread count,
    and the versions of ``extra_packages`` (e.g. benchmark baselines)."""
    env: dict[str, str | int] = {
        "rdistill": __version__,
        "torch": torch.__version__,
        "transformers": package_version("transformers"),
        "triton": package_version("triton"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda or "",
        "device": device_name(device),
        "threads": torch.get_num_threads(),
    }
    for dist in extra_packages:
        env[dist.replace("-", "_")] = package_version(dist)
    return env
