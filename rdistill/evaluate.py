"""Evaluating a student: greedy generation with a KV cache, answer extraction, accuracy, inference FLOPs.

Each held-out prompt is formatted as in training (chat template, generation prompt), generated greedily
until EOS or ``max_new_tokens``, and scored by exact match of the last ``\\boxed{...}`` of the output
against the gold answer (whitespace collapsed; for multiple-choice families the option letter,
case-insensitive). An output with no box scores 0. Inference FLOPs per query are counted for the
actual prompt and output lengths, by the exact count and by the paper's prefill + decode formula.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rdistill.data.schema import PairedExample
from rdistill.data.tokenize import prompt_text
from rdistill.flops.ledger import ModelShape, generation_flops
from rdistill.results import EvalResult, InferenceFlops

BOX = "\\boxed{"


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces allowed), or None."""
    start = text.rfind(BOX)
    while start != -1:
        depth, i = 1, start + len(BOX)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(BOX) : i - 1]
        start = text.rfind(BOX, 0, start)
    return None


def normalise(answer: str) -> str:
    return " ".join(answer.split())


def find_gold_answer(ex: PairedExample) -> str | None:
    """The gold answer: the ``answer`` column, else the last ``\\boxed{}`` of ``ift``; None if neither."""
    return ex.answer if ex.answer is not None else extract_boxed(ex.ift)


def gold_answer(ex: PairedExample) -> str:
    boxed = find_gold_answer(ex)
    if boxed is None:
        raise ValueError(f"held-out example has no 'answer' and its ift has no \\boxed{{}}: {ex.messages[-1].content[:80]!r}")
    return boxed


def is_correct(output: str, ex: PairedExample) -> bool:
    got = extract_boxed(output)
    if got is None:
        return False
    want = gold_answer(ex)
    if ex.family.endswith("-mc"):
        return normalise(got).upper() == normalise(want).upper()
    return normalise(got) == normalise(want)


@dataclass
class Generation:
    prompt_tokens: int
    output_tokens: int
    text: str
    correct: bool
    family: str
    flops_exact: int
    flops_paper: int


@torch.no_grad()
def generate_answers(
    net: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: Sequence[PairedExample],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
    system_prompt: str | None = None,
) -> list[Generation]:
    """Greedy outputs for ``examples`` (batched, left-padded, KV cache, sdpa attention); ``system_prompt``
    as in rdistill.data.tokenize.prompt_text (training used the same)."""
    previous = net.config._attn_implementation
    net.set_attn_implementation("sdpa")
    net.eval()
    shape = ModelShape.from_model(net)
    device = next(net.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: sum(len(m.content) for m in examples[i].messages))
    results: dict[int, Generation] = {}
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            texts = [prompt_text(tok, examples[i].prompt, system_prompt) for i in idx]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = net.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
                use_cache=True,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                n_out = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
                text = tok.decode(ids[:n_out], skip_special_tokens=True)
                n_prompt = int(enc["attention_mask"][row].sum())
                fl = generation_flops(shape, n_prompt, n_out)
                results[i] = Generation(
                    n_prompt, n_out, text, is_correct(text, examples[i]), examples[i].family, fl["exact"], fl["paper"]
                )
            if on_batch is not None:
                on_batch(len(idx))
    finally:
        net.set_attn_implementation(previous)
    return [results[i] for i in range(len(examples))]


def summarise(gens: Sequence[Generation], chance: Mapping[str, float], max_new_tokens: int | None = None) -> EvalResult:
    """results.json's ``eval`` block; ``chance`` is the data source's chance accuracy by family."""
    fam: dict[str, list[Generation]] = defaultdict(list)
    for g in gens:
        fam[g.family].append(g)
    right = [g.output_tokens for g in gens if g.correct]
    wrong = [g.output_tokens for g in gens if not g.correct]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return EvalResult(
        accuracy=mean([float(g.correct) for g in gens]),
        by_family={f: mean([float(g.correct) for g in gs]) for f, gs in sorted(fam.items())},
        chance={f: chance.get(f) for f in sorted(fam)},
        n=len(gens),
        n_by_family={f: len(gs) for f, gs in sorted(fam.items())},
        mean_output_tokens=mean([g.output_tokens for g in gens]),
        mean_output_tokens_correct=mean(right),
        mean_output_tokens_wrong=mean(wrong),
        mean_prompt_tokens=mean([g.prompt_tokens for g in gens]),
        inference_flops_per_query=InferenceFlops(
            exact=mean([g.flops_exact for g in gens]), paper=mean([g.flops_paper for g in gens])
        ),
        max_new_tokens=max_new_tokens,
    )
