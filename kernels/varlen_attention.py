"""Variable-length causal attention over packed documents.

Computes, for every document ``i`` of a packed stream delimited by ``cu_seqlens``,
``softmax(q_i k_i^T * scale + causal_mask) v_i`` with grouped-query attention (``Hq`` a multiple of
``Hkv``). No token attends outside its own document, so the cost is ``sum_i l_i^2``, never
``(sum_i l_i)^2``.

Shapes: q [T, Hq, D], k and v [T, Hkv, D], cu_seqlens int32 [n+1], max_seqlen a host int.
Output [T, Hq, D] (and the log-sum-exp [Hq, T] in fp32 with ``return_lse=True``).

``impl="torch"`` is the CPU path and the reference the Triton kernel is tested against: documents
are grouped into length buckets, right-padded to the bucket's longest, and each bucket is one batched
causal scaled_dot_product_attention call. It executes each padded ``L x L`` score matrix in full (the
causal mask is applied, not skipped), which is what ``varlen_attention_flops`` reports as executed.
With ``return_lse=True`` it takes an explicit per-document fp32 path instead (the test oracle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMPLS = ("torch",)


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


def varlen_attention_flops(
    doc_lengths: Sequence[int], num_heads_q: int, head_dim: int, *, causal: bool = True, impl: str = "torch"
) -> dict[str, int]:
    """FLOPs of one call (integers).

    useful_fwd   = 4 Hq D sum_i l_i (l_i + 1) / 2   (QK^T and PV over the causal triangle; dense: l_i^2)
    useful_bwd   = 2 x useful_fwd                   (dQ, dK from dS; dV, dP from dO)
    executed_fwd = 4 Hq D sum_b n_b L_b^2           (torch twin: each length bucket b of n_b documents is
                                                     padded to L_b and its full square computed, then masked)
    executed_bwd = 2 x executed_fwd
    Softmax exponentials and scaling are not matmul FLOPs and are not counted.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    tri = sum(l * (l + 1) // 2 for l in doc_lengths) if causal else sum(l * l for l in doc_lengths)
    padded = sum(len(idx) * L * L for idx, L in length_buckets(doc_lengths))
    useful = 4 * num_heads_q * head_dim * tri
    executed = 4 * num_heads_q * head_dim * padded
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
    bounds = cu_seqlens.tolist()
    groups = q.shape[1] // k.shape[1]
    if return_lse:
        return _torch_lse(q, k, v, bounds, causal, scale, groups)
    return _torch_varlen(q, k, v, bounds, causal, scale, groups)
