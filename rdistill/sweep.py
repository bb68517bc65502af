"""Sweeps: a grid of students x arms x budgets, run one after another into one study folder, or one
point at a time by independent workers (rdistill.dispatch).

A sweep is a ``rdistill.config.SweepConfig``. Each grid point is its own one-arm run, made by
rdistill.run in ``STUDY/<model>/<budget>/<arm>-<fingerprint>/``: the fingerprint hashes every setting
of the point's run (rdistill.config.RunConfig.fingerprint) and is the point's id, so a point is
identified by what it runs, not by its folder name; the model part is the checkpoint folder's name made
safe (no path escapes the study). So every point is resumable on its own:

- a point whose results.json says "complete" for the same settings is skipped (an interrupted sweep
  resumes where it stopped; a rerun with another --lr, --seed or --difficulty runs new points);
- a point that was interrupted or crashed with the same settings after writing a checkpoint goes on
  from it (rdistill.run's resume: the same result as an uninterrupted point);
- any other point found on disk (failed, half-written, no checkpoint) is cleared and run again;
- a point that fails is recorded (error and traceback tail) in ``STUDY/sweep.json`` and the sweep goes
  on with the next; Ctrl-C stops the sweep after recording the point as interrupted.

Every point is run under its lock (rdistill.dispatch.point_lock), by ``run_sweep`` (every point in
turn, skipping one another worker holds) and by ``run_point`` (one point, as ``--point``/``--index``),
so a full sweep and any number of one-point workers share a study; both record the grid in
``STUDY/grids/`` first. ``STUDY/sweep.json`` (rewritten atomically after every point, by a full sweep
only) lists every point with its status, seconds and folder. ``STUDY/.sweep.lock`` holds the live full
sweep's pid and host: a second full sweep on the same study refuses to start while the first runs, and
takes over a lock its dead owner left; one-point workers do not take it. Every point of a (model,
budget) pair starts from the same initial student and sees the same data, because the seed is shared.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rdistill import checkpoint, distributed
from rdistill.config import RunConfig, SweepConfig
from rdistill.data.curriculum import parse_arms
from rdistill.dispatch import GridEntry, PointLocked, point_lock, point_status, record_failure, select, write_grid
from rdistill.io import pid_alive, write_json_atomic
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


def points(cfg: SweepConfig, study: Path) -> list[tuple[SweepPoint, RunConfig, GridEntry]]:
    """Every point of ``cfg``'s grid in grid order, with its run config and its entry (id, folder)."""
    out = []
    for i, point in enumerate(grid(cfg.models, cfg.arms, cfg.budgets, cfg.seeds)):
        run_cfg = sweep_point_config(cfg, point, study)
        entry = GridEntry(i, run_cfg.fingerprint(), point.model, point.budget, point.arm, point.seed,
                          str(Path(run_cfg.out).relative_to(study)))
        out.append((point, run_cfg, entry))
    return out


OnPoint = Callable[[SweepPoint, str, int, int], None]


def run_sweep(
    cfg: SweepConfig,
    study: str | Path,
    *,
    hooks_for: Callable[[SweepPoint], RunHooks] | None = None,
    on_point: OnPoint | None = None,
) -> dict:
    """Run every point of ``cfg``'s grid that is not yet complete into the folder ``study``.

    ``on_point(point, status, index, total)`` is told "skipped", "started", "resumed", "complete",
    "failed", or "locked" (another worker runs the point; it is left to it, recorded as "running").
    """
    study = Path(study)
    planned = points(cfg, study)
    study.mkdir(parents=True, exist_ok=True)
    with study_lock(study):
        write_grid(study, [e for _, _, e in planned])
        return _run_points(planned, study, hooks_for, on_point)


def _prepare(folder: Path, fingerprint: str, arm: str) -> str:
    """What to do with a point whose lock this process holds: "skip" it (complete), "resume" it, or
    "start" it (its folder cleared)."""
    if point_status(folder, fingerprint) == "complete":
        return "skip"
    if _resumable(folder, fingerprint, arm):
        return "resume"
    if folder.exists():
        shutil.rmtree(folder)
    return "start"


def _manifest_entry(point: SweepPoint, run_cfg: RunConfig, study: Path) -> dict:
    return {"model": point.model, "arm": point.arm, "budget": point.budget, "seed": run_cfg.seed,
            "dir": str(Path(run_cfg.out).relative_to(study)), "fingerprint": run_cfg.fingerprint()}


def _train(run_cfg: RunConfig, hooks: RunHooks | None, resume: bool, entry: dict, record: bool = True) -> None:
    """Run the point; ``entry`` gets its status ("complete" or "failed", with the error) and seconds.
    A failure is also recorded in the point's folder (``record``); Ctrl-C marks it interrupted and goes up."""
    t0 = time.perf_counter()
    try:
        run(run_cfg, hooks, resume=resume)
        entry["status"] = "complete"
    except KeyboardInterrupt:
        entry["status"] = "interrupted"
        raise
    except Exception as exc:  # a failed point is recorded and the sweep goes on
        entry["status"] = "failed"
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc()[-2000:]
        if record:
            record_failure(Path(run_cfg.out), entry["fingerprint"], entry["error"], entry["traceback"])
    finally:
        entry["seconds"] = round(time.perf_counter() - t0, 1)


def _run_points(
    planned: list[tuple[SweepPoint, RunConfig, GridEntry]],
    study: Path,
    hooks_for: Callable[[SweepPoint], RunHooks] | None,
    on_point: OnPoint | None,
) -> dict:
    manifest: dict = {"points": []}
    say = on_point or (lambda *_: None)
    for i, (point, run_cfg, _) in enumerate(planned):
        folder = Path(run_cfg.out)
        entry = _manifest_entry(point, run_cfg, study)
        manifest["points"].append(entry)
        try:
            with point_lock(folder, entry["fingerprint"]):
                action = _prepare(folder, entry["fingerprint"], point.arm)
                if action == "skip":
                    entry["status"] = "complete"
                    entry["skipped"] = True
                    say(point, "skipped", i, len(planned))
                    continue
                say(point, "resumed" if action == "resume" else "started", i, len(planned))
                try:
                    _train(run_cfg, hooks_for(point) if hooks_for else None, action == "resume", entry)
                except KeyboardInterrupt:
                    write_json_atomic(study / "sweep.json", manifest)
                    raise
        except PointLocked as e:
            entry["status"] = "running"
            entry["error"] = str(e)
            say(point, "locked", i, len(planned))
            continue
        write_json_atomic(study / "sweep.json", manifest)
        say(point, entry["status"], i, len(planned))
    write_json_atomic(study / "sweep.json", manifest)
    return manifest


def _from_main(value: object, w: distributed.World) -> object:
    """The main rank's ``value`` on every rank (a collective under torchrun)."""
    if not w.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def run_point(
    cfg: SweepConfig,
    study: str | Path,
    *,
    point_id: str | None = None,
    index: int | None = None,
    hooks_for: Callable[[SweepPoint], RunHooks] | None = None,
    on_point: OnPoint | None = None,
) -> dict:
    """Run the one point of ``cfg``'s grid named by ``point_id`` (its id, or a unique prefix) or ``index``
    (grid order) into the folder a full sweep gives it, under its lock; returns its sweep.json-style entry
    (status "complete", with "skipped" when it already was, or "failed" with the error). Writes nothing
    to sweep.json. ValueError for an unknown point, PointLocked while another live worker runs it.

    Under torchrun every rank calls this: the main rank takes the lock and decides (skip, resume, start),
    the others follow it."""
    study = Path(study)
    planned = points(cfg, study)
    chosen = select([e for _, _, e in planned], point_id=point_id, index=index)
    point, run_cfg, grid_entry = planned[chosen.index]
    folder = Path(run_cfg.out)
    entry = _manifest_entry(point, run_cfg, study)
    say = on_point or (lambda *_: None)
    w = distributed.world(run_cfg.parallel, "cuda" if torch.cuda.is_available() else "cpu")
    with ExitStack() as stack:
        action: object = None
        if w.is_main:
            try:
                stack.enter_context(point_lock(folder, grid_entry.id))
                write_grid(study, [e for _, _, e in planned])
                action = _prepare(folder, grid_entry.id, point.arm)
            except PointLocked as e:
                action = e
        action = _from_main(action, w)
        if isinstance(action, PointLocked):
            raise PointLocked(str(action))
        if action == "skip":
            entry.update(status="complete", skipped=True)
            say(point, "skipped", chosen.index, len(planned))
            return entry
        say(point, "resumed" if action == "resume" else "started", chosen.index, len(planned))
        hooks = hooks_for(point) if hooks_for and w.is_main else None  # run() quiets the other ranks anyway
        _train(run_cfg, hooks, action == "resume", entry, record=w.is_main)
    say(point, entry["status"], chosen.index, len(planned))
    return entry
