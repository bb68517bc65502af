"""A run: every arm trained from the same initial student to the same budget, then evaluated.

Output folder (all JSON written atomically)::

    OUT/config.json              the full configuration
    OUT/data/eval.jsonl          the held-out set (released schema plus family and answer)
    OUT/results.json             rewritten after every arm; "status" says complete / interrupted / failed
    OUT/pretrained.json          with --pretrain: the cached pretrained student the arms start from (rdistill.pretrain)
    OUT/<arm>/metrics.jsonl      one line per optimizer step
    OUT/<arm>/model/             the student: safetensors + config + tokenizer (from_pretrained loads it)
    OUT/<arm>/generations.jsonl  every held-out output with its score, lengths and FLOPs

results.json is rdistill.results.RunResults. An interrupted run (Ctrl-C) keeps every finished arm, marks
the running one "interrupted" with the FLOPs and steps it had reached, and re-raises so the caller can
exit. The kernels (rdistill.model.KernelPlan) are resolved once per run and used by every arm.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from rdistill import checkpoint, checks, distributed
from rdistill.config import RunConfig, TrainConfig
from rdistill.data import curriculum
from rdistill.data.loading import write_pairs
from rdistill.data.packing import auto_pack_tokens
from rdistill.data.schema import PairedExample, digest
from rdistill.data.sources import DataSource, open_source, resolve_tokenizer
from rdistill.data.tokenize import encode_document
from rdistill.environment import capture
from rdistill.evaluate import Generation, generate_answers, summarise
from rdistill.flops.ledger import FlopLedger, ModelShape
from rdistill.hooks import QuietHooks, RunHooks
from rdistill.io import JsonlAppender, write_json_atomic, write_text_atomic
from rdistill.model import (
    PRESETS,
    KernelPlan,
    apply_recompute,
    build_student,
    check_student,
    default_lr,
    resolve_dtype,
    resolve_kernels,
    student_skeleton,
)
from rdistill.pretrain import pretrained_student
from rdistill.runfolder import keep_lines, previous_results
from rdistill.results import (
    HEARTBEAT_SECONDS,
    TIME_FORMAT,
    ArmParameters,
    ArmResult,
    FlopTotals,
    RunResults,
    TokenStats,
)
from rdistill.steps import ArmOutcome, StepRecord, document_cost
from rdistill.train import train_arm

Documents = list[tuple[np.ndarray, np.ndarray]]


def _encode(tok, examples: list[PairedExample], field_name: str, system_prompt: str | None = None) -> Documents:
    docs = []
    for ex in examples:
        ids, mask = encode_document(tok, ex.prompt, getattr(ex, field_name), system_prompt)
        docs.append((np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=bool)))
    return docs


def _length_stats(docs: Documents) -> TokenStats:
    lengths = np.array([len(ids) for ids, _ in docs])
    answers = np.array([int(mask.sum()) for _, mask in docs])
    return TokenStats(mean_doc=float(lengths.mean()), mean_answer=float(answers.mean()), max_doc=int(lengths.max()))


def _arm_result(cfg: RunConfig, spec: curriculum.ArmSpec, shape: ModelShape) -> ArmResult:
    """An arm's record before it trains: what was asked of it."""
    return ArmResult(
        name=spec.name,
        reasoning_share=spec.share,
        schedule=spec.schedule,
        model=cfg.model.name,
        parameters=ArmParameters(shape.params_total, shape.params_non_embedding, shape.num_layers, shape.hidden_size),
        budget_flops=cfg.train.budget_flops,
        budget_kind=cfg.train.budget_kind,
        samples_requested=cfg.train.samples,
        lr=arm_peaks(cfg, spec, shape)[0],
        lr_phases=list(arm_peaks(cfg, spec, shape)),
        flops=FlopTotals(),
    )


def arm_peaks(cfg: RunConfig, spec: curriculum.ArmSpec, shape: ModelShape) -> tuple[float, ...]:
    """The peak learning rate of each phase of ``spec`` (rdistill.schedule).

    Each format has its rate (--lr-ift, --lr-reasoning, else --lr, else the student's default for
    the format): ift and reasoning train at their format's, a sequential arm's IFT phase at the IFT
    rate and its reasoning phase at the reasoning rate, and a mixed arm, whose steps mix both formats,
    at the geometric interpolation ift^(1 - rho) x reasoning^rho (rho: its reasoning share)."""
    ift, reasoning = (cfg.train.format_lr(f) or default_lr(cfg.model.name, shape.params_total, f)
                      for f in ("ift", "reasoning"))
    if spec.share in (0.0, 1.0):
        return (reasoning if spec.share else ift,)
    if spec.schedule == "sequential":
        return (ift, reasoning)
    return (ift ** (1 - spec.share) * reasoning ** spec.share,)


def _record_ledger(record: ArmResult, ledger: FlopLedger | None) -> None:
    if ledger is not None:
        record.flops = FlopTotals(
            exact=ledger.total("exact"), executed=ledger.total("executed"), paper=ledger.total("paper"),
            six_nd=ledger.total("six_nd"), by_component=ledger.to_dict(),
        )


def _record_outcome(record: ArmResult, outcome: ArmOutcome, train: TrainConfig, n_examples: int) -> None:
    _record_ledger(record, outcome.ledger)
    record.train_tokens, record.loss_tokens = outcome.train_tokens, outcome.loss_tokens
    # passes over the training examples (each seen in one format or the other: the pool holds both)
    record.steps, record.samples, record.epochs = outcome.steps, outcome.samples, outcome.samples / n_examples
    record.train_seconds, record.final_loss, record.stopped_by = outcome.seconds, outcome.final_loss, outcome.stopped_by
    record.step_seconds, record.peak_flops = outcome.step_seconds, outcome.peak_flops
    record.mfu, record.hfu = outcome.mfu, outcome.hfu
    record.lr_schedule = outcome.schedule.to_json() if outcome.schedule else None
    record.batch_samples = train.step_samples
    record.peak_memory = outcome.peak_memory
    if train.budget_flops is not None:
        record.budget_used = outcome.ledger.total(train.ledger_kind) / train.budget_flops


def _stopped(results: RunResults, record: ArmResult, status: str, exc: BaseException | None, path: Path) -> None:
    """Record an arm that did not complete (and so the run), and write results.json."""
    record.status = status
    if exc is not None:
        record.error = f"{type(exc).__name__}: {exc}"
    results.arms.append(record)
    results.status = status
    results.write(path)


@dataclass
class Prepared:
    """Everything a run needs, loaded and checked before its folder is touched."""

    cfg: RunConfig
    specs: tuple[curriculum.ArmSpec, ...]
    source: DataSource
    tok: PreTrainedTokenizerBase
    pool: Documents
    max_new_tokens: int
    fingerprint: str
    """The fingerprint of the config as asked for, before automatic values were resolved."""


def prepare(cfg: RunConfig, message: Callable[[str], None] | None = None) -> Prepared:
    """Check and load what ``cfg`` names (arms, student, data, tokenizer, evaluation) without writing
    anything; ValueError (or FileNotFoundError) says what is wrong and what to do. ``message`` is told
    what the loaders have to say (rows loaded, rows skipped)."""
    if cfg.out is None:
        raise ValueError("a run needs an output folder (out)")
    fingerprint = cfg.fingerprint()
    specs = curriculum.parse_arms(cfg.arms)
    check_student(cfg.model.name)
    if cfg.model.pretrain and cfg.model.name not in PRESETS:
        raise ValueError(f"--pretrain trains a preset student before the arms; {cfg.model.name} is a checkpoint, "
                         "already pretrained: drop --pretrain")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    source = open_source(cfg.data, seed=cfg.data_seed)
    say = message or (lambda text: None)
    for text in source.messages:
        say(text)
    tok = resolve_tokenizer(cfg.model, source)
    shape = ModelShape.from_model(student_skeleton(cfg.model.name, len(tok), tokens=_token_ids(tok)))
    if cfg.eval.enabled and not source.held_out:
        raise ValueError(f"no held-out rows to evaluate on in {source.summary.source}; give --eval-data, a larger "
                         "file, or --no-eval")
    n = len(source.train)
    system = cfg.data.system_prompt
    pool = _encode(tok, source.train, "ift", system) + _encode(tok, source.train, "reasoning", system)  # see data.curriculum
    stats = {"ift": _length_stats(pool[:n]), "reasoning": _length_stats(pool[n:])}
    source.summary.tokens = stats
    source.summary.reasoning_over_ift_answer_tokens = stats["reasoning"].mean_answer / stats["ift"].mean_answer
    if cfg.train.pack_tokens is None:
        longest = max(len(d[0]) for d in pool)
        cfg = replace(cfg, train=replace(cfg.train, pack_tokens=auto_pack_tokens(longest)))
    source.summary.unknown_token_share = checks.unknown_share(tok, pool)
    checks.check_unknown_tokens(source.summary.unknown_token_share, cfg.data.max_unknown_share)
    source.summary.over_capacity = checks.check_capacity(cfg, specs, source.train, pool)
    source.summary.overflow = cfg.train.overflow
    source.summary.digest = digest([*source.train, *source.held_out])
    for fmt, count in source.summary.over_capacity.items():
        if count:
            say(f"{count} {fmt} documents are longer than --pack-tokens {cfg.train.pack_tokens}: "
                f"{'truncated' if cfg.train.overflow == 'truncate' else 'dropped'} (--overflow {cfg.train.overflow})")
    if cfg.eval.enabled:
        checks.check_gold_answers(source.held_out)
    checks.check_budget(cfg, shape, specs, pool)
    max_new = cfg.eval.max_new_tokens or (auto_max_new_tokens(tok, source.held_out) if source.held_out else 1)
    return Prepared(cfg, specs, source, tok, pool, max_new, fingerprint)


def run(cfg: RunConfig | Prepared, hooks: RunHooks | None = None, *, resume: bool = False) -> RunResults:
    """Train and evaluate every arm; returns (and writes) results.json's content. ``cfg`` may be the
    result of ``prepare`` (whose checks then are not repeated).

    ``resume``: ``cfg.out`` holds an interrupted run of this config (rdistill.runfolder.resume_config
    reads it): arms it completed are kept as they are, the arm it was training goes on from its latest
    checkpoint (or starts again without one), and the remaining arms follow.

    Under torchrun (``cfg.parallel``, rdistill.distributed) every rank calls this: each trains and
    evaluates its share; the main rank writes the run folder, the others write into a scratch folder
    (checkpoints go into the run folder from every rank: it must be on a filesystem they all see)."""
    hooks = hooks or QuietHooks()
    prep = cfg if isinstance(cfg, Prepared) else prepare(cfg, hooks.message)
    cfg, source = prep.cfg, prep.source
    w = distributed.world(cfg.parallel, "cuda" if torch.cuda.is_available() else "cpu")
    run_out = Path(cfg.out)
    previous = previous_results(run_out) if resume else None
    if previous and previous.data.digest and previous.data.digest != source.summary.digest:
        raise ValueError(f"{run_out} was trained on other data than its config now gives ({source.summary.source}: "
                         f"digest {source.summary.digest}, the run's {previous.data.digest}): the file changed, or "
                         "the synthetic teacher of another rdistill version made it; start the run afresh "
                         "(--overwrite) instead of resuming")
    # the main rank writes the run folder; the others write what they would into a scratch folder
    out = run_out if w.is_main else Path(tempfile.mkdtemp(prefix=f"rdistill-rank{w.rank}-"))
    hooks = hooks if w.is_main else QuietHooks()
    student, pretrained = pretrained_student(cfg, prep.tok, w, hooks.message) if cfg.model.pretrain else (None, None)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", cfg.to_dict())
    if pretrained:
        write_json_atomic(out / "pretrained.json", pretrained)
    write_pairs(out / "data" / "eval.jsonl", source.held_out)
    results = RunResults(config=cfg, data=source.summary, environment=capture(),
                         started=previous.started if previous else time.strftime(TIME_FORMAT),
                         fingerprint=previous.fingerprint if previous else prep.fingerprint)
    done = {a.name: a for a in previous.arms if a.status == "complete"} if previous else {}
    results.beat()
    results.write(out / "results.json")
    arm_run = _ArmRunner(prep, results, out, hooks, w, resume=resume, run_out=run_out, student=student)
    try:
        for spec in prep.specs:
            if spec.name in done:
                hooks.message(f"{spec.name}: complete in {out}, kept")
                results.arms.append(done[spec.name])
                continue
            arm_run(spec)
    except BaseException as exc:
        if results.status == "running":  # failed outside an arm's training (saving, evaluating)
            results.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            results.write(out / "results.json")
        raise
    finally:
        if not w.is_main:
            shutil.rmtree(out, ignore_errors=True)
    results.status = "complete"
    results.finished = time.strftime(TIME_FORMAT)
    if w.is_main:
        results.write(out / "results.json")
    return results


class _ArmRunner:
    """Trains, saves and evaluates one arm after another into the run folder."""

    def __init__(self, prep: Prepared, results: RunResults, out: Path, hooks: RunHooks, w: distributed.World,
                 *, resume: bool = False, run_out: Path | None = None, student: Path | None = None) -> None:
        self.prep, self.results, self.out, self.hooks, self.device = prep, results, out, hooks, w.device
        self.student = student
        """The pretrained student's folder (--pretrain), else None: the preset from scratch."""
        self.world, self.run_out, self.resume = w, run_out or out, resume
        self.costs: tuple[float, float] | None = None
        self.kernels: KernelPlan | None = None
        self.dtype = resolve_dtype(prep.cfg.model.dtype, prep.cfg.model.name, w.device)

    def _student(self, dtype: torch.dtype | None = None):
        """A fresh student in ``dtype`` (by default the run's); under FSDP2 in fp32, the sharded master
        weights that its mixed-precision policy gathers in the run's dtype."""
        cfg, w = self.prep.cfg, self.world
        dtype = dtype or (torch.float32 if w.sharded else self.dtype)
        net = build_student(str(self.student or cfg.model.name), len(self.prep.tok), tokens=_token_ids(self.prep.tok),
                            seed=cfg.seed, dtype=dtype).to(self.device)
        apply_recompute(net, cfg.train.recompute)
        # once per run: every arm's student is alike
        self.kernels = self.kernels or resolve_kernels(net, self.device, recompute=cfg.train.recompute, dtype=self.dtype)
        return net

    def _checkpoints(self, arm_dir: Path) -> tuple[checkpoint.Checkpointing | None, dict | None]:
        """The arm's checkpointing, and the state of the checkpoint it resumes from (None: it starts)."""
        root = self.run_out / arm_dir.name / "checkpoint"  # every rank reads the main rank's checkpoints
        state = None
        if self.resume and (path := checkpoint.latest(root)) is not None:
            state = checkpoint.load_state(path)
        elif root.exists() and self.world.is_main:
            shutil.rmtree(root)  # a stale checkpoint of a run this one replaces
        every = self.prep.cfg.train.save_every
        if not every and state is None:
            return None, None
        return checkpoint.Checkpointing(root, every, resume=state is not None), state

    def __call__(self, spec: curriculum.ArmSpec) -> None:
        prep, cfg, hooks, arm = self.prep, self.prep.cfg, self.hooks, spec.name
        n_examples = len(prep.source.train)
        net = self._student()
        shape = ModelShape.from_model(net)
        planned = None
        if spec.schedule == "sequential" and cfg.train.budget_flops is not None:
            if self.costs is None:  # the same for every arm: one student, one pool
                self.costs = _mean_doc_costs(shape, prep.pool, n_examples, cfg.train)
            planned = planned_samples(spec, cfg.train.budget_flops, self.costs)
        record = _arm_result(cfg, spec, shape)
        unit = "FLOPs" if cfg.train.budget_flops is not None else "samples"
        hooks.arm_started(arm, cfg.train.budget_flops or cfg.train.samples, unit)
        record.dtype, record.recompute = str(self.dtype).removeprefix("torch."), cfg.train.recompute
        arm_dir = self.out / arm
        arm_dir.mkdir(exist_ok=True)
        checkpoints, resumed = self._checkpoints(arm_dir)
        progress = _Progress()
        if resumed is None:
            (arm_dir / "metrics.jsonl").unlink(missing_ok=True)
        else:
            keep_lines(arm_dir / "metrics.jsonl", resumed["step"])
            progress.samples = resumed["counters"]["samples"]
            record.resumed_from_step = resumed["step"]
            hooks.message(f"{arm}: resuming from its checkpoint at step {resumed['step']:,}")
        with JsonlAppender(arm_dir / "metrics.jsonl") as metrics:

            def on_step(rec: StepRecord, ledger: FlopLedger) -> None:
                metrics.write(rec.to_json())
                progress.update(rec, ledger)
                if progress.due_beat():
                    self.results.beat()
                    self.results.write(self.out / "results.json")
                hooks.step(arm, rec, ledger)

            try:
                outcome = train_arm(
                    net, prep.pool, cfg.train, lr=record.lr_phases, seed=cfg.seed, kernels=self.kernels,
                    phase_split=n_examples if spec.schedule == "sequential" else None,
                    segments=partial(
                        curriculum.segments, spec, n_examples, samples=cfg.train.samples, planned_samples=planned
                    ),
                    on_step=on_step, device=self.device, checkpoints=checkpoints, world=self.world,
                )
            except BaseException as exc:
                progress.record(record)
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                _stopped(self.results, record, status, exc, self.out / "results.json")
                raise
        _record_outcome(record, outcome, cfg.train, n_examples)
        net = self._trained(net, outcome)
        if self.world.is_main:
            net.save_pretrained(arm_dir / "model")
            prep.tok.save_pretrained(arm_dir / "model")
        if cfg.eval.enabled:
            try:
                self._evaluate(arm, net, record, arm_dir)
            except KeyboardInterrupt as exc:
                _stopped(self.results, record, "interrupted", exc, self.out / "results.json")
                raise
        if not self.world.is_main:  # the main rank writes the run folder; the others wait for it
            self.results.arms.append(record)
            distributed.barrier(self.world)
            return
        record.status = "complete"
        self.results.arms.append(record)
        self.results.beat()
        self.results.write(self.out / "results.json")
        shutil.rmtree(arm_dir / "checkpoint", ignore_errors=True)  # the arm is complete: its model is saved
        hooks.arm_finished(arm, record)
        distributed.barrier(self.world)

    def _evaluate(self, arm: str, net, record: ArmResult, arm_dir: Path) -> None:
        """Generate on the held-out set (each rank its share ``rank::size``, gathered) and score it."""
        prep, w = self.prep, self.world
        held = prep.source.held_out
        self.hooks.eval_started(arm, len(held))
        mine = generate_answers(
            net, prep.tok, held[w.rank :: w.size], max_new_tokens=prep.max_new_tokens,
            batch_size=prep.cfg.eval.batch_size, system_prompt=prep.cfg.data.system_prompt,
            on_batch=lambda n: self.hooks.eval_progress(arm, n * w.size),  # the main rank's share, scaled
        )
        gens = distributed.gather_objects(mine, w)
        if w.is_main:
            write_generations(arm_dir / "generations.jsonl", held, gens)
        record.eval = summarise(gens, prep.source.chance, max_new_tokens=prep.max_new_tokens)

    def _trained(self, net, outcome: ArmOutcome):
        """The trained student, whole, on every rank: under FSDP2 its shards gathered into a fresh copy in
        the run's dtype."""
        if not self.world.sharded:
            return net
        whole = self._student(self.dtype)
        whole.load_state_dict(distributed.full_model_state(outcome.module))
        return whole


class _Progress:
    """What an arm has done so far (for a record of an interrupted arm) and when to write a heartbeat."""

    def __init__(self) -> None:
        self.ledger: FlopLedger | None = None
        self.samples = 0
        self.last_beat = time.monotonic()

    def update(self, rec: StepRecord, ledger: FlopLedger) -> None:
        self.ledger = ledger
        self.samples += rec.samples

    def due_beat(self) -> bool:
        if time.monotonic() - self.last_beat < HEARTBEAT_SECONDS:
            return False
        self.last_beat = time.monotonic()
        return True

    def record(self, record: ArmResult) -> None:
        """The FLOPs, steps, samples and tokens reached, into an arm's record."""
        _record_ledger(record, self.ledger)
        if self.ledger is not None:
            record.steps, record.samples = self.ledger.steps, self.samples
            record.train_tokens, record.loss_tokens = self.ledger.tokens, self.ledger.loss_tokens


def _mean_doc_costs(shape: ModelShape, pool: Documents, n_examples: int, train: TrainConfig) -> tuple[float, float]:
    """Mean FLOPs (in the budget's count) of one example in IFT and in reasoning format."""
    def mean_cost(docs: Documents) -> float:
        return float(np.mean([document_cost(shape, doc, train.pack_tokens, train.ledger_kind) for doc in docs]))

    return mean_cost(pool[:n_examples]), mean_cost(pool[n_examples:])


def planned_samples(spec: curriculum.ArmSpec, budget_flops: float, costs: tuple[float, float]) -> int:
    """Samples a FLOP budget buys at this arm's mix of formats (what a sequential arm's phases split)."""
    per_sample = (1 - spec.share) * costs[0] + spec.share * costs[1]
    return max(1, int(budget_flops / per_sample))


def write_generations(path: Path, held: list[PairedExample], gens: list[Generation]) -> None:
    lines = [
        json.dumps({"prompt": ex.to_row()["prompt"], "family": ex.family, "gold": ex.answer, **asdict(g)})
        for ex, g in zip(held, gens)
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _token_ids(tok) -> dict[str, int]:
    return {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": None}


def auto_max_new_tokens(tok, held: list[PairedExample]) -> int:
    """Room for the teacher's longest reasoning answer on the held-out set, plus half again."""
    longest = max(len(tok(ex.reasoning, add_special_tokens=False)["input_ids"]) for ex in held)
    return int(longest * 1.5) + 8
