"""Training one arm to an exact FLOP budget (or, in the paper's mode, for a fixed number of samples).

Budget control. Before every optimizer step the trainer knows that step's FLOPs exactly (they are a
function of the documents' lengths and loss tokens, see rdistill.flops.ledger), so it never overshoots: when
the next full step would pass the budget, the step is trimmed to the longest prefix of its documents
that still fits, run, and training stops. The run therefore ends at most one document's FLOPs below
the budget (for the built-in data, well under 0.1% of it) and never above. ``budget_kind`` picks the
count that is compared with the budget: ``exact`` (the ledger's useful FLOPs), ``paper`` (the paper's
per-sample formula) or ``6nd``.

Steps. A step is ``step_samples`` samples packed into as many rows as they need (the paper's global
batch, the default with a sample count), or, with ``step_samples`` 0, ``packs_per_step`` rows of
token-capacity packs (the default under a FLOP budget: every step holds about the same tokens).

Learning rate: AdamW with a warmup-stable-decay schedule on the arm's optimizer steps, one peak per
phase (rdistill.schedule). The number of steps is known before training: the step plan is run dry
(its FLOPs counted, nothing trained), which gives the schedule its length under a budget too.

Loss: the sum of token cross-entropies of all micro-batches of a step divided by the number of loss
tokens in the whole step, so neither packing nor gradient accumulation changes it. The loss stays on
the device during a step and is read once per step (for logging and the finiteness check).

Precision: a bf16 or fp16 student trains with fp32 master weights and optimizer state (and fp16 with
a loss scale), see rdistill.precision.

Checkpoints (``Checkpointing``): every N steps or every fraction of the budget, and when training ends,
everything the rest of training depends on is written (rdistill.train_checkpoint); a resumed trainer
goes on exactly as the uninterrupted run would (bit for bit on the same machine in fp32).

A ``Trainer`` has three parts per step: ``plan`` (the step's packs, its exact cost from the resolved
``KernelPlan``, trimmed to the budget), ``run`` (forward and backward per pack, clipping, the optimizer
step) and ``account`` (the ledger, counters and the step's record).
"""


from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch

from rdistill import train_checkpoint
from rdistill.checkpoint import Checkpointing
from rdistill.config import TrainConfig
from rdistill.data import curriculum
from rdistill.data.batch import PackedBatch
from rdistill.data.packing import auto_pack_tokens, pack
from rdistill.flops.hardware import peak_flops
from rdistill.flops.ledger import FlopLedger, ModelShape, StepFlops, train_step_flops
from rdistill.distributed import (
    AGREEMENT_EVERY,
    World,
    all_sum,
    check_agreement,
    padded_count,
    sync_gradients,
    wrap,
)
from rdistill.memory import PeakMemory
from rdistill.model import KernelPlan, resolve_kernels
from rdistill.precision import Weights
from rdistill.schedule import Schedule, make_schedule
from rdistill.steps import ArmOutcome, Document, StepPlan, StepRecord, document_size

Segments = Callable[[np.random.Generator], Iterator[np.ndarray]]
TOTALS = ("exact", "executed", "paper", "six_nd")


class NonFiniteLoss(RuntimeError):
    pass


def _optimizer(params: list[torch.Tensor], cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    """AdamW; matrices decay by ``weight_decay``, vectors (norms, biases) never."""
    decay, no_decay = [], []
    for p in params:
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
    ``lr``: the peak learning rate, or one per phase; ``phase_split``: documents with an index at least
    this belong to the second phase (a sequential arm's reasoning documents).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        docs: Sequence[Document],
        cfg: TrainConfig,
        *,
        lr: float | Sequence[float],
        seed: int,
        kernels: KernelPlan,
        segments: Segments | None = None,
        device: torch.device | str = "cpu",
        checkpoints: Checkpointing | None = None,
        world: World | None = None,
        phase_split: int | None = None,
    ) -> None:
        if not docs:
            raise ValueError("no training documents")
        self.net, self.docs, self.kernels, self.device = net, docs, kernels, device
        self.peaks = (float(lr),) if isinstance(lr, (int, float)) else tuple(float(x) for x in lr)
        self.phase_split = phase_split
        self.schedule: Schedule | None = None
        self._doc_costs: dict[tuple[int, int], int] = {}
        self.capacity = cfg.pack_tokens or auto_pack_tokens(max(len(d[0]) for d in docs))
        self.cfg = cfg
        self.segments = segments or self._all_docs
        self.shape = ModelShape.from_model(net)
        self.kind = cfg.ledger_kind
        self.ledger = FlopLedger()
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.world = world or World(device=str(device))
        self.module = wrap(net, kernels, self.world)  # the loss's forward, in DDP or FSDP2 across ranks
        self.weights = Weights(net, kernels.dtype)  # under FSDP2 the parameters are fp32, the compute is not
        self.opt = _optimizer(self.weights.trained, cfg, self.peaks[0])
        peak = peak_flops(device, kernels.dtype)
        self.peak = peak * self.world.size if peak else None  # the step's FLOPs are the whole world's
        self.peak_remeasured = False
        self.memory = PeakMemory(device)
        self.checkpoints = checkpoints
        self.steps = self.samples = self.tokens = self.loss_tokens = 0
        self.step_seconds = 0.0
        self.peak_memory: int | None = None
        self.final_loss: float | None = None
        self.stopped_by: str | None = None  # set when training has ended (a checkpoint taken then says so)

    def _all_docs(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return curriculum.segments(curriculum.ArmSpec("all", 0.0, "mixed"), len(self.docs), rng, samples=self.cfg.samples)

    def spent_fraction(self, plan: StepPlan | None = None) -> float:
        """How much of the budget (or of the sample count) is spent, after ``plan`` if one is given."""
        if self.cfg.budget_flops is not None:
            extra = plan.cost.total(self.kind) if plan is not None else 0
            return (self.ledger.total(self.kind) + extra) / self.cfg.budget_flops
        return min(1.0, (self.samples + (plan.num_samples if plan is not None else 0)) / self.cfg.samples)

    def step_stream(self, rng: np.random.Generator | None = None) -> Iterator[list[list[int]]]:
        """Steps as lists of packs (each a list of document indices), drawn with ``rng`` (the trainer's)."""
        rng = rng or self.rng
        if self.cfg.step_samples:
            yield from self._sample_steps(rng, self.cfg.step_samples)
            return
        for order in self.segments(rng):  # token-capacity steps: packs shuffled within a segment
            packs = self._pack(order)
            packs = [packs[i] for i in rng.permutation(len(packs))]
            for i in range(0, len(packs), self.cfg.packs_per_step):
                yield packs[i : i + self.cfg.packs_per_step]

    def _sample_steps(self, rng: np.random.Generator, n: int) -> Iterator[list[list[int]]]:
        """Steps of ``n`` samples each (a segment's samples shuffled, then cut into steps in order; the
        last samples of the stream make a smaller step), each packed into as many rows as it needs."""
        left = np.empty(0, dtype=np.int64)
        for order in self.segments(rng):
            left = np.concatenate([left, np.asarray(order, dtype=np.int64)[rng.permutation(len(order))]])
            while len(left) >= n:
                yield self._pack(left[:n])
                left = left[n:]
        if len(left):
            yield self._pack(left)

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        """The documents ``order`` packed into rows (lists of document indices)."""
        lengths = [len(self.docs[i][0]) for i in order]
        plan = pack(lengths, self.capacity, mode=self.cfg.pack_mode, overflow=self.cfg.overflow)
        if len(order) and not plan.packs:  # e.g. --overflow drop dropped them all: never loop forever
            raise ValueError(f"all {len(order)} documents of a segment were dropped (--overflow "
                             f"{self.cfg.overflow}, --pack-tokens {self.capacity}); nothing to train on")
        return [[int(order[j]) for j in p] for p in plan.packs]

    def _doc_cost(self, i: int) -> int:
        """FLOPs (in the budget's count) of document ``i``, as a step's cost adds them up."""
        size = document_size(self.docs[i], self.capacity)
        if size not in self._doc_costs:
            self._doc_costs[size] = train_step_flops(self.shape, [size[0]], size[1]).total(self.kind)
        return self._doc_costs[size]

    def count_steps(self) -> tuple[int, int | None]:
        """The optimizer steps training will take, and the first step that holds a document of the second
        phase (None): the step plan run dry on a copy of the data order, costs counted, nothing trained."""
        budget, spent, samples, steps, second = self.cfg.budget_flops, 0, 0, 0, None
        for packs in self.step_stream(copy.deepcopy(self.rng)):
            ids = [i for p in packs for i in p]
            costs = [self._doc_cost(i) for i in ids]
            trimmed = budget is not None and spent + sum(costs) > budget
            if trimmed:  # as Trainer._trim: the longest prefix that fits
                fits = np.cumsum(costs) <= budget - spent
                ids = ids[: int(np.argmin(fits)) if not fits.all() else len(ids)]
                if not ids:
                    break
            spent, samples, steps = spent + sum(costs[: len(ids)]), samples + len(ids), steps + 1
            if second is None and self.phase_split is not None and max(ids) >= self.phase_split:
                second = steps
            if trimmed or (self.cfg.samples is not None and samples >= self.cfg.samples):
                break
        return steps, second

    def _make_schedule(self) -> Schedule:
        total, second = self.count_steps()
        if len(self.peaks) == 1 or second is None:  # one phase (or the second never reached)
            peaks, starts = self.peaks[:1], (1,)
        elif second == 1:  # no step of the first phase
            peaks, starts = self.peaks[-1:], (1,)
        else:
            peaks, starts = self.peaks, (1, second)
        c = self.cfg
        return make_schedule(total, peaks, starts, warmup_frac=c.warmup_frac, decay_frac=c.decay_frac,
                             final_frac=c.final_lr_frac, warmup_steps=c.warmup_steps, decay_steps=c.decay_steps)

    def _batch(self, idx: list[int]) -> PackedBatch:
        c = self.capacity
        return PackedBatch.from_documents([(self.docs[i][0][:c], self.docs[i][1][:c]) for i in idx], doc_ids=tuple(idx))

    def _cost(self, batches: list[PackedBatch]) -> StepFlops:
        k = self.kernels
        cost = train_step_flops(
            self.shape, [n for b in batches for n in b.doc_lengths], sum(b.num_loss_tokens for b in batches),
            attn_impl=k.attention, ce_impl=k.loss, attn_dtype=k.dtype, recompute=k.recompute,
        )
        idle = padded_count(len(batches), self.world.size) * self.world.size - len(batches)
        if not idle:
            return cost
        # ranks short of a pack run a zero-weight two-token one: executed work, never useful
        dummy = train_step_flops(self.shape, [2], 1, attn_impl=k.attention, ce_impl=k.loss, attn_dtype=k.dtype,
                                 recompute=k.recompute)
        return replace(cost, executed={c: v + idle * dummy.executed[c] for c, v in cost.executed.items()})

    def _trim(self, packs: list[list[int]], room: float) -> list[list[int]]:
        """The longest prefix of the step's documents whose FLOPs fit in ``room`` (every count is
        additive over documents), kept in their packs."""
        keep: set[int] = set()
        for i in (i for p in packs for i in p):
            cost = self._doc_cost(i)
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

    def run(self, plan: StepPlan, lr: float) -> tuple[float, bool]:
        """Forward and backward of every pack, then the optimizer step; returns the step's loss and
        whether the optimizer stepped (fp16 skips a step whose gradients overflowed).

        The loss is summed on the device and read once (the step's only sync); NonFiniteLoss is raised
        before the optimizer step when it is not finite.
        """
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.weights.zero_grad()
        scale = self.weights.loss_scale
        denominator = max(plan.cost.num_loss_tokens, 1)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        w = self.world
        micro = self._my_batches(plan)
        for i, (b, weight) in enumerate(micro):
            with sync_gradients(self.module, w, enabled=i == len(micro) - 1):
                part = self.module(b.to(self.device)) / denominator
                # DDP and FSDP2 average gradients over ranks: x world size makes the sum the step's gradient
                grad_part = part * (weight * w.size) if w.distributed else part
                (grad_part * scale if scale != 1.0 else grad_part).backward()
            loss += part.detach().double() * weight
        value = all_sum(loss.item(), w)
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the loss became {value} at step {self.steps + 1} (lr {lr:.3g}); "
                "lower the learning rate (--lr) or check the data"
            )
        return value, self.weights.step(self.opt, self.cfg.grad_clip)

    def _my_batches(self, plan: StepPlan) -> list[tuple[PackedBatch, float]]:
        """This rank's packs of the step (every world-size-th), each with its weight; padded with
        zero-weight packs to as many as any rank has, so that every rank makes the same collectives."""
        w = self.world
        if not w.distributed:
            return [(b, 1.0) for b in plan.batches]
        mine = [(b, 1.0) for b in plan.batches[w.rank :: w.size]]
        return mine + [(self._dummy(), 0.0)] * (padded_count(len(plan.batches), w.size) - len(mine))

    def _dummy(self) -> PackedBatch:
        """A two-token pack with one label: a rank's share of a step with fewer packs than ranks."""
        ids = self.docs[0][0][:2] if len(self.docs[0][0]) >= 2 else np.zeros(2, dtype=np.int64)
        return PackedBatch.from_documents([(ids, np.array([False, True]))])

    def account(
        self, plan: StepPlan, lr: float, loss: float, seconds: float, *, peak_memory: int | None = None,
        skipped: bool = False,
    ) -> StepRecord:
        """Add the step to the ledger and the counters; its metrics line."""
        cost = plan.cost
        if peak_memory is not None:
            self.peak_memory = max(self.peak_memory or 0, peak_memory)
        self.ledger.add(cost)
        self.steps += 1
        self.samples += plan.num_samples
        step_tokens = sum(b.num_tokens for b in plan.batches)
        self.tokens += step_tokens
        self.loss_tokens += cost.num_loss_tokens
        self.step_seconds += seconds
        if self.peak and not self.peak_remeasured and cost.total("executed") > self.peak * seconds:
            self.peak_remeasured = True  # over 100%: the peak was measured too low (a busy machine); once per arm
            self.peak = peak_flops(self.device, self.kernels.dtype, refresh=True)
        if self.steps % AGREEMENT_EVERY == 0 or plan.trimmed:
            check_agreement([self.steps, self.ledger.total("exact"), self.samples], self.world, "the steps and FLOPs")
        peak = self.peak
        return StepRecord(
            step=self.steps, lr=lr, loss=loss, tokens=step_tokens, loss_tokens=cost.num_loss_tokens,
            samples=plan.num_samples, seconds=seconds, flops={k: self.ledger.total(k) for k in TOTALS},
            budget_fraction=self.spent_fraction(), trimmed=plan.trimmed,
            mfu=cost.total("exact") / seconds / peak if peak else None,
            hfu=cost.total("executed") / seconds / peak if peak else None,
            peak_memory=peak_memory, skipped=skipped,
        )

    def train(self, on_step: Callable[[StepRecord, FlopLedger], None] | None = None) -> ArmOutcome:
        """Plan, run and account steps until the budget, the sample count or the data runs out; with
        ``checkpoints.resume``, first restore the latest checkpoint and go on from it."""
        t0 = time.perf_counter()
        self.schedule = self._make_schedule()
        stream = self.step_stream()
        if self.checkpoints is not None and self.checkpoints.resume:
            train_checkpoint.restore(self, self.checkpoints.root, stream)
        if self.stopped_by is None:
            self._train_steps(stream, on_step)
        if self.steps == 0:
            raise ValueError("the arm took no optimizer step: its budget or data could not pay for a single "
                             "document; raise --budget or check the data")
        return ArmOutcome(
            steps=self.steps, samples=self.samples, train_tokens=self.tokens, loss_tokens=self.loss_tokens,
            epochs=self.samples / len(self.docs), seconds=time.perf_counter() - t0, final_loss=self.final_loss,
            ledger=self.ledger, stopped_by=self.stopped_by or "data", step_seconds=self.step_seconds,
            peak_flops=self.peak, peak_memory=self.peak_memory, module=self.module, schedule=self.schedule,
        )

    def _train_steps(self, stream: Iterator[list[list[int]]], on_step) -> None:
        stopped_by = "data"
        for packs in stream:
            plan = self.plan(packs)
            if plan is None:
                stopped_by = "budget"
                break
            before, after = self.spent_fraction(), self.spent_fraction(plan)
            lr = self.schedule.lr(self.steps + 1)
            self.memory.reset()
            t_step = time.perf_counter()
            self.final_loss, stepped = self.run(plan, lr)
            seconds = time.perf_counter() - t_step
            record = self.account(plan, lr, self.final_loss, seconds, peak_memory=self.memory.read(),
                                  skipped=not stepped)
            if plan.trimmed:
                stopped_by = "budget"
            elif self.cfg.samples is not None and self.samples >= self.cfg.samples:
                stopped_by = "samples"
            if on_step is not None:  # first the metrics line, then the checkpoint: a resume truncates to it
                on_step(record, self.ledger)
            if stopped_by != "data":
                break
            if self.checkpoints is not None and self.checkpoints.due(self.steps, before, after):
                self._checkpoint()
        self.stopped_by = stopped_by
        if self.checkpoints is not None and self.checkpoints.every > 0 and self.steps:
            self._checkpoint()  # the end of training: a resume goes straight to what follows

    def _checkpoint(self) -> None:
        """Save a checkpoint (rdistill.train_checkpoint; every rank takes part and goes on together)."""
        train_checkpoint.save(self, self.checkpoints.root)


def train_arm(
    net: torch.nn.Module,
    docs: Sequence[Document],
    cfg: TrainConfig,
    *,
    lr: float | Sequence[float],
    seed: int = 0,
    kernels: KernelPlan | None = None,
    segments: Segments | None = None,
    on_step: Callable[[StepRecord, FlopLedger], None] | None = None,
    device: torch.device | str = "cpu",
    checkpoints: Checkpointing | None = None,
    world: World | None = None,
    phase_split: int | None = None,
) -> ArmOutcome:
    """Train one arm (a ``Trainer`` run to its end); ``kernels`` defaults to ``resolve_kernels(net, device)``."""
    kernels = kernels or resolve_kernels(net, device)
    trainer = Trainer(net, docs, cfg, lr=lr, seed=seed, kernels=kernels, segments=segments, device=device,
                      checkpoints=checkpoints, world=world, phase_split=phase_split)
    return trainer.train(on_step)
