"""Training one arm to an exact FLOP budget (or, in the paper's mode, for a fixed number of samples).

Budget control. Before every optimizer step the trainer knows that step's FLOPs exactly (they are a
function of the documents' lengths and loss tokens, see rdistill.flops), so it never overshoots: when
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
tokens in the whole step, so neither packing nor gradient accumulation changes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from rdistill import curriculum
from rdistill.batch import PackedBatch
from rdistill.flops import FlopLedger, ModelShape, train_step_flops
from rdistill.hardware import peak_flops
from rdistill.kernels import resolve_attention_impl, resolve_ce_impl
from rdistill.models import packed_loss_sum
from rdistill.packing import MODES, pack

BUDGET_KINDS = {"exact": "exact", "paper": "paper", "6nd": "six_nd"}


@dataclass(frozen=True)
class TrainSettings:
    budget_flops: float | None = None
    budget_kind: str = "exact"
    samples: int | None = None
    pack_tokens: int | None = None
    packs_per_step: int = 1
    pack_mode: str = "bf"
    warmup_frac: float = 0.05
    decay_frac: float = 0.3
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    overflow: str = "error"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.budget_flops is None) == (self.samples is None):
            raise ValueError("give exactly one of a FLOP budget (--budget) or a sample count (--samples)")
        if self.budget_flops is not None and not self.budget_flops > 0:
            raise ValueError(f"the budget must be positive, got {self.budget_flops}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {self.samples}")
        if self.budget_kind not in BUDGET_KINDS:
            raise ValueError(f"budget kind must be one of {', '.join(BUDGET_KINDS)}, got {self.budget_kind!r}")
        if self.pack_mode not in MODES:
            raise ValueError(f"pack mode must be one of {', '.join(MODES)}, got {self.pack_mode!r}")
        if self.pack_tokens is not None and self.pack_tokens < 1 or self.packs_per_step < 1:
            raise ValueError("--pack-tokens and --packs-per-step must be positive")
        if not (0 <= self.warmup_frac and 0 <= self.decay_frac and self.warmup_frac + self.decay_frac <= 1):
            raise ValueError("need 0 <= warmup_frac, 0 <= decay_frac and warmup_frac + decay_frac <= 1")

    @property
    def ledger_kind(self) -> str:
        return BUDGET_KINDS[self.budget_kind]


def auto_pack_tokens(longest_doc: int) -> int:
    """Default pack capacity: 1024 tokens, or the next power of two that holds the longest document.

    Small packs mean more optimizer steps per FLOP, which is what small students trained from scratch
    need; a capacity below the longest document would force truncating or dropping it.
    """
    return max(1024, 1 << (max(longest_doc, 1) - 1).bit_length())


def wsd_lr(peak: float, frac: float, s: TrainSettings) -> float:
    """Warmup-stable-decay learning rate at ``frac`` in [0, 1] of the run."""
    if s.warmup_frac > 0 and frac < s.warmup_frac:
        return peak * max(frac, 1e-3 * s.warmup_frac) / s.warmup_frac
    decay_start = 1.0 - s.decay_frac
    if frac <= decay_start or s.decay_frac == 0:
        return peak
    t = min((frac - decay_start) / s.decay_frac, 1.0)
    return peak * (1.0 - t * (1.0 - s.final_lr_frac))


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class StepRecord:
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


Document = tuple[np.ndarray, np.ndarray]  # (input_ids, loss_mask)


def _epoch_steps(docs: Sequence[Document], order: np.ndarray, s: TrainSettings, rng: np.random.Generator):
    """Steps of one segment: lists of packs, each pack a list of document indices, packs shuffled."""
    lengths = [len(docs[i][0]) for i in order]
    plan = pack(lengths, s.pack_tokens, mode=s.pack_mode, overflow=s.overflow)
    packs = [[int(order[j]) for j in p] for p in plan.packs]
    perm = rng.permutation(len(packs))
    packs = [packs[i] for i in perm]
    for i in range(0, len(packs), s.packs_per_step):
        yield packs[i : i + s.packs_per_step]


def _step_cost(shape: ModelShape, batches: list[PackedBatch], impls: dict):
    return train_step_flops(
        shape, [n for b in batches for n in b.doc_lengths], sum(b.num_loss_tokens for b in batches), **impls
    )


def _trim_to_budget(
    shape: ModelShape, docs: Sequence[Document], packs: list[list[int]], room: float, kind: str, capacity: int
) -> list[list[int]]:
    """The longest prefix of the step's documents whose FLOPs fit in ``room`` (every count is additive
    over documents), kept in their packs."""
    keep: set[int] = set()
    for i in (i for p in packs for i in p):
        ids, mask = docs[i][0][:capacity], docs[i][1][:capacity]
        c = train_step_flops(shape, [len(ids)], int(mask[1:].sum())).total(kind)
        if c > room:
            break
        keep.add(i)
        room -= c
    return [q for q in ([i for i in p if i in keep] for p in packs) if q]


def _batch(docs: Sequence[Document], idx: list[int], capacity: int) -> PackedBatch:
    return PackedBatch.from_documents([(docs[i][0][:capacity], docs[i][1][:capacity]) for i in idx], doc_ids=tuple(idx))


def train_arm(
    net: torch.nn.Module,
    docs: Sequence[Document],
    s: TrainSettings,
    *,
    lr: float,
    segments: Callable[[np.random.Generator], Iterator[np.ndarray]] | None = None,
    on_step: Callable[[StepRecord, FlopLedger], None] | None = None,
    device: torch.device | str = "cpu",
) -> ArmOutcome:
    """Train ``net`` in place on ``docs`` until the budget (or sample count) is spent.

    ``segments(rng)`` yields arrays of indices into ``docs``, each packed and trained on its own before
    the next (rdistill.curriculum makes them for an arm); by default, epochs over all of ``docs``.
    """
    if not docs:
        raise ValueError("no training documents")
    if s.pack_tokens is None:
        s = replace(s, pack_tokens=auto_pack_tokens(max(len(d[0]) for d in docs)))
    shape = ModelShape.from_model(net)
    kind = s.ledger_kind
    ledger = FlopLedger()
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    decay, no_decay = [], []
    for p in dict.fromkeys(net.parameters()):
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=s.betas,
    )
    net.train()
    dtype = next(net.parameters()).dtype
    peak = peak_flops(device, dtype)
    impls = {  # what the kernels will run, so that the ledger's executed count is theirs
        "attn_impl": resolve_attention_impl("auto", device, head_dim=shape.head_dim, dtype=dtype),
        "ce_impl": resolve_ce_impl("auto", device),
        "attn_dtype": dtype,
    }
    step_seconds = 0.0
    steps = samples = tokens = loss_tokens = 0
    final_loss, stopped_by, t0 = None, "data", time.perf_counter()

    def _all_docs(rng: np.random.Generator) -> Iterator[np.ndarray]:
        return curriculum.segments(curriculum.ArmSpec("all", 0.0, "mixed"), len(docs), rng, samples=s.samples)

    def spent_fraction() -> float:
        return ledger.total(kind) / s.budget_flops if s.budget_flops is not None else samples / s.samples

    def step_stream() -> Iterator[list[list[int]]]:
        for ids in (segments or _all_docs)(rng):
            yield from _epoch_steps(docs, ids, s, rng)

    for packs in step_stream():
        batches = [_batch(docs, p, s.pack_tokens) for p in packs]
        cost = _step_cost(shape, batches, impls)
        trimmed = False
        if s.budget_flops is not None and ledger.total(kind) + cost.total(kind) > s.budget_flops:
            packs = _trim_to_budget(shape, docs, packs, s.budget_flops - ledger.total(kind), kind, s.pack_tokens)
            if not packs:
                stopped_by = "budget"
                break
            batches = [_batch(docs, p, s.pack_tokens) for p in packs]
            cost = _step_cost(shape, batches, impls)
            trimmed = True
        batches = [b.to(device) for b in batches]
        flat = [i for p in packs for i in p]
        step_loss_tokens = cost.num_loss_tokens
        cur_lr = wsd_lr(lr, spent_fraction(), s)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        t_step = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for b in batches:
            part = packed_loss_sum(net, b) / max(step_loss_tokens, 1)
            part.backward()
            loss_sum += float(part.detach())
        if not math.isfinite(loss_sum):
            raise NonFiniteLoss(
                f"the loss became {loss_sum} at step {steps + 1} (lr {cur_lr:.3g}); "
                "lower the learning rate (--lr) or check the data"
            )
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
        opt.step()
        ledger.add(cost)
        steps += 1
        samples += len(flat)
        step_tokens = sum(b.num_tokens for b in batches)
        tokens += step_tokens
        loss_tokens += step_loss_tokens
        final_loss = loss_sum
        seconds = time.perf_counter() - t_step
        step_seconds += seconds
        rec = StepRecord(
            step=steps,
            lr=cur_lr,
            loss=loss_sum,
            tokens=step_tokens,
            loss_tokens=step_loss_tokens,
            samples=len(flat),
            seconds=seconds,
            flops={k: ledger.total(k) for k in ("exact", "executed", "paper", "six_nd")},
            budget_fraction=spent_fraction(),
            trimmed=trimmed,
            mfu=cost.total("exact") / seconds / peak if peak else None,
            hfu=cost.total("executed") / seconds / peak if peak else None,
        )
        if on_step is not None:
            on_step(rec, ledger)
        if trimmed:
            stopped_by = "budget"
            break
        if s.samples is not None and samples >= s.samples:
            stopped_by = "samples"
            break
    return ArmOutcome(
        steps=steps,
        samples=samples,
        train_tokens=tokens,
        loss_tokens=loss_tokens,
        epochs=samples / len(docs),
        seconds=time.perf_counter() - t0,
        final_loss=final_loss,
        ledger=ledger,
        stopped_by=stopped_by,
        step_seconds=step_seconds,
        peak_flops=peak,
    )
