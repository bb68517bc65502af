"""`rdistill eval`: any checkpoint evaluated as a run evaluates its students, into a folder the report reads."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rdistill.cli.app import app, fail, quiet_libraries
from rdistill.cli.render import console, pct, sci, table_console

BUILTIN = "builtin"


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


@app.command("eval")
def eval_checkpoint(
    model: Annotated[Path, typer.Option(help="A local Hugging Face checkpoint folder: a run's student (RUN/<arm>/model), "
                                             "a released student or a base model.")],
    data: Annotated[Optional[str], typer.Option(
        help="Held-out pairs (prompt, ift, reasoning: e.g. a run's data/eval.jsonl) or a benchmark file (prompt, answer, "
             "optional family and choices); jsonl, json, parquet, a datasets folder or a cached Hub id. Default: the "
             "built-in synthetic held-out set.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split of --data when it has several (default: test, or its only one).")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Column mapping, e.g. prompt=question,answer=gold,choices=options.")] = None,
    families: Annotated[Optional[str], typer.Option(help="Evaluate only these families (comma-separated).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N rows (after --families).")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="Skip (and count) malformed rows instead of stopping.")] = False,
    eval_size: Annotated[int, typer.Option(help="Built-in held-out set: examples (the set a run with the same "
                                                 "--eval-size, --difficulty and --seed holds out).")] = 200,
    difficulty: Annotated[int, typer.Option(help="Built-in held-out set: difficulty 1-5.")] = 2,
    seed: Annotated[int, typer.Option(help="Built-in held-out set: seed of the data (a run's --data-seed, else --seed).")] = 0,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="Tokenizer folder, or builtin. Default: a run's student the one its run used, else the checkpoint's own.")] = None,
    system_prompt: Annotated[Optional[str], typer.Option(
        help="System prompt given to the chat template ('' removes its default one). Default: a run's student uses "
             "its run's setting, any other checkpoint its template's own.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        help="Generation cap. Default: 1.5x the longest reference reasoning answer + 8 when the data has them "
             "(as a run), else the run's setting, else 1024.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 64,
    dtype: Annotated[str, typer.Option(help="auto (as the weights are stored), bf16, fp16 or fp32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto (cuda when there is one), cpu, cuda, cuda:1...")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
    arm: Annotated[Optional[str], typer.Option(
        help="The name the report gives this point. Default: a run's student keeps its arm, else 'checkpoint'.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Output folder. Default: evals/<data>/<model>; one folder per benchmark is a study for `rdistill report`.")] = None,
) -> None:
    """Evaluate any checkpoint on held-out pairs or a benchmark with the training-time rules (answer after
    </think>, last \\boxed{}, math-aware equivalence, option letters), batched greedy generation, and inference
    FLOPs per query; writes eval.json, generations.jsonl, and results.json for a run's student."""
    import torch

    from rdistill.config import DataConfig
    from rdistill.data.loading import DataError
    from rdistill.data.sources import open_source
    from rdistill.external_eval import (
        CheckpointError,
        default_max_new_tokens,
        evaluate_checkpoint,
        load_checkpoint,
        run_origin,
        write_eval_folder,
    )
    from rdistill.prompts import read_prompts
    from rdistill.results import DataSummary

    if dtype not in ("auto", "bf16", "fp16", "fp32") or batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
        fail("need --dtype auto|bf16|fp16|fp32, --batch-size >= 1 and --max-new-tokens >= 1")
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    origin = run_origin(model)
    fams = tuple(f.strip() for f in families.split(",") if f.strip()) if families else None
    try:
        if data is None:
            if split is not None or columns is not None:
                raise ValueError("--split and --columns apply to --data; the built-in held-out set has neither")
            source = open_source(DataConfig(eval_size=eval_size, difficulty=difficulty, train_size=1), seed=seed)
            examples = [ex for ex in source.held_out if fams is None or ex.family in fams][:limit]
            chance, label = source.chance, f"{BUILTIN}-d{difficulty}-s{seed}-n{eval_size}"
            summary = DataSummary(source=f"synthetic held-out set (difficulty {difficulty}, seed {seed})", train=0,
                                  eval=len(examples), difficulty=difficulty)
        else:
            loaded = read_prompts(data, columns=columns, split=split, skip_bad_rows=skip_bad_rows, families=fams,
                                  limit=limit, need_gold=True)
            console.print(loaded.summary())
            examples = [r.example() for r in loaded.rows]
            chance, label = {}, _label(Path(data).stem if Path(data).exists() else data)
            summary = DataSummary(source=loaded.source, train=0, eval=len(examples), rows_read=loaded.num_rows_read,
                                  skipped=len(loaded.skipped))
        if not examples:
            raise ValueError("no examples to evaluate (check --families and --limit)")
        quiet_libraries()
        if tokenizer is None and origin is not None:
            tokenizer = origin.tokenizer
        net, tok = load_checkpoint(model, tokenizer=tokenizer, dtype=dtype, device=dev)
    except (DataError, CheckpointError, ValueError, FileNotFoundError, OSError) as e:
        fail(e)
    if system_prompt is None and origin is not None:
        system_prompt = origin.results.config.data.system_prompt
    cap = max_new_tokens or default_max_new_tokens(tok, examples, origin)
    if origin is not None:
        console.print(f"{model} is the {origin.arm.name} student of {origin.results_path.parent}: its training FLOPs "
                      f"({sci(origin.arm.flops.exact)} exact) go with the evaluation")
    target = out or Path("evals") / label / _label(
        f"{origin.results_path.parent.name}-{origin.arm.name}" if origin is not None else model.resolve().name)
    console.print(f"evaluating {model} on {len(examples)} prompts ({summary.source}), up to {cap} new tokens, on {dev}")
    started = time.time()
    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("eval", total=len(examples))
        try:
            gens, result = evaluate_checkpoint(net, tok, examples, chance=chance, max_new_tokens=cap, batch_size=batch_size,
                                               system_prompt=system_prompt, on_batch=lambda n: bar.advance(task, n))
        except ValueError as e:
            fail(e)
    record = write_eval_folder(target, model_dir=model, arm=arm, net=net, examples=examples, gens=gens, result=result,
                               data=summary, started=started, batch_size=batch_size, system_prompt=system_prompt,
                               origin=origin)
    _print(record, target, origin is not None)


def _print(record, target: Path, has_results: bool) -> None:
    ev = record.eval
    table = Table(title=f"{record.model} ({record.parameters.total:,} parameters, {record.dtype}) on {record.data.source}")
    for col in ("family", "n", "accuracy", "reasoning mode", "no answer", "truncated"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for fam, acc in ev.by_family.items():
        table.add_row(fam, str(ev.n_by_family.get(fam, "-")), pct(acc), pct((ev.reasoning_mode_by_family or {}).get(fam)),
                      str((ev.no_answer_by_family or {}).get(fam, "-")), str((ev.truncated_by_family or {}).get(fam, "-")))
    table.add_row("overall", str(ev.n), pct(ev.accuracy), pct(ev.reasoning_mode), str(ev.no_answer), str(ev.truncated))
    table_console().print(table)
    fl = ev.inference_flops_per_query
    console.print(f"output tokens {ev.mean_output_tokens:.1f} per query (right {ev.mean_output_tokens_correct or 0:.1f}, "
                  f"wrong {ev.mean_output_tokens_wrong or 0:.1f}); inference FLOPs per query {sci(fl.exact)} exact, "
                  f"{sci(fl.paper)} paper; {record.seconds:.1f} s")
    where = "results.json (a point for `rdistill report`), " if has_results else ""
    console.print(f"wrote {target}/: {where}eval.json, {record.arm}/generations.jsonl, data/eval.jsonl")
    if not has_results:
        console.print("no training FLOPs on record for this checkpoint, so no results.json: `rdistill report` over a "
                      "folder holding this one places it on the inference-FLOPs axis only")
