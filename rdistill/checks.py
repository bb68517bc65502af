"""What a run checks about its documents before its folder is touched, and what it counts.

Each check raises ValueError with what was found, where (the file's own row), and what to do; the
counts go into results.json's data summary.

- Gold answers: every held-out row needs one (the ``answer`` column, or a ``\\boxed{}`` in ``ift``),
  or evaluation would score against nothing.
- Unknown tokens: text the tokenizer cannot represent becomes ``<unk>``; above ``max_unknown_share`` of
  the tokens the run stops (the built-in tokenizer knows only the synthetic data's words).
- Capacity: documents longer than ``--pack-tokens`` are an error with ``--overflow error`` (naming the
  rows, for every arm's formats, before any arm trains), and counted with truncate or drop; if drop
  would leave an arm nothing, that is an error too.
- Budget: a FLOP budget smaller than the cheapest document could train nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rdistill.config import RunConfig
from rdistill.data.curriculum import ArmSpec
from rdistill.data.schema import PairedExample
from rdistill.scoring import find_gold_answer
from rdistill.flops.ledger import ModelShape, train_step_flops
from rdistill.steps import document_size

Documents = Sequence[tuple[np.ndarray, np.ndarray]]
SHOW = 3


def _where(examples: Sequence[PairedExample], idx: Sequence[int]) -> str:
    names = [examples[i].source or f"example {i + 1}" for i in idx[:SHOW]]
    more = f" and {len(idx) - SHOW} more" if len(idx) > SHOW else ""
    return "; ".join(names) + more


def check_gold_answers(held: Sequence[PairedExample]) -> None:
    missing = [i for i, ex in enumerate(held) if find_gold_answer(ex) is None]
    if missing:
        raise ValueError(
            f"{len(missing)} held-out rows have no gold answer (no 'answer' column and no \\boxed{{}} in 'ift'): "
            f"{_where(held, missing)}; add an answer column (map one with --columns answer=COLUMN), or pass --no-eval"
        )


def unknown_share(tok, pool: Documents) -> float:
    """Share of all tokens that are the tokenizer's unknown token (0 when it has none)."""
    unk = getattr(tok, "unk_token_id", None)
    total = sum(len(ids) for ids, _ in pool)
    if unk is None or not total:
        return 0.0
    return sum(int((ids == unk).sum()) for ids, _ in pool) / total


def check_unknown_tokens(share: float, max_share: float) -> None:
    if share > max_share:
        raise ValueError(
            f"{100 * share:.1f}% of the tokens are unknown to the tokenizer (<unk>), above --max-unknown-share "
            f"{max_share:g}: the text is not what this tokenizer knows (the built-in one knows only the synthetic "
            "data's words); pass --tokenizer or --model with a real tokenizer, or raise --max-unknown-share to accept it"
        )


def formats_used(specs: Sequence[ArmSpec]) -> tuple[str, ...]:
    """Which answer formats the arms train on: ift (share < 1), reasoning (share > 0)."""
    return tuple(f for f, used in (("ift", any(s.share < 1 for s in specs)),
                                   ("reasoning", any(s.share > 0 for s in specs))) if used)


def check_capacity(cfg: RunConfig, specs: Sequence[ArmSpec], examples: Sequence[PairedExample],
                   pool: Documents) -> dict[str, int]:
    """Documents over the pack capacity per format used; an error with --overflow error, or when drop
    leaves a format empty."""
    n, cap = len(examples), cfg.train.pack_tokens
    over: dict[str, int] = {}
    for fmt in formats_used(specs):
        docs = pool[:n] if fmt == "ift" else pool[n:]
        idx = [i for i, (ids, _) in enumerate(docs) if len(ids) > cap]
        over[fmt] = len(idx)
        if idx and cfg.train.overflow == "error":
            longest = max(len(docs[i][0]) for i in idx)
            raise ValueError(
                f"{len(idx)} {fmt} documents are longer than --pack-tokens {cap} (the longest {longest} tokens): "
                f"{_where(examples, idx)}; raise --pack-tokens (or leave it out: automatic), or pass --overflow "
                "truncate or drop"
            )
        if idx and cfg.train.overflow == "drop" and len(idx) == len(docs):
            raise ValueError(f"--overflow drop would drop every {fmt} document (all longer than --pack-tokens {cap})")
    return over


def check_budget(cfg: RunConfig, shape: ModelShape, specs: Sequence[ArmSpec], pool: Documents) -> None:
    """A FLOP budget must buy at least the cheapest document of the formats the arms use."""
    if cfg.train.budget_flops is None:
        return
    n, cap, kind = len(pool) // 2, cfg.train.pack_tokens, cfg.train.ledger_kind
    cheapest = None
    for fmt in formats_used(specs):
        docs = pool[:n] if fmt == "ift" else pool[n:]
        sizes = sorted(document_size(doc, cap) for doc in docs)
        # every count grows with a document's tokens and its loss tokens: only documents that no shorter
        # one beats on loss tokens can be the cheapest
        front, fewest = [], None
        for length, loss in sizes:
            if fewest is None or loss < fewest:
                front.append((length, loss))
                fewest = loss
        for length, loss in front:
            cost = train_step_flops(shape, [length], loss).total(kind)
            cheapest = cost if cheapest is None else min(cheapest, cost)
    if cheapest is not None and cfg.train.budget_flops < cheapest:
        raise ValueError(
            f"a budget of {cfg.train.budget_flops:.3g} FLOPs ({cfg.train.budget_kind}) cannot train one document: "
            f"the cheapest costs {cheapest:.3g}; raise --budget"
        )
