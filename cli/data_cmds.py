"""`rdistill data synth`, `data stats`, `data generate` (a local teacher answers every prompt in both modes) and
`data merge` (its shards joined)."""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rdistill.cli.app import data_app, fail, quiet_libraries
from rdistill.cli.options import Option, check_pack_tokens, command, opt, values
from rdistill.cli.render import console, pct, sci, table_console
from rdistill.config import DataConfig, ModelConfig
from rdistill.typed import field_docs
from rdistill.teacher_config import GenerateConfig, ModeSampling
from rdistill.teacher_files import MODES

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


def _gen_opt(name: str, flag: str | None = None) -> Option:
    return Option(name, flag or "--" + name.replace("_", "-"), GenerateConfig)


GENERATE_OPTIONS = tuple(_gen_opt(n) for n in (
    "engine", "thinking_switch", "ift_system", "reasoning_system", "ift_template", "reasoning_template", "seed",
    "batch_size", "keep", "num_shards", "shard", "columns", "split", "families", "limit",
)) + (_gen_opt("skip_bad_rows", "--skip-bad-rows/--no-skip-bad-rows"), _gen_opt("device"), _gen_opt("dtype"))
PER_MODE = "one value for both modes, or ift=X,reasoning=Y"
MODE_DEFAULTS = {f.name: f.default_factory() for f in dataclasses.fields(GenerateConfig) if f.name in MODES}


def parse_per_mode(flag: str, text: str | None, cast: Callable[[str], Any]) -> dict[str, Any]:
    """``"0.6"`` -> both modes; ``"ift=0.7,reasoning=0.6"`` -> each (a mode left out keeps its default)."""
    if text is None:
        return {}
    try:
        if "=" not in text:
            return {m: cast(text.strip()) for m in MODES}
        out = {}
        for item in text.split(","):
            mode, _, value = (s.strip() for s in item.partition("="))
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            out[mode] = cast(value)
        return out
    except ValueError as e:
        raise ValueError(f"{flag} {text!r}: {e}; give {PER_MODE}") from None


def _mode_option(name: str) -> inspect.Parameter:
    doc = field_docs(ModeSampling).get(name, "")
    default = ",".join(f"{m}={getattr(MODE_DEFAULTS[m], name)}" for m in MODES)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option("--" + name.replace("_", "-"), help=f"{doc} Per mode: {PER_MODE}. Default: {default}.")])


def _required(name: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
        str, typer.Option("--" + name, help=field_docs(GenerateConfig)[name])])


GENERATE_EXTRA = [
    _required("teacher"), _required("prompts"), _required("out"),
    *map(_mode_option, ("max_new_tokens", "temperature", "top_p", "top_k")),
    inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice).")]),
]


class _GenerateProgress:
    """A bar with prompts/s and tokens/s on a terminal; a line every 10 s (and at the end) in a log."""

    def __init__(self) -> None:
        self.bar = None
        self.t0 = self.last = time.perf_counter()
        self.prompts = self.tokens = self.total = self.done = 0

    def started(self, total, done, toggle, teacher):
        self.total, self.done = total, done
        console.print(f"teacher {teacher['path']} ({teacher.get('parameters') or '?'} parameters, {teacher['engine']}"
                      f"{', ' + teacher['device'] if 'device' in teacher else ''}); modes toggled by {toggle.kind}")
        if done:
            console.print(f"resuming: {done} of {total} prompts already answered")
        if console.is_terminal:
            self.bar = Progress(TextColumn("[bold]generating"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=console)
            self.bar.start()
            self.task = self.bar.add_task("generate", total=total, completed=done, rate="")

    def batch(self, prompts, tokens):
        self.prompts += prompts
        self.tokens += tokens
        self.done += prompts
        secs = max(time.perf_counter() - self.t0, 1e-9)
        rate = f"{self.prompts / secs:.2f} prompts/s, {self.tokens / secs:,.0f} tokens/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=rate)
        elif time.perf_counter() - self.last >= 10 or self.done >= self.total:
            self.last = time.perf_counter()
            console.print(f"{time.strftime('%H:%M:%S')} {self.done} / {self.total} prompts, {rate}", highlight=False)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def _summary(manifest, files) -> None:
    c, fl, tp = manifest.counts, manifest.flops, manifest.throughput
    out = table_console()
    gates = Table(title=f"{c['prompts']} prompts answered in both modes: quality gates")
    for col in ("mode", "mean tokens", "stopped at EOS", "truncated (cap)", "think closed", "no answer", "right"):
        gates.add_column(col, justify="left" if col == "mode" else "right")
    for m in MODES:
        s = s_ = c[m]
        gates.add_row(m, f"{s['mean_tokens'] or 0:.1f}", str(s["eos"]), str(s["truncated"]),
                      str(s_.get("think_closed", "-")), str(s["no_answer"]), "-" if s["correct"] is None else str(s["correct"]))
    out.print(gates)
    fams = Table(title="answer tokens (teacher tokenizer, EOS included) and agreement, by family")
    for col in ("family", "prompts", "ift tokens", "reasoning tokens", "reasoning / ift", "agree", "passed"):
        fams.add_column(col, justify="left" if col == "family" else "right")
    for fam, f in c["by_family"].items():
        ratio = f["reasoning_over_ift"]
        fams.add_row(fam, str(f["prompts"]), f"{f['ift_mean_tokens']:.1f}", f"{f['reasoning_mean_tokens']:.1f}",
                     "-" if ratio is None else f"{ratio:.1f}x", str(f["agree"]), str(f["passed"]))
    out.print(fams)
    rate = lambda k: "-" if tp.get(k) is None else f"{tp[k]:,.2f}"  # noqa: E731
    gold = f"; right against the gold answer: ift {c['ift']['correct']}, reasoning {c['reasoning']['correct']} of " \
           f"{c['with_gold']}" if c["with_gold"] else ""
    console.print(f"agreement {c['agree']}/{c['prompts']} ({pct(c['agreement_rate'])}){gold}; kept ({c['keep']}) "
                  f"{c['kept']} rows in {files.pairs}")
    console.print(f"teacher inference FLOPs: {sci(fl['total']['exact'])} exact, {sci(fl['total']['paper'])} paper "
                  f"(ift {sci(fl['ift']['exact'])}, reasoning {sci(fl['reasoning']['exact'])} exact); "
                  f"{manifest.seconds:.1f} s, {rate('prompts_per_second')} prompts/s, {rate('tokens_per_second')} tokens/s")
    console.print(f"every answer with its quality columns: {files.log}; manifest: {files.manifest}")


def _generate(teacher: str, prompts: str, out: str, threads: int | None = None, **given: Any) -> None:
    """Answer every prompt twice with a local teacher, reasoning mode off (ift) and on (reasoning), into a
    paired training file; resumable, shardable, with quality gates and the teacher's inference FLOPs."""
    import torch

    from rdistill.data.loading import DataError
    from rdistill.prompts import read_prompts
    from rdistill.teacher import generate_pairs, source_sha256
    from rdistill.teacher_engines import make_engine
    from rdistill.teacher_files import GenerateError, OutputFiles
    from rdistill.teacher_format import ToggleError

    v = values(GENERATE_OPTIONS, {k: given.get(k) for k in (o.ident for o in GENERATE_OPTIONS)})
    v |= {"teacher": teacher, "prompts": prompts, "out": out}
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        modes = {m: {} for m in MODES}
        for key, cast in (("max_new_tokens", int), ("temperature", float), ("top_p", float), ("top_k", int)):
            for m, value in parse_per_mode("--" + key.replace("_", "-"), given.get(key), cast).items():
                modes[m][key] = value
        samplings = {m: dataclasses.replace(MODE_DEFAULTS[m], **modes[m]) for m in MODES}
        families = tuple(v["families"]) if v["families"] else None
        cfg = GenerateConfig(**{**v, "families": families}, **samplings)
        OutputFiles(Path(cfg.out))
        loaded = read_prompts(cfg.prompts, columns=cfg.columns, split=cfg.split, skip_bad_rows=cfg.skip_bad_rows,
                              families=cfg.families, limit=cfg.limit, default_split="train")
        console.print(loaded.summary())
        quiet_libraries()
        engine = make_engine(cfg.engine, cfg.teacher, device=cfg.device, dtype=cfg.dtype)
        hooks = _GenerateProgress()
        try:
            manifest = generate_pairs(cfg, loaded.rows, engine, prompts_sha256=source_sha256(cfg.prompts), hooks=hooks)
        finally:
            hooks.close()
    except KeyboardInterrupt:
        console.print(f"interrupted: every finished batch is in {OutputFiles(Path(v['out'])).log}; rerun the same "
                      "command to go on")
        raise typer.Exit(130) from None
    except (DataError, GenerateError, ToggleError, ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        fail(e)
    _summary(manifest, OutputFiles(Path(cfg.out)))


command(data_app, "generate", _generate, GENERATE_OPTIONS, extra=GENERATE_EXTRA)


@data_app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="The --out file (PAIRS.jsonl) of every shard.")],
    out: Annotated[Path, typer.Option(help="The merged training file; its .generations.jsonl and .manifest.json go beside it.")],
) -> None:
    """Join the shards of one `rdistill data generate` (every shard complete, each once, same settings) into one
    output, in prompt order; a prompt answered in two shards is an error unless both answers are identical."""
    from rdistill.teacher_files import GenerateError, OutputFiles
    from rdistill.teacher_merge import merge_shards

    try:
        result = merge_shards(shards, out)
    except GenerateError as e:
        fail(e)
    if result.duplicates:
        console.print(f"{result.duplicates} prompts were answered identically in two shards; kept once")
    _summary(result.manifest, OutputFiles(out))
