"""Training FLOPs a curve needs for an accuracy, with bootstrap replicates, and its serving cost there.

A :class:`Curve` is a series (one student and arm) or an arm pooled over sizes, read either off its
saturating fit (when the fit is there and not degenerate) or by interpolating its measured points
(linear in log10 FLOPs, on the running maximum of the mean accuracy of each FLOP level). Both give the
FLOPs for an accuracy on the data (:meth:`Curve.flops_for`) and on every bootstrap replicate
(:meth:`Curve.flops_for_replicates`: the fit redone on resampled items, :mod:`.refit`, or the points
resampled), so a ratio or a break-even gets a percentile interval. Nothing is extrapolated beyond the
measured FLOPs for the point estimate; on a replicate, an accuracy its curve never reaches costs
infinitely many FLOPs, and one an interpolated replicate already has at its first budget costs that
budget (an upper bound).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdistill.analysis.fits import FitResult
from rdistill.analysis.pareto import flop_levels
from rdistill.analysis.points import Point
from rdistill.analysis.refit import Refits, refit_many
from rdistill.analysis.resample import Resampler
from rdistill.analysis.series import series


@dataclass(frozen=True, eq=False)
class Curve:
    """Accuracy on ``metric`` against training FLOPs of ``points``, from ``fit`` when given, else interpolated."""

    label: str
    metric: str
    points: tuple[Point, ...]
    fit: FitResult | None = None

    @property
    def method(self) -> str:
        return "fit" if self.fit is not None else "interpolation"

    def _levels(self) -> tuple[np.ndarray, list[list[Point]]]:
        """log10 of each FLOP level's mean FLOPs, and the points at each level, by increasing FLOPs."""
        usable = [p for p in self.points if p.metric(self.metric) is not None]
        level = flop_levels(p.train_flops for p in usable)
        groups: dict[float, list[Point]] = defaultdict(list)
        for p in usable:
            groups[level[p.train_flops]].append(p)
        keys = sorted(groups)
        return np.log10([np.mean([p.train_flops for p in groups[k]]) for k in keys]), [groups[k] for k in keys]

    def envelope(self) -> tuple[np.ndarray, np.ndarray]:
        """log10 FLOPs of each level and the running maximum of the levels' mean accuracies."""
        lx, groups = self._levels()
        if not groups:
            return lx, np.array([])
        return lx, np.maximum.accumulate([np.mean([p.metric(self.metric) for p in g]) for g in groups])

    def accuracy_range(self) -> tuple[float, float] | None:
        """Accuracies the curve covers within its measured FLOPs; None without two levels (interpolation)."""
        if self.fit is not None:
            f = self.fit
            lo, hi = (float(v) for v in f.fit.predict([f.x_min, f.x_max]))
            return lo, hi
        lx, env = self.envelope()
        return (float(env[0]), float(env[-1])) if len(lx) >= 2 else None

    def flops_for(self, accuracy: float) -> float | None:
        """Least training FLOPs at which the curve reaches ``accuracy``; None outside what was measured."""
        if self.fit is not None:
            return self.fit.fit.flops_for(accuracy)
        lx, env = self.envelope()
        if len(lx) < 2 or accuracy <= env[0] or accuracy > env[-1]:
            return None
        i = int(np.argmax(env >= accuracy))
        t = (accuracy - env[i - 1]) / (env[i] - env[i - 1])
        return float(10 ** (lx[i - 1] + t * (lx[i] - lx[i - 1])))

    def refits(self, rs: Resampler) -> Refits:
        """The fit redone on every replicate of the resampler (computed once per resampler)."""
        key = ("refits", id(self.fit))
        if key not in rs.memo:
            fr = self.fit
            ys = np.stack([rs.point(p, self.metric) for p in fr.points], axis=1)
            rs.memo[key] = refit_many(fr.fit, np.array([p.train_flops for p in fr.points]), ys)
        return rs.memo[key]

    def flops_for_replicates(self, accuracy: float | np.ndarray, rs: Resampler) -> np.ndarray:
        """Per bootstrap replicate, the training FLOPs for ``accuracy`` (one level, or one per replicate)."""
        level = np.broadcast_to(np.asarray(accuracy, dtype=float), (rs.n,))
        if self.fit is not None:
            return self.refits(rs).flops_for(level)
        lx, groups = self._levels()
        if len(lx) < 2:
            return np.full(rs.n, math.nan)
        ys = np.stack([np.mean([rs.point(p, self.metric) for p in g], axis=0) for g in groups], axis=1)
        env = np.maximum.accumulate(ys, axis=1)
        out = np.full(rs.n, math.inf)
        first = level <= env[:, 0]
        out[first] = 10 ** lx[0]
        inside = ~first & (level <= env[:, -1])
        if inside.any():
            e = env[inside]
            i = np.argmax(e >= level[inside, None], axis=1)
            rows = np.arange(e.shape[0])
            lo, hi = e[rows, i - 1], e[rows, i]
            t = (level[inside] - lo) / (hi - lo)
            out[inside] = 10 ** (lx[i - 1] + t * (lx[i] - lx[i - 1]))
        return out

    def inference_at(self, flops: float | np.ndarray) -> float | np.ndarray:
        """Inference FLOPs per query of the curve's configuration trained with ``flops`` training FLOPs.

        Interpolated log-log between the FLOP levels' mean inference FLOPs, held at the end values
        outside them (what was measured nearest); NaN where no point has an inference count. For a
        series only: a curve pooled over sizes has no single serving cost.
        """
        lx, groups = self._levels()
        pairs = [(x, np.mean([p.inference_flops_per_query for p in g]))
                 for x, g in zip(lx, groups) if all(p.inference_flops_per_query for p in g)]
        f = np.asarray(flops, dtype=float)
        if not pairs:
            return np.full(f.shape, math.nan) if f.ndim else math.nan
        xs, ys = np.array([p[0] for p in pairs]), np.log10([p[1] for p in pairs])
        with np.errstate(divide="ignore"):
            lf = np.log10(np.where(np.isfinite(f) & (f > 0), f, np.nan))
        out = 10 ** np.interp(np.nan_to_num(lf, nan=xs[0]), xs, ys)
        out = np.where(np.isinf(f), 10 ** ys[-1], out)
        out = np.where(np.isnan(f), math.nan, out)
        return float(out) if out.ndim == 0 else out


def common_level(a: Curve, b: Curve) -> tuple[float | None, str]:
    """The middle of the accuracy range both curves cover within their measured FLOPs, or None and why."""
    ra, rb = a.accuracy_range(), b.accuracy_range()
    for c, r in ((a, ra), (b, rb)):
        if r is None:
            n = len(c.envelope()[0])
            return None, (f"not enough points: {c.label} has {n} FLOP level{'s' if n != 1 else ''}, "
                          "interpolation needs 2")
    lo, hi = max(ra[0], rb[0]), min(ra[1], rb[1])
    if hi <= lo:
        what = "their fitted curves reach" if a.fit is not None and b.fit is not None else "they reach"
        return None, f"{what} no common accuracy within the measured FLOPs"
    return 0.5 * (lo + hi), ""


def ratio_replicates(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den per replicate with the limits spelled out: x/inf = 0, inf/x = inf, inf/inf and 0/0 NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(num, dtype=float) / np.asarray(den, dtype=float)
    return r


def series_curves(points: Sequence[Point], metric: str, fits: dict) -> list[Curve]:
    """One curve per series of ``points`` on ``metric``: its fit when usable, else its points."""
    out = []
    for key, pts in series(points).items():
        fr = fits.get((*key, metric))
        out.append(Curve(pts[0].label, metric, tuple(pts), fr if fr is not None and fr.usable else None))
    return out
