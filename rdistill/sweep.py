"""Sweeps: a grid of students x arms x budgets, run one after another into one study folder.

Each grid point is its own run folder, ``STUDY/<model>/<budget>/<arm>/``, made by rdistill.run with a
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

import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rdistill.io import write_json_atomic
from rdistill.run import RunConfig, RunHooks, parse_arms, run


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
    names = parse_arms(arms)
    return [SweepPoint(m, b, a) for b in sorted(budgets) for m in models for a in names]


def point_status(folder: Path) -> str | None:
    """The status in a point's results.json, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((folder / "results.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def run_sweep(
    study: str | Path,
    points: list[SweepPoint],
    base: RunConfig,
    *,
    hooks_for: Callable[[SweepPoint], RunHooks] | None = None,
    on_point: Callable[[SweepPoint, str, int, int], None] | None = None,
) -> dict:
    """Run every point not yet complete. ``base`` gives every setting but model, arm, budget and out.

    ``on_point(point, status, index, total)`` is told "skipped", "started", "complete" or "failed".
    """
    if base.train.budget_flops is None:
        raise ValueError("a sweep trains to FLOP budgets; give --budgets")
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
        cfg = replace(
            base,
            out=str(folder),
            model=point.model,
            arms=(point.arm,),
            train=replace(base.train, budget_flops=point.budget),
        )
        if on_point:
            on_point(point, "started", i, len(points))
        t0 = time.perf_counter()
        try:
            run(cfg, hooks_for(point) if hooks_for else None)
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
