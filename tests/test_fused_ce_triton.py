"""The Triton fused linear cross-entropy against an fp64 oracle, same-dtype PyTorch, the twin and Liger.

On CPU the kernels run under TRITON_INTERPRET=1 (set by conftest.py before any kernel module is
imported), in fp32 and fp16 only (the interpreter computes bf16 wrongly), on small awkward shapes:
the interpreter's dot is slow, so each call here costs about a second. Errors are bounded as in
STYLE.md: err(kernel) <= k * err(same-dtype PyTorch) + tol, both measured against fp64, with k = 2 for
losses and lse and k = 3 for gradients. ``TestGpu`` holds the bf16 checks at real shapes; it skips
without CUDA and is what benchmarks/gpu_check.py runs on a GPU machine.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed")

from rdistill.data.batch import PackedBatch  # noqa: E402
from rdistill.kernels.fused_linear_ce import (  # noqa: E402
    TILES,
    fused_linear_cross_entropy,
    linear_ce_flops,
    resolve_impl,
)

IGNORE = -100
interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="CPU tests of the Triton kernels need TRITON_INTERPRET=1"
)


def _inputs(T, d, V, dtype, ignore_every=0, bias=True, seed=0, device="cpu"):
    """Leaves hidden [T, d], weight [V, d] (logits of unit scale) and bias [V] or None, and labels [T]
    with every ``ignore_every``-th row ignored ("all": every row), drawn on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    h = torch.randn(T, d, generator=g, device=device)
    w = torch.randn(V, d, generator=g, device=device) / d**0.5
    b = torch.randn(V, generator=g, device=device) if bias else None
    y = torch.randint(0, V, (T,), generator=g, device=device)
    if ignore_every == "all":
        y[:] = IGNORE
    elif ignore_every:
        y[::ignore_every] = IGNORE
    leaves = [t.to(dtype).requires_grad_() if t is not None else None for t in (h, w, b)]
    return (*leaves, y)


def _eager(h, w, b, y, reduction, z_loss=0.0, softcap=None):
    """linear + F.cross_entropy (+ z-loss, softcap) in the inputs' own dtype: the reference."""
    z = h @ w.T
    if b is not None:
        z = z + b
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    valid = y != IGNORE
    lse = torch.logsumexp(z, dim=-1)
    rows = F.cross_entropy(z, y, reduction="none", ignore_index=IGNORE) + z_loss * lse * lse * valid
    lse = lse * valid
    if reduction == "none":
        return rows, lse
    total = rows.sum()
    return (total if reduction == "sum" else total / valid.sum().clamp(min=1)), lse


def _run(fn, leaves, y, grad_out_seed=1, **kw):
    """Loss, lse and the gradients of (loss * a fixed random cotangent) for the leaves that exist."""
    loss, lse = fn(*leaves, y, **kw)
    g = torch.Generator().manual_seed(grad_out_seed)
    cot = torch.randn(loss.shape, generator=g, dtype=torch.float64).to(device=loss.device, dtype=loss.dtype)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, present, cot)
    return loss.detach(), lse.detach(), grads


def _kernel(impl):
    def fn(h, w, b, y, **kw):
        return fused_linear_cross_entropy(h, w, y, bias=b, return_lse=True, impl=impl, **kw)

    return fn


def _err(a, ref):
    return (a.double() - ref.double()).abs().max().item()


def _assert_bounded(got, same_dtype, oracle, k, rtol, what):
    """err(got) <= k * err(same-dtype PyTorch) + rtol * max|oracle|."""
    err, ref_err = _err(got, oracle), _err(same_dtype, oracle)
    scale = max(oracle.abs().max().item(), 1e-30)
    assert err <= k * ref_err + rtol * scale, f"{what}: err {err:.3g} vs same-dtype PyTorch {ref_err:.3g} (|ref| {scale:.3g})"


def _compare(leaves, y, impl="triton", tol=1e-5, **kw):
    dtype = leaves[0].dtype
    oracle_leaves = [t.detach().double().requires_grad_() if t is not None else None for t in leaves]
    got = _run(_kernel(impl), leaves, y, **kw)
    chunk_free = {k: v for k, v in kw.items() if k != "chunk_rows"}
    oracle = _run(_eager, oracle_leaves, y, **chunk_free)
    same = _run(_eager, leaves, y, **chunk_free)
    assert torch.isfinite(got[0]).all()
    _assert_bounded(got[0], same[0], oracle[0], 2, tol, f"{dtype} loss")
    _assert_bounded(got[1], same[1], oracle[1], 2, tol, f"{dtype} lse")
    assert torch.equal(got[1][y == IGNORE], torch.zeros_like(got[1][y == IGNORE]))
    for name, g, s, o in zip(("d hidden", "d weight", "d bias"), got[2], same[2], oracle[2]):
        assert g.dtype == dtype
        _assert_bounded(g, s, o, 3, tol, f"{dtype} {name}")
    return got


TOL = {torch.float32: 1e-5, torch.float16: 1e-3}


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "T,d,V,ignore_every,bias", [(47, 31, 123, 3, True), (47, 31, 507, 0, False)], ids=["V123-masked", "V507-dense"]
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(dtype, T, d, V, ignore_every, bias, reduction):
    *leaves, y = _inputs(T, d, V, dtype, ignore_every, bias)
    _compare(leaves, y, reduction=reduction, tol=TOL[dtype])


@interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_z_loss_softcap_and_strided_hidden(dtype):
    h, w, b, y = _inputs(47, 31, 123, dtype, 4, seed=3)
    wide = torch.zeros(47, 62, dtype=dtype)
    wide[:, ::2] = h.detach() * 4  # large logits, so the softcap bends them
    strided = wide[:, ::2].requires_grad_()
    assert not strided.is_contiguous()
    _compare([strided, w, b], y, reduction="mean", z_loss=1e-2, softcap=3.0, tol=TOL[dtype])


@interpreter
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_tokens_ignored_gives_zeros(reduction):
    h, w, b, y = _inputs(47, 31, 123, torch.float32, "all")
    loss, lse, grads = _run(_kernel("triton"), [h, w, b], y, reduction=reduction)
    assert torch.equal(loss, torch.zeros_like(loss)) and torch.equal(lse, torch.zeros(47))
    for g in grads:
        assert torch.equal(g, torch.zeros_like(g))


@interpreter
def test_chunks_and_twin_agree_with_one_chunk():
    """300 rows, a third ignored: 2 chunks of 128 valid rows each (the second partial, with a partial
    row tile) and then chunks with no valid row, against one chunk and the twin."""
    *leaves, y = _inputs(300, 31, 123, torch.float32, 3, seed=5)
    chunked = _compare(leaves, y, reduction="sum", chunk_rows=128)
    whole = _run(_kernel("triton"), leaves, y, reduction="sum", chunk_rows=384)
    twin = _run(_kernel("torch"), leaves, y, reduction="sum", chunk_rows=50)
    for other in (whole, twin):
        torch.testing.assert_close(chunked[0], other[0], rtol=1e-6, atol=1e-5)
        for a, b in zip(chunked[2], other[2]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@interpreter
def test_lse_combines_tile_partials_over_several_passes(monkeypatch):
    """V = 507 gives 4 vocabulary tiles; 2 partials per pass makes the online combine rescale."""
    from rdistill.kernels import fused_linear_ce

    monkeypatch.setattr(fused_linear_ce, "_LSE_BLOCK_TILES", 2)
    h, w, _, y = _inputs(47, 31, 507, torch.float32, 5, bias=False, seed=4)
    w = (w.detach() * 8).requires_grad_()  # spread the logits: the tiles disagree on the maximum
    _compare([h, w, None], y, reduction="sum")


def _packed(vocab_size, seed=0):
    """Documents of 1, 17, 113, 40 and 45 tokens; the 40-token one is all prompt (no loss)."""
    g = torch.Generator().manual_seed(seed)
    docs = [
        (torch.randint(0, vocab_size, (n,), generator=g).tolist(), [t >= prompt for t in range(n)])
        for n, prompt in ((1, 1), (17, 6), (113, 30), (40, 40), (45, 12))
    ]
    return PackedBatch.from_documents(docs)


@interpreter
def test_packed_documents_match_documents_alone_and_do_not_interact():
    V, d = 123, 31
    batch = _packed(V)
    T = batch.num_tokens
    h, w, _, _ = _inputs(T, d, V, torch.float32, bias=False, seed=7)
    assert (batch.labels != IGNORE).sum().item() == batch.num_loss_tokens
    loss, lse, (dh, _) = _run(_kernel("triton"), [h, w, None], batch.labels, reduction="none")
    bounds = batch.cu_seqlens.tolist()
    cot = torch.randn(T, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    for s, e in zip(bounds[:-1], bounds[1:]):
        h_doc = h.detach()[s:e].clone().requires_grad_()
        doc_loss, doc_lse = fused_linear_cross_entropy(
            h_doc, w, batch.labels[s:e], reduction="none", return_lse=True, impl="triton"
        )
        (dh_doc,) = torch.autograd.grad(doc_loss, h_doc, cot[s:e])
        torch.testing.assert_close(loss[s:e], doc_loss.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(lse[s:e], doc_lse, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(dh[s:e], dh_doc, rtol=1e-5, atol=1e-7)

    s, e = bounds[2], bounds[3]
    h2 = h.detach().clone()
    h2[s:e] += torch.randn(e - s, d)
    h2.requires_grad_()
    loss2, _, (dh2, _) = _run(_kernel("triton"), [h2, w, None], batch.labels, reduction="none")
    others = torch.ones(T, dtype=torch.bool)
    others[s:e] = False
    assert torch.equal(loss2[others], loss[others]) and torch.equal(dh2[others], dh[others])
    assert not torch.equal(loss2[s:e], loss[s:e])
    assert torch.equal(dh[batch.labels == IGNORE], torch.zeros_like(dh[batch.labels == IGNORE]))


@interpreter
def test_repeated_runs_are_bitwise_equal_and_no_grad_computes_none():
    *leaves, y = _inputs(47, 31, 123, torch.float16, 2, seed=9)
    a = _run(_kernel("triton"), leaves, y, reduction="mean")
    b = _run(_kernel("triton"), leaves, y, reduction="mean")
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, z) for x, z in zip(a[2], b[2]))
    with torch.no_grad():
        out = fused_linear_cross_entropy(leaves[0], leaves[1], y, bias=leaves[2], impl="triton")
    assert not out.requires_grad and torch.equal(out, a[0])


@interpreter
def test_frozen_head_weight_with_trainable_bias():
    """Gradients for hidden and bias only (the d weight kernel then runs one tile column, bias alone)."""
    h, w, b, y = _inputs(47, 31, 123, torch.float32, 3, seed=11)
    w = w.detach()
    loss = fused_linear_cross_entropy(h, w, y, bias=b, reduction="sum", impl="triton")
    dh, db = torch.autograd.grad(loss, (h, b))
    h64, b64 = h.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    ref = F.cross_entropy(h64 @ w.double().T + b64, y, reduction="sum")
    ref_dh, ref_db = torch.autograd.grad(ref, (h64, b64))
    torch.testing.assert_close(dh.double(), ref_dh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(db.double(), ref_db, rtol=1e-5, atol=1e-6)


@interpreter
def test_matches_liger_fused_linear_cross_entropy():
    """A second, independent implementation (Liger-Kernel's Triton FLCE, also run in the interpreter;
    its softcap path does not run there, so this compares z-loss, bias and masking)."""
    liger = pytest.importorskip("liger_kernel.transformers", reason="liger-kernel is not installed")
    h, w, b, y = _inputs(47, 31, 123, torch.float32, 3, seed=13)
    ours = _run(_kernel("triton"), [h, w, b], y, reduction="mean", z_loss=1e-3)
    module = liger.LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, lse_square_scale=1e-3)

    def theirs(h_, w_, b_, y_, **_):
        return module(w_, h_, y_, b_), torch.zeros(())

    ref = _run(theirs, [h, w, b], y)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    for a, r in zip(ours[2], ref[2]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_triton_flops_count_padded_tiles():
    """n = 47 valid rows, d = 31, V = 507; tiles pad rows to 128 (row tiles) or 64 (dweight's K
    blocks), V to 512 (128-wide tiles and 64-deep K blocks), d to 64 (K) or 128 (column tiles)."""
    assert TILES == {"logits": (128, 128, 64), "dhidden": (128, 128, 64), "dweight": (128, 128, 64)}
    f = linear_ce_flops(47, 31, 507, impl="triton")
    assert f["useful_fwd"] == 2 * 47 * 31 * 507 and f["useful_bwd"] == 2 * f["useful_fwd"]
    assert f["executed_fwd"] == 2 * 128 * 512 * 64
    assert f["executed_bwd"] == 2 * 128 * 128 * 512 + 2 * 512 * 128 * 64
    none = linear_ce_flops(47, 31, 507, impl="triton", reduction="none")
    assert none["executed_bwd"] == f["executed_bwd"] + f["executed_fwd"]
    assert linear_ce_flops(0, 31, 507, impl="triton")["executed_bwd"] == 0
    exact = linear_ce_flops(4096, 896, 151_936, impl="triton")  # every extent a multiple of its tile
    assert exact["executed_fwd"] == exact["useful_fwd"] and exact["executed_bwd"] == exact["useful_bwd"]
    with pytest.raises(ValueError, match="resolve_impl"):
        linear_ce_flops(1, 1, 1, impl="auto")


def test_resolve_impl_and_argument_errors(monkeypatch):
    """What only the loss has; the contract both kernels share is in test_kernel_contract.py."""
    monkeypatch.delenv("RDISTILL_CE_IMPL", raising=False)
    assert resolve_impl("auto", torch.device("cuda", 0), dtype=torch.bfloat16) == "triton"
    assert resolve_impl("auto", "cuda", head_dim=80) == "triton"  # the loss has no head dim
    assert resolve_impl("auto", "cuda", dtype=torch.float64) == "torch"
    assert resolve_impl("triton", "cpu") == "triton"
    h, w, _, y = _inputs(4, 8, 16, torch.float64, bias=False)
    with pytest.raises(ValueError, match="float64"):
        fused_linear_cross_entropy(h, w, y, impl="triton")
    h, w, _, y = _inputs(4, 8, 16, torch.bfloat16, bias=False)
    if os.environ.get("TRITON_INTERPRET") == "1":
        with pytest.raises(ValueError, match="interpreter computes torch.bfloat16 wrongly"):
            fused_linear_cross_entropy(h, w, y, impl="triton")
    with pytest.raises(ValueError, match="softcap"):
        fused_linear_cross_entropy(h, w, y, softcap=0.0)
    with pytest.raises(ValueError, match="share a dtype"):
        fused_linear_cross_entropy(h, w.float(), y)


def _gpu_skip_reason() -> str:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (bf16 Triton kernels at real shapes)"
    return "run with TRITON_INTERPRET=0 on a GPU" if os.environ.get("TRITON_INTERPRET") == "1" else ""


@pytest.mark.skipif(bool(_gpu_skip_reason()), reason=_gpu_skip_reason() or "runs")
class TestGpu:
    """bf16 at real shapes on a GPU. Run as: TRITON_INTERPRET=0 pytest tests/test_fused_ce_triton.py -k TestGpu."""

    @pytest.mark.parametrize(
        "T,d,V,ignore_every",
        [(4096, 896, 151_936, 2), (2048, 4096, 128_256, 0), (1000, 1000, 50_000, 7)],
        ids=["qwen0.5b-half-prompt", "llama8b-dense", "odd-shape"],
    )
    def test_bf16_matches_fp32_reference(self, T, d, V, ignore_every):
        *leaves, y = _inputs(T, d, V, torch.bfloat16, ignore_every, bias=False, device="cuda")
        _compare(leaves[:2] + [None], y, reduction="sum", tol=1e-3)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_bf16_options(self, reduction):
        *leaves, y = _inputs(1500, 512, 32_000, torch.bfloat16, 3, device="cuda")
        _compare(leaves, y, reduction=reduction, z_loss=1e-4, softcap=30.0, chunk_rows=512, tol=1e-3)

    def test_fp32_is_exact_without_tf32(self):
        *leaves, y = _inputs(777, 333, 10_001, torch.float32, 5, device="cuda")
        _compare(leaves, y, reduction="mean", tol=1e-5)

    def test_packed_bf16_and_twin_agree(self):
        batch = _packed(32_000).to("cuda")
        h, w, _, _ = _inputs(batch.num_tokens, 1024, 32_000, torch.bfloat16, bias=False, device="cuda")
        got = _run(_kernel("triton"), [h, w, None], batch.labels, reduction="sum")
        twin = _run(_kernel("torch"), [h, w, None], batch.labels, reduction="sum")
        torch.testing.assert_close(got[0], twin[0], rtol=2e-3, atol=1e-2)
        for a, b in zip(got[2], twin[2]):
            assert _err(a, b) <= 2e-2 * b.abs().max().item()

    def test_bf16_deterministic(self):
        *leaves, y = _inputs(3000, 1024, 50_000, torch.bfloat16, 2, device="cuda")
        a = _run(_kernel("triton"), leaves, y, reduction="sum")
        b = _run(_kernel("triton"), leaves, y, reduction="sum")
        assert torch.equal(a[0], b[0]) and all(torch.equal(x, z) for x, z in zip(a[2], b[2]))

    def test_memory_is_bounded_by_the_chunk_budget(self):
        """Peak above the inputs at T=8192, d=4096, V=128,256 (a [T, V] bf16 tensor is 2.1 GB): the
        stored chunk (1 GiB budget) and its partials, the fp32 gradients and their bf16 casts, no more."""
        T, d, V = 8192, 4096, 128_256
        *leaves, y = _inputs(T, d, V, torch.bfloat16, 0, bias=False, device="cuda")
        h, w = leaves[:2]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = fused_linear_cross_entropy(h, w, y, reduction="sum")
        dh, dw = torch.autograd.grad(loss, (h, w))
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        chunk = 4096 * V * 2 + 4096 * 1003 * 8
        budget = chunk + (4 + 2) * V * d + (4 + 2) * T * d + (64 << 20)
        assert peak <= budget, f"peak {peak / 2**30:.2f} GiB over budget {budget / 2**30:.2f} GiB"
