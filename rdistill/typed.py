"""Typed dataclasses to and from JSON-like dicts, validated on the way in.

The one reader and writer behind config.json, run configs in YAML or JSON, and results.json: a file
is read into the dataclass that wrote it, field by field, against the field's type annotation.
Unknown keys, missing required keys and values of the wrong type are errors that name the key path
(``train.lr``, ``arms[1].eval.accuracy``), never a KeyError later on.

Supported annotations: the dataclasses themselves, ``int``, ``float`` (an int, or a numeric string as
YAML gives for ``1e13``, is accepted), ``str``,
``bool``, ``None`` unions (``X | None``), ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``list[X]``, ``dict[str, X]`` and ``Any``.

``field_docs`` reads the docstring written under each field of a dataclass (the string literal on the
line after it), which is where configs document their fields; the CLI shows them as help.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class SchemaError(ValueError):
    """A dict does not match the dataclass it is read into; the message names the key path."""


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain dicts, lists and scalars (tuples become lists), ready for JSON."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """``cls`` built from ``data``, every field converted and checked against its annotation.

    Raises SchemaError naming the key path (``where`` prefixes it) on unknown or missing keys and on
    values of the wrong type; a ValueError from the dataclass's own validation gets the path too.
    """
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise SchemaError(f"{label}: expected an object with keys {_names(cls)}, found {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(f"{label}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: {_names(cls)}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{path}: missing (required)")
            continue
        kwargs[name] = convert(hints[name], data[name], path)
    try:
        return cls(**kwargs)
    except SchemaError:
        raise
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{label}: {e}") from e


def read_versioned(cls: type[T], path: str | Path, max_version: int, error: type[Exception], what: str = "",
                   hint: str = "") -> T:
    """A JSON file holding ``cls`` with a ``schema_version`` at most ``max_version``; ``error`` (naming
    the file, ``what`` it is, and ``hint``) when it cannot be read, is newer, or does not match."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{p}: cannot read{' the ' + what if what else ''} ({e})") from e
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or version > max_version:
        raise error(f"{p}: {what + ' ' if what else ''}schema version {version!r}, this rdistill reads up to "
                    f"{max_version}{'; ' + hint if hint else ''}")
    try:
        return from_dict(cls, data)
    except SchemaError as e:
        raise error(f"{p}: {e}") from e


def convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``; SchemaError if it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, where)
            except SchemaError as e:
                errors.append(str(e))
        raise SchemaError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(tp)}")
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise SchemaError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        seq = _sequence(value, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(seq))
        if len(seq) != len(args):
            raise SchemaError(f"{where}: expected {len(args)} values, got {len(seq)}")
        return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, seq)))
    if origin is list:
        return [convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(_sequence(value, where))]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SchemaError(f"{where}: expected an object, found {_kind(value)}")
        return {convert(args[0], k, where): convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e13 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"rdistill.typed cannot read fields annotated {tp!r} ({where})")
    raise SchemaError(f"{where}: expected {_type_name(tp)}, found {_kind(value)} {value!r}")


def _sequence(value: Any, where: str) -> list | tuple:
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"{where}: expected a list, found {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of field ``name`` of dataclass ``cls``."""
    return _hints(cls)[name]


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls``, by field name (whitespace folded)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
