"""One prepared GPU check: the kernels' GPU tests in bf16 and their benchmarks, everything under OUT_DIR.

    python -m benchmarks.gpu_check OUT_DIR [--budget-s 480]

Each section is a function ``(out_dir, budget_s) -> str`` (a one-line verdict) that writes its
files, named after itself, into a work folder; ``SECTIONS`` lists them with their share of the budget.
The whole check is sized for under 8 minutes. The device tool brings back at most 8 files, so OUT_DIR
ends with the summary gpu_check.md, the sections' markdown tables, and gpu_check_files.tar.gz holding
every log and CSV. On a machine without CUDA the script says so and exits 0.

On a lent GPU machine (torch and triton are there; liger-kernel and cut-cross-entropy are not, and
nothing can be downloaded there), carry the two baselines as wheels in an ignored folder ``.whl`` and
install the checkout first, in one command:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
    python3 -m pip install -q --no-deps --no-build-isolation -e . && python3 -m benchmarks.gpu_check $OUT

Without the wheels the benchmark skips those two baselines and says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import REPO


def _run_logged(cmd: list[str], log: Path, timeout_s: float, env: dict[str, str] | None = None) -> int | str:
    """Run ``cmd`` in the repository with the Triton interpreter off (plus ``env``), output to ``log``;
    exit code or 'timed out'."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("w") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        try:
            return subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\n[gpu_check] timed out after {timeout_s:.0f} s\n")
            return "timed out"


def _tail(path: Path, lines: int = 3) -> str:
    return " | ".join(path.read_text().strip().splitlines()[-lines:]) if path.exists() else ""


def fused_ce(out_dir: Path, budget_s: float) -> str:
    """bf16 tests of the fused linear cross-entropy (tests/test_fused_ce_triton.py::TestGpu), then
    benchmarks.fused_ce on the GPU with what is left of the budget."""
    start = time.monotonic()
    log = out_dir / "fused_ce.pytest.log"
    rc = _run_logged(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fused_ce_triton.py", "-k", "TestGpu"],
        log, timeout_s=0.45 * budget_s,
    )
    tests = f"tests: {'passed' if rc == 0 else f'FAILED ({rc})'} [{_tail(log, 1)}]"
    left = budget_s - (time.monotonic() - start)
    bench_log = out_dir / "fused_ce.bench.log"
    bench_rc = _run_logged(
        [sys.executable, "-m", "benchmarks.fused_ce", "--device", "cuda", "--out-dir", str(out_dir),
         "--time-budget-s", f"{max(left - 90, 30):.0f}"],
        bench_log, timeout_s=max(left, 60),
    )
    return f"{tests}; benchmark: {'done' if bench_rc == 0 else f'FAILED ({bench_rc})'} (see fused_ce.gpu.md)"


def attention(out_dir: Path, budget_s: float) -> str:
    """GPU tests of the varlen attention (tests/test_attention_triton.py::TestGPU; one default kernel
    config each, to save compile time), then benchmarks.attention, the issue's bar case first."""
    start = time.monotonic()
    log = out_dir / "attention_pytest.txt"
    rc = _run_logged(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_attention_triton.py", "-k", "TestGPU"],
        log, timeout_s=max(0.4 * budget_s, 30), env={"RDISTILL_TRITON_AUTOTUNE": "0"},
    )
    tests = f"tests: {'passed' if rc == 0 else f'FAILED ({rc})'} [{_tail(log, 1)}]"
    left = budget_s - (time.monotonic() - start)
    bench_rc = _run_logged(
        [sys.executable, "-m", "benchmarks.attention", "--out-dir", str(out_dir),
         "--seconds", f"{max(left - 90, 30):.0f}"],
        out_dir / "attention_bench.txt", timeout_s=max(left, 60),
    )
    return f"{tests}; benchmark: {'done' if bench_rc == 0 else f'FAILED ({bench_rc})'} (see attention.md)"


SECTIONS: list[tuple[str, Callable[[Path, float], str], float]] = [
    ("fused_ce", fused_ce, 0.45),
    ("attention", attention, 0.55),
]
# what comes back from a device run as plain files; everything else travels in one archive, since
# the device tool returns at most 8 files
TOP_LEVEL_FILES = ("gpu_check.md", "fused_ce.gpu.md", "attention.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU tests and benchmarks of the Triton kernels, one script.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--budget-s", type=float, default=460.0, help="whole check, seconds (keep under 8 minutes)")
    parser.add_argument("--only", nargs="+", help="run only these sections")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to run (the CPU tests cover the interpreter).")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = args.out_dir / "work"
    work.mkdir(exist_ok=True)
    sections = [s for s in SECTIONS if not args.only or s[0] in args.only]
    total_share = sum(share for _, _, share in sections)
    summary = [f"# gpu_check on {torch.cuda.get_device_name()}, torch {torch.__version__}", ""]
    for name, fn, share in sections:
        budget = args.budget_s * share / total_share
        t0 = time.monotonic()
        try:
            verdict = fn(work, budget)
        except Exception as e:  # a broken section must not hide the others' results
            verdict = f"section raised {type(e).__name__}: {e}"
        line = f"- {name} ({time.monotonic() - t0:.0f} s of {budget:.0f}): {verdict}"
        print(line, flush=True)
        summary.append(line)
    (work / "gpu_check.md").write_text("\n".join(summary) + "\n")
    for name in TOP_LEVEL_FILES:
        if (work / name).exists():
            shutil.copy(work / name, args.out_dir / name)
    shutil.make_archive(str(args.out_dir / "gpu_check_files"), "gztar", root_dir=work)
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
