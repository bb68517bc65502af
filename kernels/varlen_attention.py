"""Variable-length causal attention over packed documents.

Computes, for every document ``i`` of a packed stream delimited by ``cu_seqlens``,
``softmax(q_i k_i^T * scale + causal_mask) v_i`` with grouped-query attention (``Hq`` a multiple of
``Hkv``). No token attends outside its own document, so the cost is ``sum_i l_i^2``, never
``(sum_i l_i)^2``.

Shapes: q [T, Hq, D], k and v [T, Hkv, D], cu_seqlens int32 [n+1], max_seqlen a host int.
Output [T, Hq, D] (and the log-sum-exp [Hq, T] in fp32 with ``return_lse=True``).

``impl="torch"`` runs scaled_dot_product_attention once per document. It is the CPU path and the
reference the Triton kernel is tested against. It executes each document's full ``l x l`` score
matrix (the causal mask is applied, not skipped), which is what ``varlen_attention_flops`` reports as
its executed count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMPLS = ("torch",)


def varlen_attention_flops(
    doc_lengths: Sequence[int], num_heads_q: int, head_dim: int, *, causal: bool = True, impl: str = "torch"
) -> dict[str, int]:
    """FLOPs of one call (integers).

    useful_fwd   = 4 Hq D sum_i l_i (l_i + 1) / 2   (QK^T and PV over the causal triangle; dense: l_i^2)
    useful_bwd   = 2 x useful_fwd                   (dQ, dK from dS; dV, dP from dO)
    executed_fwd = 4 Hq D sum_i l_i^2               (torch twin: the full square is computed, then masked)
    executed_bwd = 2 x executed_fwd
    Softmax exponentials and scaling are not matmul FLOPs and are not counted.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    tri = sum(l * (l + 1) // 2 for l in doc_lengths) if causal else sum(l * l for l in doc_lengths)
    sq = sum(l * l for l in doc_lengths)
    useful = 4 * num_heads_q * head_dim * tri
    executed = 4 * num_heads_q * head_dim * sq
    return {"useful_fwd": useful, "useful_bwd": 2 * useful, "executed_fwd": executed, "executed_bwd": 2 * executed}


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"q, k, v must be [T, H, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(f"k and v must be [T, Hkv, D] matching q [T, Hq, D]; got {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"Hq={q.shape[1]} must be a multiple of Hkv={k.shape[1]}")
    if cu_seqlens.ndim != 1 or cu_seqlens.dtype != torch.int32:
        raise ValueError("cu_seqlens must be a 1-D int32 tensor")


def _torch_varlen(q, k, v, cu_seqlens, causal, scale, return_lse):
    groups = q.shape[1] // k.shape[1]
    bounds = cu_seqlens.tolist()
    out = torch.zeros_like(q)
    lse = torch.zeros(q.shape[1], q.shape[0], dtype=torch.float32, device=q.device) if return_lse else None
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qi = q[s:e].transpose(0, 1)  # [Hq, l, D]
        ki = k[s:e].transpose(0, 1).repeat_interleave(groups, dim=0)
        vi = v[s:e].transpose(0, 1).repeat_interleave(groups, dim=0)
        if return_lse:
            scores = (qi.float() @ ki.float().transpose(1, 2)) * scale
            if causal:
                l = e - s
                mask = torch.ones(l, l, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            lse[:, s:e] = torch.logsumexp(scores, dim=-1)
            oi = (torch.softmax(scores, dim=-1) @ vi.float()).to(q.dtype)
        else:
            oi = F.scaled_dot_product_attention(qi, ki, vi, is_causal=causal, scale=scale)
        out[s:e] = oi.transpose(0, 1)
    return out, lse


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
    impl: str = "torch",
):
    """Attention of each packed document with itself only. See the module docstring.

    Rows past ``cu_seqlens[-1]`` (if ``T`` is larger) are left zero and get zero gradient.
    """
    _check(q, k, v, cu_seqlens)
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    out, lse = _torch_varlen(q, k, v, cu_seqlens, causal, scale, return_lse)
    return (out, lse) if return_lse else out
