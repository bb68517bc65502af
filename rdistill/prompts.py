"""Prompt and benchmark files: the rows a teacher answers (``rdistill data generate``) and a checkpoint is
evaluated on (``rdistill eval``).

A row has ``prompt`` (a string, or chat turns ending with the user's, as in paired data) and optionally
``family``, ``answer`` (the gold final answer; a number is read as its text), ``choices`` and the teacher
answers ``ift`` / ``reasoning`` of a paired file. So a paired file (``rdistill data synth``'s
train.jsonl, a run's data/eval.jsonl) is a prompt file too; with no ``answer``, the gold answer is the
last ``\\boxed{}`` of ``ift``, as in training.

``choices``: a list of 2 to 26 non-blank strings (numbers are read as their text). They are listed after
the prompt's last user turn, one per line as ``A) text``, which makes the row multiple choice under
rdistill.scoring's rule 4; the gold answer may be the option's letter, its 0-based index or its text, and
is stored as the letter.

Formats and errors are those of rdistill.data.loading (JSON lines, one JSON array, parquet, a datasets
folder, or a Hub dataset id read from the local cache), read through its readers: a bad row stops the
read with the file, row, field and what to do, unless ``skip_bad_rows``. A row's identity is its 1-based
row number in the source (the line number for JSON lines): shards, resumption and merging use it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdistill.data import loading
from rdistill.data.loading import BadRow, DataError
from rdistill.data.schema import DEFAULT_FAMILY, ChatMessage, PairedExample, Prompt, parse_messages
from rdistill.scoring import extract_boxed

FIELDS = ("prompt", "family", "answer", "choices", "ift", "reasoning")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SKIP = "or pass --skip-bad-rows to skip bad rows and count them"


@dataclass(frozen=True)
class PromptRow:
    """One prompt to answer or to score an answer to."""

    row: int
    """1-based row of the source (the line number for JSON lines): the prompt's identity."""
    prompt: Prompt
    """The prompt, with its choices listed."""
    family: str = DEFAULT_FAMILY
    answer: str | None = None
    """The gold answer (an option's letter for a row with choices)."""
    ift: str | None = None
    reasoning: str | None = None
    source: str = ""

    @property
    def gold(self) -> str | None:
        """``answer``, else the last ``\\boxed{}`` of ``ift`` (rdistill.scoring.find_gold_answer's rule)."""
        return self.answer if self.answer is not None else (extract_boxed(self.ift) if self.ift else None)

    def example(self) -> PairedExample:
        """The row as a paired example, for scoring (teacher answers blank when the file has none)."""
        return PairedExample(self.prompt, self.ift or "", self.reasoning or "", self.family, self.answer,
                             source=f"{self.source}: row {self.row}")


@dataclass
class LoadedPrompts:
    rows: list[PromptRow]
    source: str
    num_rows_read: int
    skipped: list[BadRow] = field(default_factory=list)
    filtered: int = 0
    """Valid rows left out by ``families``."""

    def summary(self) -> str:
        text = f"read {len(self.rows)} prompts from {self.source}"
        if self.filtered:
            text += f" ({self.filtered} of other families left out)"
        if self.skipped:
            counts = ", ".join(f"{n} {label}" for label, n in Counter(b.label for b in self.skipped).most_common())
            text += f"; skipped {len(self.skipped)} bad rows ({counts}); first: {self.skipped[0]}"
        return text


@dataclass(frozen=True)
class _Problem(BadRow):
    """A bad row whose remedy rdistill.data.loading has no hint for (choices, a missing gold answer)."""

    hint: str = ""

    @property
    def label(self) -> str:
        return f"bad {self.field!r}"

    def error_message(self) -> str:
        return f"{self.file}: {self.location}: {self.reason}; {self.hint}, {_SKIP}"


def parse_prompt_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"prompt=question,answer=gold"`` (or a mapping) -> {field: column}; the fields are ``FIELDS``."""
    if spec is None:
        return {}
    items = spec.items() if isinstance(spec, Mapping) else (
        tuple(p.strip() for p in item.partition("=")[::2]) for item in spec.split(",") if item.strip())
    mapping: dict[str, str] = {}
    for target, column in items:
        if target not in FIELDS or not column:
            raise DataError(f"bad column map entry {target}={column} in {spec!r}: map FIELD=COLUMN with FIELD one of "
                            f"{', '.join(FIELDS)}, e.g. prompt=question,answer=gold")
        mapping[target] = column
    return mapping


def read_prompts(
    path: str | os.PathLike[str],
    *,
    columns: str | Mapping[str, str] | None = None,
    split: str | None = None,
    skip_bad_rows: bool = False,
    families: tuple[str, ...] | None = None,
    limit: int | None = None,
    need_gold: bool = False,
    max_field_chars: int = 1_000_000,
    default_split: str = "test",
) -> LoadedPrompts:
    """The rows of a prompt or benchmark file (see the module docstring).

    ``families`` keeps rows of those families only; ``limit`` stops after that many rows kept;
    ``need_gold`` makes a row without a gold answer (no ``answer``, no ``\\boxed{}`` in ``ift``) a bad
    row. A source with splits gives ``split``, else ``default_split`` when it has one, else its only
    split. Raises DataError naming the file, row and field of the first bad row unless
    ``skip_bad_rows``; a source with no usable row is an error either way.
    """
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    names = {f: f for f in FIELDS} | parse_prompt_columns(columns)
    source, records = _records(Path(path), os.fspath(path), split, names, default_split)
    rows, skipped, n_read, filtered = [], [], 0, 0
    try:
        for rec in records:
            n_read += 1
            got = rec if isinstance(rec, BadRow) else _to_row(source, *rec, names, max_field_chars, need_gold)
            if isinstance(got, BadRow):
                if not skip_bad_rows:
                    raise DataError(got.error_message(), got)
                skipped.append(got)
            elif families is not None and got.family not in families:
                filtered += 1
            else:
                rows.append(got)
                if limit is not None and len(rows) >= limit:
                    break
    finally:
        records.close()
    if not rows:
        why = (f"all {n_read} rows are bad" if skipped and not filtered else
               f"no row of the families {', '.join(families)}" if families else "the source has no rows")
        raise DataError(f"{source}: no prompts to use: {why}" + (f"; first bad row: {skipped[0]}" if skipped else ""))
    return LoadedPrompts(rows, source, n_read, skipped, filtered)


def list_choices(prompt: Prompt, choices: list[str]) -> Prompt:
    """``prompt`` with ``choices`` listed after its last user turn as ``A) ...`` lines."""
    listed = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))
    if isinstance(prompt, str):
        return f"{prompt}\n{listed}"
    *head, last = prompt
    return (*head, ChatMessage(last.role, f"{last.content}\n{listed}"))


def _records(p: Path, name: str, split: str | None, names: Mapping[str, str], default_split: str) -> tuple[str, Iterator]:
    suffix = p.suffix.lower()
    is_hf = p.is_dir() or (not p.exists() and suffix not in (".jsonl", ".json", ".parquet")
                           and bool(loading.HUB_ID.fullmatch(name)))
    if not is_hf and not p.exists():
        raise DataError(f"{p}: no such file or folder; expected {loading.SUPPORTED_FORMATS}")
    if split is not None and not is_hf:
        raise DataError(f"{p}: --split {split!r} only applies to a source with splits (a datasets folder or a Hub "
                        "dataset), not to one file")
    if suffix in (".jsonl", ".json") and not is_hf:
        return str(p), loading.read_json(p, allow_array=suffix == ".json")
    if suffix == ".parquet" and not is_hf:
        return str(p), loading.read_parquet(p, lambda source, present: _present(source, present, names))
    if not is_hf:
        raise DataError(f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; expected {loading.SUPPORTED_FORMATS}")
    import datasets

    loaded = loading.load_hf(name)
    source = name
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        chosen = split or (default_split if default_split in loaded else splits[0] if len(splits) == 1 else None)
        if chosen not in loaded:
            raise DataError(f"{name}: {'no split ' + repr(split) if split else f'several splits and no {default_split} split'}; "
                            f"its splits are {splits}; choose one with --split")
        loaded, source = loaded[chosen], f"{name} (split {chosen!r})"
    elif split is not None:
        raise DataError(f"{name}: --split {split!r} given, but this source holds one dataset without splits")
    cols = _present(source, list(loaded.column_names), names)
    return source, loading.columnar_rows(loaded.select_columns(cols).iter(batch_size=8192), cols)


def _present(source: str, available: list[str], names: Mapping[str, str]) -> list[str]:
    if names["prompt"] not in available:
        raise DataError(f"{source}: no column {names['prompt']!r} for the prompt; columns present: {available}; "
                        f"rename it or map one with --columns prompt=COLUMN")
    return [c for f, c in names.items() if c in available]


def _text(value: Any) -> str | None:
    """An optional field as text: strings as they are, numbers as written; None for null or blank."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def _to_row(source: str, row: int, rec: Mapping[str, Any], names: Mapping[str, str], max_chars: int,
            need_gold: bool) -> PromptRow | BadRow:
    col = names["prompt"]
    if col not in rec:
        keys = ", ".join(map(repr, rec)) or "none"
        return BadRow(source, row, "prompt", f"missing key {col!r}; keys present: {keys}", "missing")
    prompt = rec[col]
    if isinstance(prompt, list):
        try:
            prompt = parse_messages(prompt)
        except ValueError as e:
            return BadRow(source, row, "prompt", f"bad chat messages: {e}", "bad_messages")
    elif not isinstance(prompt, str):
        return BadRow(source, row, "prompt", f"expected a string or a list of chat messages, found "
                      f"{type(prompt).__name__}", "not_string")
    elif not prompt.strip():
        return BadRow(source, row, "prompt", "empty prompt (blank or whitespace only)", "empty")
    size = len(prompt) if isinstance(prompt, str) else sum(len(m.content) for m in prompt)
    if size > max_chars:
        return BadRow(source, row, "prompt", f"{size:,} characters, over {max_chars:,}", "too_long")
    values: dict[str, str | None] = {}
    for name in ("family", "answer", "ift", "reasoning"):
        value = rec.get(names[name])
        if value is not None and not isinstance(value, (str, int, float)) or isinstance(value, bool):
            return BadRow(source, row, name, f"expected a string or null, found {type(value).__name__}", "not_string")
        values[name] = _text(value)
    answer = values["answer"]
    choices = rec.get(names["choices"])
    if choices is not None:
        got = _choices(source, row, choices, answer)
        if isinstance(got, BadRow):
            return got
        options, answer = got
        prompt = list_choices(prompt, options)
    out = PromptRow(row, prompt, values["family"] or DEFAULT_FAMILY, answer, values["ift"], values["reasoning"], source)
    if need_gold and out.gold is None:
        return _Problem(source, row, "answer", "no gold answer: no 'answer' and no \\boxed{} in 'ift'", "missing",
                        hint="add an 'answer' column, or map one with --columns answer=COLUMN")
    return out


def _choices(source: str, row: int, value: Any, answer: str | None) -> tuple[list[str], str | None] | BadRow:
    def bad(reason: str, hint: str) -> BadRow:
        return _Problem(source, row, "choices", reason, "not_string", hint=hint)

    if not isinstance(value, list) or not 2 <= len(value) <= len(LETTERS):
        return bad(f"expected a list of 2 to {len(LETTERS)} options, found "
                   f"{len(value) if isinstance(value, list) else type(value).__name__}",
                   "give the options as a list of strings, or leave 'choices' null for an open question")
    options = [_text(c) for c in value]
    if any(c is None for c in options):
        return bad(f"option {options.index(None) + 1} is blank or not a string", "give every option as text")
    if answer is None:
        return options, None
    letters = LETTERS[: len(options)]
    if answer.strip().upper().strip("().") in letters and len(answer.strip().strip("().")) == 1:
        return options, answer.strip().strip("().").upper()
    if answer.strip().isdigit() and int(answer) < len(options) and answer not in options:
        return options, letters[int(answer)]
    if answer in options:
        return options, letters[options.index(answer)]
    return _Problem(source, row, "answer", f"the gold answer {answer!r} is none of the {len(options)} choices (neither a "
                    f"letter {letters[0]}-{letters[-1]}, a 0-based index, nor an option's text)", "missing",
                    hint="give the correct option's letter, index or text")
