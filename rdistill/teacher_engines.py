"""Generation engines for the teacher: rendered prompts in, completions out.

``transformers`` (the default; CPU or GPU): the prompts of a batch are left-padded and generated together
with a KV cache by ``generate``. Sampling draws from torch's generator seeded with the batch's first seed,
so a batch (and so a resumed or sharded run, which keeps the batches) samples the same tokens again on
the same machine and software.

``vllm`` (optional, the engine at scale): imported only when asked for. Each prompt is sent as token ids
(tokenised here, exactly as for transformers) with its own seed.

Both stop a completion at any of the teacher's EOS ids (the tokenizer's and its generation_config's)
or at the mode's cap. The model's generation_config sampling defaults are not used: the mode's
temperature, top-p and top-k are passed explicitly (0 temperature: greedy). Inference FLOPs are counted
by rdistill.flops.ledger.generation_flops for each completion's prompt and output lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from rdistill.data.tokenize import load_tokenizer
from rdistill.evaluate import decoder
from rdistill.flops.ledger import ModelShape, generation_flops
from rdistill.teacher_config import EngineName, ModeSampling

@dataclass(frozen=True)
class Completion:
    text: str
    """Decoded without special tokens (think tags kept)."""
    prompt_tokens: int
    output_tokens: int
    """Generated tokens, the EOS included when reached."""
    ended: bool
    """Stopped at an EOS (else at the cap)."""
    flops_exact: int = 0
    flops_paper: int = 0


class Engine(Protocol):
    tokenizer: object
    name: str

    def generate(self, prompts: list[str], sampling: ModeSampling, seeds: list[int]) -> list[Completion]: ...

    def describe(self) -> dict: ...


def _eos_ids(tok, model_dir: Path) -> list[int]:
    ids = [tok.eos_token_id]
    try:
        from transformers import GenerationConfig

        extra = GenerationConfig.from_pretrained(model_dir).eos_token_id
    except (OSError, ValueError):
        extra = None
    for i in extra if isinstance(extra, list) else [extra]:
        if isinstance(i, int) and i not in ids:
            ids.append(i)
    return ids


def _flops(shape: ModelShape | None, prompt_tokens: int, output_tokens: int) -> tuple[int, int]:
    if shape is None or output_tokens < 1:
        return 0, 0
    f = generation_flops(shape, prompt_tokens, output_tokens)
    return f["exact"], f["paper"]


def _cut(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], True
    return ids, False


class TransformersEngine:
    """Batched generation with transformers' ``generate`` (left padding, KV cache, sdpa attention)."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "auto") -> None:
        from transformers import AutoModelForCausalLM

        self.model_dir = Path(model_dir)
        _check_folder(self.model_dir)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.dtype = resolve_teacher_dtype(dtype, self.device)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.net = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self.dtype, attn_implementation="sdpa")
        self.net.to(self.device).eval()
        self.shape = ModelShape.from_model(self.net)
        self.eos = _eos_ids(self.tokenizer, self.model_dir)
        self._decode = decoder(self.tokenizer)

    @torch.no_grad()
    def generate(self, prompts: list[str], sampling: ModeSampling, seeds: list[int]) -> list[Completion]:
        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        options = dict(do_sample=False)
        if sampling.temperature > 0:
            options = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            torch.manual_seed(seeds[0])
        out = self.net.generate(**enc, max_new_tokens=sampling.max_new_tokens, eos_token_id=self.eos,
                                pad_token_id=tok.pad_token_id, use_cache=True, repetition_penalty=1.0, **options)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        done = []
        for row, ids in enumerate(new):
            ids, ended = _cut(ids, set(self.eos))
            n_prompt = int(enc["attention_mask"][row].sum())
            fe, fp = _flops(self.shape, n_prompt, len(ids))
            done.append(Completion(self._decode(ids), n_prompt, len(ids), ended, fe, fp))
        return done

    def describe(self) -> dict:
        return {"engine": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "model_type": self.net.config.model_type, "parameters": self.shape.params_total,
                "eos_token_ids": self.eos}


class VllmEngine:
    """vLLM's offline ``LLM.generate`` on token-id prompts, one seed per prompt."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, *, dtype: str = "auto", tensor_parallel_size: int = 1) -> None:
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError("--engine vllm needs the vllm package (pip install vllm, on a CUDA machine); "
                               "or use --engine transformers") from e
        from transformers import AutoConfig

        self.model_dir = Path(model_dir)
        _check_folder(self.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.eos = _eos_ids(self.tokenizer, self.model_dir)
        self.dtype = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]
        self.llm = vllm.LLM(model=str(self.model_dir), dtype=self.dtype, tensor_parallel_size=tensor_parallel_size,
                            generation_config="vllm")
        self._vllm = vllm
        try:
            self.shape: ModelShape | None = ModelShape.from_config(AutoConfig.from_pretrained(self.model_dir))
        except ValueError:
            self.shape = None
        self._decode = decoder(self.tokenizer)

    def generate(self, prompts: list[str], sampling: ModeSampling, seeds: list[int]) -> list[Completion]:
        greedy = sampling.temperature == 0
        params = [self._vllm.SamplingParams(
            max_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            top_k=-1 if greedy or sampling.top_k == 0 else sampling.top_k, seed=seed, stop_token_ids=self.eos,
            skip_special_tokens=False) for seed in seeds]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        done = []
        for prompt_ids, o in zip(ids, outs):
            gen, ended = _cut(list(o.outputs[0].token_ids), set(self.eos))
            ended = ended or o.outputs[0].finish_reason == "stop"
            fe, fp = _flops(self.shape, len(prompt_ids), len(gen))
            done.append(Completion(self._decode(gen), len(prompt_ids), len(gen), ended, fe, fp))
        return done

    def describe(self) -> dict:
        return {"engine": self.name, "dtype": self.dtype, "vllm": self._vllm.__version__,
                "parameters": None if self.shape is None else self.shape.params_total, "eos_token_ids": self.eos}


def resolve_teacher_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on a GPU that has it (else fp16), fp32 on a CPU."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype != "auto":
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; choose auto, bf16, fp16 or fp32")
        return table[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _check_folder(path: Path) -> None:
    if not path.is_dir() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json); give the folder that "
                                "save_pretrained wrote, with the tokenizer beside the weights")


def make_engine(name: EngineName, model_dir: str | Path, *, device: str = "auto", dtype: str = "auto") -> Engine:
    if name == "transformers":
        return TransformersEngine(model_dir, device=device, dtype=dtype)
    if name == "vllm":
        if device not in ("auto", "cuda"):
            raise ValueError("--engine vllm runs on the GPU; leave --device at auto")
        return VllmEngine(model_dir, dtype=dtype)
    raise ValueError(f"unknown engine {name!r}; choose transformers or vllm")
