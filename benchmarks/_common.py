"""What the benchmark scripts share: the environment every CSV row starts with, the CSV log, markdown
tables, and CUDA timing and peak memory.

Versions and the device come from the library's ``rdistill.environment.capture`` (the function runs use
for results.json); this module adds the UTC date and the machine (host, CPU model, cores, memory).
"""

from __future__ import annotations

import csv
import gc
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from rdistill.environment import capture
from rdistill.io import atomic_writer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
QUANTILES = (0.5, 0.2, 0.8)
"""What ``cuda_times_ms`` returns: median, 20th and 80th percentile."""
_MACHINE_KEYS = ("host", "cpu", "cores", "memory")
_NOT_VERSIONS = ("date", "device", "threads", *_MACHINE_KEYS)


def machine() -> dict[str, str]:
    """Host name, CPU model (from /proc/cpuinfo where there is one), logical cores and physical memory."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    if "SC_PHYS_PAGES" in getattr(os, "sysconf_names", {}):
        memory = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    return {"host": platform.node(), "cpu": cpu, "cores": str(os.cpu_count()), "memory": memory}


def environment(device: torch.device | str, extra_packages: Sequence[str] = ()) -> dict[str, str | int]:
    """The columns every row of every benchmark starts with: ``date`` (UTC), then
    ``rdistill.environment.capture(device, extra_packages)`` (versions, ``device``, torch ``threads``;
    ``extra_packages`` as columns with ``_`` for ``-``), then ``machine()``."""
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"date": date, **capture(device, extra_packages=tuple(extra_packages)), **machine()}


def describe(env: Mapping[str, object]) -> str:
    """An ``environment()`` as one sentence, for the top of a markdown summary."""
    versions = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in env.items() if k not in _NOT_VERSIONS and v)
    return (
        f"{env['date']} on {env['host']}: {env['device']} ({env['cpu']}, {env['cores']} cores, {env['memory']}, "
        f"{env['threads']} torch threads); {versions}."
    )


class CsvLog:
    """A CSV file that rows are appended to, with ``fields`` as columns.

    The header is written once, when the file is new. A file recorded earlier with other columns is
    widened when the log is opened, before anything is measured: its header becomes its own columns
    followed by the new ones, every old row keeps its values (empty in the new columns), and the file
    is replaced atomically. Rows never land under the wrong columns and no recorded value is lost.
    """

    def __init__(self, path: Path, fields: Sequence[str]):
        self.path = Path(path)
        self.fields = list(fields)
        if self._has_rows():
            with self.path.open(newline="") as f:
                old = list(csv.DictReader(f))
                f.seek(0)
                header = next(csv.reader(f), [])
            if header != self.fields:
                self.fields = header + [c for c in self.fields if c not in header]
                with atomic_writer(self.path) as out:
                    writer = csv.DictWriter(out, fieldnames=self.fields)
                    writer.writeheader()
                    writer.writerows(old)

    def _has_rows(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Append ``rows`` (missing fields are left empty; an unknown field is an error)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self._has_rows()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """Lines of a markdown table. ``align`` has one letter per column, ``l`` or ``r`` (default: left)."""
    spec = align or "l" * len(header)
    if len(spec) != len(header):
        raise ValueError(f"align {align!r} needs one letter per column ({len(header)})")

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), line("---:" if a == "r" else "---" for a in spec), *(line(r) for r in rows)]


def refuse_without_cuda(script: str, hint: str = "") -> int | None:
    """None when ``script`` can time compiled kernels here. Otherwise it says why (and ``hint``) and
    returns the exit status: 0 without a CUDA device (nothing to do), 2 under TRITON_INTERPRET=1."""
    if not torch.cuda.is_available():
        print(f"{script}: no CUDA device, nothing measured{f' ({hint})' if hint else ''}")
        return 0
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print(f"{script}: TRITON_INTERPRET=1 would time Triton's interpreter; unset it", file=sys.stderr)
        return 2
    return None


def cuda_times_ms(fn: Callable[[], object], **do_bench_options) -> list[float]:
    """Milliseconds per call of ``fn`` at the ``QUANTILES`` (``triton.testing.do_bench``)."""
    from triton.testing import do_bench

    return list(do_bench(fn, quantiles=list(QUANTILES), **do_bench_options))


def cuda_peak_bytes(fn: Callable[[], object]) -> tuple[int, int]:
    """Peak CUDA memory while ``fn`` runs once: (above what was allocated before the call, in total)."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak - before, peak
