"""Peak memory of a training step: CUDA's allocator high-water mark on a GPU, the process's resident
set high-water mark (VmHWM) on a CPU.

On Linux, writing "5" to /proc/self/clear_refs resets VmHWM to the current resident set, so a step's
peak is its own. Where that is not allowed, the peak is the process's lifetime high-water mark
(``ru_maxrss``), which only ever grows: ``PeakMemory.resettable`` says which one was read.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """``reset()`` before a step, ``read()`` after it: the step's peak in bytes."""

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.resettable = self.cuda or self._try_reset()

    @staticmethod
    def _try_reset() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return _vm_hwm() is not None

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif self.resettable:
            self._try_reset()

    def read(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated())
        if self.resettable:
            hwm = _vm_hwm()
            if hwm is not None:
                return hwm
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
