"""Training one arm to an exact FLOP budget (or, in the paper's mode, for a fixed number of samples).

Budget control. Before every optimizer step the trainer knows that step's FLOPs exactly (they are a
function of the documents' lengths and loss tokens, see rdistill.flops.ledger), so it never overshoots: when
the next full step would pass the budget, the step is trimmed to the longest prefix of its documents
that still fits, run, and training stops. The run therefore ends at most one document's FLOPs below
the budget (for the built-in data, well under 0.1% of it) and never above. ``budget_kind`` picks the
count that is compared with the budget: ``exact`` (the ledger's useful FLOPs), ``paper`` (the paper's
per-sample formula) or ``6nd``.

Learning rate: AdamW with a warmup-stable-decay schedule defined on the fraction of the budget spent
(of the samples seen, in samples mode): linear warmup over ``warmup_frac``, constant, then linear decay
over the last ``decay_frac`` to ``final_lr_frac`` of the peak (the paper: 150 warmup steps, 300 decay
steps to 10%).

Loss: the sum of token cross-entropies of all micro-batches of a step divided by the number of loss
tokens in the whole step, so neither packing nor gradient accumulation changes it. The loss stays on
the device during a step and is read once per step (for logging and the finiteness check).

A ``Trainer`` has three parts per step: ``plan`` (the step's packs, its exact cost from the resolved
``KernelPlan``, trimmed to the budget), ``run`` (forward and backward per pack, clipping, the optimizer
step) and ``account`` (the ledger, counters and the step's record).
"""


from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rdistill.config import TrainConfig
from rdistill.data import curriculum
from rdistill.data.batch import PackedBatch
from rdistill.data.packing import auto_pack_tokens, pack
from rdistill.flops.hardware import peak_flops
from rdistill.flops.ledger import FlopLedger, ModelShape, StepFlops, train_step_flops
from rdistill.model import KernelPlan, packed_loss_sum, resolve_kernels

Document = tuple[np.ndarray, np.ndarray]  # (input_ids, loss_mask)
Segments = Callable[[np.random.Generator], Iterator[np.ndarray]]
TOTALS = ("exact", "executed", "paper", "six_nd")


def document_size(doc: Document, capacity: int) -> tuple[int, int]:
    """(tokens, loss tokens) of one document as a pack of ``capacity`` tokens holds it (cut to fit)."""
    ids, mask = doc
    return min(len(ids), capacity), int(mask[1:capacity].sum())


def document_cost(shape: ModelShape, doc: Document, capacity: int, kind: str) -> int:
    """FLOPs (of the ledger's count ``kind``) of training on one document alone."""
    length, loss_tokens = document_size(doc, capacity)
    return train_step_flops(shape, [length], loss_tokens).total(kind)


def wsd_lr(peak: float, frac: float, cfg: TrainConfig) -> float:
    """Warmup-stable-decay learning rate at ``frac`` in [0, 1] of the run."""
    if cfg.warmup_frac > 0 and frac < cfg.warmup_frac:
        return peak * max(frac, 1e-3 * cfg.warmup_frac) / cfg.warmup_frac
    decay_start = 1.0 - cfg.decay_frac
    if frac <= decay_start or cfg.decay_frac == 0:
        return peak
    t = min((frac - decay_start) / cfg.decay_frac, 1.0)
    return peak * (1.0 - t * (1.0 - cfg.final_lr_frac))


class NonFiniteLoss(RuntimeError):
    pass


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

    def to_json(self) -> dict:
        return asdict(self)


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


def _optimizer(net: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    """AdamW; matrices decay by ``weight_decay``, vectors (norms, biases) never."""
    decay, no_decay = [], []
    for p in dict.fromkeys(net.parameters()):
        (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=cfg.betas,
    )


class Trainer:
    """Trains ``net`` in place on ``docs`` until the budget (or sample count) of ``cfg`` is spent.

    ``segments(rng)`` yields arrays of indices into ``docs``, each packed and trained on its own before
    the next (rdistill.data.curriculum makes them for an arm); by default, epochs over all of ``docs``.
    ``kernels`` is the run's resolved KernelPlan: the forward runs it and the ledger counts it.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        docs: Sequence[Document],
        cfg: TrainConfig,
        *,
        lr: float,
        seed: int,
        kernels: KernelPlan,
        segments: Segments | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not docs:
            raise ValueError("no training documents")
        self.net, self.docs, self.lr, self.kernels, self.device = net, docs, lr, kernels, device
        self.capacity = cfg.pack_tokens or auto_pack_tokens(max(len(d[0]) for d in docs))
        self.cfg = cfg
        self.segments = segments or self._all_docs
        self.shape = ModelShape.from_model(net)
        self.kind = cfg.ledger_kind
        self.ledger = FlopLedger()
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.opt = _optimizer(net, cfg, lr)
        self.peak = peak_flops(device, kernels.dtype)
        self.steps = self.samples = self.tokens = self.loss_tokens = 0
        self.step_seconds = 0.0

    def _all_docs(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return curriculum.segments(curriculum.ArmSpec("all", 0.0, "mixed"), len(self.docs), rng, samples=self.cfg.samples)

    def spent_fraction(self) -> float:
        """How much of the budget (or of the sample count) is spent."""
        if self.cfg.budget_flops is not None:
            return self.ledger.total(self.kind) / self.cfg.budget_flops
        return self.samples / self.cfg.samples

    def step_stream(self) -> Iterator[list[list[int]]]:
        """Steps as lists of packs (each a list of document indices); packs shuffled within a segment."""
        for order in self.segments(self.rng):
            lengths = [len(self.docs[i][0]) for i in order]
            plan = pack(lengths, self.capacity, mode=self.cfg.pack_mode, overflow=self.cfg.overflow)
            if len(order) and not plan.packs:  # e.g. --overflow drop dropped them all: never loop forever
                raise ValueError(f"all {len(order)} documents of a segment were dropped (--overflow "
                                 f"{self.cfg.overflow}, --pack-tokens {self.capacity}); nothing to train on")
            packs = [[int(order[j]) for j in p] for p in plan.packs]
            packs = [packs[i] for i in self.rng.permutation(len(packs))]
            for i in range(0, len(packs), self.cfg.packs_per_step):
                yield packs[i : i + self.cfg.packs_per_step]

    def _batch(self, idx: list[int]) -> PackedBatch:
        c = self.capacity
        return PackedBatch.from_documents([(self.docs[i][0][:c], self.docs[i][1][:c]) for i in idx], doc_ids=tuple(idx))

    def _cost(self, batches: list[PackedBatch]) -> StepFlops:
        return train_step_flops(
            self.shape, [n for b in batches for n in b.doc_lengths], sum(b.num_loss_tokens for b in batches),
            attn_impl=self.kernels.attention, ce_impl=self.kernels.loss, attn_dtype=self.kernels.dtype,
        )

    def _trim(self, packs: list[list[int]], room: float) -> list[list[int]]:
        """The longest prefix of the step's documents whose FLOPs fit in ``room`` (every count is
        additive over documents), kept in their packs."""
        keep: set[int] = set()
        for i in (i for p in packs for i in p):
            cost = document_cost(self.shape, self.docs[i], self.capacity, self.kind)
            if cost > room:
                break
            keep.add(i)
            room -= cost
        return [q for q in ([i for i in p if i in keep] for p in packs) if q]

    def plan(self, packs: list[list[int]]) -> StepPlan | None:
        """The step on ``packs`` with its exact cost, trimmed to what is left of the budget; None when
        not even its first document fits (the budget is spent)."""
        batches = [self._batch(p) for p in packs]
        cost = self._cost(batches)
        budget = self.cfg.budget_flops
        if budget is None or self.ledger.total(self.kind) + cost.total(self.kind) <= budget:
            return StepPlan(packs, batches, cost, trimmed=False)
        packs = self._trim(packs, budget - self.ledger.total(self.kind))
        if not packs:
            return None
        batches = [self._batch(p) for p in packs]
        return StepPlan(packs, batches, self._cost(batches), trimmed=True)

    def run(self, plan: StepPlan, lr: float) -> float:
        """Forward and backward of every pack, then the optimizer step; returns the step's loss.

        The loss is summed on the device and read once (the step's only sync); NonFiniteLoss is raised
        before the optimizer step when it is not finite.
        """
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        denominator = max(plan.cost.num_loss_tokens, 1)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for b in plan.batches:
            part = packed_loss_sum(self.net, b.to(self.device), self.kernels) / denominator
            part.backward()
            loss += part.detach().double()
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} at step {self.steps + 1} (lr {lr:.3g}); "
                "lower the learning rate (--lr) or check the data"
            )
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return value

    def account(self, plan: StepPlan, lr: float, loss: float, seconds: float) -> StepRecord:
        """Add the step to the ledger and the counters; its metrics line."""
        cost = plan.cost
        self.ledger.add(cost)
        self.steps += 1
        self.samples += plan.num_samples
        step_tokens = sum(b.num_tokens for b in plan.batches)
        self.tokens += step_tokens
        self.loss_tokens += cost.num_loss_tokens
        self.step_seconds += seconds
        peak = self.peak
        return StepRecord(
            step=self.steps, lr=lr, loss=loss, tokens=step_tokens, loss_tokens=cost.num_loss_tokens,
            samples=plan.num_samples, seconds=seconds, flops={k: self.ledger.total(k) for k in TOTALS},
            budget_fraction=self.spent_fraction(), trimmed=plan.trimmed,
            mfu=cost.total("exact") / seconds / peak if peak else None,
            hfu=cost.total("executed") / seconds / peak if peak else None,
        )

    def train(self, on_step: Callable[[StepRecord, FlopLedger], None] | None = None) -> ArmOutcome:
        """Plan, run and account steps until the budget, the sample count or the data runs out."""
        final_loss, stopped_by, t0 = None, "data", time.perf_counter()
        for packs in self.step_stream():
            plan = self.plan(packs)
            if plan is None:
                stopped_by = "budget"
                break
            lr = wsd_lr(self.lr, self.spent_fraction(), self.cfg)
            t_step = time.perf_counter()
            final_loss = self.run(plan, lr)
            record = self.account(plan, lr, final_loss, time.perf_counter() - t_step)
            if on_step is not None:
                on_step(record, self.ledger)
            if plan.trimmed:
                stopped_by = "budget"
                break
            if self.cfg.samples is not None and self.samples >= self.cfg.samples:
                stopped_by = "samples"
                break
        if self.steps == 0:
            raise ValueError("the arm took no optimizer step: its budget or data could not pay for a single "
                             "document; raise --budget or check the data")
        return ArmOutcome(
            steps=self.steps, samples=self.samples, train_tokens=self.tokens, loss_tokens=self.loss_tokens,
            epochs=self.samples / len(self.docs), seconds=time.perf_counter() - t0, final_loss=final_loss,
            ledger=self.ledger, stopped_by=stopped_by, step_seconds=self.step_seconds, peak_flops=self.peak,
        )


def train_arm(
    net: torch.nn.Module,
    docs: Sequence[Document],
    cfg: TrainConfig,
    *,
    lr: float,
    seed: int = 0,
    kernels: KernelPlan | None = None,
    segments: Segments | None = None,
    on_step: Callable[[StepRecord, FlopLedger], None] | None = None,
    device: torch.device | str = "cpu",
) -> ArmOutcome:
    """Train one arm (a ``Trainer`` run to its end); ``kernels`` defaults to ``resolve_kernels(net, device)``."""
    kernels = kernels or resolve_kernels(net, device)
    trainer = Trainer(net, docs, cfg, lr=lr, seed=seed, kernels=kernels, segments=segments, device=device)
    return trainer.train(on_step)
