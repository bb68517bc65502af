"""The paired example: one prompt answered twice by the same teacher (the released schema).

A prompt is a string (one user turn), or a conversation: chat turns ``{"role": ..., "content": ...}``
(system, user, assistant) that end with the user turn the answers follow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

COLUMNS = ("prompt", "ift", "reasoning")
OPTIONAL_COLUMNS = ("family", "answer")
DEFAULT_FAMILY = "all"
ROLES = ("system", "user", "assistant")


class ChatMessage(NamedTuple):
    """One turn of a conversation prompt. A tuple, so that prompts stay hashable (held-out prompts are
    looked up in sets) and a conversation compares equal to the same turns read again."""

    role: str
    content: str


Prompt = str | tuple[ChatMessage, ...]


def parse_messages(value: object) -> tuple[ChatMessage, ...]:
    """``value`` (a list of ``{"role", "content"}`` objects or ChatMessages) as a checked conversation.

    Each role is system, user or assistant, each content a non-blank string; only the first turn may be
    the system's, and the last must be the user's (the answer follows it). Other keys of a turn (e.g.
    nulls that a column of structs fills in) are ignored. Raises ValueError naming the bad turn (1-based).
    """
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("expected a non-empty list of chat messages")
    turns = []
    for i, item in enumerate(value, start=1):
        if isinstance(item, Mapping):
            role, content = item.get("role"), item.get("content")
        elif isinstance(item, ChatMessage):
            role, content = item
        else:
            raise ValueError(f"message {i} is a {type(item).__name__}, not an object with 'role' and 'content'")
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            found = "null" if content is None else type(content).__name__
            raise ValueError(f"message {i} ({role}) has content {found}; expected a string")
        if not content.strip():
            raise ValueError(f"message {i} ({role}) has empty content")
        if role == "system" and i > 1:
            raise ValueError(f"message {i} is a system message; only the first message may be one")
        turns.append(ChatMessage(role, content))
    if turns[-1].role != "user":
        raise ValueError(f"the last message is the {turns[-1].role}'s; it must be the user's (the answer follows it)")
    return tuple(turns)


def as_messages(prompt: Prompt) -> tuple[ChatMessage, ...]:
    """The prompt as chat turns: a string is one user turn."""
    return (ChatMessage("user", prompt),) if isinstance(prompt, str) else prompt


@dataclass(frozen=True)
class PairedExample:
    """``ift``: the plain answer. ``reasoning``: ``<think>...</think>`` then the answer.

    ``prompt`` is a string or a conversation (a list of role/content objects is checked and stored as a
    tuple of ChatMessage; see ``parse_messages``). ``family`` groups examples for per-family accuracy
    (the synthetic teacher sets math-oe, math-mc, general-oe, general-mc). ``answer`` is the gold final
    answer used in evaluation; when None it is read from the last ``\\boxed{...}`` of ``ift``.
    """

    prompt: Prompt
    ift: str
    reasoning: str
    family: str = DEFAULT_FAMILY
    answer: str | None = None
    source: str | None = field(default=None, compare=False)
    """Where the example was read: ``file: row N`` (the file's own line or row), for error messages."""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            object.__setattr__(self, "prompt", parse_messages(self.prompt))

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The prompt as chat turns (a string prompt is one user turn)."""
        return as_messages(self.prompt)

    def to_row(self) -> dict[str, Any]:
        prompt = self.prompt if isinstance(self.prompt, str) else [m._asdict() for m in self.prompt]
        row = {"prompt": prompt, "ift": self.ift, "reasoning": self.reasoning, "family": self.family}
        if self.answer is not None:
            row["answer"] = self.answer
        return row


def digest(examples: Iterable[PairedExample]) -> str:
    """A hash of the examples' content and order (not where they were read): two runs on equal digests
    trained on the same data, whatever produced it (a file, a dataset, a version of the synthetic
    teacher)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.prompt, ex.ift, ex.reasoning, ex.family, ex.answer]).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
