"""A trainer's checkpoint: everything the rest of an arm's training depends on, written and read back.

What is written (rdistill.checkpoint gives the folder, its atomic commit and the tensor files): the
model's parameters, fp32 master weights and optimizer state, the torch RNG, the loss scale, the
trainer's counters and its ledger. The data order is not stored: it is a deterministic function of the
seed, so a resumed trainer replays the step stream up to the checkpoint's step without training on it.

Two layouts. ``whole``: one process, or DDP (every rank holds the same state), written by the main
rank as safetensors; it resumes under any world size and ``--parallel none|ddp``. ``sharded``: FSDP2,
whose parameters and optimizer state live in shards, written by every rank with
torch.distributed.checkpoint into ``sharded/`` and committed by the main rank; it resumes under
``--parallel fsdp`` (torch.distributed.checkpoint reshards it for another world size), never in one
process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rdistill import checkpoint
from rdistill.distributed import barrier, load_sharded, save_sharded
from rdistill.flops.ledger import FlopLedger

if TYPE_CHECKING:
    from rdistill.train import Trainer

COUNTERS = ("steps", "samples", "tokens", "loss_tokens", "step_seconds", "peak_memory", "final_loss", "stopped_by")
SHARDED = "sharded"


def layout(trainer: Trainer) -> str:
    return "sharded" if trainer.world.sharded else "whole"


def save(trainer: Trainer, root: Path) -> None:
    """Write a checkpoint of ``trainer`` under ``root``; every rank calls it (and leaves it together)."""
    t, w = trainer, trainer.world
    if w.is_main:
        checkpoint.open_staging(root, t.steps)
    if w.sharded:
        barrier(w)  # the staging folder exists
        save_sharded(t.module, t.opt, checkpoint.staging(root, t.steps) / SHARDED)
    if w.is_main:
        tensors, loss_scale = ({}, t.weights.loss_scale_state()) if w.sharded else t.weights.state()
        opt_rest = None
        if not w.sharded:
            tensors["optimizer"], opt_rest = checkpoint.optimizer_state(t.opt)
        tensors["rng"] = checkpoint.rng_state()
        state = {
            "layout": layout(t),
            "world_size": w.size,
            "counters": {k: getattr(t, k) for k in COUNTERS},
            "ledger": t.ledger.to_dict(),
            "optimizer": opt_rest,
            "loss_scale": loss_scale,
            "lr": list(t.peaks),
            "num_docs": len(t.docs),
        }
        checkpoint.commit(root, t.steps, tensors, state)
    barrier(w)


def restore(trainer: Trainer, root: Path, stream: Iterator) -> None:
    """Restore the latest checkpoint under ``root`` (if any) into ``trainer`` and replay ``stream`` up to
    its step; ValueError when it cannot be resumed here (another arm, student, data or layout)."""
    t = trainer
    path = checkpoint.latest(root)
    if path is None:
        return
    found, wanted = checkpoint.load_state(path).get("layout", "whole"), layout(t)
    if found != wanted:
        how = ("under torchrun with --parallel fsdp (any number of processes above one)" if found == "sharded"
               else "in one process or under --parallel ddp")
        raise ValueError(f"{path} holds a {found} checkpoint (written {'by FSDP2' if found == 'sharded' else 'without FSDP2'}); "
                         f"it resumes {how}")
    tensors, state = checkpoint.load(path)
    if state["num_docs"] != len(t.docs) or state["lr"] != list(t.peaks):
        raise ValueError(f"{path} was written by a different arm, student or data; it cannot be resumed here")
    try:
        if found == "sharded":
            load_sharded(t.module, t.opt, path / SHARDED)
            t.weights.load_loss_scale(state["loss_scale"])
        else:
            t.weights.load(tensors, state["loss_scale"])
            checkpoint.load_optimizer_state(t.opt, tensors.get("optimizer", {}), state["optimizer"])
    except (ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: {e}; it cannot be resumed here") from e
    checkpoint.set_rng_state(tensors["rng"])
    for k, v in state["counters"].items():
        setattr(t, k, v)
    t.ledger = FlopLedger.from_dict(state["ledger"])
    if t.stopped_by is None:
        for _ in range(t.steps):  # the data order is the seed's: replay it up to the checkpoint
            next(stream)
