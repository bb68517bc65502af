"""PackedBatch: the one batch format from the packer to the kernels.

A packed batch is a flat stream of ``T`` tokens made of ``n`` whole documents laid end to end.
There is no padding and no batch dimension: documents are delimited by ``cu_seqlens``.

Fields
    input_ids     int64 [T]    token ids
    labels        int64 [T]    next-token targets, already shifted *within* each document:
                               ``labels[t]`` is the token that position ``t`` must predict, or
                               ``IGNORE_INDEX`` (-100) where there is nothing to learn: the last token
                               of every document (its successor belongs to the next document) and every
                               position whose target is a prompt token. So a label never points into the
                               next document, and a loss kernel needs no shift.
    position_ids  int64 [T]    0..l_i-1 restarting at every document
    cu_seqlens    int32 [n+1]  document boundaries, cu_seqlens[0] = 0, cu_seqlens[-1] = T
    max_seqlen    int          longest document, a host integer (no device sync to read it)
    doc_lengths   tuple[int]   host copy of the document lengths (for the FLOP ledger)
    num_loss_tokens int        host count of labels != IGNORE_INDEX
    doc_ids       tuple[int]   index of each document in the arm's example list (traceability)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    doc_lengths: tuple[int, ...]
    num_loss_tokens: int
    doc_ids: tuple[int, ...] = field(default=())

    @property
    def num_tokens(self) -> int:
        return int(self.cu_seqlens_host[-1]) if self.doc_lengths else 0

    @property
    def num_docs(self) -> int:
        return len(self.doc_lengths)

    @property
    def cu_seqlens_host(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.doc_lengths, dtype=np.int64)])

    def to(self, device: torch.device | str) -> PackedBatch:
        return replace(
            self,
            input_ids=self.input_ids.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            position_ids=self.position_ids.to(device, non_blocking=True),
            cu_seqlens=self.cu_seqlens.to(device, non_blocking=True),
        )

    @classmethod
    def from_documents(
        cls,
        docs: list[tuple[list[int] | np.ndarray, list[int] | np.ndarray]],
        doc_ids: tuple[int, ...] | None = None,
    ) -> PackedBatch:
        """Build a batch from ``(input_ids, loss_mask)`` pairs, one per document.

        ``loss_mask[t]`` is true where token ``t`` is part of the answer (it is learnt). The label of
        position ``t`` is ``input_ids[t + 1]`` when ``loss_mask[t + 1]`` holds, else ``IGNORE_INDEX``.
        """
        if not docs:
            raise ValueError("a PackedBatch needs at least one document")
        lengths = [len(ids) for ids, _ in docs]
        if min(lengths) < 1:
            raise ValueError("documents must hold at least one token")
        ids = np.concatenate([np.asarray(d[0], dtype=np.int64) for d in docs])
        labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        pos = np.empty(ids.shape, dtype=np.int64)
        start = 0
        for (doc_ids_, mask), n in zip(docs, lengths):
            mask = np.asarray(mask, dtype=bool)
            doc = np.asarray(doc_ids_, dtype=np.int64)
            nxt = np.where(mask[1:], doc[1:], IGNORE_INDEX)
            labels[start : start + n - 1] = nxt
            pos[start : start + n] = np.arange(n)
            start += n
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return cls(
            input_ids=torch.from_numpy(ids),
            labels=torch.from_numpy(labels),
            position_ids=torch.from_numpy(pos),
            cu_seqlens=torch.from_numpy(cu),
            max_seqlen=max(lengths),
            doc_lengths=tuple(lengths),
            num_loss_tokens=int((labels != IGNORE_INDEX).sum()),
            doc_ids=tuple(doc_ids) if doc_ids is not None else tuple(range(len(docs))),
        )
