"""The Triton varlen attention against an fp32/fp64 per-document reference.

CPU tests run the kernels in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
any kernel module is imported), in fp32 and fp16 only (the interpreter computes bf16 wrongly), on small
grids. ``TestGPU`` runs the compiled kernels (bf16/fp16, head dims 64 and 128, long documents); it needs
a CUDA device and ``TRITON_INTERPRET=0`` (``python -m benchmarks.gpu_check`` runs it that way).

Error rule (STYLE.md): the kernel's error against the high-precision reference is at most k times the
error of PyTorch doing the same attention in the same dtype, plus a small tolerance; k = 2 for the
output and the log-sum-exp, 3 for gradients.
"""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch

from rdistill.kernels._common import ENV_DEBUG, interpreting

va = importlib.import_module("rdistill.kernels.varlen_attention")

NEEDS_TRITON = pytest.mark.skipif(not va.triton_available(), reason="triton is not installed")
INTERPRETED = pytest.mark.skipif(
    not (va.triton_available() and interpreting()), reason="CPU kernel tests need triton and TRITON_INTERPRET=1"
)
F16, F32 = torch.float16, torch.float32


def _inputs(lengths, hq, hkv, d, dtype, *, extra=0, device="cpu", seed=0):
    """q, k, v [T, H, D] with ``extra`` rows past the last document, cu_seqlens, and an upstream gradient."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    T = sum(lengths) + extra
    q, k, v, do = (torch.randn(T, h, d, generator=g).to(device, dtype) for h in (hq, hkv, hkv, hq))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
    return q, k, v, cu, do


def _per_document(q, k, v, lengths, *, dtype, causal=True):
    """Attention of each document alone, in ``dtype`` throughout (the reference at fp64, 'PyTorch in the
    same dtype' at fp16/bf16/fp32); returns output [T, Hq, D] (zero past the end) and lse [Hq, T]."""
    groups = q.shape[1] // k.shape[1]
    scale = q.shape[-1] ** -0.5
    out = torch.zeros(q.shape, dtype=dtype, device=q.device)
    lse = torch.zeros(q.shape[1], q.shape[0], dtype=torch.float64, device=q.device)
    start = 0
    for n in lengths:
        qi, ki, vi = (x[start : start + n].to(dtype).transpose(0, 1) for x in (q, k, v))
        ki, vi = ki.repeat_interleave(groups, 0), vi.repeat_interleave(groups, 0)
        s = (qi @ ki.transpose(1, 2)) * scale
        if causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        lse[:, start : start + n] = torch.logsumexp(s.double(), -1)
        out = out.index_copy(0, torch.arange(start, start + n, device=q.device), (s.softmax(-1) @ vi).transpose(0, 1))
        start += n
    return out, lse


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _check_against_reference(lengths, hq, hkv, d, dtype, *, ref_dtype, causal=True, extra=3, device="cpu"):
    q, k, v, cu, do = _inputs(lengths, hq, hkv, d, dtype, extra=extra, device=device, seed=sum(lengths) + hq + d)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = va.varlen_attention(*leaves, cu, max(lengths), causal=causal, return_lse=True, impl="triton")
    grads = torch.autograd.grad(out, leaves, do)

    def reference(work_dtype):
        xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        o, l = _per_document(*xs, lengths, dtype=work_dtype, causal=causal)
        return o, l, torch.autograd.grad(o, xs, do.to(work_dtype))

    ref_out, ref_lse, ref_grads = reference(ref_dtype)
    pt_out, pt_lse, pt_grads = reference(dtype)
    T = sum(lengths)
    for name, got in (("out", out), ("lse", lse), ("dq", grads[0]), ("dk", grads[1]), ("dv", grads[2])):
        assert torch.isfinite(got).all(), f"{name} has non-finite values"
    assert not out[T:].any(), "rows past the end must be zero"
    assert not any(g[T:].any() for g in grads), "gradients of rows past the end must be zero"
    tol = 1e-5 if dtype == torch.float32 else 1e-4
    assert _max_err(out, ref_out) <= 2 * _max_err(pt_out, ref_out) + tol
    assert _max_err(lse, ref_lse) <= 2 * _max_err(pt_lse, ref_lse) + tol
    for name, got, ref, pt in zip(("dq", "dk", "dv"), grads, ref_grads, pt_grads):
        scale = max(1.0, ref.abs().max().item())
        assert _max_err(got, ref) <= 3 * _max_err(pt, ref) + tol * scale, name


# lengths, Hq, Hkv, head dim, dtype: each case picked to exercise something, the whole grid kept small
# because the interpreter's cost is per program instance.
CPU_CASES = [
    ((1,), 2, 2, 16, F32),
    ((2, 17), 4, 2, 32, F16),
    ((1, 2, 17, 113, 129), 4, 1, 16, F32),
    ((1, 2, 17, 113, 129), 7, 1, 16, F16),
    ((129, 1, 113), 2, 2, 64, F16),
    ((300, 17, 1), 4, 4, 32, F32),
    ((40, 41, 45, 3), 4, 2, 64, F32),
    ((70, 9), 2, 1, 128, F32),
    ((70, 9), 2, 1, 128, F16),
]


@INTERPRETED
@pytest.mark.parametrize("lengths,hq,hkv,d,dtype", CPU_CASES, ids=lambda x: str(x).replace(" ", ""))
def test_matches_per_document_reference(lengths, hq, hkv, d, dtype):
    _check_against_reference(lengths, hq, hkv, d, dtype, ref_dtype=torch.float64)


@INTERPRETED
@pytest.mark.parametrize("lengths", [(1, 17, 129), (300, 2)])
def test_not_causal_matches_reference(lengths):
    _check_against_reference(lengths, 2, 1, 16, F32, ref_dtype=torch.float64, causal=False)


@INTERPRETED
def test_strided_views_loose_max_seqlen_and_bf16_in_interpreter():
    """q/k/v as the transposed [H, T, D] views a Hugging Face model passes; max_seqlen larger than needed;
    bf16 (computed in fp32 under the interpreter) agrees with the reference to bf16 precision."""
    lengths = (33, 64, 5)
    q, k, v, cu, _ = _inputs(lengths, 4, 2, 32, F32)
    qt, kt, vt = (x.transpose(0, 1).contiguous().transpose(0, 1) for x in (q, k, v))
    assert qt.stride(0) != qt.shape[1] * qt.shape[2]
    out = va.varlen_attention(qt, kt, vt, cu, 64, impl="triton")
    torch.testing.assert_close(out, va.varlen_attention(q, k, v, cu, 64, impl="triton"), rtol=0, atol=0)
    loose = va.varlen_attention(q, k, v, cu, 300, impl="triton")  # a max_seqlen above the longest document is fine
    torch.testing.assert_close(out, loose, rtol=0, atol=0)
    ref, _ = _per_document(q, k, v, lengths, dtype=torch.float64)
    out_bf16 = va.varlen_attention(*(x.bfloat16() for x in (q, k, v)), cu, 64, impl="triton")
    assert out_bf16.dtype == torch.bfloat16
    assert _max_err(out_bf16, ref) < 2e-2


@INTERPRETED
def test_perturbing_one_document_moves_no_other():
    lengths = (17, 113, 1, 40)
    q, k, v, cu, do = _inputs(lengths, 4, 2, 16, F16, extra=2)

    def run(q, k, v):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = va.varlen_attention(*leaves, cu, max(lengths), impl="triton")
        return (out.detach(), *torch.autograd.grad(out, leaves, do))

    base = run(q, k, v)
    again = run(q, k, v)
    assert all(torch.equal(a, b) for a, b in zip(base, again)), "two runs must be bitwise equal (no atomics)"
    s, e = 17, 130
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[s:e] += torch.randn(x[s:e].shape, generator=torch.Generator().manual_seed(9)).to(x.dtype)
    pert = run(q2, k2, v2)
    outside = torch.ones(q.shape[0], dtype=torch.bool)
    outside[s:e] = False
    for name, a, b in zip(("out", "dq", "dk", "dv"), base, pert):
        assert torch.equal(a[outside], b[outside]), f"{name} moved outside the perturbed document"
        assert not torch.equal(a[s:e], b[s:e]), f"{name} of the perturbed document did not move"


@INTERPRETED
@pytest.mark.parametrize("causal,dtype", [(True, F16), (False, F16), (True, F32)])
def test_executed_flops_count_the_tiles_that_ran(causal, dtype):
    """The kernels count the tiles they visit; varlen_attention_flops(impl='triton') predicts them."""
    lengths = (1, 2, 17, 113, 129, 300)
    hq, hkv, d = 3, 1, 16
    q, k, v, cu, do = _inputs(lengths, hq, hkv, d, dtype)
    p = va._Params(max(lengths), causal, d**-0.5)
    tiles = torch.zeros(3, dtype=torch.int32)
    out, lse = va._triton_forward(q, k, v, cu, p, tiles=tiles)
    va._triton_backward(do, q, k, v, out, lse, cu, p, tiles=tiles)
    b = va.triton_blocks(dtype)
    want = va.triton_tiles(lengths, causal=causal, blocks=b)
    assert tiles.tolist() == [hq * want["fwd"], hq * want["dkdv"], hq * want["dq"]]
    flops = va.varlen_attention_flops(lengths, hq, d, causal=causal, impl="triton", dtype=dtype)
    assert flops["executed_fwd"] == 4 * d * b.fwd_m * b.fwd_n * tiles[0].item()
    dkdv_tiles, dq_tiles = tiles[1].item(), tiles[2].item()
    assert flops["executed_bwd"] == d * (8 * b.dkdv_m * b.dkdv_n * dkdv_tiles + 6 * b.dq_m * b.dq_n * dq_tiles)
    assert flops["executed_fwd"] >= flops["useful_fwd"] and flops["executed_bwd"] >= flops["useful_bwd"]


def test_flops_formula_worked_numbers():
    """One causal 300-token document in bf16: forward 3 query blocks of 128 visit 2 + 4 + 5 key blocks of
    64; dK/dV 3 key blocks of 128 visit 10 + 6 + 2 query blocks of 32; dQ 4 + 8 + 10 key blocks of 32."""
    assert va.triton_tiles([300]) == {"fwd": 11, "dkdv": 10 + 6 + 2, "dq": 4 + 8 + 10}
    f = va.varlen_attention_flops([300], 2, 64, impl="triton")
    assert f["useful_fwd"] == 4 * 2 * 64 * 300 * 301 // 2
    assert f["executed_fwd"] == 4 * 2 * 64 * 11 * 128 * 64
    assert va.varlen_attention_flops([300], 2, 64)["executed_fwd"] == 4 * 2 * 64 * 300 * 300
    with pytest.raises(ValueError, match="resolve_impl"):
        va.varlen_attention_flops([300], 2, 64, impl="auto")


@NEEDS_TRITON
def test_resolve_impl_heeds_head_dim_dtype_and_flash_attn(monkeypatch):
    """What only attention has; the contract both kernels share is in test_kernel_contract.py."""
    monkeypatch.delenv(va.ENV_IMPL, raising=False)
    assert va.resolve_impl("auto", torch.device("cuda", 0), head_dim=128, dtype=torch.bfloat16) == "triton"
    assert va.resolve_impl("auto", "cuda", head_dim=80) == "torch"
    assert va.resolve_impl("auto", "cuda", dtype=torch.float64) == "torch"
    assert va.resolve_impl("torch", "cuda") == "torch"
    if not va.flash_attn_available():
        with pytest.raises(ImportError, match="flash-attn"):
            va.resolve_impl("flash_attn", "cuda")
        monkeypatch.setenv(va.ENV_IMPL, "flash_attn")
        with pytest.raises(ImportError, match="flash-attn"):
            va.resolve_impl("auto", "cuda")


@INTERPRETED
def test_clear_errors():
    q, k, v, cu, _ = _inputs((5,), 2, 2, 24, F32)
    with pytest.raises(ValueError, match="head dims"):
        va.varlen_attention(q, k, v, cu, 5, impl="triton")
    q, k, v, cu, _ = _inputs((5,), 2, 2, 16, F32)
    with pytest.raises(TypeError, match="host int"):
        va.varlen_attention(q, k, v, cu, torch.tensor(5), impl="triton")
    with pytest.raises(ValueError, match="float64"):
        va.varlen_attention(q.double(), k.double(), v.double(), cu, 5, impl="triton")


@INTERPRETED
def test_debug_flag_checks_max_seqlen(monkeypatch):
    q, k, v, cu, _ = _inputs((5, 9), 2, 2, 16, F32)
    monkeypatch.setenv(ENV_DEBUG, "1")
    with pytest.raises(ValueError, match="max_seqlen=5"):
        va.varlen_attention(q, k, v, cu, 5, impl="triton")


STUDENT_SIZES = dict(vocab_size=71, hidden_size=64, intermediate_size=96, max_position_embeddings=256)
KV_HEADS = {"qwen2": dict(num_key_value_heads=2), "llama": dict(num_key_value_heads=1, head_dim=32)}


def _loss_and_grads(net, batch, attention: str):
    from rdistill.model import KernelPlan, packed_loss_sum

    net.zero_grad()
    plan = KernelPlan(attention=attention, loss="torch", dtype=next(net.parameters()).dtype)
    loss = packed_loss_sum(net, batch, plan)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@INTERPRETED
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_hf_student_with_triton_matches_reference_attention(kind, make_student):
    """The registered attention with a KernelPlan naming 'triton' gives the same loss and parameter
    gradients as with the PyTorch twin, on one packed row."""
    from rdistill.data.batch import PackedBatch

    g = torch.Generator().manual_seed(3)
    docs = [(torch.randint(0, 71, (n,), generator=g).tolist(), [i >= n // 3 for i in range(n)]) for n in (1, 37, 90, 2)]
    batch = PackedBatch.from_documents(docs)
    net = make_student(kind, **STUDENT_SIZES, **KV_HEADS[kind])
    ref_loss, ref_grads = _loss_and_grads(net, batch, "torch")
    loss, grads = _loss_and_grads(net, batch, "triton")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for n, got in grads.items():
        torch.testing.assert_close(got, ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)


CUDA_READY = va.triton_available() and torch.cuda.is_available() and not interpreting()


@pytest.mark.skipif(not CUDA_READY, reason="needs triton, a CUDA GPU and TRITON_INTERPRET=0 (compiled kernels)")
class TestGPU:
    """Compiled kernels on a GPU: bf16/fp16, head dims 64 and 128, documents up to several thousand tokens."""

    # Each distinct (dtype, head dim, GQA ratio) compiles its own kernels (seconds each): keep the list short.
    GPU_CASES = [
        ((1, 2, 17, 113, 129), 8, 8, 128, torch.bfloat16),
        ((1000, 1, 2500, 300), 8, 2, 128, torch.bfloat16),
        ((4096, 77), 8, 1, 64, torch.bfloat16),
        ((640, 3, 1029), 7, 1, 128, torch.float16),
        ((1, 2, 17, 113, 129, 700), 8, 2, 64, torch.float16),
    ]

    @pytest.mark.parametrize("lengths,hq,hkv,d,dtype", GPU_CASES, ids=lambda x: str(x).replace(" ", ""))
    def test_matches_reference(self, lengths, hq, hkv, d, dtype):
        _check_against_reference(lengths, hq, hkv, d, dtype, ref_dtype=torch.float32, device="cuda")

    @pytest.mark.parametrize("causal", [True, False])
    def test_fp32(self, causal):
        lengths = (513, 1, 64, 200)
        _check_against_reference(lengths, 4, 2, 64, F32, ref_dtype=torch.float64, causal=causal, device="cuda")

    def test_no_host_sync(self):
        q, k, v, cu, do = _inputs((3000, 1, 700), 8, 2, 128, torch.bfloat16, device="cuda")
        leaves = [x.requires_grad_() for x in (q, k, v)]
        va.varlen_attention(*leaves, cu, 3000, impl="triton").backward(do)  # autotuning may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = va.varlen_attention(*leaves, cu, 3000)
            out.backward(do)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert torch.isfinite(out).all()

    def test_executed_tiles_on_gpu(self):
        lengths = (1, 130, 1000, 4097)
        q, k, v, cu, do = _inputs(lengths, 4, 2, 128, torch.bfloat16, device="cuda")
        p = va._Params(max(lengths), True, 128**-0.5)
        out, lse = va._triton_forward(q, k, v, cu, p)
        va._triton_backward(do, q, k, v, out, lse, cu, p)  # autotune first: its trial runs would count too
        tiles = torch.zeros(3, dtype=torch.int32, device="cuda")
        out, lse = va._triton_forward(q, k, v, cu, p, tiles=tiles)
        va._triton_backward(do, q, k, v, out, lse, cu, p, tiles=tiles)
        want = va.triton_tiles(lengths, blocks=va.triton_blocks(torch.bfloat16))
        assert tiles.tolist() == [4 * want["fwd"], 4 * want["dkdv"], 4 * want["dq"]]

    @pytest.mark.parametrize("kind", ["qwen2", "llama"])
    def test_hf_student_compiled(self, kind, monkeypatch, make_student):
        from rdistill.data.batch import PackedBatch
        from rdistill.model import resolve_kernels

        g = torch.Generator().manual_seed(5)
        docs = [(torch.randint(0, 71, (n,), generator=g).tolist(), [True] * n) for n in (1, 200, 31, 250)]
        batch = PackedBatch.from_documents(docs).to("cuda")
        net = make_student(kind, **STUDENT_SIZES, **KV_HEADS[kind]).cuda()
        ref_loss, ref_grads = _loss_and_grads(net, batch, "torch")
        monkeypatch.delenv(va.ENV_IMPL, raising=False)
        assert resolve_kernels(net, "cuda").attention == "triton"
        loss, grads = _loss_and_grads(net, batch, "triton")
        torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-4)
        for n, got in grads.items():
            torch.testing.assert_close(got, ref_grads[n], rtol=1e-3, atol=1e-4, msg=n)
