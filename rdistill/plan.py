"""Planning a study: what every point of a grid will cost, in FLOPs and device-hours, before it runs.

A plan takes a sweep's grid (rdistill.sweep: the same points, the same run configs) and gives each point:

- Training FLOPs: the ledger's exact count, with the paper's formula and 6ND beside it. The trainer's own
  step stream (rdistill.train.Trainer: the arm's segments, packing, step order, trimming to the budget)
  is run on the documents' sizes, without a student; the data order is a function of the seed, so a
  simulated point spends exactly what its run will. A point whose simulation would handle more than
  ``max_docs`` documents (those it trains, and at least one pass over the examples) is not simulated.
  Under --samples its FLOPs are still exact ("counted": every document the arm's segments hold trains
  once, however it is packed). Under a budget the run stops at the first document that no longer fits,
  so it spends more than the budget minus its costliest document and never more than the budget, in
  the budget's count ("bound"; with --budget-kind paper or 6nd the exact count is the budget times the
  arm's mean exact / budget-count ratio: "estimate").
- Evaluation FLOPs: held-out queries x the exact generation FLOPs (KV cache, ledger.generation_flops)
  of one query of the data's mean prompt length and an answer of the arm's mean answer length (IFT
  answers for rho = 0, reasoning answers for rho = 1, weighted by rho between), capped at
  --max-new-tokens: an expectation, since what a student generates is known only after training.
- Device-hours: exact training FLOPs / (device peak x MFU) / 3600; wall hours: device-hours / devices
  per point (perfect scaling). The MFU is measured (a run's results.json: the arm's own, else the mean
  of its arms) or assumed (--mfu, default ``DEFAULT_MFU``); the plan says which. Evaluation is not timed.

Documents come from the run's data (rdistill.run.prepare: the same rows, tokenizer and pack capacity)
or from named length distributions (rdistill.flops.distributions): n IFT documents of one and n
reasoning documents of the other, each answer at its document's end. The paper's students
(rdistill.model.QWEN25_SHAPES) are counted from their shapes, never built; with data they read it
through the data's own tokenizer (or --tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from rdistill.checks import formats_used
from rdistill.config import RunConfig, SweepConfig
from rdistill.data import curriculum
from rdistill.data.packing import auto_pack_tokens
from rdistill.data.sources import builtin_tokenizer
from rdistill.data.tokenize import load_tokenizer
from rdistill.flops.distributions import get as get_distribution
from rdistill.flops.distributions import sample_lengths
from rdistill.flops.hardware import named_peak_flops
from rdistill.flops.ledger import ModelShape, generation_flops, train_step_flops
from rdistill.io import write_json_atomic, write_text_atomic
from rdistill.model import PRESETS, QWEN25_SHAPES, shape_config, student_skeleton
from rdistill.results import ResultsError, RunResults
from rdistill.run import Prepared, planned_samples, prepare
from rdistill.steps import document_size
from rdistill.sweep import SweepPoint, grid, point_config
from rdistill.train import Trainer

DEFAULT_MFU = 0.4
"""The MFU assumed when neither --mfu nor --mfu-from gives one."""
MAX_DOCS = 500_000
"""Documents above which a point is counted or bounded rather than simulated step by step: those it
trains, and at least one pass over the examples (the trainer packs a whole segment at a time)."""
KINDS = ("exact", "paper", "six_nd")


def log_budgets(n: int, floor: float, ceiling: float) -> tuple[float, ...]:
    """``n`` budgets evenly spaced in log-FLOPs from ``floor`` to ``ceiling``, both included exactly."""
    if n < 2:
        raise ValueError(f"--budgets auto:N needs N of 2 or more, got {n}")
    if not (0 < floor < ceiling and math.isfinite(ceiling)):
        raise ValueError(f"--budget-min ({floor:g}) must be positive and below --budget-max ({ceiling:g})")
    step = (math.log(ceiling) - math.log(floor)) / (n - 1)
    return (floor, *(math.exp(math.log(floor) + i * step) for i in range(1, n - 1)), ceiling)


def parse_budgets(text: str, floor: float | None = None, ceiling: float | None = None) -> tuple[float, ...]:
    """--budgets: comma-separated FLOP budgets, or ``auto:N`` for ``log_budgets(N, floor, ceiling)``."""
    text = text.strip()
    if text.startswith("auto:"):
        try:
            n = int(text[5:])
        except ValueError:
            raise ValueError(f"--budgets {text}: auto:N needs a whole number N, e.g. auto:5") from None
        if floor is None or ceiling is None:
            raise ValueError(f"--budgets {text} needs a floor and a ceiling: give --budget-min and --budget-max")
        return log_budgets(n, floor, ceiling)
    try:
        budgets = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--budgets: expected comma-separated FLOP budgets (e.g. 1e12,3e12) or auto:N, got {text!r}") from None
    if not budgets or not all(b > 0 and math.isfinite(b) for b in budgets):
        raise ValueError(f"--budgets: budgets must be positive numbers, got {text!r}")
    return budgets


def parse_lengths(text: str) -> tuple[str, str]:
    """--lengths: IFT,REASONING distribution names (rdistill.flops.distributions), or one name for both."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if len(names) not in (1, 2):
        raise ValueError(f"--lengths: give IFT,REASONING distributions (e.g. ift-like,reasoning-like) or one name, got {text!r}")
    for name in names:
        try:
            get_distribution(name)
        except ValueError as e:
            raise ValueError(f"--lengths: {e}") from None
    return names[0], names[-1]


@dataclass(frozen=True)
class Workload:
    """A point's pool of documents as sizes: ids 0..n-1 the examples in IFT format, n..2n-1 in reasoning
    format (rdistill.data.curriculum), each as long as tokenized and as a pack of ``capacity`` holds it."""

    lengths: np.ndarray
    """Tokens of each document (int64, 2n)."""
    sizes: np.ndarray
    """(tokens, loss tokens) of each document cut to the capacity (rdistill.steps.document_size), 2n x 2."""
    answers: np.ndarray
    """Loss tokens of each document, uncut (its answer)."""
    capacity: int
    eval_queries: int
    max_new_tokens: int | None
    source: str

    @property
    def n(self) -> int:
        return len(self.lengths) // 2

    def mean_prompt(self) -> float:
        return float(np.mean(self.lengths - self.answers))

    @cached_property
    def docs(self) -> list[tuple[range, None]]:
        """The documents as the trainer's packing sees them: only their lengths (a ``range`` stands for
        the ids; one shared object per distinct length)."""
        shared = {int(l): (range(int(l)), None) for l in np.unique(self.lengths)}
        return [shared[l] for l in self.lengths.tolist()]

    def mean_answer(self, fmt: str) -> float:
        return float(np.mean(self.answers[: self.n] if fmt == "ift" else self.answers[self.n :]))


def workload_from_prepared(prep: Prepared) -> Workload:
    """The sizes of a prepared run's pool (``prep.cfg.train.pack_tokens`` is resolved by prepare)."""
    cap = prep.cfg.train.pack_tokens
    held = len(prep.source.held_out) if prep.cfg.eval.enabled else 0
    return Workload(
        lengths=np.array([len(ids) for ids, _ in prep.pool], dtype=np.int64),
        sizes=np.array([document_size(doc, cap) for doc in prep.pool], dtype=np.int64),
        answers=np.array([int(mask.sum()) for _, mask in prep.pool], dtype=np.int64),
        capacity=cap, eval_queries=held, max_new_tokens=prep.max_new_tokens if held else None,
        source=prep.source.summary.source,
    )


def workload_from_lengths(names: tuple[str, str], cfg: RunConfig) -> Workload:
    """``cfg.data.train_size`` IFT documents from distribution ``names[0]`` (seed: the data seed) and as
    many reasoning documents from ``names[1]`` (the data seed + 1); the answer is each document's tail."""
    n, seed = cfg.data.train_size, cfg.data_seed
    pairs = np.array(sample_lengths(names[0], n, seed) + sample_lengths(names[1], n, seed + 1), dtype=np.int64)
    lengths, answers = pairs[:, 0], pairs[:, 1]
    cap = cfg.train.pack_tokens or auto_pack_tokens(int(lengths.max()))
    over = int((lengths > cap).sum())
    if over and cfg.train.overflow == "error":
        raise ValueError(f"{over} documents are longer than --pack-tokens {cap} (the longest {int(lengths.max())} "
                         "tokens); raise --pack-tokens (or leave it out: automatic), or pass --overflow truncate or drop")
    cut = np.minimum(lengths, cap)
    loss = np.maximum(cut - np.maximum(lengths - answers, 1), 0)  # the answer's tokens at positions 1..cap-1
    queries = cfg.data.eval_size if cfg.eval.enabled else 0
    return Workload(lengths=lengths, sizes=np.stack([cut, loss], axis=1), answers=answers, capacity=cap,
                    eval_queries=queries, max_new_tokens=cfg.eval.max_new_tokens if queries else None,
                    source=f"lengths drawn from {names[0]} (IFT) and {names[1]} (reasoning)")


class Costs:
    """Each document's training FLOPs alone, by count (``KINDS``), for one student: int64 arrays (one
    document never nears 2^63) from the ledger, once per distinct size."""

    def __init__(self, shape: ModelShape, work: Workload) -> None:
        keys = work.sizes[:, 0] * (int(work.sizes[:, 1].max()) + 1) + work.sizes[:, 1]  # one int per (tokens, loss)
        _, first, self.index = np.unique(keys, return_index=True, return_inverse=True)
        unique = work.sizes[first]
        steps = [train_step_flops(shape, [int(l)], int(a)) for l, a in unique]
        self.unique = {k: [s.total(k) for s in steps] for k in KINDS}
        self.per_doc = {k: np.array(v, dtype=np.int64)[self.index] for k, v in self.unique.items()}
        self.tokens = [int(l) for l, _ in unique]

    def totals(self, ids: np.ndarray) -> dict[str, int]:
        """Exact Python-int sums over the documents ``ids`` (repeats counted), by count, and tokens."""
        counts = np.bincount(self.index[ids], minlength=len(self.tokens)).tolist()
        out = {k: sum(c * v for c, v in zip(counts, vs) if c) for k, vs in self.unique.items()}
        out["tokens"] = sum(c * t for c, t in zip(counts, self.tokens) if c)
        return out


class DryRun(Trainer):
    """The trainer's step stream, packing and trimming (rdistill.train.Trainer) on document sizes: which
    documents each step of an arm trains, without a student or a tensor."""

    def __init__(self, work: Workload, costs: Costs, cfg: RunConfig, spec: curriculum.ArmSpec,
                 planned: int | None) -> None:
        self.cfg, self.capacity, self.docs = cfg.train, work.capacity, work.docs
        self.cost = costs.per_doc[cfg.train.ledger_kind]
        self.rng = np.random.default_rng(cfg.seed)  # as Trainer: the run's seed draws the data order
        self.segments = partial(curriculum.segments, spec, work.n, samples=cfg.train.samples, planned_samples=planned)

    def _doc_cost(self, i: int) -> int:
        return int(self.cost[i])

    def trained(self, max_docs: int) -> tuple[np.ndarray, int, str] | None:
        """(every document trained, in order; optimizer steps; why training stops), as Trainer.plan and
        Trainer._train_steps decide; None when that would take more than ``max_docs`` documents."""
        budget, samples = self.cfg.budget_flops, self.cfg.samples
        spent, done, steps, parts, stopped = 0, 0, 0, [], "data"
        for packs in self.step_stream():
            ids = [i for p in packs for i in p]
            cost = int(self.cost[ids].sum())
            trimmed = budget is not None and spent + cost > budget
            if trimmed:
                ids = [i for p in self._trim(packs, budget - spent) for i in p]
                if not ids:
                    stopped = "budget"
                    break
                cost = int(self.cost[ids].sum())
            spent, done, steps = spent + cost, done + len(ids), steps + 1
            parts.append(np.array(ids, dtype=np.int64))
            if trimmed or (samples is not None and done >= samples):
                stopped = "budget" if trimmed else "samples"
                break
            if done > max_docs:
                return None
        return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)), steps, stopped


@dataclass(frozen=True)
class Device:
    """Where the plan's points run: a named device's peak and the MFU it is taken to reach."""

    name: str
    dtype: str
    peak_flops: float
    mfu: dict[str, float]
    """Measured MFU per arm name; ``default_mfu`` for any other arm."""
    default_mfu: float
    mfu_source: str
    devices: int = 1
    """Devices per point: wall hours are device-hours / devices."""

    def arm_mfu(self, arm: str) -> float:
        return self.mfu.get(arm, self.default_mfu)


def read_mfu(path: str | Path) -> tuple[dict[str, float], float, str]:
    """(MFU per arm, their mean, a description) from a run's results.json (or its run folder)."""
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    try:
        results = RunResults.read(p)
    except ResultsError as e:
        raise ValueError(f"--mfu-from: {e}") from e
    mfu = {a.name: a.mfu for a in results.arms if a.mfu}
    if not mfu:
        raise ValueError(f"--mfu-from: {p} holds no arm with a measured MFU (an arm that trained); give another run or --mfu")
    mean = sum(mfu.values()) / len(mfu)
    device = results.environment.get("device", "?")
    arms = ", ".join(f"{k} {v:.3f}" for k, v in mfu.items())
    return mfu, mean, f"measured in {p} ({results.config.model.name} on {device}: {arms}; other arms: the mean {mean:.3f})"


def make_device(name: str, dtype: str, *, mfu: float | None = None, mfu_from: str | Path | None = None,
                devices: int = 1) -> Device:
    """A ``Device`` for ``name`` (rdistill.flops.hardware.DEVICES or cpu); MFU from ``mfu_from``, else
    ``mfu``, else ``DEFAULT_MFU`` (stated as assumed)."""
    if mfu is not None and mfu_from is not None:
        raise ValueError("give --mfu or --mfu-from, not both")
    if mfu is not None and not 0 < mfu <= 1:
        raise ValueError(f"--mfu must lie in (0, 1], got {mfu}")
    if devices < 1:
        raise ValueError(f"--devices must be at least 1, got {devices}")
    peak = named_peak_flops(name, dtype)
    if mfu_from is not None:
        per_arm, mean, source = read_mfu(mfu_from)
        return Device(name, dtype, peak, per_arm, mean, source, devices)
    source = f"assumed: {mfu} (--mfu)" if mfu is not None else f"assumed: {DEFAULT_MFU} (the default; measure it with --mfu-from)"
    return Device(name, dtype, peak, {}, mfu if mfu is not None else DEFAULT_MFU, source, devices)


def device_dtype(dtype: str, models: Sequence[str], device: str) -> str:
    """The dtype whose peak applies: --dtype, or what auto picks there (rdistill.model.resolve_dtype):
    fp32 for presets on a CPU, else bf16."""
    if dtype != "auto":
        return dtype
    return "fp32" if device == "cpu" and all(m in PRESETS for m in models) else "bf16"


def student_shape(model: str, vocab_size: int) -> ModelShape:
    """A paper shape's from its config; a preset's or a checkpoint's from its skeleton (meta device)."""
    if model in QWEN25_SHAPES:
        return ModelShape.from_config(shape_config(model))
    if model not in PRESETS and not Path(model).is_dir():
        raise ValueError(f"--models: {model!r} is neither a preset ({', '.join(PRESETS)}), a paper shape "
                         f"({', '.join(QWEN25_SHAPES)}) nor a checkpoint folder")
    return ModelShape.from_model(student_skeleton(model, vocab_size))


def point_runs(cfg: SweepConfig, study: Path, samples: int | None = None) -> list[tuple[SweepPoint, RunConfig]]:
    """The grid's points and their runs, as rdistill.sweep makes them; with ``samples``, one size per
    (model, arm, seed): that many samples (cfg.budgets is then ignored)."""
    budgets = (float(samples),) if samples is not None else cfg.budgets
    out = []
    for point in grid(cfg.models, cfg.arms, budgets, cfg.seeds):
        run_cfg = point_config(cfg.base, point, study, seed_data=cfg.seed_data, model_lrs=cfg.model_lrs)
        if samples is not None:
            run_cfg = replace(run_cfg, train=replace(run_cfg.train, budget_flops=None, samples=samples), out=None)
        out.append((point, run_cfg))
    return out


class Planner:
    """Workloads and costs shared by the points of a grid, each loaded or counted once."""

    def __init__(self, arms: Sequence[str], lengths: tuple[str, str] | None = None,
                 message: Callable[[str], None] | None = None) -> None:
        self.arms, self.lengths, self.message = tuple(arms), lengths, message
        self._work: dict[Any, tuple[Workload, int]] = {}
        self._costs: dict[Any, tuple[ModelShape, Costs]] = {}

    def workload(self, run: RunConfig) -> tuple[Workload, int]:
        """The run's documents and the vocabulary of the tokenizer that reads them."""
        model = run.model.name
        folder = Path(model).is_dir()
        key = (model if folder else None, run.data_seed)
        if key not in self._work:
            if self.lengths is not None:
                tok = load_tokenizer(run.model.tokenizer) if run.model.tokenizer else builtin_tokenizer()
                self._work[key] = (workload_from_lengths(self.lengths, run), len(tok))
            else:  # prepared as the run prepares it; a paper shape reads the data as a preset does
                as_run = replace(run, model=replace(run.model, name=model if folder else "tiny"), arms=self.arms,
                                 out=run.out or "plan", train=replace(run.train, budget_flops=None, samples=1))
                prep = prepare(as_run, self.message)
                self._work[key] = (workload_from_prepared(prep), len(prep.tok))
        return self._work[key]

    def costs(self, run: RunConfig) -> tuple[Workload, ModelShape, Costs]:
        work, vocab = self.workload(run)
        key = (run.model.name, id(work))
        if key not in self._costs:
            shape = student_shape(run.model.name, vocab)
            self._costs[key] = (shape, Costs(shape, work))
        return (work, *self._costs[key])

    def budget_range(self, base: RunConfig, models: Sequence[str]) -> tuple[float, float]:
        """The default floor and ceiling of --budgets auto:N, in the budget's count: a tenth of one IFT
        epoch of the cheapest student, and one reasoning epoch of the costliest."""
        ift, reasoning = [], []
        for model in models:
            work, _, costs = self.costs(replace(base, model=replace(base.model, name=model)))
            docs = costs.per_doc[base.train.ledger_kind]
            ift.append(sum(docs[: work.n].tolist()))
            reasoning.append(sum(docs[work.n :].tolist()))
        return min(ift) / 10, float(max(reasoning))

    def point(self, point: SweepPoint, run: RunConfig, device: Device, study: Path, max_docs: int = MAX_DOCS) -> dict:
        """One point of the plan (see the module docstring); ValueError when it could not train at all."""
        work, shape, costs = self.costs(run)
        spec, train, n = curriculum.parse_arm(point.arm), run.train, work.n
        means = {k: ((1 - spec.share) * float(np.mean(v[:n])) + spec.share * float(np.mean(v[n:])))
                 for k, v in costs.per_doc.items()}
        budget_docs = costs.per_doc[train.ledger_kind]
        planned = None
        if spec.schedule == "sequential" and train.budget_flops is not None:  # as rdistill.run splits the phases
            planned = planned_samples(spec, train.budget_flops, (float(np.mean(budget_docs[:n])),
                                                                  float(np.mean(budget_docs[n:]))))
        visits = train.samples or train.budget_flops / means[train.ledger_kind]
        row: dict[str, Any] = {
            "model": point.model, "arm": point.arm, "seed": run.seed, "budget_flops": train.budget_flops,
            "budget_kind": train.budget_kind, "samples_requested": train.samples, "fingerprint": run.fingerprint(),
            "dir": str(Path(run.out).relative_to(study)) if train.budget_flops is not None else None,
            "parameters": shape.params_total,
        }
        done = DryRun(work, costs, run, spec, planned).trained(max_docs) if max(visits, n) <= max_docs else None
        if done is None and train.samples is not None:  # every document of the arm's segments trains once
            ids = np.concatenate(list(curriculum.segments(spec, n, np.random.default_rng(run.seed), samples=train.samples)))
            if train.overflow == "drop":
                ids = ids[work.lengths[ids] <= work.capacity]
            done = (ids, None, "samples" if len(ids) == train.samples else "data")
            row["method"] = "counted"
        if done is not None:
            ids, steps, stopped = done
            if not len(ids):
                raise ValueError(f"{point.model} {point.arm}: the arm would take no optimizer step (its budget or "
                                 "data cannot pay for a single document); raise the budget or check the data")
            totals = costs.totals(ids)
            row.setdefault("method", "simulated")
            row.update(train_flops={k: totals[k] for k in KINDS}, steps=steps, samples=len(ids),
                       tokens=totals["tokens"], epochs=len(ids) / n, stopped_by=stopped)
        else:  # stops at the first document that does not fit: within one document of the budget
            budget, kind = train.budget_flops, train.ledger_kind
            costliest = max(int(budget_docs[:n].max()) if "ift" in formats_used([spec]) else 0,
                            int(budget_docs[n:].max()) if "reasoning" in formats_used([spec]) else 0)
            row.update(method="bound" if kind == "exact" else "estimate",
                       train_flops={k: budget if k == kind else budget * means[k] / means[kind] for k in KINDS},
                       train_flops_min=max(budget - costliest, 0), steps=None, samples=round(visits), tokens=None,
                       epochs=visits / n, stopped_by="budget")
        answer = (1 - spec.share) * work.mean_answer("ift") + spec.share * work.mean_answer("reasoning")
        prompt_len = max(1, round(work.mean_prompt()))
        gen_len = max(1, min(round(answer), work.max_new_tokens or round(answer)))
        per_query = generation_flops(shape, prompt_len, gen_len)["exact"]
        hours = row["train_flops"]["exact"] / (device.peak_flops * device.arm_mfu(point.arm)) / 3600
        row.update(eval_queries=work.eval_queries, eval_prompt_tokens=prompt_len, eval_answer_tokens=gen_len,
                   inference_flops_per_query=per_query, eval_flops=work.eval_queries * per_query,
                   mfu=device.arm_mfu(point.arm), device_hours=hours, wall_hours=hours / device.devices)
        return row


def make_plan(cfg: SweepConfig, device: Device, *, samples: int | None = None, lengths: tuple[str, str] | None = None,
              study: str | Path = ".", max_docs: int = MAX_DOCS, planner: Planner | None = None,
              message: Callable[[str], None] | None = None) -> dict:
    """Every point of ``cfg``'s grid (with ``samples``: that many samples per point instead of the
    budgets) with its FLOPs and device-hours, and their totals, as plan.json holds them."""
    planner = planner or Planner(cfg.arms, lengths, message)
    study = Path(study)
    points = [{"index": i, **planner.point(p, run, device, study, max_docs)}
              for i, (p, run) in enumerate(point_runs(cfg, study, samples))]
    works = {id(w): w for w, _ in planner._work.values()}.values()
    return {
        "grid": {"models": list(cfg.models), "arms": list(cfg.arms), "seeds": list(cfg.seeds) or [cfg.base.seed],
                 "budgets": None if samples is not None else list(cfg.budgets),
                 "budget_kind": cfg.base.train.budget_kind, "samples": samples},
        "data": [{"source": w.source, "examples": w.n, "pack_tokens": w.capacity, "eval_queries": w.eval_queries,
                  "mean_prompt_tokens": w.mean_prompt(), "mean_ift_answer_tokens": w.mean_answer("ift"),
                  "mean_reasoning_answer_tokens": w.mean_answer("reasoning")} for w in works],
        "device": {"name": device.name, "dtype": device.dtype, "peak_flops": device.peak_flops,
                   "devices_per_point": device.devices, "mfu_default": device.default_mfu, "mfu_by_arm": device.mfu,
                   "mfu_source": device.mfu_source},
        "assumptions": [
            f"MFU {device.mfu_source}",
            "device-hours = exact training FLOPs / (peak x MFU) / 3600; wall hours = device-hours / devices per "
            "point; evaluation is counted in FLOPs, not timed",
            "evaluation: queries x generation FLOPs of the mean prompt and the arm's mean answer length (an expectation)",
            "method: simulated = the trainer's step plan run on the data (exact); counted = every sample's FLOPs "
            "(exact); bound = within one document below the budget; estimate = the budget x the arm's mean "
            "exact / budget-count ratio",
        ],
        "points": points,
        "totals": {"points": len(points), "train_flops_exact": sum(p["train_flops"]["exact"] for p in points),
                   "eval_flops": sum(p["eval_flops"] for p in points),
                   "device_hours": sum(p["device_hours"] for p in points),
                   "wall_hours_serial": sum(p["wall_hours"] for p in points)},
    }


def hours_text(hours: float) -> str:
    """Hours as a plan prints them: one decimal from 10 up, three significant digits below."""
    return f"{hours:,.1f}" if hours >= 10 else f"{hours:.3g}"


def markdown(plan: dict) -> str:
    """plan.md: the assumptions, one table row per point, and the totals."""
    dev, tot = plan["device"], plan["totals"]
    size = "samples" if plan["grid"]["samples"] is not None else f"budget ({plan['grid']['budget_kind']})"
    lines = [f"# Plan: {tot['points']} points on {dev['name']} ({dev['dtype']} peak {dev['peak_flops']:.3g} FLOP/s)", ""]
    lines += [f"- data: {d['source']}, {d['examples']:,} examples, packs of {d['pack_tokens']:,} tokens, "
              f"{d['eval_queries']} held-out queries" for d in plan["data"]]
    lines += [f"- {a}" for a in plan["assumptions"]] + [""]
    lines += [f"| model | arm | seed | {size} | train FLOPs (exact) | method | epochs | eval FLOPs | MFU | device-h |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in plan["points"]:
        amount = f"{p['samples_requested']:,}" if p["budget_flops"] is None else f"{p['budget_flops']:.3e}"
        lines.append(f"| {p['model']} | {p['arm']} | {p['seed']} | {amount} | {p['train_flops']['exact']:.4e} | "
                     f"{p['method']} | {p['epochs']:.3g} | {p['eval_flops']:.3e} | {p['mfu']:.3f} | {p['device_hours']:.4g} |")
    lines += ["", f"**Total**: {tot['points']} points, {tot['train_flops_exact']:.4e} training FLOPs (exact), "
              f"{tot['eval_flops']:.4e} evaluation FLOPs, **{hours_text(tot['device_hours'])} {dev['name']} device-hours** "
              f"({hours_text(tot['wall_hours_serial'])} h one point after another at {dev['devices_per_point']} device(s) per point).", ""]
    return "\n".join(lines)


def write_plan(plan: dict, out: str | Path) -> tuple[Path, Path]:
    """plan.json and plan.md in the folder ``out`` (made if needed); their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "plan.json", plan)
    write_text_atomic(folder / "plan.md", markdown(plan))
    return folder / "plan.json", folder / "plan.md"
