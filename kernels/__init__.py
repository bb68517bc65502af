"""rdistill.kernels: standalone compute kernels (torch and triton only; nothing of rdistill's).

Each kernel module holds the public function, its pure-PyTorch twin (``impl="torch"``: the CPU path,
the test oracle and the benchmark baseline) and the FLOP formulas of what it computes, so that the
library's FLOP ledger can count every call without importing anything back from here. All of them keep
one contract (``_common.py``): ``resolve_impl(impl, device, *, head_dim=None, dtype=None)`` with the same
meaning, ``TritonUnavailableError`` when ``impl="triton"`` is asked for without triton, environment
variables read at call time, and no side effects at import.
"""

from ._common import TritonUnavailableError
from .fused_linear_ce import fused_linear_cross_entropy, linear_ce_flops
from .fused_linear_ce import resolve_impl as resolve_ce_impl
from .varlen_attention import resolve_impl as resolve_attention_impl
from .varlen_attention import varlen_attention, varlen_attention_flops

__all__ = [
    "TritonUnavailableError",
    "fused_linear_cross_entropy",
    "linear_ce_flops",
    "resolve_attention_impl",
    "resolve_ce_impl",
    "varlen_attention",
    "varlen_attention_flops",
]
