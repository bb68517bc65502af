"""Compute-equivalent statements read off a study's own points.

Two kinds: who wins at each matched training budget and by how much (with the binomial standard
error of the difference), and how many times the training FLOPs one configuration needs to reach the
accuracy another reaches (from fitted curves when both have one, else by interpolating between
measured points). Nothing is extrapolated beyond the FLOPs that were measured.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.fits import FitResult
from rdistill.analysis.points import Point, arms_in, budget_key, reference_arm
from rdistill.analysis.series import level_means, series
from rdistill.data.curriculum import arm_sort_key


@dataclass(frozen=True)
class Statement:
    """One sentence read off the data.

    ``kind`` is "budget" (matched training budget) or "equal" (training FLOPs for equal accuracy);
    ``method`` says how it was computed ("measured", "fit", "interpolation"). ``ok`` is False when the
    comparison could not be made; then ``subject`` names the pair and ``why`` says what was missing,
    without the metric, so the report can group such notes.
    """

    kind: str
    metric: str
    text: str
    method: str = ""
    ok: bool = True
    subject: str = ""
    why: str = ""


def _budget_text(budget: float, kind: str | None) -> str:
    count = f" ({kind} count)" if kind and kind != "exact" else ""
    return f"{flops_text(budget)} training FLOPs{count}"


@dataclass(frozen=True)
class _Config:
    """A (series, budget) configuration: its replicates' mean accuracy and total held-out size."""

    label: str
    arm: str
    accuracy: float
    n: int
    runs: int
    key: tuple


def _configs(pts: Sequence[Point], metric: str) -> list[_Config]:
    """Replicates of one configuration averaged, so a lucky run is not picked as the configuration."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in pts:
        if p.metric(metric) is not None:
            groups[p.series_key].append(p)
    out = []
    for g in groups.values():
        g = sorted(g, key=Point.sort_key)
        acc = statistics.fmean(p.metric(metric) for p in g)
        runs = f" (mean of {len(g)} runs)" if len(g) > 1 else ""
        out.append(_Config(g[0].label + runs, g[0].arm, acc, sum(p.metric_n(metric) for p in g), len(g), g[0].sort_key()))
    return sorted(out, key=lambda c: (-c.accuracy, c.key))


def _se_diff(p1: float, n1: int, p2: float, n2: int) -> float | None:
    """Binomial standard error of the difference of two accuracies measured on n1 and n2 examples."""
    if n1 <= 0 or n2 <= 0:
        return None
    return math.sqrt(max(p1 * (1 - p1), 0.0) / n1 + max(p2 * (1 - p2), 0.0) / n2)


def _versus(where: str, metric: str, win: _Config, other: _Config) -> str:
    """The winner against one other arm: the gap in points and whether it is within sampling error."""
    diff = 100.0 * (win.accuracy - other.accuracy)
    se = _se_diff(win.accuracy, win.n, other.accuracy, other.n)
    if diff == 0:
        head = f"at {where}, {win.label} and {other.label} tie on {metric} ({pct(win.accuracy)})"
    else:
        head = (f"at {where}, {win.label} beats {other.label} by {diff:.1f} points on {metric} "
                f"({pct(win.accuracy)} vs {pct(other.accuracy)})")
    if se is None:
        return head + "; held-out set sizes unknown, no error estimate"
    tail = f"; s.e. of the difference (held-out sampling) {100.0 * se:.1f} points"
    if diff != 0 and diff < 200.0 * se:
        tail += ", within two s.e.: not a clear win"
    return head + tail


def compare_at_budget(points: Sequence[Point], metrics: Sequence[str]) -> list[Statement]:
    """At each FLOP budget, the best configuration per metric against the best of every other arm.

    A configuration is one student, arm (and variant) at one budget; replicate runs of it are averaged.
    Each statement gives both accuracies, the difference in points and the standard error of that
    difference from the held-out set sizes (binomial); a difference within two standard errors is
    flagged as not a clear win. Only runs trained to a FLOP budget, and that spent at least 99% of
    it, take part (a run its data stopped early is not at matched compute).
    """
    out: list[Statement] = []
    by_budget: dict[tuple[float, str], list[Point]] = defaultdict(list)
    for p in points:
        if p.budget is not None and p.spent_budget:
            by_budget[(budget_key(p.budget), p.budget_kind or "exact")].append(p)
    for metric in metrics:
        for budget, kind in sorted(by_budget):
            where = _budget_text(budget, kind)
            ranked = _configs(by_budget[(budget, kind)], metric)
            if not ranked:
                continue
            win = ranked[0]
            others: dict[str, _Config] = {}
            for c in ranked[1:]:
                if c.arm != win.arm and c.arm not in others:
                    others[c.arm] = c
            if not others:
                out.append(Statement("budget", metric, f"at {where}, only arm {win.arm} was run; best on {metric}: "
                                     f"{win.label} ({pct(win.accuracy)})", "measured"))
                continue
            for arm in sorted(others, key=arm_sort_key):
                out.append(Statement("budget", metric, _versus(where, metric, win, others[arm]), "measured"))
    return out


def _envelope(pts: Sequence[Point], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per FLOP level: log10 of its mean FLOPs, and the running maximum of its mean accuracy.

    Replicates at one level are averaged; the running maximum means more compute is never counted as
    worse than the best already reached at less.
    """
    means = level_means(pts, metric)
    if not means:
        return np.array([]), np.array([])
    return np.log10([m[0] for m in means]), np.maximum.accumulate([m[1] for m in means])


def interpolated_flops_for(pts: Sequence[Point], metric: str, accuracy: float) -> float | None:
    """Least training FLOPs at which a series' measured accuracy reaches ``accuracy``.

    Linear interpolation in log10 FLOPs on the running maximum of the per-level mean accuracies. None
    if the level is at or below the first measurement (it would be extrapolation), above the best
    one, or there are fewer than two FLOP levels.
    """
    lx, env = _envelope(pts, metric)
    if len(lx) < 2 or accuracy <= env[0] or accuracy > env[-1]:
        return None
    i = int(np.argmax(env >= accuracy))
    t = (accuracy - env[i - 1]) / (env[i] - env[i - 1])
    return float(10 ** (lx[i - 1] + t * (lx[i] - lx[i - 1])))


def _needs_text(la: str, lb: str, xa: float, xb: float) -> str:
    """"A needs 2.1x the training FLOPs of B", with "(2.1x fewer)" spelled out when A needs less."""
    r = xa / xb
    fewer = f" ({1 / r:.3g}x fewer)" if r < 1 else ""
    return f"{la} needs {r:.3g}x the training FLOPs of {lb}{fewer}"


def equal_accuracy_statements(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult]
) -> list[Statement]:
    """How many times the training FLOPs one configuration needs to reach the accuracy of another.

    Every series of a non-reference arm is compared with every series of the reference arm ("ift" when
    present, else the first arm), and every arm pooled over sizes with the reference arm pooled over
    sizes (fits only). The accuracy compared is the middle of the range both curves cover within their
    measured FLOPs, so nothing is extrapolated. A series pair uses the fitted curves when both have one,
    else interpolation between measured points (the statement says which). Pairs that cannot be
    compared (too few FLOP levels, no common accuracy) give a statement with ``ok=False``.
    """
    out: list[Statement] = []
    arms = arms_in(points)
    if len(arms) < 2:
        return out
    ref = reference_arm(arms)
    groups = series(points)
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    for metric in metrics:
        refs = [(k, v) for k, v in groups.items() if k[1] == ref]
        tests = [(k, v) for k, v in groups.items() if k[1] != ref]
        for tk, tpts in tests:
            for rk, rpts in refs:
                out.append(_pair_statement(tpts, rpts, metric, fit_of.get((*tk, metric)), fit_of.get((*rk, metric))))
        for arm in arms:
            fa, fr = fit_of.get((None, arm, "", metric)), fit_of.get((None, ref, "", metric))
            if arm == ref or fa is None or fr is None:
                continue
            la, lr = f"{arm} (all sizes)", f"{ref} (all sizes)"
            if fa.fit is None or fr.fit is None:
                why = f"no fit for {la if fa.fit is None else lr}: {fa.reason if fa.fit is None else fr.reason}"
                out.append(_not_compared(metric, la, lr, why, "fit"))
                continue
            out.append(_fitted_statement(la, lr, metric, fa, fr))
    return out


def _not_compared(metric: str, la: str, lb: str, why: str, method: str) -> Statement:
    subject = f"{la} vs {lb}"
    return Statement("equal", metric, f"{subject} on {metric}: not compared, {why}", method, ok=False,
                     subject=subject, why=why)


def _fitted_statement(la: str, lb: str, metric: str, fa: FitResult, fb: FitResult) -> Statement:
    ranges = [tuple(float(v) for v in f.fit.predict([f.x_min, f.x_max])) for f in (fa, fb)]
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    level = 0.5 * (lo + hi)
    xa = fa.fit.flops_for(level) if hi > lo else None
    xb = fb.fit.flops_for(level) if hi > lo else None
    if xa is None or xb is None:
        return _not_compared(metric, la, lb, "their fitted curves reach no common accuracy within the measured FLOPs", "fit")
    text = (f"{_needs_text(la, lb, xa, xb)} for the same {metric} accuracy "
            f"({pct(level)}: {flops_text(xa)} vs {flops_text(xb)} FLOPs; fitted curves)")
    return Statement("equal", metric, text, "fit")


def _pair_statement(
    tpts: list[Point], rpts: list[Point], metric: str, ft: FitResult | None, fr: FitResult | None
) -> Statement:
    lt, lr = tpts[0].label, rpts[0].label
    if ft is not None and fr is not None and ft.fit is not None and fr.fit is not None:
        return _fitted_statement(lt, lr, metric, ft, fr)
    envs = []
    for pts in (tpts, rpts):
        lx, env = _envelope(pts, metric)
        if len(lx) < 2:
            return _not_compared(metric, lt, lr, f"not enough points: {pts[0].label} has {len(lx)} FLOP "
                                 f"level{'s' if len(lx) != 1 else ''}, interpolation needs 2", "interpolation")
        envs.append(env)
    lo, hi = max(e[0] for e in envs), min(e[-1] for e in envs)
    if hi <= lo:
        return _not_compared(metric, lt, lr, "no common accuracy above both first budgets", "interpolation")
    level = 0.5 * (lo + hi)
    xt, xr = interpolated_flops_for(tpts, metric, level), interpolated_flops_for(rpts, metric, level)
    text = (f"{_needs_text(lt, lr, xt, xr)} for the same {metric} accuracy "
            f"({pct(level)}: {flops_text(xt)} vs {flops_text(xr)} FLOPs; interpolated between measured points)")
    return Statement("equal", metric, text, "interpolation")
