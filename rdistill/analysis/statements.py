"""Compute-equivalent statements read off a study's own points, each with its uncertainty.

Two kinds:

- who wins at each matched training budget and by how much (:func:`compare_at_budget`): the difference
  of accuracies with a 95% interval paired over the items both configurations were scored on (and
  over seeds when there are replicates, :mod:`.resample`), a paired test (McNemar's exact test, or a
  sign-flip permutation test over replicate means), and the p-value Holm-adjusted over every such
  comparison in the report; a win is clear only when the adjusted p-value is below 5% and the interval
  excludes 0;
- how many times the training FLOPs one configuration needs to reach the accuracy another reaches
  (:func:`equal_accuracy_statements`), from fitted curves when both have a fit that is not degenerate,
  else by interpolating between measured points (the statement says which, and why a fit was not
  used), with a bootstrap interval: the items resampled and the curves refitted (or re-interpolated).

Nothing is extrapolated beyond the FLOPs that were measured.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.curves import Curve, common_level, ratio_replicates
from rdistill.analysis.fits import FitResult
from rdistill.analysis.points import Point, arms_in, budget_key, reference_arm
from rdistill.analysis.resample import Config, Difference, Resampler, configurations
from rdistill.analysis.series import series
from rdistill.analysis.stats import holm, percentile_interval
from rdistill.data.curriculum import arm_sort_key

ALPHA = 0.05
"""Family-wise error rate of the matched-budget comparisons (Holm)."""


@dataclass(frozen=True)
class Statement:
    """One sentence read off the data, and the numbers behind it.

    ``kind`` is "budget" (matched training budget) or "equal" (training FLOPs for equal accuracy);
    ``method`` says how it was computed ("measured", "fit", "interpolation"). ``ok`` is False when the
    comparison could not be made; then ``subject`` names the pair and ``why`` says what was missing,
    without the metric, so the report can group such notes. ``estimate`` is the difference in accuracy
    (budget) or the FLOPs ratio (equal), ``lo`` and ``hi`` its 95% interval; ``p_value`` and
    ``p_adjusted`` (Holm) belong to matched-budget comparisons, ``clear`` says whether the win is.
    """

    kind: str
    metric: str
    text: str
    method: str = ""
    ok: bool = True
    subject: str = ""
    why: str = ""
    estimate: float | None = None
    lo: float | None = None
    hi: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    clear: bool | None = None


def _budget_text(budget: float, kind: str | None) -> str:
    count = f" ({kind} count)" if kind and kind != "exact" else ""
    return f"{flops_text(budget)} training FLOPs{count}"


def _p_text(p: float) -> str:
    """"p = 0.12", or "p < 0.001"."""
    return f"p = {p:.2g}" if p >= 1e-3 else "p < 0.001"


def _ranked(pts: Sequence[Point], metric: str) -> list[Config]:
    """Configurations by decreasing accuracy (replicates averaged: a lucky run is not picked)."""
    return sorted(configurations(pts, metric), key=lambda c: (-c.accuracy(metric), c.first.sort_key()))


def _versus(where: str, metric: str, win: Config, other: Config, d: Difference, rs: Resampler,
            p_adj: float, count: int) -> Statement:
    """The winner against one other arm: the gap, its interval, the paired test and whether it is clear."""
    aw, ao = win.accuracy(metric), other.accuracy(metric)
    iw, io = rs.config_interval(win, metric), rs.config_interval(other, metric)
    acc = lambda a, i: f"{pct(a)} [{100 * i[0]:.1f}, {100 * i[1]:.1f}]"  # noqa: E731
    if aw == ao:
        head = f"at {where}, {win.label} and {other.label} tie on {metric} ({acc(aw, iw)} and {acc(ao, io)})"
    else:
        head = (f"at {where}, {win.label} beats {other.label} by {100 * (aw - ao):.1f} points on {metric} "
                f"({acc(aw, iw)} vs {acc(ao, io)})")
    how = f"paired on {d.items} items" if d.paired else f"unpaired, {d.items} items (no per-item scores)"
    clear = aw != ao and p_adj < ALPHA and d.lo > 0
    tail = (f"; difference 95% interval [{100 * d.lo:.1f}, {100 * d.hi:.1f}] points ({how}); {d.test} "
            f"{_p_text(d.p_value)}, Holm-adjusted over {count} comparisons {_p_text(p_adj)}")
    if aw != ao:
        tail += ": a clear win" if clear else ": not a clear win"
    return Statement("budget", metric, head + tail, "measured", estimate=aw - ao, lo=d.lo, hi=d.hi,
                     p_value=d.p_value, p_adjusted=p_adj, clear=clear)


def compare_at_budget(
    points: Sequence[Point], metrics: Sequence[str], *, resampler: Resampler | None = None
) -> list[Statement]:
    """At each FLOP budget, the best configuration per metric against the best of every other arm.

    A configuration is one student, arm (and variant) at one budget; replicate runs of it are averaged.
    Each statement gives both accuracies with their intervals, the difference in points with its paired
    interval and test (:meth:`Resampler.difference`), and the p-value Holm-adjusted over all the
    comparisons made (every metric and budget). Only runs trained to a FLOP budget, and that spent at
    least 99% of it, take part (a run its data stopped early is not at matched compute).
    """
    rs = resampler if resampler is not None else Resampler(points)
    by_budget: dict[tuple[float, str], list[Point]] = defaultdict(list)
    for p in points:
        if p.budget is not None and p.spent_budget:
            by_budget[(budget_key(p.budget), p.budget_kind or "exact")].append(p)
    rows: list[tuple[str, str, Config, Config | None, Difference | None]] = []
    for metric in metrics:
        for budget, kind in sorted(by_budget):
            ranked = _ranked(by_budget[(budget, kind)], metric)
            if not ranked:
                continue
            win = ranked[0]
            others: dict[str, Config] = {}
            for c in ranked[1:]:
                if c.arm != win.arm and c.arm not in others:
                    others[c.arm] = c
            where = _budget_text(budget, kind)
            if not others:
                rows.append((metric, where, win, None, None))
            for arm in sorted(others, key=arm_sort_key):
                rows.append((metric, where, win, others[arm], rs.difference(win, others[arm], metric)))
    tested = [r for r in rows if r[4] is not None]
    adjusted = iter(holm([r[4].p_value for r in tested]))
    out = []
    for metric, where, win, other, d in rows:
        if d is None:
            out.append(Statement("budget", metric, f"at {where}, only arm {win.arm} was run; best on {metric}: "
                                 f"{win.label} ({pct(win.accuracy(metric))})", "measured"))
        else:
            out.append(_versus(where, metric, win, other, d, rs, next(adjusted), len(tested)))
    return out


def interpolated_flops_for(pts: Sequence[Point], metric: str, accuracy: float) -> float | None:
    """Least training FLOPs at which a series' measured accuracy reaches ``accuracy``.

    Linear interpolation in log10 FLOPs on the running maximum of the per-level mean accuracies. None
    if the level is at or below the first measurement (it would be extrapolation), above the best
    one, or there are fewer than two FLOP levels.
    """
    return Curve("", metric, tuple(pts)).flops_for(accuracy)


def _x(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.3g}x"


def _needs_text(la: str, lb: str, xa: float, xb: float) -> str:
    """"A needs 2.1x the training FLOPs of B", with "(2.1x fewer)" spelled out when A needs less."""
    r = xa / xb
    fewer = f" ({1 / r:.3g}x fewer)" if f"{1 / r:.3g}" != "1" and r < 1 else ""
    return f"{la} needs {r:.3g}x the training FLOPs of {lb}{fewer}"


def ratio_interval(a: Curve, b: Curve, level: float, rs: Resampler) -> tuple[tuple[float, float] | None, float]:
    """Bootstrap interval of FLOPs(a) / FLOPs(b) at ``level``, and the share of replicates where it is undefined."""
    r = ratio_replicates(a.flops_for_replicates(level, rs), b.flops_for_replicates(level, rs))
    return percentile_interval(r, rs.conf), float(np.mean(np.isnan(r)))


def _not_compared(metric: str, la: str, lb: str, why: str, method: str) -> Statement:
    subject = f"{la} vs {lb}"
    return Statement("equal", metric, f"{subject} on {metric}: not compared, {why}", method, ok=False,
                     subject=subject, why=why)


def curve_statement(a: Curve, b: Curve, rs: Resampler, note: str = "") -> Statement:
    """FLOPs ``a`` needs for the accuracy both reach, over the FLOPs ``b`` needs, with its bootstrap interval."""
    level, why = common_level(a, b)
    xa = a.flops_for(level) if level is not None else None
    xb = b.flops_for(level) if level is not None else None
    if level is not None and (xa is None or xb is None):
        why = "they reach no common accuracy within the measured FLOPs"
    if xa is None or xb is None:
        return _not_compared(a.metric, a.label, b.label, why, a.method if a.method == b.method else "interpolation")
    method = "fit" if a.fit is not None and b.fit is not None else "interpolation"
    how = "fitted curves" if method == "fit" else "interpolated between measured points"
    text = (f"{_needs_text(a.label, b.label, xa, xb)} for the same {a.metric} accuracy "
            f"({pct(level)}: {flops_text(xa)} vs {flops_text(xb)} FLOPs; {how}{note})")
    interval, undefined = ratio_interval(a, b, level, rs)
    lo, hi = interval if interval is not None else (None, None)
    if interval is None:
        text += "; no bootstrap interval (no replicate reaches the level on both curves)"
    else:
        refit = "items resampled, curves refitted" if method == "fit" else "items resampled"
        text += f"; 95% interval {_x(lo)} to {_x(hi)} ({rs.n} bootstrap replicates, {refit}"
        text += f"; undefined in {100 * undefined:.2g}% of them)" if undefined > 0 else ")"
        if lo <= 1 <= hi:
            text += ": not clearly different from 1x"
    return Statement("equal", a.metric, text, method, estimate=xa / xb, lo=lo, hi=hi)


def _degenerate_note(*fits: FitResult | None) -> str:
    """"; the fit of X is degenerate (why), so interpolated instead", or "" when no fit is."""
    bad = [f for f in fits if f is not None and f.fit is not None and f.degenerate]
    if not bad:
        return ""
    what = "; ".join(f"{f.label}: {f.degenerate[0]}" + (f" and {len(f.degenerate) - 1} more" if len(f.degenerate) > 1 else "")
                     for f in bad)
    return f"; {'fits' if len(bad) > 1 else 'fit'} degenerate ({what}), so interpolated instead"


def equal_accuracy_statements(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult], *, resampler: Resampler | None = None
) -> list[Statement]:
    """How many times the training FLOPs one configuration needs to reach the accuracy of another.

    Every series of a non-reference arm is compared with every series of the reference arm ("ift" when
    present, else the first arm), and every arm pooled over sizes with the reference arm pooled over
    sizes (fits only). The accuracy compared is the middle of the range both curves cover within their
    measured FLOPs, so nothing is extrapolated. A series pair uses the fitted curves when both have a
    fit that is not degenerate, else interpolation between measured points (the statement says which,
    and names a degenerate fit); a pooled pair with a degenerate fit is not compared. Pairs that cannot
    be compared (too few FLOP levels, no common accuracy) give a statement with ``ok=False``.
    """
    rs = resampler if resampler is not None else Resampler(points)
    out: list[Statement] = []
    arms = arms_in(points)
    if len(arms) < 2:
        return out
    ref = reference_arm(arms)
    groups = series(points)
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    for metric in metrics:
        curves = {}
        for key, pts in groups.items():
            fr = fit_of.get((*key, metric))
            curves[key] = (Curve(pts[0].label, metric, tuple(pts), fr if fr is not None and fr.usable else None), fr)
        refs = [k for k in groups if k[1] == ref]
        for tk in (k for k in groups if k[1] != ref):
            for rk in refs:
                (ct, ft), (cr, fr) = curves[tk], curves[rk]
                both_fitted = ft is not None and fr is not None and ft.fit is not None and fr.fit is not None
                out.append(curve_statement(ct, cr, rs, _degenerate_note(ft, fr) if both_fitted else ""))
        for arm in arms:
            fa, fr = fit_of.get((None, arm, "", metric)), fit_of.get((None, ref, "", metric))
            if arm == ref or fa is None or fr is None:
                continue
            la, lr = f"{arm} (all sizes)", f"{ref} (all sizes)"
            if fa.fit is None or fr.fit is None:
                why = f"no fit for {la if fa.fit is None else lr}: {fa.reason if fa.fit is None else fr.reason}"
                out.append(_not_compared(metric, la, lr, why, "fit"))
            elif fa.degenerate or fr.degenerate:
                bad = fa if fa.degenerate else fr
                out.append(_not_compared(metric, la, lr, f"the fit of {bad.label} is degenerate "
                                         f"({'; '.join(bad.degenerate)})", "fit"))
            else:
                out.append(curve_statement(Curve(la, metric, fa.points, fa), Curve(lr, metric, fr.points, fr), rs))
    return out


def count_comparisons(statements: Sequence[Statement]) -> dict[str, int]:
    """How many tests and ratios a set of statements makes: {"budget": n, "equal": m}."""
    out = {"budget": 0, "equal": 0}
    for s in statements:
        if s.kind == "budget" and s.p_value is not None:
            out["budget"] += 1
        elif s.kind == "equal" and s.ok:
            out["equal"] += 1
    return out

