"""The paired example: one prompt answered twice by the same teacher (the released schema)."""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = ("prompt", "ift", "reasoning")
OPTIONAL_COLUMNS = ("family", "answer")
DEFAULT_FAMILY = "all"


@dataclass(frozen=True)
class PairedExample:
    """``ift``: the plain answer. ``reasoning``: ``<think>...</think>`` then the answer.

    ``family`` groups examples for per-family accuracy (the synthetic teacher sets math-oe, math-mc,
    general-oe, general-mc). ``answer`` is the gold final answer used in evaluation; when None it is
    read from the last ``\\boxed{...}`` of ``ift``.
    """

    prompt: str
    ift: str
    reasoning: str
    family: str = DEFAULT_FAMILY
    answer: str | None = None
    source: str | None = field(default=None, compare=False)
    """Where the example was read: ``file: row N`` (the file's own line or row), for error messages."""

    def to_row(self) -> dict[str, str]:
        row = {"prompt": self.prompt, "ift": self.ift, "reasoning": self.reasoning, "family": self.family}
        if self.answer is not None:
            row["answer"] = self.answer
        return row
