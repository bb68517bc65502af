"""Saturating fits over a study: one per (student, arm) series, and one per arm pooled over students."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rdistill.analysis.fit import Fit, fit_problem, fit_saturating
from rdistill.analysis.points import Point, arms_in
from rdistill.analysis.series import series


@dataclass(frozen=True)
class FitResult:
    """A fit (or why there is none) of one curve: a student-and-arm series, or an arm pooled over sizes."""

    label: str
    arm: str
    model: str | None
    variant: str
    metric: str
    n: int
    fit: Fit | None
    reason: str | None
    x_min: float | None
    x_max: float | None

    @property
    def pooled(self) -> bool:
        return self.model is None


def _ceiling_for(ceiling: float | Mapping[str, float], metric: str) -> float:
    if isinstance(ceiling, Mapping):
        if metric not in ceiling:
            raise ValueError(f"no ceiling (teacher accuracy) given for {metric!r}; have {sorted(ceiling)}")
        return float(ceiling[metric])
    return float(ceiling)


def _fit_one(
    label: str, arm: str, model: str | None, variant: str, metric: str, pts: list[Point], ceiling: float
) -> FitResult:
    usable = [p for p in pts if p.metric(metric) is not None]
    xs = [p.train_flops for p in usable]
    ys = [p.metric(metric) for p in usable]
    reason = fit_problem(xs, ys)
    fit = fit_saturating(xs, ys, ceiling) if reason is None else None
    return FitResult(label, arm, model, variant, metric, len(usable), fit, reason,
                     min(xs) if xs else None, max(xs) if xs else None)


def fit_study(
    points: Sequence[Point], metrics: Sequence[str], ceiling: float | Mapping[str, float] = 1.0
) -> list[FitResult]:
    """Fits of accuracy against training FLOPs for every metric: per series, then per arm pooled over sizes.

    A series (one student, one arm) is fitted across its budgets; an arm pooled over sizes is fitted on
    every point of that arm, as the paper fits each format across its five student sizes. ``ceiling``
    is the teacher's accuracy: one number, or one per metric (ValueError if a metric has none).
    """
    out: list[FitResult] = []
    groups = series(points)
    arms = arms_in(points)
    for metric in metrics:
        c = _ceiling_for(ceiling, metric)
        for (model, arm, variant), pts in groups.items():
            out.append(_fit_one(pts[0].label, arm, model, variant, metric, pts, c))
        for arm in arms:
            pts = [p for p in points if p.arm == arm]
            out.append(_fit_one(f"{arm} (all sizes)", arm, None, "", metric, pts, c))
    return out
