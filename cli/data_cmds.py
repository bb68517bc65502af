"""`rdistill data synth` and `rdistill data stats`."""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rdistill.cli.app import data_app, fail
from rdistill.cli.options import check_pack_tokens, command, opt, values
from rdistill.cli.render import console, table_console
from rdistill.config import DataConfig, ModelConfig

SYNTH_OPTIONS = (opt("data.train_size"), opt("data.eval_size"), opt("data.difficulty"), opt("seed"))
STATS_OPTIONS = (
    opt("data.path", "--data"), opt("data.columns"), opt("data.skip_bad_rows", "--skip-bad-rows/--no-skip-bad-rows"),
    opt("model.tokenizer"), opt("train.pack_tokens"), opt("train.overflow"), *SYNTH_OPTIONS,
)


def _synth(out: Path, **given: Any) -> None:
    """Write the built-in synthetic teacher's data in the released schema (prompt, ift, reasoning)."""
    from rdistill.data.loading import write_pairs
    from rdistill.synthetic import builtin_tokenizer, make_splits

    v = values(SYNTH_OPTIONS, given)
    try:
        DataConfig(train_size=v["train_size"], eval_size=v["eval_size"], difficulty=v["difficulty"])
        train_ex, eval_ex = make_splits(v["train_size"], v["eval_size"], seed=v["seed"], difficulty=v["difficulty"])
    except ValueError as e:
        fail(e)
    write_pairs(out / "train.jsonl", train_ex)
    write_pairs(out / "eval.jsonl", eval_ex)
    tok = builtin_tokenizer()
    n_tokens = lambda s: len(tok(s, add_special_tokens=False)["input_ids"]) + 1  # noqa: E731  (+ EOS)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ex in train_ex:
        s = sums[ex.family]
        s[0] += 1
        s[1] += n_tokens(ex.ift)
        s[2] += n_tokens(ex.reasoning)
    table = Table(title=f"synthetic data, difficulty {v['difficulty']}: answer tokens (built-in tokenizer, with EOS)")
    for col in ("family", "examples", "ift tokens", "reasoning tokens", "reasoning / ift"):
        table.add_column(col, justify="right" if col != "family" else "left")
    for fam, (n, i, r) in sorted(sums.items()):
        table.add_row(fam, str(n), f"{i / n:.1f}", f"{r / n:.1f}", f"{r / i:.1f}x")
    table_console().print(table)
    console.print(f"wrote {len(train_ex)} + {len(eval_ex)} rows to {out}/train.jsonl and {out}/eval.jsonl")


SYNTH_OUT = inspect.Parameter(
    "out", inspect.Parameter.KEYWORD_ONLY, default=Path("data/synthetic"),
    annotation=Annotated[Path, typer.Option(help="Folder for train.jsonl and eval.jsonl.")],
)
command(data_app, "synth", _synth, SYNTH_OPTIONS, extra=[SYNTH_OUT])


def _stats(**given: Any) -> None:
    """Per arm: document lengths (prompt + answer + EOS, in tokens) and how densely they pack
    (real tokens / capacity) with best fit (bf, the trainer's default) and best fit decreasing (bfd)."""
    import numpy as np

    from rdistill.data.packing import PackingError, auto_pack_tokens, pack_arrays
    from rdistill.data.sources import open_source, resolve_tokenizer
    from rdistill.data.tokenize import encode_document

    v = values(STATS_OPTIONS, given)
    try:
        check_pack_tokens(v["pack_tokens"])
        data_cfg = DataConfig(path=v["data"], columns=v["columns"], skip_bad_rows=v["skip_bad_rows"],
                              train_size=v["train_size"], eval_size=v["eval_size"], difficulty=v["difficulty"])
        source = open_source(data_cfg, seed=v["seed"], hold_out=False)
        for text in source.messages:
            console.print(text)
        tok = resolve_tokenizer(ModelConfig(tokenizer=v["tokenizer"]), source)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    examples = source.train
    label = f"synthetic, difficulty {v['difficulty']}, seed {v['seed']}" if v["data"] is None else str(v["data"])
    if not examples:
        fail("no examples to count; --train-size must be at least 1")
    with console.status(f"tokenizing {len(examples)} examples per arm"):
        lengths = {
            arm: np.array([len(encode_document(tok, ex.prompt, getattr(ex, arm))[0]) for ex in examples], dtype=np.int64)
            for arm in ("ift", "reasoning")
        }
    capacity = v["pack_tokens"] or auto_pack_tokens(int(max(a.max() for a in lengths.values())))
    dist = Table(title=f"document lengths in tokens (prompt + answer + EOS): {label}")
    for col in ("arm", "documents", "tokens", "mean", "p50", "p90", "p99", "max"):
        dist.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for arm, a in lengths.items():
        p50, p90, p99 = np.quantile(a, [0.5, 0.9, 0.99], method="inverted_cdf")
        dist.add_row(arm, f"{a.size:,}", f"{int(a.sum()):,}", f"{a.mean():.1f}", str(p50), str(p90), str(p99), str(a.max()))
    shuffled = np.random.default_rng(v["seed"]).permutation(len(examples))
    rows = []
    try:
        for arm, a in lengths.items():
            for mode in ("bfd", "bf"):  # bfd first: an overflow error then names rows in the data's order
                t0 = time.perf_counter()
                plan = pack_arrays(a[shuffled] if mode == "bf" else a, capacity, mode=mode, overflow=v["overflow"])
                rows.append((arm, mode, plan, time.perf_counter() - t0))
    except PackingError as e:
        fail(e)
    packing = Table(title=f"packing into rows of {capacity:,} tokens (packer backend: {rows[0][2].backend})")
    for col in ("arm", "mode", "packs", "efficiency", "truncated", "dropped", "seconds"):
        packing.add_column(col, justify="left" if col in ("arm", "mode") else "right", no_wrap=True)
    for arm, mode, plan, secs in rows:
        packing.add_row(
            arm, mode, f"{plan.num_packs:,}", f"{100 * plan.efficiency:.2f}%", str(plan.truncated.size),
            str(plan.dropped.size), f"{secs:.4f}",
        )
    out = table_console()
    out.print(dist)
    out.print(packing)
    console.print("efficiency = real tokens / (packs x capacity); bf: best fit in a shuffled order, as the "
                  "trainer packs each epoch; bfd: best fit, longest first")


command(data_app, "stats", _stats, STATS_OPTIONS, help_overrides={
    "data.path": "Paired data (jsonl, json, parquet or a saved HF dataset folder); all its rows are counted. "
                 "Default: the built-in synthetic teacher's training set.",
    "data.eval_size": "Synthetic held-out examples (set aside first, as `train` does; not counted).",
})
