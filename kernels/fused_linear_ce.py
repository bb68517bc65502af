"""Fused LM head + cross-entropy that never materialises the full logits.

What it computes. For hidden [T, d], weight [V, d], optional bias [V] and labels [T], per row t whose
label is not ``ignore_index``:

    x_t    = hidden_t @ weight.T + bias                      (raw logits, never stored whole)
    z_t    = softcap * tanh(x_t / softcap)                   (only with ``softcap``; else z_t = x_t)
    lse_t  = logsumexp(z_t)
    loss_t = lse_t - z_t[label_t] + z_loss * lse_t ** 2

then ``reduction`` "sum", "mean" (over valid rows; 0 when there are none) or "none" ([T], 0 on ignored
rows), with gradients for hidden, weight and bias. ``return_lse=True`` also returns lse [T] in fp32
(0 on ignored rows, which are never computed; it carries no gradient).

Ignored rows are compacted away before any matmul: a prompt token costs nothing. Both
implementations walk the valid rows in chunks and, when gradients are needed, compute the gradients
during forward (so backward only scales them by the incoming gradient): per chunk the logits, the
softmax, d hidden = G @ weight, and d weight += G.T @ hidden accumulated in fp32 across chunks (G is
the gradient of the loss with respect to the logits). Backward matmuls therefore never recompute the
logits, except with ``reduction="none"``, whose per-row incoming gradient is only known in backward:
there forward computes the losses alone and backward runs the whole chunk walk again.

``impl="torch"``: the pure-PyTorch twin (the CPU path, the test oracle and the benchmark baseline).
Compaction is ``nonzero`` (a host sync: harmless on CPU). Per chunk one fp32 [rows, V] buffer is reused
for the logits, turned into G in place.

``impl="triton"``: four Triton kernels per chunk, no host sync anywhere: the valid rows are found on
the device (a stable argsort puts them first, their count stays a device scalar) and the launcher
walks the worst case, ceil(T / chunk) chunks, whose programs past the valid count return at once.
    _logits_kernel   z = hidden[rows] @ weight.T (+ bias, softcap) stored in the input dtype, with
                     each row's max and sum of exp per vocabulary tile (fp32) and its target logit (fp32)
    _lse_kernel      combines the per-tile partials into lse and the loss (all in fp32)
    _dhidden_kernel  d hidden[rows] = G @ weight, G rebuilt from z and lse tile by tile
    _dweight_kernel  d weight (fp32) += G.T @ hidden[rows] (and d bias), each tile owned by one
                     program: no atomics, deterministic; it loops over only the valid rows of the chunk
``impl="auto"`` (the default) is ``$RDISTILL_CE_IMPL`` if set (read at each call), else triton for CUDA
tensors of a supported dtype (fp16, bf16, fp32) when Triton is importable, else the twin;
``resolve_impl`` tells a caller which one runs. It follows the contract shared with the varlen attention
(``kernels/_common.py``): ``impl="triton"`` without triton raises ``TritonUnavailableError``.

How it differs from the reference (linear + F.cross_entropy): the loss, lse and the target logit come
from fp32 accumulators, not from rounded logits; the kernel stores the logits it reuses for G in the
input dtype (bf16 rounding of G, as eager has); d weight accumulates in fp32 over all rows and is
rounded to the weight's dtype once. The twin computes everything after the logits matmul in fp32.
Labels must lie in [0, V) or equal ``ignore_index``; nothing checks this on the device.

Memory beyond inputs and gradients is one chunk, sized from a byte budget (``chunk_rows=None``), plus
the gradients in fp32 from forward to backward (d weight 4 V d bytes, d hidden 4 T d bytes), which
backward scales by the incoming gradient and rounds to the inputs' dtypes once. Worked numbers:
- Triton, bf16, V = 128,256, d = 4,096: budget 1 GiB of stored logits -> 4,096 rows per chunk
  (4,096 x 128,256 x 2 B = 1.05 GB) plus per-tile partials 4,096 x 1,002 x 8 B = 33 MB. The d weight
  accumulator is 2.1 GB and is read and written once per chunk: at T = 16k, 4 chunks move 17 GB, about
  6 ms at 3 TB/s, beside 52 TFLOP of matmuls. Halving the budget halves the chunk and doubles that
  traffic. (Eager at T = 16k holds about three 4.2 GB [T, V] bf16 tensors at its backward peak.)
- Twin, fp32, V = 151,936 (Qwen2.5), d = 896: budget 256 MiB -> 441 rows per chunk (268 MB), d weight
  accumulator 545 MB; eager at T = 4,096 holds [T, V] fp32 tensors of 2.5 GB each (measured on CPU:
  twin peak 1.08 GiB against eager's 6.98 GiB, benchmarks/results/fused_ce.cpu.md).
The fp32 d weight accumulator sets a floor: with its bf16 cast in backward it is 6 V d bytes (3.2 GB at
V = 128,256, d = 4,096), a quarter of eager's ~12.6 GB peak at T = 16k. Only a design that never holds
a V x d fp32 buffer (recomputing the logits per vocabulary slice, 8 n d V instead of 6 n d V FLOPs)
goes lower; gradients computed in forward keep the FLOPs at the useful count instead.

FLOPs (``linear_ce_flops``): useful 2 n d V forward and 4 n d V backward for n valid rows. Executed is
what runs: for the twin the same (plus 2 n d V recompute with reduction="none"); for the Triton
kernels the tiles' padded extents (see ``linear_ce_flops`` and ``TILES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import interpreting, resolve

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None

IMPLS = ("torch", "triton")
ENV_IMPL = "RDISTILL_CE_IMPL"
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
REDUCTIONS = ("mean", "sum", "none")

CHUNK_BYTES = {"torch": 256 << 20, "triton": 1 << 30}
"""Byte budget of one chunk's logits buffer: fp32 for the twin, the input dtype (fp32 for fp32) for Triton."""

TILES = {
    "logits": (128, 128, 64),
    "dhidden": (128, 128, 64),
    "dweight": (128, 128, 64),
}
"""(BLOCK_M, BLOCK_N, BLOCK_K) of each matmul kernel: logits [rows x V, over d], dhidden [rows x d, over
V], dweight [V x d, over rows]. Fixed (no autotuning) so that ``linear_ce_flops`` counts exactly the
tiles that run."""

ROW_ALIGN = 128
"""A Triton chunk's rows are a multiple of this, itself a multiple of the logits and dhidden BLOCK_M
and the dweight BLOCK_K, so only the last chunk's last row tile is partial."""
_LSE_BLOCK_ROWS = 32
_LSE_BLOCK_TILES = 128
_GROUP_M = 8


def resolve_impl(
    impl: str, device: torch.device | str, *, head_dim: int | None = None, dtype: torch.dtype | None = None
) -> str:
    """The implementation ``fused_linear_cross_entropy(..., impl=impl)`` runs on tensors of ``device``.

    ``"auto"``: ``$RDISTILL_CE_IMPL`` if set (read now); else ``"triton"`` on CUDA when triton is
    importable and the dtype (when given) is one the kernels support; else ``"torch"`` (also under
    TRITON_INTERPRET=1: the interpreter is for tests, not for training on CPU). ``head_dim`` is accepted
    for the signature every kernel shares; the loss has no head dim. An explicit name is checked and
    returned: ValueError for an unknown one, TritonUnavailableError for "triton" without triton.
    """
    return resolve(
        impl, device, kernel="fused_linear_cross_entropy", impls=IMPLS, env_var=ENV_IMPL,
        triton_importable=triton is not None, head_dim=head_dim, dtype=dtype, triton_dtypes=TRITON_DTYPES,
    )


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def linear_ce_flops(
    num_valid_rows: int,
    hidden_dim: int,
    vocab_size: int,
    *,
    reduction: str = "sum",
    impl: str = "torch",
) -> dict[str, int]:
    """FLOPs of one training call (forward + backward with gradients), as integers.

    n = ``num_valid_rows`` (a host count, e.g. PackedBatch.num_loss_tokens), d = ``hidden_dim``,
    V = ``vocab_size``; ``impl`` must be resolved ("torch" or "triton", see ``resolve_impl``).

    useful_fwd = 2 n d V (logits), useful_bwd = 4 n d V (d hidden and d weight), for both impls.
    Both compute the gradient matmuls during forward; they are reported as backward all the same.
    With reduction="none" backward recomputes the logits: + 2 n d V executed in backward.

    torch:  executed = useful (+ the recompute).
    triton: each matmul runs whole tiles (BM, BN, BK = ``TILES[kernel]``); with ⌈x⌉_b = x rounded
            up to a multiple of b, and chunks that are multiples of every BM and BK:
              logits   2 ⌈n⌉_BM ⌈V⌉_BN ⌈d⌉_BK     (executed_fwd; again in backward for "none")
              dhidden  2 ⌈n⌉_BM ⌈d⌉_BN ⌈V⌉_BK
              dweight  2 ⌈V⌉_BM ⌈d⌉_BN ⌈n⌉_BK
            executed_bwd = dhidden + dweight (+ logits for "none"). The softmax, exponentials,
            bias, softcap and z-loss are not matmul FLOPs and are not counted. The counts do not
            depend on the chunk size.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; pass a resolved impl, one of {', '.join(IMPLS)} (see resolve_impl)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    n, d, V = num_valid_rows, hidden_dim, vocab_size
    useful = 2 * n * d * V
    if impl == "torch":
        logits, dhidden, dweight = useful, useful, useful
    else:
        (m1, n1, k1), (m2, n2, k2), (m3, n3, k3) = (TILES[k] for k in ("logits", "dhidden", "dweight"))
        logits = 2 * _ceil_to(n, m1) * _ceil_to(V, n1) * _ceil_to(d, k1)
        dhidden = 2 * _ceil_to(n, m2) * _ceil_to(d, n2) * _ceil_to(V, k2)
        dweight = 2 * _ceil_to(V, m3) * _ceil_to(d, n3) * _ceil_to(n, k3)
    recompute = logits if reduction == "none" else 0
    return {
        "useful_fwd": useful,
        "useful_bwd": 2 * useful,
        "executed_fwd": logits,
        "executed_bwd": dhidden + dweight + recompute,
    }


@dataclass(frozen=True)
class _Params:
    """The non-tensor options of one call, travelling as one object through the autograd Function."""

    ignore_index: int
    reduction: str
    z_loss: float
    softcap: float | None
    chunk_rows: int | None
    impl: str
    grad_enabled: bool


@dataclass(frozen=True)
class _Walk:
    """What one walk over the valid rows is asked: its inputs, and ``want``, which gradients to compute
    (hidden, weight, bias); they are of the reduced loss, or of sum_t grad_rows[t] * loss_t when
    ``grad_rows`` is given."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    labels: torch.Tensor
    want: tuple[bool, bool, bool]
    grad_rows: torch.Tensor | None = None


@dataclass
class _Result:
    """What a chunk walk returns: per-row losses and lse (fp32, 0 on ignored rows), the valid count
    (host int for the twin, int32 device scalar for Triton), and the wanted gradients of the reduced
    loss (per-row scaled with ``grad_rows``), all three in fp32 (fp64 for the twin on fp64 inputs),
    so that backward rounds each to its input's dtype once, after scaling by the incoming gradient."""

    losses: torch.Tensor
    lse: torch.Tensor
    count: int | torch.Tensor
    d_hidden: torch.Tensor | None
    d_weight: torch.Tensor | None
    d_bias: torch.Tensor | None


# ---------------------------------------------------------------------------------------------------
# Triton kernels and launcher
# ---------------------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _grouped_tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
        """Program id -> (tile row, tile column), GROUP_M tile rows at a time so that neighbours share
        operand tiles in L2."""
        width = GROUP_M * num_n
        group = pid // width
        first_m = group * GROUP_M
        size_m = tl.minimum(num_m - first_m, GROUP_M)
        pid_m = first_m + (pid % width) % size_m
        pid_n = (pid % width) // size_m
        return pid_m, pid_n

    @triton.jit
    def _tanh(x):
        """tanh from one exp, stable for any x (the interpreter has no libdevice)."""
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0, -t, t)

    @triton.jit
    def _logit_grad(z, lse, coef, scale, is_target, softcap, HAS_SOFTCAP: tl.constexpr):
        """d loss / d raw logit: scale * [softmax * (1 + 2 z_loss lse) - onehot] * softcap'."""
        g = tl.exp(z - lse) * coef - tl.where(is_target, scale, 0.0)
        if HAS_SOFTCAP:
            t = z / softcap
            g = g * (1.0 - t * t)
        return g

    @triton.jit
    def _logits_kernel(
        h_ptr, w_ptr, b_ptr, order_ptr, label_ptr, count_ptr,
        z_ptr, part_m_ptr, part_s_ptr, zy_ptr,
        start, C, V, D, NT,
        stride_ht, stride_hd, stride_wv, stride_wd,
        softcap,
        HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):
        pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(C, BLOCK_M), NT, GROUP_M)
        count = tl.load(count_ptr)
        if start + pid_m * BLOCK_M >= count:
            return
        offs_r = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_ok = (start + offs_r < count) & (offs_r < C)
        rows = tl.load(order_ptr + start + offs_r, mask=row_ok, other=0).to(tl.int64)
        offs_v = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        v_ok = offs_v < V
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            k = k0 + offs_k
            a = tl.load(
                h_ptr + rows[:, None] * stride_ht + k[None, :] * stride_hd,
                mask=row_ok[:, None] & (k[None, :] < D), other=0.0,
            )
            b = tl.load(
                w_ptr + offs_v[None, :].to(tl.int64) * stride_wv + k[:, None] * stride_wd,
                mask=v_ok[None, :] & (k[:, None] < D), other=0.0,
            )
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_v, mask=v_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_SOFTCAP:
            acc = softcap * _tanh(acc / softcap)
        tl.store(
            z_ptr + offs_r[:, None] * V + offs_v[None, :],
            acc.to(z_ptr.dtype.element_ty), mask=row_ok[:, None] & v_ok[None, :],
        )
        masked = tl.where(v_ok[None, :], acc, float("-inf"))
        tile_max = tl.max(masked, axis=1)
        tile_sum = tl.sum(tl.exp(masked - tile_max[:, None]), axis=1)
        tl.store(part_m_ptr + offs_r * NT + pid_n, tile_max, mask=row_ok)
        tl.store(part_s_ptr + offs_r * NT + pid_n, tile_sum, mask=row_ok)
        y = tl.load(label_ptr + rows, mask=row_ok, other=-1)
        zy = tl.sum(tl.where(offs_v[None, :] == y[:, None], acc, 0.0), axis=1)
        in_tile = (y >= pid_n * BLOCK_N) & (y < pid_n * BLOCK_N + BLOCK_N)
        tl.store(zy_ptr + offs_r, zy, mask=row_ok & in_tile)

    @triton.jit
    def _lse_kernel(
        order_ptr, label_ptr, count_ptr, part_m_ptr, part_s_ptr, zy_ptr, scale_ptr,
        loss_ptr, lse_ptr, lse_c_ptr, scale_c_ptr, y_c_ptr,
        start, C, NT, z_loss,
        SCALE_PER_ROW: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        offs_r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        in_chunk = offs_r < C
        count = tl.load(count_ptr)
        row_ok = in_chunk & (start + offs_r < count)
        rows = tl.load(order_ptr + start + offs_r, mask=row_ok, other=0).to(tl.int64)
        run_max = tl.full((BLOCK_R,), float("-inf"), dtype=tl.float32)
        run_sum = tl.zeros((BLOCK_R,), dtype=tl.float32)
        for t0 in range(0, NT, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            ptrs = offs_r[:, None] * NT + t[None, :]
            mask = row_ok[:, None] & (t[None, :] < NT)
            m = tl.load(part_m_ptr + ptrs, mask=mask, other=float("-inf"))
            s = tl.load(part_s_ptr + ptrs, mask=mask, other=0.0)
            m = tl.where(row_ok[:, None], m, 0.0)
            s = tl.where(row_ok[:, None], s, 1.0)
            new_max = tl.maximum(run_max, tl.max(m, axis=1))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(s * tl.exp(m - new_max[:, None]), axis=1)
            run_max = new_max
        lse = run_max + tl.log(run_sum)
        zy = tl.load(zy_ptr + offs_r, mask=row_ok, other=0.0)
        tl.store(loss_ptr + rows, lse - zy + z_loss * lse * lse, mask=row_ok)
        tl.store(lse_ptr + rows, lse, mask=row_ok)
        if SCALE_PER_ROW:
            scale = tl.load(scale_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        else:
            scale = tl.load(scale_ptr).to(tl.float32)
        y = tl.load(label_ptr + rows, mask=row_ok, other=-1)
        tl.store(lse_c_ptr + offs_r, tl.where(row_ok, lse, 0.0), mask=in_chunk)
        tl.store(scale_c_ptr + offs_r, tl.where(row_ok, scale, 0.0), mask=in_chunk)
        tl.store(y_c_ptr + offs_r, tl.where(row_ok, y, -1).to(tl.int32), mask=in_chunk)

    @triton.jit
    def _dhidden_kernel(
        w_ptr, order_ptr, count_ptr, z_ptr, lse_c_ptr, scale_c_ptr, y_c_ptr, dh_ptr,
        start, C, V, D,
        stride_wv, stride_wd, stride_dt, stride_dd,
        z_loss, softcap,
        HAS_SOFTCAP: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):
        pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(C, BLOCK_M), tl.cdiv(D, BLOCK_N), GROUP_M)
        count = tl.load(count_ptr)
        if start + pid_m * BLOCK_M >= count:
            return
        offs_r = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_ok = (start + offs_r < count) & (offs_r < C)
        rows = tl.load(order_ptr + start + offs_r, mask=row_ok, other=0).to(tl.int64)
        lse = tl.load(lse_c_ptr + offs_r, mask=row_ok, other=0.0)
        scale = tl.load(scale_c_ptr + offs_r, mask=row_ok, other=0.0)
        y = tl.load(y_c_ptr + offs_r, mask=row_ok, other=-1)
        coef = scale * (1.0 + 2.0 * z_loss * lse)
        offs_d = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        d_ok = offs_d < D
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for v0 in range(0, V, BLOCK_K):
            v = v0 + offs_k
            mask = row_ok[:, None] & (v[None, :] < V)
            z = tl.load(z_ptr + offs_r[:, None] * V + v[None, :], mask=mask, other=0.0).to(tl.float32)
            g = _logit_grad(
                z, lse[:, None], coef[:, None], scale[:, None], v[None, :] == y[:, None], softcap, HAS_SOFTCAP
            )
            g = tl.where(mask, g, 0.0)
            w = tl.load(
                w_ptr + v[:, None].to(tl.int64) * stride_wv + offs_d[None, :] * stride_wd,
                mask=(v[:, None] < V) & d_ok[None, :], other=0.0,
            )
            acc = tl.dot(g.to(w.dtype), w, acc, input_precision=PRECISION)
        tl.store(
            dh_ptr + rows[:, None] * stride_dt + offs_d[None, :] * stride_dd,
            acc.to(dh_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :],
        )

    @triton.jit
    def _dweight_kernel(
        h_ptr, order_ptr, count_ptr, z_ptr, lse_c_ptr, scale_c_ptr, y_c_ptr, dw_ptr, db_ptr,
        start, C, V, D, num_n,
        stride_ht, stride_hd,
        z_loss, softcap,
        FIRST: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
        PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):
        pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(V, BLOCK_M), num_n, GROUP_M)
        count = tl.load(count_ptr)
        num_rows = tl.minimum(count - start, C)
        if not FIRST:
            if num_rows <= 0:
                return
        offs_v = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        v_ok = offs_v < V
        offs_d = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        d_ok = offs_d < D
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_b = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for r0 in range(0, num_rows, BLOCK_K):
            r = (r0 + offs_k).to(tl.int64)
            r_ok = r < num_rows
            lse = tl.load(lse_c_ptr + r, mask=r_ok, other=0.0)
            scale = tl.load(scale_c_ptr + r, mask=r_ok, other=0.0)
            y = tl.load(y_c_ptr + r, mask=r_ok, other=-1)
            coef = scale * (1.0 + 2.0 * z_loss * lse)
            mask = v_ok[:, None] & r_ok[None, :]
            z = tl.load(z_ptr + r[None, :] * V + offs_v[:, None], mask=mask, other=0.0).to(tl.float32)
            g = _logit_grad(
                z, lse[None, :], coef[None, :], scale[None, :], offs_v[:, None] == y[None, :], softcap, HAS_SOFTCAP
            )
            g = tl.where(mask, g, 0.0)
            if HAS_DB:
                acc_b += tl.sum(g, axis=1)
            if HAS_DW:
                rows = tl.load(order_ptr + start + r, mask=r_ok, other=0).to(tl.int64)
                h = tl.load(
                    h_ptr + rows[:, None] * stride_ht + offs_d[None, :] * stride_hd,
                    mask=r_ok[:, None] & d_ok[None, :], other=0.0,
                )
                acc = tl.dot(g.to(h.dtype), h, acc, input_precision=PRECISION)
        if HAS_DW:
            ptrs = dw_ptr + offs_v[:, None].to(tl.int64) * D + offs_d[None, :]
            mask = v_ok[:, None] & d_ok[None, :]
            if not FIRST:
                acc += tl.load(ptrs, mask=mask, other=0.0)
            tl.store(ptrs, acc, mask=mask)
        if HAS_DB:
            if pid_n == 0:
                if not FIRST:
                    acc_b += tl.load(db_ptr + offs_v, mask=v_ok, other=0.0)
                tl.store(db_ptr + offs_v, acc_b, mask=v_ok)


def _triton_chunk_rows(chunk_rows: int | None, T: int, V: int, elem_bytes: int) -> int:
    """Rows per chunk: from the byte budget unless given, at most T, a multiple of ROW_ALIGN."""
    rows = CHUNK_BYTES["triton"] // (V * elem_bytes) if chunk_rows is None else chunk_rows
    rows = min(rows, T)
    return max(ROW_ALIGN, _ceil_to(rows, ROW_ALIGN))


def _launch_options(dtype: torch.dtype) -> dict[str, object]:
    """Warps and pipeline depth per launch (ignored by the interpreter), and the dot precision: exact
    fp32 products for fp32 inputs (no TF32), tensor cores for fp16/bf16."""
    if dtype == torch.float32:
        return {"num_warps": 8, "num_stages": 2, "PRECISION": "ieee"}
    return {"num_warps": 8, "num_stages": 3, "PRECISION": "tf32"}


def _triton_walk(w: _Walk, p: _Params) -> _Result:
    """The Triton chunk walk (see ``_Walk``)."""
    hidden, weight, bias, labels, want, grad_rows = w.hidden, w.weight, w.bias, w.labels, w.want, w.grad_rows
    T, D = hidden.shape
    V = weight.shape[0]
    device = hidden.device
    labels = labels.contiguous()
    bias = bias.contiguous() if bias is not None else None
    valid = labels != p.ignore_index
    count = valid.sum(dtype=torch.int32).reshape(1)
    order = torch.argsort((~valid).to(torch.uint8), stable=True).to(torch.int32)
    losses = torch.zeros(T, dtype=torch.float32, device=device)
    lse = torch.zeros(T, dtype=torch.float32, device=device)
    d_hidden = torch.zeros(T, D, dtype=torch.float32, device=device) if want[0] else None
    d_weight = torch.empty(V, D, dtype=torch.float32, device=device) if want[1] else None
    d_bias = torch.empty(V, dtype=torch.float32, device=device) if want[2] else None
    if T == 0:
        for g in (d_weight, d_bias):
            if g is not None:
                g.zero_()
        return _Result(losses, lse, count[0], d_hidden, d_weight, d_bias)

    if grad_rows is not None:
        scale, per_row = grad_rows.to(torch.float32).contiguous(), True
    elif p.reduction == "mean":
        scale, per_row = 1.0 / count.clamp(min=1).to(torch.float32), False
    else:
        scale, per_row = torch.ones(1, dtype=torch.float32, device=device), False

    z_dtype = hidden.dtype
    C = _triton_chunk_rows(p.chunk_rows, T, V, z_dtype.itemsize)
    BM1, BN1, BK1 = TILES["logits"]
    BM2, BN2, BK2 = TILES["dhidden"]
    BM3, BN3, BK3 = TILES["dweight"]
    NT = triton.cdiv(V, BN1)
    z = torch.empty(C, V, dtype=z_dtype, device=device)
    part_m = torch.empty(C, NT, dtype=torch.float32, device=device)
    part_s = torch.empty_like(part_m)
    zy = torch.empty(C, dtype=torch.float32, device=device)
    lse_c = torch.empty(C, dtype=torch.float32, device=device)
    scale_c = torch.empty_like(lse_c)
    y_c = torch.empty(C, dtype=torch.int32, device=device)
    opts = _launch_options(hidden.dtype)
    softcap = float(p.softcap) if p.softcap is not None else 1.0
    has_softcap = p.softcap is not None
    b_arg = bias if bias is not None else lse_c
    dh_arg = d_hidden if d_hidden is not None else hidden
    dw_arg = d_weight if d_weight is not None else lse_c
    db_arg = d_bias if d_bias is not None else lse_c
    z_loss = float(p.z_loss)

    for i, start in enumerate(range(0, T, C)):
        _logits_kernel[(triton.cdiv(C, BM1) * NT,)](
            hidden, weight, b_arg, order, labels, count,
            z, part_m, part_s, zy,
            start, C, V, D, NT,
            hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            softcap,
            HAS_BIAS=bias is not None, HAS_SOFTCAP=has_softcap,
            BLOCK_M=BM1, BLOCK_N=BN1, BLOCK_K=BK1, GROUP_M=_GROUP_M, **opts,
        )
        _lse_kernel[(triton.cdiv(C, _LSE_BLOCK_ROWS),)](
            order, labels, count, part_m, part_s, zy, scale,
            losses, lse, lse_c, scale_c, y_c,
            start, C, NT, z_loss,
            SCALE_PER_ROW=per_row, BLOCK_R=_LSE_BLOCK_ROWS, BLOCK_T=_LSE_BLOCK_TILES, num_warps=4,
        )
        if want[0]:
            _dhidden_kernel[(triton.cdiv(C, BM2) * triton.cdiv(D, BN2),)](
                weight, order, count, z, lse_c, scale_c, y_c, dh_arg,
                start, C, V, D,
                weight.stride(0), weight.stride(1), dh_arg.stride(0), dh_arg.stride(1),
                z_loss, softcap,
                HAS_SOFTCAP=has_softcap,
                BLOCK_M=BM2, BLOCK_N=BN2, BLOCK_K=BK2, GROUP_M=_GROUP_M, **opts,
            )
        if want[1] or want[2]:
            n_cols = triton.cdiv(D, BN3) if want[1] else 1
            _dweight_kernel[(triton.cdiv(V, BM3) * n_cols,)](
                hidden, order, count, z, lse_c, scale_c, y_c, dw_arg, db_arg,
                start, C, V, D, n_cols,
                hidden.stride(0), hidden.stride(1),
                z_loss, softcap,
                FIRST=i == 0, HAS_DW=want[1], HAS_DB=want[2], HAS_SOFTCAP=has_softcap,
                BLOCK_M=BM3, BLOCK_N=BN3, BLOCK_K=BK3, GROUP_M=_GROUP_M, **opts,
            )
    return _Result(losses, lse, count[0], d_hidden, d_weight, d_bias)


# ---------------------------------------------------------------------------------------------------
# The pure-PyTorch twin
# ---------------------------------------------------------------------------------------------------


def _torch_walk(w: _Walk, p: _Params) -> _Result:
    """The twin's chunk walk (see ``_Walk``). One [rows, V] buffer in the accumulation dtype (fp32, fp64
    for fp64 inputs) holds the logits, then exp, then G, in place."""
    hidden, weight, bias, labels, want, grad_rows = w.hidden, w.weight, w.bias, w.labels, w.want, w.grad_rows
    T, V = hidden.shape[0], weight.shape[0]
    acc = torch.promote_types(hidden.dtype, torch.float32)
    device = hidden.device
    valid = (labels != p.ignore_index).nonzero().squeeze(1)
    n = valid.numel()
    losses = torch.zeros(T, dtype=acc, device=device)
    lse_all = torch.zeros(T, dtype=acc, device=device)
    d_hidden = torch.zeros(hidden.shape, dtype=acc, device=device) if want[0] else None
    d_weight = torch.zeros(weight.shape, dtype=acc, device=device) if want[1] else None
    d_bias = torch.zeros(V, dtype=acc, device=device) if want[2] else None
    if n == 0:
        return _Result(losses, lse_all, 0, d_hidden, d_weight, d_bias)
    rows_per_chunk = p.chunk_rows or max(1, CHUNK_BYTES["torch"] // (V * acc.itemsize))
    buf = torch.empty(min(rows_per_chunk, n), V, dtype=acc, device=device)
    mean_scale = 1.0 / n if p.reduction == "mean" and grad_rows is None else 1.0
    cap = p.softcap
    for start in range(0, n, rows_per_chunk):
        rows = valid[start : start + rows_per_chunk]
        c = rows.numel()
        h = hidden.index_select(0, rows)
        y = labels.index_select(0, rows)[:, None]
        z = buf[:c]
        if hidden.dtype == acc:
            torch.mm(h, weight.T, out=z)
        else:
            z.copy_(h @ weight.T)
        if bias is not None:
            z += bias.to(acc)
        if cap is not None:
            z.div_(cap).tanh_()
            cap_grad = 1.0 - z * z if any(want) else None
            z.mul_(cap)
        zy = z.gather(1, y).squeeze(1)
        row_max = z.amax(dim=1, keepdim=True)
        z.sub_(row_max).exp_()
        sum_exp = z.sum(dim=1, keepdim=True)
        lse = (row_max + sum_exp.log()).squeeze(1)
        losses.index_copy_(0, rows, lse - zy + p.z_loss * lse * lse)
        lse_all.index_copy_(0, rows, lse)
        if not any(want):
            continue
        scale = grad_rows.index_select(0, rows).to(acc) if grad_rows is not None else torch.full_like(lse, mean_scale)
        z.mul_((scale * (1.0 + 2.0 * p.z_loss * lse))[:, None] / sum_exp)
        target_grad = scale
        if cap is not None:
            z.mul_(cap_grad)
            target_grad = scale * cap_grad.gather(1, y).squeeze(1)
        z.scatter_add_(1, y, -target_grad[:, None])
        if d_bias is not None:
            d_bias += z.sum(0)
        if d_hidden is not None:
            d_hidden.index_copy_(0, rows, (z.to(hidden.dtype) @ weight).to(acc))
        if d_weight is not None:
            d_weight.addmm_(z.T, h.to(acc))
    return _Result(losses, lse_all, n, d_hidden, d_weight, d_bias)


# ---------------------------------------------------------------------------------------------------
# autograd.Function and public function
# ---------------------------------------------------------------------------------------------------

_WALKS = {"torch": _torch_walk, "triton": _triton_walk}


def _reduce(losses: torch.Tensor, count: int | torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    if isinstance(count, int):
        return total / max(count, 1)
    return total / count.clamp(min=1).to(total.dtype)


def _cast_scaled(
    grad: torch.Tensor | None, scale: torch.Tensor | None, dtype: torch.dtype | None
) -> torch.Tensor | None:
    """``grad * scale`` computed in grad's (fp32) precision and rounded to ``dtype`` once, in one pass."""
    if grad is None:
        return None
    if scale is None:
        return grad.to(dtype)
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    return torch.mul(grad, scale.to(grad.dtype), out=out)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, p: _Params):
        want = tuple(ctx.needs_input_grad[:3]) if p.grad_enabled else (False, False, False)
        eager = p.reduction != "none"
        res = _WALKS[p.impl](_Walk(hidden, weight, bias, labels, want if eager else (False, False, False)), p)
        ctx.p, ctx.want = p, want
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        if eager:
            ctx.save_for_backward(res.d_hidden, res.d_weight, res.d_bias)
        else:
            ctx.save_for_backward(hidden, weight, bias, labels)
        ctx.mark_non_differentiable(res.lse)
        return _reduce(res.losses, res.count, p.reduction), res.lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        p, want = ctx.p, ctx.want
        if p.reduction == "none":
            hidden, weight, bias, labels = ctx.saved_tensors
            res = _WALKS[p.impl](_Walk(hidden, weight, bias, labels, want, grad_rows=grad_out), p)
            grads = (res.d_hidden, res.d_weight, res.d_bias)
            dh, dw, db = (_cast_scaled(g, None, dt) for g, dt in zip(grads, ctx.dtypes))
        else:
            dh, dw, db = (_cast_scaled(g, grad_out, dt) for g, dt in zip(ctx.saved_tensors, ctx.dtypes))
        return dh, dw, db, None, None


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    chunk_rows: int | None = None,
    impl: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels``, rows with ``ignore_index`` skipped.

    hidden [T, d] and weight [V, d] of one floating dtype, labels [T] integer, bias [V] or None.
    ``reduction="mean"`` divides by the number of valid rows (0 when there are none); ``"sum"`` lets
    the caller normalise (e.g. by the loss tokens of a whole optimizer step); ``"none"`` returns
    per-row losses [T] (0 on ignored rows). The loss is fp32 (fp64 for fp64 inputs to the twin).
    ``z_loss`` adds z_loss * lse^2 per valid row; ``softcap`` maps logits to softcap * tanh(logits /
    softcap) before the softmax. ``return_lse=True`` returns ``(loss, lse)``, lse [T] without gradient.
    ``chunk_rows`` overrides the chunk sized from ``CHUNK_BYTES`` (Triton rounds it up to a multiple of
    128). ``impl``: "auto", "torch" or "triton" (see ``resolve_impl``); "triton" on CPU tensors needs
    TRITON_INTERPRET=1 set before this module is imported, and fp16 or fp32 there.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [T, d] and weight [V, d]; got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [T]={hidden.shape[0]}; got {tuple(labels.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V]={weight.shape[0]}; got {tuple(bias.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden and weight must share a dtype; got {hidden.dtype} and {weight.dtype}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be a positive number or None, got {softcap!r}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive or None, got {chunk_rows}")
    resolved = resolve_impl(impl, hidden.device, dtype=hidden.dtype)
    if resolved == "triton":
        _check_triton(hidden)
    p = _Params(
        ignore_index=ignore_index,
        reduction=reduction,
        z_loss=float(z_loss),
        softcap=None if softcap is None else float(softcap),
        chunk_rows=chunk_rows,
        impl=resolved,
        grad_enabled=torch.is_grad_enabled(),
    )
    loss, lse = _LinearCE.apply(hidden, weight, bias, labels, p)
    return (loss, lse) if return_lse else loss


def _check_triton(hidden: torch.Tensor) -> None:
    if hidden.dtype not in TRITON_DTYPES:
        raise ValueError(f"impl='triton' supports {TRITON_DTYPES}, got {hidden.dtype}; use impl='torch'")
    if hidden.device.type == "cuda":
        return
    if not interpreting():
        raise ValueError(
            f"impl='triton' on {hidden.device.type} tensors needs TRITON_INTERPRET=1 set before rdistill.kernels "
            "is imported (tests only); use impl='auto' or 'torch' on CPU"
        )
    if hidden.dtype not in (torch.float16, torch.float32):
        raise ValueError(f"the Triton interpreter computes {hidden.dtype} wrongly; use fp16 or fp32 on CPU")

