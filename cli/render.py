"""What the command line shows: progress bars while a run trains, and its summary tables."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rdistill.results import RunResults

console = Console(stderr=True)
LOG_WIDTH = 200
"""Width of tables written to a file or a pipe (a log), so that no column is cut at 80 characters."""


def table_console() -> Console:
    """Where result tables go: stdout, at the terminal's width, or LOG_WIDTH wide when it is not a terminal."""
    return Console() if sys.stdout.isatty() else Console(width=LOG_WIDTH)


def sci(x: float | int | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


class ProgressHooks:
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
            spent = f"{sci(rec.budget_fraction * self.budget)} / {sci(self.budget)} FLOPs"
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


def summary_tables(results: RunResults) -> list[Table]:
    """Training (compute) and evaluation (accuracy) summaries, one row per arm."""
    train = Table(title="training FLOPs: exact (useful), executed, paper formula, 6ND")
    for col in ("arm", "steps", "samples", "tokens", "exact", "executed", "paper", "6ND", "of budget", "MFU"):
        train.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for a in results.arms:
        fl = a.flops
        status = "" if a.status == "complete" else f" ({a.status})"
        train.add_row(
            a.name + status, "-" if a.steps is None else str(a.steps), "-" if a.samples is None else str(a.samples),
            sci(a.train_tokens), sci(fl.exact), sci(fl.executed), sci(fl.paper), sci(fl.six_nd), pct(a.budget_used),
            "unknown" if a.mfu is None else pct(a.mfu),
        )
    tables = [train]
    arms = [a for a in results.arms if a.eval is not None]
    if arms:
        families = sorted({f for a in arms for f in a.eval.by_family})
        chance = ", ".join(f"{f} {pct(c)}" for f, c in arms[0].eval.chance.items() if c)
        ev = Table(title="held-out exact match" + (f" (chance: {chance})" if chance else ""))
        for col in ("arm", "all", *families, "out tokens", "FLOPs/query"):
            ev.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
        for a in arms:
            e = a.eval
            ev.add_row(
                a.name, pct(e.accuracy), *[pct(e.by_family.get(f)) for f in families],
                "-" if e.mean_output_tokens is None else f"{e.mean_output_tokens:.1f}",
                sci(e.inference_flops_per_query.exact),
            )
        tables.append(ev)
    return tables
