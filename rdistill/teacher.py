"""A local teacher answers every prompt twice, reasoning mode on and off: paired data made the paper's way.

``generate_pairs`` renders each prompt in both modes (rdistill.teacher_format: the template's
``enable_thinking`` switch, else a system prompt or template per mode), generates with an engine
(rdistill.teacher_engines), scores both answers with rdistill.scoring's rules, and appends a batch at a
time to the files of rdistill.teacher_files.

Batches and shards. The prompts are put in a fixed order (by prompt length, then row, so that a batch pads
little) and cut into batches of ``batch_size``; batch b belongs to shard ``b mod num_shards``. Every run
with the same prompts and options forms the same batches, so a resumed run, or a shard, generates exactly
what one uninterrupted run generates (greedy decoding is deterministic on one machine; sampling is seeded
per batch and mode from ``seed``). ``rdistill.teacher_merge`` joins the shards.

Compute: each answer's inference FLOPs (exact and paper, rdistill.flops.ledger.generation_flops for its
prompt and output lengths) are in its log row and summed in the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rdistill.data.schema import PairedExample
from rdistill.environment import capture
from rdistill.prompts import PromptRow
from rdistill.scoring import answers_match, extract_answer
from rdistill.teacher_config import UNCHECKED, GenerateConfig
from rdistill.teacher_engines import Completion, Engine
from rdistill.teacher_files import (
    MODES,
    GenerateError,
    Manifest,
    OutputFiles,
    Tally,
    append_lines,
    kept,
    now,
    read_log,
    throughput,
    training_row,
    write_training_file,
)
from rdistill.teacher_format import Toggle, ift_answer, reasoning_answer, render, resolve_toggle
from rdistill.typed import to_dict

class GenerateHooks(Protocol):
    def started(self, total: int, done: int, toggle: Toggle, teacher: dict[str, Any]) -> None: ...

    def batch(self, prompts: int, tokens: int) -> None: ...


def plan_batches(rows: Sequence[PromptRow], batch_size: int, num_shards: int = 1, shard: int = 0) -> list[tuple[int, list[PromptRow]]]:
    """(batch number, rows) of one shard: every row in a fixed order (prompt length, then row) cut into
    batches, batch b going to shard b mod num_shards."""
    order = sorted(rows, key=lambda r: (sum(len(m.content) for m in r.example().messages), r.row))
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    return [(b, batch) for b, batch in enumerate(batches) if b % num_shards == shard]


def _seed(seed: int, row: int, mode: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{row}:{mode}".encode(), digest_size=8).digest(), "little") >> 1


def assess(row: PromptRow, prompts: dict[str, str], ift: Completion, reasoning: Completion) -> dict[str, Any]:
    """A log row: both answers, their lengths, FLOPs, and the quality columns (rdistill.teacher_files)."""
    texts = {"ift": ift_answer(ift.text), "reasoning": reasoning_answer(prompts["reasoning"], reasoning.text)}
    got = {m: extract_answer(t) for m, t in texts.items()}
    gold = row.gold
    ex = row.example()
    out: dict[str, Any] = {"row": row.row, "prompt": ex.to_row()["prompt"], "family": row.family, "answer": gold,
                           **texts}
    for m, c in (("ift", ift), ("reasoning", reasoning)):
        ans = got[m].answer
        right = None if gold is None else ans is not None and answers_match(ans, dataclasses.replace(ex, answer=gold))
        out |= {f"{m}_prompt_tokens": c.prompt_tokens, f"{m}_tokens": c.output_tokens, f"{m}_eos": c.ended,
                f"{m}_truncated": not c.ended, f"{m}_answer": ans, f"{m}_correct": right,
                f"{m}_flops_exact": c.flops_exact, f"{m}_flops_paper": c.flops_paper}
    a, b = got["ift"].answer, got["reasoning"].answer
    agree = a is not None and b is not None and answers_match(a, PairedExample(ex.prompt, "", "", row.family, b))
    out["think_closed"] = got["reasoning"].mode == "reasoning" and not got["reasoning"].unclosed
    out["ift_plain"] = got["ift"].mode == "ift" and not got["ift"].unclosed
    out["agree"] = agree
    out["passed"] = (ift.ended and reasoning.ended and out["think_closed"] and out["ift_plain"] and agree
                     and (gold is None or bool(out["ift_correct"] and out["reasoning_correct"])))
    return out


def _append_batch(log_f, pairs_f, rows: list[dict[str, Any]], keep: str) -> None:
    """One batch into the log, then its kept rows into the training file."""
    append_lines(log_f, rows)
    append_lines(pairs_f, [training_row(r) for r in rows if kept(r, keep)])


def _check_resumable(previous: Manifest | None, cfg: GenerateConfig, prompts_sha256: str | None, files: OutputFiles) -> None:
    if previous is None:
        return
    mine = {k: v for k, v in cfg.settings().items() if k not in UNCHECKED}
    theirs = {k: v for k, v in previous.settings.items() if k not in UNCHECKED}
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if previous.prompts_sha256 != prompts_sha256:
        differ.append("the prompt file's content")
    if differ:
        raise GenerateError(
            f"{files.manifest}: this output was made with other settings ({', '.join(differ)}); resume it with the "
            f"same options, or write elsewhere with another --out (or delete {files.pairs.name}, its .generations.jsonl "
            "and .manifest.json to start over)")


def generate_pairs(
    cfg: GenerateConfig,
    rows: Sequence[PromptRow],
    engine: Engine,
    *,
    prompts_sha256: str | None = None,
    hooks: GenerateHooks | None = None,
) -> Manifest:
    """Answer this shard's ``rows`` in both modes into ``cfg.out`` (see the module docstring), skipping
    prompts the log already holds. Returns the final manifest. KeyboardInterrupt leaves every finished
    batch written and the manifest "interrupted", and is re-raised."""
    files = OutputFiles(Path(cfg.out))
    tok = engine.tokenizer
    read = lambda p: None if p is None else Path(p).read_text(encoding="utf-8")  # noqa: E731
    toggle = resolve_toggle(tok, ift_system=cfg.ift_system, reasoning_system=cfg.reasoning_system,
                            ift_template=read(cfg.ift_template), reasoning_template=read(cfg.reasoning_template),
                            switch=cfg.thinking_switch)
    previous = Manifest.read(files.manifest) if files.manifest.is_file() else None
    if previous is None and files.log.is_file():
        raise GenerateError(f"{files.log} exists but {files.manifest} does not: not an output this command can resume; "
                            "use another --out or remove the log")
    _check_resumable(previous, cfg, prompts_sha256, files)
    batches = plan_batches(rows, cfg.batch_size, cfg.num_shards, cfg.shard)
    mine = {r.row for _, batch in batches for r in batch}
    done_rows = read_log(files.log)
    done: set[int] = set()
    for no, r in enumerate(done_rows, 1):
        if r["row"] not in mine or r["row"] in done:
            what = "twice" if r["row"] in done else "but it is not among this shard's prompts"
            raise GenerateError(f"{files.log}:{no}: prompt row {r['row']} is answered {what}; the log belongs to other "
                                "prompts or options: use another --out")
        done.add(r["row"])
    tally = Tally(done_rows)
    write_training_file(files.pairs, done_rows, cfg.keep)
    del done_rows
    manifest = Manifest(
        settings=cfg.settings(), prompts_sha256=prompts_sha256, teacher={"path": cfg.teacher, **engine.describe()},
        template={"toggle": toggle.kind, "chat_template_sha256": toggle.template_sha256,
                  "ift": to_dict(toggle.ift), "reasoning": to_dict(toggle.reasoning),
                  "example": {"ift": toggle.example_ift, "reasoning": toggle.example_reasoning}},
        shard={"index": cfg.shard, "count": cfg.num_shards, "prompts": len(mine)},
        counts=tally.counts(cfg.keep), flops=tally.flops(), seconds=previous.seconds if previous else 0.0,
        throughput={}, environment=capture(getattr(engine, "device", None)), started=previous.started if previous else now(),
        updated=now())
    manifest.throughput = throughput(tally, manifest.seconds)
    manifest.write(files.manifest)
    if hooks is not None:
        hooks.started(len(mine), len(done), toggle, manifest.teacher)
    try:
        with open(files.log, "a", encoding="utf-8") as log_f, open(files.pairs, "a", encoding="utf-8") as pairs_f:
            for _, batch in batches:
                todo = [r for r in batch if r.row not in done]
                if not todo:
                    continue
                t0 = time.perf_counter()
                texts = {m: [render(tok, r.prompt, toggle.format(m)) for r in todo] for m in MODES}
                outs = {m: engine.generate(texts[m], cfg.sampling(m), [_seed(cfg.seed, r.row, m) for r in todo])
                        for m in MODES}
                new = [assess(r, {m: texts[m][i] for m in MODES}, outs["ift"][i], outs["reasoning"][i])
                       for i, r in enumerate(todo)]
                _append_batch(log_f, pairs_f, new, cfg.keep)
                manifest.seconds += time.perf_counter() - t0
                for r in new:
                    tally.add(r)
                done.update(r.row for r in todo)
                manifest.counts, manifest.flops = tally.counts(cfg.keep), tally.flops()
                manifest.throughput = throughput(tally, manifest.seconds)
                manifest.write(files.manifest)
                if hooks is not None:
                    hooks.batch(len(todo), sum(o.output_tokens for m in MODES for o in outs[m]))
    except BaseException:
        manifest.status = "interrupted"
        manifest.write(files.manifest)
        raise
    write_training_file(files.pairs, read_log(files.log), cfg.keep)
    manifest.status = "complete"
    manifest.write(files.manifest)
    return manifest


def source_sha256(path: str | Path) -> str | None:
    """SHA-256 of a prompt file (what a resumed run and the shards must share); None for a folder or Hub id."""
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
