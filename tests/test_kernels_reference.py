"""The pure-PyTorch kernel twins against straightforward fp64 references."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from rdistill.kernels import fused_linear_cross_entropy, linear_ce_flops, varlen_attention, varlen_attention_flops


def _ce_inputs(T, d, V, ignore_every, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = (torch.randn(V, d, generator=g, dtype=torch.float64) / d**0.5).to(dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    y = torch.randint(0, V, (T,), generator=g)
    if ignore_every == "all":
        y[:] = -100
    elif ignore_every:
        y[::ignore_every] = -100
    return h, w, b, y


@pytest.mark.parametrize("T,d,V", [(47, 31, 123), (5, 16, 507), (1, 8, 9)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [0, 3, "all"])
def test_fused_ce_matches_reference(T, d, V, reduction, ignore):
    h, w, b, y = _ce_inputs(T, d, V, ignore, torch.float32)
    out = fused_linear_cross_entropy(h, w, y, bias=b, reduction=reduction, chunk_rows=7)
    h64, w64, b64 = (t.detach().double().requires_grad_() for t in (h, w, b))
    ref = F.cross_entropy(h64 @ w64.T + b64, y, reduction=reduction, ignore_index=-100)
    if reduction == "mean" and (y == -100).all():
        ref = (h64 @ w64.T + b64).sum() * 0  # torch's mean over no tokens is nan; ours is 0 with zero gradients
    g = torch.randn(out.shape, dtype=torch.float64) if reduction == "none" else torch.tensor(1.7, dtype=torch.float64)
    grads = torch.autograd.grad(out, (h, w, b), g.to(out.dtype))
    ref_grads = torch.autograd.grad(ref, (h64, w64, b64), g)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_fused_ce_under_no_grad_computes_no_gradients():
    h, w, b, y = _ce_inputs(9, 8, 11, 2, torch.float32)
    with torch.no_grad():
        out = fused_linear_cross_entropy(h, w, y, reduction="sum")
    assert not out.requires_grad


def test_fused_ce_flops():
    assert linear_ce_flops(10, 4, 7) == {"useful_fwd": 560, "useful_bwd": 1120, "executed_fwd": 560, "executed_bwd": 1120}
    assert linear_ce_flops(10, 4, 7, reduction="none")["executed_bwd"] == 1680


def _reference_attention(q, k, v, lengths, causal=True):
    groups = q.shape[1] // k.shape[1]
    outs, start = [], 0
    for n in lengths:
        qi, ki, vi = (x[start : start + n].transpose(0, 1).double() for x in (q, k, v))
        ki, vi = ki.repeat_interleave(groups, 0), vi.repeat_interleave(groups, 0)
        s = qi @ ki.transpose(1, 2) / q.shape[-1] ** 0.5
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        outs.append((s.softmax(-1) @ vi).transpose(0, 1))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("lengths", [(1,), (2, 17), (1, 2, 17, 113, 129), (40, 41, 45, 3)])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (4, 1), (7, 1)])
@pytest.mark.parametrize("lse", [False, True])
def test_varlen_attention_matches_per_document_reference(lengths, hq, hkv, lse):
    g = torch.Generator().manual_seed(len(lengths) * 10 + hq)
    T, D = sum(lengths), 16
    q, k, v = (torch.randn(T, h, D, generator=g).requires_grad_() for h in (hq, hkv, hkv))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, max(lengths), return_lse=lse)
    out = out[0] if lse else out
    ref = _reference_attention(q, k, v, lengths)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    go = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, (q, k, v), go)
    ref_grads = torch.autograd.grad(ref, (q, k, v), go.double())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)


def test_varlen_attention_rows_past_the_last_document_get_zero():
    q, k, v = (torch.randn(10, 2, 8).requires_grad_() for _ in range(3))
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, 4)
    assert torch.equal(out[7:], torch.zeros_like(out[7:]))
    out.sum().backward()
    for t in (q, k, v):
        assert torch.equal(t.grad[7:], torch.zeros_like(t.grad[7:]))


def test_varlen_attention_flops_count_the_causal_triangle():
    f = varlen_attention_flops([1, 4], num_heads_q=2, head_dim=8)
    assert f["useful_fwd"] == 4 * 2 * 8 * (1 + 10)
    assert f["useful_bwd"] == 2 * f["useful_fwd"]
    assert f["executed_fwd"] >= 4 * 2 * 8 * (1 + 16)
