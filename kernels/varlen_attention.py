"""Variable-length causal attention over packed documents: a Triton FlashAttention and its PyTorch twin.

Computes, for every document ``i`` of a packed stream delimited by ``cu_seqlens``,
``softmax(q_i k_i^T * scale + causal_mask) v_i`` with grouped-query attention (``Hq`` a multiple of
``Hkv``; query head ``h`` reads key/value head ``h // (Hq / Hkv)``). No token attends outside its own
document, so the cost is ``sum_i l_i^2``, never ``(sum_i l_i)^2``.

Shapes: q [T, Hq, D], k and v [T, Hkv, D], cu_seqlens int32 [n+1], max_seqlen a host int (the longest
document, from the packer). Output [T, Hq, D], and with ``return_lse=True`` also the natural-log
log-sum-exp [Hq, T] in fp32 (not differentiable). Rows past ``cu_seqlens[-1]`` get zero output, zero
log-sum-exp and zero gradient.

Implementations (``impl=``):

- ``"triton"``: the FlashAttention-2 algorithm, one launch per pass, documents found through
  ``cu_seqlens`` inside the kernels. Forward: one program per (query block, document, query head) walks
  the key blocks up to the diagonal with an online softmax (exp2, fp32 statistics), never visiting a
  fully masked tile; the causal/length mask is applied only on the diagonal and the document's last
  block. It stores the fp32 log-sum-exp. Backward: a Triton pass computes ``delta = rowsum(dO * O)``;
  one kernel per (key block, document, KV head) recomputes ``P`` from the stored log-sum-exp for every
  query head of its group and every query block on or below the diagonal, accumulating dK and dV in
  fp32 registers (so GQA needs no atomics and results are bitwise reproducible); a third kernel per
  (query block, document, query head) recomputes ``P`` and ``dP`` and accumulates dQ. Tiles
  (``triton_blocks``): for fp16/bf16 forward 128 x 64, dK/dV 32 queries x 128 keys, dQ 128 x 32; for
  fp32 64 x 32, 32 x 32, 32 x 32 with ``tf32x3`` dots (fp32-accurate, unlike TF32). They are fixed so
  that the executed-FLOP count is a host formula; autotuning (GPU, fp16/bf16) picks only warps and
  pipeline stages, keyed by head dim, GQA ratio, causality and ``max_seqlen`` rounded up to a power of
  two (``RDISTILL_TRITON_AUTOTUNE=0``, read at call time, takes a default config instead). Head dims
  16, 32, 64, 128 (other sizes: a ValueError). The grids are sized from ``max_seqlen`` and the number of documents, both known
  on the host, so a call never syncs with the device; programs past a document's end return at once,
  and the longest-running query blocks are scheduled first. Under ``TRITON_INTERPRET=1`` (CPU; checked
  at call time) a single configuration is used and nothing is timed, and bf16 inputs are computed in
  fp32 because the interpreter gets bf16 arithmetic wrong.
- ``"torch"``: the CPU path and the reference. Documents are grouped into length buckets, right-padded
  to the bucket's longest, and each bucket is one batched causal ``scaled_dot_product_attention`` call;
  it executes each padded ``L x L`` score matrix in full (the mask is applied, not skipped). With
  ``return_lse=True`` it takes an explicit per-document fp32 path instead (the test oracle). It reads
  ``cu_seqlens`` on the host (a sync), which the Triton path never does.
- ``"flash_attn"``: ``flash_attn.flash_attn_varlen_func`` (FlashAttention-2), only if that package is
  installed (it is imported on first use); fp16/bf16 on CUDA, no ``return_lse``.
- ``"auto"`` (the default): the value of the environment variable ``RDISTILL_ATTN_IMPL`` if set (read
  at each call; how to force an implementation inside a Hugging Face model that calls this function
  without ``impl``); otherwise ``"triton"`` for CUDA tensors of a supported dtype and head dim when
  triton is importable, else ``"torch"``. ``resolve_impl`` says which one a call will run (the FLOP
  ledger needs it); it follows the contract shared with the fused loss (``kernels/_common.py``), and
  ``impl="triton"`` without triton raises ``TritonUnavailableError``.

Differences from the reference: the Triton kernels accumulate in fp32 but round ``P`` and ``dS`` to the
input dtype before their matmuls (as FlashAttention does), so fp16/bf16 results differ from an fp32
reference by about the same amount as PyTorch's own fp16/bf16 attention; the log-sum-exp of a row past
the end is 0 rather than -inf (as in the twin).

Memory beyond inputs, outputs and gradients: the log-sum-exp and ``delta``, 4 B x Hq x T each (T=65,536,
Hq=32: 8 MiB each), against the twin's padded copies of q, k, v and its [L, L] score buffers.

Set ``RDISTILL_KERNEL_DEBUG=1`` to check ``cu_seqlens`` against ``max_seqlen`` and ``T`` on every call
(read at each call; this syncs with the device; off by default).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._common import debugging, interpreting, resolve

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

IMPLS = ("torch", "triton", "flash_attn")
ENV_IMPL = "RDISTILL_ATTN_IMPL"
ENV_AUTOTUNE = "RDISTILL_TRITON_AUTOTUNE"
TRITON_HEAD_DIMS = (16, 32, 64, 128)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class TritonBlocks:
    """Tile shapes of the three Triton kernels (query rows x key rows per tile)."""

    fwd_m: int
    fwd_n: int
    dkdv_m: int
    dkdv_n: int
    dq_m: int
    dq_n: int


# 16-bit inputs: the shapes of Triton's fused-attention tutorial, which compile for sm80/sm90 at head
# dim 128 without register spills (forward 8 warps, backward 8 warps). fp32 inputs need 2x the shared
# memory and 3 MMAs per dot (tf32x3), so their tiles are 4x smaller.
TRITON_BLOCKS = TritonBlocks(fwd_m=128, fwd_n=64, dkdv_m=32, dkdv_n=128, dq_m=128, dq_n=32)
TRITON_BLOCKS_FP32 = TritonBlocks(fwd_m=64, fwd_n=32, dkdv_m=32, dkdv_n=32, dq_m=32, dq_n=32)


def triton_blocks(dtype: torch.dtype = torch.bfloat16) -> TritonBlocks:
    """The tile shapes the Triton kernels use for inputs of ``dtype``."""
    return TRITON_BLOCKS_FP32 if dtype == torch.float32 else TRITON_BLOCKS


@dataclass(frozen=True)
class FlashAttnBlocks:
    """The tile model used to estimate flash-attn's executed FLOPs (its FA2 sm80/sm90 kernel traits for
    head dims up to 128): forward 128 x 64, one backward kernel on 64 x 128 tiles doing 5 matmuls."""

    fwd_m: int = 128
    fwd_n: int = 64
    bwd_m: int = 64
    bwd_n: int = 128


def length_buckets(doc_lengths: Sequence[int]) -> list[tuple[list[int], int]]:
    """How the torch twin groups documents: (document indices, padded length) per group.

    Bucket b holds the lengths in (2^((b-1)/2), 2^(b/2)]: within a bucket the longest is under
    sqrt(2) times the shortest, so padding to it at most doubles a document's score area, and one
    batched SDPA call serves the whole bucket.
    """
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(doc_lengths):
        if n > 0:
            groups.setdefault(math.ceil(2 * math.log2(n)) if n > 1 else 0, []).append(i)
    return [(idx, max(doc_lengths[i] for i in idx)) for _, idx in sorted(groups.items())]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _row_block_tiles(length: int, block_rows: int, block_cols: int, causal: bool) -> int:
    """Tiles visited by a kernel whose programs own ``block_rows`` query rows and walk key blocks of
    ``block_cols`` up to the diagonal (forward, dQ)."""
    tiles = 0
    for m in range(_cdiv(length, block_rows)):
        hi = min((m + 1) * block_rows, length) if causal else length
        tiles += _cdiv(hi, block_cols)
    return tiles


def _col_block_tiles(length: int, block_rows: int, block_cols: int, causal: bool) -> int:
    """Tiles visited by a kernel whose programs own ``block_cols`` keys and walk query blocks of
    ``block_rows`` from the diagonal to the document's end (dK/dV)."""
    tiles = 0
    for n in range(_cdiv(length, block_cols)):
        lo = (n * block_cols // block_rows) * block_rows if causal else 0
        tiles += _cdiv(length - lo, block_rows)
    return tiles


def triton_tiles(
    doc_lengths: Sequence[int], *, causal: bool = True, blocks: TritonBlocks = TRITON_BLOCKS
) -> dict[str, int]:
    """Tiles per query head the Triton kernels visit: ``fwd``, ``dkdv`` and ``dq``.

    forward, dQ : per document, per query block m of ``fwd_m`` (``dq_m``) rows,
                  ceil(min((m+1) fwd_m, l) / fwd_n) key blocks (causal), ceil(l / fwd_n) (not causal)
    dK/dV       : per document, per key block n of ``dkdv_n`` keys, starting at the query block holding
                  row n dkdv_n (causal) or 0, ceil((l - lo) / dkdv_m) query blocks
    """
    return {
        "fwd": sum(_row_block_tiles(l, blocks.fwd_m, blocks.fwd_n, causal) for l in doc_lengths),
        "dkdv": sum(_col_block_tiles(l, blocks.dkdv_m, blocks.dkdv_n, causal) for l in doc_lengths),
        "dq": sum(_row_block_tiles(l, blocks.dq_m, blocks.dq_n, causal) for l in doc_lengths),
    }


def varlen_attention_flops(
    doc_lengths: Sequence[int],
    num_heads_q: int,
    head_dim: int,
    *,
    causal: bool = True,
    impl: str = "torch",
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, int]:
    """FLOPs of one call (integers), for the implementation that ran (``resolve_impl`` gives it).

    useful_fwd   = 4 Hq D sum_i l_i (l_i + 1) / 2   (QK^T and PV over the causal triangle; dense: l_i^2)
    useful_bwd   = 2 x useful_fwd                   (dQ, dK from dS; dV, dP from dO)

    executed, impl="torch": 4 Hq D sum_b n_b L_b^2 forward (each length bucket b of n_b documents is
        padded to L_b and its full square computed, then masked); backward 2 x that.
    executed, impl="triton": every visited tile is computed in full (diagonal tiles and the partial
        tiles at a document's end included; fully masked tiles are skipped), with the tile counts of
        ``triton_tiles`` and the shapes B = ``triton_blocks(dtype)`` (fp32 inputs use smaller tiles):
        forward  = Hq D tiles_fwd 4 B.fwd_m B.fwd_n                       (QK^T, PV)
        backward = Hq D (tiles_dkdv 8 B.dkdv_m B.dkdv_n                   (QK^T again, dP, dV, dK)
                       + tiles_dq 6 B.dq_m B.dq_n)                        (QK^T and dP again, dQ)
        e.g. one causal 16-bit document of 300 tokens: forward 3 query blocks x (2, 4, 5) = 11 tiles of
        128 x 64, 4 Hq D x 90,112 against 4 Hq D x 45,150 useful.
    executed, impl="flash_attn": an estimate from the tile model of ``FlashAttnBlocks`` (forward like
        the Triton forward; backward 10 Hq D bwd_m bwd_n per tile of its single dK/dV/dQ kernel).
    Softmax exponentials, scaling and ``delta = rowsum(dO * O)`` are not matmul FLOPs and are not
    counted. ``impl="auto"`` is refused: resolve it first (the answer depends on the device).
    """
    if impl == "auto":
        raise ValueError("varlen_attention_flops needs the implementation that ran: pass resolve_impl(impl, device)")
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r} for varlen_attention; choose one of {', '.join(IMPLS)}")
    lengths = [int(l) for l in doc_lengths]
    tri = sum(l * (l + 1) // 2 for l in lengths) if causal else sum(l * l for l in lengths)
    useful = 4 * num_heads_q * head_dim * tri
    if impl == "torch":
        executed_fwd = 4 * num_heads_q * head_dim * sum(len(idx) * L * L for idx, L in length_buckets(lengths))
        executed_bwd = 2 * executed_fwd
    elif impl == "triton":
        b = triton_blocks(dtype)
        t = triton_tiles(lengths, causal=causal, blocks=b)
        executed_fwd = num_heads_q * head_dim * 4 * b.fwd_m * b.fwd_n * t["fwd"]
        executed_bwd = num_heads_q * head_dim * (8 * b.dkdv_m * b.dkdv_n * t["dkdv"] + 6 * b.dq_m * b.dq_n * t["dq"])
    else:
        fb = FlashAttnBlocks()
        fwd_tiles = sum(_row_block_tiles(l, fb.fwd_m, fb.fwd_n, causal) for l in lengths)
        bwd_tiles = sum(_col_block_tiles(l, fb.bwd_m, fb.bwd_n, causal) for l in lengths)
        executed_fwd = num_heads_q * head_dim * 4 * fb.fwd_m * fb.fwd_n * fwd_tiles
        executed_bwd = num_heads_q * head_dim * 10 * fb.bwd_m * fb.bwd_n * bwd_tiles
    return {"useful_fwd": useful, "useful_bwd": 2 * useful, "executed_fwd": executed_fwd, "executed_bwd": executed_bwd}


def triton_available() -> bool:
    """Whether the Triton implementation can be used at all (triton importable)."""
    return triton is not None


def flash_attn_available() -> bool:
    """Whether the optional flash-attn package is installed (not imported by this check)."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_impl(
    impl: str, device: torch.device | str, *, head_dim: int | None = None, dtype: torch.dtype | None = None
) -> str:
    """The implementation ``varlen_attention(..., impl=impl)`` runs for tensors on ``device``.

    ``"auto"``: ``$RDISTILL_ATTN_IMPL`` if set (read now); else ``"triton"`` on CUDA when triton is
    importable and the head dim and dtype (when given) are ones the kernels support; else ``"torch"``.
    An explicit name is checked and returned: ValueError for an unknown one, TritonUnavailableError for
    "triton" without triton, ImportError for "flash_attn" without flash-attn.
    """
    name = resolve(
        impl, device, kernel="varlen_attention", impls=IMPLS, env_var=ENV_IMPL, triton_importable=triton is not None,
        head_dim=head_dim, dtype=dtype, triton_head_dims=TRITON_HEAD_DIMS, triton_dtypes=TRITON_DTYPES,
    )
    if name == "flash_attn" and not flash_attn_available():
        raise ImportError("impl='flash_attn' needs the flash-attn package; use impl='triton' or 'torch'")
    return name


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"q, k, v must be [T, H, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(f"k and v must be [T, Hkv, D] matching q [T, Hq, D]; got {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"Hq={q.shape[1]} must be a multiple of Hkv={k.shape[1]}")
    if cu_seqlens.ndim != 1 or cu_seqlens.dtype != torch.int32:
        raise ValueError("cu_seqlens must be a 1-D int32 tensor")


# ---------------------------------------------------------------------------------------------------
# Triton kernels and host launchers
# ---------------------------------------------------------------------------------------------------

if triton is not None:

    def _configs(pairs: Sequence[tuple[int, int]]) -> list:
        return [triton.Config({}, num_warps=w, num_stages=st) for w, st in pairs]

    _FWD_CONFIGS = _configs([(4, 2), (4, 3), (8, 2), (8, 3)])
    _BWD_CONFIGS = _configs([(4, 2), (8, 1), (8, 2), (8, 3)])
    _AUTOTUNE_KEY = ["SEQLEN_BUCKET", "D", "GROUPS", "IS_CAUSAL"]

    def _pruner(kernel: str):
        """Autotuning candidates, decided at call time: all of them for 16-bit inputs, unless
        ``$RDISTILL_TRITON_AUTOTUNE=0``; otherwise one default (fp32 always: its compiles are slow and it
        is not a training dtype here; and under ``TRITON_INTERPRET=1``, where nothing can be timed)."""

        def prune(configs, named_args, **kwargs):
            if named_args["Q"].dtype == torch.float32 or interpreting():
                warps, stages = 4, 1
            elif os.environ.get(ENV_AUTOTUNE, "1") != "0":
                return configs
            elif kernel == "fwd":
                warps, stages = (4 if kwargs["D"] <= 64 else 8), 3
            else:
                warps, stages = 8, 2
            return _configs([(warps, stages)])

        return {"early_config_prune": prune}

    def _timer(kernel_call, quantiles):
        """Autotuning's timer: the driver's own, except in the interpreter, where ``_pruner`` leaves a
        single config and nothing is timed. (Triton 3.8 and later never time a single pruned config;
        3.6 does, through the GPU driver, which the interpreter does not have.)"""
        if interpreting():
            return [0.0] * len(quantiles)
        return triton.runtime.driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)

    @triton.jit
    def _fwd_tiles(
        acc, l_i, m_i, q, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen, block_lo, block_hi,
        scale_log2, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    ):
        for b in range(block_lo, block_hi):
            start_n = b * BLOCK_N
            cols = start_n + offs_n
            k_ptrs = Kd + start_n.to(tl.int64) * stride_kt + k_offs
            v_ptrs = Vd + start_n.to(tl.int64) * stride_vt + v_offs
            if MASKED:
                k = tl.load(k_ptrs, mask=(cols < seqlen)[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=(cols < seqlen)[:, None], other=0.0)
            else:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
            if MASKED:
                keep = (cols < seqlen)[None, :]
                if IS_CAUSAL:
                    keep = keep & (rows[:, None] >= cols[None, :])
                s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        return acc, l_i, m_i

    @triton.autotune(configs=_FWD_CONFIGS, key=_AUTOTUNE_KEY, prune_configs_by=_pruner("fwd"), do_bench=_timer)
    @triton.jit
    def _attn_fwd(
        Q, K, V, O, LSE, CU, TILES,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
        T, num_row_blocks, scale_log2, SEQLEN_BUCKET,
        GROUPS: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_CAUSAL: tl.constexpr, COUNT_TILES: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_m = num_row_blocks - 1 - tl.program_id(0)  # longest-running blocks first
        doc = tl.program_id(1)
        head = tl.program_id(2)
        first = tl.load(CU + doc)
        seqlen = tl.load(CU + doc + 1) - first
        start_m = pid_m * BLOCK_M
        if start_m >= seqlen:
            return
        row0 = first.to(tl.int64) + start_m  # global index of this block's first row
        doc0 = first.to(tl.int64)
        kv_head = (head // GROUPS).to(tl.int64)
        offs = tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        rows = start_m + offs
        row_ok = rows < seqlen
        q_ptrs = Q + row0 * stride_qt + head.to(tl.int64) * stride_qh + (offs[:, None] * stride_qt + offs_d[None, :])
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        Kd = K + doc0 * stride_kt + kv_head * stride_kh
        Vd = V + doc0 * stride_vt + kv_head * stride_vh
        k_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
        v_offs = offs_n[:, None] * stride_vt + offs_d[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        if IS_CAUSAL:
            hi = tl.minimum(start_m + BLOCK_M, seqlen)
            num_free = start_m // BLOCK_N
        else:
            hi = seqlen
            num_free = seqlen // BLOCK_N
        num_blocks = tl.cdiv(hi, BLOCK_N)
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen, 0, num_free,
            scale_log2, BLOCK_N, False, IS_CAUSAL, PRECISION,
        )
        acc, l_i, m_i = _fwd_tiles(
            acc, l_i, m_i, q, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen, num_free,
            num_blocks, scale_log2, BLOCK_N, True, IS_CAUSAL, PRECISION,
        )
        out = acc / l_i[:, None]
        o_ptrs = O + row0 * stride_ot + head.to(tl.int64) * stride_oh + (offs[:, None] * stride_ot + offs_d[None, :])
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
        lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
        tl.store(LSE + head.to(tl.int64) * T + row0 + offs, lse, mask=row_ok)
        if COUNT_TILES:
            tl.atomic_add(TILES, num_blocks)

    @triton.jit
    def _bwd_delta(
        O, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, T, BLOCK_T: tl.constexpr, D: tl.constexpr
    ):
        row0 = tl.program_id(0).to(tl.int64) * BLOCK_T
        head = tl.program_id(1).to(tl.int64)
        offs = tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, D)
        ok = (row0 + offs < T)[:, None]
        o_ptrs = O + row0 * stride_ot + head * stride_oh + (offs[:, None] * stride_ot + offs_d[None, :])
        do_ptrs = DO + row0 * stride_dot + head * stride_doh + (offs[:, None] * stride_dot + offs_d[None, :])
        o = tl.load(o_ptrs, mask=ok, other=0.0)
        do = tl.load(do_ptrs, mask=ok, other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + head * T + row0 + offs, delta, mask=row0 + offs < T)

    @triton.jit
    def _dkdv_tiles(
        dk, dv, k, v, Qd, DOd, LSEd, DELTAd, stride_qt, stride_dot, cols, offs, offs_d, seqlen, lo,
        block_lo, block_hi, scale_log2,
        BLOCK_M: tl.constexpr, MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    ):
        for b in range(block_lo, block_hi):
            start_m = lo + b * BLOCK_M
            rows = start_m + offs
            q_ptrs = Qd + start_m.to(tl.int64) * stride_qt + (offs[:, None] * stride_qt + offs_d[None, :])
            do_ptrs = DOd + start_m.to(tl.int64) * stride_dot + (offs[:, None] * stride_dot + offs_d[None, :])
            if MASKED:
                ok = rows < seqlen
                q = tl.load(q_ptrs, mask=ok[:, None], other=0.0)
                do = tl.load(do_ptrs, mask=ok[:, None], other=0.0)
                lse = tl.load(LSEd + rows, mask=ok, other=0.0)
                delta = tl.load(DELTAd + rows, mask=ok, other=0.0)
            else:
                q = tl.load(q_ptrs)
                do = tl.load(do_ptrs)
                lse = tl.load(LSEd + rows)
                delta = tl.load(DELTAd + rows)
            s_t = tl.dot(k, tl.trans(q), input_precision=PRECISION) * scale_log2
            p_t = tl.exp2(s_t - (lse * 1.4426950408889634)[None, :])
            if MASKED:
                keep = (rows < seqlen)[None, :]
                if IS_CAUSAL:
                    keep = keep & (rows[None, :] >= cols[:, None])
                p_t = tl.where(keep, p_t, 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PRECISION)
        return dk, dv

    @triton.autotune(configs=_BWD_CONFIGS, key=_AUTOTUNE_KEY, prune_configs_by=_pruner("bwd"), do_bench=_timer)
    @triton.jit
    def _attn_bwd_dkdv(
        Q, K, V, DO, LSE, DELTA, DK, DV, CU, TILES,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
        stride_dkt, stride_dkh, stride_dvt, stride_dvh,
        T, num_col_blocks, scale_log2, softmax_scale, SEQLEN_BUCKET,
        GROUPS: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_CAUSAL: tl.constexpr, COUNT_TILES: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_n = num_col_blocks - 1 - tl.program_id(0)
        doc = tl.program_id(1)
        kv_head = tl.program_id(2).to(tl.int64)
        first = tl.load(CU + doc)
        seqlen = tl.load(CU + doc + 1) - first
        start_n = pid_n * BLOCK_N
        if start_n >= seqlen:
            return
        doc0 = first.to(tl.int64)
        col0 = doc0 + start_n
        offs_n = tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, D)
        cols = start_n + offs_n
        col_ok = (cols < seqlen)[:, None]
        k_ptrs = K + col0 * stride_kt + kv_head * stride_kh + (offs_n[:, None] * stride_kt + offs_d[None, :])
        v_ptrs = V + col0 * stride_vt + kv_head * stride_vh + (offs_n[:, None] * stride_vt + offs_d[None, :])
        k = tl.load(k_ptrs, mask=col_ok, other=0.0)
        v = tl.load(v_ptrs, mask=col_ok, other=0.0)
        dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
        if IS_CAUSAL:
            lo = (start_n // BLOCK_M) * BLOCK_M
        else:
            lo = 0
        num_blocks = tl.cdiv(seqlen - lo, BLOCK_M)
        num_full = (seqlen - lo) // BLOCK_M
        if IS_CAUSAL:
            num_diag = tl.minimum(tl.cdiv(start_n + BLOCK_N - lo, BLOCK_M), num_blocks)
        else:
            num_diag = 0
        num_tail = tl.maximum(num_diag, num_full)
        for g in range(GROUPS):
            head = kv_head * GROUPS + g
            Qd = Q + doc0 * stride_qt + head * stride_qh
            DOd = DO + doc0 * stride_dot + head * stride_doh
            LSEd = LSE + head * T + doc0
            DELTAd = DELTA + head * T + doc0
            dk, dv = _dkdv_tiles(
                dk, dv, k, v, Qd, DOd, LSEd, DELTAd, stride_qt, stride_dot, cols, offs_m, offs_d, seqlen,
                lo, 0, num_diag, scale_log2, BLOCK_M, True, IS_CAUSAL, PRECISION,
            )
            dk, dv = _dkdv_tiles(
                dk, dv, k, v, Qd, DOd, LSEd, DELTAd, stride_qt, stride_dot, cols, offs_m, offs_d, seqlen,
                lo, num_diag, num_tail, scale_log2, BLOCK_M, False, IS_CAUSAL, PRECISION,
            )
            dk, dv = _dkdv_tiles(
                dk, dv, k, v, Qd, DOd, LSEd, DELTAd, stride_qt, stride_dot, cols, offs_m, offs_d, seqlen,
                lo, num_tail, num_blocks, scale_log2, BLOCK_M, True, IS_CAUSAL, PRECISION,
            )
        dk *= softmax_scale
        dk_ptrs = DK + col0 * stride_dkt + kv_head * stride_dkh + (offs_n[:, None] * stride_dkt + offs_d[None, :])
        dv_ptrs = DV + col0 * stride_dvt + kv_head * stride_dvh + (offs_n[:, None] * stride_dvt + offs_d[None, :])
        tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=col_ok)
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=col_ok)
        if COUNT_TILES:
            tl.atomic_add(TILES + 1, num_blocks * GROUPS)

    @triton.jit
    def _dq_tiles(
        dq, q, do, lse_log2, delta, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen,
        block_lo, block_hi, scale_log2,
        BLOCK_N: tl.constexpr, MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    ):
        for b in range(block_lo, block_hi):
            start_n = b * BLOCK_N
            cols = start_n + offs_n
            k_ptrs = Kd + start_n.to(tl.int64) * stride_kt + k_offs
            v_ptrs = Vd + start_n.to(tl.int64) * stride_vt + v_offs
            if MASKED:
                k = tl.load(k_ptrs, mask=(cols < seqlen)[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=(cols < seqlen)[:, None], other=0.0)
            else:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2
            p = tl.exp2(s - lse_log2[:, None])
            if MASKED:
                keep = (cols < seqlen)[None, :]
                if IS_CAUSAL:
                    keep = keep & (rows[:, None] >= cols[None, :])
                p = tl.where(keep, p, 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        return dq

    @triton.autotune(configs=_BWD_CONFIGS, key=_AUTOTUNE_KEY, prune_configs_by=_pruner("bwd"), do_bench=_timer)
    @triton.jit
    def _attn_bwd_dq(
        Q, K, V, DO, LSE, DELTA, DQ, CU, TILES,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
        stride_dqt, stride_dqh,
        T, num_row_blocks, scale_log2, softmax_scale, SEQLEN_BUCKET,
        GROUPS: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        IS_CAUSAL: tl.constexpr, COUNT_TILES: tl.constexpr, PRECISION: tl.constexpr,
    ):
        pid_m = num_row_blocks - 1 - tl.program_id(0)
        doc = tl.program_id(1)
        head = tl.program_id(2).to(tl.int64)
        first = tl.load(CU + doc)
        seqlen = tl.load(CU + doc + 1) - first
        start_m = pid_m * BLOCK_M
        if start_m >= seqlen:
            return
        doc0 = first.to(tl.int64)
        row0 = doc0 + start_m
        kv_head = head // GROUPS
        offs = tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        rows = start_m + offs
        row_ok = rows < seqlen
        q_ptrs = Q + row0 * stride_qt + head * stride_qh + (offs[:, None] * stride_qt + offs_d[None, :])
        do_ptrs = DO + row0 * stride_dot + head * stride_doh + (offs[:, None] * stride_dot + offs_d[None, :])
        q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        do = tl.load(do_ptrs, mask=row_ok[:, None], other=0.0)
        lse_log2 = tl.load(LSE + head * T + row0 + offs, mask=row_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + head * T + row0 + offs, mask=row_ok, other=0.0)
        Kd = K + doc0 * stride_kt + kv_head * stride_kh
        Vd = V + doc0 * stride_vt + kv_head * stride_vh
        k_offs = offs_n[:, None] * stride_kt + offs_d[None, :]
        v_offs = offs_n[:, None] * stride_vt + offs_d[None, :]
        dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
        if IS_CAUSAL:
            hi = tl.minimum(start_m + BLOCK_M, seqlen)
            num_free = start_m // BLOCK_N
        else:
            hi = seqlen
            num_free = seqlen // BLOCK_N
        num_blocks = tl.cdiv(hi, BLOCK_N)
        dq = _dq_tiles(
            dq, q, do, lse_log2, delta, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen,
            0, num_free, scale_log2, BLOCK_N, False, IS_CAUSAL, PRECISION,
        )
        dq = _dq_tiles(
            dq, q, do, lse_log2, delta, Kd, Vd, k_offs, v_offs, stride_kt, stride_vt, rows, offs_n, seqlen,
            num_free, num_blocks, scale_log2, BLOCK_N, True, IS_CAUSAL, PRECISION,
        )
        dq *= softmax_scale
        dq_ptrs = DQ + row0 * stride_dqt + head * stride_dqh + (offs[:, None] * stride_dqt + offs_d[None, :])
        tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])
        if COUNT_TILES:
            tl.atomic_add(TILES + 2, num_blocks)


@dataclass(frozen=True)
class _Params:
    max_seqlen: int
    causal: bool
    softmax_scale: float


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _common_meta(q: torch.Tensor, k: torch.Tensor, p: _Params) -> dict:
    return dict(
        SEQLEN_BUCKET=triton.next_power_of_2(max(p.max_seqlen, 1)),
        GROUPS=q.shape[1] // k.shape[1],
        D=q.shape[2],
        IS_CAUSAL=p.causal,
        PRECISION=("tf32x3" if q.dtype == torch.float32 else "tf32"),
    )


def _triton_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, p: _Params,
    tiles: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [T, Hq, D] and log-sum-exp [Hq, T] (fp32). ``tiles`` (int32 [3]), if given, gets the
    number of tiles each program visited added to its first entry (for tests of the FLOP formula)."""
    T, num_heads_q, _ = q.shape
    b = triton_blocks(q.dtype)
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)  # contiguous: [T, Hq * D] is then a free view
    lse = torch.zeros(num_heads_q, T, dtype=torch.float32, device=q.device)
    num_docs = cu_seqlens.numel() - 1
    row_blocks = _cdiv(p.max_seqlen, b.fwd_m)
    if num_docs < 1 or row_blocks < 1 or T == 0:
        return out, lse
    _attn_fwd[(row_blocks, num_docs, num_heads_q)](
        q, k, v, out, lse, cu_seqlens, tiles,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        T, row_blocks, p.softmax_scale * _LOG2E,
        BLOCK_M=b.fwd_m, BLOCK_N=b.fwd_n, COUNT_TILES=tiles is not None, **_common_meta(q, k, p),
    )
    return out, lse


def _triton_backward(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    cu_seqlens: torch.Tensor, p: _Params, tiles: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (zero on rows past ``cu_seqlens[-1]``). ``tiles`` as in ``_triton_forward`` (entries 1, 2)."""
    T, num_heads_q, D = q.shape
    num_heads_kv = k.shape[1]
    b = triton_blocks(q.dtype)
    do = _last_dim_contiguous(do)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    num_docs = cu_seqlens.numel() - 1
    if num_docs < 1 or p.max_seqlen < 1 or T == 0:
        return dq, dk, dv
    delta = torch.empty(num_heads_q, T, dtype=torch.float32, device=q.device)
    block_t = 64
    _bwd_delta[(_cdiv(T, block_t), num_heads_q)](
        out, do, delta, out.stride(0), out.stride(1), do.stride(0), do.stride(1), T, BLOCK_T=block_t, D=D
    )
    meta = _common_meta(q, k, p)
    scale_log2 = p.softmax_scale * _LOG2E
    col_blocks = _cdiv(p.max_seqlen, b.dkdv_n)
    _attn_bwd_dkdv[(col_blocks, num_docs, num_heads_kv)](
        q, k, v, do, lse, delta, dk, dv, cu_seqlens, tiles,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), do.stride(0), do.stride(1),
        dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        T, col_blocks, scale_log2, p.softmax_scale,
        BLOCK_M=b.dkdv_m, BLOCK_N=b.dkdv_n, COUNT_TILES=tiles is not None, **meta,
    )
    row_blocks = _cdiv(p.max_seqlen, b.dq_m)
    _attn_bwd_dq[(row_blocks, num_docs, num_heads_q)](
        q, k, v, do, lse, delta, dq, cu_seqlens, tiles,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), do.stride(0), do.stride(1),
        dq.stride(0), dq.stride(1),
        T, row_blocks, scale_log2, p.softmax_scale,
        BLOCK_M=b.dq_m, BLOCK_N=b.dq_n, COUNT_TILES=tiles is not None, **meta,
    )
    return dq, dk, dv


class _VarlenAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, p: _Params):
        out, lse = _triton_forward(q, k, v, cu_seqlens, p)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.p = p
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = _triton_backward(grad_out, q, k, v, out, lse, cu_seqlens, ctx.p)
        return dq, dk, dv, None, None


def _check_triton(q: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(
            f"impl='triton' needs CUDA tensors (got {q.device}), or TRITON_INTERPRET=1 set before this module "
            "is imported (slow; for tests); use impl='torch' on CPU"
        )
    if q.shape[-1] not in TRITON_HEAD_DIMS:
        raise ValueError(f"impl='triton' supports head dims {TRITON_HEAD_DIMS}, got {q.shape[-1]}; use impl='torch'")
    if q.dtype not in TRITON_DTYPES:
        raise ValueError(f"impl='triton' supports {TRITON_DTYPES}, got {q.dtype}; use impl='torch'")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device}, q on {q.device}: move cu_seqlens with the batch")


def _validate_boundaries(cu_seqlens: torch.Tensor, max_seqlen: int, num_tokens: int) -> None:
    """Debug-only checks of cu_seqlens (syncs with the device)."""
    cu = cu_seqlens.tolist()
    lengths = [e - s for s, e in zip(cu[:-1], cu[1:])]
    if not cu or cu[0] != 0 or any(n < 0 for n in lengths) or cu[-1] > num_tokens:
        raise ValueError(f"cu_seqlens must start at 0, never decrease and end at most at T={num_tokens}; got {cu}")
    if lengths and max(lengths) > max_seqlen:
        raise ValueError(f"max_seqlen={max_seqlen} is shorter than the longest document ({max(lengths)})")


def _flash_attn(q, k, v, cu_seqlens, p: _Params) -> torch.Tensor:
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"impl='flash_attn' needs fp16/bf16 CUDA tensors, got {q.dtype} on {q.device}")
    from flash_attn import flash_attn_varlen_func

    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    out = flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, p.max_seqlen, p.max_seqlen,
        dropout_p=0.0, softmax_scale=p.softmax_scale, causal=p.causal,
    )
    inside = torch.arange(q.shape[0], device=q.device) < cu_seqlens[-1]
    return out * inside[:, None, None].to(out.dtype)


# ---------------------------------------------------------------------------------------------------
# PyTorch twin
# ---------------------------------------------------------------------------------------------------


def _torch_lse(q, k, v, bounds, causal, scale, groups):
    """Per-document attention in fp32 with its log-sum-exp (the slow, explicit oracle)."""
    out = torch.zeros_like(q)
    lse = torch.zeros(q.shape[1], q.shape[0], dtype=torch.float32, device=q.device)
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qi = q[s:e].transpose(0, 1).float()
        ki = k[s:e].transpose(0, 1).repeat_interleave(groups, dim=0).float()
        vi = v[s:e].transpose(0, 1).repeat_interleave(groups, dim=0).float()
        scores = (qi @ ki.transpose(1, 2)) * scale
        if causal:
            scores = scores.masked_fill(torch.ones_like(scores[0], dtype=torch.bool).triu(1), float("-inf"))
        lse[:, s:e] = torch.logsumexp(scores, dim=-1)
        out[s:e] = (torch.softmax(scores, dim=-1) @ vi).to(q.dtype).transpose(0, 1)
    return out, lse


def _torch_varlen(q, k, v, bounds, causal, scale, groups):
    """Documents grouped in length buckets, right-padded, one batched SDPA per bucket.

    Padding sits after each document's last token and the mask is causal, so a real query never sees
    a padded key; padded query rows are computed and dropped (they get no gradient).
    """
    starts, lengths = bounds[:-1], [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    out = torch.zeros_like(q)
    for idx, L in length_buckets(lengths):
        s = torch.tensor([starts[i] for i in idx], device=q.device)
        n = torch.tensor([lengths[i] for i in idx], device=q.device)
        ar = torch.arange(L, device=q.device)
        gather = s[:, None] + torch.minimum(ar[None, :], n[:, None] - 1)  # [nb, L], pads repeat the last token
        qb, kb, vb = (x[gather].transpose(1, 2) for x in (q, k, v))  # [nb, H, L, D]
        if groups > 1:
            kb, vb = kb.repeat_interleave(groups, dim=1), vb.repeat_interleave(groups, dim=1)
        if causal:
            ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale)
        else:
            pad = (ar[None, :] < n[:, None])[:, None, None, :]
            ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=pad, scale=scale)
        valid = ar[None, :] < n[:, None]
        out = out.index_copy(0, gather[valid], ob.transpose(1, 2)[valid])
    return out


# ---------------------------------------------------------------------------------------------------
# Public function
# ---------------------------------------------------------------------------------------------------


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    causal: bool = True,
    softmax_scale: float | None = None,
    return_lse: bool = False,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of each packed document with itself only. See the module docstring.

    Returns the output [T, Hq, D], or (output, log-sum-exp [Hq, T] fp32) with ``return_lse=True``.
    Rows past ``cu_seqlens[-1]`` (if ``T`` is larger) are left zero and get zero gradient.
    """
    _check(q, k, v, cu_seqlens)
    name = resolve_impl(impl, q.device, head_dim=q.shape[-1], dtype=q.dtype)
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[-1] ** -0.5
    groups = q.shape[1] // k.shape[1]
    if name == "torch":
        bounds = cu_seqlens.tolist()
        if return_lse:
            return _torch_lse(q, k, v, bounds, causal, scale, groups)
        return _torch_varlen(q, k, v, bounds, causal, scale, groups)
    if isinstance(max_seqlen, torch.Tensor):
        raise TypeError("max_seqlen must be a host int (PackedBatch.max_seqlen): a tensor would force a device sync")
    p = _Params(int(max_seqlen), bool(causal), scale)
    if name == "flash_attn":
        if return_lse:
            raise ValueError("impl='flash_attn' does not return the log-sum-exp here; use impl='triton' or 'torch'")
        return _flash_attn(q, k, v, cu_seqlens, p)
    _check_triton(q, cu_seqlens)
    if debugging():
        _validate_boundaries(cu_seqlens, p.max_seqlen, q.shape[0])
    if interpreting() and q.dtype == torch.bfloat16:
        out, lse = _VarlenAttention.apply(q.float(), k.float(), v.float(), cu_seqlens, p)
        out = out.to(q.dtype)
    else:
        q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
        out, lse = _VarlenAttention.apply(q, k, v, cu_seqlens, p)
    return (out, lse) if return_lse else out
