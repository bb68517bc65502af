"""Pareto frontiers of points: minimise a cost (FLOPs), maximise an accuracy; and FLOP levels.

Runs trained to one budget stop within an optimizer step of it, so their exact FLOPs differ in the
last digits; :func:`flop_levels` groups such values into one level, for frontiers, fits and curves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from rdistill.analysis.points import Point

EQUAL_FLOPS_RTOL = 0.01

Key = str | Callable[[Point], float | None]


def _getter(key: Key) -> Callable[[Point], float | None]:
    """A point attribute (``"train_flops"``), a metric (``"overall"``, ``"math-oe"``), or a function."""
    if callable(key):
        return key
    if key in Point.__dataclass_fields__:
        return lambda p: getattr(p, key)
    return lambda p: p.metric(key)


def flop_levels(xs: Iterable[float], rtol: float = EQUAL_FLOPS_RTOL) -> dict[float, float]:
    """Map each FLOP value to its level: values within ``rtol`` of a level's smallest value share it.

    Runs trained to the same budget stop within one optimizer step of it, so their exact FLOPs differ
    in the last digits; they are the same compute. Levels are built from the smallest value up, which
    makes the grouping deterministic.
    """
    out: dict[float, float] = {}
    start: float | None = None
    for v in sorted(set(float(x) for x in xs)):
        if start is None or v > start * (1.0 + rtol):
            start = v
        out[v] = start
    return out


def pareto_front(points: Iterable[Point], x: Key, y: Key, *, rtol: float = 0.0) -> list[Point]:
    """The points no other point beats: minimise ``x``, maximise ``y``; returned by increasing ``x``.

    A point is on the frontier if every point with x at most its x has a strictly lower y. So a point
    with the same y as a cheaper point, or the same x as a better point, is dominated. x values within
    ``rtol`` of each other count as equal (see :func:`flop_levels`; 0 means exact comparison). Of
    points with equal x and y only the first in :meth:`Point.sort_key` order is kept, so the answer
    does not depend on the input order. Points whose x or y is missing or not finite are ignored.
    """
    gx, gy = _getter(x), _getter(y)
    rows = []
    for p in points:
        vx, vy = gx(p), gy(p)
        if vx is None or vy is None or not (math.isfinite(vx) and math.isfinite(vy)):
            continue
        rows.append((vx, -vy, p.sort_key(), p))
    level = flop_levels([r[0] for r in rows], rtol)
    rows = [(level[float(r[0])], *r[1:]) for r in rows]
    rows.sort(key=lambda r: r[:3])
    front: list[Point] = []
    best = -math.inf
    for _vx, neg_vy, _key, p in rows:
        if -neg_vy > best:
            front.append(p)
            best = -neg_vy
    return front
