"""Data parallelism through torch.distributed, as torchrun launches it: one process per device.

``world(parallel, device)`` joins the process group that torchrun's environment describes (RANK,
WORLD_SIZE, MASTER_ADDR, ...; gloo on CPU, nccl on CUDA, with a timeout so that no rank waits forever
on a dead one) or, without torchrun, is a world of one. ``--parallel ddp`` wraps the student in
DistributedDataParallel, ``--parallel fsdp`` shards it with FSDP2 (``fully_shard`` per decoder layer,
then the whole), both around ``LossModule`` so that the forward that computes the loss is the wrapped
module's own (the wrappers' hooks see it). Under FSDP2 the sharded parameters are fp32 master weights
and its ``MixedPrecisionPolicy`` gathers them in ``--dtype`` for compute (gradients reduced in fp32);
checkpoints are sharded too (``save_sharded``/``load_sharded``: torch.distributed.checkpoint, which
reshards for another world size), and the trained student is gathered whole for saving and evaluation.

The step plan (rdistill.train) is global and deterministic: every rank computes the same packs of the
same step, trims them to the same budget and records the same FLOPs in its ledger. Each rank trains
the packs ``i`` with ``i % world == rank``; a rank with fewer packs than another runs a zero-weight
pack so that every rank makes the same collectives (and that work is counted as executed FLOPs). The
loss of a pack is divided by the global step's loss tokens and multiplied by the world size, because
DDP and FSDP2 average gradients over ranks: the sum over ranks is then the single-process gradient
of the same global step.

Evaluation is split the same way (each rank generates for every world-size-th held-out prompt,
``gather_objects`` puts them back in order) and the main rank writes the run folder. A rank that dies
makes the others' next collective fail (gloo and nccl notice a closed peer; ``TIMEOUT`` bounds the
rest), torchrun stops the job, and the run folder keeps what a resume needs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from rdistill.data.batch import PackedBatch
from rdistill.model import KernelPlan, packed_loss_sum

PARALLEL = ("none", "ddp", "fsdp")
TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a rank before the job fails (a dead rank must not hang the rest)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    parallel: str = "none"
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def sharded(self) -> bool:
        """Whether the student's parameters and optimizer state are sharded over the ranks (FSDP2)."""
        return self.distributed and self.parallel == "fsdp"


def launched_size() -> int:
    """WORLD_SIZE as torchrun set it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world(parallel: str, device: torch.device | str) -> World:
    """The process group of this torchrun job, joined; a world of one without torchrun. ValueError when
    torchrun started several processes and ``parallel`` says how not to use them."""
    if parallel not in PARALLEL:
        raise ValueError(f"unknown --parallel {parallel!r}; choose one of {', '.join(PARALLEL)}")
    size = launched_size()
    if size == 1:
        return World(parallel=parallel, device=str(device))
    if parallel == "none":
        raise ValueError(f"torchrun started {size} processes: pass --parallel ddp or --parallel fsdp")
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return World(dist.get_rank(), dist.get_world_size(), local, parallel, device_for(local))


def device_for(local_rank: int) -> str:
    """This rank's device: its own GPU, or the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


class LossModule(torch.nn.Module):
    """``packed_loss_sum`` as a module's forward, so that DDP and FSDP2 wrap the call that uses every
    parameter (the LM head's weight is read by the fused loss, outside the decoder's own forward)."""

    def __init__(self, net: torch.nn.Module, kernels: KernelPlan) -> None:
        super().__init__()
        self.net, self.kernels = net, kernels

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        return packed_loss_sum(self.net, batch, self.kernels)


def wrap(net: torch.nn.Module, kernels: KernelPlan, w: World) -> torch.nn.Module:
    """The module a rank calls for a pack's loss: ``LossModule`` as is (one process), in DDP, or sharded
    by FSDP2 (decoder layers, then the rest)."""
    module = LossModule(net, kernels)
    if not w.distributed:
        return module
    if w.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [w.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(module, device_ids=device_ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # the sharded parameters are fp32 (they are the master weights); each layer's are gathered in the
    # compute dtype (--dtype) for its forward and backward, and gradients are reduced in fp32
    policy = MixedPrecisionPolicy(param_dtype=kernels.dtype, reduce_dtype=torch.float32)
    for layer in net.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    return module


def sync_gradients(module: torch.nn.Module, w: World, enabled: bool):
    """A context in which a backward does (or, for all but a step's last pack, does not) reduce
    gradients across ranks."""
    if not w.distributed:
        return contextlib.nullcontext()
    if w.parallel == "ddp":
        return contextlib.nullcontext() if enabled else module.no_sync()
    module.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def all_sum(value: float, w: World) -> float:
    """Sum of a float over ranks."""
    if not w.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=w.device)
    dist.all_reduce(t)
    return float(t.item())


def check_agreement(values: list[int], w: World, what: str) -> None:
    """RuntimeError unless every rank holds the same ``values`` (e.g. the step count and FLOPs spent)."""
    if not w.distributed:
        return
    t = torch.tensor(values, dtype=torch.int64, device=w.device)
    lo, hi = t.clone(), t.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"ranks disagree about {what}: from {lo.tolist()} to {hi.tolist()}; the step plan "
                           "must be the same on every rank (same data, seed and config)")


def padded_count(packs: int, ranks: int) -> int:
    """Packs each rank runs in a step of ``packs`` packs (the most any rank has)."""
    return -(-packs // ranks)


AGREEMENT_EVERY = 50
"""Steps between checks that every rank has the same step count and FLOPs (and at the last step)."""


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()


def full_model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The student's full state dict gathered from its FSDP2 shards (``module`` as ``wrap`` returned it)
    onto every rank; a collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    return {k.removeprefix("net."): v for k, v in state.items()}


def save_sharded(module: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Write the FSDP2 student's and optimizer's shards into the folder ``path`` with
    torch.distributed.checkpoint (every rank writes its own; a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(module, opt)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path))


def load_sharded(module: torch.nn.Module, opt: torch.optim.Optimizer, path: Path) -> None:
    """Read what ``save_sharded`` wrote into the FSDP2 student and optimizer (torch.distributed.checkpoint
    reshards: the world may have another size than the one that wrote it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(module, opt)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(module, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def gather_objects(items: list, w: World) -> list:
    """Every rank's ``items`` (its share ``rank::size`` of a list) put back into the list's order, on
    every rank; a collective."""
    if not w.distributed:
        return items
    shares: list = [None] * w.size
    dist.all_gather_object(shares, items)
    out = []
    for i in range(max(len(s) for s in shares)):
        out.extend(s[i] for s in shares if i < len(s))
    return out
