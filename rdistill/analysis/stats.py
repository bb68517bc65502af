"""The report's statistics, on plain numbers: intervals for accuracies and their differences, paired
tests, multiple-comparison adjustment, bootstrap percentiles and the serving break-even.

- :func:`wilson_interval`: the Wilson score interval of an accuracy ``k / n``; never of zero width, also
  at 0% and 100% (where a Wald interval is the point itself).
- :func:`paired_difference_interval`: Newcombe's score interval (1998, method 10) for the difference of
  two accuracies measured on the same items, from the 2x2 table of right/wrong pairs;
  :func:`unpaired_difference_interval` (method 10 of his unpaired paper) when items cannot be paired.
- :func:`mcnemar_exact`: McNemar's exact test (two-sided binomial test on the discordant items);
  :func:`sign_flip_test`: its generalisation to per-item differences that are not 0/1 (replicates
  averaged per item), a Monte Carlo permutation test with a fixed seed; :func:`fisher_exact` for
  unpaired counts.
- :func:`holm`: Holm's step-down adjustment of p-values over the comparisons a report makes.
- :func:`percentile_interval`: the percentile interval of bootstrap replicates, where +-inf are legal
  values (a curve that never reaches an accuracy needs infinitely many FLOPs) and NaN marks a replicate
  where the quantity is not defined.
- :func:`break_even`: the query volume Q* at which total cost ``T + Q I`` (training FLOPs plus Q times
  inference FLOPs per query) of two configurations is equal.

Everything is deterministic: random draws take an explicit seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

DEFAULT_CONFIDENCE = 0.95


def _z(conf: float) -> float:
    if not 0.0 < conf < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {conf}")
    return float(sps.norm.ppf(0.5 + conf / 2.0))


def wilson_interval(k: float, n: float, conf: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``k`` may be fractional: a mean over replicates).

    (0, 1) when ``n`` is 0: nothing was measured.
    """
    if abs(k) <= 1e-9 * max(n, 1):
        k = 0.0  # an accuracy times n, off by rounding
    elif abs(k - n) <= 1e-9 * max(n, 1):
        k = n
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = _z(conf)
    z2 = z * z
    p = k / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exactly: centre - half is ~1e-17 at k = 0
    return lo, 1.0 if k == n else min(1.0, centre + half)


def paired_difference_interval(
    both: float, only_a: float, only_b: float, neither: float, conf: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's score interval for ``p_a - p_b`` on paired items (Newcombe 1998, Stat Med 17:2635, method 10).

    The table counts items both arms got right, only arm a, only arm b, neither (fractional counts are
    accepted: per-item means over replicates). Built from the Wilson intervals of both accuracies and
    their correlation, so it never collapses to a point, even at 0% against 0%.
    """
    n = both + only_a + only_b + neither
    if n <= 0:
        return -1.0, 1.0
    ka, kb = both + only_a, both + only_b
    pa, pb = ka / n, kb / n
    la, ua = wilson_interval(ka, n, conf)
    lb, ub = wilson_interval(kb, n, conf)
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(denom) if denom > 0 else 0.0
    d = pa - pb
    lower = math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    upper = math.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    return max(-1.0, d - lower), min(1.0, d + upper)


def unpaired_difference_interval(
    ka: float, na: float, kb: float, nb: float, conf: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``ka/na - kb/nb`` of independent samples (Stat Med 17:873, method 10)."""
    if na <= 0 or nb <= 0:
        return -1.0, 1.0
    pa, pb = ka / na, kb / nb
    la, ua = wilson_interval(ka, na, conf)
    lb, ub = wilson_interval(kb, nb, conf)
    d = pa - pb
    return (max(-1.0, d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)),
            min(1.0, d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant items split as a fair coin would; 1 when none differ."""
    m = int(only_a) + int(only_b)
    if m == 0:
        return 1.0
    return float(sps.binomtest(int(only_a), m, 0.5).pvalue)


def sign_flip_test(diffs: Sequence[float] | np.ndarray, n_perm: int = 2000, seed: int = 0) -> float:
    """Two-sided paired permutation test that the mean of per-item differences is 0.

    Under the null the two arms are exchangeable on each item, so each difference is as likely with
    either sign; the p-value is the share of ``n_perm`` random sign flips (plus the observed one) whose
    mean is at least as far from 0 as the observed mean. With 0/1 outcomes this is McNemar's test, by
    Monte Carlo. 1 when every difference is 0.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(float(d.mean()))
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(n_perm, d.size))
    flipped = np.abs(signs @ d) / d.size
    return float((1 + np.count_nonzero(flipped >= observed - 1e-12)) / (n_perm + 1))


def fisher_exact(ka: int, na: int, kb: int, nb: int) -> float:
    """Two-sided Fisher exact p-value for ka/na against kb/nb (independent samples)."""
    if na <= 0 or nb <= 0:
        return 1.0
    return float(sps.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all of them), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def percentile_interval(samples: Sequence[float] | np.ndarray, conf: float = DEFAULT_CONFIDENCE) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the replicates that are not NaN (+-inf allowed); None if none is.

    Quantiles use the "inverted CDF" rule so an infinite replicate is never averaged with a finite one.
    """
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return None
    alpha = (1.0 - conf) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def break_even(t_a: float, i_a: float, t_b: float, i_b: float) -> float:
    """Query volume Q* from which configuration b costs less in total than a: ``T_b + Q I_b < T_a + Q I_a``.

    T is training FLOPs, I inference FLOPs per query. When b costs more to train and less to serve,
    Q* = (T_b - T_a) / (I_a - I_b). 0 when b costs no more to train or to serve (b is never the dearer);
    inf when b costs no less to serve and more to train (it never pays off); NaN when b is cheaper to
    train and dearer to serve (it is cheaper only below a volume: swap the roles).
    """
    t_a, i_a, t_b, i_b = float(t_a), float(i_a), float(t_b), float(i_b)
    if math.isinf(t_a) and math.isinf(t_b):
        return math.nan
    dt, di = t_b - t_a, i_a - i_b
    if dt <= 0 and di >= 0:
        return 0.0
    if dt > 0 and di <= 0:
        return math.inf
    if dt > 0 and di > 0:
        return dt / di
    return math.nan


def break_even_many(t_a: np.ndarray, i_a: np.ndarray, t_b: np.ndarray, i_b: np.ndarray) -> np.ndarray:
    """:func:`break_even` elementwise (bootstrap replicates); NaN where any input is NaN."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t_a, i_a, t_b, i_b)))
    return np.array([break_even(*row) if not np.isnan(row).any() else math.nan for row in zip(*(a.ravel() for a in arrays))],
                    dtype=float).reshape(arrays[0].shape)
