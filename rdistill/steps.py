"""What a training step is, as the trainer plans and records it: a document's size and cost, a step's
plan, its metrics line, and an arm's outcome (rdistill.train makes them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from rdistill.data.batch import PackedBatch
from rdistill.flops.ledger import FlopLedger, ModelShape, StepFlops, train_step_flops
from rdistill.schedule import Schedule

Document = tuple[np.ndarray, np.ndarray]  # (input_ids, loss_mask)


def document_size(doc: Document, capacity: int) -> tuple[int, int]:
    """(tokens, loss tokens) of one document as a pack of ``capacity`` tokens holds it (cut to fit)."""
    ids, mask = doc
    return min(len(ids), capacity), int(mask[1:capacity].sum())


def document_cost(shape: ModelShape, doc: Document, capacity: int, kind: str) -> int:
    """FLOPs (of the ledger's count ``kind``) of training on one document alone."""
    length, loss_tokens = document_size(doc, capacity)
    return train_step_flops(shape, [length], loss_tokens).total(kind)


@dataclass
class StepRecord:
    """One line of metrics.jsonl."""

    step: int
    lr: float
    loss: float
    tokens: int
    loss_tokens: int
    samples: int
    seconds: float
    flops: dict[str, int]
    budget_fraction: float
    trimmed: bool
    mfu: float | None = None  # exact FLOPs of the step / seconds / device peak
    hfu: float | None = None  # executed FLOPs of the step / seconds / device peak
    peak_memory: int | None = None  # bytes: CUDA max allocated, or the process's peak resident set on CPU
    skipped: bool = False  # fp16: a gradient overflowed, the optimizer step was skipped (loss scale halved)

    def to_json(self) -> dict:
        return asdict(self)


TIMING_FIELDS = ("seconds", "mfu", "hfu", "peak_memory")
"""StepRecord fields that measure the machine, not the training (they differ between identical runs)."""


@dataclass
class ArmOutcome:
    steps: int
    samples: int
    train_tokens: int
    loss_tokens: int
    epochs: float
    seconds: float
    final_loss: float | None
    ledger: FlopLedger
    stopped_by: str  # "budget" | "samples" | "data"
    step_seconds: float = 0.0  # time in optimizer steps only (no data preparation)
    peak_flops: float | None = None
    peak_memory: int | None = None  # the largest step's peak memory, bytes
    module: torch.nn.Module | None = None  # what trained: the student as DDP or FSDP2 wrapped it (rdistill.distributed)
    schedule: Schedule | None = None

    @property
    def mfu(self) -> float | None:
        """Exact (useful) FLOPs per second of step time over the device peak."""
        if not self.peak_flops or not self.step_seconds:
            return None
        return self.ledger.total("exact") / self.step_seconds / self.peak_flops

    @property
    def hfu(self) -> float | None:
        """Executed FLOPs per second of step time over the device peak."""
        if not self.peak_flops or not self.step_seconds:
            return None
        return self.ledger.total("executed") / self.step_seconds / self.peak_flops


@dataclass
class StepPlan:
    """What one optimizer step will train on and exactly what it will cost."""

    packs: list[list[int]]
    batches: list[PackedBatch]
    cost: StepFlops
    trimmed: bool

    @property
    def num_samples(self) -> int:
        return sum(len(p) for p in self.packs)
