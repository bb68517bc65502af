"""Fused LM head + cross-entropy: forward+backward time and peak memory against the baselines.

Implementations (each computes the summed loss and the gradients of hidden and weight, no bias):
    eager   torch: F.cross_entropy(hidden @ weight.T, labels), the [T, V] logits in the input dtype
    twin    rdistill.kernels.fused_linear_cross_entropy(impl="torch"), the chunked pure-PyTorch twin
    triton  rdistill.kernels.fused_linear_cross_entropy(impl="triton")                      (GPU only)
    liger   liger_kernel's LigerFusedLinearCrossEntropyLoss(reduction="sum")                (GPU only)
    cce     cut_cross_entropy.linear_cross_entropy(reduction="sum"), its defaults (gradient
            filtering on)                                                                   (GPU only)
Baselines are imported; a missing one is skipped with a message.

GPU (``--device cuda``): bf16, shapes Qwen2.5-0.5B (d=896, V=151,936), Qwen2.5-7B (d=3,584,
V=152,064), Llama-3-8B (d=4,096, V=128,256) at T in 4k/8k/16k/32k and 0% / 50% prompt tokens (prompt
rows carry ignore_index; documents of 512 tokens whose first half is prompt). The issue's bar shape
(Llama-3-8B, T=16k) runs first; later shapes are skipped once ``--time-budget-s`` is spent. Time is
``triton.testing.do_bench`` over one forward+backward (median, with the 20th and 80th percentiles);
peak memory is ``torch.cuda.max_memory_allocated`` during one forward+backward, above what was
allocated before it (the inputs) and in total. TFLOP/s = useful FLOPs (6 n_valid d V, from
``linear_ce_flops``) over the median time.

CPU (``--device cpu``): fp32, eager against the twin at the 0.5B shape, T=4,096, all rows valid (and
50% prompt). Each measurement runs in a fresh subprocess: it builds the inputs, runs one small
warm-up call, resets the kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``),
then times one forward+backward with a wall clock and reads VmHWM: peak memory = VmHWM minus the
resident set just before the call (inputs excluded, gradients included). torch allocates large
tensors with mmap and returns them on free, so the resident set follows torch's allocations. Eager and
twin alternate, ``--repeats`` times each; medians are reported. Bar: twin peak <= 1/5 of eager's at no
more than 1.3x eager's time.

Output: rows appended to ``OUT_DIR/fused_ce.csv`` (date, device, versions, machine: see
``benchmarks/_common.py``; one row per measurement) and a markdown summary of this run in
``OUT_DIR/fused_ce.{cpu,gpu}.md``.

    python -m benchmarks.fused_ce --device cpu                   # about 10 minutes on 2 busy cores
    python -m benchmarks.fused_ce --device cuda --time-budget-s 300
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import (
    REPO, RESULTS, CsvLog, cuda_peak_bytes, cuda_times_ms, describe, environment, markdown_table,
    refuse_without_cuda,
)
from rdistill.kernels.fused_linear_ce import fused_linear_cross_entropy, linear_ce_flops

IGNORE = -100
DOC_TOKENS = 512
MODELS = {
    "qwen2.5-0.5b": (896, 151_936),
    "qwen2.5-7b": (3_584, 152_064),
    "llama3-8b": (4_096, 128_256),
}
GPU_TOKENS = (4_096, 8_192, 16_384, 32_768)
PROMPT_FRACTIONS = (0.0, 0.5)
BAR_SHAPE = ("llama3-8b", 16_384)
BASELINE_PACKAGES = ("liger-kernel", "cut-cross-entropy")
CSV_FIELDS = (
    "impl", "model", "tokens", "hidden", "vocab", "prompt_fraction", "valid_rows", "dtype", "ms_median", "ms_p20",
    "ms_p80", "peak_gib_above_inputs", "peak_gib_total", "useful_tflops", "method", "note",
)
"""This benchmark's columns, after the environment's (``benchmarks._common.environment``)."""


def make_inputs(
    tokens: int, hidden: int, vocab: int, prompt_fraction: float, dtype: torch.dtype, device: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden [T, d] and weight [V, d] (leaves needing gradients) and labels [T] with prompt rows ignored."""
    g = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g, device=device, dtype=dtype).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g, device=device, dtype=dtype) * hidden**-0.5).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), generator=g, device=device)
    prompt = torch.arange(tokens, device=device) % DOC_TOKENS < int(prompt_fraction * DOC_TOKENS)
    return h, w, y.masked_fill(prompt, IGNORE)


def loss_functions() -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | str]:
    """Name -> summed-loss function, or a message saying why that baseline is missing."""
    fns: dict[str, Callable | str] = {
        "eager": lambda h, w, y: F.cross_entropy(h @ w.T, y, ignore_index=IGNORE, reduction="sum"),
        "twin": lambda h, w, y: fused_linear_cross_entropy(h, w, y, reduction="sum", impl="torch"),
        "triton": lambda h, w, y: fused_linear_cross_entropy(h, w, y, reduction="sum", impl="triton"),
    }
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")
        fns["liger"] = lambda h, w, y: liger(w, h, y)
    except Exception as e:  # an optional baseline that fails to import is skipped, whatever the reason
        fns["liger"] = f"liger-kernel not importable ({e})"
    try:
        from cut_cross_entropy import linear_cross_entropy

        fns["cce"] = lambda h, w, y: linear_cross_entropy(h, w, y, ignore_index=IGNORE, reduction="sum")
    except Exception as e:
        fns["cce"] = f"cut-cross-entropy not importable ({e})"
    return fns


def _fwd_bwd(fn: Callable, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    loss = fn(h, w, y)
    return (loss.detach(), *torch.autograd.grad(loss, (h, w)))


def _row(base: dict, **fields) -> dict:
    return {**base, **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in fields.items()}}


# --------------------------------------------------------------------------------------------------
# CPU: one measurement per subprocess, peak resident set from VmHWM
# --------------------------------------------------------------------------------------------------


def _proc_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def cpu_worker(impl: str, tokens: int, hidden: int, vocab: int, prompt_fraction: float) -> dict:
    """One forward+backward of ``impl`` in this process: seconds and peak bytes above the inputs."""
    fn = loss_functions()[impl]
    _fwd_bwd(fn, *make_inputs(64, hidden, 1_024, prompt_fraction, torch.float32, "cpu"))
    h, w, y = make_inputs(tokens, hidden, vocab, prompt_fraction, torch.float32, "cpu")
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    rss = _proc_kib("VmRSS")
    start = time.perf_counter()
    out = _fwd_bwd(fn, h, w, y)
    seconds = time.perf_counter() - start
    peak = (_proc_kib("VmHWM") - rss) * 1024
    return {"seconds": seconds, "peak_bytes": peak, "loss": out[0].item(), "valid_rows": int((y != IGNORE).sum())}


def run_cpu(args: argparse.Namespace, base: dict) -> list[dict]:
    d, V = MODELS["qwen2.5-0.5b"]
    rows, summary = [], []
    for frac in args.prompt_fractions:
        results: dict[str, list[dict]] = {"eager": [], "twin": []}
        for rep in range(args.repeats):
            for impl in results:
                cmd = [
                    sys.executable, "-m", "benchmarks.fused_ce", "--cpu-worker", impl, "--tokens", str(args.cpu_tokens),
                    "--prompt-fractions", str(frac), "--threads", str(args.threads),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[impl].append(r)
                print(f"[cpu] frac={frac} rep={rep} {impl}: {r['seconds']:.1f} s, peak {r['peak_bytes'] / 2**30:.2f} GiB", flush=True)
        med = {
            impl: (statistics.median(r["seconds"] for r in rs), statistics.median(r["peak_bytes"] for r in rs))
            for impl, rs in results.items()
        }
        for impl, rs in results.items():
            secs = sorted(r["seconds"] for r in rs)
            flops = linear_ce_flops(rs[0]["valid_rows"], d, V)
            rows.append(_row(
                base, impl=impl, model="qwen2.5-0.5b", tokens=args.cpu_tokens, hidden=d, vocab=V,
                prompt_fraction=frac, valid_rows=rs[0]["valid_rows"], dtype="float32",
                ms_median=1e3 * med[impl][0], ms_p20=1e3 * secs[0], ms_p80=1e3 * secs[-1],
                peak_gib_above_inputs=med[impl][1] / 2**30, peak_gib_total="",
                useful_tflops=(flops["useful_fwd"] + flops["useful_bwd"]) / med[impl][0] / 1e12,
                method=f"wall clock, VmHWM; median of {len(rs)} subprocesses (p20/p80 columns: min/max)",
                note=f"losses {[round(r['loss'], 2) for r in rs]}",
            ))
        time_ratio = med["twin"][0] / med["eager"][0]
        mem_ratio = med["twin"][1] / med["eager"][1]
        ok = mem_ratio <= 0.2 and time_ratio <= 1.3
        summary.append((frac, med, time_ratio, mem_ratio, ok))
    _write_cpu_markdown(args.out_dir / "fused_ce.cpu.md", base, args, summary)
    return rows


def _write_cpu_markdown(path: Path, base: dict, args: argparse.Namespace, summary: list) -> None:
    d, V = MODELS["qwen2.5-0.5b"]
    table = [
        [f"{frac:.0%}", f"{med['eager'][0]:.1f}", f"{med['twin'][0]:.1f}", f"{tr:.2f}x",
         f"{med['eager'][1] / 2**30:.2f}", f"{med['twin'][1] / 2**30:.2f}", f"{mr:.3f}", "met" if ok else "missed"]
        for frac, med, tr, mr, ok in summary
    ]
    lines = [
        "# Fused linear cross-entropy on CPU: twin against eager",
        "",
        f"{describe(base)} fp32, d={d}, V={V:,}, T={args.cpu_tokens:,}, summed loss, gradients of hidden and "
        f"weight. Median of {args.repeats} runs, each in its own process; peak = resident-set high-water mark "
        "above the inputs (gradients included).",
        "",
        *markdown_table(
            ["prompt", "eager s", "twin s", "time twin/eager", "eager peak GiB", "twin peak GiB", "memory twin/eager",
             "bar (<=0.2 memory, <=1.3 time)"],
            table, align="rrrrrrrl",
        ),
        "",
        "Command: `python -m benchmarks.fused_ce --device cpu`",
        "",
    ]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# GPU: do_bench times, torch.cuda peak memory
# --------------------------------------------------------------------------------------------------


def _gpu_measure(fn: Callable, h, w, y) -> dict:
    peak_above, peak_total = cuda_peak_bytes(lambda: _fwd_bwd(fn, h, w, y))
    ms = cuda_times_ms(lambda: _fwd_bwd(fn, h, w, y), warmup=100, rep=400)
    return {"ms": ms, "peak_above": peak_above, "peak_total": peak_total}


def _gpu_shapes() -> list[tuple[str, int, float]]:
    shapes = [(m, t, f) for m in MODELS for t in GPU_TOKENS for f in PROMPT_FRACTIONS]
    cost = {s: (s[:2] != BAR_SHAPE, s[1] * MODELS[s[0]][0] * MODELS[s[0]][1]) for s in shapes}
    return sorted(shapes, key=cost.__getitem__)


def run_gpu(args: argparse.Namespace, base: dict) -> list[dict]:
    fns = loss_functions()
    for name, fn in fns.items():
        if isinstance(fn, str):
            print(f"[gpu] skipping {name}: {fn}", flush=True)
    impls = [n for n in args.impls if not isinstance(fns.get(n, "unknown"), str)]
    deadline = time.monotonic() + args.time_budget_s
    rows, table = [], []
    for model, tokens, frac in _gpu_shapes():
        if time.monotonic() > deadline:
            print(f"[gpu] time budget spent; skipping {model} T={tokens} prompt={frac:.0%} and later shapes", flush=True)
            break
        d, V = MODELS[model]
        h, w, y = make_inputs(tokens, d, V, frac, torch.bfloat16, "cuda")
        n_valid = int((y != IGNORE).sum())
        flops = linear_ce_flops(n_valid, d, V, impl="triton")
        useful = flops["useful_fwd"] + flops["useful_bwd"]
        results = {}
        for impl in impls:
            note = ""
            try:
                r = _gpu_measure(fns[impl], h, w, y)
            except torch.cuda.OutOfMemoryError:
                r, note = None, "out of memory"
            except Exception as e:  # one failing implementation must not stop the others
                r, note = None, f"failed: {type(e).__name__}: {str(e)[:200]}"
            torch.cuda.empty_cache()
            results[impl] = (r, note)
            ms = r["ms"] if r else [float("nan")] * 3
            rows.append(_row(
                base, impl=impl, model=model, tokens=tokens, hidden=d, vocab=V, prompt_fraction=frac,
                valid_rows=n_valid, dtype="bfloat16", ms_median=ms[0], ms_p20=ms[1], ms_p80=ms[2],
                peak_gib_above_inputs=r["peak_above"] / 2**30 if r else "", peak_gib_total=r["peak_total"] / 2**30 if r else "",
                useful_tflops=useful / (ms[0] * 1e-3) / 1e12, method="do_bench median (p20, p80); max_memory_allocated",
                note=note,
            ))
            msg = f"{ms[0]:.2f} ms, peak +{r['peak_above'] / 2**30:.2f} GiB" if r else note
            print(f"[gpu] {model} T={tokens} prompt={frac:.0%} {impl}: {msg}", flush=True)
        table.append((model, tokens, frac, results))
        del h, w, y
    _write_gpu_markdown(args.out_dir / "fused_ce.gpu.md", base, table)
    return rows


def _write_gpu_markdown(path: Path, base: dict, table: list) -> None:
    cells = []
    for model, tokens, frac, results in table:
        eager = results.get("eager", (None, ""))[0]
        for impl, (r, note) in results.items():
            if r is None:
                cells.append([model, tokens, f"{frac:.0%}", impl, note, "", "", ""])
                continue
            tr = f"{r['ms'][0] / eager['ms'][0]:.2f}x" if eager else "-"
            mr = f"{r['peak_above'] / eager['peak_above']:.3f}" if eager else "-"
            peak = f"{r['peak_above'] / 2**30:.2f}"
            cells.append([model, tokens, f"{frac:.0%}", impl, f"{r['ms'][0]:.2f}", tr, peak, mr])
    header = ["model", "T", "prompt", "impl", "ms", "time / eager", "peak GiB", "memory / eager"]
    lines = [
        "# Fused linear cross-entropy on GPU",
        "",
        f"{describe(base)} bf16, summed loss, gradients of hidden and weight; time = do_bench median of "
        "forward+backward; memory = peak max_memory_allocated above the inputs. Ratios are against eager in the "
        "same row.",
        "",
        *markdown_table(header, cells, align="lrrlrrrr"),
        "",
        "Bar (issue 4): at llama3-8b, T=16,384, triton time / eager <= 1.0 with memory / eager <= 0.2.",
        "Command: `python -m benchmarks.fused_ce --device cuda`",
        "",
    ]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=3, help="CPU: subprocess runs per implementation")
    parser.add_argument("--cpu-tokens", "--tokens", dest="cpu_tokens", type=int, default=4_096)
    parser.add_argument("--prompt-fractions", type=float, nargs="+", default=list(PROMPT_FRACTIONS))
    parser.add_argument("--threads", type=int, default=2, help="CPU: torch threads")
    parser.add_argument("--impls", nargs="+", default=["eager", "twin", "triton", "liger", "cce"], help="GPU implementations")
    parser.add_argument("--time-budget-s", type=float, default=420.0, help="GPU: stop starting new shapes after this")
    parser.add_argument("--cpu-worker", choices=("eager", "twin"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cpu_worker:
        frac = args.prompt_fractions[0]
        print(json.dumps(cpu_worker(args.cpu_worker, args.cpu_tokens, *MODELS["qwen2.5-0.5b"], frac)))
        return 0
    if args.device == "cuda":
        refused = refuse_without_cuda("benchmarks.fused_ce", "run with --device cpu, or on a GPU machine")
        if refused is not None:
            return refused
    base = environment(args.device, BASELINE_PACKAGES)
    log = CsvLog(args.out_dir / "fused_ce.csv", [*base, *CSV_FIELDS])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_gpu(args, base) if args.device == "cuda" else run_cpu(args, base)
    log.append(rows)
    print(f"appended {len(rows)} rows to {log.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
