"""Saturating fits over a study: one per (student, arm) series, and one per arm pooled over students.

Each fit is checked for degeneracy (:func:`rdistill.analysis.fit.degenerate_reasons`). The ceiling (the
teacher's accuracy, the fit's bound on a + b) is one number or one per metric: :func:`parse_ceiling`
reads the command line's ``0.9`` or ``math-oe=0.921,general-mc=0.954`` (a bare number there is the
default for the metrics not named), and :func:`resolve_ceilings` gives every metric its value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rdistill.analysis.fit import (
    DEFAULT_RULES,
    PAPER_K_MAX,
    DegeneracyRules,
    Fit,
    bound_notes,
    degenerate_reasons,
    fit_problem,
    fit_saturating,
)
from rdistill.analysis.points import OVERALL, Point, arms_in
from rdistill.analysis.series import series

DEFAULT_KEY = "*"
"""Key of the default ceiling in a per-metric mapping (a bare number on the command line)."""


@dataclass(frozen=True)
class FitResult:
    """A fit (or why there is none) of one curve: a student-and-arm series, or an arm pooled over sizes.

    ``degenerate`` lists why the fit cannot support a compute-equivalent statement (empty when it can);
    ``notes`` the bounds it touches that do not disqualify it (a at 0, a + b at the ceiling);
    ``points`` are the points it was fitted on, for bootstrap refits.
    """

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
    degenerate: tuple[str, ...] = ()
    points: tuple[Point, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def pooled(self) -> bool:
        return self.model is None

    @property
    def usable(self) -> bool:
        """Fitted and not degenerate: compute-equivalent statements may be read off it."""
        return self.fit is not None and not self.degenerate


def parse_ceiling(text: str) -> float | dict[str, float]:
    """``"0.9"`` -> 0.9; ``"math-oe=0.921,0.9"`` -> {"math-oe": 0.921, "*": 0.9}. ValueError says what is wrong."""
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    if not parts:
        raise ValueError("--ceiling is empty; give a number (0.9) or metric=value pairs (math-oe=0.921,...)")
    out: dict[str, float] = {}
    for part in parts:
        name, _, value = part.rpartition("=") if "=" in part else (DEFAULT_KEY, "", part)
        name = name.strip()
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--ceiling {part!r}: {value!r} is not a number") from None
        if not (math.isfinite(v) and 0 < v <= 1):
            raise ValueError(f"--ceiling {part!r}: a ceiling is an accuracy fraction in (0, 1], got {v}")
        if not name or name in out:
            raise ValueError(f"--ceiling {part!r}: {'metric name missing' if not name else f'{name} given twice'}")
        out[name] = v
    return out[DEFAULT_KEY] if set(out) == {DEFAULT_KEY} else out


def resolve_ceilings(
    ceiling: float | Mapping[str, float], metrics: Sequence[str], points: Sequence[Point] = ()
) -> dict[str, float]:
    """The ceiling of every metric. A mapping names metrics, with ``"*"`` as the default for the rest;
    ``overall``, if not named, is the mean of the families' ceilings weighted by their held-out items
    when every family is named. ValueError for an unknown metric or one left without a ceiling."""
    if not isinstance(ceiling, Mapping):
        c = float(ceiling)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"ceiling must be a positive number, got {ceiling}")
        return {m: c for m in metrics}
    unknown = sorted(set(ceiling) - set(metrics) - {DEFAULT_KEY})
    if unknown:
        raise ValueError(f"ceiling given for {', '.join(unknown)}, which this study does not measure; "
                         f"metrics: {', '.join(metrics)}")
    out = {m: float(ceiling[m]) for m in metrics if m in ceiling}
    fams = [m for m in metrics if m != OVERALL]
    if OVERALL in metrics and OVERALL not in out and fams and all(f in ceiling for f in fams):
        weights = {f: sum(p.n_by_family.get(f, 0) for p in points) for f in fams}
        total = sum(weights.values())
        out[OVERALL] = (sum(weights[f] * ceiling[f] for f in fams) / total if total
                        else sum(ceiling[f] for f in fams) / len(fams))
    for m in metrics:
        if m not in out:
            if DEFAULT_KEY not in ceiling:
                raise ValueError(f"no ceiling (teacher accuracy) given for {m!r}; have {sorted(ceiling)} "
                                 "(add a bare number as the default for the rest)")
            out[m] = float(ceiling[DEFAULT_KEY])
    return {m: out[m] for m in metrics}


def _fit_one(
    label: str, arm: str, model: str | None, variant: str, metric: str, pts: list[Point], ceiling: float,
    rules: DegeneracyRules, k_max: float,
) -> FitResult:
    usable = [p for p in pts if p.metric(metric) is not None]
    xs = [p.train_flops for p in usable]
    ys = [p.metric(metric) for p in usable]
    reason = fit_problem(xs, ys)
    fit = fit_saturating(xs, ys, ceiling, k_max=k_max) if reason is None else None
    return FitResult(label, arm, model, variant, metric, len(usable), fit, reason,
                     min(xs) if xs else None, max(xs) if xs else None,
                     degenerate_reasons(fit, rules) if fit is not None else (), tuple(usable),
                     tuple(n for n in bound_notes(fit, rules) if not rules.strict_bounds) if fit is not None else ())


def fit_study(
    points: Sequence[Point], metrics: Sequence[str], ceiling: float | Mapping[str, float] = 1.0,
    *, rules: DegeneracyRules = DEFAULT_RULES, k_max: float = PAPER_K_MAX,
) -> list[FitResult]:
    """Fits of accuracy against training FLOPs for every metric: per series, then per arm pooled over sizes.

    A series (one student, one arm) is fitted across its budgets; an arm pooled over sizes is fitted on
    every point of that arm, as the paper fits each format across its five student sizes. ``ceiling``
    is the teacher's accuracy: one number, or one per metric (:func:`resolve_ceilings`; ValueError if a
    metric has none). Every fit is checked against ``rules`` for degeneracy. ``k_max`` bounds the bend k
    (the paper's 1 by default; see :func:`rdistill.analysis.fit.fit_saturating`).
    """
    ceilings = resolve_ceilings(ceiling, metrics, points)
    out: list[FitResult] = []
    groups = series(points)
    arms = arms_in(points)
    for metric in metrics:
        c = ceilings[metric]
        for (model, arm, variant), pts in groups.items():
            out.append(_fit_one(pts[0].label, arm, model, variant, metric, pts, c, rules, k_max))
        for arm in arms:
            pts = [p for p in points if p.arm == arm]
            out.append(_fit_one(f"{arm} (all sizes)", arm, None, "", metric, pts, c, rules, k_max))
    return out
