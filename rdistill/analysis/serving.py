"""The cost of serving: total cost = training FLOPs + Q x inference FLOPs per query, and its break-evens.

The paper keeps training and inference compute on two axes. A student is trained once and then
answers Q queries, so what it costs is ``T + Q I`` (T its training FLOPs, I its inference FLOPs per
query). A configuration that is cheaper to train but dearer to serve (a reasoning student emits long
traces) pays off only up to a query volume Q*:

- at matched accuracy (:func:`break_even_at_accuracy`): two series' curves (their fits when not
  degenerate, else their measured points) give the training FLOPs each needs for the accuracy both
  reach, and the inference FLOPs per query at those training FLOPs (interpolated along the series);
  Q* = (T_b - T_a) / (I_a - I_b) is the volume from which the dearer-to-train b costs less in total;
- at matched budget (:func:`break_even_at_budget`): at each training budget, the more accurate
  configuration W against the best of each other arm O; if W is also no dearer to serve it costs less
  at every volume, else O would need more training to reach W's accuracy (interpolated along O's
  measured points) and Q* is the volume from which that is the cheaper way to W's accuracy.

Both get a bootstrap interval from the report's resampler (items and seeds resampled, curves refitted);
inference FLOPs per query are taken as measured. :func:`serving_frontier` is the Pareto frontier of
accuracy against total cost at one volume: which configurations, and so which arms, are worth
training when Q queries will be served.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdistill.analysis._format import flops_text, pct
from rdistill.analysis.curves import Curve, common_level
from rdistill.analysis.fits import FitResult
from rdistill.analysis.pareto import EQUAL_FLOPS_RTOL, pareto_front
from rdistill.analysis.points import Point, arms_in, budget_key, reference_arm
from rdistill.analysis.resample import Config, Resampler, configurations
from rdistill.analysis.series import series
from rdistill.analysis.stats import break_even, break_even_many, percentile_interval

DEFAULT_QUERIES = (1e3, 1e6, 1e9)


@dataclass(frozen=True)
class BreakEven:
    """Q* of one pair: from ``q`` queries on, ``second`` costs less in total than ``first``.

    ``first`` is the configuration that is cheaper to train (matched accuracy) or the more accurate one
    (matched budget); ``second`` is the other, trained for as long as it needs to match. ``q`` is 0 when
    ``second`` costs no more at any volume, inf when it never pays off; ``lower_bound`` says the true Q*
    is above ``q`` (``first``'s accuracy was not reached within ``second``'s measured FLOPs). ``kind``
    is "accuracy" or "budget"; ``ok`` False: not computed, ``text`` says why.
    """

    kind: str
    metric: str
    first: str
    second: str
    text: str
    q: float = math.nan
    lo: float | None = None
    hi: float | None = None
    lower_bound: bool = False
    ok: bool = True


def total_cost(p: Point, queries: float) -> float | None:
    """Training FLOPs plus ``queries`` times inference FLOPs per query; None without an inference count."""
    if p.inference_flops_per_query is None:
        return None
    return p.train_flops + queries * p.inference_flops_per_query


def q_text(q: float) -> str:
    """A query volume: "0", "inf" or short scientific notation."""
    if math.isinf(q):
        return "inf"
    return "0" if q == 0 else flops_text(q)


def _interval_text(q: np.ndarray, conf: float) -> tuple[str, float | None, float | None]:
    iv = percentile_interval(q, conf)
    if iv is None:
        return "; no bootstrap interval", None, None
    undefined = float(np.mean(np.isnan(q)))
    extra = f", the roles swap in {100 * undefined:.0f}% of replicates" if undefined > 0 else ""
    return f" (95% interval {q_text(iv[0])} to {q_text(iv[1])}{extra})", iv[0], iv[1]


def _pair_at_accuracy(a: Curve, b: Curve, rs: Resampler) -> BreakEven:
    level, why = common_level(a, b)
    ta = a.flops_for(level) if level is not None else None
    tb = b.flops_for(level) if level is not None else None
    if ta is None or tb is None:
        return BreakEven("accuracy", a.metric, a.label, b.label, f"{a.label} vs {b.label}: "
                         f"{why or 'they reach no common accuracy within the measured FLOPs'}", ok=False)
    ia, ib = a.inference_at(ta), b.inference_at(tb)
    if math.isnan(ia) or math.isnan(ib):
        return BreakEven("accuracy", a.metric, a.label, b.label,
                         f"{a.label} vs {b.label}: no inference FLOP count", ok=False)
    if tb < ta:
        a, b, ta, tb, ia, ib = b, a, tb, ta, ib, ia
    q = break_even(ta, ia, tb, ib)
    ra, rb = a.flops_for_replicates(level, rs), b.flops_for_replicates(level, rs)
    qs = break_even_many(ra, a.inference_at(ra), rb, b.inference_at(rb))
    interval, lo, hi = _interval_text(qs, rs.conf)
    how = "fitted curves" if a.fit is not None and b.fit is not None else "interpolated between measured points"
    head = (f"at {pct(level)} {a.metric} ({how}): {a.label} needs {flops_text(ta)} training FLOPs and serves at "
            f"{flops_text(ia)} FLOPs/query; {b.label} needs {flops_text(tb)} and serves at {flops_text(ib)}")
    if math.isinf(q):
        body = f": {a.label} is cheaper to train and no dearer to serve, so it costs less at every volume"
    elif q == 0:
        body = f": {b.label} costs no more to train or to serve, so it costs less at every volume"
    else:
        body = f": from Q* = {q_text(q)} queries{interval}, {b.label} costs less in total; below it, {a.label}"
    return BreakEven("accuracy", a.metric, a.label, b.label, head + body, q, lo, hi)


def break_even_at_accuracy(
    points: Sequence[Point], metrics: Sequence[str], fits: Sequence[FitResult], rs: Resampler
) -> list[BreakEven]:
    """Q* for every series of a non-reference arm against every series of the reference arm, per metric."""
    arms = arms_in(points)
    if len(arms) < 2:
        return []
    ref = reference_arm(arms)
    fit_of = {(f.model, f.arm, f.variant, f.metric): f for f in fits}
    groups = series(points)
    out = []
    for metric in metrics:
        def curve(key: tuple) -> Curve:
            fr = fit_of.get((*key, metric))
            return Curve(groups[key][0].label, metric, tuple(groups[key]), fr if fr is not None and fr.usable else None)

        for tk in (k for k in groups if k[1] != ref):
            for rk in (k for k in groups if k[1] == ref):
                out.append(_pair_at_accuracy(curve(tk), curve(rk), rs))
    return out


def _config_inference(c: Config) -> float | None:
    vals = [p.inference_flops_per_query for p in c.points]
    return float(np.mean(vals)) if all(v is not None for v in vals) else None


def _pair_at_budget(win: Config, other: Config, where: str, metric: str, groups: dict, rs: Resampler) -> BreakEven:
    t = float(np.mean([p.train_flops for p in win.points]))
    iw, io = _config_inference(win), _config_inference(other)
    acc = win.accuracy(metric)
    lw, lo_, name = win.label, other.label, other.first.label
    if iw is None or io is None:
        return BreakEven("budget", metric, lw, lo_, f"{where}, {metric}: {lw} vs {lo_}: no inference FLOP count", ok=False)
    head = (f"{where}, {metric}: {lw} reaches {pct(acc)} serving at {flops_text(iw)} FLOPs/query; "
            f"{lo_} reaches {pct(other.accuracy(metric))} at {flops_text(io)}")
    if iw <= io:
        return BreakEven("budget", metric, lw, lo_, head + f": {lw} is as accurate or more and no dearer to serve, "
                         "so it costs less at every volume", math.inf)
    curve = Curve(other.first.label, metric, tuple(groups[other.first.series_key]))
    t_other = curve.flops_for(acc)
    if t_other is None:
        lx, env = curve.envelope()
        if len(lx) and acc <= env[0]:
            t_other = float(10 ** lx[0])
    if t_other is None:
        top = float(10 ** curve.envelope()[0][-1])
        bound = break_even(t, iw, top, curve.inference_at(top))
        text = (head + f"; {name} never reaches {pct(acc)} within its measured budgets (up to "
                f"{flops_text(top)})" + (f", so Q* > {q_text(bound)} queries" if 0 < bound < math.inf else ""))
        return BreakEven("budget", metric, lw, lo_, text, bound, lower_bound=True)
    i_other = curve.inference_at(t_other)
    q = break_even(t, iw, t_other, i_other)
    reps = curve.flops_for_replicates(rs.config(win, metric), rs)
    qs = break_even_many(np.full(rs.n, t), np.full(rs.n, iw), reps, curve.inference_at(reps))
    interval, lo, hi = _interval_text(qs, rs.conf)
    head += (f"; {name} reaches {pct(acc)} at {flops_text(t_other)} training FLOPs (from its measured points), "
             f"serving at {flops_text(i_other)}")
    if q == 0:
        body = f": that costs no more than {lw} at any volume"
    elif math.isinf(q):
        body = f": {lw} costs less at every volume"
    else:
        body = f": from Q* = {q_text(q)} queries{interval} that is the cheaper way to {pct(acc)}; below it, {lw}"
    return BreakEven("budget", metric, lw, lo_, head + body, q, lo, hi)


def break_even_at_budget(points: Sequence[Point], metrics: Sequence[str], rs: Resampler) -> list[BreakEven]:
    """At each training budget and metric: the most accurate configuration against the best of each other arm."""
    by_budget: dict[float, list[Point]] = defaultdict(list)
    for p in points:
        if p.budget is not None and p.spent_budget:
            by_budget[budget_key(p.budget)].append(p)
    groups = series(points)
    out = []
    for metric in metrics:
        for budget in sorted(by_budget):
            ranked = sorted(configurations(by_budget[budget], metric), key=lambda c: (-c.accuracy(metric), c.first.sort_key()))
            if not ranked:
                continue
            seen = {ranked[0].arm}
            for c in ranked[1:]:
                if c.arm not in seen:
                    seen.add(c.arm)
                    out.append(_pair_at_budget(ranked[0], c, f"at {flops_text(budget)} training FLOPs", metric, groups, rs))
    return out


def serving_frontier(points: Sequence[Point], metric: str, queries: float) -> list[Point]:
    """Configurations no other beats on ``metric`` at less or equal total cost for ``queries`` queries."""
    usable = [p for p in points if p.inference_flops_per_query is not None]
    return pareto_front(usable, lambda p: total_cost(p, queries), metric, rtol=EQUAL_FLOPS_RTOL)


def frontier_statement(points: Sequence[Point], metric: str, queries: float) -> str:
    """Which configurations and arms are on the total-cost frontier for ``queries`` queries."""
    front = serving_frontier(points, metric, queries)
    if not front:
        return f"{metric}: no configuration has an inference FLOP count"
    arms = arms_in(front)
    path = " → ".join(f"{p.label} at {flops_text(p.budget if p.budget is not None else p.train_flops)} "
                      f"({flops_text(total_cost(p, queries))}, {pct(p.metric(metric))})" for p in front)
    who = f"only {arms[0]} is on the frontier" if len(arms) == 1 else f"arms on the frontier: {', '.join(arms)}"
    return f"{metric}: {who}: {path} (total FLOPs, accuracy)"
