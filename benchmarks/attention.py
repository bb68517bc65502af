"""Variable-length causal attention on packed batches: rdistill's Triton kernel against PyTorch's.

Providers, each given the same packed documents (bf16, causal, GQA):

- ``triton``: ``rdistill.kernels.varlen_attention(impl="triton")``;
- ``torch twin``: the same function with ``impl="torch"`` (length buckets, padded batched SDPA);
- ``varlen_attn``: ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention-2 inside PyTorch), if this
  torch has it; K/V are expanded to Hq heads outside the timing when it has no ``enable_gqa``;
- ``flex``: ``torch.compile(flex_attention)`` with a document-causal ``BlockMask`` on the [1, H, T, D]
  packed row (the mask is built outside the timing);
- ``sdpa padded``: ``scaled_dot_product_attention(is_causal=True)`` on the documents right-padded to
  the longest, [n, H, L, D] (the padding copy is outside the timing; K/V expanded outside the timing).

Batches: documents drawn (seed 0) from the library's named length distributions
(``rdistill.flops.distributions``, the ones ``rdistill flops --lengths`` counts) until the batch holds
exactly 16,384 or 65,536 tokens (the last document is cut to fit):

- ``ift-like``: lognormal, median 300 tokens (sigma 0.8), clipped to 16..4,096;
- ``reasoning-like``: lognormal, median 3,000 tokens (sigma 0.9), clipped to 64..32,768 (a document
  longer than the batch is cut to the batch).

Head dims 64 (Hq=32, Hkv=8) and 128 (Hq=16, Hkv=4), both 2,048 wide. Modes ``fwd`` and ``fwd+bwd``
(gradients of q, k, v for a fixed upstream gradient). Times are ``triton.testing.do_bench`` medians
(20th/80th percentiles kept in the CSV). TFLOP/s use the ledger's useful count for every provider:
``varlen_attention_flops(...)["useful_fwd"]`` (4 Hq D sum l_i (l_i + 1) / 2), plus ``useful_bwd``
(twice that) for fwd+bwd, so a provider that computes padding or masked tiles gets no credit for it.
Peak memory is ``torch.cuda.max_memory_allocated`` during one call above what was allocated before it
(inputs excluded). ``max_abs_diff`` is each provider's forward output against the Triton kernel's.

Rows are appended to ``<out-dir>/attention.csv`` (date, device, versions, machine: see
``benchmarks/_common.py``) and the run's table goes to ``<out-dir>/attention.md``, with the issue's bars
(reasoning-like, 16k tokens, D=128: forward >= 0.9x varlen_attn and >= 1.2x flex, forward+backward >=
0.8x varlen_attn). Without CUDA it prints why and exits 0.

    python -m benchmarks.attention [--out-dir benchmarks/results] [--seconds 400] [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks._common import (
    RESULTS, CsvLog, cuda_peak_bytes, cuda_times_ms, describe, environment, markdown_table, refuse_without_cuda,
)
from rdistill.flops.distributions import DISTRIBUTIONS, packed_lengths
from rdistill.kernels.varlen_attention import varlen_attention, varlen_attention_flops

TOKENS = (16_384, 65_536)
HEADS = {64: (32, 8), 128: (16, 4)}  # head dim: (Hq, Hkv)
PROVIDERS = ("triton", "varlen_attn", "flex", "sdpa padded", "torch twin")
MODES = ("fwd", "fwd+bwd")
BAR_CASE = ("reasoning-like", 16_384, 128)
FIELDS = [
    "distribution", "tokens", "docs", "max_seqlen", "head_dim", "heads_q", "heads_kv", "dtype", "provider", "mode",
    "ms_p50", "ms_p20", "ms_p80", "tflops", "peak_mib", "max_abs_diff", "note",
]
"""This benchmark's columns, after the environment's (``benchmarks._common.environment``)."""


@dataclass
class Case:
    distribution: str
    tokens: int
    head_dim: int
    lengths: list[int]

    @property
    def heads(self) -> tuple[int, int]:
        return HEADS[self.head_dim]

    def useful_flops(self, mode: str) -> int:
        f = varlen_attention_flops(self.lengths, self.heads[0], self.head_dim, causal=True, impl="triton")
        return f["useful_fwd"] + (f["useful_bwd"] if mode == "fwd+bwd" else 0)


def _inputs(case: Case, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hq, hkv = case.heads
    T, D = case.tokens, case.head_dim
    q, k, v = (torch.randn(T, h, D, device="cuda", dtype=dtype, generator=g) for h in (hq, hkv, hkv))
    cu = torch.tensor([0, *itertools.accumulate(case.lengths)], dtype=torch.int32, device="cuda")
    return q, k, v, cu


Provider = tuple[Callable[[], torch.Tensor], list[torch.Tensor], Callable[[torch.Tensor], torch.Tensor], str]


def _provider(name: str, case: Case, q, k, v, cu) -> Provider:
    """(run, leaves, to_packed, note): ``run()`` returns the provider's output, ``leaves`` get gradients,
    ``to_packed(out)`` maps the output back to [T, Hq, D] for the cross-check."""
    hq, hkv = case.heads
    groups = hq // hkv
    max_len = max(case.lengths)
    scale = case.head_dim**-0.5
    if name in ("triton", "torch twin"):
        impl = "triton" if name == "triton" else "torch"
        leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        run = lambda: varlen_attention(*leaves, cu, max_len, causal=True, softmax_scale=scale, impl=impl)  # noqa: E731
        return run, leaves, (lambda o: o), ""
    if name == "varlen_attn":
        from torch.nn.attention.varlen import varlen_attn

        params = inspect.signature(varlen_attn).parameters
        kw: dict = {"scale": scale} if "scale" in params else {}
        kw.update({"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)})
        note = ""
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
            kk, vv = k, v
        else:
            kk, vv = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
            note = "kv expanded to Hq heads"
        leaves = [x.detach().clone().requires_grad_() for x in (q, kk, vv)]
        return (lambda: varlen_attn(*leaves, cu, cu, max_len, max_len, **kw)), leaves, (lambda o: o), note
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        doc = torch.repeat_interleave(
            torch.arange(len(case.lengths), device="cuda"), torch.tensor(case.lengths, device="cuda")
        )

        def document_causal(b, h, q_idx, kv_idx):
            return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

        mask = create_block_mask(document_causal, None, None, case.tokens, case.tokens, device="cuda")
        flex = torch.compile(flex_attention, dynamic=False)
        leaves = [x.detach().transpose(0, 1)[None].contiguous().requires_grad_() for x in (q, k, v)]
        return (
            (lambda: flex(*leaves, block_mask=mask, scale=scale, enable_gqa=True)),
            leaves,
            (lambda o: o[0].transpose(0, 1)),
            "",
        )
    if name == "sdpa padded":
        starts = [0, *itertools.accumulate(case.lengths)][:-1]
        n = torch.tensor(case.lengths, device="cuda")
        ar = torch.arange(max_len, device="cuda")
        gather = torch.tensor(starts, device="cuda")[:, None] + torch.minimum(ar[None, :], n[:, None] - 1)
        valid = ar[None, :] < n[:, None]

        def padded(x: torch.Tensor, expand: int) -> torch.Tensor:
            y = x[gather].transpose(1, 2)  # [n, H, L, D]
            return (y.repeat_interleave(expand, 1) if expand > 1 else y).contiguous().requires_grad_()

        leaves = [padded(q, 1), padded(k, groups), padded(v, groups)]

        def to_packed(o: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(case.tokens, hq, case.head_dim, device="cuda", dtype=o.dtype)
            return out.index_copy(0, gather[valid], o.transpose(1, 2)[valid])

        run = lambda: F.scaled_dot_product_attention(*leaves, is_causal=True, scale=scale)  # noqa: E731
        return run, leaves, to_packed, f"{len(case.lengths)} x {max_len} padded, kv expanded"
    raise ValueError(f"unknown provider {name!r}")


def measure(
    case: Case, provider: str, dtype: torch.dtype, reference: torch.Tensor | None
) -> tuple[list[dict], torch.Tensor | None]:
    """Rows for both modes of one provider on one case (an error becomes a row with a note), and the
    provider's forward output as [T, Hq, D]."""
    q, k, v, cu = _inputs(case, dtype)
    rows, packed = [], None
    try:
        run, leaves, to_packed, note = _provider(provider, case, q, k, v, cu)
        with torch.no_grad():
            packed = to_packed(run())
        diff = (packed.float() - reference.float()).abs().max().item() if reference is not None else 0.0
        grad = torch.randn_like(run().detach())

        def forward() -> None:
            with torch.no_grad():
                run()

        def forward_backward() -> None:
            run().backward(grad)

        for mode, fn in (("fwd", forward), ("fwd+bwd", forward_backward)):
            ms = cuda_times_ms(fn, grad_to_none=leaves)
            for x in leaves:
                x.grad = None
            rows.append(
                dict(
                    provider=provider, mode=mode, ms_p50=ms[0], ms_p20=ms[1], ms_p80=ms[2],
                    tflops=case.useful_flops(mode) / (ms[0] * 1e-3) / 1e12, peak_mib=cuda_peak_bytes(fn)[0] / 2**20,
                    max_abs_diff=diff, note=note,
                )
            )
    except Exception as err:  # a baseline that fails (OOM, missing op, compile error) must not end the run
        rows = [dict(provider=provider, mode=m, note=f"error: {type(err).__name__}: {str(err)[:200]}") for m in MODES]
    finally:
        torch.cuda.empty_cache()
    return rows, packed


def _cases(quick: bool) -> list[Case]:
    combos = [(d, t, h) for d in DISTRIBUTIONS for t in TOKENS for h in HEADS]
    combos.sort(key=lambda c: c != BAR_CASE)  # the bar case first
    if quick:
        combos = combos[:1]
    return [Case(d, t, h, packed_lengths(d, t)) for d, t, h in combos]


def _bars(rows: list[dict]) -> list[str]:
    def tflops(provider: str, mode: str) -> float | None:
        for r in rows:
            here = (r["distribution"], r["tokens"], r["head_dim"]) == BAR_CASE
            if here and r["provider"] == provider and r["mode"] == mode:
                return r.get("tflops") or None
        return None

    lines = []
    for mode, other, bar in (("fwd", "varlen_attn", 0.9), ("fwd", "flex", 1.2), ("fwd+bwd", "varlen_attn", 0.8)):
        ours, theirs = tflops("triton", mode), tflops(other, mode)
        if ours and theirs:
            ratio = ours / theirs
            verdict = "met" if ratio >= bar else "NOT met"
            lines.append(f"- {mode}: triton / {other} = {ratio:.2f} (bar {bar}): {verdict}")
        else:
            lines.append(f"- {mode}: triton / {other}: not measured")
    return lines


def _num(r: dict, field: str, fmt: str) -> str:
    return format(r[field], fmt) if r.get(field) not in (None, "") else "-"


def write_markdown(path: Path, rows: list[dict], env: dict) -> None:
    table = []
    key = lambda r: (r["distribution"], r["tokens"], r["head_dim"], r["provider"])  # noqa: E731
    for _, group in itertools.groupby(rows, key=key):
        by_mode = {r["mode"]: r for r in group}
        f, b = by_mode.get("fwd", {}), by_mode.get("fwd+bwd", {})
        first = f or b
        table.append([
            first["distribution"], first["tokens"], first["docs"], first["max_seqlen"], first["head_dim"],
            first["provider"], _num(f, "ms_p50", ".3f"), _num(f, "tflops", ".1f"), _num(b, "ms_p50", ".3f"),
            _num(b, "tflops", ".1f"), _num(b, "peak_mib", ".0f"), first.get("note", ""),
        ])
    lines = [
        f"# Varlen causal attention, {env['device']}",
        "",
        f"{describe(env)} bf16, causal, packed documents. TFLOP/s from the useful count 4 Hq D sum l(l+1)/2 "
        "(x3 for fwd+bwd); peak MiB above the inputs. See benchmarks/attention.py.",
        "",
        "Bars (reasoning-like, 16k tokens, D=128):",
        *_bars(rows),
        "",
        *markdown_table(
            ["distribution", "tokens", "docs", "max len", "D", "provider", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms",
             "fwd+bwd TFLOP/s", "fwd+bwd peak MiB", "note"],
            table, align="lrrrrlrrrrrl",
        ),
    ]
    path.write_text("\n".join(lines) + "\n")


def run_benchmark(out_dir: Path, seconds: float, quick: bool = False) -> list[dict]:
    """Measure every case and provider while time is left; append CSV rows and (re)write the markdown
    after every provider, so that a run stopped from outside keeps what it measured."""
    deadline = time.monotonic() + seconds
    env = environment("cuda")
    log = CsvLog(out_dir / "attention.csv", [*env, *FIELDS])
    rows: list[dict] = []
    reference: torch.Tensor | None = None
    for case, provider in itertools.product(_cases(quick), PROVIDERS):
        if time.monotonic() > deadline:
            print(f"time is up ({seconds:.0f} s): the remaining measurements are skipped", flush=True)
            break
        if provider == PROVIDERS[0]:
            reference = None
        hq, hkv = case.heads
        common = dict(
            env, distribution=case.distribution, tokens=case.tokens, docs=len(case.lengths),
            max_seqlen=max(case.lengths), head_dim=case.head_dim, heads_q=hq, heads_kv=hkv, dtype="bf16",
        )
        measured, out = measure(case, provider, torch.bfloat16, reference)
        if provider == "triton":
            reference = out
        new = [{**common, **r} for r in measured]
        for r in new:
            print(
                f"{case.distribution:14} {case.tokens:6} D={case.head_dim:3} {provider:12} {r['mode']:8} "
                f"{r.get('tflops', float('nan')):7.1f} TFLOP/s  {r.get('peak_mib', float('nan')):8.0f} MiB  "
                f"diff {r.get('max_abs_diff', float('nan')):.2e}  {r.get('note', '')}",
                flush=True,
            )
        rows += new
        log.append(new)
        write_markdown(out_dir / "attention.md", rows, env)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir", type=Path, default=RESULTS, help="where attention.csv (appended) and attention.md go"
    )
    parser.add_argument(
        "--seconds", type=float, default=1800, help="start no new measurement after this long (a run takes minutes)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the issue's bar case (reasoning-like, 16k tokens, D=128)"
    )
    args = parser.parse_args(argv)
    refused = refuse_without_cuda(
        "benchmarks.attention", "on CPU, tests/test_attention_triton.py checks the kernels under TRITON_INTERPRET=1"
    )
    if refused is not None:
        return refused
    print(f"{platform.node()}: {torch.cuda.get_device_name()}", flush=True)
    run_benchmark(args.out_dir, args.seconds, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
