"""The contract every kernel module keeps, in one place.

- ``resolve_impl(impl, device, *, head_dim=None, dtype=None) -> str`` in each module calls ``resolve``:
  ``"auto"`` is the module's environment override if set (``RDISTILL_ATTN_IMPL``, ``RDISTILL_CE_IMPL``),
  else ``"triton"`` for CUDA tensors when triton is importable and the head dim and dtype (when given)
  are ones the kernels support, else ``"torch"``; an explicit name is checked and returned.
- Asking for ``impl="triton"`` where triton cannot be imported raises ``TritonUnavailableError``.
- Environment variables are read when a function is called, never at import. (Triton itself reads
  ``TRITON_INTERPRET`` when a kernel is decorated, i.e. when the module is imported: set it first.)
- Importing a kernel module queries no device and registers nothing.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import torch

ENV_INTERPRET = "TRITON_INTERPRET"
ENV_DEBUG = "RDISTILL_KERNEL_DEBUG"


class TritonUnavailableError(ImportError):
    """``impl="triton"`` was asked for (explicitly or through an environment override) where the triton
    package cannot be imported."""


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set now (kernels then run in Triton's CPU interpreter)."""
    return os.environ.get(ENV_INTERPRET, "0") == "1"


def debugging() -> bool:
    """Whether ``RDISTILL_KERNEL_DEBUG=1`` is set now: kernels then check their inputs on the device
    (a host sync per call)."""
    return os.environ.get(ENV_DEBUG, "0") == "1"


def resolve(
    impl: str,
    device: torch.device | str,
    *,
    kernel: str,
    impls: tuple[str, ...],
    env_var: str,
    triton_importable: bool,
    head_dim: int | None = None,
    dtype: torch.dtype | None = None,
    triton_head_dims: Collection[int] | None = None,
    triton_dtypes: Collection[torch.dtype] = (),
) -> str:
    """The implementation of ``kernel`` that ``impl`` names on ``device`` (see the module docstring).

    ``impls`` are the kernel's implementations ("auto" excluded); ``triton_head_dims`` None means any
    head dim. Raises ValueError for a name that is not one of ``impls`` (or "auto"), in ``impl`` or in
    ``$env_var``, and TritonUnavailableError when the answer is "triton" without triton.
    """
    if impl == "auto":
        forced = os.environ.get(env_var, "")
        if forced in ("", "auto"):
            supported = (head_dim is None or triton_head_dims is None or head_dim in triton_head_dims) and (
                dtype is None or dtype in triton_dtypes
            )
            on_cuda = torch.device(device).type == "cuda"
            return "triton" if on_cuda and triton_importable and supported else "torch"
        if forced not in impls:
            raise ValueError(
                f"${env_var}={forced!r} is not an implementation of {kernel}; set it to one of "
                f"{', '.join(impls)}, or unset it"
            )
        impl = forced
    elif impl not in impls:
        raise ValueError(f"unknown impl {impl!r} for {kernel}; choose one of auto, {', '.join(impls)}")
    if impl == "triton" and not triton_importable:
        raise TritonUnavailableError(
            f"{kernel} with impl='triton' needs the triton package, which cannot be imported here: "
            "pip install 'triton>=3.6' (CUDA tensors; on CPU only under TRITON_INTERPRET=1, for tests), "
            "or use impl='torch' (or 'auto', which picks torch without triton)"
        )
    return impl
