"""Arms: which supervision format each training sample gets, and in what order.

An arm is a reasoning share rho and a schedule, as in the paper:

- ``ift`` (rho = 0) and ``reasoning`` (rho = 1);
- ``mixNN``: NN% of the samples in reasoning format, shuffled together with the IFT ones;
- ``seqNN``: the IFT samples first, then the NN% reasoning ones ("sequential").

The trainer draws documents from a pool holding every example twice: id ``i`` is example i in IFT
format, id ``n + i`` the same example in reasoning format. ``segments`` yields arrays of pool ids;
each array is packed on its own (so no pack mixes two phases of a sequential arm) and its packs are
trained in a random order before the next array begins.

How the budget is split between the phases of a sequential arm: by share of samples. With a sample
count (``--samples N``) the first round((1 - rho) N) samples are IFT and the rest reasoning. With a FLOP
budget, N is estimated before training as budget / ((1 - rho) c_ift + rho c_reasoning), where c is the
mean FLOPs of one example in each format (in the budget's own count); if the estimate leaves budget
unspent, training goes on with further samples in the last phase's format, so that phase absorbs the
rounding. Mixed arms take rho of every epoch's examples in reasoning format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SCHEDULES = ("mixed", "sequential")
_PATTERN = re.compile(r"(seq|mix)(\d{1,3})")


@dataclass(frozen=True)
class ArmSpec:
    name: str
    share: float  # reasoning share rho in [0, 1]
    schedule: str  # "mixed" | "sequential"


def parse_arm(name: str) -> ArmSpec:
    """``ift``, ``reasoning``, ``seqNN`` or ``mixNN`` (NN = reasoning percentage, 0-100)."""
    if name == "ift":
        return ArmSpec(name, 0.0, "mixed")
    if name == "reasoning":
        return ArmSpec(name, 1.0, "mixed")
    m = _PATTERN.fullmatch(name)
    if m and int(m.group(2)) <= 100:
        return ArmSpec(name, int(m.group(2)) / 100, "sequential" if m.group(1) == "seq" else "mixed")
    raise ValueError(
        f"unknown arm {name!r}; use ift, reasoning, seqNN (IFT first, then NN% reasoning) or mixNN "
        "(NN% reasoning shuffled in), with NN from 0 to 100, e.g. seq25 or mix50"
    )


def arm_sort_key(name: str) -> tuple[int, int, str]:
    """Order of arms in tables and plots: ift, sequential then mixed curricula by reasoning share,
    reasoning, and names that are not arms last (by name)."""
    try:
        spec = parse_arm(name)
    except ValueError:
        return (4, 0, name)
    if name in ("ift", "reasoning"):
        return (0 if name == "ift" else 3, 0, "")
    return (1 if spec.schedule == "sequential" else 2, round(100 * spec.share), "")


def parse_arms(text: str | tuple[str, ...]) -> tuple[ArmSpec, ...]:
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    if not names:
        raise ValueError("give at least one arm, e.g. --arms ift,reasoning")
    if len(set(names)) != len(names):
        raise ValueError(f"arm listed twice in {', '.join(names)}")
    return tuple(parse_arm(n) for n in names)


def segments(
    arm: ArmSpec,
    n_examples: int,
    rng: np.random.Generator,
    *,
    samples: int | None = None,
    planned_samples: int | None = None,
) -> Iterator[np.ndarray]:
    """Pool ids to train on, one array per separately packed segment (see the module docstring).

    ``samples``: stop after exactly that many (the paper's mode, one pass, no repeats).
    ``planned_samples``: the sample count a FLOP budget is expected to buy (sequential arms need it
    to place the phase boundary); the stream is endless otherwise, and the trainer stops it.
    """
    if n_examples < 1:
        raise ValueError("no training examples")
    if samples is not None and samples > n_examples:
        raise ValueError(f"--samples {samples} is more than the {n_examples} training examples available")
    n = n_examples
    if arm.schedule == "mixed":
        while True:
            perm = rng.permutation(n)
            if samples is not None:
                perm = perm[:samples]
            k = round(arm.share * len(perm))
            yield np.concatenate([perm[:k] + n, perm[k:]])
            if samples is not None:
                return
    total = samples if samples is not None else planned_samples
    if total is None:
        raise ValueError(f"the sequential arm {arm.name} needs a sample count or a planned one")
    order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
    k = round((1 - arm.share) * total)
    if k:
        yield order[:k]
    if k < total:
        yield order[k:] + n
    offset = n if arm.share > 0 else 0  # go on in the last phase's format
    while samples is None:
        yield rng.permutation(n) + offset
