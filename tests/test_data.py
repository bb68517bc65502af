"""Loading paired data from local files: formats, column mapping, validation messages, skip mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rdistill.data.loading import DataError, LoadedPairs, load_pairs, parse_column_map, write_pairs
from rdistill.data.schema import DEFAULT_FAMILY, PairedExample


def _row(i: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "prompt": f"question {i}?",
        "ift": f"answer {i}",
        "reasoning": f"<think>step {i}</think>answer {i}",
    }
    row.update(overrides)
    return row


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _examples(n: int) -> list[PairedExample]:
    return [PairedExample(**_row(i)) for i in range(n)]  # type: ignore[arg-type]


def _assert_names(message: str, path: Path, row: int, field: str) -> None:
    assert str(path) in message
    assert f"row {row}" in message
    assert repr(field) in message


def test_round_trip_write_then_load(tmp_path: Path) -> None:
    examples = [
        PairedExample("Quelle est la racine de 16 ?", "4 \\boxed{4}", "<think>4*4=16</think>\\boxed{4}"),
        PairedExample("p\nwith newline", "a\u2028b", "<think>é 漢字</think>ok", family="math-oe", answer="4"),
    ]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, examples) == 2
    assert "漢字" in path.read_text(encoding="utf-8")
    loaded = load_pairs(path)
    assert loaded.examples == examples
    assert loaded.examples[0].family == DEFAULT_FAMILY
    assert loaded.num_rows_read == 2 and loaded.skipped == [] and loaded.num_without_think == 0
    assert loaded.summary() == f"loaded 2 rows from {path}"


def test_write_pairs_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_pairs(path, _examples(3))

    def failing() -> object:
        yield from _examples(2)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_pairs(path, failing())  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == ["out.jsonl"]
    assert len(load_pairs(path).examples) == 3


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [_row(i) for i in range(5)]
    table = pa.table({k: [r[k] for r in rows] for k in rows[0]} | {"extra": list(range(5))})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path, row_group_size=2)
    loaded = load_pairs(path)
    assert loaded.examples == [PairedExample(**r) for r in rows]  # type: ignore[arg-type]
    assert loaded.num_rows_read == 5


def test_parquet_missing_column_lists_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "short": ["a"], "reasoning": ["r"]}), path)
    with pytest.raises(DataError) as err:
        load_pairs(path, skip_bad_rows=True)
    message = str(err.value)
    assert str(path) in message and "missing column 'ift'" in message
    assert "['prompt', 'short', 'reasoning']" in message
    assert load_pairs(path, columns={"ift": "short"}).examples[0].ift == "a"
    with pytest.raises(DataError, match="missing column 'category' .*field 'family'"):
        load_pairs(path, columns={"ift": "short", "family": "category"})


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable parquet file"):
        load_pairs(path)


def test_parquet_non_string_and_null_values(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q", "s"], "ift": [1, 2, 3], "reasoning": ["r", None, "t"]}), path)
    with pytest.raises(DataError) as err:
        load_pairs(path)
    _assert_names(str(err.value), path, 1, "ift")
    assert "found int" in str(err.value)


def test_hf_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [_row(i) for i in range(4)]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    single = tmp_path / "single"
    datasets.Dataset.from_dict(columns).save_to_disk(str(single))
    assert load_pairs(single).examples == [PairedExample(**r) for r in rows]  # type: ignore[arg-type]

    both = tmp_path / "dict"
    test_cols = {k: v[:1] for k, v in columns.items()}
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(columns), "test": datasets.Dataset.from_dict(test_cols)}
    ).save_to_disk(str(both))
    loaded = load_pairs(both)
    assert len(loaded.examples) == 4 and "train" in loaded.source
    assert len(load_pairs(both, split="test").examples) == 1
    with pytest.raises(DataError, match=r"splits are \['train', 'test'\]"):
        load_pairs(both, split="validation")
    with pytest.raises(DataError, match="not a DatasetDict"):
        load_pairs(single, split="train")


def test_hf_dataset_dict_without_train_names_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    cols = {k: [v] for k, v in _row(0).items()}
    path = tmp_path / "dd"
    datasets.DatasetDict(
        {"validation": datasets.Dataset.from_dict(cols), "test": datasets.Dataset.from_dict(cols)}
    ).save_to_disk(str(path))
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert str(path) in str(err.value) and "no 'train' split" in str(err.value)
    assert "['validation', 'test']" in str(err.value)


def test_hf_dataset_empty_value_names_row(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [_row(0), _row(1, prompt="   ")]
    path = tmp_path / "ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    with pytest.raises(DataError) as err:
        load_pairs(path)
    _assert_names(str(err.value), path, 2, "prompt")


def test_column_mapping(tmp_path: Path) -> None:
    rows = [{"question": "q", "short_answer": "a", "reasoning": "<think>t</think>a", "cat": "math-oe"}]
    path = _write_jsonl(tmp_path / "mapped.jsonl", rows)
    loaded = load_pairs(path, columns={"prompt": "question", "ift": "short_answer", "family": "cat"})
    assert loaded.examples == [PairedExample("q", "a", "<think>t</think>a", family="math-oe")]
    with pytest.raises(DataError) as err:
        load_pairs(path)
    _assert_names(str(err.value), path, 1, "prompt")
    assert "'question'" in str(err.value)  # the keys that are present


def test_parse_column_map() -> None:
    assert parse_column_map("prompt=question, ift = short") == {"prompt": "question", "ift": "short"}
    assert parse_column_map("") == {}
    for bad in ("prompt", "prompt=", "=q", "prompt=q,,ift=a", "prompt=a,prompt=b"):
        with pytest.raises(DataError):
            parse_column_map(bad)
    with pytest.raises(DataError, match="unknown target field.*'question'"):
        parse_column_map("question=prompt")
    with pytest.raises(DataError, match="unknown target field"):
        load_pairs("unused.jsonl", columns={"answer_text": "x"})


@pytest.mark.parametrize(
    ("bad_row", "field", "needle"),
    [
        ({"prompt": "p", "reasoning": "r"}, "ift", "missing key 'ift'"),
        (_row(0, ift=42), "ift", "found int"),
        (_row(0, reasoning=None), "reasoning", "found null"),
        (_row(0, prompt=" \n\t"), "prompt", "empty prompt"),
        (_row(0, ift=""), "ift", "empty answer"),
        (_row(0, family=["x"]), "family", "found list"),
    ],
)
def test_field_errors_name_file_row_field(tmp_path: Path, bad_row: dict, field: str, needle: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_row(1)) + "\n\n" + json.dumps(bad_row) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(path)
    message = str(err.value)
    _assert_names(message, path, 3, field)
    assert needle in message and "--skip-bad-rows" in message
    assert err.value.bad_row is not None and err.value.bad_row.row == 3


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b'{"prompt": "p", "ift": ', b"invalid JSON"),
        (b'["p", "a", "r"]', b"expected a JSON object, found array"),
        (b'{"prompt": "caf\xe9", "ift": "a", "reasoning": "r"}', b"invalid UTF-8"),
    ],
)
def test_line_errors_name_file_and_row(tmp_path: Path, line: bytes, needle: bytes) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(_row(1)).encode() + b"\n" + line + b"\n")
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert str(path) in str(err.value) and "row 2" in str(err.value)
    assert needle.decode() in str(err.value)


def test_skip_mode_counts_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(_row(i)).encode() for i in range(6)]
    lines[1] = json.dumps(_row(1, ift="  ")).encode()
    lines[3] = b"{not json"
    lines[4] = json.dumps(_row(4, ift="")).encode()
    lines.append(b"\xff\xfe garbage")
    lines.append(b"   ")
    path.write_bytes(b"\n".join(lines) + b"\n")
    loaded = load_pairs(path, skip_bad_rows=True)
    assert isinstance(loaded, LoadedPairs)
    assert [e.prompt for e in loaded.examples] == ["question 0?", "question 2?", "question 5?"]
    assert loaded.num_rows_read == 7
    assert [(b.row, b.field) for b in loaded.skipped] == [(2, "ift"), (4, None), (5, "ift"), (7, None)]
    summary = loaded.summary()
    assert summary.startswith(f"loaded 3 rows from {path}; skipped 4 bad rows (2 empty 'ift', ")
    assert "1 invalid JSON" in summary and "1 invalid UTF-8" in summary
    assert "first: row 2 field 'ift': empty answer" in summary


def test_all_bad_or_empty_file_errors_even_when_skipping(tmp_path: Path) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", [_row(0, ift=""), _row(1, prompt=3)])
    with pytest.raises(DataError) as err:
        load_pairs(bad, skip_bad_rows=True)
    assert str(bad) in str(err.value) and "all 2 rows are bad" in str(err.value)
    assert "1 empty 'ift'" in str(err.value) and "1 non-string 'prompt'" in str(err.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_pairs(empty, skip_bad_rows=True)


def test_reasoning_without_think_is_counted(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [_row(0), _row(1, reasoning="plain"), _row(2, reasoning="x")])
    loaded = load_pairs(path)
    assert len(loaded.examples) == 3 and loaded.num_without_think == 2
    assert "2 rows have no '</think>' in 'reasoning'" in loaded.summary()


def test_optional_fields(tmp_path: Path) -> None:
    rows = [_row(0, family="general-mc", answer="B"), _row(1, family=None, answer=""), _row(2)]
    loaded = load_pairs(_write_jsonl(tmp_path / "o.jsonl", rows))
    assert [(e.family, e.answer) for e in loaded.examples] == [
        ("general-mc", "B"),
        (DEFAULT_FAMILY, None),
        (DEFAULT_FAMILY, None),
    ]


def test_json_array_file_and_json_lines_with_json_extension(tmp_path: Path) -> None:
    array = tmp_path / "pairs.json"
    array.write_text("\ufeff  " + json.dumps([_row(0), _row(1)], indent=2), encoding="utf-8")
    assert [e.prompt for e in load_pairs(array).examples] == ["question 0?", "question 1?"]
    lines = _write_jsonl(tmp_path / "lines.json", [_row(0), _row(1), _row(2)])
    assert len(load_pairs(lines).examples) == 3
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"prompt": "p"},\n{oops}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 3"):
        load_pairs(broken)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([_row(0), "text"]), encoding="utf-8")
    loaded = load_pairs(mixed, skip_bad_rows=True)
    assert len(loaded.examples) == 1 and loaded.skipped[0].row == 2


def test_unsupported_and_missing_paths(tmp_path: Path) -> None:
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,ift,reasoning\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(csv)
    assert str(csv) in str(err.value) and ".jsonl" in str(err.value) and ".parquet" in str(err.value)
    with pytest.raises(DataError, match="no such file"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="not one saved by datasets.save_to_disk"):
        load_pairs(tmp_path)


def test_limit(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    write_pairs(path, _examples(10))
    with path.open("a", encoding="utf-8") as f:
        f.write("{broken\n")
    loaded = load_pairs(path, limit=4)
    assert [e.prompt for e in loaded.examples] == [f"question {i}?" for i in range(4)]
    assert loaded.num_rows_read == 4
    with pytest.raises(ValueError, match="limit"):
        load_pairs(path, limit=0)
