"""Spreading a sweep's points over independent workers: point ids, a lock per point, the state of a
point on disk, the grid's record in the study folder, and a SLURM job-array script.

A point's id is its run's fingerprint (rdistill.config.RunConfig.fingerprint): the same settings give
the same id in every invocation, any setting that can change the point's results gives another, and
the id ends the point's folder (rdistill.sweep.SweepPoint.folder). Points are numbered in grid order
(rdistill.sweep.grid), so ``--index i`` and ``--point ID`` name the same point while the grid's flags
stay the same.

- The lock of a point is ``<point folder>.lock``, created with O_EXCL and holding the worker's id, pid,
  host and start; the worker touches it every HEARTBEAT_SECONDS. A worker refuses a point whose lock
  belongs to a live worker: its pid is alive (same host), or the lock was touched within STALE_SECONDS
  (another host). A lock whose owner is dead is taken over (one taker at a time, through a
  ``.takeover`` file made with O_EXCL).
- ``STUDY/grids/<grid id>.json`` records every point of a grid dispatched into the study (id, model,
  budget, arm, seed, folder): written once per grid, atomically, by every worker with the same content,
  so that concurrent workers never corrupt it. A report reads them (and a full sweep's sweep.json) to
  name the points that are not there yet.
- A worker whose point fails before its run writes results.json leaves ``ERROR_FILE`` in the point's
  folder, so that the point reads as failed, not missing.

Nothing here imports torch: a report reads the same records.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from rdistill.io import pid_alive, write_json_atomic
from rdistill.results import HEARTBEAT_SECONDS, STALE_SECONDS, ResultsError, RunResults

GRIDS_DIR = "grids"
ERROR_FILE = "point-error.json"
WRITE_GRACE_SECONDS = 60.0
"""How long a lock (or takeover) file may stay unreadable before its writer counts as dead."""
STATUSES = ("complete", "interrupted", "crashed", "failed", "running", "missing")


@dataclass(frozen=True)
class GridEntry:
    """One point of a dispatched grid, as the study folder records it."""

    index: int
    """Its place in grid order (``--index``)."""
    id: str
    """Its run's fingerprint (``--point``)."""
    model: str
    budget: float
    arm: str
    seed: int | None
    """The replicate seed (--seeds); None: the base config's."""
    dir: str
    """Its folder, relative to the study folder."""


class PointLocked(ValueError):
    """Another live worker holds the point."""


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


def lock_path(folder: Path) -> Path:
    """``<point folder>.lock``, beside the folder (a sweep clears the folder, never its lock)."""
    return folder.with_name(folder.name + ".lock")


def _read_owner(path: Path) -> dict | None:
    """A lock's record; None when there is no lock, {} when it cannot be read (still being written)."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _age(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def holder_alive(owner: dict, path: Path) -> bool:
    """Whether the worker that wrote ``owner`` into the lock ``path`` still runs: its pid, on this host;
    on another host, a heartbeat (the lock's mtime) within STALE_SECONDS. An unreadable lock counts as
    being written for WRITE_GRACE_SECONDS."""
    age = _age(path)
    if age is None:
        return False
    if not owner:
        return age < WRITE_GRACE_SECONDS
    if owner.get("host") == socket.gethostname():
        return pid_alive(owner.get("pid"))
    return age < STALE_SECONDS


def lock_holder(folder: Path) -> dict | None:
    """The record of the live worker holding the point in ``folder``, or None."""
    path = lock_path(folder)
    owner = _read_owner(path)
    return owner if owner is not None and holder_alive(owner, path) else None


def _held(owner: dict, path: Path) -> str:
    who = (f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}" if owner
           else "a worker that is still writing its lock")
    return (f"point {owner.get('id') or path.name.removesuffix('.lock')} is being run by another worker ({who}); "
            f"its lock is {path}. Leave it to that worker (`rdistill sweep ... --list` shows the point's status), "
            "or delete the lock if that worker is gone")


def _take_over(path: Path, owner: dict, identity: tuple[int, int] | None) -> None:
    """Remove the lock ``path`` of a dead owner, unless another worker replaced or is taking it meanwhile."""
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        if (_age(guard) or 0.0) > WRITE_GRACE_SECONDS:  # a taker died while taking over
            guard.unlink(missing_ok=True)
        return
    try:
        if _read_owner(path) == owner and _identity(path) == identity:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def _acquire(path: Path, me: dict) -> None:
    for _ in range(4):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            identity, owner = _identity(path), _read_owner(path)
            if owner is None:
                continue  # released meanwhile
            if holder_alive(owner, path):
                raise PointLocked(_held(owner, path)) from None
            _take_over(path, owner, identity)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise PointLocked(f"{path} changed hands while this worker tried to take it; run this point again")


def _beat(path: Path, token: str, stop: threading.Event) -> None:
    """Touch the lock every HEARTBEAT_SECONDS while it is still ours."""
    while not stop.wait(HEARTBEAT_SECONDS):
        if (_read_owner(path) or {}).get("token") != token:
            return
        try:
            os.utime(path)
        except OSError:
            return


@contextmanager
def point_lock(folder: Path, point_id: str) -> Iterator[dict]:
    """Hold the lock of the point in ``folder`` for the duration (a heartbeat thread keeps it fresh);
    PointLocked while another live worker holds it. A dead worker's lock is taken over."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"id": point_id, "pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "token": secrets.token_hex(8)}
    _acquire(path, me)
    stop = threading.Event()
    beat = threading.Thread(target=_beat, args=(path, me["token"], stop), name=f"lock {point_id}", daemon=True)
    beat.start()
    try:
        yield me
    finally:
        stop.set()
        beat.join()
        if (_read_owner(path) or {}).get("token") == me["token"]:
            path.unlink(missing_ok=True)


def record_failure(folder: Path, fingerprint: str, error: str, tb: str) -> None:
    """Write ``ERROR_FILE`` in the point's folder (the next attempt at the point clears the folder)."""
    write_json_atomic(folder / ERROR_FILE, {"fingerprint": fingerprint, "error": error, "traceback": tb[-2000:],
                                            "host": socket.gethostname(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def point_state(folder: Path, fingerprint: str) -> tuple[str, str]:
    """``(status, detail)`` of a grid point: its run's live status from results.json (complete,
    interrupted, crashed, failed, running), else "running" while a live worker holds its lock, "failed"
    with the recorded error, or "missing"; "unreadable" for a results.json that cannot be read."""
    path = folder / "results.json"
    if path.is_file():
        try:
            results = RunResults.read(path)
        except ResultsError as e:
            return "unreadable", str(e)
        if results.fingerprint == fingerprint:
            status = results.live_status()
            errors = [a.error for a in results.arms if a.status != "complete" and a.error]
            detail = {"running": f"training (pid {results.pid} on {results.host})",
                      "crashed": f"its worker (pid {results.pid} on {results.host}) is gone"}.get(status, "")
            return status, "; ".join(errors) or detail or f"run {status}"
    if (owner := lock_holder(folder)) is not None:
        return "running", f"starting (pid {owner.get('pid')} on {owner.get('host')})"
    try:
        record = json.loads((folder / ERROR_FILE).read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
        return "failed", str(record.get("error") or "no reason recorded")
    return "missing", "not run yet"


def grid_id(entries: Sequence[GridEntry]) -> str:
    """A hash of the grid's point ids, in order."""
    return hashlib.sha256(",".join(e.id for e in entries).encode()).hexdigest()[:12]


def write_grid(study: Path, entries: Sequence[GridEntry]) -> Path:
    """Record the grid in ``STUDY/grids/<grid id>.json`` (atomically; left as it is when already there)."""
    path = study / GRIDS_DIR / f"{grid_id(entries)}.json"
    if not path.is_file():
        write_json_atomic(path, {"grid": grid_id(entries), "points": [asdict(e) for e in entries]})
    return path


def _entry(raw: object, index: int) -> GridEntry | None:
    if not isinstance(raw, dict):
        return None
    try:
        pid = str(raw.get("id") or raw["fingerprint"])
        seed = raw.get("seed")
        return GridEntry(int(raw.get("index", index)), pid, str(raw["model"]), float(raw["budget"]), str(raw["arm"]),
                         None if seed is None else int(seed), str(raw["dir"]))
    except (KeyError, TypeError, ValueError):
        return None


def read_grid(study: Path) -> tuple[list[GridEntry], list[str]]:
    """Every point recorded in ``STUDY/grids/*.json`` and ``STUDY/sweep.json``, once each (by folder),
    and a message per file that could not be read."""
    found: dict[str, GridEntry] = {}
    problems = []
    for path in [*sorted((study / GRIDS_DIR).glob("*.json")), study / "sweep.json"]:
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text())
            points = raw["points"]
            if not isinstance(points, list):
                raise TypeError("points is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{path}: cannot read the grid it records ({e})")
            continue
        for i, item in enumerate(points):
            entry = _entry(item, i)
            if entry is None:
                problems.append(f"{path}: point {i} is malformed; it is not listed")
            elif Path(entry.dir).is_absolute() or ".." in Path(entry.dir).parts:
                problems.append(f"{path}: point {i} names a folder outside the study ({entry.dir}); it is not listed")
            else:
                found.setdefault(entry.dir, entry)
    return list(found.values()), problems


def select(entries: Sequence[GridEntry], *, point_id: str | None = None, index: int | None = None) -> GridEntry:
    """The entry named by ``point_id`` (a unique prefix will do) or ``index``; ValueError saying how to list them."""
    hint = "`rdistill sweep` with the same flags and --list shows the grid's points"
    if index is not None:
        if not 0 <= index < len(entries):
            raise ValueError(f"--index {index} is out of range: the grid has {len(entries)} points (0 to "
                             f"{len(entries) - 1}); {hint}")
        return entries[index]
    matches = [e for e in entries if e.id == point_id] or [e for e in entries if e.id.startswith(point_id or "\0")]
    if len(matches) != 1:
        what = "matches several points" if matches else "is not a point of this grid"
        raise ValueError(f"--point {point_id} {what} (a point's id depends on every setting that changes its "
                         f"results: the same flags give the same ids); {hint}")
    return matches[0]


def budget_text(budget: float) -> str:
    """A budget as a point's folder spells it (``1e10``)."""
    return f"{budget:.4g}".replace("+", "")


def list_lines(entries: Sequence[GridEntry], study: Path) -> list[str]:
    """``--list``: a header, then one line per point: index, id, model, budget, arm, seed, status, folder."""
    rows = [("index", "id", "model", "budget", "arm", "seed", "status", "folder")]
    for e in entries:
        status, _ = point_state(study / e.dir, e.id)
        rows.append((str(e.index), e.id, e.model, budget_text(e.budget), e.arm, "-" if e.seed is None else str(e.seed),
                     status, str(study / e.dir)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return ["# " + lines[0]] + [" " * 2 + line for line in lines[1:]]


def slurm_script(entries: Sequence[GridEntry], sweep_args: Sequence[str], *, study: Path, workdir: Path, python: str,
                 gpus_per_point: int = 1, cpus_per_point: int | None = None, sbatch: Sequence[str] = (),
                 max_running: int | None = None) -> str:
    """A SLURM job-array script: array task i runs point i (``rdistill sweep SWEEP_ARGS --point ID``, the
    id fixed here) in ``workdir``, under torchrun (``--standalone``, one process per GPU) when
    ``gpus_per_point`` > 1; ``sbatch`` are extra #SBATCH options (``time=24:00:00`` or ``--time=...``)."""
    if not entries:
        raise ValueError("the grid has no points")
    if gpus_per_point < 0 or (cpus_per_point is not None and cpus_per_point < 1) or (max_running or 1) < 1:
        raise ValueError("--gpus-per-point is 0 or more; --cpus-per-point and --max-running are 1 or more")
    n = len(entries)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"rdistill-{study.resolve().name}")
    options = [f"--job-name={name}", f"--array=0-{n - 1}" + (f"%{max_running}" if max_running else ""),
               "--nodes=1", "--ntasks=1"]
    options += [f"--gpus-per-task={gpus_per_point}"] if gpus_per_point else []
    options += [f"--cpus-per-task={cpus_per_point}"] if cpus_per_point else []
    options += ["--signal=B:TERM@300", f"--output={(study / 'logs').resolve()}/%x-%A_%a.out"]
    for extra in sbatch:
        extra = extra.strip()
        if not extra or "\n" in extra or "\r" in extra:
            raise ValueError(f"--sbatch {extra!r}: one SLURM option per --sbatch, e.g. --sbatch time=24:00:00")
        options.append(extra if extra.startswith("-") else f"--{extra}")
    launch = [python, "-m", "rdistill"] if gpus_per_point <= 1 else [
        python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus_per_point),
        "-m", "rdistill"]
    command = " ".join(shlex.quote(a) for a in [*launch[1:], "sweep", *sweep_args, "--point"])

    def clean(text: object) -> str:
        return " ".join(str(text).split())

    lines = ["#!/bin/bash",
             f"# A sweep of {n} points as a SLURM job array, written by `rdistill sweep --emit slurm`: array task i",
             "# runs point i alone. Submit it with sbatch; submit it again after a time limit or a failure:",
             "# complete points are skipped, interrupted ones go on from their checkpoints. Two tasks never run",
             "# the same point (a lock per point). `rdistill report STUDY` collects the points at any time.",
             *[f"#SBATCH {o}" for o in options], "#",
             "# index: id model budget arm seed"]
    lines += [f"# point {e.index}: {e.id} {clean(e.model)} {budget_text(e.budget)} {e.arm} "
              f"{'-' if e.seed is None else e.seed}" for e in entries]
    lines += ["", "set -euo pipefail", f"cd {shlex.quote(str(workdir))}", "POINTS=("]
    lines += [f"    {e.id}  # {e.index}" for e in entries]
    lines += [")",
              ': "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (or set SLURM_ARRAY_TASK_ID=i for point i)}"',
              'point=${POINTS[$SLURM_ARRAY_TASK_ID]:?"no point at index $SLURM_ARRAY_TASK_ID: emit the script again"}',
              f"PYTHON=${{PYTHON:-{shlex.quote(python)}}}",
              f'exec "$PYTHON" {command} "$point"', ""]
    return "\n".join(lines)
