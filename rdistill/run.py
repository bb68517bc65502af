"""A run: every arm trained from the same initial student to the same budget, then evaluated.

Output folder (all JSON written atomically)::

    OUT/config.json              the full configuration
    OUT/data/eval.jsonl          the held-out set (released schema plus family and answer)
    OUT/results.json             rewritten after every arm; "status" says complete / interrupted / failed
    OUT/<arm>/metrics.jsonl      one line per optimizer step
    OUT/<arm>/model/             the student: safetensors + config + tokenizer (from_pretrained loads it)
    OUT/<arm>/generations.jsonl  every held-out output with its score, lengths and FLOPs

An interrupted run (Ctrl-C) keeps every finished arm, marks the running one "interrupted" with the
FLOPs and steps it had reached, and re-raises so the caller can exit.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import transformers

from rdistill import __version__, curriculum
from rdistill.data import load_pairs, write_pairs
from rdistill.evaluate import Generation, generate_answers, summarise
from rdistill.flops import FlopLedger, ModelShape, train_step_flops
from rdistill.io import JsonlAppender, write_json_atomic, write_text_atomic
from rdistill.models import build_student, count_parameters
from rdistill.schema import PairedExample
from rdistill.synth import make_splits
from rdistill.tokenizer import encode_document, load_tokenizer
from rdistill.train import ArmOutcome, StepRecord, TrainSettings, auto_pack_tokens, train_arm

def parse_arms(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """Validated arm names (see rdistill.curriculum): ift, reasoning, seqNN, mixNN."""
    return tuple(a.name for a in curriculum.parse_arms(text))


@dataclass(frozen=True)
class RunConfig:
    out: str
    train: TrainSettings
    model: str = "tiny"
    tokenizer: str | None = None
    arms: tuple[str, ...] = ("ift", "reasoning")
    lr: float = 3e-3
    arm_lr: dict[str, float] = field(default_factory=dict)
    data: str | None = None
    eval_data: str | None = None
    columns: dict[str, str] | None = None
    skip_bad_rows: bool = False
    synth_train: int = 20000
    synth_eval: int = 200
    difficulty: int = 2
    eval_size: int = 200
    max_new_tokens: int | None = None
    eval_batch_size: int = 64
    evaluate: bool = True
    seed: int = 0

    def lr_for(self, arm: str) -> float:
        return self.arm_lr.get(arm, self.lr)


class RunHooks(Protocol):
    def arm_started(self, arm: str, budget: float, unit: str) -> None: ...
    def step(self, arm: str, rec: StepRecord, ledger: FlopLedger) -> None: ...
    def eval_started(self, arm: str, n: int) -> None: ...
    def eval_progress(self, arm: str, done: int) -> None: ...
    def arm_finished(self, arm: str, result: dict) -> None: ...
    def message(self, text: str) -> None: ...


class _Quiet:
    def arm_started(self, arm, budget, unit): ...
    def step(self, arm, rec, ledger): ...
    def eval_started(self, arm, n): ...
    def eval_progress(self, arm, done): ...
    def arm_finished(self, arm, result): ...
    def message(self, text): ...


def _split_data(cfg: RunConfig, hooks: RunHooks) -> tuple[list[PairedExample], list[PairedExample], dict]:
    if cfg.data is None:
        train, held = make_splits(cfg.synth_train, cfg.synth_eval, seed=cfg.seed, difficulty=cfg.difficulty)
        return train, held, {"source": "synthetic", "difficulty": cfg.difficulty, "train": len(train), "eval": len(held)}
    loaded = load_pairs(cfg.data, columns=cfg.columns, skip_bad_rows=cfg.skip_bad_rows)
    hooks.message(loaded.summary())
    info = {"source": str(cfg.data), "rows_read": loaded.num_rows_read, "skipped": len(loaded.skipped)}
    if cfg.eval_data is not None:
        held_loaded = load_pairs(cfg.eval_data, columns=cfg.columns, skip_bad_rows=cfg.skip_bad_rows)
        hooks.message(held_loaded.summary())
        held = held_loaded.examples
        held_prompts = {e.prompt for e in held}
        train = [e for e in loaded.examples if e.prompt not in held_prompts]
        info["removed_overlap"] = len(loaded.examples) - len(train)
    else:
        rng = np.random.default_rng(cfg.seed)
        perm = rng.permutation(len(loaded.examples))
        n_eval = min(cfg.eval_size, len(loaded.examples) // 10)
        held = [loaded.examples[i] for i in perm[:n_eval]]
        held_prompts = {e.prompt for e in held}
        train = [loaded.examples[i] for i in perm[n_eval:] if loaded.examples[i].prompt not in held_prompts]
    info.update(train=len(train), eval=len(held))
    if not train:
        raise ValueError(f"no training rows left in {cfg.data} after setting the held-out set aside")
    return train, held, info


def _encode(tok, examples: list[PairedExample], field_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    docs = []
    for ex in examples:
        ids, mask = encode_document(tok, ex.prompt, getattr(ex, field_name))
        docs.append((np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)))
    return docs


def _environment() -> dict:
    return {
        "rdistill": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
    }


def _arm_record(cfg: RunConfig, arm: str, model_desc: dict, outcome: ArmOutcome | None, ledger: FlopLedger | None) -> dict:
    led = outcome.ledger if outcome is not None else ledger
    totals = {k: led.total(k) for k in ("exact", "executed", "paper", "six_nd")} if led is not None else {}
    spec = curriculum.parse_arm(arm)
    rec = {
        "name": arm,
        "reasoning_share": spec.share,
        "schedule": spec.schedule,
        "model": cfg.model,
        "parameters": model_desc,
        "budget_flops": cfg.train.budget_flops,
        "budget_kind": cfg.train.budget_kind,
        "samples_requested": cfg.train.samples,
        "lr": cfg.lr_for(arm),
        "flops": {
            "exact": totals.get("exact"),
            "executed": totals.get("executed"),
            "paper": totals.get("paper"),
            "six_nd": totals.get("six_nd"),
            "by_component": led.to_dict() if led is not None else None,
        },
    }
    if outcome is not None:
        rec.update(
            train_tokens=outcome.train_tokens,
            loss_tokens=outcome.loss_tokens,
            steps=outcome.steps,
            samples=outcome.samples,
            epochs=outcome.epochs,
            train_seconds=outcome.seconds,
            final_loss=outcome.final_loss,
            stopped_by=outcome.stopped_by,
            step_seconds=outcome.step_seconds,
            peak_flops=outcome.peak_flops,
            mfu=outcome.mfu,
            hfu=outcome.hfu,
        )
        if cfg.train.budget_flops is not None:
            rec["budget_used"] = led.total(cfg.train.ledger_kind) / cfg.train.budget_flops
    return rec


def run(cfg: RunConfig, hooks: RunHooks | None = None) -> dict:
    """Train and evaluate every arm; returns (and writes) results.json's content."""
    hooks = hooks or _Quiet()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = asdict(cfg)
    write_json_atomic(out / "config.json", cfg_dict)
    train_ex, held, data_info = _split_data(cfg, hooks)
    write_pairs(out / "data" / "eval.jsonl", held)
    tok = load_tokenizer(cfg.tokenizer if cfg.tokenizer is not None else default_tokenizer(cfg.model))
    results: dict = {
        "status": "running",
        "config": cfg_dict,
        "data": data_info,
        "environment": _environment(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "arms": [],
    }
    write_json_atomic(out / "results.json", results)
    n_examples = len(train_ex)
    pool = _encode(tok, train_ex, "ift") + _encode(tok, train_ex, "reasoning")  # see rdistill.curriculum
    data_info["tokens"] = {"ift": _length_stats(pool[:n_examples]), "reasoning": _length_stats(pool[n_examples:])}
    data_info["reasoning_over_ift_answer_tokens"] = (
        data_info["tokens"]["reasoning"]["mean_answer"] / data_info["tokens"]["ift"]["mean_answer"]
    )
    if cfg.train.pack_tokens is None:
        longest = max(len(d[0]) for d in pool)
        cfg = replace(cfg, train=replace(cfg.train, pack_tokens=auto_pack_tokens(longest)))
        results["config"] = asdict(cfg)
        write_json_atomic(out / "config.json", results["config"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    max_new = cfg.max_new_tokens or _auto_max_new_tokens(tok, held)
    costs: tuple[float, float] | None = None
    for spec in curriculum.parse_arms(cfg.arms):
        arm = spec.name
        net = build_student(cfg.model, len(tok), tokens=_token_ids(tok), seed=cfg.seed).to(device)
        shape = ModelShape.from_model(net)
        planned = None
        if spec.schedule == "sequential" and cfg.train.budget_flops is not None:
            if costs is None:  # the same for every arm: one student, one pool
                costs = _mean_doc_costs(shape, pool, n_examples, cfg.train)
            planned = _planned_samples(spec, cfg.train.budget_flops, costs)
        desc = {**count_parameters(net), "layers": shape.num_layers, "hidden": shape.hidden_size}
        unit = "FLOPs" if cfg.train.budget_flops is not None else "samples"
        hooks.arm_started(arm, cfg.train.budget_flops or cfg.train.samples, unit)
        arm_dir = out / arm
        arm_dir.mkdir(exist_ok=True)
        (arm_dir / "metrics.jsonl").unlink(missing_ok=True)
        last_ledger: list[FlopLedger] = []
        with JsonlAppender(arm_dir / "metrics.jsonl") as metrics:

            def on_step(rec: StepRecord, ledger: FlopLedger) -> None:
                metrics.write(rec.to_json())
                last_ledger[:] = [ledger]
                hooks.step(arm, rec, ledger)

            try:
                outcome = train_arm(
                    net,
                    pool,
                    cfg.train,
                    lr=cfg.lr_for(arm),
                    segments=partial(
                        curriculum.segments, spec, n_examples, samples=cfg.train.samples, planned_samples=planned
                    ),
                    on_step=on_step,
                    device=device,
                )
            except BaseException as exc:
                record = _arm_record(cfg, arm, desc, None, last_ledger[0] if last_ledger else None)
                record["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                record["error"] = f"{type(exc).__name__}: {exc}"
                results["arms"].append(record)
                results["status"] = record["status"]
                write_json_atomic(out / "results.json", results)
                raise
        record = _arm_record(cfg, arm, desc, outcome, None)
        net.save_pretrained(arm_dir / "model")
        tok.save_pretrained(arm_dir / "model")
        if cfg.evaluate:
            hooks.eval_started(arm, len(held))
            try:
                gens = generate_answers(
                    net, tok, held, max_new_tokens=max_new, batch_size=cfg.eval_batch_size,
                    on_batch=lambda n: hooks.eval_progress(arm, n),
                )
            except KeyboardInterrupt:
                record["status"] = "interrupted"
                results["arms"].append(record)
                results["status"] = "interrupted"
                write_json_atomic(out / "results.json", results)
                raise
            _write_generations(arm_dir / "generations.jsonl", held, gens)
            record["eval"] = summarise(gens)
            record["eval"]["max_new_tokens"] = max_new
        record["status"] = "complete"
        results["arms"].append(record)
        write_json_atomic(out / "results.json", results)
        hooks.arm_finished(arm, record)
    results["status"] = "complete"
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json_atomic(out / "results.json", results)
    return results


def _length_stats(docs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    lengths = np.array([len(ids) for ids, _ in docs])
    answers = np.array([int(mask.sum()) for _, mask in docs])
    return {"mean_doc": float(lengths.mean()), "mean_answer": float(answers.mean()), "max_doc": int(lengths.max())}


def _mean_doc_costs(shape: ModelShape, pool, n_examples: int, s: TrainSettings) -> tuple[float, float]:
    """Mean FLOPs (in the budget's count) of one example in IFT and in reasoning format."""
    cap = s.pack_tokens

    def mean_cost(docs) -> float:
        return float(np.mean([
            train_step_flops(shape, [min(len(ids), cap)], int(mask[1:cap].sum())).total(s.ledger_kind)
            for ids, mask in docs
        ]))

    return mean_cost(pool[:n_examples]), mean_cost(pool[n_examples:])


def _planned_samples(spec: curriculum.ArmSpec, budget_flops: float, costs: tuple[float, float]) -> int:
    """Samples a FLOP budget buys at this arm's mix of formats (what a sequential arm's phases split)."""
    per_sample = (1 - spec.share) * costs[0] + spec.share * costs[1]
    return max(1, int(budget_flops / per_sample))


def _write_generations(path: Path, held: list[PairedExample], gens: list[Generation]) -> None:
    lines = [
        json.dumps({"prompt": ex.prompt, "family": ex.family, "gold": ex.answer, **asdict(g)})
        for ex, g in zip(held, gens)
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def default_tokenizer(model: str) -> str | None:
    """A local checkpoint's own tokenizer when it has one, else the built-in tokenizer."""
    path = Path(model)
    if path.is_dir() and any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return str(path)
    return None


def _token_ids(tok) -> dict[str, int]:
    return {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": None}


def _auto_max_new_tokens(tok, held: list[PairedExample]) -> int:
    """Room for the teacher's longest reasoning answer on the held-out set, plus half again."""
    longest = max(len(tok(ex.reasoning, add_special_tokens=False)["input_ids"]) for ex in held)
    return int(longest * 1.5) + 8
