"""`rdistill`: the command line. It parses into the config types (rdistill.config), calls the library
and prints. The options of ``train`` and ``sweep`` are generated from the configs (cli/options.py)."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.markup import escape
from rich.table import Table

from rdistill.cli import data_cmds, eval_cmd, flops_cmd, plan_cmd, report_cmd  # noqa: F401  (they register their commands)
from rdistill.cli.app import app, fail, quiet_libraries
from rdistill.cli.options import (
    SHARED_OPTIONS,
    SWEEP_ONLY_OPTIONS,
    SWEEP_OPTIONS,
    TRAIN_OPTIONS,
    command,
    overrides,
)
from rdistill.cli.render import SweepHooks, console, run_hooks, summary_tables, table_console
from rdistill.config import RunConfig, SweepConfig, merge, read_config_file
from rdistill.typed import from_dict

class Terminated(KeyboardInterrupt):
    """SIGTERM: stops a run as cleanly as Ctrl-C, and the command exits with 143 (128 + 15)."""


def _config_param(help_text: str) -> inspect.Parameter:
    return inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[Path], typer.Option(help=help_text)])


def build_run_config(config_file: Path | None, given: dict[str, Any]) -> RunConfig:
    """The run config of a config file (or the defaults) with the command line's flags laid over it."""
    base = read_config_file(config_file) if config_file is not None else {}
    train = given.get("train", {})
    if {"budget_flops", "samples"} & set(train) and isinstance(base.get("train"), dict):
        base["train"] = {k: v for k, v in base["train"].items() if k not in ("budget_flops", "samples")}
    merged = merge(base, given)
    merged.setdefault("train", {})
    source = f"{config_file}: " if config_file is not None else ""
    try:
        return RunConfig.from_dict(merged)
    except ValueError as e:
        raise ValueError(f"{source}{e}") from e


RESUMABLE_WITH = ("threads", "log_every", "log")
"""Options that may be given beside --resume (they change how the run reports, not what it computes)."""


def _resume_config(folder: Path, config: Path | None, overwrite: bool, given: dict[str, Any]) -> RunConfig:
    from rdistill.runfolder import resume_config

    extra = sorted(k for k, v in given.items() if v is not None and k not in RESUMABLE_WITH)
    if config is not None or overwrite or extra:
        named = ["--config"] * (config is not None) + ["--overwrite"] * overwrite + [f"--{k.replace('_', '-')}" for k in extra]
        fail(f"--resume continues the run with its own config.json; drop {', '.join(named)}")
    cfg = resume_config(folder)
    return replace(cfg, **{k: given[k] for k in RESUMABLE_WITH if given.get(k) is not None})


def torchrun_argv(argv: list[str], nproc: int) -> list[str]:
    """The torchrun command that runs ``rdistill ARGV`` (without --nproc) on ``nproc`` local processes,
    with --parallel ddp unless ARGV names one."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    named = {a.split("=")[0] for a in args}
    if not named & {"--parallel", "--resume"}:  # a resumed run keeps its own --parallel
        args += ["--parallel", "ddp"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "rdistill", *args]


def resume_hint(out: Path) -> str:
    """The command that resumes the run folder ``out`` (under torchrun when this is a torchrun job)."""
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks == 1:
        return f"rdistill train --resume {out}"
    if ranks == int(os.environ.get("LOCAL_WORLD_SIZE", ranks)):
        return f"rdistill train --resume {out} --nproc {ranks}"
    return f"the same torchrun command with: -m rdistill train --resume {out}"


def _rank_failed(out: Path, e: BaseException) -> None:
    """Under torchrun: a collective failed (another rank died, or the network); say so (the main rank)
    and exit before torchrun's SIGTERM can interrupt the message. The run folder says "failed" and resumes."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rank = os.environ.get("RANK", "0")
    console.print(f"[red]error[/]: rank {rank} stopped: {type(e).__name__}: {escape(str(e).splitlines()[0][:300])}\n"
                  "Another rank of this job has probably died (torchrun's report names it). Finished arms and the "
                  f"latest checkpoint are kept in {out}; go on with: {resume_hint(out)}")
    raise typer.Exit(1)


def _train(config: Path | None, overwrite: bool, resume: Path | None, nproc: int | None, **given: Any) -> None:
    """Train every arm to the same FLOP budget (or sample count), evaluate, and write a run folder."""
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = torchrun_argv(sys.argv[1:], nproc)
        console.print("running: " + " ".join(argv[1:]))
        os.execv(argv[0], argv)
    from rdistill.data.curriculum import parse_arms
    from rdistill.run import prepare, run
    from rdistill.runfolder import clear_run_folder
    from rdistill.train import NonFiniteLoss

    quiet_libraries()
    if os.environ.get("RANK", "0") != "0":
        console.quiet = True  # under torchrun the main rank speaks for the job
    try:
        if resume is not None:
            cfg = _resume_config(resume, config, overwrite, given)
        else:
            cfg = build_run_config(config, overrides(TRAIN_OPTIONS, given))
        parse_arms(cfg.arms)
    except ValueError as e:
        fail(e)
    out = Path(cfg.out) if cfg.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = replace(cfg, out=str(out))
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder; choose another --out")
    occupied = out.exists() and any(out.iterdir()) and resume is None
    if occupied and not overwrite:
        fail(f"{out} exists and is not empty; choose another --out, pass --overwrite, or --resume {out}")
    try:
        hooks = run_hooks(cfg)  # --log tensorboard without tensorboard installed fails here
        prepared = prepare(cfg, console.print)  # everything checked before the folder is touched
        if occupied:
            clear_run_folder(out)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    console.print(f"run folder: [bold]{out}[/]" + (" (resumed)" if resume is not None else ""))
    try:
        with hooks:
            results = run(prepared, hooks, resume=resume is not None)
    except KeyboardInterrupt as e:
        console.print(f"[yellow]interrupted[/]: finished arms are kept in {out}/results.json; "
                      f"go on with: {resume_hint(out)}")
        raise typer.Exit(143 if isinstance(e, Terminated) else 130)
    except NonFiniteLoss as e:
        fail(f"{e} (run folder {out})")
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    except OSError as e:
        fail(f"cannot write the run folder {out}: {e.strerror or e}")
    except RuntimeError as e:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _rank_failed(out, e)
        raise
    if os.environ.get("RANK", "0") != "0":
        return
    for table in summary_tables(results):
        table_console().print(table)
    console.print(f"results: {out}/results.json")


OVERWRITE = inspect.Parameter(
    "overwrite", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option(help="Replace an existing run folder.")],
)
TRAIN_CONFIG = _config_param(
    "Start from a YAML or JSON run config (the keys of a run folder's config.json); flags given here override "
    "it. `--config runs/X/config.json --out runs/Y` reruns run X exactly.")
RESUME = inspect.Parameter(
    "resume", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[Path], typer.Option(
        help="Continue the interrupted run in this folder with its own config: finished arms are kept, the "
             "interrupted one goes on from its last checkpoint (see --save-every), then the rest.")],
)
NPROC = inspect.Parameter(
    "nproc", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[int], typer.Option(
        help="Run on this many local processes: re-runs the command under torchrun (--nproc-per-node), with "
             "--parallel ddp unless --parallel says fsdp.")],
)
command(app, "train", _train, TRAIN_OPTIONS, extra=[TRAIN_CONFIG, OVERWRITE, RESUME, NPROC])


def _sweep(out: Path, config: Path | None, list_points: bool, point: str | None, index: int | None,
           emit: str | None, script: Path | None, gpus_per_point: int | None, cpus_per_point: int | None,
           sbatch: list[str] | None, max_running: int | None, **given: Any) -> None:
    """Run a grid of students x arms x budgets into one study folder, then write its report; or list its
    points (--list), run one of them (--point, --index), or write a job-array script that runs each
    (--emit slurm)."""
    from rdistill.analysis import StudyError, write_report
    from rdistill.sweep import PointLocked, SweepLocked, points, run_point, run_sweep

    modes = [flag for flag, on in (("--list", list_points), ("--point", point is not None),
                                   ("--index", index is not None), ("--emit", emit is not None)) if on]
    if len(modes) > 1:
        fail(f"{' and '.join(modes)} do not go together: give one of --list, --point, --index, --emit")
    emit_only = [flag for flag, v in (("--script", script), ("--gpus-per-point", gpus_per_point),
                                      ("--cpus-per-point", cpus_per_point), ("--sbatch", sbatch),
                                      ("--max-running", max_running)) if v not in (None, [], ())]
    if emit_only and emit is None:
        fail(f"{', '.join(emit_only)} shape the job script: give them with --emit slurm")
    if (gpus_per_point or 1) > 1 and given.get("parallel") is None:
        given["parallel"] = "ddp"  # every task runs under torchrun (the point's id includes --parallel)
    elif (gpus_per_point or 1) > 1 and given["parallel"] == "none":
        fail("--gpus-per-point above 1 runs each point under torchrun: give --parallel ddp or fsdp, not none")
    quiet_libraries()
    if os.environ.get("RANK", "0") != "0":
        console.quiet = True  # under torchrun the main rank speaks for the job
    try:
        grid = overrides(SWEEP_ONLY_OPTIONS, given)
        if not grid.get("budgets"):
            raise ValueError("give the FLOP budgets of the grid, e.g. --budgets 3e12,1e13")
        run_given = merge(overrides(SHARED_OPTIONS, given), {"train": {"budget_flops": grid["budgets"][0]}})
        base = build_run_config(config, run_given)
        cfg = from_dict(SweepConfig, {**grid, "base": base.to_dict()})
        planned = points(cfg, out)  # checks the arms before the study folder is touched
        hooks_for = SweepHooks(cfg, out)  # --log tensorboard without tensorboard installed fails here
    except ValueError as e:
        fail(e)
    if list_points:
        from rdistill.dispatch import list_lines

        for line in list_lines([e for _, _, e in planned], out):
            typer.echo(line)
        return
    if emit is not None:
        _emit_slurm(out, config, given, [e for _, _, e in planned], script, gpus_per_point, cpus_per_point,
                    sbatch or [], max_running)
        return

    def on_point(point, status, i, n):
        label = f"[{i + 1}/{n}] {point.model} {point.arm} {point.budget:.2e}" + (
            f" seed {point.seed}" if point.seed is not None else "")
        color = {"complete": "green", "failed": "red", "skipped": "dim", "locked": "yellow"}.get(status, "bold")
        note = " (another worker runs it)" if status == "locked" else ""
        console.print(f"[{color}]{status}[/] {escape(label)}{note}")

    try:
        with hooks_for:
            if point is not None or index is not None:
                entry = run_point(cfg, out, point_id=point, index=index, hooks_for=hooks_for, on_point=on_point)
                manifest = {"points": [entry]}
            else:
                manifest = run_sweep(cfg, out, hooks_for=hooks_for, on_point=on_point)
    except (SweepLocked, PointLocked, ValueError) as e:
        fail(e)
    except KeyboardInterrupt as e:
        console.print(f"[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(143 if isinstance(e, Terminated) else 130)
    failed = [p for p in manifest["points"] if p["status"] == "failed"]
    for p in failed:
        console.print(f"[red]failed[/] {p['dir']}: {escape(p['error'])}")
    if point is not None or index is not None:
        if os.environ.get("RANK", "0") == "0":
            console.print(f"point: {out / manifest['points'][0]['dir']}; `rdistill report {out}` collects the study")
        if failed:
            raise typer.Exit(1)
        return
    try:
        report = write_report(out)
    except StudyError as e:
        fail(e)
    console.print(f"report: {report}")
    if failed:
        raise typer.Exit(1)


def sweep_args(out: Path, config: Path | None, given: dict[str, Any]) -> list[str]:
    """The sweep's own flags as typed (grid and training options, --out, --config), for a job script."""
    args = ["--out", str(out)] + (["--config", str(config)] if config is not None else [])
    for opt in SWEEP_OPTIONS:
        raw = given.get(opt.ident)
        if raw is None:
            continue
        flags = [f.split(" ")[-1] for f in opt.flag.split("/")]
        args += [flags[0] if raw else flags[-1]] if isinstance(raw, bool) else [flags[0], str(raw)]
    return args


def _emit_slurm(out: Path, config: Path | None, given: dict[str, Any], entries: list, script: Path | None,
                gpus_per_point: int | None, cpus_per_point: int | None, sbatch: list[str],
                max_running: int | None) -> None:
    from rdistill.dispatch import slurm_script, write_grid
    from rdistill.io import write_text_atomic

    path = script or out / "sweep.slurm"
    try:
        text = slurm_script(entries, sweep_args(out, config, given), study=out, workdir=Path.cwd(),
                            python=sys.executable, gpus_per_point=1 if gpus_per_point is None else gpus_per_point,
                            cpus_per_point=cpus_per_point, sbatch=sbatch, max_running=max_running)
        (out / "logs").mkdir(parents=True, exist_ok=True)  # SLURM does not make the --output folder
        write_grid(out, entries)
        write_text_atomic(path, text)
    except ValueError as e:
        fail(e)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")
    console.print(f"{len(entries)} points; job array: {path}\nsubmit it with: sbatch {path}   "
                  f"(then `rdistill report {out}` at any time)")


STUDY = inspect.Parameter(
    "out", inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[Path, typer.Option(help="Study folder; a rerun resumes it, skipping finished points.")],
)
SWEEP_CONFIG = _config_param(
    "The settings every point shares, from a YAML or JSON run config (its out, arms, model and budget are the "
    "point's); flags given here override it.")
SWEEP_DISPATCH = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, info])
                  for name, default, tp, info in (
    ("list_points", False, bool, typer.Option("--list", help=(
        "Print the grid's points, one a line: index, id, model, budget, arm, seed, status (complete, interrupted, "
        "crashed, failed, running, missing), folder; run nothing, write nothing."))),
    ("point", None, Optional[str], typer.Option(help=(
        "Run only the point with this id (or a unique start of it; --list shows them: the hash of its settings) "
        "into the folder a full sweep gives it; skipped when complete, resumed when interrupted. Refused while "
        "another worker runs it."))),
    ("index", None, Optional[int], typer.Option(
        help="Run only the point at this place of --list (from 0), as --point.")),
    ("emit", None, Optional[Literal["slurm"]], typer.Option(help=(
        "Write a job script instead of running: slurm, a job array with one task per point (--index order), "
        "each running `rdistill sweep` with these flags and --point ID."))),
    ("script", None, Optional[Path], typer.Option(help="Where --emit writes the script. Default: STUDY/sweep.slurm.")),
    ("gpus_per_point", None, Optional[int], typer.Option(help=(
        "--emit: GPUs of each task (#SBATCH --gpus-per-task; 0 for none). Above 1, each point runs under torchrun "
        "with one process per GPU and --parallel ddp unless --parallel says fsdp (--list with the same --parallel "
        "shows the same ids). Default: 1."))),
    ("cpus_per_point", None, Optional[int], typer.Option(help="--emit: CPUs of each task (#SBATCH --cpus-per-task).")),
    ("sbatch", None, Optional[list[str]], typer.Option(help=(
        "--emit: another #SBATCH option, repeatable, e.g. --sbatch time=24:00:00 --sbatch partition=gpu."))),
    ("max_running", None, Optional[int], typer.Option(help="--emit: at most this many tasks at once (--array=0-N%K).")),
)]
command(app, "sweep", _sweep, SWEEP_OPTIONS, extra=[STUDY, SWEEP_CONFIG, *SWEEP_DISPATCH])


@app.command()
def models() -> None:
    """List the student presets and the default learning rates."""
    from rdistill.data.sources import builtin_tokenizer
    from rdistill.model import PAPER_LR, PRESET_LR, PRESETS, build_student, count_parameters

    vocab = len(builtin_tokenizer())
    table = Table(title=f"student presets (built-in vocabulary of {vocab})")
    for col in ("name", "layers", "hidden", "heads q/kv", "MLP", "parameters", "note"):
        table.add_column(col)
    for name, p in PRESETS.items():
        n = count_parameters(build_student(name, vocab))["total"]
        table.add_row(name, str(p.num_hidden_layers), str(p.hidden_size), f"{p.num_attention_heads}/{p.num_key_value_heads}",
                      str(p.intermediate_size), f"{n:,}", p.description)
    table_console().print(table)
    lrs = Table(title="default peak learning rates of a checkpoint (the paper's, by nearest size; --lr overrides)")
    for col in ("parameters", "reasoning (and arms >= 50% reasoning)", "ift (and the others)"):
        lrs.add_column(col)
    for size, reasoning, ift in PAPER_LR:
        lrs.add_row(f"{size / 1e9:g}B", f"{reasoning:g}", f"{ift:g}")
    table_console().print(lrs)
    console.print(f"A preset trained from scratch: {PRESET_LR:g}.")


def _terminate(signum, frame) -> None:
    raise Terminated


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except BrokenPipeError:
        sys.exit(0)
