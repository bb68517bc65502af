"""Packing documents into rows of at most ``capacity`` tokens.

``pack`` returns, for each pack, the indices of its documents. Three modes:

- ``"bfd"`` best-fit decreasing: documents longest first (a stable sort), each into the open pack
  whose remaining room is the smallest that still fits it (a new pack when none does). Ties go to the
  oldest pack, so the result is deterministic. Dense packs; order of documents is not kept.
- ``"bf"`` best fit in the given order: the same rule without sorting first. With documents much
  shorter than the capacity it packs almost as densely, and every pack holds a random mix of
  lengths (BFD's packs are sorted by length, so each holds documents of one length range, which for
  paired data often means one task family: a biased gradient per step). The trainer's default.
- ``"ordered"``: documents in their given order, a new pack whenever the next one does not fit
  (next-fit). Used where order matters (curriculum phases).

Documents longer than the capacity follow ``overflow``: ``"error"`` (default; names how many and which
rows), ``"truncate"`` (cut to the capacity), or ``"drop"``. Either way the plan counts them.

Two backends give identical plans: ``"cpp"``, the extension module ``rdistill._C`` built from csrc/
by setup.py (a million documents in about 0.05 s here), and ``"numpy"``, the twin below, used when
the extension is missing (about a second per million documents). ``BACKEND`` names the one
that ``backend="auto"`` picks; importing this module says once which one it is. ``pack_arrays`` is
the fast form: the plan as two arrays, without building a Python list per pack.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import itertools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

OVERFLOW_POLICIES = ("error", "truncate", "drop")
MODES = ("bfd", "bf", "ordered")
BACKENDS = ("auto", "cpp", "numpy")

# Above this capacity the twin keeps open packs in a sorted list instead of per-room buckets (the
# C++ packer has its own limit, rdistill._C.DEFAULT_BUCKET_LIMIT); the plans are the same either way.
_TWIN_BUCKET_LIMIT = 1 << 20

logger = logging.getLogger(__name__)

CPP_IMPORT_ERROR: str | None = None
"""Why rdistill._C did not import, or None."""
try:
    from rdistill import _C
except ImportError as e:
    _C = None
    CPP_IMPORT_ERROR = str(e)

BACKEND = "cpp" if _C is not None else "numpy"
"""The backend that ``backend="auto"`` uses: ``"cpp"`` when rdistill._C imports, else ``"numpy"``."""

if _C is None:
    warnings.warn(
        f"rdistill: C++ packer not built ({CPP_IMPORT_ERROR}), using the numpy twin (same plans, slower); "
        "reinstall with a C++ compiler present to build rdistill._C",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    logger.info("rdistill: packing with the C++ extension rdistill._C")


class PackingError(ValueError):
    """Documents longer than the capacity under ``overflow="error"``."""


@dataclass(frozen=True)
class PackPlan:
    """Packs as lists of document indices (in placement order), what happened to long documents, and
    which backend made it (None for a plan built by hand)."""

    packs: list[list[int]]
    capacity: int
    lengths: np.ndarray
    truncated: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    backend: str | None = None

    @property
    def efficiency(self) -> float:
        """Real tokens over the capacity of the packs used."""
        if not self.packs:
            return 0.0
        placed = np.fromiter(itertools.chain.from_iterable(self.packs), dtype=np.int64)
        used = int(np.minimum(self.lengths[placed], self.capacity).sum())
        return used / (len(self.packs) * self.capacity)


@dataclass(frozen=True)
class PackArrays:
    """A plan as arrays: pack ``j`` holds documents ``docs[offsets[j]:offsets[j + 1]]``.

    ``docs`` are indices into ``lengths`` in placement order, packs in the order they were opened;
    ``truncated`` and ``dropped`` are the indices of documents longer than the capacity.
    """

    docs: np.ndarray
    offsets: np.ndarray
    capacity: int
    lengths: np.ndarray
    truncated: np.ndarray
    dropped: np.ndarray
    backend: str

    @property
    def num_packs(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens placed (after truncation)."""
        return int(np.minimum(self.lengths[self.docs], self.capacity).sum())

    @property
    def efficiency(self) -> float:
        """Real tokens over the capacity of the packs used."""
        return self.num_tokens / (self.num_packs * self.capacity) if self.num_packs else 0.0

    def packs(self) -> list[list[int]]:
        """The packs as lists of document indices.

        The cyclic garbage collector is paused meanwhile: lists of ints cannot form cycles, and its
        passes over the young lists otherwise take most of the time (0.2 of 0.25 s for 250k packs).
        """
        docs, offs = self.docs.tolist(), self.offsets.tolist()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [docs[a:b] for a, b in zip(offs, offs[1:])]
        finally:
            if was_enabled:
                gc.enable()

    def to_plan(self) -> PackPlan:
        return PackPlan(
            packs=self.packs(),
            capacity=self.capacity,
            lengths=self.lengths,
            truncated=self.truncated.tolist(),
            dropped=self.dropped.tolist(),
            backend=self.backend,
        )


def auto_pack_tokens(longest_doc: int) -> int:
    """Default pack capacity: 1024 tokens, or the next power of two that holds the longest document.

    Small packs mean more optimizer steps per FLOP, which is what small students trained from scratch
    need; a capacity below the longest document would force truncating or dropping it.
    """
    return max(1024, 1 << (max(longest_doc, 1) - 1).bit_length())


def resolve_backend(backend: str) -> str:
    """``"auto"`` becomes ``BACKEND``; ``"cpp"`` without the extension is an error saying why."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return BACKEND
    if backend == "cpp" and _C is None:
        raise RuntimeError(f"backend='cpp' but the extension rdistill._C is not built ({CPP_IMPORT_ERROR})")
    return backend


def pack(lengths: Sequence[int] | np.ndarray, capacity: int, **options: str) -> PackPlan:
    """Assign every document (by index) to exactly one pack (see the module docstring); ``options`` are
    ``pack_arrays``'s ``mode``, ``overflow`` and ``backend``."""
    return pack_arrays(lengths, capacity, **options).to_plan()


def pack_arrays(
    lengths: Sequence[int] | np.ndarray,
    capacity: int,
    *,
    mode: str = "bfd",
    overflow: str = "error",
    backend: str = "auto",
) -> PackArrays:
    """``pack`` without the per-pack Python lists: the plan as a flat array of documents and offsets."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    capacity = int(capacity)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    used_backend = resolve_backend(backend)
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.ndim != 1:
        raise ValueError(f"lengths must be one-dimensional, got shape {lens.shape}")
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
    eff = np.minimum(lens, capacity) if too_long.size else lens
    kept = None
    if too_long.size and overflow == "drop":
        kept = np.flatnonzero(lens <= capacity)
        eff = lens[kept]
    if used_backend == "cpp":
        docs, offsets = _C.pack(eff, capacity, mode)
    else:
        docs, offsets = _twin(eff, capacity, mode)
    if kept is not None:
        docs = kept[docs]
    empty = np.zeros(0, dtype=np.int64)
    return PackArrays(
        docs=docs,
        offsets=offsets,
        capacity=capacity,
        lengths=lens,
        truncated=too_long if overflow == "truncate" else empty,
        dropped=too_long if overflow == "drop" else empty,
        backend=used_backend,
    )


# The numpy twin: the same decisions as csrc/packing.cpp, in Python.


def _twin(lengths: np.ndarray, capacity: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(docs, offsets) for lengths that all lie in 1..capacity, as rdistill._C.pack returns them."""
    n = len(lengths)
    if mode == "ordered":
        return np.arange(n, dtype=np.int64), _next_fit_offsets(lengths, capacity)
    order = np.argsort(-lengths, kind="stable") if mode == "bfd" else np.arange(n, dtype=np.int64)
    ordered = lengths[order].tolist()
    if capacity <= _TWIN_BUCKET_LIMIT:
        pack_of = _best_fit_buckets(ordered, capacity)
    else:
        pack_of = _best_fit_sorted(ordered, capacity)
    pack_of_arr = np.asarray(pack_of, dtype=np.int64)
    counts = np.bincount(pack_of_arr)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    docs = order[np.argsort(pack_of_arr, kind="stable")].astype(np.int64, copy=False)
    return docs, offsets


def _next_fit_offsets(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Next fit in order: each pack is the longest run, from where the last one ended, that fits."""
    cum = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum[1:])
    starts = []
    s, n = 0, len(lengths)
    while s < n:
        starts.append(s)
        s = int(np.searchsorted(cum, cum[s] + capacity, side="right")) - 1
    starts.append(n)
    return np.asarray(starts, dtype=np.int64)


def _best_fit_buckets(lengths: list[int], capacity: int) -> list[int]:
    """Best fit; the pack id of each document in the given order.

    Open packs sit in buckets by remaining room (min-heaps of pack ids, so ties go to the oldest), and
    a two-level bitset finds the smallest non-empty room >= the document's length: ``lo[w]`` has bit
    ``b`` set when room ``64 w + b`` has a pack, ``hi`` has bit ``w`` set when ``lo[w]`` is non-zero.
    """
    lo = [0] * ((capacity >> 6) + 1)
    hi = 0
    buckets: dict[int, list[int]] = {}
    pack_of: list[int] = []
    num_packs = 0
    heappush, heappop, append = heapq.heappush, heapq.heappop, pack_of.append
    for n in lengths:
        w = n >> 6
        x = lo[w] >> (n & 63)
        if x:
            r = n + (x & -x).bit_length() - 1
        else:
            y = hi >> (w + 1)
            if y:
                w += (y & -y).bit_length()
                x = lo[w]
                r = (w << 6) + (x & -x).bit_length() - 1
            else:
                r = -1
        if r < 0:
            p = num_packs
            num_packs += 1
            rest = capacity - n
        else:
            h = buckets[r]
            p = heappop(h)
            if not h:
                w = r >> 6
                x = lo[w] ^ (1 << (r & 63))
                lo[w] = x
                if not x:
                    hi ^= 1 << w
            rest = r - n
        append(p)
        if rest > 0:
            h = buckets.get(rest)
            if h:
                heappush(h, p)
            else:
                buckets[rest] = [p]
                w = rest >> 6
                x = lo[w]
                if not x:
                    hi |= 1 << w
                lo[w] = x | (1 << (rest & 63))
    return pack_of


def _best_fit_sorted(lengths: list[int], capacity: int) -> list[int]:
    """Best fit with open packs as a sorted list of (room, pack id): for capacities too large for
    per-room buckets; slower for many open packs, same result."""
    room: list[tuple[int, int]] = []
    pack_of: list[int] = []
    num_packs = 0
    for n in lengths:
        k = bisect.bisect_left(room, (n, -1))
        if k == len(room):
            p = num_packs
            num_packs += 1
            rest = capacity - n
        else:
            rem, p = room.pop(k)
            rest = rem - n
        pack_of.append(p)
        if rest > 0:
            bisect.insort(room, (rest, p))
    return pack_of
