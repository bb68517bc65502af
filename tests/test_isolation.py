"""Packed documents must not see each other: perturb one, the others' logits and gradients stay put.

transformers 5.x detects packing from position_ids only when no cache object exists, and a custom
attention gets no mask: rdistill's attention takes the PackedBatch's cu_seqlens instead, so isolation
does not depend on either.
"""

import pytest
import torch

from rdistill.data.batch import PackedBatch
from rdistill.model import packed_hidden_states, packed_loss_sum, resolve_kernels

LENGTHS = (7, 1, 23, 12)


SIZES = {"qwen2": {}, "llama": dict(num_attention_heads=6, num_key_value_heads=3, head_dim=8)}


def _docs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 61, (n,), generator=g).tolist(), [i >= n // 3 for i in range(n)]) for n in LENGTHS]


def _logits_and_grads(net, batch):
    net.zero_grad()
    kernels = resolve_kernels(net, "cpu")
    hidden = packed_hidden_states(net, batch, kernels)
    logits = net.lm_head(hidden)
    loss = packed_loss_sum(net, batch, kernels)
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_perturbing_one_document_moves_nothing_else(kind, make_student):
    net = make_student(kind, **SIZES[kind]).double()
    docs = _docs(1)
    base = PackedBatch.from_documents(docs)
    changed = list(docs)
    ids, mask = changed[2]
    changed[2] = ([(t + 5) % 61 for t in ids], mask)
    pert = PackedBatch.from_documents(changed)
    la, _ = _logits_and_grads(net, base)
    lb, _ = _logits_and_grads(net, pert)
    cu = base.cu_seqlens.tolist()
    for d in range(len(LENGTHS)):
        s, e = cu[d], cu[d + 1]
        same = torch.equal(la[s:e], lb[s:e]) or torch.allclose(la[s:e], lb[s:e], atol=1e-12, rtol=0)
        assert same == (d != 2), f"document {d}"


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_packed_equals_each_document_alone(kind, make_student):
    """Logits and summed gradients of the packed row equal those of the documents run one by one."""
    net = make_student(kind, **SIZES[kind]).double()
    docs = _docs(2)
    logits, grads = _logits_and_grads(net, PackedBatch.from_documents(docs))
    alone_logits, alone_grads = [], {}
    for doc in docs:
        lg, gr = _logits_and_grads(net, PackedBatch.from_documents([doc]))
        alone_logits.append(lg)
        for n, g in gr.items():
            alone_grads[n] = alone_grads.get(n, 0) + g
    torch.testing.assert_close(logits, torch.cat(alone_logits), rtol=1e-10, atol=1e-10)
    for n, g in grads.items():
        torch.testing.assert_close(g, alone_grads[n], rtol=1e-9, atol=1e-10, msg=n)
