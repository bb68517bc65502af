"""Fused LM head + cross-entropy that never materialises the full logits.

Computes ``cross_entropy(hidden @ weight.T (+ bias), labels)`` for hidden [T, d], weight [V, d],
labels [T], skipping rows whose label is ``ignore_index``: they are compacted away before any
matmul, so a prompt token costs nothing.

``impl="torch"`` (the CPU path, the reference and the benchmark baseline) walks the valid rows in
chunks of ``chunk_rows``; for each chunk it computes the fp32 logits, the loss and, when gradients are
needed, the gradient of hidden and the fp32-accumulated gradient of weight right away, so backward only
scales the stored gradients by the incoming one. Memory beyond inputs and gradients is one chunk of
logits: with chunk_rows=1024 and V=151,936 that is 1024 x 151,936 x 4 B = 622 MB in fp32, against
T x V x 4 B (10 GB at T=16k) for linear + F.cross_entropy.

FLOPs per call with n valid rows: forward 2 n d V (the logits), backward 4 n d V (dhidden and dweight).
The twin does the backward matmuls during forward, so it executes exactly those, no recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMPLS = ("torch",)
REDUCTIONS = ("mean", "sum", "none")


def linear_ce_flops(
    num_valid_rows: int, hidden_dim: int, vocab_size: int, *, reduction: str = "sum", impl: str = "torch"
) -> dict[str, int]:
    """FLOPs of one call: useful and executed, forward and backward (integers).

    useful: 2 n d V forward, 4 n d V backward. executed: the same, except that reduction="none"
    recomputes the logits in backward (6 n d V there).
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    fwd = 2 * num_valid_rows * hidden_dim * vocab_size
    recompute = fwd if reduction == "none" else 0
    return {"useful_fwd": fwd, "useful_bwd": 2 * fwd, "executed_fwd": fwd, "executed_bwd": 2 * fwd + recompute}


@dataclass(frozen=True)
class _Params:
    ignore_index: int
    reduction: str
    chunk_rows: int
    grad_enabled: bool


def _chunked(hidden, weight, bias, labels, p: _Params, want: tuple[bool, bool, bool], row_scale=None):
    """Losses [T] (fp32, 0 on ignored rows), the valid-row count, and the wanted gradients.

    Gradients are of ``sum_r row_scale[r] * loss[r]`` (``row_scale`` = 1 when None).
    """
    T = hidden.shape[0]
    acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    valid = (labels != p.ignore_index).nonzero().squeeze(1)
    n = valid.numel()
    losses = torch.zeros(T, dtype=acc, device=hidden.device)
    g_hidden = torch.zeros_like(hidden) if want[0] else None
    g_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want[1] else None
    g_bias = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want[2] else None
    for start in range(0, n, p.chunk_rows):
        rows = valid[start : start + p.chunk_rows]
        h = hidden.index_select(0, rows)
        y = labels.index_select(0, rows)
        logits = (h @ weight.T).to(acc)
        if bias is not None:
            logits += bias.to(acc)
        lse = torch.logsumexp(logits, dim=-1)
        losses.index_copy_(0, rows, lse - logits.gather(1, y[:, None]).squeeze(1))
        if not any(want):
            continue
        grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
        grad[torch.arange(rows.numel(), device=grad.device), y] -= 1.0
        if row_scale is not None:
            grad *= row_scale.index_select(0, rows)[:, None]
        if g_bias is not None:
            g_bias += grad.sum(0)
        if g_hidden is not None:
            g_hidden.index_copy_(0, rows, grad.to(hidden.dtype) @ weight)
        if g_weight is not None:
            g_weight.addmm_(grad.T, h.to(acc))
    return losses, n, g_hidden, g_weight, g_bias


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, p: _Params):
        want = tuple(ctx.needs_input_grad[:3]) if p.grad_enabled else (False, False, False)
        precompute = p.reduction != "none"
        losses, n, gh, gw, gb = _chunked(hidden, weight, bias, labels, p, want if precompute else (False,) * 3)
        ctx.p, ctx.n, ctx.want = p, n, want
        ctx.weight_dtype, ctx.bias_dtype = weight.dtype, bias.dtype if bias is not None else None
        if precompute:
            ctx.save_for_backward(gh, gw, gb)
        else:
            ctx.save_for_backward(hidden, weight, bias, labels)
        if p.reduction == "none":
            return losses
        total = losses.sum()
        return total / max(n, 1) if p.reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_out):
        p, n, want = ctx.p, ctx.n, ctx.want
        if p.reduction == "none":
            hidden, weight, bias, labels = ctx.saved_tensors
            _, _, gh, gw, gb = _chunked(hidden, weight, bias, labels, p, want, row_scale=grad_out)
            scale = None
        else:
            gh, gw, gb = ctx.saved_tensors
            scale = grad_out / (max(n, 1) if p.reduction == "mean" else 1)
        dh, dw, db = (g if g is None or scale is None else g * scale for g in (gh, gw, gb))
        return (
            dh,
            dw.to(ctx.weight_dtype) if dw is not None else None,
            db.to(ctx.bias_dtype) if db is not None else None,
            None,
            None,
        )


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_rows: int = 1024,
    impl: str = "torch",
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T (+ bias)`` against ``labels``, rows with ``ignore_index`` skipped.

    ``reduction="mean"`` divides by the number of valid rows (0 when there are none); ``"sum"`` lets
    the caller normalise (e.g. by the loss tokens of a whole optimizer step); ``"none"`` returns
    per-row losses [T] (0 on ignored rows).
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden [T, d] and weight [V, d]; got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be [T]={hidden.shape[0]}; got {tuple(labels.shape)}")
    return _LinearCE.apply(hidden, weight, bias, labels, _Params(ignore_index, reduction, chunk_rows, torch.is_grad_enabled()))
