"""TensorBoard logging of a run (``--log tensorboard``): RunHooks that write each arm's scalars.

One event folder per arm, ROOT/<arm> (a run logs to OUT/tensorboard), so that TensorBoard shows the
arms as runs side by side (``tensorboard --logdir OUT/tensorboard``; for a sweep, ``--logdir STUDY``
finds every point's). Every optimizer step writes, at that step:

    train/loss                   the step's loss
    train/lr                     its learning rate
    train/flops_exact            FLOPs spent so far, the ledger's exact (useful) count
    train/flops_executed         ... and its executed count
    train/budget_fraction        share of the budget (or of the samples) spent
    train/tokens_per_second      the step's tokens over its time
    train/mfu                    exact FLOP/s over the device peak (absent when the peak is unknown)
    train/peak_memory_gib        peak memory (only when the step record carries one)

and each arm, at its last step: ``eval/accuracy`` and ``eval/accuracy/<family>`` on the held-out set.
TensorBoard stores scalars as 32-bit floats: the FLOP counts are exact in metrics.jsonl, not here.

tensorboard is an optional dependency (``pip install rdistill[tensorboard]``); it is imported when a
``TensorBoardHooks`` is made, which raises ValueError, before anything is written, when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdistill.flops.ledger import FlopLedger
    from rdistill.results import ArmResult
    from rdistill.steps import StepRecord

MISSING = "--log tensorboard needs the tensorboard package, which is not installed: pip install rdistill[tensorboard]"
FLUSH_SECONDS = 10
"""How often the event files are written out while an arm trains (TensorBoard's default is 2 minutes)."""


def summary_writer_class() -> type:
    """torch's SummaryWriter; ValueError saying what to install when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError(MISSING) from e
    return SummaryWriter


class TensorBoardHooks:
    """RunHooks writing every step's scalars and each arm's accuracy under ``root``/<arm> (see the module
    docstring). Use it as a context manager, or call ``close``, so that an arm cut short by an error or
    Ctrl-C still has its last steps written; a finished arm's writer is closed as the arm finishes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._writer_class = summary_writer_class()
        self._writers: dict = {}

    def __enter__(self) -> TensorBoardHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Write out and close every arm's event file."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def arm_started(self, arm: str, budget: float, unit: str) -> None:
        self._writers[arm] = self._writer_class(log_dir=str(self.root / arm), flush_secs=FLUSH_SECONDS)

    def step(self, arm: str, rec: StepRecord, ledger: FlopLedger) -> None:
        scalars = {
            "train/loss": rec.loss,
            "train/lr": rec.lr,
            "train/flops_exact": rec.flops["exact"],
            "train/flops_executed": rec.flops["executed"],
            "train/budget_fraction": rec.budget_fraction,
            "train/tokens_per_second": rec.tokens / rec.seconds if rec.seconds > 0 else None,
            "train/mfu": rec.mfu,
            "train/peak_memory_gib": _gib(getattr(rec, "peak_memory", None)),
        }
        writer = self._writers[arm]
        for tag, value in scalars.items():
            if value is not None:
                writer.add_scalar(tag, value, rec.step)

    def eval_started(self, arm: str, n: int) -> None: ...

    def eval_progress(self, arm: str, done: int) -> None: ...

    def arm_finished(self, arm: str, result: ArmResult) -> None:
        writer = self._writers.pop(arm)
        if result.eval is not None:
            step = result.steps or 0
            if result.eval.accuracy is not None:
                writer.add_scalar("eval/accuracy", result.eval.accuracy, step)
            for family, accuracy in sorted(result.eval.by_family.items()):
                if accuracy is not None:
                    writer.add_scalar(f"eval/accuracy/{family}", accuracy, step)
        writer.close()

    def message(self, text: str) -> None: ...


def _gib(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else n_bytes / 2**30
