"""Curves in a study: its points grouped into (student, arm, variant) series, and a series' level means."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

from rdistill.analysis.pareto import flop_levels
from rdistill.analysis.points import Point


def series(points: Iterable[Point]) -> dict[tuple[str, str, str], list[Point]]:
    """Points grouped into (model, arm, variant) curves, each sorted by training FLOPs, in a stable order."""
    groups: dict[tuple[str, str, str], list[Point]] = defaultdict(list)
    for p in sorted(points, key=Point.sort_key):
        groups[p.series_key].append(p)
    return {k: sorted(v, key=lambda p: (p.train_flops, p.sort_key())) for k, v in groups.items()}


def level_means(pts: Sequence[Point], metric: str) -> list[tuple[float, float]]:
    """(mean training FLOPs, mean accuracy) of each FLOP level of a series, by increasing FLOPs.

    Replicates at one level (runs stopping within a step of one budget, see :func:`flop_levels`) are
    averaged; points without an accuracy on ``metric`` are left out.
    """
    usable = [(p.train_flops, p.metric(metric)) for p in pts if p.metric(metric) is not None]
    level = flop_levels(x for x, _ in usable)
    groups: dict[float, list[tuple[float, float]]] = defaultdict(list)
    for x, y in usable:
        groups[level[x]].append((x, y))
    return [(statistics.fmean(x for x, _ in groups[k]), statistics.fmean(y for _, y in groups[k])) for k in sorted(groups)]
