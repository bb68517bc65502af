"""A study's points: every evaluated arm of every run under a folder, read through ``RunResults``.

A study folder holds run folders, each with the ``results.json`` that ``rdistill.run`` writes. Every
complete, evaluated arm is one :class:`Point`; every other arm, and every file that cannot be read, is
a :class:`Skipped` with the reason, so a report can count and list them.

A point's ``train_flops`` is the training FLOP count chosen as the study's x-axis (``scan(x=...)``:
the exact count by default, or the paper's formula, 6ND, or what was executed); all its counts are kept
in ``flops_by_count``. When the arm's ``generations.jsonl`` is there and agrees with results.json, the
point carries its per-item scores (:mod:`.items`), which the statistics pair across arms.

A folder written by ``rdistill eval`` for a checkpoint with no training cost on record (a released
student, a base model: eval.json and no results.json) is a *checkpoint*: a Point with ``train_flops``
None, kept in ``Study.checkpoints``, placed on the inference-FLOPs axis only and never fitted.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rdistill.analysis.items import GENERATIONS, ItemScores, ItemsError, check_items, read_items
from rdistill.data.curriculum import arm_sort_key
from rdistill.dispatch import point_state, read_grid
from rdistill.eval_record import EVAL_FILE, CheckpointError, CheckpointEval
from rdistill.results import ArmResult, EvalResult, ResultsError, RunResults

OVERALL = "overall"
FULL_BUDGET = 0.99
REPORT_DIR = "report"
X_COUNTS = {"exact": "exact", "paper": "paper", "6nd": "six_nd", "executed": "executed"}
"""``--x`` names of the training-FLOP counts, and the results.json field of each."""
X_LABELS = {"exact": "exact count", "paper": "the paper's formula", "6nd": "6ND", "executed": "executed count"}


class StudyError(ValueError):
    """The study folder cannot be reported on (missing, or it holds no results.json)."""


@dataclass(frozen=True, eq=False)
class Point:
    """One evaluated arm of one run: a (student, arm, budget) configuration and what it measured.

    Accuracies are fractions in [0, 1]. ``variant`` is empty unless the same (model, arm) was run with
    different learning rates in the study; then it names the learning rate, so that those runs form
    separate series instead of being mixed into one curve. ``budget_used`` is the fraction of the
    budget spent (in the ``budget_kind`` count); a run stopped early by its data is below 1. Points
    compare by identity: two runs of one configuration are two points, even with equal numbers.
    """

    model: str
    params: int | None
    arm: str
    budget: float | None
    train_flops: float | None
    """None only for a checkpoint evaluated by ``rdistill eval`` with no training cost on record."""
    inference_flops_per_query: float | None
    accuracy: float
    by_family: dict[str, float]
    chance: dict[str, float]
    n: int
    n_by_family: dict[str, int]
    mean_output_tokens: float | None
    mean_output_tokens_correct: float | None
    mean_output_tokens_wrong: float | None
    source: Path
    lr: float | None = None
    budget_kind: str | None = None
    budget_used: float | None = None
    stopped_by: str | None = None
    variant: str = ""
    seed: int | None = None
    epochs: float | None = None
    """Passes over the training examples the arm made (samples trained on / training examples)."""
    flops_by_count: dict[str, float] = field(default_factory=dict)
    """Training FLOPs by every count recorded, keyed by ``--x`` name (exact, paper, 6nd, executed)."""
    x_count: str = "exact"
    """Which count ``train_flops`` is."""
    items: ItemScores | None = None
    """Per-item scores from generations.jsonl, when present and consistent with results.json."""
    reasoning_mode: dict[str, float] = field(default_factory=dict)
    """Share of outputs in reasoning mode (they open a think block), "overall" and per family; empty
    for results scored before that was recorded."""
    no_answer: int | None = None
    truncated: int | None = None

    @property
    def model_name(self) -> str:
        """The preset name, or a local checkpoint's folder name."""
        return Path(self.model).name if ("/" in self.model or os.sep in self.model) else self.model

    @property
    def label(self) -> str:
        """``arm-model`` as in the paper's phrasing ("ift-small"), plus the variant if any."""
        base = f"{self.arm}-{self.model_name}"
        return f"{base} ({self.variant})" if self.variant else base

    @property
    def series_key(self) -> tuple[str, str, str]:
        """Points that share this key form one accuracy-against-budget curve."""
        return (self.model, self.arm, self.variant)

    @property
    def spent_budget(self) -> bool:
        """Whether a budgeted run spent (nearly) all of its budget; one stopped early is not matched compute."""
        return self.budget_used is None or self.budget_used >= FULL_BUDGET

    def metric(self, name: str) -> float | None:
        """Accuracy on ``name``: ``"overall"`` or a task family; None if the family was not evaluated."""
        return self.accuracy if name == OVERALL else self.by_family.get(name)

    def metric_n(self, name: str) -> int:
        """How many held-out examples the accuracy on ``name`` was measured on."""
        return self.n if name == OVERALL else int(self.n_by_family.get(name, 0))

    def metric_items(self, name: str) -> tuple[tuple[str, ...], np.ndarray] | None:
        """(item keys, 0/1 scores as floats) of the items ``name`` is measured on; None without items."""
        return None if self.items is None else self.items.select(name, OVERALL)

    def sort_key(self) -> tuple:
        """A total, input-order-independent order: student size, model, arm, variant, budget, seed, source."""
        return (
            self.params if self.params is not None else -1,
            self.model,
            arm_sort_key(self.arm),
            self.variant,
            self.budget if self.budget is not None else -1.0,
            self.seed if self.seed is not None else -1,
            self.train_flops if self.train_flops is not None else -1.0,
            str(self.source),
        )


@dataclass(frozen=True)
class Skipped:
    """An arm (or a whole results file) that produced no point, and why."""

    source: Path
    model: str | None
    arm: str | None
    budget: float | None
    status: str
    reason: str


@dataclass
class Study:
    """Everything read from a study folder."""

    root: Path
    points: list[Point]
    skipped: list[Skipped]
    run_status: dict[Path, str] = field(default_factory=dict)
    x_count: str = "exact"
    notes: list[str] = field(default_factory=list)
    """Per-item files that could not be used (the points are kept, without item-level pairing)."""
    checkpoints: list[Point] = field(default_factory=list)
    """Checkpoints evaluated with no training FLOPs on record (eval.json without results.json)."""
    grid: dict[str, int] = field(default_factory=dict)
    """How many points of the grids dispatched into the study (rdistill.dispatch.read_grid) are in each
    state (complete, missing, running, ...); empty when the study records no grid."""
    grid_notes: list[str] = field(default_factory=list)
    """Grid records that could not be read."""

    @property
    def metrics(self) -> list[str]:
        """``"overall"`` then every task family seen, sorted."""
        fams = sorted({f for p in (*self.points, *self.checkpoints) for f in p.by_family})
        return [OVERALL, *fams]


def budget_key(budget: float) -> float:
    """A budget rounded to 6 significant digits, so budgets written from one number group together."""
    return float(f"{budget:.6g}")


def arms_in(points: Iterable[Point]) -> list[str]:
    """The arms of these points, each once, in table order (``rdistill.data.curriculum.arm_sort_key``)."""
    return sorted({p.arm for p in points}, key=arm_sort_key)


def reference_arm(arms: Sequence[str]) -> str | None:
    """The arm others are compared with: ``ift`` when present, else the first; None when there is none."""
    return "ift" if "ift" in arms else (arms[0] if arms else None)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _items_for(arm: str, ev: EvalResult, source: Path, notes: list[str]) -> ItemScores | None:
    """The arm's per-item scores, or None (with a note when the file is there but unusable)."""
    path = source.parent / arm / GENERATIONS
    if not path.is_file():
        return None
    try:
        items = read_items(path)
        by_family = {f: v for f, v in ev.by_family.items() if v is not None}
        check_items(items, ev.n, ev.accuracy, by_family, path)
    except ItemsError as e:
        notes.append(f"{e}; this point is compared without item-level pairing")
        return None
    return items


def _point_from_arm(arm: ArmResult, results: RunResults, source: Path, x: str, notes: list[str]) -> Point | Skipped:
    model = arm.model or results.config.model.name or "?"
    budget = _finite(arm.budget_flops)

    def skip(reason: str) -> Skipped:
        return Skipped(source, model, arm.name or "?", budget, arm.status, reason)

    if arm.status != "complete":
        return skip(arm.error or "no reason recorded")
    ev = arm.eval
    if ev is None:
        return skip("trained but not evaluated (no eval block)")
    accuracy = _finite(ev.accuracy)
    if accuracy is None:
        return skip("evaluation has no accuracy (empty held-out set?)")
    counts = {name: v for name, attr in X_COUNTS.items()
              if (v := _finite(getattr(arm.flops, attr))) is not None and v > 0}
    train = counts.get(x)
    if train is None:
        return skip(f"no {x} training FLOP count (the x-axis asked for)")
    return _evaluated(
        ev, model=model, params=arm.parameters.total, arm=arm.name, source=source, notes=notes, train=train,
        budget=budget, lr=_finite(arm.lr), budget_kind=arm.budget_kind if budget is not None else None,
        budget_used=_finite(arm.budget_used), stopped_by=arm.stopped_by, seed=results.config.seed,
        epochs=_finite(arm.epochs), flops_by_count=counts, x_count=x)


def _evaluated(ev: EvalResult, *, model: str, params: int | None, arm: str, source: Path, notes: list[str],
               train: float | None, **extra) -> Point:
    """A Point from an evaluation block; ``extra`` are the training-side fields a checkpoint lacks."""
    inference = _finite(ev.inference_flops_per_query.exact)
    by_family = {}
    for family, value in ev.by_family.items():
        if (acc := _finite(value)) is not None:
            by_family[family] = acc
    n_by_family = dict(ev.n_by_family)
    if not n_by_family and by_family and ev.n:
        n_by_family = {f: ev.n // len(by_family) for f in by_family}
    return Point(
        model=model,
        params=params,
        arm=arm,
        train_flops=train,
        inference_flops_per_query=inference if inference is not None and inference > 0 else None,
        accuracy=float(ev.accuracy),
        by_family=by_family,
        chance={f: float(c or 0.0) for f, c in ev.chance.items()},
        n=ev.n,
        n_by_family=n_by_family,
        mean_output_tokens=_finite(ev.mean_output_tokens),
        mean_output_tokens_correct=_finite(ev.mean_output_tokens_correct),
        mean_output_tokens_wrong=_finite(ev.mean_output_tokens_wrong),
        source=source,
        reasoning_mode=({"overall": ev.reasoning_mode, **{f: v for f, v in (ev.reasoning_mode_by_family or {}).items()
                                                            if v is not None}}
                        if ev.reasoning_mode is not None else {}),
        no_answer=ev.no_answer,
        truncated=ev.truncated,
        items=_items_for(arm, ev, source, notes),
        **extra,
    )


def _checkpoint(path: Path, notes: list[str]) -> Point | Skipped:
    """The Point of an eval.json with no results.json beside it, or why there is none."""
    try:
        record = CheckpointEval.read(path)
    except CheckpointError as exc:
        return Skipped(path, None, None, None, "unreadable", str(exc))
    if _finite(record.eval.accuracy) is None:
        return Skipped(path, record.model, record.arm, None, "complete", "evaluation has no accuracy (empty data?)")
    model = Path(record.model).name or record.model
    return _evaluated(record.eval, model=model, params=record.parameters.total, arm=record.arm, source=path,
                      notes=notes, train=None, budget=None)


def _with_variants(points: list[Point]) -> list[Point]:
    """Name the learning rate in each point whose (model, arm) was run with several learning rates."""
    lrs: dict[tuple[str, str], set] = defaultdict(set)
    for p in points:
        lrs[(p.model, p.arm)].add(p.lr)
    out = []
    for p in points:
        if len(lrs[(p.model, p.arm)]) > 1:
            variant = f"lr={p.lr:g}" if p.lr is not None else "lr=?"
            p = replace(p, variant=variant)
        out.append(p)
    return out


def scan(study_dir: str | Path, *, x: str = "exact") -> Study:
    """Read every ``results.json`` under ``study_dir`` (recursively): points, skipped arms, run statuses.

    Every ``eval.json`` with no results.json beside it (``rdistill eval`` of a checkpoint with no
    training cost on record) is read into ``Study.checkpoints``. ``x`` is the training-FLOP count the points' ``train_flops`` holds (a key of ``X_COUNTS``); an arm
    without that count is skipped with the reason. Files are read by ``RunResults.read``. Arms that are not complete, or not evaluated, are not points
    but are kept in ``skipped`` so the report can count and list them. A file that cannot be read
    (not JSON, malformed, of a newer schema, or without a schema version) is skipped the same way,
    with status "unreadable" and the reader's message, which names the file and the key.

    When the study records the grids dispatched into it (``STUDY/grids/``, a full sweep's sweep.json;
    rdistill.dispatch), every point of them that is not complete (missing, running, interrupted,
    crashed, failed) is in ``skipped`` with its folder, and no arm of its run is a point (none is
    fitted); ``Study.grid`` counts the points by state. Such a study reads without any results.json.
    """
    if x not in X_COUNTS:
        raise StudyError(f"unknown training-FLOP count {x!r}; choose one of {', '.join(X_COUNTS)}")
    root = Path(study_dir)
    if not root.is_dir():
        raise StudyError(f"study folder {root} does not exist or is not a folder")
    def found(name: str) -> list[Path]:
        return sorted(p for p in root.rglob(name) if REPORT_DIR not in p.relative_to(root).parts[:1])

    files = found("results.json")
    evals = [p for p in found(EVAL_FILE) if not (p.parent / "results.json").is_file()]
    grid, grid_notes = read_grid(root)
    if not files and not evals and not grid:
        raise StudyError(
            f"no results.json or {EVAL_FILE} found under {root}; a study folder holds run folders, each written "
            "by 'rdistill train' or 'rdistill sweep', and may hold checkpoint evaluations by 'rdistill eval'"
        )
    points: list[Point] = []
    skipped: list[Skipped] = []
    run_status: dict[Path, str] = {}
    notes: list[str] = []
    for path in files:
        try:
            results = RunResults.read(path)
        except ResultsError as exc:
            skipped.append(Skipped(path, None, None, None, "unreadable", str(exc)))
            run_status[path] = "unreadable"
            continue
        run_status[path] = results.live_status()
        for arm in results.arms:
            got = _point_from_arm(arm, results, path, x, notes)
            (points if isinstance(got, Point) else skipped).append(got)
    checkpoints: list[Point] = []
    for path in evals:
        got = _checkpoint(path, notes)
        (checkpoints if isinstance(got, Point) else skipped).append(got)
    states: dict[str, int] = defaultdict(int)
    for entry in grid:
        status, detail = point_state(root / entry.dir, entry.id)
        states[status] += 1
        if status == "complete":
            continue
        source = root / entry.dir / "results.json"  # its arms are no points until its run is complete
        held = [p for p in points if p.source == source]
        points = [p for p in points if p.source != source]
        skipped += [Skipped(source, p.model, p.arm, p.budget, status, f"its run is {status}: {detail}") for p in held]
        if not any(s.source == source for s in skipped):
            skipped.append(Skipped(source, entry.model, entry.arm, entry.budget, status, detail))
    points = sorted(_with_variants(points), key=Point.sort_key)
    return Study(root, points, skipped, run_status, x, notes, sorted(checkpoints, key=Point.sort_key), dict(states),
                 grid_notes)


def collect(study_dir: str | Path, *, x: str = "exact") -> list[Point]:
    """One :class:`Point` per evaluated, complete (run, arm) under ``study_dir``, in a stable order.

    Raises :class:`StudyError` if the folder holds no results.json. Use :func:`scan` to also get the
    arms that were skipped (failed, interrupted, not evaluated).
    """
    return scan(study_dir, x=x).points
