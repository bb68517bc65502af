"""The files of ``rdistill data generate``, their one writer and reader, and what they add up to.

For ``--out PAIRS.jsonl``:

    PAIRS.jsonl                  the training file: the rows ``--keep`` lets through, in the released schema
                                 (prompt, ift, reasoning, family, answer), in the prompt file's order
    PAIRS.generations.jsonl      the log: one line per answered prompt with every quality column, appended a
                                 batch at a time (one write, flushed and fsynced); the source of truth
    PAIRS.manifest.json          teacher, template and toggle, modes, sampling, versions, counts, FLOPs

A rerun reads the log: a last line cut short by a crash is dropped, the prompts it holds are skipped, and
the training file is rebuilt from it, so an interruption loses at most the batch being written.

A log line (``ROW_KEYS``): ``row`` (the prompt's row in its file), prompt, family, answer (the gold answer,
or null), ift, reasoning; per mode M in (ift, reasoning): ``M_prompt_tokens``, ``M_tokens`` (generated,
EOS included), ``M_eos`` (stopped at EOS), ``M_truncated`` (hit the cap instead), ``M_answer`` (its last
``\\boxed{}`` after any think block, or null), ``M_correct`` (against the gold answer; null without one),
``M_flops_exact``, ``M_flops_paper``; ``think_closed`` (the reasoning answer opened and closed its think
block), ``ift_plain`` (the IFT answer has no think block), ``agree`` (both answers exist and are the same
answer under rdistill.scoring's rules), ``passed`` (all the gates: both stopped at EOS, think closed, IFT
plain, answers agree, and both right when there is a gold answer).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rdistill.data.schema import PairedExample
from rdistill.io import atomic_writer, write_json_atomic
from rdistill.typed import read_versioned, to_dict

MODES = ("ift", "reasoning")
MANIFEST_VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
Status = Literal["running", "interrupted", "complete"]
FLAGS = ("eos", "truncated")


class GenerateError(ValueError):
    """An output that cannot be resumed or merged as asked; the message says which file and what to do."""


@dataclass(frozen=True)
class OutputFiles:
    pairs: Path

    def __post_init__(self) -> None:
        if self.pairs.suffix != ".jsonl":
            raise GenerateError(f"--out {self.pairs}: the training file is JSON lines; give a path ending in .jsonl")

    @property
    def log(self) -> Path:
        return self.pairs.with_name(self.pairs.stem + ".generations.jsonl")

    @property
    def manifest(self) -> Path:
        return self.pairs.with_name(self.pairs.stem + ".manifest.json")


@dataclass
class Manifest:
    """PAIRS.manifest.json."""

    settings: dict[str, Any]
    """The options of the command (rdistill.teacher.GenerateConfig), ``out`` aside."""
    prompts_sha256: str | None
    teacher: dict[str, Any]
    """Folder, engine, device, dtype, model type, parameters, EOS ids."""
    template: dict[str, Any]
    """The toggle: what switches the mode, each mode's format and what it renders for a probe prompt."""
    shard: dict[str, int]
    """index, count (of shards) and prompts (this shard's); a merged file has index -1."""
    counts: dict[str, Any]
    flops: dict[str, Any]
    """Teacher inference FLOPs per mode and in total, exact and paper (rdistill.flops.ledger.generation_flops)."""
    seconds: float
    """Generation time over every session that wrote the log (a merged file: summed over shards)."""
    throughput: dict[str, float | None]
    environment: dict[str, Any]
    started: str
    updated: str
    status: Status = "running"
    shards: list[dict[str, Any]] | None = None
    """A merged file's shards: index, prompts, seconds, device."""
    schema_version: int = MANIFEST_VERSION

    def write(self, path: Path) -> None:
        self.updated = now()
        write_json_atomic(path, to_dict(self))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return read_versioned(cls, path, MANIFEST_VERSION, GenerateError, "manifest",
                              "upgrade rdistill or use another --out")


def now() -> str:
    return time.strftime(TIME_FORMAT, time.gmtime())


def read_log(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """The log's rows. A last line without its newline (a crash mid-write) is dropped, and with ``repair``
    cut off the file; any other unreadable line is an error naming the line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    rows = []
    for no, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            int(row["row"])
        except (ValueError, KeyError, TypeError) as e:
            raise GenerateError(f"{path}:{no}: not a generation record ({e}); the log was changed by hand: restore it, "
                                "or remove the line to answer that prompt again") from e
        rows.append(row)
    return rows


def append_lines(f, rows: Iterable[dict[str, Any]]) -> None:
    """Rows as JSON lines in one write, flushed and fsynced (a crash leaves whole rows and at most one cut line)."""
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())


def training_row(r: dict[str, Any]) -> dict[str, Any]:
    """A log row as a row of the training file (rdistill.data.schema.PairedExample.to_row)."""
    return PairedExample(r["prompt"], r["ift"], r["reasoning"], r["family"], r.get("answer")).to_row()


def kept(r: dict[str, Any], keep: str) -> bool:
    return keep == "all" or bool(r["passed"])


def write_training_file(path: Path, rows: Iterable[dict[str, Any]], keep: str) -> int:
    """The training file from log rows, in row order, atomically; returns the rows written."""
    chosen = sorted((r for r in rows if kept(r, keep)), key=lambda r: r["row"])
    with atomic_writer(path) as f:
        for r in chosen:
            f.write(json.dumps(training_row(r), ensure_ascii=False) + "\n")
    return len(chosen)


class Tally:
    """Counts over log rows: the quality gates, token lengths and FLOPs per mode, per family."""

    def __init__(self, rows: Iterable[dict[str, Any]] = ()) -> None:
        self.c: Counter = Counter()
        self.fam: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            self.add(r)

    def add(self, r: dict[str, Any]) -> None:
        c, f = self.c, self.fam[r["family"]]
        c["prompts"] += 1
        f["prompts"] += 1
        for m in MODES:
            for flag in FLAGS:
                c[f"{m}_{flag}"] += bool(r[f"{m}_{flag}"])
            c[f"{m}_no_answer"] += r[f"{m}_answer"] is None
            c[f"{m}_correct"] += bool(r[f"{m}_correct"])
            for key in ("tokens", "prompt_tokens", "flops_exact", "flops_paper"):
                c[f"{m}_{key}"] += int(r[f"{m}_{key}"])
            f[f"{m}_tokens"] += int(r[f"{m}_tokens"])
        for key in ("think_closed", "ift_plain", "agree", "passed"):
            c[key] += bool(r[key])
            f[key] += bool(r[key])
        c["with_gold"] += r.get("answer") is not None

    @property
    def prompts(self) -> int:
        return self.c["prompts"]

    @property
    def tokens(self) -> int:
        return self.c["ift_tokens"] + self.c["reasoning_tokens"]

    def counts(self, keep: str) -> dict[str, Any]:
        c, n = self.c, self.c["prompts"]
        mean = lambda a, b: a / b if b else None  # noqa: E731
        modes = {m: {"tokens": c[f"{m}_tokens"], "mean_tokens": mean(c[f"{m}_tokens"], n),
                     "mean_prompt_tokens": mean(c[f"{m}_prompt_tokens"], n), "eos": c[f"{m}_eos"],
                     "truncated": c[f"{m}_truncated"], "no_answer": c[f"{m}_no_answer"],
                     "correct": c[f"{m}_correct"] if c["with_gold"] else None} for m in MODES}
        modes["reasoning"]["think_closed"] = c["think_closed"]
        modes["ift"]["plain"] = c["ift_plain"]
        families = {name: {"prompts": f["prompts"], "ift_mean_tokens": mean(f["ift_tokens"], f["prompts"]),
                           "reasoning_mean_tokens": mean(f["reasoning_tokens"], f["prompts"]),
                           "reasoning_over_ift": mean(f["reasoning_tokens"], f["ift_tokens"]),
                           "agree": f["agree"], "passed": f["passed"]}
                    for name, f in sorted(self.fam.items())}
        return {"prompts": n, "keep": keep, "kept": n if keep == "all" else c["passed"], "passed": c["passed"],
                "agree": c["agree"], "agreement_rate": mean(c["agree"], n), "with_gold": c["with_gold"],
                "reasoning_over_ift": mean(c["reasoning_tokens"], c["ift_tokens"]), **modes, "by_family": families}

    def flops(self) -> dict[str, Any]:
        per = {m: {k: self.c[f"{m}_flops_{k}"] for k in ("exact", "paper")} for m in MODES}
        return {**per, "total": {k: sum(per[m][k] for m in MODES) for k in ("exact", "paper")}}


def throughput(tally: Tally, seconds: float) -> dict[str, float | None]:
    return {"prompts_per_second": tally.prompts / seconds if seconds > 0 else None,
            "tokens_per_second": tally.tokens / seconds if seconds > 0 else None}
