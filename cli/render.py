"""What the command line shows: progress while a run trains (bars on a terminal, plain lines in a log),
and its summary tables."""

from __future__ import annotations

import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rdistill.config import RunConfig, SweepConfig
from rdistill.results import ArmResult, RunResults
from rdistill.tensorboard_log import TensorBoardHooks, summary_writer_class

if TYPE_CHECKING:
    from rdistill.run import RunHooks
    from rdistill.sweep import SweepPoint
    from rdistill.steps import StepRecord

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


def spent_text(fraction: float, budget: float, unit: str) -> str:
    """What an arm has spent of its budget: "1.23e+11 / 3.00e+11 FLOPs" or "120 / 400 samples"."""
    if unit == "FLOPs":
        return f"{sci(fraction * budget)} / {sci(budget)} FLOPs"
    return f"{round(fraction * budget)} / {int(budget)} samples"


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
        spent = spent_text(rec.budget_fraction, self.budget, self.unit)
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


class LogHooks:
    """Plain progress lines for a log, where rich would draw a bar only once it is finished: a line as an
    arm starts and as it ends, one every ``every`` optimizer steps (0: none), and one per tenth of an
    evaluation. A step's line gives the arm, the step, the budget spent, the loss, tokens/s, the learning
    rate, MFU and (when step records carry it) peak memory; tokens/s and MFU are over the steps since the
    previous line, in step time, as MFU is everywhere."""

    def __init__(self, every: int, out: Console | None = None) -> None:
        self.every = every
        self.out = out or console
        self.unit, self.budget = "FLOPs", 1.0
        self._reset()
        self.eval_n = self.eval_done = 0

    def _reset(self) -> None:
        self.tokens, self.seconds, self.mfu_seconds, self.peak_memory = 0, 0.0, 0.0, None

    def _print(self, text: str) -> None:
        self.out.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False, soft_wrap=True)

    def arm_started(self, arm, budget, unit):
        self.unit, self.budget = unit, float(budget)
        self._reset()
        self._print(f"{arm}: training to {sci(budget)} FLOPs" if unit == "FLOPs" else f"{arm}: training on {int(budget)} samples")

    def step(self, arm, rec: StepRecord, ledger):
        self.tokens += rec.tokens
        self.seconds += rec.seconds
        self.mfu_seconds = None if rec.mfu is None or self.mfu_seconds is None else self.mfu_seconds + rec.mfu * rec.seconds
        if rec.peak_memory is not None:
            self.peak_memory = max(rec.peak_memory, self.peak_memory or 0)
        if not self.every or rec.step % self.every:
            return
        seconds = max(self.seconds, 1e-9)
        mfu = None if self.mfu_seconds is None else self.mfu_seconds / seconds
        parts = [
            f"{spent_text(rec.budget_fraction, self.budget, self.unit)} ({pct(rec.budget_fraction)})",
            f"loss {rec.loss:.4f}",
            f"{self.tokens / seconds:,.0f} tok/s",
            f"lr {rec.lr:.2e}",
            f"MFU {'unknown' if mfu is None else pct(mfu)}",
        ]
        if self.peak_memory is not None:
            parts.append(f"peak memory {self.peak_memory / 2**30:.2f} GiB")
        self._print(f"{arm} step {rec.step}: " + ", ".join(parts))
        self._reset()

    def eval_started(self, arm, n):
        self.eval_n, self.eval_done = n, 0
        self._print(f"{arm}: evaluating on {n} held-out prompts")

    def eval_progress(self, arm, done):
        tenth = max(math.ceil(self.eval_n / 10), 1)
        before, self.eval_done = self.eval_done, min(self.eval_n, self.eval_done + done)
        if self.eval_done // tenth > before // tenth or self.eval_done >= self.eval_n:
            self._print(f"{arm}: evaluated {self.eval_done} / {self.eval_n}")

    def arm_finished(self, arm, result: ArmResult):
        parts = [f"{result.steps} steps" + ("" if result.train_seconds is None else f" in {result.train_seconds:.1f} s")]
        if result.flops.exact is not None:
            used = "" if result.budget_used is None else f" ({pct(result.budget_used)} of the budget)"
            parts.append(f"{sci(result.flops.exact)} FLOPs exact{used}")
        if result.final_loss is not None:
            parts.append(f"final loss {result.final_loss:.4f}")
        parts.append(f"MFU {'unknown' if result.mfu is None else pct(result.mfu)}")
        if result.eval is not None:
            parts.append(f"accuracy {pct(result.eval.accuracy)}")
        self._print(f"{arm}: done, " + ", ".join(parts))

    def message(self, text):
        self.out.print(text)


class FanOut:
    """Several RunHooks as one: every event goes to each hook in turn. As a context manager it enters
    (and leaves, in reverse order) those of its hooks that are context managers."""

    def __init__(self, *hooks: RunHooks) -> None:
        self.hooks = hooks
        self._stack = ExitStack()

    def __enter__(self) -> FanOut:
        for h in self.hooks:
            if hasattr(h, "__enter__"):
                self._stack.enter_context(h)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def arm_started(self, arm, budget, unit):
        for h in self.hooks:
            h.arm_started(arm, budget, unit)

    def step(self, arm, rec, ledger):
        for h in self.hooks:
            h.step(arm, rec, ledger)

    def eval_started(self, arm, n):
        for h in self.hooks:
            h.eval_started(arm, n)

    def eval_progress(self, arm, done):
        for h in self.hooks:
            h.eval_progress(arm, done)

    def arm_finished(self, arm, result):
        for h in self.hooks:
            h.arm_finished(arm, result)

    def message(self, text):
        for h in self.hooks:
            h.message(text)


def on_terminal() -> bool:
    """Whether progress bars can be drawn: stdout and the console they draw on (stderr) are terminals.
    Elsewhere rich would show each bar only once it is finished."""
    return sys.stdout.isatty() and console.is_terminal


def run_hooks(cfg: RunConfig) -> FanOut:
    """What a run from the command line reports to: bars on a terminal, else a plain line every
    ``cfg.log_every`` steps; and TensorBoard under OUT/tensorboard with ``--log tensorboard``. Made before
    the run folder is touched: ValueError when tensorboard is asked for and missing."""
    display = ProgressHooks() if on_terminal() else LogHooks(cfg.log_every)
    if cfg.log == "tensorboard":
        return FanOut(display, TensorBoardHooks(Path(cfg.out) / "tensorboard"))
    return FanOut(display)


class SweepHooks:
    """The hooks of each point of a sweep (``run_sweep(hooks_for=...)``): plain lines every
    ``log_every`` steps off a terminal (on one, the sweep's own line per point is all it shows), and
    TensorBoard in each point's run folder with ``--log tensorboard``. A context manager: leaving it
    closes every point's event files. ValueError when tensorboard is asked for and missing."""

    def __init__(self, cfg: SweepConfig, study: Path) -> None:
        self.cfg, self.study = cfg, study
        self.display = None if on_terminal() else LogHooks(cfg.base.log_every)
        if cfg.base.log == "tensorboard":
            summary_writer_class()  # fails now, before the study starts, when tensorboard is missing
        self._stack = ExitStack()

    def __enter__(self) -> SweepHooks:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def __call__(self, point: SweepPoint) -> FanOut:
        from rdistill.sweep import sweep_point_config

        hooks = [self.display] if self.display is not None else []
        if self.cfg.base.log == "tensorboard":
            out = Path(sweep_point_config(self.cfg, point, self.study).out)
            hooks.append(self._stack.enter_context(TensorBoardHooks(out / "tensorboard")))
        return FanOut(*hooks)


def summary_tables(results: RunResults) -> list[Table]:
    """Training (compute) and evaluation (accuracy) summaries, one row per arm."""
    train = Table(title="training FLOPs: exact (useful), executed, paper formula, 6ND")
    for col in ("arm", "steps", "samples", "tokens", "exact", "executed", "paper", "6ND", "of budget", "MFU", "lr",
                "dtype", "peak mem"):
        train.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for a in results.arms:
        fl = a.flops
        status = "" if a.status == "complete" else f" ({a.status})"
        train.add_row(
            a.name + status, "-" if a.steps is None else str(a.steps), "-" if a.samples is None else str(a.samples),
            sci(a.train_tokens), sci(fl.exact), sci(fl.executed), sci(fl.paper), sci(fl.six_nd), pct(a.budget_used),
            "unknown" if a.mfu is None else pct(a.mfu), " then ".join(f"{x:.2g}" for x in (a.lr_phases or [a.lr])),
            (a.dtype or "-") + ("" if a.recompute in (None, "none") else f", recompute {a.recompute}"),
            "-" if a.peak_memory is None else f"{a.peak_memory / 2**30:.2f} GiB",
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
