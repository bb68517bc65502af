"""Where a run's examples come from: the one answer to "synthetic or a file, and which rows are held out".

``open_source`` returns a ``DataSource``: training examples, held-out examples, a summary for
results.json, the chance accuracy of each task family as the source declares it, and the tokenizer
the data is meant for when the student brings none.

- No ``path``: the built-in synthetic teacher, ``train_size`` training and ``eval_size`` held-out
  examples that share no prompt (see rdistill.synthetic).
- A ``path``: the rows of that file, ``datasets`` folder or Hub dataset (rdistill.data.loading; of its
  ``split``, default train, when it has several). The held-out rows are those of ``eval_path`` (its
  ``eval_split`` when it has several splits: naming one is then required), else the ``eval_split`` of
  ``path``, else a seeded random ``eval_size`` rows of the training rows (at most 10% of them). Training
  rows whose prompt is also held out are removed either way.

The synthetic teacher is a plugin of this layer, imported by name (``SYNTHETIC``) when it is the
source, so that no general module depends on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rdistill.config import DataConfig, ModelConfig
from rdistill.data.loading import load_pairs
from rdistill.data.schema import PairedExample
from rdistill.data.tokenize import load_tokenizer
from rdistill.results import DataSummary

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SYNTHETIC = "rdistill.synthetic"
"""The built-in teacher's package; it provides ``open_source(cfg, seed)`` and ``builtin_tokenizer()``."""
BUILTIN_TOKENIZER = "builtin"
"""The name that selects the synthetic data's built-in tokenizer (``--tokenizer builtin``)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class DataSource:
    """The examples of one run and what their source declares about them."""

    train: list[PairedExample]
    held_out: list[PairedExample]
    summary: DataSummary
    chance: dict[str, float] = field(default_factory=dict)
    """Chance accuracy by task family (a family not listed: unknown)."""
    default_tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None
    """The tokenizer this data is written for, used when neither --tokenizer nor a checkpoint gives one."""
    messages: list[str] = field(default_factory=list)
    """What the loaders had to say (rows loaded, bad rows skipped), for the user."""


def _synthetic():
    return importlib.import_module(SYNTHETIC)


def builtin_tokenizer() -> PreTrainedTokenizerBase:
    """The synthetic data's built-in word-level tokenizer."""
    return _synthetic().builtin_tokenizer()


def open_source(
    cfg: DataConfig, *, seed: int, hold_out: bool = True, limit: int | None = None
) -> DataSource:
    """The examples ``cfg`` names, split into training and held-out sets (see the module docstring).

    ``hold_out=False`` keeps every row of a file for training (counting FLOPs, data statistics);
    the synthetic teacher always sets its held-out set aside first. ``limit`` reads at most that many
    valid rows of a file. Raises ValueError (DataError for a file's bad rows) with what to do.
    """
    if cfg.path is None:
        if cfg.split is not None or cfg.eval_split is not None:
            raise ValueError("--split and --eval-split pick splits of --data; the built-in synthetic data has none")
        return _synthetic().open_source(cfg, seed=seed)
    options = dict(columns=cfg.columns, skip_bad_rows=cfg.skip_bad_rows, max_field_chars=cfg.max_field_chars)
    loaded = load_pairs(cfg.path, split=cfg.split, limit=limit, **options)
    messages = [loaded.summary()]
    summary = DataSummary(source=str(cfg.path), train=0, eval=0, rows_read=loaded.num_rows_read,
                          skipped=len(loaded.skipped))
    examples = loaded.examples
    if not hold_out:
        train, held = examples, []
    elif cfg.eval_path is not None or cfg.eval_split is not None:
        if cfg.eval_path is None:
            held_loaded = load_pairs(cfg.path, split=cfg.eval_split, **options)
        else:
            held_loaded = load_pairs(cfg.eval_path, split=cfg.eval_split, default_split=None, **options)
        if held_loaded.source == loaded.source:
            raise ValueError(f"the held-out rows would be the training rows ({loaded.source}); give --eval-split "
                             f"another split, or --eval-data other rows, or neither to hold out a slice")
        messages.append(held_loaded.summary())
        held = held_loaded.examples
        held_prompts = {e.prompt for e in held}
        train = [e for e in examples if e.prompt not in held_prompts]
        summary.removed_overlap = len(examples) - len(train)
    else:
        perm = np.random.default_rng(seed).permutation(len(examples))
        n_eval = min(cfg.eval_size, len(examples) // 10)
        held = [examples[i] for i in perm[:n_eval]]
        held_prompts = {e.prompt for e in held}
        train = [examples[i] for i in perm[n_eval:] if examples[i].prompt not in held_prompts]
        summary.removed_overlap = len(examples) - n_eval - len(train)
    summary.train, summary.eval = len(train), len(held)
    if summary.removed_overlap:
        messages.append(f"removed {summary.removed_overlap} training rows whose prompt is also held out "
                        f"(duplicates); {len(train)} train, {len(held)} held out")
    if not train:
        raise ValueError(f"no training rows left in {cfg.path} after setting the held-out set aside")
    return DataSource(train, held, summary, chance={}, default_tokenizer=builtin_tokenizer, messages=messages)


def checkpoint_tokenizer(model: str) -> str | None:
    """A local checkpoint folder when it holds a tokenizer, else None."""
    path = Path(model)
    if path.is_dir() and any((path / f).exists() for f in TOKENIZER_FILES):
        return str(path)
    return None


def resolve_tokenizer(model: ModelConfig, source: DataSource) -> PreTrainedTokenizerBase:
    """--tokenizer if given (a folder, or ``builtin``); else the checkpoint's own; else the data's default."""
    name = model.tokenizer or checkpoint_tokenizer(model.name)
    if name == BUILTIN_TOKENIZER or (name is None and source.default_tokenizer is None):
        return builtin_tokenizer()
    if name is None:
        return source.default_tokenizer()
    return load_tokenizer(name)
