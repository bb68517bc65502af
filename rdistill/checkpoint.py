"""Checkpoints of an arm in training, written atomically, read back for an exact resume.

A checkpoint is a folder ``ROOT/step-NNNNNNNN`` holding tensors in safetensors files (one per group:
the model's parameters, fp32 master weights, optimizer state, RNG states) and everything else in
``state.json``; nothing is pickled. It is written as ``ROOT/.tmp-step-NNNNNNNN`` and renamed into place
when complete, so a process killed while saving leaves the previous checkpoint intact; older ones are
removed after the rename. ``latest`` ignores anything that is not a complete checkpoint. A checkpoint
of an FSDP2 run also holds a ``sharded/`` folder that every rank writes into the staging folder with
torch.distributed.checkpoint before the main rank commits it (rdistill.train_checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a trainer writes checkpoints, and whether it starts from the latest one."""

    root: Path
    every: float
    """N >= 1: every N steps; 0 < N < 1: every time that fraction of the budget (or samples) is spent."""
    resume: bool = False

    def due(self, steps: int, before: float, after: float) -> bool:
        """Whether the step that took the run to ``steps`` steps (``before`` -> ``after`` of its budget)
        ends on a checkpoint."""
        if self.every >= 1:
            return steps % int(self.every) == 0
        return self.every > 0 and math.floor(after / self.every) > math.floor(before / self.every)


FORMAT = 1
STATE = "state.json"
PREFIX = "step-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging(root: Path, step: int) -> Path:
    """The folder checkpoint ``step`` is written into before ``commit`` renames it into place."""
    return root / f".tmp-{PREFIX}{step:08d}"


def open_staging(root: Path, step: int) -> Path:
    """An empty staging folder for checkpoint ``step`` (others may write into it before ``commit``)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = staging(root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit(root: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Write the tensor groups and the JSON-able state into checkpoint ``step``'s staging folder, then
    rename it into place atomically; returns its folder. Older checkpoints under ``root`` are removed
    once it is in place."""
    tmp, final = staging(root, step), root / f"{PREFIX}{step:08d}"
    for group, named in tensors.items():
        if named:
            save_file({k: v.detach().contiguous().cpu() for k, v in named.items()}, str(tmp / f"{group}.safetensors"))
    with open(tmp / STATE, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "step": step, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    for p in tmp.iterdir():
        if p.suffix == ".safetensors":
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    if final.exists():  # the same step again (the end of training): keep it until the new one is in place
        os.rename(final, root / f"{PREFIX}{step:08d}-old")
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in root.glob(f"{PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    if not root.is_dir():
        return None
    done = [p for p in root.glob(f"{PREFIX}*") if (p / STATE).is_file()]
    # the highest step; of one step's two copies (while it is being rewritten) the new one
    return max(done, key=lambda p: (p.name.removesuffix("-old"), not p.name.endswith("-old")), default=None)


def load(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(tensor groups, state) of the checkpoint folder ``path``; ValueError when it is not one."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable rdistill checkpoint ({e})") from e
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, this rdistill reads {FORMAT}")
    tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
    return tensors, state


def load_state(path: Path) -> dict[str, Any]:
    """The JSON state of the checkpoint folder ``path`` alone (no tensors read)."""
    return json.loads((path / STATE).read_text(encoding="utf-8"))


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict split into named tensors and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Restore what ``optimizer_state`` split."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in rest["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> dict[str, torch.Tensor]:
    """torch's CPU (and every CUDA device's) generator state."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
