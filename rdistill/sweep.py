"""Sweeps: a grid of students x arms x budgets, run one after another into one study folder.

A sweep is a ``rdistill.config.SweepConfig``. Each grid point is its own one-arm run, made by
rdistill.run in ``STUDY/<model>/<budget>/<arm>-<fingerprint>/``: the fingerprint hashes every setting
of the point's run (rdistill.config.RunConfig.fingerprint), so a point is identified by what it runs,
not by its folder name; the model part is the checkpoint folder's name made safe (no path escapes
the study). So every point is resumable on its own:

- a point whose results.json says "complete" for the same settings is skipped (an interrupted sweep
  resumes where it stopped; a rerun with another --lr, --seed or --difficulty runs new points);
- a point that was interrupted or crashed with the same settings after writing a checkpoint goes on
  from it (rdistill.run's resume: the same result as an uninterrupted point);
- any other point found on disk (failed, half-written, no checkpoint) is cleared and run again;
- a point that fails is recorded (error and traceback tail) in ``STUDY/sweep.json`` and the sweep goes
  on with the next; Ctrl-C stops the sweep after recording the point as interrupted.

``STUDY/sweep.json`` (rewritten atomically after every point) lists every point with its status,
seconds and folder. ``STUDY/.sweep.lock`` holds the live sweep's pid and host: a second sweep on the
same study refuses to start while the first runs, and takes over a lock its dead owner left. Every point of a (model, budget) pair starts from the same initial student and
sees the same data, because the seed is shared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from rdistill import checkpoint
from rdistill.config import RunConfig, SweepConfig
from rdistill.data.curriculum import parse_arms
from rdistill.io import pid_alive, write_json_atomic
from rdistill.results import ResultsError, RunResults
from rdistill.run import RunHooks, run


@dataclass(frozen=True)
class SweepPoint:
    model: str
    budget: float
    arm: str
    seed: int | None = None
    """A replicate's seed (--seeds); None: the base config's."""

    def folder(self, study: Path, fingerprint: str) -> Path:
        """``STUDY/<model name>/<budget>/<arm>[-s<seed>]-<fingerprint>``, always inside ``study``."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model).name).strip(".") or "model"
        replicate = "" if self.seed is None else f"-s{self.seed}"
        return study / name / f"{self.budget:.4g}".replace("+", "") / f"{self.arm}{replicate}-{fingerprint}"


class SweepLocked(ValueError):
    """Another live sweep holds the study folder."""


@contextmanager
def study_lock(study: Path) -> Iterator[None]:
    """Hold ``study/.sweep.lock`` for the duration; SweepLocked while another live process holds it."""
    path = study / ".sweep.lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
            except (OSError, ValueError):
                owner = {}
            live = owner.get("host") != me["host"] or pid_alive(owner.get("pid"))
            if live and owner:
                raise SweepLocked(
                    f"another sweep (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}) is "
                    f"running in {study}; wait for it to finish, or delete {path} if it is gone"
                ) from None
            path.unlink(missing_ok=True)  # its owner is dead: take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:  # another sweep took the lock between our takeover and our retry
        raise SweepLocked(f"another sweep took {path} at the same moment; run this one later")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def grid(models: tuple[str, ...], arms: tuple[str, ...], budgets: tuple[float, ...],
         seeds: tuple[int, ...] = ()) -> list[SweepPoint]:
    """All grid points, cheapest budget first, so a partial sweep already spans the sizes and arms (and
    the replicate seeds of a point follow one another)."""
    if not models or not budgets:
        raise ValueError("a sweep needs at least one model and one budget")
    names = [a.name for a in parse_arms(arms)]
    return [SweepPoint(m, b, a, s) for b in sorted(budgets) for m in models for a in names for s in (seeds or (None,))]


def point_status(folder: Path, fingerprint: str | None = None) -> str | None:
    """The live status of a point's results.json ("crashed" for a dead "running" one), or None when
    there is none, it cannot be read, or (with ``fingerprint``) it holds a run of other settings."""
    try:
        results = RunResults.read(folder / "results.json")
    except ResultsError:
        return None
    if fingerprint is not None and results.fingerprint != fingerprint:
        return None
    return results.live_status()


def _resumable(folder: Path, fingerprint: str, arm: str) -> bool:
    """Whether the point in ``folder`` was stopped (interrupted, or crashed) with the same settings after
    writing a checkpoint, so that it goes on from there rather than starting over."""
    if point_status(folder, fingerprint) not in ("interrupted", "crashed"):
        return False
    return checkpoint.latest(folder / arm / "checkpoint") is not None


def point_config(base: RunConfig, point: SweepPoint, study: Path, *, seed_data: bool = False,
                 model_lrs: dict[str, float] | None = None) -> RunConfig:
    """The one-arm run of ``point``: ``base`` with the point's student, arm, budget and seed (its data
    and held-out split stay the base's unless ``seed_data``) and learning rates from ``model_lrs``
    (SweepConfig.model_lrs), in its folder."""
    lrs = {fmt: (model_lrs or {}).get(f"{point.model}:{fmt}", (model_lrs or {}).get(point.model))
           for fmt in ("ift", "reasoning")}
    train = replace(base.train, budget_flops=point.budget, samples=None)
    train = replace(train, **{f"lr_{fmt}": lr for fmt, lr in lrs.items() if lr is not None})
    cfg = replace(base, model=replace(base.model, name=point.model), arms=(point.arm,), train=train)
    if point.seed is not None:
        data = base.data if seed_data else replace(base.data, seed=base.data_seed)
        cfg = replace(cfg, seed=point.seed, data=data)
    return replace(cfg, out=str(point.folder(study, cfg.fingerprint())))


def sweep_point_config(cfg: SweepConfig, point: SweepPoint, study: Path) -> RunConfig:
    """``point_config`` with the sweep's replicate and learning-rate settings."""
    return point_config(cfg.base, point, study, seed_data=cfg.seed_data, model_lrs=cfg.model_lrs)


def run_sweep(
    cfg: SweepConfig,
    study: str | Path,
    *,
    hooks_for: Callable[[SweepPoint], RunHooks] | None = None,
    on_point: Callable[[SweepPoint, str, int, int], None] | None = None,
) -> dict:
    """Run every point of ``cfg``'s grid that is not yet complete into the folder ``study``.

    ``on_point(point, status, index, total)`` is told "skipped", "started", "resumed", "complete" or
    "failed".
    """
    points = grid(cfg.models, cfg.arms, cfg.budgets, cfg.seeds)
    study = Path(study)
    study.mkdir(parents=True, exist_ok=True)
    configs = [sweep_point_config(cfg, p, study) for p in points]
    with study_lock(study):
        return _run_points(list(zip(points, configs)), study, hooks_for, on_point)


def _run_points(
    points: list[tuple[SweepPoint, RunConfig]],
    study: Path,
    hooks_for: Callable[[SweepPoint], RunHooks] | None,
    on_point: Callable[[SweepPoint, str, int, int], None] | None,
) -> dict:
    manifest: dict = {"points": []}
    for i, (point, run_cfg) in enumerate(points):
        folder = Path(run_cfg.out)
        entry = {"model": point.model, "arm": point.arm, "budget": point.budget, "seed": run_cfg.seed,
                 "dir": str(folder.relative_to(study)), "fingerprint": run_cfg.fingerprint()}
        manifest["points"].append(entry)
        if point_status(folder, entry["fingerprint"]) == "complete":
            entry["status"] = "complete"
            entry["skipped"] = True
            if on_point:
                on_point(point, "skipped", i, len(points))
            continue
        resume = _resumable(folder, entry["fingerprint"], point.arm)
        if folder.exists() and not resume:
            shutil.rmtree(folder)
        if on_point:
            on_point(point, "resumed" if resume else "started", i, len(points))
        t0 = time.perf_counter()
        try:
            run(run_cfg, hooks_for(point) if hooks_for else None, resume=resume)
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
