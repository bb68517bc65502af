"""`rdistill`: the command line. It parses, builds configs, calls the library and prints."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compute-matched reasoning distillation: train IFT and reasoning students to the same FLOP budget.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make, inspect and check paired (prompt, ift, reasoning) data.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(2)


def _sci(x: float | int | None) -> str:
    return "-" if x is None else f"{x:.2e}"


class _ProgressHooks:
    """Rich progress bars for a run: FLOPs (or samples) spent / budget, tokens/s, loss."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[spent]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = None
        self.t0 = 0.0
        self.tokens = 0
        self.unit = "FLOPs"
        self.budget = 1.0

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def arm_started(self, arm, budget, unit):
        self.unit, self.budget = unit, float(budget)
        self.t0, self.tokens = time.perf_counter(), 0
        self.task = self.progress.add_task(f"train {arm}", total=1.0, spent="", rate="", loss="-")

    def step(self, arm, rec, ledger):
        self.tokens += rec.tokens
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        if self.unit == "FLOPs":
            spent = f"{_sci(rec.budget_fraction * self.budget)} / {_sci(self.budget)} FLOPs"
        else:
            spent = f"{round(rec.budget_fraction * self.budget)} / {int(self.budget)} samples"
        self.progress.update(
            self.task, completed=min(rec.budget_fraction, 1.0), spent=spent, rate=f"{rate:,.0f} tok/s", loss=f"{rec.loss:.3f}"
        )

    def eval_started(self, arm, n):
        self.task = self.progress.add_task(f"eval {arm}", total=n, spent=f"{n} prompts", rate="", loss="-")

    def eval_progress(self, arm, done):
        self.progress.advance(self.task, done)

    def arm_finished(self, arm, result):
        pass

    def message(self, text):
        self.progress.console.print(text)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _summary_tables(results: dict) -> list[Table]:
    """Training (compute) and evaluation (accuracy) summaries, one row per arm."""
    train = Table(title="training FLOPs: exact (useful), executed, paper formula, 6ND")
    for col in ("arm", "steps", "samples", "tokens", "exact", "executed", "paper", "6ND", "of budget", "MFU"):
        train.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for a in results["arms"]:
        fl = a["flops"]
        status = "" if a.get("status") == "complete" else f" ({a.get('status')})"
        train.add_row(
            a["name"] + status, str(a.get("steps", "-")), str(a.get("samples", "-")),
            _sci(a.get("train_tokens")), _sci(fl.get("exact")), _sci(fl.get("executed")),
            _sci(fl.get("paper")), _sci(fl.get("six_nd")), _pct(a.get("budget_used")),
            "unknown" if a.get("mfu") is None else _pct(a["mfu"]),
        )
    tables = [train]
    arms = [a for a in results["arms"] if a.get("eval")]
    if arms:
        families = sorted({f for a in arms for f in a["eval"]["by_family"]})
        chance = arms[0]["eval"].get("chance", {})
        ev = Table(title="held-out exact match (chance: " + ", ".join(
            f"{f} {_pct(c)}" for f, c in chance.items() if c) + ")")
        for col in ("arm", "all", *families, "out tokens", "FLOPs/query"):
            ev.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
        for a in arms:
            e = a["eval"]
            ev.add_row(
                a["name"], _pct(e["accuracy"]), *[_pct(e["by_family"].get(f)) for f in families],
                f"{e['mean_output_tokens']:.1f}", _sci(e["inference_flops_per_query"]["exact"]),
            )
        tables.append(ev)
    return tables


def _quiet_libraries(threads: int | None) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)


def _make_config(out: Path, *, budget, samples, budget_kind, arms, model, tokenizer=None, data=None, eval_data=None,
                 columns=None, skip_bad_rows=False, lr=3e-3, lr_ift=None, lr_reasoning=None, warmup=0.05, decay=0.3,
                 pack_tokens=None, pack_mode="bf", packs_per_step=1, overflow="error", difficulty=2,
                 train_size=20000, eval_size=200, max_new_tokens=None, evaluate=True, seed=0):
    """The RunConfig of the command-line options; ValueError on bad ones."""
    from rdistill.data import parse_column_map
    from rdistill.run import RunConfig, parse_arms
    from rdistill.train import TrainSettings

    settings = TrainSettings(
        budget_flops=budget, budget_kind=budget_kind, samples=samples, pack_tokens=pack_tokens,
        pack_mode=pack_mode, packs_per_step=packs_per_step, warmup_frac=warmup, decay_frac=decay,
        overflow=overflow, seed=seed,
    )
    return RunConfig(
        out=str(out),
        train=settings,
        model=model,
        tokenizer=tokenizer,
        arms=parse_arms(arms),
        lr=lr,
        arm_lr={k: v for k, v in (("ift", lr_ift), ("reasoning", lr_reasoning)) if v is not None},
        data=str(data) if data else None,
        eval_data=str(eval_data) if eval_data else None,
        columns=parse_column_map(columns) if columns else None,
        skip_bad_rows=skip_bad_rows,
        synth_train=train_size,
        synth_eval=eval_size,
        difficulty=difficulty,
        eval_size=eval_size,
        max_new_tokens=max_new_tokens,
        evaluate=evaluate,
        seed=seed,
    )


@app.command()
def train(
    budget: Annotated[Optional[float], typer.Option(help="FLOP budget per arm, e.g. 1e13. Each arm stops when its count reaches it.")] = None,
    samples: Annotated[Optional[int], typer.Option(help="The paper's mode instead of --budget: this many samples per arm, one epoch, FLOPs reported.")] = None,
    budget_kind: Annotated[str, typer.Option(help="Which count the budget is compared with: exact (what the kernels do usefully), paper (its formula) or 6nd.")] = "exact",
    arms: Annotated[str, typer.Option(help="Comma-separated arms: ift, reasoning, seqNN (IFT first, then NN% reasoning), mixNN (NN% reasoning shuffled in).")] = "ift,reasoning",
    model: Annotated[str, typer.Option(help="Student preset (tiny, small, base; see `rdistill models`) or a local Hugging Face checkpoint folder.")] = "tiny",
    tokenizer: Annotated[Optional[str], typer.Option(help="Local Hugging Face tokenizer folder. Default: the checkpoint's own, else the built-in one (for the synthetic data).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Paired data (jsonl, json, parquet or a saved HF dataset folder) with columns prompt, ift, reasoning. Default: the built-in synthetic teacher.")] = None,
    eval_data: Annotated[Optional[Path], typer.Option(help="Held-out paired data. Default with --data: a held-out slice of it (--eval-size rows, at most 10%).")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Column mapping, e.g. 'prompt=question,ift=short,reasoning=long'.")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip (and count) malformed rows instead of stopping at the first.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Run folder. Default: runs/<date>-<time>.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
    lr: Annotated[float, typer.Option(help="Peak learning rate of every arm (a student trained from scratch wants ~1e-3; a pretrained one the paper's 1e-5).")] = 3e-3,
    lr_ift: Annotated[Optional[float], typer.Option(help="Peak learning rate of the ift arm (default --lr).")] = None,
    lr_reasoning: Annotated[Optional[float], typer.Option(help="Peak learning rate of the reasoning arm (default --lr).")] = None,
    warmup: Annotated[float, typer.Option(help="Warmup, as a fraction of the budget.")] = 0.05,
    decay: Annotated[float, typer.Option(help="Final linear decay to 10% of peak, as a fraction of the budget.")] = 0.3,
    pack_tokens: Annotated[Optional[int], typer.Option(help="Tokens per packed row; documents never cross rows. Default: 1024, or the next power of two holding the longest document.")] = None,
    pack_mode: Annotated[str, typer.Option(help="bf: best fit in shuffled order, packs mix lengths (default); bfd: best fit decreasing, densest, packs sorted by length.")] = "bf",
    packs_per_step: Annotated[int, typer.Option(help="Packed rows per optimizer step (gradient accumulation).")] = 1,
    overflow: Annotated[str, typer.Option(help="Documents longer than --pack-tokens: error, truncate or drop.")] = "error",
    difficulty: Annotated[int, typer.Option(help="Synthetic data difficulty, 1-5.")] = 2,
    train_size: Annotated[int, typer.Option(help="Synthetic training examples.")] = 20000,
    eval_size: Annotated[int, typer.Option(help="Held-out examples (synthetic, or sliced from --data).")] = 200,
    max_new_tokens: Annotated[Optional[int], typer.Option(help="Generation cap in evaluation. Default: 1.5x the longest teacher reasoning answer.")] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip evaluation.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for data, initialisation and order; the same seed gives the same results.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
) -> None:
    """Train every arm to the same FLOP budget (or sample count), evaluate, and write a run folder."""
    from rdistill.run import run
    from rdistill.train import NonFiniteLoss

    _quiet_libraries(threads)
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        cfg = _make_config(
            out, budget=budget, samples=samples, budget_kind=budget_kind, arms=arms, model=model,
            tokenizer=tokenizer, data=data, eval_data=eval_data, columns=columns, skip_bad_rows=skip_bad_rows,
            lr=lr, lr_ift=lr_ift, lr_reasoning=lr_reasoning, warmup=warmup, decay=decay,
            pack_tokens=pack_tokens, pack_mode=pack_mode, packs_per_step=packs_per_step, overflow=overflow,
            difficulty=difficulty, train_size=train_size, eval_size=eval_size,
            max_new_tokens=max_new_tokens, evaluate=not no_eval, seed=seed,
        )
    except ValueError as e:
        _fail(str(e))
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            _fail(f"{out} exists and is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    console.print(f"run folder: [bold]{out}[/]")
    try:
        with _ProgressHooks() as hooks:
            results = run(cfg, hooks)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: finished arms are kept in {out}/results.json")
        raise typer.Exit(130)
    except NonFiniteLoss as e:
        _fail(f"{e} (run folder {out})")
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    for table in _summary_tables(results):
        Console().print(table)
    console.print(f"results: {out}/results.json")


@app.command()
def models() -> None:
    """List the student presets."""
    from rdistill.models import PRESETS, build_student, count_parameters
    from rdistill.tokenizer import builtin_tokenizer

    vocab = len(builtin_tokenizer())
    table = Table(title=f"student presets (built-in vocabulary of {vocab})")
    for col in ("name", "layers", "hidden", "heads q/kv", "MLP", "parameters", "note"):
        table.add_column(col)
    for name, p in PRESETS.items():
        n = count_parameters(build_student(name, vocab))["total"]
        table.add_row(name, str(p.num_hidden_layers), str(p.hidden_size), f"{p.num_attention_heads}/{p.num_key_value_heads}",
                      str(p.intermediate_size), f"{n:,}", p.description)
    Console().print(table)


@app.command()
def sweep(
    out: Annotated[Path, typer.Option(help="Study folder; a rerun resumes it, skipping finished points.")],
    budgets: Annotated[str, typer.Option(help="Comma-separated FLOP budgets, e.g. 3e12,1e13,3e13.")],
    models: Annotated[str, typer.Option(help="Comma-separated presets or checkpoint folders.")] = "tiny,small",
    arms: Annotated[str, typer.Option(help="Comma-separated arms (ift, reasoning, seqNN, mixNN).")] = "ift,reasoning,seq50",
    budget_kind: Annotated[str, typer.Option(help="exact, paper or 6nd.")] = "exact",
    data: Annotated[Optional[Path], typer.Option(help="Paired data; default: the built-in synthetic teacher.")] = None,
    eval_data: Annotated[Optional[Path], typer.Option(help="Held-out paired data.")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Column mapping, e.g. 'prompt=question'.")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate of every point.")] = 3e-3,
    pack_tokens: Annotated[Optional[int], typer.Option(help="Tokens per packed row (default: automatic).")] = None,
    difficulty: Annotated[int, typer.Option(help="Synthetic data difficulty, 1-5.")] = 2,
    train_size: Annotated[int, typer.Option(help="Synthetic training examples.")] = 20000,
    eval_size: Annotated[int, typer.Option(help="Held-out examples.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed shared by every point.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
) -> None:
    """Run a grid of students x arms x budgets into one study folder, then write its report."""
    from rdistill.report import StudyError, write_report
    from rdistill.sweep import grid, run_sweep

    _quiet_libraries(threads)
    try:
        budget_list = tuple(float(b) for b in budgets.split(",") if b.strip())
        model_list = tuple(m.strip() for m in models.split(",") if m.strip())
        points = grid(model_list, tuple(arms.split(",")), budget_list)
        base = _make_config(
            out, budget=budget_list[0], samples=None, budget_kind=budget_kind, arms=arms, model=model_list[0],
            data=data, eval_data=eval_data, columns=columns, lr=lr, pack_tokens=pack_tokens,
            difficulty=difficulty, train_size=train_size, eval_size=eval_size, seed=seed,
        )
    except ValueError as e:
        _fail(str(e))

    def on_point(point, status, i, n):
        label = f"[{i + 1}/{n}] {point.model} {point.arm} {point.budget:.2e}"
        color = {"complete": "green", "failed": "red", "skipped": "dim"}.get(status, "bold")
        console.print(f"[{color}]{status}[/] {label}")

    try:
        manifest = run_sweep(out, points, base, on_point=on_point)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(130)
    failed = [p for p in manifest["points"] if p["status"] == "failed"]
    for p in failed:
        console.print(f"[red]failed[/] {p['dir']}: {p['error']}")
    try:
        report = write_report(out)
    except StudyError as e:
        _fail(str(e))
    console.print(f"report: {report}")
    if failed:
        raise typer.Exit(1)


@app.command()
def report(
    study: Annotated[Path, typer.Argument(help="A study folder (run folders with results.json, found recursively).")],
    ceiling: Annotated[float, typer.Option(help="Accuracy ceiling for the fits (the teacher's accuracy; 1.0 for the built-in data).")] = 1.0,
) -> None:
    """Write STUDY/report/report.md and its PNG plots: Pareto fronts, fits, compute-equivalent statements."""
    from rdistill.report import StudyError, write_report

    try:
        path = write_report(study, ceiling=ceiling)
    except StudyError as e:
        _fail(str(e))
    console.print(f"report: {path}")


@app.command()
def flops(
    model: Annotated[str, typer.Option(help="Student: a preset, a paper shape (qwen2.5-0.5b ... qwen2.5-14b; counted, not built) or a local checkpoint/config folder.")] = "tiny",
    arm: Annotated[str, typer.Option(help="Which answers to count: ift or reasoning.")] = "reasoning",
    lengths: Annotated[Optional[str], typer.Option(help="Count a length distribution instead of data: ift-like or reasoning-like.")] = None,
    num_docs: Annotated[int, typer.Option(help="Documents to count (from the data or the distribution).")] = 2000,
    data: Annotated[Optional[Path], typer.Option(help="Paired data file; default: the built-in synthetic data.")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Column mapping for --data.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer folder (default: built-in, or the checkpoint's).")] = None,
    pack_tokens: Annotated[Optional[int], typer.Option(help="Pack capacity (default: automatic).")] = None,
    measure: Annotated[bool, typer.Option(help="Also run FlopCounterMode on a real forward+backward of a few packs (CPU; students that can be built).")] = True,
    max_packs: Annotated[int, typer.Option(help="Packs measured by FlopCounterMode.")] = 2,
    prompt_len: Annotated[Optional[int], typer.Option(help="Inference breakdown: prompt tokens (default: the data's mean).")] = None,
    gen_len: Annotated[Optional[int], typer.Option(help="Inference breakdown: generated tokens (default: the data's mean answer).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of tables.")] = False,
) -> None:
    """Training and inference FLOPs by every count, side by side, and why they disagree."""
    import json as json_mod

    import numpy as np

    from rdistill.flops import ModelShape
    from rdistill.flops_report import DISAGREEMENTS, count, inference_table, measure_sample, sample_lengths
    from rdistill.models import QWEN25_SHAPES, build_student, shape_config
    from rdistill.train import auto_pack_tokens

    _quiet_libraries(None)
    if arm not in ("ift", "reasoning"):
        _fail(f"--arm must be ift or reasoning, got {arm!r}")
    docs_tokens = None
    net = None
    try:
        if lengths is not None:
            docs = sample_lengths(lengths, num_docs)
            source = f"{num_docs} documents drawn from the {lengths} distribution"
        else:
            from rdistill.run import default_tokenizer
            from rdistill.tokenizer import encode_document, load_tokenizer

            if data is not None:
                from rdistill.data import load_pairs, parse_column_map

                examples = load_pairs(data, columns=parse_column_map(columns) if columns else None, limit=num_docs).examples
                source = f"{len(examples)} rows of {data}"
            else:
                from rdistill.synth import make_splits

                examples, _ = make_splits(num_docs, 1)
                source = f"{len(examples)} built-in synthetic examples"
            tok = load_tokenizer(tokenizer or default_tokenizer(model))
            docs_tokens = [encode_document(tok, e.prompt, getattr(e, arm)) for e in examples]
            docs = [(len(ids), min(len(ids) - 1, sum(mask))) for ids, mask in docs_tokens]
        if model in QWEN25_SHAPES:
            shape = ModelShape.from_config(shape_config(model))
        else:
            vocab = len(tok) if docs_tokens is not None else 512
            net = build_student(model, vocab)
            shape = ModelShape.from_model(net)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    cap = pack_tokens or auto_pack_tokens(max(l for l, _ in docs))
    rep = count(shape, docs, cap)
    if measure and net is not None and docs_tokens is not None:
        rep.measured["flop_counter"], rep.measured_ledger["executed"] = measure_sample(
            net, shape, docs_tokens, cap, max_packs
        )
    p_len = prompt_len or max(1, round(float(np.mean([l - a for l, a in docs]))))
    g_len = gen_len or max(1, round(float(np.mean([a for _, a in docs]))))
    inference = inference_table(shape, p_len, g_len)
    result = {
        "model": model,
        "arm": arm,
        "source": source,
        "pack_tokens": cap,
        "parameters": {"total": shape.params_total, "non_embedding": shape.params_non_embedding},
        **rep.to_dict(),
        "inference": {"prompt_tokens": p_len, "generated_tokens": g_len, **inference},
        "disagreements": dict(DISAGREEMENTS),
    }
    if as_json:
        typer.echo(json_mod.dumps(result, indent=2))
        return
    out = Console()
    t = Table(title=f"training FLOPs: {model}, {arm} answers, {source}, {rep.num_packs} packs of {cap} tokens")
    for col in ("component", "exact", "executed", "paper", "paper / exact"):
        t.add_column(col, justify="left" if col == "component" else "right")
    for row in result["rows"]:
        ratio = "-" if not row["exact"] else f"{row['paper'] / row['exact']:.2f}x"
        t.add_row(row["component"], _sci(row["exact"]), _sci(row["executed"]), _sci(row["paper"]), ratio)
    total = result["rows"][-1]
    t.add_row("6ND (all parameters)", "", "", _sci(total["six_nd"]), f"{total['six_nd'] / total['exact']:.2f}x")
    t.add_row("6ND (no embedding)", "", "", _sci(total["six_nd_non_embedding"]),
              f"{total['six_nd_non_embedding'] / total['exact']:.2f}x")
    out.print(t)
    if rep.measured:
        m, led = rep.measured["flop_counter"], rep.measured_ledger["executed"]
        out.print(f"FlopCounterMode on {max_packs} packs (forward+backward, MATH SDPA): {m:.4e} measured, "
                  f"{led:.4e} in the ledger's executed count ({100 * (m - led) / led:+.4f}%)")
    inf = Table(title=f"inference FLOPs per query: {p_len} prompt + {g_len} generated tokens, KV cache")
    for col in ("count", "FLOPs", "paper / exact"):
        inf.add_column(col, justify="left" if col == "count" else "right")
    inf.add_row("exact", _sci(inference["exact"]), "1.00x")
    inf.add_row("paper (prefill + decode)", _sci(inference["paper"]), f"{inference['paper'] / inference['exact']:.2f}x")
    out.print(inf)
    out.print("[bold]Why the counts disagree[/]")
    for name, why in DISAGREEMENTS:
        out.print(f"- {name}: {why}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl and eval.jsonl.")] = Path("data/synthetic"),
    train_size: Annotated[int, typer.Option(help="Training examples.")] = 20000,
    eval_size: Annotated[int, typer.Option(help="Held-out examples (no prompt shared with training).")] = 200,
    difficulty: Annotated[int, typer.Option(help="1 (easy) to 5 (hard).")] = 2,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 0,
) -> None:
    """Write the built-in synthetic teacher's data in the released schema (prompt, ift, reasoning)."""
    from rdistill.data import write_pairs
    from rdistill.synth import make_splits
    from rdistill.tokenizer import builtin_tokenizer

    try:
        train_ex, eval_ex = make_splits(train_size, eval_size, seed=seed, difficulty=difficulty)
    except ValueError as e:
        _fail(str(e))
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
    table = Table(title=f"synthetic data, difficulty {difficulty}: answer tokens (built-in tokenizer, with EOS)")
    for col in ("family", "examples", "ift tokens", "reasoning tokens", "reasoning / ift"):
        table.add_column(col, justify="right" if col != "family" else "left")
    for fam, (n, i, r) in sorted(sums.items()):
        table.add_row(fam, str(n), f"{i / n:.1f}", f"{r / n:.1f}", f"{r / i:.1f}x")
    Console().print(table)
    console.print(f"wrote {len(train_ex)} + {len(eval_ex)} rows to {out}/train.jsonl and {out}/eval.jsonl")


@data_app.command("stats")
def data_stats(
    data: Annotated[Optional[Path], typer.Option(help="Paired data (jsonl, json, parquet or a saved HF dataset folder); all its rows are counted. Default: the built-in synthetic teacher's training set.")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Column mapping for --data, e.g. 'prompt=question,ift=short,reasoning=long'.")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip (and count) malformed rows of --data instead of stopping at the first.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option(help="Local Hugging Face tokenizer folder. Default: the built-in one (which knows only the synthetic data's words).")] = None,
    pack_tokens: Annotated[Optional[int], typer.Option(help="Pack capacity in tokens. Default: as `train` picks it, 1024 or the next power of two holding the longest document.")] = None,
    overflow: Annotated[str, typer.Option(help="Documents longer than --pack-tokens: error, truncate or drop.")] = "error",
    difficulty: Annotated[int, typer.Option(help="Synthetic data difficulty, 1-5.")] = 2,
    train_size: Annotated[int, typer.Option(help="Synthetic training examples.")] = 20000,
    eval_size: Annotated[int, typer.Option(help="Synthetic held-out examples (set aside first, as `train` does; not counted).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic data.")] = 0,
) -> None:
    """Per arm: document lengths (prompt + answer + EOS, in tokens) and how densely they pack
    (real tokens / capacity) with best fit (bf, the trainer's default) and best fit decreasing (bfd)."""
    import numpy as np

    from rdistill.data import load_pairs, parse_column_map
    from rdistill.packing import PackingError, pack_arrays
    from rdistill.synth import make_splits
    from rdistill.tokenizer import encode_document, load_tokenizer
    from rdistill.train import auto_pack_tokens

    try:
        if data is None:
            examples, _ = make_splits(train_size, eval_size, seed=seed, difficulty=difficulty)
            source = f"synthetic, difficulty {difficulty}, seed {seed}"
        else:
            loaded = load_pairs(data, columns=parse_column_map(columns) if columns else None, skip_bad_rows=skip_bad_rows)
            console.print(loaded.summary())
            examples, source = loaded.examples, str(data)
        tok = load_tokenizer(tokenizer)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    if not examples:
        _fail("no examples to count; --train-size must be at least 1")
    with console.status(f"tokenizing {len(examples)} examples per arm"):
        lengths = {
            arm: np.array([len(encode_document(tok, ex.prompt, getattr(ex, arm))[0]) for ex in examples], dtype=np.int64)
            for arm in ("ift", "reasoning")
        }
    capacity = pack_tokens or auto_pack_tokens(int(max(v.max() for v in lengths.values())))
    dist = Table(title=f"document lengths in tokens (prompt + answer + EOS): {source}")
    for col in ("arm", "documents", "tokens", "mean", "p50", "p90", "p99", "max"):
        dist.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for arm, v in lengths.items():
        p50, p90, p99 = np.quantile(v, [0.5, 0.9, 0.99], method="inverted_cdf")
        dist.add_row(arm, f"{v.size:,}", f"{int(v.sum()):,}", f"{v.mean():.1f}", str(p50), str(p90), str(p99), str(v.max()))
    shuffled = np.random.default_rng(seed).permutation(len(examples))
    rows = []
    try:
        for arm, v in lengths.items():
            for mode in ("bfd", "bf"):  # bfd first: an overflow error then names rows in the data's order
                t0 = time.perf_counter()
                plan = pack_arrays(v[shuffled] if mode == "bf" else v, capacity, mode=mode, overflow=overflow)
                rows.append((arm, mode, plan, time.perf_counter() - t0))
    except PackingError as e:
        _fail(str(e))
    packing = Table(title=f"packing into rows of {capacity:,} tokens (packer backend: {rows[0][2].backend})")
    for col in ("arm", "mode", "packs", "efficiency", "truncated", "dropped", "seconds"):
        packing.add_column(col, justify="left" if col in ("arm", "mode") else "right", no_wrap=True)
    for arm, mode, plan, secs in rows:
        packing.add_row(
            arm, mode, f"{plan.num_packs:,}", f"{100 * plan.efficiency:.2f}%", str(plan.truncated.size),
            str(plan.dropped.size), f"{secs:.4f}",
        )
    out = Console()
    out.print(dist)
    out.print(packing)
    console.print("efficiency = real tokens / (packs x capacity); bf: best fit in a shuffled order, as the "
                  "trainer packs each epoch; bfd: best fit, longest first")


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # a scheduler's SIGTERM stops a run as cleanly as Ctrl-C


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)
