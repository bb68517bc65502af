"""OUT/eval.json, the record ``rdistill eval`` writes for one checkpoint's evaluation.

Kept apart from rdistill.external_eval (which loads models and generates) so that the report reads it
without importing torch or the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdistill.io import write_json_atomic
from rdistill.results import ArmParameters, DataSummary, EvalResult, FlopTotals
from rdistill.typed import read_versioned, to_dict

EVAL_FILE = "eval.json"
EVAL_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or an eval folder that cannot be used as given; the message says what to do."""


@dataclass
class CheckpointEval:
    """OUT/eval.json: one checkpoint's evaluation."""

    model: str
    """The checkpoint folder."""
    arm: str
    """The name the report gives this point (a run's student: its arm)."""
    data: DataSummary
    parameters: ArmParameters
    eval: EvalResult
    environment: dict[str, Any]
    started: str
    finished: str
    seconds: float
    dtype: str
    system_prompt: str | None = None
    origin: str | None = None
    """The results.json of the run whose student this is; None for any other checkpoint."""
    train_flops: FlopTotals | None = None
    """The training FLOPs on record (a run's student); None: unknown."""
    schema_version: int = EVAL_VERSION

    def write(self, path: Path) -> None:
        write_json_atomic(path, to_dict(self))

    @classmethod
    def read(cls, path: str | Path) -> CheckpointEval:
        return read_versioned(cls, path, EVAL_VERSION, CheckpointError)
