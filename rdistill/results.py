"""results.json: the typed, versioned record of a run, and its one reader and writer.

``RunResults`` is what ``rdistill.run`` writes after every arm and what the summary, ``sweep`` and
``analysis`` read back: a status, the full ``RunConfig``, what the data held, the environment, and
one ``ArmResult`` per arm (its FLOP counts, training outcome and, once evaluated, its ``EvalResult``).

``SCHEMA_VERSION`` is written into every file. Reading checks every key against these types
(rdistill.typed): a malformed file, a file of a newer schema or one with no version at all is a
``ResultsError`` that names the file and the key, never a KeyError in a reader.

A live run records its pid, host and a heartbeat, so that a run killed without a chance to write
(SIGKILL, a lost machine) reads as "crashed" (``live_status``) rather than "running" forever.

Accuracies are fractions in [0, 1]; FLOPs are counts (ints, stored as JSON numbers); seconds are
wall-clock seconds.
"""

from __future__ import annotations

import calendar
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rdistill.config import RunConfig
from rdistill.io import pid_alive, write_json_atomic
from rdistill.typed import SchemaError, from_dict, to_dict

SCHEMA_VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 600.0

RunStatus = Literal["running", "complete", "interrupted", "failed"]
ArmStatus = Literal["running", "complete", "interrupted", "failed"]


class ResultsError(ValueError):
    """A results.json that cannot be read: missing, not JSON, malformed, or of a newer schema."""


@dataclass
class InferenceFlops:
    """Mean generation FLOPs per held-out query."""

    exact: float | None
    """What generation with a KV cache executes usefully (rdistill.flops.ledger.generation_flops)."""
    paper: float | None
    """The paper's prefill + decode formula."""


@dataclass
class EvalResult:
    """An arm's held-out evaluation, scored by rdistill.scoring's rules: the last \\boxed{} answer after
    ``</think>`` (the whole output in IFT mode), math-aware equivalence, option letters for multiple choice.

    Fields after ``max_new_tokens`` came with those rules; a file from before has them None."""

    accuracy: float | None
    by_family: dict[str, float | None]
    chance: dict[str, float | None]
    """Chance accuracy per family as the data source declares it (None: unknown)."""
    n: int
    n_by_family: dict[str, int]
    mean_output_tokens: float | None
    mean_output_tokens_correct: float | None
    mean_output_tokens_wrong: float | None
    mean_prompt_tokens: float | None
    inference_flops_per_query: InferenceFlops
    max_new_tokens: int | None = None
    reasoning_mode: float | None = None
    """Share of outputs in reasoning mode (they start with ``<think>``, or continue one the template opened)."""
    reasoning_mode_by_family: dict[str, float | None] | None = None
    no_answer: int | None = None
    """Outputs with nothing to score: no \\boxed{} in the answer part, or a think block never closed."""
    no_answer_by_family: dict[str, int] | None = None
    truncated: int | None = None
    """Outputs cut short: a think block never closed, or generation hit max_new_tokens without EOS."""
    truncated_by_family: dict[str, int] | None = None
    unclosed_think: int | None = None
    """Outputs whose think block never closed (scored as no answer)."""
    hit_max_new_tokens: int | None = None
    """Outputs that reached max_new_tokens without EOS."""
    scoring: str | None = None
    """The scoring rules' version (rdistill.scoring.SCORING); None: the earlier rules (the last
    \\boxed{} anywhere in the output, exact match)."""


@dataclass
class FlopTotals:
    """An arm's training FLOPs by every count, and the ledger's snapshot per component."""

    exact: int | None = None
    executed: int | None = None
    paper: int | None = None
    six_nd: int | None = None
    by_component: dict[str, Any] | None = None
    """rdistill.flops.ledger.FlopLedger.to_dict()."""


@dataclass
class ArmParameters:
    total: int
    non_embedding: int
    layers: int
    hidden: int


@dataclass
class ArmResult:
    """One arm of a run: what was asked, what training spent and did, and its evaluation."""

    name: str
    reasoning_share: float
    schedule: Literal["mixed", "sequential"]
    model: str
    parameters: ArmParameters
    budget_flops: float | None
    budget_kind: str
    samples_requested: int | None
    lr: float
    flops: FlopTotals
    status: ArmStatus = "running"
    error: str | None = None
    train_tokens: int | None = None
    loss_tokens: int | None = None
    steps: int | None = None
    samples: int | None = None
    epochs: float | None = None
    """Samples trained on / training examples (an example is trained on in the arm's format)."""
    train_seconds: float | None = None
    final_loss: float | None = None
    stopped_by: Literal["budget", "samples", "data"] | None = None
    step_seconds: float | None = None
    peak_flops: float | None = None
    mfu: float | None = None
    hfu: float | None = None
    budget_used: float | None = None
    """Fraction of the FLOP budget spent, in the budget's own count."""
    dtype: str | None = None
    """The student's weight and activation dtype (fp32 master weights and optimizer state under bf16/fp16)."""
    recompute: str | None = None
    peak_memory: int | None = None
    """The largest training step's peak memory, bytes (CUDA max allocated, or peak resident set on CPU)."""
    resumed_from_step: int | None = None
    """Set when the arm was resumed from a checkpoint: the step it went on from."""
    lr_phases: list[float] | None = None
    """The peak learning rate of each phase ([IFT, reasoning] for a sequential arm); ``lr`` is the first."""
    lr_schedule: dict[str, Any] | None = None
    """The schedule the arm trained with (rdistill.schedule.Schedule: steps, warmup, decay, peaks, phase starts)."""
    batch_samples: int | None = None
    """Samples per optimizer step (0: token-capacity steps of packs_per_step rows)."""
    eval: EvalResult | None = None


@dataclass
class TokenStats:
    mean_doc: float
    mean_answer: float
    max_doc: int


@dataclass
class DataSummary:
    """What the run trained and evaluated on."""

    source: str
    train: int
    eval: int
    difficulty: int | None = None
    rows_read: int | None = None
    skipped: int | None = None
    removed_overlap: int | None = None
    tokens: dict[str, TokenStats] | None = None
    reasoning_over_ift_answer_tokens: float | None = None
    unknown_token_share: float | None = None
    """Share of the training tokens that are the tokenizer's <unk>."""
    over_capacity: dict[str, int] | None = None
    """Documents longer than the pack capacity, per answer format the arms use (truncated or dropped
    as --overflow says)."""
    overflow: str | None = None
    digest: str | None = None
    """rdistill.data.schema.digest of the training rows then the held-out rows: a run resumes only on
    the same data."""


@dataclass
class RunResults:
    """Everything results.json holds."""

    config: RunConfig
    data: DataSummary
    environment: dict[str, Any]
    started: str
    status: RunStatus = "running"
    finished: str | None = None
    arms: list[ArmResult] = field(default_factory=list)
    fingerprint: str | None = None
    """RunConfig.fingerprint() of the config as asked for (``config`` holds it with automatic values,
    such as the pack capacity, resolved): what identifies the run, e.g. a sweep point."""
    pid: int | None = None
    """The process that writes this file while the run is live."""
    host: str | None = None
    heartbeat: str | None = None
    """When (UTC) a live run last wrote this file; it does so at least every HEARTBEAT_SECONDS while training."""
    schema_version: int = SCHEMA_VERSION

    def live_status(self, now: float | None = None) -> str:
        """``status``, except that a run that says "running" but whose process is gone is "crashed":
        its pid is dead on this host, or (another host) its heartbeat is older than STALE_SECONDS."""
        if self.status != "running":
            return self.status
        if self.host == socket.gethostname() and self.pid is not None:
            return "running" if pid_alive(self.pid) else "crashed"
        if self.heartbeat is None:
            return "crashed"
        age = (now if now is not None else time.time()) - calendar.timegm(time.strptime(self.heartbeat, TIME_FORMAT))
        return "running" if age < STALE_SECONDS else "crashed"

    def beat(self) -> None:
        """Mark the file as written now by this process."""
        self.pid, self.host, self.heartbeat = os.getpid(), socket.gethostname(), time.strftime(TIME_FORMAT, time.gmtime())

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def write(self, path: str | Path) -> None:
        """Write atomically (a reader never sees half a file)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> RunResults:
        if not isinstance(data, dict):
            raise ResultsError(f"{source}: expected a JSON object, found {type(data).__name__}")
        version = data.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ResultsError(
                f"{source}: no schema_version: not a results.json of this rdistill (older files are not read; "
                "rerun the run)"
            )
        if version > SCHEMA_VERSION:
            raise ResultsError(
                f"{source}: schema version {version} is newer than this rdistill reads ({SCHEMA_VERSION}); "
                "upgrade rdistill"
            )
        try:
            return from_dict(cls, data)
        except SchemaError as e:
            raise ResultsError(f"{source}: {e}") from e

    @classmethod
    def read(cls, path: str | Path) -> RunResults:
        """Read and validate a results.json; ResultsError naming the file on any problem."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ResultsError(f"{p}: cannot read ({e.strerror or e})") from e
        except ValueError as e:
            raise ResultsError(f"{p}: not valid JSON ({e})") from e
        return cls.from_dict(data, str(p))

    def arm(self, name: str) -> ArmResult:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"no arm {name!r} in these results; arms: {', '.join(a.name for a in self.arms)}")
