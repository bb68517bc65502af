"""The learning-rate schedule of an arm: warmup-stable-decay on its optimizer steps, one peak per phase.

The trainer knows, before it trains, exactly how many optimizer steps an arm will take: its step plan
is a deterministic function of the seed, the data and the budget (rdistill.train runs it dry, counting
FLOPs without training). So the paper's step-based schedule works under a FLOP budget as well as with a
sample count:

- warmup: linear from peak/W at step 1 to the peak at step W (``--warmup-steps W``, or
  ``--warmup`` x the arm's steps);
- stable at the peak;
- decay: linear over the last D steps (``--decay-steps D``, or ``--decay`` x the arm's steps) to
  ``final_lr_frac`` of the peak at the last step (the paper: 150 warmup and 300 decay steps, to 10%).

Each step's rate is the one it ends at, so a run shorter than its warmup still reaches its peak.

Phases. A sequential arm (seqNN) has two: its IFT samples, then its reasoning ones, each with its own
peak (the IFT and the reasoning learning rate, rdistill.run). The schedule runs once over the whole
arm: warmup at its start, decay at its end, the peak switching where the second phase's first step
begins. So that neither phase is eaten by warmup or decay, the warmup is capped at half the first
phase's steps and the decay at half the last phase's: every phase trains at least half its steps at
its own peak. One phase (ift, reasoning, mixNN): the same caps with the phase being the whole arm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Schedule:
    total: int
    """Optimizer steps of the arm."""
    warmup: int
    decay: int
    final_frac: float
    peaks: tuple[float, ...]
    """Peak learning rate of each phase."""
    starts: tuple[int, ...] = (1,)
    """The first step (1-based) of each phase."""

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (1-based)."""
        phase = max(i for i, s in enumerate(self.starts) if s <= step) if step >= self.starts[0] else 0
        peak = self.peaks[phase]
        if self.warmup and step < self.warmup:
            return peak * step / self.warmup
        decay_start = self.total - self.decay  # the decay's steps are decay_start + 1 ... total
        if self.decay and step > decay_start:
            t = min((step - decay_start) / self.decay, 1.0)
            return peak * (1.0 - t * (1.0 - self.final_frac))
        return peak

    def to_json(self) -> dict:
        return asdict(self)


def make_schedule(
    total: int, peaks: tuple[float, ...], starts: tuple[int, ...] = (1,), *, warmup_frac: float, decay_frac: float,
    final_frac: float, warmup_steps: int | None = None, decay_steps: int | None = None,
) -> Schedule:
    """The schedule of an arm of ``total`` steps whose phases start at ``starts`` with peaks ``peaks``
    (see the module docstring for the rule)."""
    if len(peaks) != len(starts) or not starts or starts[0] != 1:
        raise ValueError("one peak per phase, and the first phase starts at step 1")
    total = max(total, 1)
    bounds = [*starts, total + 1]
    first, last = bounds[1] - bounds[0], bounds[-1] - bounds[-2]
    warmup = warmup_steps if warmup_steps is not None else round(warmup_frac * total)
    decay = decay_steps if decay_steps is not None else round(decay_frac * total)
    return Schedule(total=total, warmup=min(warmup, first // 2), decay=min(decay, last // 2), final_frac=final_frac,
                    peaks=tuple(peaks), starts=tuple(starts))
