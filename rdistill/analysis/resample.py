"""Bootstrap replicates of a study's accuracies, and the paired comparison of two configurations.

One :class:`Resampler` per report draws, once per metric, a resample of the held-out items (the union
of every point's items, identified by prompt: :mod:`.items`) and a resample of the seeds, with a fixed
RNG seed. Every accuracy, difference, refit and break-even of the report is computed on the same
draws, so everything measured on one item moves together, as it should for arms scored on the same
items: that is what pairs the comparisons. A point without per-item scores is resampled as a binomial
draw of its own (unpaired; the report says which comparisons were paired).

A *configuration* is one student, arm (and variant) at one budget; runs of it that differ only by
seed are its replicates (:func:`configurations`). Its accuracy is the mean over replicates; its
replicate draw weights each replicate by how often the seed resample drew its seed (:meth:`Resampler.config`).
"""

from __future__ import annotations

import statistics
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rdistill.analysis.points import Point, budget_key
from rdistill.analysis.stats import (
    DEFAULT_CONFIDENCE,
    fisher_exact,
    mcnemar_exact,
    paired_difference_interval,
    percentile_interval,
    sign_flip_test,
    unpaired_difference_interval,
    wilson_interval,
)

DEFAULT_BOOTSTRAP = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True, eq=False)
class Config:
    """One configuration at one budget and its replicate runs (points differing only by seed)."""

    points: tuple[Point, ...]

    @property
    def first(self) -> Point:
        return self.points[0]

    @property
    def label(self) -> str:
        n = len(self.points)
        return self.first.label + (f" (mean of {n} runs)" if n > 1 else "")

    @property
    def arm(self) -> str:
        return self.first.arm

    def accuracy(self, metric: str) -> float:
        return statistics.fmean(p.metric(metric) for p in self.points)


def configurations(points: Sequence[Point], metric: str) -> list[Config]:
    """Points with an accuracy on ``metric`` grouped into configurations (series and budget), in sort order."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in sorted(points, key=Point.sort_key):
        if p.metric(metric) is not None:
            level = budget_key(p.budget) if p.budget is not None else float(f"{p.train_flops:.2g}")
            groups[(*p.series_key, level)].append(p)
    return [Config(tuple(g)) for g in groups.values()]


@dataclass(frozen=True)
class Difference:
    """accuracy(a) - accuracy(b) with its interval, p-value and how they were computed."""

    estimate: float
    lo: float
    hi: float
    p_value: float
    test: str
    items: int
    paired: bool


class Resampler:
    """The bootstrap draws of one report: ``n`` replicates, items and seeds resampled with RNG seed ``seed``;
    every interval is at 95%."""

    conf = DEFAULT_CONFIDENCE
    """Confidence level of every interval the report gives (95%)."""

    def __init__(self, points: Sequence[Point], *, n: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> None:
        if n < 10:
            raise ValueError(f"bootstrap replicates must be at least 10, got {n}")
        self.n, self.seed = int(n), int(seed)
        self.points = list(points)
        self._index: dict[str, dict[str, int]] = {}
        self._weights: dict[str, np.ndarray] = {}
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        self.memo: dict = {}
        """Results other modules compute once per resampler (refits of a curve)."""
        seeds = sorted({p.seed for p in self.points}, key=lambda s: (s is None, s if s is not None else 0))
        self._seed_pos = {s: i for i, s in enumerate(seeds)}
        self.seed_weights = self._rng("seeds").multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=self.n) \
            if seeds else np.zeros((self.n, 0))

    def _rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(name.encode("utf-8"))])

    def item_weights(self, metric: str) -> tuple[dict[str, int], np.ndarray]:
        """Index of every item measured on ``metric`` and how many times each replicate drew it."""
        if metric not in self._weights:
            keys = sorted({k for p in self.points if (it := p.metric_items(metric)) is not None for k in it[0]})
            self._index[metric] = {k: i for i, k in enumerate(keys)}
            u = len(keys)
            self._weights[metric] = (self._rng(f"items:{metric}").multinomial(u, np.full(u, 1 / u), size=self.n)
                                     .astype(np.float64) if u else np.zeros((self.n, 0)))
        return self._index[metric], self._weights[metric]

    def point(self, p: Point, metric: str) -> np.ndarray:
        """Replicate accuracies of one point on ``metric`` (its items reweighted, else a binomial draw)."""
        key = (id(p), metric)
        if key in self._cache:
            return self._cache[key]
        acc = p.metric(metric)
        got = p.metric_items(metric)
        if got is not None and len(got[0]):
            index, w = self.item_weights(metric)
            cols = np.array([index[k] for k in got[0]])
            wp = w[:, cols]
            total = wp.sum(axis=1)
            out = np.divide(wp @ got[1], total, out=np.full(self.n, acc), where=total > 0)
        else:
            n = max(p.metric_n(metric), 1)
            out = self._rng(f"binomial:{p.source}:{p.arm}:{metric}").binomial(n, acc, size=self.n) / n
        self._cache[key] = out
        return out

    def config(self, c: Config, metric: str) -> np.ndarray:
        """Replicate accuracies of a configuration: its runs averaged, weighted by the seed resample.

        Runs scored on the same items are resampled over items and seeds (a crossed design); runs on
        different items (the seed changed the held-out split) or without per-item scores are resampled
        over seeds only, each run's accuracy as measured, since it already carries its own item noise.
        """
        if len(c.points) == 1:
            return self.point(c.points[0], metric)
        keys = [p.metric_items(metric) for p in c.points]
        if all(k is not None for k in keys) and len({frozenset(k[0]) for k in keys}) == 1:
            draws = np.stack([self.point(p, metric) for p in c.points], axis=1)
        else:
            draws = np.broadcast_to(np.array([p.metric(metric) for p in c.points], dtype=float), (self.n, len(c.points)))
        w = self.seed_weights[:, [self._seed_pos[p.seed] for p in c.points]].astype(float)
        total = w.sum(axis=1, keepdims=True)
        w = np.where(total > 0, w, 1.0)
        return (draws * w).sum(axis=1) / w.sum(axis=1)

    def config_interval(self, c: Config, metric: str) -> tuple[float, float]:
        """The wider of the Wilson interval on the configuration's distinct items and the bootstrap interval."""
        acc = c.accuracy(metric)
        n = _distinct_items(c, metric)
        lo, hi = wilson_interval(acc * n, n, self.conf)
        boot = percentile_interval(self.config(c, metric), self.conf) if len(c.points) > 1 else None
        return (min(lo, boot[0]), max(hi, boot[1])) if boot else (lo, hi)

    def difference(self, a: Config, b: Config, metric: str) -> Difference:
        """accuracy(a) - accuracy(b), paired over the items both were scored on when their items are known.

        Interval: the wider of Newcombe's score interval (paired on the common items, else unpaired),
        which never has zero width, and the bootstrap percentile interval over items and seeds, which
        carries seed-to-seed variation. Test: McNemar's exact test when each side is one run, a
        sign-flip permutation test on per-item means over replicates otherwise; Fisher's exact test
        when the items are not known.
        """
        est = a.accuracy(metric) - b.accuracy(metric)
        boot = percentile_interval(self.config(a, metric) - self.config(b, metric), self.conf)
        ma, mb = _item_means(a, metric), _item_means(b, metric)
        common = sorted(set(ma) & set(mb)) if ma is not None and mb is not None else []
        if common:
            xa, xb = np.array([ma[k] for k in common]), np.array([mb[k] for k in common])
            both, only_a = float(np.sum(xa * xb)), float(np.sum(xa * (1 - xb)))
            only_b, neither = float(np.sum((1 - xa) * xb)), float(np.sum((1 - xa) * (1 - xb)))
            lo, hi = paired_difference_interval(both, only_a, only_b, neither, self.conf)
            binary = np.all((xa == 0) | (xa == 1)) and np.all((xb == 0) | (xb == 1))
            if binary:
                p, test = mcnemar_exact(int(round(only_a)), int(round(only_b))), "McNemar exact"
            else:
                p, test = sign_flip_test(xa - xb, n_perm=self.n, seed=self.seed), "sign-flip permutation"
            items, paired = len(common), True
        else:
            na, nb = _distinct_items(a, metric), _distinct_items(b, metric)
            ka, kb = a.accuracy(metric) * na, b.accuracy(metric) * nb
            lo, hi = unpaired_difference_interval(ka, na, kb, nb, self.conf)
            p, test = fisher_exact(round(ka), na, round(kb), nb), "Fisher exact (unpaired)"
            items, paired = min(na, nb), False
        if boot is not None:
            lo, hi = min(lo, boot[0]), max(hi, boot[1])
        return Difference(est, lo, hi, p, test, items, paired)


def _item_means(c: Config, metric: str) -> dict[str, float] | None:
    """Per item, the mean score over the configuration's replicates that were scored on it; None without items."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for p in c.points:
        got = p.metric_items(metric)
        if got is None:
            return None
        for k, v in zip(*got):
            sums[k] += float(v)
            counts[k] += 1
    return {k: sums[k] / counts[k] for k in sums}


def _distinct_items(c: Config, metric: str) -> int:
    """Distinct held-out items behind a configuration's accuracy (replicates on the same items count once)."""
    means = _item_means(c, metric)
    if means is not None:
        return len(means)
    return max(p.metric_n(metric) for p in c.points)
