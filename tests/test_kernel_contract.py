"""The contract every kernel module keeps (kernels/_common.py): one resolve_impl signature and meaning,
one error when Triton is missing, environment read at call time, no side effects at import."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rdistill.kernels import TritonUnavailableError

pytest.importorskip("triton", reason="triton is not installed")

ce = importlib.import_module("rdistill.kernels.fused_linear_ce")
va = importlib.import_module("rdistill.kernels.varlen_attention")
MODULES = pytest.mark.parametrize("mod", [ce, va], ids=["fused_linear_ce", "varlen_attention"])


def _call(mod, impl: str):
    """One tiny CPU call of the module's public function with ``impl``."""
    if mod is ce:
        h, w = torch.randn(3, 16), torch.randn(5, 16)
        return ce.fused_linear_cross_entropy(h, w, torch.tensor([0, 4, -100]), impl=impl)
    q = torch.randn(3, 2, 16)
    return va.varlen_attention(q, q, q, torch.tensor([0, 3], dtype=torch.int32), 3, impl=impl)


def test_resolve_impl_has_one_signature():
    assert inspect.signature(ce.resolve_impl) == inspect.signature(va.resolve_impl)
    assert list(inspect.signature(va.resolve_impl).parameters) == ["impl", "device", "head_dim", "dtype"]


@MODULES
def test_auto_picks_triton_on_cuda_only(mod, monkeypatch):
    monkeypatch.delenv(mod.ENV_IMPL, raising=False)
    assert mod.resolve_impl("auto", "cpu") == "torch"
    assert mod.resolve_impl("auto", torch.device("cuda", 0)) == "triton"
    assert mod.resolve_impl("auto", "cuda", dtype=torch.float64) == "torch"
    assert mod.resolve_impl("torch", "cuda") == "torch"


@MODULES
def test_unknown_names_are_a_value_error(mod, monkeypatch):
    monkeypatch.delenv(mod.ENV_IMPL, raising=False)
    with pytest.raises(ValueError, match=r"unknown impl 'cuda' for \w+; choose one of auto, torch, triton"):
        mod.resolve_impl("cuda", "cpu")
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        _call(mod, "cuda")


@MODULES
def test_missing_triton_is_one_error(mod, monkeypatch):
    monkeypatch.delenv(mod.ENV_IMPL, raising=False)
    monkeypatch.setattr(mod, "triton", None)
    assert issubclass(TritonUnavailableError, ImportError)
    with pytest.raises(TritonUnavailableError, match=r"pip install 'triton>=3\.6'.*impl='torch'"):
        mod.resolve_impl("triton", "cuda")
    with pytest.raises(TritonUnavailableError):
        _call(mod, "triton")
    assert mod.resolve_impl("auto", "cuda") == "torch"
    monkeypatch.setenv(mod.ENV_IMPL, "triton")
    with pytest.raises(TritonUnavailableError):
        mod.resolve_impl("auto", "cpu")


@MODULES
def test_environment_is_read_at_call_time(mod, monkeypatch):
    assert mod.ENV_IMPL in ("RDISTILL_CE_IMPL", "RDISTILL_ATTN_IMPL")
    monkeypatch.delenv(mod.ENV_IMPL, raising=False)
    assert mod.resolve_impl("auto", "cpu") == "torch"
    monkeypatch.setenv(mod.ENV_IMPL, "triton")
    assert mod.resolve_impl("auto", "cpu") == "triton"
    monkeypatch.setenv(mod.ENV_IMPL, "torch")
    assert mod.resolve_impl("auto", "cuda") == "torch"
    monkeypatch.setenv(mod.ENV_IMPL, "auto")
    assert mod.resolve_impl("auto", "cuda") == "triton"
    monkeypatch.setenv(mod.ENV_IMPL, "fast")
    with pytest.raises(ValueError, match=f"\\${mod.ENV_IMPL}='fast' is not an implementation"):
        mod.resolve_impl("auto", "cpu")
    monkeypatch.delenv(mod.ENV_IMPL)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the kernels were jitted for the interpreter; refused now
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        _call(mod, "triton")


def test_attention_autotuning_reads_the_environment_at_call_time(monkeypatch):
    """All configs stay in the autotuner; the pruner narrows them when called, and under the interpreter
    to one config that is never timed (triton 3.6 would time it through the GPU driver)."""
    kernel = va._attn_fwd
    assert len(kernel.configs) > 1
    prune = kernel.early_config_prune
    fp16 = {"Q": torch.empty(0, dtype=torch.float16)}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert len(prune(kernel.configs, fp16, D=64)) == 1
    assert kernel.do_bench(lambda: pytest.fail("the interpreter must time nothing"), quantiles=(0.5, 0.2)) == [0, 0]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv(va.ENV_AUTOTUNE, raising=False)
    assert prune(kernel.configs, fp16, D=64) == kernel.configs
    monkeypatch.setenv(va.ENV_AUTOTUNE, "0")
    assert len(prune(kernel.configs, fp16, D=64)) == 1


def test_import_queries_no_device_and_imports_nothing_of_rdistill():
    """Importing the kernels in a fresh interpreter whose CUDA queries all raise."""
    code = (
        "import sys, torch\n"
        "def boom(*a, **k): raise AssertionError('device queried at import')\n"
        "for name in ('is_available', 'device_count', 'current_device', 'get_device_name', 'init'):\n"
        "    setattr(torch.cuda, name, boom)\n"
        "import rdistill.kernels\n"
        "mods = sorted(m for m in sys.modules if m.startswith('rdistill') and not m.startswith('rdistill.kernels'))\n"
        "assert mods == ['rdistill'], mods\n"
        "assert 'transformers' not in sys.modules\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent)
    assert out.returncode == 0, out.stderr[-2000:]
