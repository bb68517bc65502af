"""Training a student whose weights are bf16 or fp16: fp32 master weights and a loss scale.

The model's forward and backward run in its own dtype (weights and activations: half the memory of
fp32, and the kernels see one dtype, which the ledger counts). The optimizer steps fp32 master copies
of the weights, with fp32 AdamW state, and every step copies them back into the model, rounded: an
update of lr x gradient is far below bf16's resolution of a weight (8 bits of mantissa), so without
fp32 masters small learning rates would round to no update at all. fp16 also scales the loss
(``LossScaler``), because its gradients would otherwise underflow. An fp32 model has no masters: the
optimizer steps its parameters directly, exactly as plain PyTorch would. Under FSDP2 the sharded fp32
parameters are themselves the masters (rdistill.distributed gathers them in the compute dtype): no
copies, and fp16 compute still scales the loss.
"""

from __future__ import annotations

import torch


class LossScaler:
    """Dynamic loss scaling for fp16: gradients of loss x scale stay above fp16's underflow; a step whose
    gradients overflow is skipped and the scale halved; every ``growth_interval`` clean steps it doubles."""

    def __init__(self, scale: float = 2.0**16, growth_interval: int = 2000) -> None:
        self.scale, self.growth_interval, self.clean_steps = scale, growth_interval, 0

    def update(self, finite: bool) -> None:
        if not finite:
            self.scale, self.clean_steps = max(self.scale / 2, 1.0), 0
            return
        self.clean_steps += 1
        if self.clean_steps % self.growth_interval == 0:
            self.scale *= 2


class Weights:
    """A model's trainable weights as the optimizer sees them (``trained``: fp32 masters for a bf16 or
    fp16 model, else the parameters themselves), and the step that applies its gradients."""

    def __init__(self, net: torch.nn.Module, compute: torch.dtype | None = None) -> None:
        """``compute``: the dtype the forward and backward run in, when it is not the parameters' own
        (FSDP2's mixed precision)."""
        self.params = list(dict.fromkeys(net.parameters()))
        dtype = self.params[0].dtype
        # fp32 masters (``.float()`` of a bf16/fp16 tensor is a copy)
        self.master = ([p.detach().float().requires_grad_(True) for p in self.params]
                       if dtype != torch.float32 else None)
        self.scaler = LossScaler() if (compute or dtype) == torch.float16 else None

    @property
    def trained(self) -> list[torch.Tensor]:
        return self.master or self.params

    @property
    def loss_scale(self) -> float:
        return self.scaler.scale if self.scaler else 1.0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        for m in self.master or []:
            m.grad = None

    def step(self, opt: torch.optim.Optimizer, grad_clip: float) -> bool:
        """Unscale, clip and take the optimizer step on the trained weights (then round the masters
        into the model); False when fp16 gradients overflowed and the step was skipped."""
        scale = self.loss_scale
        if self.master is not None:
            for p, m in zip(self.params, self.master):
                m.grad = None if p.grad is None else p.grad.float().div_(scale)
                p.grad = None
        elif scale != 1.0:
            for p in self.params:
                if p.grad is not None:
                    p.grad.div_(scale)
        trained = self.trained
        if self.scaler is not None:
            norm = torch.nn.utils.get_total_norm([m.grad for m in trained if m.grad is not None])
            finite = bool(torch.isfinite(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))  # FSDP2: a DTensor
            self.scaler.update(finite)
            if not finite:
                return False
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trained, grad_clip)
        opt.step()
        if self.master is not None:
            with torch.no_grad():
                for p, m in zip(self.params, self.master):
                    p.copy_(m)
        return True

    def state(self) -> tuple[dict[str, dict[str, torch.Tensor]], list | None]:
        """Tensors (model parameters, masters) and the loss scale, for a checkpoint."""
        tensors = {
            "model": {f"p{i}": p for i, p in enumerate(self.params)},
            "master": {f"p{i}": m for i, m in enumerate(self.master or [])},
        }
        return tensors, self.loss_scale_state()

    def loss_scale_state(self) -> list | None:
        return [self.scaler.scale, self.scaler.clean_steps] if self.scaler else None

    def load_loss_scale(self, state: list | None) -> None:
        if self.scaler is not None:
            if state is None:
                raise ValueError("the checkpoint has no loss scale (it was not written by an fp16 run)")
            self.scaler.scale, self.scaler.clean_steps = state

    def load(self, tensors: dict[str, dict[str, torch.Tensor]], loss_scale: list | None) -> None:
        """Restore what ``state`` returned; ValueError when it is another model's."""
        if len(tensors["model"]) != len(self.params) or len(tensors.get("master", {})) != len(self.master or []):
            raise ValueError("the checkpoint holds another student's weights (or another dtype's)")
        with torch.no_grad():
            for i, p in enumerate(self.params):
                p.copy_(tensors["model"][f"p{i}"])
            for i, m in enumerate(self.master or []):
                m.copy_(tensors["master"][f"p{i}"])
        self.load_loss_scale(loss_scale)
