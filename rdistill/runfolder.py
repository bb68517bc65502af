"""The run folder on disk, apart from training: what may be deleted with --overwrite, what a resume
reads back (config.json, results.json) and how a metrics log is cut back to a checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from rdistill.config import RunConfig
from rdistill.io import write_text_atomic
from rdistill.results import RunResults


RUN_ENTRIES = ("config.json", "results.json", "data", "tensorboard")
"""What a run writes at the top of its folder, besides one folder per arm."""


def clear_run_folder(out: Path) -> None:
    """Delete the run folder ``out`` so that a run can start afresh in it; ValueError, deleting
    nothing, when ``out`` is not a run folder (no readable config.json) or holds anything a run does not
    write (hidden temporary files aside)."""
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder")
    try:
        cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{out} is not an rdistill run folder (no readable config.json), so --overwrite will not delete it; "
            "choose another --out"
        ) from e
    known = {*RUN_ENTRIES, *cfg.arms}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in known and not p.name.startswith("."))
    if foreign:
        raise ValueError(
            f"{out} holds files a run does not write ({', '.join(foreign[:5])}), so --overwrite will not delete "
            "it; move them or choose another --out"
        )
    shutil.rmtree(out)


def resume_config(folder: str | Path) -> RunConfig:
    """The config of the run in ``folder``, to resume it; ValueError saying why it cannot be resumed."""
    out = Path(folder)
    try:
        cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        raise ValueError(f"{out} is not an rdistill run folder (no readable config.json: {e}); nothing to resume") from e
    if cfg.out is None or Path(cfg.out).resolve() != out.resolve():
        cfg = replace(cfg, out=str(out))
    results = out / "results.json"
    if results.is_file():
        status = RunResults.read(results).live_status()
        if status == "running":
            raise ValueError(f"{out} is being written by a live run (results.json says running and its process is "
                             "alive); let it finish, or stop it first")
        if status == "complete":
            raise ValueError(f"{out} is complete: nothing to resume")
    return cfg


def previous_results(out: Path) -> RunResults | None:
    """The results.json of an interrupted run in ``out`` (None when it wrote none)."""
    path = out / "results.json"
    return RunResults.read(path) if path.is_file() else None


def keep_lines(path: Path, n: int) -> None:
    """Keep the first ``n`` complete lines of ``path`` (a metrics log cut back to its checkpoint)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    if len(complete) < n:
        raise ValueError(f"{path} has {len(complete)} complete lines, fewer than the checkpoint's {n} steps; "
                         "the run folder was changed since it was interrupted")
    write_text_atomic(path, "".join(complete[:n]))
