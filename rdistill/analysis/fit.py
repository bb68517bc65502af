"""The paper's saturating fit of accuracy against FLOPs: ``f(x) = a + b (1 - exp(-g x^k))``.

Constraints ``a > 0``, ``b > 0``, ``a + b <= ceiling`` (the teacher's accuracy), ``g > 0`` and
``0 < k <= k_max`` hold by construction (``k_max`` is 1 in the paper's form; above 1 the curve may take
off more steeply than any exponential saturation, as a small student does when it learns a task in one
go): the optimiser works on unconstrained parameters that :func:`_unpack` maps into the feasible set. The loss is the mean absolute error, which has no gradient
at its minimum, so the search is derivative-free: scipy's Nelder-Mead simplex, started from the best
shapes of a fixed grid (:func:`_starts`) and restarted from its own optimum until it stops improving.
Nothing is random, so a fit is reproducible to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from rdistill.analysis.pareto import flop_levels

MIN_FIT_POINTS = 4
MIN_FIT_DISTINCT_X = 3
N_PARAMETERS = 4
_CLIP_UNIT = 30.0
_CLIP_RATE = (-60.0, 40.0)
_STEP = np.array([0.5, 0.5, 1.0, 0.5])
"""Initial simplex edge per unconstrained parameter (logit of a + b, logit of a's share, log g, logit of k / k_max)."""
PAPER_K_MAX = 1.0
"""The paper's bound on k."""
_STARTS = 4
_RESTARTS = 4


@dataclass(frozen=True)
class Fit:
    """``f(x) = a + b (1 - exp(-g x^k))`` fitted to accuracy against FLOPs.

    ``a`` is the accuracy the curve starts from, ``a + b`` the accuracy it saturates at (at most
    ``ceiling``), ``k`` how gradually it bends (at most ``k_max``: the lower, the more gradual; above 1
    the curve is S-shaped in log FLOPs, steeper than the paper's form allows). The fit is done on
    ``x / x_ref`` (``x_ref`` the smallest FLOP count fitted) so that the optimiser sees numbers near 1;
    ``g_scaled`` is the rate in that unit and ``g = g_scaled * x_ref ** -k`` the rate for x in FLOPs.
    ``mae`` is the mean absolute error of the fit on its ``n`` points, in the same unit as accuracy;
    ``levels`` is how many distinct FLOP levels those points are at (replicates and students trained to
    one budget share a level).
    """

    a: float
    b: float
    g: float
    k: float
    mae: float
    n: int = 0
    ceiling: float = 1.0
    x_ref: float = 1.0
    g_scaled: float = 0.0
    levels: int = 0
    k_max: float = PAPER_K_MAX

    def predict(self, x: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Fitted accuracy at ``x`` FLOPs."""
        xs = np.asarray(x, dtype=float) / self.x_ref
        return self.a - self.b * np.expm1(-self.g_scaled * xs**self.k)

    def flops_for(self, accuracy: float) -> float | None:
        """FLOPs at which the fitted curve reaches ``accuracy``; None outside ``(a, a + b)``."""
        frac = (accuracy - self.a) / self.b
        if not 0.0 < frac < 1.0:
            return None
        t = -math.log1p(-frac)
        return self.x_ref * (t / self.g_scaled) ** (1.0 / self.k)


def fit_problem(x: Sequence[float], y: Sequence[float], *, min_points: int = MIN_FIT_POINTS) -> str | None:
    """Why these points cannot be fitted (too few points, too few distinct FLOP levels), or None.

    Four parameters need at least four points, and at least three distinct FLOP levels (values more
    than 1% apart, see :func:`flop_levels`) for the bend of the curve to mean anything.
    """
    if len(x) < min_points:
        return f"{len(x)} point{'s' if len(x) != 1 else ''}, need at least {min_points}"
    distinct = len(set(flop_levels(x).values()))
    if distinct < MIN_FIT_DISTINCT_X:
        return f"{distinct} distinct FLOP level{'s' if distinct != 1 else ''}, need at least {MIN_FIT_DISTINCT_X}"
    return None


def check_k_max(k_max: float) -> None:
    """The bound on k is the paper's 1 or more (finite)."""
    if not (math.isfinite(k_max) and k_max >= PAPER_K_MAX):
        raise ValueError(f"the bound on k must be a finite number of at least {PAPER_K_MAX:g} (the paper's), "
                         f"got {k_max}")


def _unpack(theta: np.ndarray, ceiling: float, k_max: float) -> tuple[float, float, float, float]:
    """Unconstrained parameters to (a, b, g_scaled, k), satisfying every constraint by construction.

    s = ceiling * sigmoid(p) is a + b, so 0 < a + b < ceiling; a = s * sigmoid(q) and b = s * sigmoid(-q)
    are both positive; g_scaled = exp(r) > 0; k = k_max * sigmoid(w) in (0, k_max). The unconstrained
    values are clipped to a range where no sigmoid rounds to exactly 0 or 1, so the constraints hold in floating
    point too.
    """
    p, q, r, w = (float(v) for v in theta)
    p, q, w = (min(max(v, -_CLIP_UNIT), _CLIP_UNIT) for v in (p, q, w))
    r = min(max(r, _CLIP_RATE[0]), _CLIP_RATE[1])
    s = ceiling * float(expit(p))
    return s * float(expit(q)), s * float(expit(-q)), math.exp(r), k_max * float(expit(w))


def _starts(logx: np.ndarray, y: np.ndarray, ceiling: float, count: int, k_max: float) -> list[np.ndarray]:
    """The ``count`` best points of a deterministic grid over the curve's shape, as unconstrained starts.

    The grid spans the bend k (0.1 to 0.95, and geometrically on to 0.95 k_max when k_max is above 1)
    and the FLOPs at which the curve is half-way up (from a little below to a little above the fitted
    range, which sets g). For each shape, a and b are the least-squares line of y on 1 - exp(-g x^k),
    pulled strictly inside the constraints; the shapes are ranked by mean absolute error, all in one
    vectorised pass.
    """
    span = max(float(logx.max()), 1e-9)
    ks = np.linspace(0.1, 0.95, 10)
    if k_max > PAPER_K_MAX:
        ks = np.concatenate([ks, np.geomspace(PAPER_K_MAX, 0.95 * k_max, 8)])
    half = np.linspace(-0.25, 1.25, 16) * span
    kk, hh = (m.ravel() for m in np.meshgrid(ks, half, indexing="ij"))
    gs = math.log(2.0) * np.exp(-kk * hh)
    phi = -np.expm1(-gs[:, None] * np.exp(kk[:, None] * logx[None, :]))
    pm, ym = phi.mean(axis=1), float(y.mean())
    var = ((phi - pm[:, None]) ** 2).mean(axis=1)
    cov = ((phi - pm[:, None]) * (y - ym)[None, :]).mean(axis=1)
    b = np.clip(np.divide(cov, var, out=np.zeros_like(cov), where=var > 1e-12), 1e-3 * ceiling, 0.98 * ceiling)
    a = np.clip(ym - b * pm, 1e-3 * ceiling, 0.98 * ceiling)
    total = a + b
    shrink = np.minimum(1.0, 0.99 * ceiling / total)
    a, b, total = a * shrink, b * shrink, total * shrink
    mae = np.abs(y[None, :] - (a[:, None] + b[:, None] * phi)).mean(axis=1)
    best = np.argsort(mae, kind="stable")[:count]
    return [np.array([logit(total[i] / ceiling), logit(a[i] / total[i]), math.log(gs[i]), logit(kk[i] / k_max)])
            for i in best]


def _simplex_search(
    loss: Callable[[np.ndarray], float], x0: np.ndarray, step: np.ndarray, max_iter: int
) -> tuple[np.ndarray, float]:
    """scipy's Nelder-Mead from the simplex of ``x0`` and ``x0`` moved by ``step`` along each axis."""
    simplex = np.vstack([x0, x0 + np.diag(step)])
    res = minimize(loss, x0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "xatol": 1e-8, "fatol": 1e-12, "maxiter": max_iter})
    return res.x, float(res.fun)


def fit_saturating(
    x: Sequence[float], y: Sequence[float], ceiling: float = 1.0, *, min_points: int = MIN_FIT_POINTS,
    k_max: float = PAPER_K_MAX,
) -> Fit | None:
    """The paper's fit of accuracy ``y`` against FLOPs ``x``, minimising mean absolute error.

    Constraints a > 0, b > 0, a + b <= ceiling, g > 0, 0 < k <= k_max (1, the paper's) hold by
    construction (see :func:`_unpack`), whatever the data: decreasing, flat or above the ceiling. x is divided by its
    smallest value before fitting (see :class:`Fit` for how g relates back to FLOPs). Optimisation: the
    four best shapes of a fixed grid (:func:`_starts`) each start a Nelder-Mead search
    (``scipy.optimize.minimize``), restarted from its own optimum with a smaller simplex until it stops
    improving; the best is kept (first of equals), so the result is deterministic. Returns None when
    :func:`fit_problem` finds too few points (it says why).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got shapes {xa.shape} and {ya.shape}")
    if not np.all(np.isfinite(xa)) or np.any(xa <= 0):
        raise ValueError("FLOP values must be finite and positive")
    if not np.all(np.isfinite(ya)):
        raise ValueError("accuracies must be finite")
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise ValueError(f"ceiling must be a positive number, got {ceiling}")
    check_k_max(k_max)
    if fit_problem(list(xa), list(ya), min_points=min_points) is not None:
        return None
    x_ref = float(xa.min())
    logx = np.log(xa / x_ref)
    n = len(xa)

    def loss(theta: np.ndarray) -> float:
        a, b, gs, k = _unpack(theta, ceiling, k_max)
        pred = a - b * np.expm1(-gs * np.exp(k * logx))
        return float(np.abs(ya - pred).sum()) / n

    best_theta, best_val = None, math.inf
    for start in _starts(logx, ya, ceiling, count=_STARTS, k_max=k_max):
        theta, val = _simplex_search(loss, start, _STEP, max_iter=600)
        for _ in range(_RESTARTS):
            again, val2 = _simplex_search(loss, theta, _STEP * 0.2, max_iter=400)
            improved = val2 < val - 1e-12
            if val2 <= val:
                theta, val = again, val2
            if not improved:
                break
        if val < best_val:
            best_theta, best_val = theta, val
    a, b, gs, k = _unpack(best_theta, ceiling, k_max)
    return Fit(a=a, b=b, g=gs * x_ref ** (-k), k=k, mae=best_val, n=n, ceiling=ceiling, x_ref=x_ref, g_scaled=gs,
               levels=len(set(flop_levels(list(xa)).values())), k_max=k_max)


@dataclass(frozen=True)
class DegeneracyRules:
    """When a fit is degenerate. Accuracy thresholds are fractions (0.02 = 2 points)."""

    min_rise: float = 0.02
    """b (the rise from a to the plateau) below this is a flat line: no FLOPs-for-accuracy to read off."""
    k_max: float = 0.99
    """k at or above this share of its bound (the fit's k_max, the paper's 1 by default) sits at that bound."""
    k_min: float = 0.01
    """k at or below this sits at its bound 0."""
    bound_tol: float = 1e-3
    """a within this share of the ceiling of 0, or a + b within it of the ceiling, sits at its bound."""
    min_mae: float = 5e-4
    """A mean absolute error below this (0.05 points) passes through every point: the shape is not tested."""
    strict_bounds: bool = False
    """Also count a at 0 and a + b at the ceiling as degenerate. Off by default: they fix where the curve
    starts below, or levels off above, the measured FLOPs (a curve that starts at 0%, one still rising at
    the largest budget), not its shape within them, which is what a FLOPs-for-accuracy reads."""


DEFAULT_RULES = DegeneracyRules()


def k_at_bound(fit: Fit, rules: DegeneracyRules = DEFAULT_RULES) -> bool:
    """k pushed against its upper bound: the curve rises as steeply as the bound allows, or more."""
    return fit.k >= rules.k_max * fit.k_max


def degenerate_reasons(fit: Fit, rules: DegeneracyRules = DEFAULT_RULES) -> tuple[str, ...]:
    """Why a fit cannot support a compute-equivalent statement; empty when it can.

    Degenerate: no more points, or distinct FLOP levels, than its four parameters (four levels with
    replicates still let the curve pass through the level means); the shape parameters k or g pinned at a bound
    of the feasible set (the data pushed the optimum against a constraint, so the shape is the
    constraint's, not the data's); a rise b below ``rules.min_rise`` (a flat line); a mean absolute
    error of about 0. With ``rules.strict_bounds``, also a or a + b at a bound (:func:`bound_notes`).
    """
    out = []
    if fit.n <= N_PARAMETERS:
        out.append(f"{fit.n} points for {N_PARAMETERS} parameters")
    elif 0 < fit.levels <= N_PARAMETERS:
        out.append(f"{fit.levels} FLOP levels ({fit.n} points) for {N_PARAMETERS} parameters")
    if k_at_bound(fit, rules):
        out.append(f"k = {fit.k:.3f} at its bound {fit.k_max:g}")
    if fit.k <= rules.k_min:
        out.append(f"k = {fit.k:.3g} at its bound 0")
    if fit.b < rules.min_rise:
        out.append(f"b = {100 * fit.b:.2f} points, below {100 * rules.min_rise:g} (a flat line)")
    if rules.strict_bounds:
        out += bound_notes(fit, rules)
    if fit.g_scaled > 0 and not _CLIP_RATE[0] + 1.0 < math.log(fit.g_scaled) < _CLIP_RATE[1] - 1.0:
        out.append("g at the end of its range")
    if fit.mae < rules.min_mae:
        out.append(f"MAE {100 * fit.mae:.3f} points: the curve passes through every point")
    return tuple(out)


def bound_notes(fit: Fit, rules: DegeneracyRules = DEFAULT_RULES) -> list[str]:
    """a at its bound 0, a + b at the ceiling: where the curve starts or levels off is the constraint's."""
    out = []
    if fit.a <= rules.bound_tol * fit.ceiling:
        out.append("a at its bound 0")
    if fit.a + fit.b >= (1.0 - rules.bound_tol) * fit.ceiling:
        out.append(f"a + b at the ceiling {100 * fit.ceiling:.1f}%")
    return out


def unconstrained(fit: Fit) -> np.ndarray:
    """The optimiser's parameters of a fit (the inverse of :func:`_unpack`, within its clipping)."""
    s = fit.a + fit.b
    theta = [logit(min(max(s / fit.ceiling, 1e-13), 1 - 1e-13)), logit(min(max(fit.a / s, 1e-13), 1 - 1e-13)),
             math.log(fit.g_scaled), logit(min(max(fit.k / fit.k_max, 1e-13), 1 - 1e-13))]
    return np.array(theta, dtype=float)


def unpack_many(
    theta: np.ndarray, ceiling: float, k_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_unpack` on rows of unconstrained parameters: arrays a, b, g_scaled, k."""
    p, q, w = (np.clip(theta[:, i], -_CLIP_UNIT, _CLIP_UNIT) for i in (0, 1, 3))
    r = np.clip(theta[:, 2], *_CLIP_RATE)
    s = ceiling * expit(p)
    return s * expit(q), s * expit(-q), np.exp(r), k_max * expit(w)
