"""Packing documents into rows of at most ``capacity`` tokens.

``pack`` returns, for each pack, the indices of its documents. Two modes:

- ``"bfd"`` best-fit decreasing: documents longest first, each into the open pack whose remaining room
  is the smallest that still fits it (a new pack when none does). Ties go to the oldest pack, so the
  result is deterministic. Dense packs; order of documents is not kept.
- ``"bf"`` best fit in the given order: the same rule without sorting first. With documents much
  shorter than the capacity it packs almost as densely, and every pack holds a random mix of
  lengths (BFD's packs are sorted by length, so each holds documents of one length range, which for
  paired data often means one task family: a biased gradient per step). The trainer's default.
- ``"ordered"``: documents in their given order, a new pack whenever the next one does not fit
  (next-fit). Used where order matters (curriculum phases).

Documents longer than the capacity follow ``overflow``: ``"error"`` (default; names how many and which
rows), ``"truncate"`` (cut to the capacity), or ``"drop"``. Either way ``PackPlan`` counts them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

OVERFLOW_POLICIES = ("error", "truncate", "drop")
MODES = ("bfd", "bf", "ordered")


@dataclass(frozen=True)
class PackPlan:
    packs: list[list[int]]
    capacity: int
    lengths: np.ndarray
    truncated: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """Real tokens over the capacity of the packs used."""
        if not self.packs:
            return 0.0
        used = sum(int(min(self.lengths[i], self.capacity)) for p in self.packs for i in p)
        return used / (len(self.packs) * self.capacity)


class PackingError(ValueError):
    pass


def _best_fit(order: np.ndarray, lengths: np.ndarray, capacity: int) -> list[list[int]]:
    packs: list[list[int]] = []
    room: list[tuple[int, int]] = []  # sorted (remaining, pack index)
    for i in order:
        n = int(lengths[i])
        k = bisect.bisect_left(room, (n, -1))
        if k == len(room):
            packs.append([int(i)])
            bisect.insort(room, (capacity - n, len(packs) - 1))
        else:
            rem, p = room.pop(k)
            packs[p].append(int(i))
            bisect.insort(room, (rem - n, p))
    return packs


def _ordered(order: np.ndarray, lengths: np.ndarray, capacity: int) -> list[list[int]]:
    packs: list[list[int]] = []
    used = capacity
    for i in order:
        n = int(lengths[i])
        if used + n > capacity:
            packs.append([])
            used = 0
        packs[-1].append(int(i))
        used += n
    return packs


def pack(lengths: Sequence[int], capacity: int, *, mode: str = "bfd", overflow: str = "error") -> PackPlan:
    """Assign every document (by index) to exactly one pack. See the module docstring."""
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size and lens.min() < 1:
        raise ValueError(f"document {int(np.argmin(lens))} is empty; every document needs at least one token")
    too_long = np.flatnonzero(lens > capacity)
    if too_long.size and overflow == "error":
        shown = ", ".join(str(i) for i in too_long[:10]) + (" ..." if too_long.size > 10 else "")
        raise PackingError(
            f"{too_long.size} documents are longer than the pack capacity of {capacity} tokens "
            f"(longest {int(lens.max())}; rows {shown}); raise the capacity (--pack-tokens) or choose "
            "--overflow truncate or --overflow drop"
        )
    keep = np.ones(lens.size, dtype=bool)
    if overflow == "drop":
        keep[too_long] = False
    eff = np.minimum(lens, capacity)
    idx = np.flatnonzero(keep)
    if mode == "bfd":
        packs = _best_fit(idx[np.argsort(-eff[idx], kind="stable")], eff, capacity)
    elif mode == "bf":
        packs = _best_fit(idx, eff, capacity)
    else:
        packs = _ordered(idx, eff, capacity)
    truncated = too_long.tolist() if overflow == "truncate" else []
    dropped = too_long.tolist() if overflow == "drop" else []
    return PackPlan(packs=packs, capacity=capacity, lengths=lens, truncated=truncated, dropped=dropped)
