"""The saturating fit redone on many bootstrap replicates of its points at once.

A bootstrap interval for a FLOPs-for-accuracy read off a fit needs the fit redone on every resample of
the held-out items (a thousand times, say). :func:`refit_many` does them together: one Nelder-Mead
simplex per replicate, all advanced in lockstep by numpy (the same moves as scipy's Nelder-Mead:
reflect, expand, contract, shrink), each started from the fit to the full data and minimising the same
mean absolute error under the same constraints (:func:`rdistill.analysis.fit.unpack_many`). Starting
from the full-data optimum is the usual practice for bootstrap refits: the resampled data are close to
the original, so is their optimum. Nothing is random here; the replicates come from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rdistill.analysis.fit import _STEP, Fit, unconstrained, unpack_many

_ITERATIONS = 400
_RESTART_ITERATIONS = 200


@dataclass(frozen=True)
class Refits:
    """Parameters of one fit per bootstrap replicate (arrays of equal length), in the fit's own unit of x."""

    a: np.ndarray
    b: np.ndarray
    g_scaled: np.ndarray
    k: np.ndarray
    mae: np.ndarray
    x_ref: float

    def flops_for(self, accuracy: float) -> np.ndarray:
        """Per replicate, FLOPs at which its curve reaches ``accuracy``: 0 if it starts above, inf if it never does."""
        frac = (accuracy - self.a) / self.b
        out = np.full(self.a.shape, np.inf)
        out[frac <= 0] = 0.0
        inside = (frac > 0) & (frac < 1)
        t = -np.log1p(-frac[inside])
        with np.errstate(over="ignore"):  # a replicate that gets there only beyond any float: inf, as never
            out[inside] = self.x_ref * (t / self.g_scaled[inside]) ** (1.0 / self.k[inside])
        return out


def _batch_nelder_mead(
    loss: Callable[[np.ndarray, np.ndarray], np.ndarray], x0: np.ndarray, step: np.ndarray, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Nelder-Mead on every row of ``x0`` at once (coefficients 1, 2, 1/2, 1/2); best rows and losses.

    ``loss(theta, rows)`` is the loss of each row of ``theta`` for the replicates ``rows``. A row stops
    moving once its simplex has collapsed (losses within 1e-10, vertices within 1e-6), as scipy stops.
    """
    n_rows, d = x0.shape
    simplex = np.repeat(x0[:, None, :], d + 1, axis=1)
    simplex[:, 1:, :] += np.diag(step)[None, :, :]
    every = np.arange(n_rows)
    values = np.stack([loss(simplex[:, j], every) for j in range(d + 1)], axis=1)
    active = every
    for _ in range(iterations):
        sx, sv = simplex[active], values[active]
        order = np.argsort(sv, axis=1, kind="stable")
        sx = np.take_along_axis(sx, order[:, :, None], axis=1)
        sv = np.take_along_axis(sv, order, axis=1)
        done = (sv[:, -1] - sv[:, 0] <= 1e-10) & (np.abs(sx - sx[:, :1]).max(axis=(1, 2)) <= 1e-6)
        simplex[active], values[active] = sx, sv
        if done.all():
            break
        active, sx, sv = active[~done], sx[~done], sv[~done]
        best, worst = sx[:, 0], sx[:, -1]
        f_best, f_second, f_worst = sv[:, 0], sv[:, -2], sv[:, -1]
        centre = sx[:, :-1].mean(axis=1)
        candidates = [2 * centre - worst, 3 * centre - 2 * worst, 1.5 * centre - 0.5 * worst, 0.5 * (centre + worst)]
        (xr, xe, xo, xi), (fr, fe, fo, fi) = candidates, [loss(c, active) for c in candidates]
        new_x, new_f = xr.copy(), fr.copy()
        expand = (fr < f_best) & (fe < fr)
        new_x[expand], new_f[expand] = xe[expand], fe[expand]
        contract = fr >= f_second
        outside = contract & (fr < f_worst) & (fo <= fr)
        inside = contract & (fr >= f_worst) & (fi < f_worst)
        new_x[outside], new_f[outside] = xo[outside], fo[outside]
        new_x[inside], new_f[inside] = xi[inside], fi[inside]
        shrink = contract & ~outside & ~inside
        sx[~shrink, -1], sv[~shrink, -1] = new_x[~shrink], new_f[~shrink]
        if shrink.any():
            sx[shrink, 1:] = best[shrink, None, :] + 0.5 * (sx[shrink, 1:] - best[shrink, None, :])
            for j in range(1, d + 1):
                sv[shrink, j] = loss(sx[shrink, j], active[shrink])
        simplex[active], values[active] = sx, sv
    i = np.argmin(values, axis=1)
    return simplex[every, i], values[every, i]


def refit_many(fit: Fit, x: np.ndarray, ys: np.ndarray) -> Refits:
    """Refit ``fit``'s curve to every row of ``ys`` (replicate accuracies at FLOPs ``x``), from ``fit``'s optimum.

    Each replicate gets a Nelder-Mead search started at the full-data fit and one restart from its own
    optimum with a smaller simplex, as :func:`rdistill.analysis.fit.fit_saturating` restarts. Rows with
    a NaN accuracy give NaN parameters.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.atleast_2d(np.asarray(ys, dtype=float))
    if ya.shape[1] != xa.size:
        raise ValueError(f"replicates have {ya.shape[1]} accuracies for {xa.size} FLOP values")
    bad = np.isnan(ya).any(axis=1)
    ya = np.where(bad[:, None], 0.0, ya)
    logx = np.log(xa / fit.x_ref)
    ceiling = fit.ceiling

    def loss(theta: np.ndarray, rows: np.ndarray) -> np.ndarray:
        a, b, gs, k = unpack_many(theta, ceiling, fit.k_max)
        pred = a[:, None] - b[:, None] * np.expm1(-gs[:, None] * np.exp(k[:, None] * logx[None, :]))
        return np.abs(ya[rows] - pred).mean(axis=1)

    start = np.repeat(unconstrained(fit)[None, :], ya.shape[0], axis=0)
    theta, _ = _batch_nelder_mead(loss, start, _STEP, _ITERATIONS)
    theta, mae = _batch_nelder_mead(loss, theta, _STEP * 0.2, _RESTART_ITERATIONS)
    a, b, gs, k = unpack_many(theta, ceiling, fit.k_max)
    nan = np.where(bad, math.nan, 1.0)
    return Refits(a * nan, b * nan, gs * nan, k * nan, mae * nan, fit.x_ref)
