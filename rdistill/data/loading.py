"""Load paired examples (prompt, ift, reasoning) from local files or datasets, and write them as JSON lines.

Supported inputs
    ``.jsonl`` / ``.json``   JSON lines, one object per line (a ``.json`` file may instead hold one JSON
                             array of objects). Read as bytes and decoded line by line, so an invalid
                             UTF-8 or JSON line is reported by its line number. Blank lines are not rows.
    ``.parquet``             read with pyarrow, batch by batch, only the needed columns.
    folder                   saved by ``datasets``' ``save_to_disk``, or of data files (.jsonl, .json,
                             .parquet; or a dataset script) read by ``datasets.load_dataset``.
    Hub dataset id           ``org/name`` (no such path), read by ``datasets.load_dataset``: from the Hub,
                             or the local datasets cache (``HF_HUB_OFFLINE=1``: no network retries).

A source with splits gives the ``split`` asked for (default ``"train"``). Row numbers are 1-based: the
line number for JSON lines, the element index for a JSON array, the row index otherwise. The prompt is
a string or a list of chat messages (rdistill.data.schema.parse_messages). Optional fields ``family``
and ``answer`` may be absent, null or blank (then ``family`` is ``DEFAULT_FAMILY``, ``answer`` None).

By default the first bad row raises ``DataError``. With ``skip_bad_rows=True`` bad rows are skipped and
recorded in ``LoadedPairs.skipped``; ``LoadedPairs.summary()`` reports them. A source with no rows, or
with no valid row, is an error either way.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdistill.data.schema import COLUMNS, DEFAULT_FAMILY, OPTIONAL_COLUMNS, PairedExample, parse_messages
from rdistill.io import atomic_writer

FIELDS = COLUMNS + OPTIONAL_COLUMNS
FILE_FORMATS = ".jsonl, .json (JSON lines or one JSON array), .parquet"
SUPPORTED_FORMATS = (
    f"{FILE_FORMATS}, a folder saved by datasets.save_to_disk or holding such data files, or a Hugging Face "
    "Hub dataset id (org/name)"
)
THINK_END = "</think>"

_BATCH_ROWS = 8192
_DATA_FILES = (".jsonl", ".json", ".parquet")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_MISSING = object()
_SKIP_HINT = "or pass --skip-bad-rows (skip_bad_rows=True) to skip bad rows and count them"
_HINTS = {
    "missing": "add it, or map another column to it with --columns {field}=COLUMN",
    "too_long": "shorten it or remove the row, or raise --max-field-chars",
    "not_string": "store it as a string",
    "bad_messages": "give a list of {{'role': 'system'|'user'|'assistant', 'content': TEXT}} ending with a user turn",
    "empty": "fill it in or remove the row",
    "invalid_json": "fix or remove the line",
    "invalid_utf8": "re-encode the file as UTF-8 or remove the line",
    "not_object": "each row must be a JSON object with keys prompt, ift, reasoning",
}


class DataError(ValueError):
    """A data file cannot be used as given; the message says where and what to do."""

    def __init__(self, message: str, bad_row: BadRow | None = None) -> None:
        super().__init__(message)
        self.bad_row = bad_row


@dataclass(frozen=True)
class BadRow:
    """One rejected row. ``row`` is 1-based (the line number for JSON lines); ``field`` is None when
    the whole row is unreadable. ``kind`` is one of the keys of ``_HINTS``."""

    file: str
    row: int
    field: str | None
    reason: str
    kind: str

    @property
    def location(self) -> str:
        """``row 17 field 'ift'``, or ``row 17`` for whole-row problems."""
        return f"row {self.row}" if self.field is None else f"row {self.row} field {self.field!r}"

    @property
    def label(self) -> str:
        """Short category used to count bad rows, e.g. ``empty 'ift'`` or ``invalid JSON``."""
        return {
            "missing": f"missing {self.field!r}",
            "not_string": f"non-string {self.field!r}",
            "bad_messages": f"bad messages in {self.field!r}",
            "empty": f"empty {self.field!r}",
            "invalid_json": "invalid JSON",
            "invalid_utf8": "invalid UTF-8",
            "not_object": "not a JSON object",
            "too_long": f"over-long {self.field!r}",
        }[self.kind]

    def error_message(self) -> str:
        """Full message: file, row, field, reason and what to do."""
        hint = _HINTS[self.kind].format(field=self.field)
        return f"{self.file}: {self.location}: {self.reason}; {hint}, {_SKIP_HINT}"

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


# A reader yields, per row, a BadRow or (row number, record keyed by the file's column names).
_Record = tuple[int, Mapping[str, Any]] | BadRow
_Records = Generator[_Record, None, None]


@dataclass
class LoadedPairs:
    """What ``load_pairs`` read: the valid examples and an account of everything else."""

    examples: list[PairedExample]
    source: str
    num_rows_read: int
    skipped: list[BadRow] = field(default_factory=list)
    num_without_think: int = 0

    def summary(self, show: int = 1) -> str:
        """One line: rows loaded, bad rows skipped by category, the first ``show`` reasons, and rows
        whose reasoning has no ``</think>``."""
        text = f"loaded {len(self.examples)} rows from {self.source}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} bad rows ({_count_bad_rows(self.skipped)})"
            if show > 0:
                text += f"; first: {_first_bad_rows(self.skipped, show)}"
        if self.num_without_think:
            n = self.num_without_think
            text += f"; {n} {'row has' if n == 1 else 'rows have'} no '{THINK_END}' in 'reasoning'"
        return text


def parse_column_map(spec: str) -> dict[str, str]:
    """Parse ``"prompt=question,ift=short"`` into ``{"prompt": "question", "ift": "short"}``.

    Keys are target fields (prompt, ift, reasoning, family, answer); values are the file's columns.
    An empty or blank spec means no remapping.
    """
    mapping: dict[str, str] = {}
    if not spec.strip():
        return mapping
    for item in spec.split(","):
        target, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not target or not column:
            raise DataError(
                f"bad column map entry {item.strip()!r} in {spec!r}: expected FIELD=COLUMN entries "
                f"separated by commas, e.g. 'prompt=question,ift=short_answer'"
            )
        if target in mapping:
            raise DataError(f"bad column map {spec!r}: field {target!r} is mapped twice")
        mapping[target] = column
    return _check_column_map(mapping)


def load_pairs(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
    limit: int | None = None,
    split: str | None = None,
    max_field_chars: int | None = None,
    default_split: str | None = "train",
) -> LoadedPairs:
    """Load paired examples from a file, a ``datasets`` folder or a Hub dataset id (see the module docstring).

    ``columns`` maps target fields to the file's column names (unmapped fields use their own name).
    ``limit`` stops after that many valid examples. ``split`` picks a split of a source with splits;
    without it, ``default_split`` is read, or when that is None the only split (several are then an
    error asking for --eval-split: held-out data must not fall back to a training split). A prompt or
    answer longer than ``max_field_chars`` characters is a bad row (so hostile input cannot drive the
    tokenizer out of memory). Raises ``DataError`` naming the file, row and field of the first bad row, unless
    ``skip_bad_rows``; a source with no valid rows raises either way.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples or None, got {limit}")
    sources = {name: name for name in FIELDS}
    sources.update(_check_column_map(dict(columns or {})))
    explicit = set(columns or ())
    p = Path(path)
    suffix = p.suffix.lower()
    # a folder or a dataset script, or (no such path, no data file's suffix) a Hub dataset id
    is_hf = p.is_dir() or p.is_file() and suffix == ".py" or (
        not p.exists() and suffix not in (*_DATA_FILES, ".py") and bool(HUB_ID.fullmatch(os.fspath(path))))
    if not is_hf and not p.exists():
        raise DataError(f"{p}: no such file or folder; expected {SUPPORTED_FORMATS}")
    if split is not None and not is_hf:
        raise DataError(f"{p}: split={split!r} only applies to a source with splits (a DatasetDict folder, a "
                        f"folder of data files, a Hub dataset), not to one file")
    if is_hf:
        source, records = _read_hf(str(path), sources, explicit, split, default_split)
    elif suffix == ".parquet":
        source, records = str(p), read_parquet(p, lambda src, cols: _needed_columns(src, cols, sources, explicit))
    elif suffix in (".jsonl", ".json"):
        source, records = str(p), read_json(p, allow_array=suffix == ".json")
    else:
        kind = repr(p.suffix) if p.suffix else "(no extension)"
        raise DataError(f"{p}: unsupported file type {kind}; expected {SUPPORTED_FORMATS}")
    required = {*COLUMNS, *(explicit & set(OPTIONAL_COLUMNS))}  # a mapped optional column must exist too
    return _collect(source, records, sources, skip_bad_rows, limit, max_field_chars, required)


def write_pairs(path: str | os.PathLike[str], examples: Iterable[PairedExample]) -> int:
    """Write examples as JSON lines (UTF-8, ``ensure_ascii=False``), atomically; return the row count.

    Rows go to a temporary file in the same folder, which then replaces ``path``: an interruption
    leaves either the old file or the complete new one, never half a file.
    """
    count = 0
    with atomic_writer(path) as f:
        for example in examples:
            f.write(json.dumps(example.to_row(), ensure_ascii=False))
            f.write("\n")
            count += 1
    return count


def _check_column_map(mapping: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise DataError(
            f"unknown target field(s) {unknown} in column map; the fields are {list(FIELDS)} "
            f"(map FIELD=COLUMN, e.g. prompt=question)"
        )
    for target, column in mapping.items():
        if not isinstance(column, str) or not column:
            raise DataError(f"column map: field {target!r} must map to a non-empty column name, got {column!r}")
    return mapping


def _collect(
    source: str, records: _Records, sources: Mapping[str, str], skip_bad_rows: bool, limit: int | None,
    max_field_chars: int | None = None, required: set[str] | frozenset[str] = frozenset(COLUMNS),
) -> LoadedPairs:
    examples: list[PairedExample] = []
    skipped: list[BadRow] = []
    num_rows = 0
    without_think = 0
    try:
        for record in records:
            num_rows += 1
            result = record if isinstance(record, BadRow) else _to_example(source, *record, sources, max_field_chars, required)
            if isinstance(result, BadRow):
                if not skip_bad_rows:
                    raise DataError(result.error_message(), result)
                skipped.append(result)
                continue
            examples.append(result)
            if THINK_END not in result.reasoning:
                without_think += 1
            if limit is not None and len(examples) >= limit:
                break
    finally:
        records.close()
    if num_rows == 0:
        raise DataError(f"{source}: no rows (the source is empty or has only blank lines)")
    if not examples:
        raise DataError(
            f"{source}: no valid rows: all {num_rows} rows are bad ({_count_bad_rows(skipped)}); "
            f"first: {_first_bad_rows(skipped, 3)}",
            skipped[0],
        )
    return LoadedPairs(examples, source, num_rows, skipped, without_think)


def _missing(source: str, row: int, record: Mapping[str, Any], name: str, column: str) -> BadRow:
    keys = ", ".join(map(repr, record)) or "none"
    where = f"key {column!r}" if column == name else f"key {column!r} (mapped to {name!r})"
    return BadRow(source, row, name, f"missing {where}; keys present: {keys}", "missing")


def _to_example(
    source: str, row: int, record: Mapping[str, Any], sources: Mapping[str, str], max_chars: int | None = None,
    required: set[str] | frozenset[str] = frozenset(COLUMNS),
) -> PairedExample | BadRow:
    values: dict[str, Any] = {}
    for name in COLUMNS:
        column = sources[name]
        value = record.get(column, _MISSING)
        if value is _MISSING:
            return _missing(source, row, record, name, column)
        if name == "prompt" and isinstance(value, list):
            try:
                value = parse_messages(value)
            except ValueError as e:
                return BadRow(source, row, name, f"bad chat messages: {e}", "bad_messages")
        elif not isinstance(value, str):
            expected = "a string or a list of chat messages" if name == "prompt" else "a string"
            return BadRow(source, row, name, f"expected {expected}, found {_type_name(value)}", "not_string")
        elif not value or value.isspace():
            what = "prompt" if name == "prompt" else "answer"
            return BadRow(source, row, name, f"empty {what} (blank or whitespace only)", "empty")
        size = len(value) if isinstance(value, str) else sum(len(m.content) for m in value)
        if max_chars is not None and size > max_chars:
            return BadRow(source, row, name, f"{size:,} characters, over --max-field-chars {max_chars:,}",
                          "too_long")
        values[name] = value
    for name in OPTIONAL_COLUMNS:
        value = record.get(sources[name], _MISSING)
        if value is _MISSING and name in required:
            return _missing(source, row, record, name, sources[name])
        if value is None or value is _MISSING:
            continue
        if not isinstance(value, str):
            return BadRow(source, row, name, f"expected a string or null, found {_type_name(value)}", "not_string")
        if value and not value.isspace():
            values[name] = value
    return PairedExample(
        prompt=values["prompt"],
        ift=values["ift"],
        reasoning=values["reasoning"],
        family=values.get("family", DEFAULT_FAMILY),
        answer=values.get("answer"),
        source=f"{source}: row {row}",
    )


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _count_bad_rows(bad: list[BadRow]) -> str:
    return ", ".join(f"{n} {label}" for label, n in Counter(b.label for b in bad).most_common())


def _first_bad_rows(bad: list[BadRow], show: int) -> str:
    return "; ".join(str(b) for b in bad[:show])


def read_json(path: Path, allow_array: bool) -> _Records:
    """JSON lines, or (``allow_array``) one JSON array when the first non-blank character is ``[``."""
    if allow_array and _first_byte(path) == b"[":
        return _read_json_array(path)
    return _read_jsonl(path)


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        while chunk := f.read(4096):
            stripped = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
            if stripped:
                return stripped[:1]
    return b""


def _read_jsonl(path: Path) -> _Records:
    source = str(path)
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw or raw.isspace():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRow(source, line_no, None, f"invalid UTF-8 at byte {e.start} of the line", "invalid_utf8")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield BadRow(source, line_no, None, f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json")
                continue
            if not isinstance(obj, dict):
                reason = f"expected a JSON object, found {_json_type(obj)}"
                yield BadRow(source, line_no, None, reason, "not_object")
                continue
            yield line_no, obj


def _read_json_array(path: Path) -> _Records:
    source = str(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{source}: invalid UTF-8 at line {line} of this JSON array file; re-encode it as UTF-8"
        ) from e
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{source}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); the file starts with '[' "
            f"so it is read as one JSON array: fix it, or convert it to JSON lines so bad rows can be skipped"
        ) from e
    if not isinstance(items, list):
        raise DataError(f"{source}: expected one JSON array of objects, found {_json_type(items)}")
    for row, obj in enumerate(items, start=1):
        if isinstance(obj, dict):
            yield row, obj
        else:
            yield BadRow(source, row, None, f"expected a JSON object, found {_json_type(obj)}", "not_object")


def _json_type(obj: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if obj is None else names.get(type(obj), type(obj).__name__)


def _needed_columns(
    source: str, available: list[str], sources: Mapping[str, str], explicit: set[str]
) -> list[str]:
    """Check required (and explicitly mapped) columns once; return the columns to read."""
    present = set(available)
    for name in FIELDS:
        column = sources[name]
        if column in present or (name in OPTIONAL_COLUMNS and name not in explicit):
            continue
        mapped = "" if column == name else f" (mapped to field {name!r})"
        raise DataError(
            f"{source}: missing column {column!r}{mapped} needed for field {name!r}; columns present: "
            f"{available}; rename the column or map one with --columns {name}=COLUMN"
        )
    return list(dict.fromkeys(sources[name] for name in FIELDS if sources[name] in present))


def columnar_rows(batches: Iterable[Mapping[str, list[Any]]], columns: list[str]) -> _Records:
    row = 0
    for batch in batches:
        for values in zip(*(batch[c] for c in columns)):
            row += 1
            yield row, dict(zip(columns, values))


def read_parquet(path: Path, choose: Callable[[str, list[str]], list[str]]) -> _Records:
    """The rows of a parquet file, reading the columns ``choose(source, columns present)`` returns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from e
    columns = choose(str(path), pf.schema_arrow.names)
    batches = (
        {name: batch.column(name).to_pylist() for name in columns}
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns)
    )
    return columnar_rows(batches, columns)


def _read_hf(
    path: str, sources: Mapping[str, str], explicit: set[str], split: str | None, default_split: str | None
) -> tuple[str, _Records]:
    import datasets

    if not isinstance(loaded := load_hf(path), datasets.DatasetDict):
        if split is not None:
            raise DataError(f"{path}: split={split!r} given, but this folder holds one Dataset, not a DatasetDict")
        dataset, source = loaded, path
    else:
        splits = list(loaded)
        chosen = split or default_split or (splits[0] if len(splits) == 1 else None)
        if chosen is None:
            raise DataError(f"{path}: several splits {splits} and none chosen; name the held-out one with --eval-split")
        if chosen not in loaded:
            asked = f"has no split {split!r}" if split is not None else f"has no {default_split!r} split"
            raise DataError(f"{path}: {asked}; its splits are {splits}; choose one with --split (training rows) "
                            f"or --eval-split (held-out rows)")
        dataset, source = loaded[chosen], f"{path} (split {chosen!r})"
    columns = _needed_columns(source, list(dataset.column_names), sources, explicit)
    batches = dataset.select_columns(columns).iter(batch_size=_BATCH_ROWS)
    return source, columnar_rows(batches, columns)


def load_hf(path: str) -> Any:
    """A ``Dataset`` or ``DatasetDict``: ``load_from_disk`` for a folder saved by ``save_to_disk``,
    ``load_dataset`` for a folder of data files, a dataset script or a Hub dataset id."""
    import datasets

    folder = Path(path)
    if folder.is_dir() and any((folder / m).is_file() for m in ("dataset_dict.json", "state.json")):
        try:
            return datasets.load_from_disk(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: datasets.load_from_disk failed ({e})") from e
    if folder.is_dir() and not any(f.suffix.lower() in (*_DATA_FILES, ".py") for f in folder.rglob("*")):
        raise DataError(f"{path}: a folder, but not one saved by datasets.save_to_disk (no dataset_dict.json or "
                        f"state.json) nor one of data files ({', '.join(_DATA_FILES)}); expected {SUPPORTED_FORMATS}")
    hub = "" if folder.exists() else "no such file or folder, so read as a Hugging Face Hub dataset id: "
    try:
        return datasets.load_dataset(path)
    except ConnectionError as e:
        why = ("offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if datasets.config.HF_HUB_OFFLINE else
               "the Hub cannot be reached from this machine (set HF_HUB_OFFLINE=1 to read the cache without retries)")
        raise DataError(
            f"{path}: {hub}it is not in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}) and {why}; "
            f"on a machine with network, datasets.load_dataset({path!r}).save_to_disk(FOLDER), copy FOLDER here and "
            f"pass --data FOLDER, or pass a local file ({FILE_FORMATS})"
        ) from e
    except (OSError, ValueError, RuntimeError, datasets.exceptions.DatasetsError) as e:
        raise DataError(f"{path}: {hub}datasets.load_dataset failed ({type(e).__name__}: {e}); where it loads, "
                        f"save it with save_to_disk(FOLDER) and pass --data FOLDER, or export it as {FILE_FORMATS}") from e
