"""Named document-length distributions, defined once: the synthetic workloads that the FLOP audit
(``rdistill flops --lengths NAME``) counts and that the benchmarks pack and time.

Each is a lognormal of document lengths in tokens (median ``median_tokens``, ``sigma`` of the log),
rounded and clipped to [``min_tokens``, ``max_tokens``], with ``answer_share`` of each document carrying
a loss (the rest is prompt):

    ift-like        median 300 tokens, sigma 0.8, 16..4,096, answers 50% of each document
    reasoning-like  median 3,000 tokens, sigma 0.9, 64..32,768, answers 90% of each document
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LengthDistribution:
    """A clipped lognormal of document lengths, and the share of each document that is answer."""

    median_tokens: int
    sigma: float
    """Standard deviation of the log of the length."""
    min_tokens: int
    max_tokens: int
    answer_share: float
    """Fraction of a document's tokens that carry a loss."""

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` document lengths (int64), drawn with ``numpy.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        lengths = np.round(rng.lognormal(np.log(self.median_tokens), self.sigma, n))
        return np.clip(lengths, self.min_tokens, self.max_tokens).astype(np.int64)

    def describe(self) -> str:
        """One line for tables and reports."""
        return (
            f"lognormal, median {self.median_tokens:,} tokens (sigma {self.sigma}), clipped to "
            f"{self.min_tokens:,}..{self.max_tokens:,}, answers {self.answer_share:.0%}"
        )


DISTRIBUTIONS: dict[str, LengthDistribution] = {
    "ift-like": LengthDistribution(median_tokens=300, sigma=0.8, min_tokens=16, max_tokens=4096, answer_share=0.5),
    "reasoning-like": LengthDistribution(
        median_tokens=3000, sigma=0.9, min_tokens=64, max_tokens=32768, answer_share=0.9
    ),
}


def get(name: str) -> LengthDistribution:
    """The distribution called ``name``; ValueError naming the choices for any other name."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown length distribution {name!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]


def sample_lengths(name: str, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(document length, loss tokens) pairs drawn from a named distribution; every document keeps at
    least one prompt token and one loss token."""
    dist = get(name)
    return [(l, min(l - 1, max(1, int(l * dist.answer_share)))) for l in dist.sample(n, seed).tolist()]


def packed_lengths(name: str, tokens: int, seed: int = 0) -> list[int]:
    """Document lengths drawn from a named distribution until they hold exactly ``tokens`` tokens (the
    last document is cut to fit): one packed batch of that many tokens."""
    if tokens < 1:
        raise ValueError(f"tokens must be positive, got {tokens}")
    dist = get(name)
    lengths = dist.sample(tokens // dist.min_tokens + 1, seed)  # enough: each is at least min_tokens
    ends = np.cumsum(lengths)
    count = int(np.searchsorted(ends, tokens)) + 1
    lengths = lengths[:count].tolist()
    lengths[-1] -= int(ends[count - 1]) - tokens
    return lengths
