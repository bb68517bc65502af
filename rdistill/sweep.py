"""Sweeps: a grid of students x arms x budgets, run one after another into one study folder.

A sweep is a ``rdistill.config.SweepConfig``. Each grid point is its own run folder, ``STUDY/<model>/<budget>/<arm>/``, made by rdistill.run with a
single arm, so every point is resumable on its own:

- a point whose results.json says "complete" is skipped (an interrupted sweep resumes where it stopped);
- any other point found on disk (interrupted, failed, half-written) is cleared and run again;
- a point that fails is recorded (error and traceback tail) in ``STUDY/sweep.json`` and the sweep goes
  on with the next; Ctrl-C stops the sweep after recording the point as interrupted.

``STUDY/sweep.json`` (rewritten atomically after every point) lists every point with its status,
seconds and folder. Every point of a (model, budget) pair starts from the same initial student and
sees the same data, because the seed is shared.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rdistill.config import RunConfig, SweepConfig
from rdistill.data.curriculum import parse_arms
from rdistill.io import write_json_atomic
from rdistill.results import ResultsError, RunResults
from rdistill.run import RunHooks, run


@dataclass(frozen=True)
class SweepPoint:
    model: str
    budget: float
    arm: str

    def folder(self, study: Path) -> Path:
        model = Path(self.model).name if Path(self.model).is_dir() else self.model
        return study / model / f"{self.budget:.2e}".replace("+", "") / self.arm


def grid(models: tuple[str, ...], arms: tuple[str, ...], budgets: tuple[float, ...]) -> list[SweepPoint]:
    """All grid points, cheapest budget first, so a partial sweep already spans the sizes and arms."""
    if not models or not budgets:
        raise ValueError("a sweep needs at least one model and one budget")
    names = [a.name for a in parse_arms(arms)]
    return [SweepPoint(m, b, a) for b in sorted(budgets) for m in models for a in names]


def point_status(folder: Path) -> str | None:
    """The status in a point's results.json, or None when there is none (or it cannot be read)."""
    try:
        return RunResults.read(folder / "results.json").status
    except ResultsError:
        return None


def point_config(base: RunConfig, point: SweepPoint, study: Path) -> RunConfig:
    """The one-arm run of ``point``: ``base`` with the point's folder, student, arm and budget."""
    return replace(
        base,
        out=str(point.folder(study)),
        model=replace(base.model, name=point.model),
        arms=(point.arm,),
        train=replace(base.train, budget_flops=point.budget, samples=None),
    )


def run_sweep(
    cfg: SweepConfig,
    study: str | Path,
    *,
    hooks_for: Callable[[SweepPoint], RunHooks] | None = None,
    on_point: Callable[[SweepPoint, str, int, int], None] | None = None,
) -> dict:
    """Run every point of ``cfg``'s grid that is not yet complete into the folder ``study``.

    ``on_point(point, status, index, total)`` is told "skipped", "started", "complete" or "failed".
    """
    points = grid(cfg.models, cfg.arms, cfg.budgets)
    base = cfg.base
    study = Path(study)
    study.mkdir(parents=True, exist_ok=True)
    manifest = {"points": []}
    for i, point in enumerate(points):
        folder = point.folder(study)
        entry = {"model": point.model, "arm": point.arm, "budget": point.budget, "dir": str(folder.relative_to(study))}
        manifest["points"].append(entry)
        if point_status(folder) == "complete":
            entry["status"] = "complete"
            entry["skipped"] = True
            if on_point:
                on_point(point, "skipped", i, len(points))
            continue
        if folder.exists():
            shutil.rmtree(folder)
        if on_point:
            on_point(point, "started", i, len(points))
        t0 = time.perf_counter()
        try:
            run(point_config(base, point, study), hooks_for(point) if hooks_for else None)
            entry["status"] = "complete"
        except KeyboardInterrupt:
            entry["status"] = "interrupted"
            write_json_atomic(study / "sweep.json", manifest)
            raise
        except Exception as exc:  # a failed point is recorded and the sweep goes on
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-2000:]
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(study / "sweep.json", manifest)
        if on_point:
            on_point(point, entry["status"], i, len(points))
    write_json_atomic(study / "sweep.json", manifest)
    return manifest
