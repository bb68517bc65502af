"""The settings of ``rdistill data generate`` (a light module: the command line reads it before any model
library is imported)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rdistill.typed import to_dict

EngineName = Literal["transformers", "vllm"]
Switch = Literal["auto", "on", "off"]
Keep = Literal["agree", "all"]
UNCHECKED = ("out", "batch_size", "keep")
"""Options a rerun may change: where the files are named from; the batch size (which changes the batches,
not the answers' meaning: a resumed run with another batch size is not bitwise one run); and --keep (a
rerun rebuilds the training file from the log, so ``--keep all`` after ``agree`` only rewrites it)."""


@dataclass(frozen=True)
class ModeSampling:
    """How one mode's answers are sampled."""

    max_new_tokens: int
    """Cap on each answer's tokens (EOS included); an answer that reaches it is truncated."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens with this much probability."""
    top_k: int = 0
    """Top-k sampling; 0 is off."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"need temperature >= 0, 0 < top-p <= 1 and top-k >= 0; got {self.temperature}, "
                             f"{self.top_p}, {self.top_k}")


@dataclass(frozen=True)
class GenerateConfig:
    """``rdistill data generate``: a teacher answers every prompt in IFT and in reasoning mode."""

    teacher: str
    """Local Hugging Face causal LM folder (weights, config, tokenizer with its chat template): the teacher."""
    prompts: str
    """Prompt file: prompt (+ family, answer, choices); jsonl, json, parquet, a datasets folder or a cached Hub id."""
    out: str
    """The training file, PAIRS.jsonl; PAIRS.generations.jsonl (every answer and its quality columns) and PAIRS.manifest.json go beside it."""
    engine: EngineName = "transformers"
    """transformers (batched generate with a KV cache, CPU or GPU) or vllm (needs the vllm package and a GPU)."""
    thinking_switch: Switch = "auto"
    """The chat template's enable_thinking switch: auto (used when the template has one), on (required), off (ignored)."""
    ift_system: str | None = None
    """System prompt of IFT mode (with --reasoning-system, the toggle for a template without enable_thinking)."""
    reasoning_system: str | None = None
    """System prompt of reasoning mode."""
    ift_template: str | None = None
    """Jinja chat template file for IFT mode, instead of the tokenizer's."""
    reasoning_template: str | None = None
    """Jinja chat template file for reasoning mode."""
    ift: ModeSampling = field(default_factory=lambda: ModeSampling(max_new_tokens=1024))
    reasoning: ModeSampling = field(default_factory=lambda: ModeSampling(max_new_tokens=8192))
    seed: int = 0
    """Seed of sampling: each prompt and mode draws from its own seed made from it (transformers seeds a batch with its first prompt's); greedy decoding needs none."""
    batch_size: int = 32
    """Prompts generated together (per mode); the unit of writing and of resumption."""
    keep: Keep = "agree"
    """What reaches the training file: agree (both answers ended, think block closed, the two answers agree, and match the gold answer if there is one) or all."""
    num_shards: int = 1
    """Split the prompts into this many shards (by batch), one command per shard; join them with `rdistill data merge`."""
    shard: int = 0
    """Which shard this command answers (0-based)."""
    columns: str | None = None
    """Column mapping of the prompt file, e.g. 'prompt=question,answer=gold,choices=options'."""
    split: str | None = None
    """Split of a prompt source with several (default: train, or its only split)."""
    families: tuple[str, ...] | None = None
    """Answer only prompts of these families (comma-separated)."""
    limit: int | None = None
    """Answer only the first N prompts (after --families)."""
    skip_bad_rows: bool = False
    """Skip (and count) malformed prompt rows instead of stopping at the first."""
    device: str = "auto"
    """transformers engine: auto (cuda when there is one), cpu, cuda, cuda:1..."""
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Teacher weights: auto is bf16 on a GPU (fp16 without bf16), fp32 on a CPU."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.num_shards < 1 or not 0 <= self.shard < self.num_shards:
            raise ValueError(f"need --num-shards >= 1 and 0 <= --shard < --num-shards, got shard {self.shard} of "
                             f"{self.num_shards}")
        if self.keep not in ("agree", "all") or self.engine not in ("transformers", "vllm"):
            raise ValueError(f"--keep is agree or all and --engine transformers or vllm; got {self.keep}, {self.engine}")

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if k != "out"}

    def sampling(self, mode: str) -> ModeSampling:
        return self.ift if mode == "ift" else self.reasoning
