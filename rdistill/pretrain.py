"""A pretrained preset student: trained once on a generic copying corpus, cached, then distilled.

The paper distils into pretrained students. A preset trained from scratch on the built-in data first has
to learn to copy tokens from its prompt (what induction heads do), and it learns that late and suddenly:
measured on the tiny preset, no arm leaves chance on any family before about 3e12 FLOPs, and an IFT
student does not even learn "Which letter is last in: q r g b" by 2.5e12 FLOPs. Copying is not what the
study compares, so ``--pretrain FLOPS`` gives the preset that skill first: the student is trained (as an
IFT arm, to FLOPS, not counted in any arm's budget) on ``Write: w1 ... wn`` -> ``w1 ... wn`` with words
drawn from the tokenizer's own vocabulary, a corpus that holds no task of any family. Each arm then
starts from that checkpoint, keeps the preset's learning rate and dtype, and counts only its own FLOPs.

The checkpoint is cached under ``$RDISTILL_CACHE/pretrained/<key>`` (default ``~/.cache/rdistill``),
the key a hash of what determines it: the preset's shape, the tokenizer's vocabulary, the FLOPs, the
corpus version, the parallel layout and the threads. It is made once (seed 0: every replicate seed of a
study starts from the same pretrained student, as a study of a real checkpoint would) and then reused by
every run and sweep point; workers that build it at the same time each build it in their own folder and
the first to finish publishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from rdistill import distributed
from rdistill.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from rdistill.data.loading import write_pairs
from rdistill.data.schema import PairedExample
from rdistill.hooks import QuietHooks
from rdistill.io import write_json_atomic

CORPUS_VERSION = 1
CORPUS_ROWS = 20000
WARMUP_STEPS = 80
"""Warmup of the pretraining schedule. With the default 5% of its ~400 steps (20) the tiny preset stalled at
the unigram loss (4.0 after 2e12 FLOPs); with 80 it copies (loss 0.002)."""
MAX_WORD_CHARS = 12


def cache_dir() -> Path:
    return Path(os.environ.get("RDISTILL_CACHE") or Path.home() / ".cache" / "rdistill")


def corpus_words(tok) -> list[str]:
    """The words of the tokenizer's vocabulary that are whole alphanumeric tokens, sorted, and that it knows
    both after a space and at the start of a line (a word-level vocabulary may know a word in one place only)."""
    words = set()
    for token in tok.get_vocab():
        if token in tok.all_special_tokens:
            continue
        text = tok.convert_tokens_to_string([token]).strip()
        known = tok.unk_token not in (*tok.tokenize(text), *tok.tokenize(" " + text))
        if text.isalnum() and len(text) <= MAX_WORD_CHARS and known:
            words.add(text)
    if len(words) < 10:
        raise ValueError(f"the tokenizer's vocabulary has only {len(words)} whole alphanumeric words: too few for the "
                         "copying corpus of --pretrain")
    return sorted(words)


def copy_corpus(tok, n: int = CORPUS_ROWS, seed: int = 0) -> list[PairedExample]:
    """``n`` rows ``Write: w1 ... wk`` -> ``w1 ... wk`` (k from 2 to 12), the same text in both fields."""
    words, rng = corpus_words(tok), random.Random(f"rdistill-copy:{seed}")
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        rows.append(PairedExample(prompt=f"Write: {text}", ift=text, reasoning=text))
    return rows


def pretrain_key(cfg: RunConfig, tok) -> str:
    """What determines the pretrained student, hashed."""
    from rdistill.model import PRESETS

    shape = {k: v for k, v in asdict(PRESETS[cfg.model.name]).items() if k != "description"}
    vocab = hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()
    what = {"preset": cfg.model.name, "shape": shape, "vocab": vocab,
            "flops": cfg.model.pretrain, "corpus": CORPUS_VERSION, "parallel": cfg.parallel,
            "world": distributed.launched_size(), "threads": cfg.threads, "dtype": cfg.model.dtype,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _pretrain_config(cfg: RunConfig, folder: Path) -> RunConfig:
    return RunConfig(
        train=TrainConfig(budget_flops=cfg.model.pretrain, warmup_steps=WARMUP_STEPS, save_every=0),
        out=str(folder / "run"), arms=("ift",), seed=0, threads=cfg.threads, log_every=0, parallel=cfg.parallel,
        data=DataConfig(path=str(folder / "copy.jsonl")), eval=EvalConfig(enabled=False),
        model=replace(cfg.model, tokenizer=str(folder / "tokenizer"), pretrain=0.0),
    )


def pretrained_student(cfg: RunConfig, tok, w: distributed.World, say: Callable[[str], None]) -> tuple[Path, dict]:
    """The folder of the cached pretrained student for ``cfg`` (built first if missing), and its record
    (key, FLOPs, steps, final loss, seconds, corpus). Every rank of a torchrun job calls this."""
    from rdistill.run import run  # a pretraining is a run: run.py calls this module

    key = pretrain_key(cfg, tok)
    final = cache_dir() / "pretrained" / key
    if not (final / "pretrain.json").is_file():
        say(f"pretraining the {cfg.model.name} student on a copying corpus to {cfg.model.pretrain:.3g} FLOPs "
            f"(once; cached in {final})")
        tag = [uuid.uuid4().hex[:8]]
        if w.distributed:
            import torch.distributed as dist

            dist.broadcast_object_list(tag, src=0)
        folder = final.with_name(f"{key}.building-{tag[0]}")
        if w.is_main:
            folder.mkdir(parents=True)
            tok.save_pretrained(folder / "tokenizer")
            write_pairs(folder / "copy.jsonl", copy_corpus(tok))
        distributed.barrier(w)
        start = time.time()
        try:
            result = run(_pretrain_config(cfg, folder), _Progress(say))
            if w.is_main:
                arm = result.arms[0]
                record = {"key": key, "preset": cfg.model.name, "flops": arm.flops.exact, "budget": cfg.model.pretrain,
                          "steps": arm.steps, "final_loss": arm.final_loss, "seconds": round(time.time() - start, 1),
                          "corpus": f"copy v{CORPUS_VERSION}, {CORPUS_ROWS} rows"}
                write_json_atomic(folder / "run" / "ift" / "model" / "pretrain.json", record)
                try:
                    os.replace(folder / "run" / "ift" / "model", final)
                except OSError:  # another worker published it first: theirs is the same student
                    pass
        finally:
            if w.is_main:
                shutil.rmtree(folder, ignore_errors=True)
        distributed.barrier(w)
    record = json.loads((final / "pretrain.json").read_text())
    say(f"{cfg.model.name} student pretrained to {record['flops']:.3g} FLOPs ({record['steps']} steps, final copying "
        f"loss {record['final_loss']:.4f}): {final}")
    return final, record


class _Progress(QuietHooks):
    """The pretraining's hooks: a line at each quarter of its budget, nothing else."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.quarter = say, 1

    def step(self, arm, rec, ledger) -> None:
        if rec.budget_fraction >= self.quarter / 4:
            self.say(f"pretraining: {100 * rec.budget_fraction:.0f}% of its budget, step {rec.step}, loss {rec.loss:.4f}")
            self.quarter = int(rec.budget_fraction * 4) + 1
