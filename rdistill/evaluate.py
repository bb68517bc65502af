"""Evaluating a student: greedy generation with a KV cache, answer extraction, accuracy, inference FLOPs.

Each held-out prompt is formatted as in training (chat template, generation prompt) and generated
greedily until EOS or ``max_new_tokens``. Inference FLOPs per query are counted for the actual prompt
and output lengths, by the exact count and by the paper's prefill + decode formula.

Answers are scored by rdistill.scoring's rules (after ``</think>``, math-aware equivalence, option
letters for multiple choice).
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
from rdistill.scoring import CLOSE, OPEN, SCORING, Mode, gold_answer, score

@dataclass
class Generation:
    """One held-out output (a line of generations.jsonl)."""

    prompt_tokens: int
    output_tokens: int
    text: str
    correct: bool
    family: str
    flops_exact: int
    flops_paper: int
    mode: Mode = "ift"
    """"reasoning" (the output opened a think block, rule 1) or "ift"."""
    answer: str | None = None
    """The extracted answer; None: no answer."""
    gold: str | None = None
    """The gold answer it was compared with (the ``answer`` column, else ift's last box)."""
    unclosed_think: bool = False
    hit_limit: bool = False
    """Generation reached max_new_tokens without EOS."""
    truncated: bool = False
    """unclosed_think or hit_limit."""


def decoder(tok: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    """Decodes without special tokens, except that think tags a tokenizer made special are kept."""
    keep = {tok.convert_tokens_to_ids(t) for t in (OPEN, CLOSE) if t in tok.all_special_tokens}
    if not keep:
        return lambda ids: tok.decode(ids, skip_special_tokens=True)
    drop = set(tok.all_special_ids) - keep
    return lambda ids: tok.decode([i for i in ids if i not in drop], skip_special_tokens=False)


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
    """Greedy outputs for ``examples`` (batched, left-padded, KV cache, sdpa attention), scored by the
    module's rules; ``system_prompt`` as in rdistill.data.tokenize.prompt_text (training used the same)."""
    previous = net.config._attn_implementation
    net.set_attn_implementation("sdpa")
    net.eval()
    shape = ModelShape.from_model(net)
    device = next(net.parameters()).device
    decode = decoder(tok)
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
                ended = tok.eos_token_id is not None and tok.eos_token_id in ids
                n_out = ids.index(tok.eos_token_id) + 1 if ended else len(ids)
                text = decode(ids[:n_out])
                n_prompt = int(enc["attention_mask"][row].sum())
                fl = generation_flops(shape, n_prompt, n_out)
                s = score(text, examples[i], opened=texts[row].rstrip().endswith(OPEN))
                hit_limit = not ended and n_out >= max_new_tokens
                results[i] = Generation(
                    n_prompt, n_out, text, s.correct, examples[i].family, fl["exact"], fl["paper"],
                    mode=s.mode, answer=s.answer, gold=gold_answer(examples[i]), unclosed_think=s.unclosed,
                    hit_limit=hit_limit, truncated=s.unclosed or hit_limit,
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
    fams = sorted(fam.items())
    right = [g.output_tokens for g in gens if g.correct]
    wrong = [g.output_tokens for g in gens if not g.correct]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    reasoning = lambda gs: mean([float(g.mode == "reasoning") for g in gs])  # noqa: E731
    no_answer = lambda gs: sum(g.answer is None for g in gs)  # noqa: E731
    truncated = lambda gs: sum(g.truncated for g in gs)  # noqa: E731
    return EvalResult(
        accuracy=mean([float(g.correct) for g in gens]),
        by_family={f: mean([float(g.correct) for g in gs]) for f, gs in fams},
        chance={f: chance.get(f) for f, _ in fams},
        n=len(gens),
        n_by_family={f: len(gs) for f, gs in fams},
        mean_output_tokens=mean([g.output_tokens for g in gens]),
        mean_output_tokens_correct=mean(right),
        mean_output_tokens_wrong=mean(wrong),
        mean_prompt_tokens=mean([g.prompt_tokens for g in gens]),
        inference_flops_per_query=InferenceFlops(
            exact=mean([g.flops_exact for g in gens]), paper=mean([g.flops_paper for g in gens])
        ),
        max_new_tokens=max_new_tokens,
        reasoning_mode=reasoning(gens),
        reasoning_mode_by_family={f: reasoning(gs) for f, gs in fams},
        no_answer=no_answer(gens),
        no_answer_by_family={f: no_answer(gs) for f, gs in fams},
        truncated=truncated(gens),
        truncated_by_family={f: truncated(gs) for f, gs in fams},
        unclosed_think=sum(g.unclosed_think for g in gens),
        hit_max_new_tokens=sum(g.hit_limit for g in gens),
        scoring=SCORING,
    )
