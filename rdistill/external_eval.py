"""Evaluating any checkpoint (a run's student, a released student, a base model) the way a run evaluates
its arms: rdistill.evaluate's batched greedy generation with a KV cache, rdistill.scoring's rules,
inference FLOPs per query, and a folder the report can read.

Output folder::

    OUT/eval.json                   CheckpointEval: the model, the data, the EvalResult, the environment
    OUT/<arm>/generations.jsonl     every output with its score, lengths and FLOPs (a run's format)
    OUT/data/eval.jsonl             the evaluated rows (released schema)
    OUT/results.json                RunResults, only when the training FLOPs are known

A checkpoint in a run folder (``RUN/<arm>/model``) is that run's student: its run's results.json gives
the training FLOPs, parameters, budget, seed and config, so OUT/results.json is the run's own record of
the arm with the new evaluation in its ``eval`` block, and ``rdistill report`` places it like any point.
Any other checkpoint has no training cost on record and no results.json (RunResults has no way to say
"unknown training"); ``rdistill report`` reads its eval.json (rdistill.eval_record) and places it on the
inference-FLOPs axis only.

Defaults: the checkpoint's own tokenizer and chat template (a run's student: the tokenizer its run used), weights in the dtype they are stored in (a
run's student: its training dtype), ``max_new_tokens`` as a run sets it (1.5x the longest reference
reasoning answer + 8 when the data has them; else the run's setting for its student, else 1024).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rdistill.config import EvalConfig
from rdistill.data.loading import write_pairs
from rdistill.data.schema import PairedExample
from rdistill.data.sources import BUILTIN_TOKENIZER, builtin_tokenizer, checkpoint_tokenizer
from rdistill.data.tokenize import load_tokenizer
from rdistill.environment import capture
from rdistill.eval_record import EVAL_FILE, CheckpointError, CheckpointEval
from rdistill.evaluate import Generation, generate_answers, summarise
from rdistill.model import count_parameters
from rdistill.results import (
    TIME_FORMAT,
    ArmParameters,
    ArmResult,
    DataSummary,
    EvalResult,
    ResultsError,
    RunResults,
)
from rdistill.run import auto_max_new_tokens, write_generations

DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_ARM = "checkpoint"


@dataclass(frozen=True)
class Origin:
    """The run a checkpoint is the student of."""

    results_path: Path
    results: RunResults
    arm: ArmResult

    @property
    def tokenizer(self) -> str:
        """The tokenizer the run trained and evaluated with (rdistill.data.sources.resolve_tokenizer's
        choice): its --tokenizer, else its checkpoint's own, else the built-in one. Reloading the copy saved
        beside the student is not the same: AutoTokenizer gives a qwen2 folder Qwen2Tokenizer, whose
        pre-tokenizer replaces the built-in one's (rdistill.data.tokenize.load_tokenizer now reloads it right, but
        a run given --tokenizer keeps that folder's own settings)."""
        model = self.results.config.model
        return model.tokenizer or checkpoint_tokenizer(model.name) or BUILTIN_TOKENIZER


def run_origin(model_dir: str | Path) -> Origin | None:
    """The run of a checkpoint saved as ``RUN/<arm>/model`` (the arm complete in RUN/results.json), else None."""
    model = Path(model_dir).resolve()
    path = model.parent.parent / "results.json"
    if model.name != "model" or not path.is_file():
        return None
    try:
        results = RunResults.read(path)
        arm = results.arm(model.parent.name)
    except (ResultsError, KeyError):
        return None
    return Origin(path, results, arm) if arm.status == "complete" else None


def load_checkpoint(model_dir: str | Path, *, tokenizer: str | None = None, dtype: str = "auto",
                    device: str | torch.device = "cpu"):
    """(model, tokenizer) of a local checkpoint folder. ``tokenizer``: a folder, ``builtin``, or None for
    the checkpoint's own; ``dtype``: auto (as stored), bf16, fp16 or fp32."""
    from transformers import AutoModelForCausalLM

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: not a Hugging Face checkpoint folder (no config.json); give the folder that "
                              "save_pretrained wrote (a run's student is RUN/<arm>/model)")
    if tokenizer == BUILTIN_TOKENIZER:
        tok = builtin_tokenizer()
    elif tokenizer is not None or checkpoint_tokenizer(str(folder)) is not None:
        tok = load_tokenizer(tokenizer or folder)
    else:
        raise CheckpointError(f"{folder} holds no tokenizer; give --tokenizer FOLDER (or builtin for the synthetic data's)")
    torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(device)
    if net.config.vocab_size < len(tok):
        raise CheckpointError(f"{folder}: the model's vocabulary ({net.config.vocab_size}) is smaller than the "
                              f"tokenizer's ({len(tok)}); give the tokenizer it was trained with (--tokenizer)")
    return net, tok


def default_max_new_tokens(tok, examples: Sequence[PairedExample], origin: Origin | None) -> int:
    """As a run sets it: from the reference reasoning answers when the data has them, else the run's
    setting for its student, else DEFAULT_MAX_NEW_TOKENS."""
    with_reasoning = [ex for ex in examples if ex.reasoning.strip()]
    if with_reasoning:
        return auto_max_new_tokens(tok, with_reasoning)
    if origin is not None and origin.results.config.eval.max_new_tokens:
        return origin.results.config.eval.max_new_tokens
    return DEFAULT_MAX_NEW_TOKENS


def evaluate_checkpoint(
    net, tok, examples: Sequence[PairedExample], *, chance: dict[str, float] | None = None, max_new_tokens: int,
    batch_size: int = 64, system_prompt: str | None = None, on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Generation], EvalResult]:
    """Every example answered and scored exactly as a run's held-out evaluation (rdistill.evaluate)."""
    gens = generate_answers(net, tok, examples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            on_batch=on_batch, system_prompt=system_prompt)
    return gens, summarise(gens, chance or {}, max_new_tokens=max_new_tokens)


def write_eval_folder(
    out: str | Path, *, model_dir: str | Path, arm: str | None, net, examples: Sequence[PairedExample],
    gens: Sequence[Generation], result: EvalResult, data: DataSummary, started: float, batch_size: int,
    system_prompt: str | None = None, origin: Origin | None = None,
) -> CheckpointEval:
    """OUT/eval.json, OUT/<arm>/generations.jsonl, OUT/data/eval.jsonl, and OUT/results.json when the
    checkpoint is a run's student (see the module docstring)."""
    folder = Path(out)
    name = arm or (origin.arm.name if origin is not None else DEFAULT_ARM)
    params = count_parameters(net)
    cfg = net.config
    finished = time.time()
    record = CheckpointEval(
        model=str(model_dir), arm=name, data=data,
        parameters=ArmParameters(params["total"], params["non_embedding"], cfg.num_hidden_layers, cfg.hidden_size),
        eval=result, environment=capture(next(net.parameters()).device),
        started=time.strftime(TIME_FORMAT, time.gmtime(started)), finished=time.strftime(TIME_FORMAT, time.gmtime(finished)),
        seconds=finished - started, dtype=str(next(net.parameters()).dtype).replace("torch.", ""),
        system_prompt=system_prompt, origin=None if origin is None else str(origin.results_path),
        train_flops=None if origin is None else origin.arm.flops)
    (folder / name).mkdir(parents=True, exist_ok=True)
    write_generations(folder / name / "generations.jsonl", list(examples), list(gens))
    write_pairs(folder / "data" / "eval.jsonl", examples)
    if origin is not None:
        run = origin.results
        config = replace(run.config, eval=EvalConfig(enabled=True, max_new_tokens=result.max_new_tokens, batch_size=batch_size))
        summary = replace(data, train=run.data.train, rows_read=run.data.rows_read)
        results = RunResults(config=config, data=summary, environment=record.environment, started=record.started,
                             status="complete", finished=record.finished, fingerprint=run.fingerprint,
                             arms=[replace(origin.arm, name=name, eval=result)])
        results.write(folder / "results.json")
    record.write(folder / EVAL_FILE)
    return record
