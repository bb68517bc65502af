"""The built-in synthetic teacher, its tokenizer and its data source.

General code reaches this package only through rdistill.data.sources, which imports it by name when
the built-in data is asked for.
"""

from __future__ import annotations

from rdistill.config import DataConfig
from rdistill.data.sources import DataSource
from rdistill.results import DataSummary
from rdistill.synthetic.teacher import CHANCE, FAMILIES, MC_FAMILIES, difficulty_spec, generate, make_splits
from rdistill.synthetic.tokenizer import builtin_tokenizer

__all__ = ["CHANCE", "FAMILIES", "MC_FAMILIES", "builtin_tokenizer", "difficulty_spec", "generate", "make_splits",
           "open_source"]


def open_source(cfg: DataConfig, *, seed: int) -> DataSource:
    """``cfg.train_size`` training and ``cfg.eval_size`` held-out examples at ``cfg.difficulty``."""
    train, held = make_splits(cfg.train_size, cfg.eval_size, seed=seed, difficulty=cfg.difficulty)
    summary = DataSummary(source="synthetic", train=len(train), eval=len(held), difficulty=cfg.difficulty)
    return DataSource(train, held, summary, chance=dict(CHANCE), default_tokenizer=builtin_tokenizer)
