"""Per-item scores of an evaluated arm, read from its ``<arm>/generations.jsonl``.

``rdistill.run`` writes one line per held-out item (prompt, family, gold answer and the generation,
with ``correct``), in the held-out set's order. Two arms are scored on the same items when their
prompts are the same, so an item is identified by its prompt and gold answer (and, for a prompt that
occurs more than once, by which occurrence it is): that is what lets the report pair arms item by item,
and recognise replicates whose held-out split changed with the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATIONS = "generations.jsonl"


class ItemsError(ValueError):
    """A generations.jsonl that cannot be used (unreadable, malformed, or not matching results.json)."""


@dataclass(frozen=True, eq=False)
class ItemScores:
    """Which held-out items an arm got right: ``keys[i]`` identifies item i, ``correct[i]`` its score."""

    keys: tuple[str, ...]
    families: tuple[str, ...]
    correct: np.ndarray
    inference_flops: np.ndarray | None = None
    """Generation FLOPs (exact count) of each item, when recorded."""

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, metric: str, overall: str = "overall") -> tuple[tuple[str, ...], np.ndarray]:
        """Keys and 0/1 scores of the items a metric is measured on: all (``overall``) or one family."""
        if metric == overall:
            return self.keys, self.correct.astype(float)
        mask = np.array([f == metric for f in self.families], dtype=bool)
        return tuple(k for k, m in zip(self.keys, mask) if m), self.correct[mask].astype(float)


def item_key(prompt: str, gold: str, occurrence: int) -> str:
    """A short stable identity of an item: a hash of its prompt, gold answer and occurrence number."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([prompt, gold, occurrence]).encode("utf-8"))
    return h.hexdigest()


def read_items(path: str | Path) -> ItemScores:
    """Read a generations.jsonl into :class:`ItemScores`; :class:`ItemsError` naming the file and line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ItemsError(f"{p}: cannot read ({e.strerror or e})") from e
    keys, fams, correct, flops = [], [], [], []
    seen: Counter = Counter()
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, family, gold, ok = str(row["prompt"]), str(row["family"]), str(row["gold"]), row["correct"]
        except (ValueError, KeyError, TypeError) as e:
            raise ItemsError(f"{p}:{no}: not a generation record with prompt, family, gold and correct ({e})") from e
        if not isinstance(ok, bool):
            raise ItemsError(f"{p}:{no}: 'correct' must be true or false, got {ok!r}")
        seen[(prompt, gold)] += 1
        keys.append(item_key(prompt, gold, seen[(prompt, gold)]))
        fams.append(family)
        correct.append(ok)
        f = row.get("flops_exact")
        flops.append(float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else np.nan)
    fl = np.array(flops, dtype=float)
    return ItemScores(tuple(keys), tuple(fams), np.array(correct, dtype=bool), None if np.isnan(fl).any() else fl)


def check_items(items: ItemScores, n: int, accuracy: float, by_family: dict[str, float], source: Path) -> None:
    """ItemsError unless the items are the ones results.json summarises: as many, and the same accuracies."""
    if len(items) != n:
        raise ItemsError(f"{source}: {len(items)} items, but results.json evaluated {n}")
    got = float(items.correct.mean()) if len(items) else 0.0
    if abs(got - accuracy) > 1e-6:
        raise ItemsError(f"{source}: items give accuracy {got:.4f}, results.json says {accuracy:.4f}")
    for fam, acc in by_family.items():
        _, c = items.select(fam)
        if c.size and abs(float(c.mean()) - acc) > 1e-6:
            raise ItemsError(f"{source}: items give {fam} accuracy {float(c.mean()):.4f}, results.json says {acc:.4f}")
