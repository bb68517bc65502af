"""Auditing FLOP counts: the ledger's exact and executed counts beside the paper's formula, 6ND and
what torch.utils.flop_counter.FlopCounterMode measures, for one student on one arm's documents.

Documents come as (length, loss tokens) pairs: from paired data through the tokenizer, or from a
named length distribution of rdistill.flops.distributions (``ift-like``: lognormal, median 300 tokens;
``reasoning-like``: median 3,000, tail to 32k, answers 90% of each document; ``sample_lengths`` is
re-exported here). They are packed as training packs them, and each
pack is counted by rdistill.flops.train_step_flops. The FlopCounterMode measurement runs a real forward
and backward of the student on a sample of packs (SDPA under the MATH backend, so that attention is
counted; in-place addmm given its formula), which is only possible for students that fit on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rdistill.data.batch import PackedBatch
from rdistill.data.packing import pack
from rdistill.flops.ledger import COMPONENTS, FlopLedger, ModelShape, generation_flops, train_step_flops
from rdistill.model import KernelPlan, packed_loss_sum


@dataclass
class CountReport:
    ledger: FlopLedger
    num_docs: int
    num_packs: int
    tokens: int
    measured: dict[str, int] = field(default_factory=dict)  # FlopCounterMode on a sample of packs
    measured_ledger: dict[str, int] = field(default_factory=dict)  # the ledger on the same sample

    def table(self) -> list[dict]:
        """Rows per component and a total: exact, executed, paper, and the ratios to exact."""
        rows = []
        for name in (*COMPONENTS, "total"):
            def get(kind: str) -> int:
                comps = self.ledger.components(kind)
                return sum(comps.values()) if name == "total" else comps[name]

            row = {"component": name, "exact": get("exact"), "executed": get("executed"), "paper": get("paper")}
            if name == "total":
                row["six_nd"] = self.ledger.total("six_nd")
                row["six_nd_non_embedding"] = self.ledger.total("six_nd_non_embedding")
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {
            "num_docs": self.num_docs,
            "num_packs": self.num_packs,
            "tokens": self.tokens,
            "rows": self.table(),
            "flop_counter": {"measured": self.measured, "ledger_executed": self.measured_ledger} if self.measured else None,
        }


def count(shape: ModelShape, docs: Sequence[tuple[int, int]], pack_tokens: int) -> CountReport:
    """Pack (length, loss tokens) documents and count every pack with the ledger."""
    lengths = [l for l, _ in docs]
    plan = pack(lengths, pack_tokens, mode="bf", overflow="truncate")
    ledger = FlopLedger()
    for p in plan.packs:
        lens = [min(docs[i][0], pack_tokens) for i in p]
        loss = sum(min(docs[i][1], n - 1) for i, n in zip(p, lens))
        ledger.add(train_step_flops(shape, lens, loss))
    return CountReport(ledger=ledger, num_docs=len(docs), num_packs=len(plan.packs), tokens=ledger.tokens)


def _addmm_inplace(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    (m, k), (_, n) = a_shape, b_shape
    return 2 * m * n * k


def torch_kernels(net: torch.nn.Module) -> KernelPlan:
    """The PyTorch twins of both kernels: the only ones FlopCounterMode can see into."""
    return KernelPlan(attention="torch", loss="torch", dtype=next(net.parameters()).dtype)


def measure_with_flop_counter(net: torch.nn.Module, batches: Sequence[PackedBatch]) -> int:
    """Matmul FLOPs of forward + backward of ``batches`` (run with ``torch_kernels``) as FlopCounterMode
    counts them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    kernels = torch_kernels(net)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_inplace})
    with sdpa_kernel(SDPBackend.MATH), counter:
        for b in batches:
            packed_loss_sum(net, b, kernels).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure_sample(
    net: torch.nn.Module, shape: ModelShape, docs: Sequence[tuple[list[int], list[bool]]], pack_tokens: int, max_packs: int
) -> tuple[int, int]:
    """(FlopCounterMode count, ledger executed count) on the first ``max_packs`` packs of real documents."""
    plan = pack([len(ids) for ids, _ in docs], pack_tokens, mode="bf", overflow="truncate")
    batches = [
        PackedBatch.from_documents([(docs[i][0][:pack_tokens], docs[i][1][:pack_tokens]) for i in p])
        for p in plan.packs[:max_packs]
    ]
    measured = measure_with_flop_counter(net, batches)
    k = torch_kernels(net)
    ledger = sum(
        train_step_flops(shape, list(b.doc_lengths), b.num_loss_tokens, attn_impl=k.attention, ce_impl=k.loss,
                         attn_dtype=k.dtype).total("executed")
        for b in batches
    )
    return measured, ledger


def inference_table(shape: ModelShape, prompt_len: int, gen_len: int) -> dict[str, int]:
    """Generation FLOPs of one query: exact (KV cache) and the paper's prefill + decode formula."""
    return generation_flops(shape, prompt_len, gen_len)


DISAGREEMENTS = (
    ("embedding", "The paper counts the embedding lookup as a 2 l V d matmul; it is a gather (0 FLOPs)."),
    ("projections", "The paper gives K and V the full width d (6 l d^2); with grouped-query attention they "
     "are h_kv/h_q as wide."),
    ("attention", "The paper counts the full l^2 score matrix and 3 l^2 h softmax FLOPs; causal attention "
     "needs l(l+1)/2, and the executed count shows what the kernel really computed (padding, full tiles)."),
    ("mlp", "The paper counts two MLP matrices (4 l d d_ff); gated (SwiGLU) students have three (6 l d d_ff)."),
    ("lm_head", "The paper computes logits at every position; the fused loss only multiplies labelled "
     "positions (prompt tokens cost nothing)."),
    ("six_nd", "6ND has no attention term at all (under-counts long documents) and charges every parameter, "
     "embedding included, to every token, and charges the LM head to prompt tokens."),
)
