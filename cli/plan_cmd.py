"""`rdistill plan`: what a sweep's grid will cost before it runs (rdistill.plan): every point's training
and evaluation FLOPs and its device-hours on a named device, printed and written to plan.json and plan.md."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from rdistill.cli.app import app, fail, quiet_libraries
from rdistill.cli.flops_cmd import _param
from rdistill.cli.options import SHARED_OPTIONS, SWEEP_OPTIONS, SWEEP_ONLY_OPTIONS, command, opt, overrides
from rdistill.cli.render import console, sci, table_console
from rdistill.config import SweepConfig, merge
from rdistill.flops.hardware import DEVICES
from rdistill.plan import MAX_DOCS, hours_text

SAMPLES = opt("train.samples")
GRID_OPTIONS = tuple(o for o in SWEEP_ONLY_OPTIONS if o.path != "budgets")
PLAN_OPTIONS = (*(o for o in SWEEP_OPTIONS if o.path != "budgets"), SAMPLES)

PLAN_PARAMS = [
    _param("budgets", Optional[str], None, "Comma-separated FLOP budgets, e.g. 3e12,1e13, or auto:N: N budgets evenly "
           "spaced in log-FLOPs from --budget-min to --budget-max, both included."),
    _param("budget_min", Optional[float], None, "Floor of --budgets auto:N. Default: a tenth of one IFT epoch of the "
           "cheapest student."),
    _param("budget_max", Optional[float], None, "Ceiling of --budgets auto:N. Default: one reasoning epoch of the "
           "costliest student."),
    _param("lengths", Optional[str], None, "Count named length distributions instead of data: IFT,REASONING (e.g. "
           "ift-like,reasoning-like; one name for both), --train-size documents of each."),
    _param("device", str, "h100", f"Device each point runs on: {', '.join(DEVICES)} (data-sheet peaks) or cpu (this "
           "machine's, measured)."),
    _param("mfu", Optional[float], None, "Model FLOPs utilisation assumed on --device (default 0.4, stated in the plan "
           "as assumed)."),
    _param("mfu_from", Optional[Path], None, "Take the MFU measured in a run's results.json (or run folder): each "
           "arm's own, the mean of its arms for other arms."),
    _param("devices", int, 1, "Devices per point (a torchrun of that many): wall hours = device-hours / devices."),
    _param("max_docs", int, MAX_DOCS, "Simulate a point's steps exactly while that handles at most this many "
           "documents (those it trains, and at least one pass over the examples); beyond, --samples points are "
           "counted exactly and budget points bounded (within one document below the budget)."),
    _param("out", Path, Path("."), "Folder for plan.json and plan.md (a study folder: each point's dir is relative "
           "to it)."),
    _param("as_json", bool, False, "Print plan.json for machines instead of tables.", "--json"),
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[Path], typer.Option(
        help="The settings every point shares, from a YAML or JSON run config (as `rdistill sweep --config`).")]),
]


def _plan(budgets: str | None, budget_min: float | None, budget_max: float | None, lengths: str | None, device: str,
          mfu: float | None, mfu_from: Path | None, devices: int, max_docs: int, out: Path, as_json: bool,
          config: Path | None, **given: Any) -> None:
    """What a grid will cost before it runs: every point's training FLOPs (exact, as its run will spend them),
    evaluation FLOPs and device-hours on --device, with totals; writes plan.json and plan.md."""
    from rdistill.cli.main import build_run_config
    from rdistill.plan import Planner, device_dtype, make_device, make_plan, parse_budgets, parse_lengths, write_plan
    from rdistill.sweep import grid as make_grid
    from rdistill.typed import from_dict

    quiet_libraries()
    try:
        run_given = overrides((*SHARED_OPTIONS, SAMPLES), given)
        samples = run_given.get("train", {}).get("samples")
        if (budgets is None) == (samples is None):
            raise ValueError("give the grid's FLOP budgets (--budgets 3e12,1e13 or --budgets auto:5) or a sample count "
                             "(--samples N), one of the two")
        if samples is None:  # a stand-in: every point runs to its own budget
            run_given = merge(run_given, {"train": {"budget_flops": 1.0}})
        base = build_run_config(config, run_given)
        names = parse_lengths(lengths) if lengths is not None else None
        cfg = from_dict(SweepConfig, {**overrides(GRID_OPTIONS, given), "budgets": [1.0], "base": base.to_dict()})
        make_grid(cfg.models, cfg.arms, cfg.budgets, cfg.seeds)  # checks the arms
        dev = make_device(device, device_dtype(base.model.dtype, cfg.models, device), mfu=mfu, mfu_from=mfu_from, devices=devices)
        planner = Planner(cfg.arms, names, console.print)
        if budgets is not None:
            floor, ceiling = budget_min, budget_max
            if budgets.strip().startswith("auto:") and (floor is None or ceiling is None):
                low, high = planner.budget_range(base, cfg.models)
                floor, ceiling = floor if floor is not None else low, ceiling if ceiling is not None else high
            cfg = replace(cfg, budgets=parse_budgets(budgets, floor, ceiling))
        plan = make_plan(cfg, dev, samples=samples, lengths=names, study=out, max_docs=max_docs, planner=planner)
        json_path, md_path = write_plan(plan, out)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    if as_json:
        typer.echo(json.dumps(plan, indent=2))
        return
    _print(plan)
    console.print(f"plan: {json_path} and {md_path}")


def _print(plan: dict) -> None:
    dev, tot = plan["device"], plan["totals"]
    size = "samples" if plan["grid"]["samples"] is not None else "budget"
    t = Table(title=f"plan: {tot['points']} points on {dev['name']} ({dev['dtype']}, peak {sci(dev['peak_flops'])} FLOP/s)")
    for col in ("model", "arm", "seed", size, "train FLOPs", "method", "epochs", "eval FLOPs", "MFU", "device-h"):
        t.add_column(col, justify="left" if col in ("model", "arm", "method") else "right")
    for p in plan["points"]:
        amount = f"{p['samples_requested']:,}" if p["budget_flops"] is None else sci(p["budget_flops"])
        t.add_row(p["model"], p["arm"], str(p["seed"]), amount, sci(p["train_flops"]["exact"]), p["method"],
                  f"{p['epochs']:.3g}", sci(p["eval_flops"]), f"{p['mfu']:.3f}", f"{p['device_hours']:.4g}")
    t.add_section()
    t.add_row("total", "", "", "", sci(tot["train_flops_exact"]), "", "", sci(tot["eval_flops"]), "",
              hours_text(tot["device_hours"]))
    table_console().print(t)
    for d in plan["data"]:
        console.print(f"- data: {d['source']}, {d['examples']:,} examples, packs of {d['pack_tokens']:,} tokens, "
                      f"{d['eval_queries']} held-out queries")
    for note in plan["assumptions"]:
        console.print(f"- {note}")
    console.print(f"total: [bold]{hours_text(tot['device_hours'])} {dev['name']} device-hours[/] for {tot['points']} points "
                  f"({sci(tot['train_flops_exact'])} training FLOPs, {sci(tot['eval_flops'])} evaluation FLOPs)")


command(app, "plan", _plan, PLAN_OPTIONS, extra=PLAN_PARAMS, help_overrides={
    "train.samples": "Plan the paper's mode instead of --budgets: this many samples per point, one epoch.",
    "models": "Comma-separated presets, paper shapes (qwen2.5-0.5b ... qwen2.5-14b: counted, not built) or "
              "checkpoint folders.",
})
