"""Students: named presets, local checkpoints, and the forward pass on a PackedBatch.

Training runs the Hugging Face decoder body (``model.model``) on one flat packed row with
``attn_implementation="rdistill_varlen"``: an attention function registered with transformers'
AttentionInterface (``register_attention``, called where a student is built) that reads the batch's
``cu_seqlens`` and calls ``rdistill.kernels.varlen_attention``, so no token attends across a document
boundary whatever transformers' own packing detection does. Because that name has no mask function
registered, transformers builds no [T, T] mask at all. The LM head and loss are fused
(``rdistill.kernels.fused_linear_cross_entropy``); only positions with a label are multiplied by the
head. Generation switches the same model to ``sdpa`` with ordinary padding masks and a KV cache.

Which kernel implementations run is decided once per run: ``resolve_kernels`` returns a ``KernelPlan``
(attention impl, loss impl, activation dtype) that the forward passes to the kernels explicitly and the
FLOP ledger counts, so what runs and what is counted cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from rdistill.data.batch import IGNORE_INDEX, PackedBatch
from rdistill.kernels import fused_linear_cross_entropy, resolve_attention_impl, resolve_ce_impl, varlen_attention

ATTN_IMPL = "rdistill_varlen"


@dataclass(frozen=True)
class StudentPreset:
    """A Qwen2-architecture student sized for CPU work. Parameter counts are for the built-in vocabulary."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    description: str


PRESETS: dict[str, StudentPreset] = {
    "tiny": StudentPreset(128, 4, 4, 2, 384, "~0.8M parameters; the default: a study in minutes on 2 cores"),
    "small": StudentPreset(256, 6, 4, 2, 768, "~4.5M parameters"),
    "base": StudentPreset(384, 8, 6, 2, 1152, "~14M parameters"),
}


# Shapes of the paper's students (Qwen2.5 base models), for counting FLOPs without building them.
QWEN25_SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "qwen2.5-14b": dict(hidden_size=5120, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                        intermediate_size=13824, vocab_size=152064, tie_word_embeddings=False),
}


PRESET_LR = 3e-3
"""Peak learning rate of a preset trained from scratch."""

PAPER_LR: tuple[tuple[float, float, float], ...] = (
    # (parameters, reasoning peak LR, IFT peak LR): PAPER.md's per-size values for Qwen2.5 students
    (0.5e9, 2e-5, 1e-5),
    (1.5e9, 1e-5, 7e-6),
    (3e9, 7e-6, 5e-6),
    (7e9, 5e-6, 3e-6),
    (14e9, 3e-6, 1e-6),
)


def default_lr(model: str, params: int, fmt: str) -> float:
    """The peak learning rate of training in format ``fmt`` (ift, reasoning) when none is given.

    A preset (trained from scratch) gets ``PRESET_LR``. A checkpoint gets the paper's value for the
    format and the size nearest its parameter count on a log scale (anything under 0.5B takes the 0.5B
    values). How an arm's phases use the two: rdistill.run.arm_peaks.
    """
    if fmt not in ("ift", "reasoning"):
        raise ValueError(f"unknown format {fmt!r}: ift or reasoning")
    if model in PRESETS:
        return PRESET_LR
    size, reasoning, ift = min(PAPER_LR, key=lambda row: abs(math.log(max(params, 1) / row[0])))
    return reasoning if fmt == "reasoning" else ift


def shape_config(name: str) -> PretrainedConfig:
    """The transformers config of one of the paper's student shapes (``QWEN25_SHAPES``)."""
    if name not in QWEN25_SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(QWEN25_SHAPES)}")
    return AutoConfig.for_model("qwen2", use_sliding_window=False, **QWEN25_SHAPES[name])


def preset_config(name: str, vocab_size: int, *, max_position_embeddings: int = 4096, **tokens) -> PretrainedConfig:
    """The transformers Qwen2Config of a preset, for a tokenizer of ``vocab_size`` tokens."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)} or pass a local path")
    p = PRESETS[name]
    fields = {k: v for k, v in asdict(p).items() if k != "description"}
    return AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        use_sliding_window=False,
        **fields,
        **tokens,
    )


@dataclass(frozen=True)
class KernelPlan:
    """The kernels a run's forward and backward use, resolved once: what the ledger counts."""

    attention: str
    """varlen_attention's impl: "torch", "triton" or "flash_attn"."""
    loss: str
    """fused_linear_cross_entropy's impl: "torch" or "triton"."""
    dtype: torch.dtype
    """Activation dtype (sets the Triton attention's tiles, hence its executed FLOPs)."""
    recompute: str = "none"
    """Activation checkpointing ("none", "full", "selective"; see ``apply_recompute``): its second
    forward is executed, never useful, FLOPs."""


def resolve_kernels(
    net: PreTrainedModel, device: torch.device | str, *, attention: str = "auto", loss: str = "auto",
    recompute: str = "none", dtype: torch.dtype | None = None,
) -> KernelPlan:
    """The kernel implementations ``net`` runs on ``device`` ("auto": the kernels' own choice, once), and
    the recomputation ``apply_recompute`` installed on it. ``dtype``: the compute dtype when it is not the
    parameters' own (FSDP2 gathers fp32 parameters in it)."""
    dtype = dtype or next(net.parameters()).dtype
    config = net.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return KernelPlan(
        attention=resolve_attention_impl(attention, device, head_dim=head_dim, dtype=dtype),
        loss=resolve_ce_impl(loss, device, head_dim=head_dim, dtype=dtype),
        dtype=dtype,
        recompute=recompute,
    )


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(dtype: str, model: str, device: torch.device | str) -> torch.dtype:
    """The student's weight and activation dtype for ``--dtype`` (ModelConfig.dtype).

    "auto": a checkpoint trains in bf16 (fp16 on a GPU without bf16); a preset trained from scratch in
    fp32 on a CPU (where bf16 matmuls are slower and the tiny presets gain nothing) and in bf16 on a GPU.
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    on_cuda = torch.device(device).type == "cuda"
    low = torch.bfloat16 if not on_cuda or torch.cuda.is_bf16_supported() else torch.float16
    if model in PRESETS:
        return low if on_cuda else torch.float32
    return low


RECOMPUTE = ("none", "full", "selective")


def _checkpointed(forward):
    """``forward`` run under non-reentrant activation checkpointing while gradients are recorded."""
    from torch.utils.checkpoint import checkpoint

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def decoder_layers(net: PreTrainedModel) -> list[torch.nn.Module]:
    """The decoder layers of ``net`` (``net.model.layers``)."""
    layers = getattr(getattr(net, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(net).__name__} has no model.layers: rdistill cannot checkpoint its activations")
    return list(layers)


def apply_recompute(net: PreTrainedModel, mode: str) -> None:
    """Activation checkpointing of ``net``'s decoder layers (``--recompute``), in place.

    "full": each decoder layer keeps only its input; backward runs the layer's forward again (memory
    for activations falls from every layer's to the layers' inputs plus one layer's). "selective":
    only each layer's MLP is recomputed: its three d_ff-wide intermediates are most of a layer's
    activations, and recomputing them costs the MLP's forward only. "none": nothing. The extra forward
    is executed work, counted by the ledger (``train_step_flops(recompute=...)``) as such.
    """
    if mode not in RECOMPUTE:
        raise ValueError(f"unknown recompute mode {mode!r}; choose one of {', '.join(RECOMPUTE)}")
    if mode == "none":
        return
    for layer in decoder_layers(net):
        target = layer if mode == "full" else layer.mlp
        target.forward = _checkpointed(type(target).forward.__get__(target))


def _varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function: [1, H, T, D] in, [1, T, H, D] out, per-document causal."""
    cu_seqlens, impl = kwargs.get("cu_seqlens"), kwargs.get("attn_impl")
    if cu_seqlens is None or impl is None:
        raise RuntimeError(
            f"{ATTN_IMPL} attention needs cu_seqlens, max_seqlen and attn_impl from a PackedBatch and a "
            "KernelPlan; call rdistill.model.packed_hidden_states, or switch the model to 'sdpa' for generation"
        )
    if query.shape[0] != 1:
        raise ValueError(f"{ATTN_IMPL} expects one flat packed row (batch size 1), got {query.shape[0]}")
    out = varlen_attention(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seqlens,
        kwargs["max_seqlen"],
        causal=True,
        softmax_scale=scaling,
        impl=impl,
    )
    return out.unsqueeze(0), None


def register_attention() -> None:
    """Make ``attn_implementation="rdistill_varlen"`` known to transformers (idempotent)."""
    AttentionInterface.register(ATTN_IMPL, _varlen_attention_forward)


def student_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """A freshly initialised model of ``config`` that trains on packed batches (rdistill's attention)."""
    register_attention()
    return AutoModelForCausalLM.from_config(config, attn_implementation=ATTN_IMPL)


def _meta_model(config: PretrainedConfig) -> PreTrainedModel:
    """The module tree of ``config`` on the meta device: no memory, no weights."""
    register_attention()
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, attn_implementation=ATTN_IMPL)


def _check_vocabulary(config: PretrainedConfig, vocab_size: int) -> None:
    vocab = getattr(config.get_text_config(), "vocab_size", None)
    if vocab is not None and vocab < vocab_size:
        raise ValueError(
            f"the model's vocabulary ({vocab}) is smaller than the tokenizer's ({vocab_size}); "
            "use the checkpoint's own tokenizer (--tokenizer PATH)"
        )


def check_student(model: str) -> None:
    """Raise ValueError, saying what to do, unless ``model`` is a preset or a checkpoint folder whose
    config transformers builds as a decoder with rdistill's packed attention. Reads no weights."""
    if model in PRESETS:
        return
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"model {model!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / 'config.json'}: transformers cannot read it ({e})") from e
    try:
        net = _meta_model(config)
    except (ValueError, TypeError, KeyError, ImportError) as e:
        raise ValueError(
            f"{path / 'config.json'}: transformers cannot build this {config.model_type!r} model as a causal "
            f"language model with rdistill's packed attention ({e}); pass a decoder checkpoint (Qwen2, Llama, ...)"
        ) from e
    if not isinstance(getattr(net, "model", None), torch.nn.Module):
        raise ValueError(
            f"{path / 'config.json'} describes a {config.model_type!r} model, not a decoder with a `model` body "
            "rdistill can train on packed rows; pass a decoder checkpoint (Qwen2, Llama, ...) or a preset"
        )


def student_skeleton(model: str, vocab_size: int, *, tokens: dict | None = None) -> PreTrainedModel:
    """The student (checked by ``check_student``) on the meta device, for a tokenizer of ``vocab_size``
    tokens: its shape and parameter counts before anything is trained. ValueError when the model's
    vocabulary is too small for the tokenizer."""
    config = (preset_config(model, vocab_size, **(tokens or {})) if model in PRESETS
              else AutoConfig.from_pretrained(model))
    _check_vocabulary(config, vocab_size)
    return _meta_model(config)


def build_student(
    model: str, vocab_size: int, *, tokens: dict | None = None, seed: int = 0, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """A fresh student from a preset name, or a local checkpoint (config + weights) from a folder, in
    ``dtype``. A preset is initialised in fp32 and then cast (the same initial weights, rounded, in every
    dtype); a checkpoint's weights are read straight into ``dtype``."""
    register_attention()
    torch.manual_seed(seed)
    path = Path(model)
    if model in PRESETS:
        net = student_from_config(preset_config(model, vocab_size, **(tokens or {})))
    elif path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        if has_weights:
            net = AutoModelForCausalLM.from_pretrained(path, attn_implementation=ATTN_IMPL, dtype=dtype)
        else:
            net = student_from_config(AutoConfig.from_pretrained(path))
    else:
        raise ValueError(
            f"model {model!r} is neither a preset ({', '.join(PRESETS)}) nor an existing checkpoint folder"
        )
    _check_vocabulary(net.config, vocab_size)
    for p in net.parameters():  # parameters only: buffers (rotary frequencies) stay fp32, as from_pretrained keeps them
        p.data = p.data.to(dtype)
    return net


def count_parameters(net: PreTrainedModel) -> dict[str, int]:
    """Unique parameters, total and without the input embedding (tied heads are counted once)."""
    seen, total = set(), 0
    for p in net.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = net.get_input_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - emb}


def packed_hidden_states(net: PreTrainedModel, batch: PackedBatch, kernels: KernelPlan) -> torch.Tensor:
    """Final hidden states [T, d] of a packed batch, each document attending only to itself."""
    out = net.model(
        input_ids=batch.input_ids[None],
        position_ids=batch.position_ids[None],
        use_cache=False,
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        attn_impl=kernels.attention,
    )
    return out.last_hidden_state[0]


def packed_loss_sum(net: PreTrainedModel, batch: PackedBatch, kernels: KernelPlan) -> torch.Tensor:
    """Sum of token cross-entropies over the batch's labelled positions (normalise outside)."""
    hidden = packed_hidden_states(net, batch, kernels)
    head = net.get_output_embeddings()
    return fused_linear_cross_entropy(
        hidden, head.weight, batch.labels, bias=head.bias, ignore_index=IGNORE_INDEX, reduction="sum",
        impl=kernels.loss,
    )
