"""Typed configuration, one dataclass per concern, and the only home of every default.

A run is a ``RunConfig``: where it writes (``out``), which arms, the seed, and one section per concern
(``data``, ``model``, ``train``, ``eval``). A sweep is a ``SweepConfig``: a grid of models x arms x
budgets over one base ``RunConfig``. The run folder's config.json is ``RunConfig.to_dict()``; a YAML
or JSON file with the same keys (any subset: the rest take the defaults below) starts a run with
``rdistill train --config FILE``, and ``load_config`` reads it back with every key checked.

Each field's docstring is its documentation and the command line's help text (see cli/options.py);
choices are ``Literal`` types, checked when a config is built, from a file or in code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rdistill.typed import SchemaError, from_dict, to_dict

BudgetKind = Literal["exact", "paper", "6nd"]
PackMode = Literal["bf", "bfd", "ordered"]
Overflow = Literal["error", "truncate", "drop"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
Recompute = Literal["none", "full", "selective"]
LogSink = Literal["none", "tensorboard"]
Parallel = Literal["none", "ddp", "fsdp"]

LEDGER_KINDS = {"exact": "exact", "paper": "paper", "6nd": "six_nd"}
"""Budget kind (as the user names it) -> the FLOP ledger's name of that count."""


PRESENTATION = ("out", "log_every", "log")
"""RunConfig fields that change where and how a run reports, never its results (not fingerprinted)."""
PRESENTATION_TRAIN = ("save_every",)


def _check_choices(obj: Any) -> None:
    """Every Literal-typed field of a config holds one of its choices."""
    for f in dataclasses.fields(obj):
        tp = typing.get_type_hints(type(obj))[f.name]
        choices = typing.get_args(tp) if typing.get_origin(tp) is Literal else None
        value = getattr(obj, f.name)
        if choices and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the paired (prompt, ift, reasoning) examples come from, and which are held out."""

    path: str | None = None
    """Paired data with columns prompt, ift, reasoning: jsonl, json, parquet, a datasets folder (save_to_disk or data files), or a Hub dataset id org/name (from the local datasets cache, offline). Default: the built-in synthetic teacher."""
    eval_path: str | None = None
    """Held-out paired data (--eval-split picks its split). Default with --data: its --eval-split, else a held-out slice of it (--eval-size rows, at most 10%)."""
    columns: dict[str, str] | None = None
    """Column mapping, e.g. 'prompt=question,ift=short,reasoning=long'."""
    skip_bad_rows: bool = False
    """Skip (and count) malformed rows instead of stopping at the first."""
    seed: int | None = None
    """Seed of the built-in data and of the held-out split (and slice) of --data. Default: --seed."""
    train_size: int = 20000
    """Synthetic training examples."""
    eval_size: int = 200
    """Held-out examples (synthetic, or sliced from --data)."""
    difficulty: int = 2
    """Synthetic data difficulty, 1-5."""
    max_unknown_share: float = 0.01
    """Stop when more than this share of the tokens is unknown to the tokenizer (<unk>); 1 accepts any."""
    max_field_chars: int = 1_000_000
    """Longest prompt or answer accepted, in characters; a longer one is a bad row (bounds memory)."""
    split: str | None = None
    """Split of --data to train on when it holds several (a Hub dataset, a DatasetDict folder). Default: train."""
    eval_split: str | None = None
    """Split of --data (or of --eval-data) to evaluate on. Default: a held-out slice of the training split."""
    system_prompt: str | None = None
    """System prompt given to the student's chat template ('' removes the template's default one). Default: the template's own."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_unknown_share <= 1:
            raise ValueError(f"--max-unknown-share must lie in [0, 1], got {self.max_unknown_share}")
        if self.train_size < 1:
            raise ValueError(f"--train-size must be at least 1, got {self.train_size}")
        if self.max_field_chars < 1:
            raise ValueError(f"--max-field-chars must be at least 1, got {self.max_field_chars}")
        if self.eval_size < 0:
            raise ValueError(f"--eval-size must be 0 or more, got {self.eval_size}")
        if not 1 <= self.difficulty <= 5:
            raise ValueError(f"--difficulty must be between 1 and 5, got {self.difficulty}")


@dataclass(frozen=True)
class ModelConfig:
    """The student."""

    name: str = "tiny"
    """Student preset (tiny, small, base; see `rdistill models`) or a local Hugging Face checkpoint folder."""
    tokenizer: str | None = None
    """Local Hugging Face tokenizer folder. Default: the checkpoint's own, else the built-in one (for the synthetic data)."""
    dtype: Dtype = "auto"
    """Weights and activations: bf16/fp16 keep fp32 master weights and optimizer state (fp16 with a loss scaler). auto: bf16 for a checkpoint (fp16 on a GPU without bf16), fp32 for a preset on CPU, bf16 for a preset on a GPU."""
    pretrain: float = 0.0
    """Pretrain a preset student on a generic copying corpus to this many FLOPs before the arms (once, cached; not in any arm's budget; see rdistill.pretrain). 0: from scratch."""

    def __post_init__(self) -> None:
        _check_choices(self)
        if not (self.pretrain >= 0 and math.isfinite(self.pretrain)):
            raise ValueError(f"--pretrain must be 0 or a positive number of FLOPs, got {self.pretrain}")


PAPER_BATCH = 32
"""The paper's global batch, in samples: the default step in --samples mode."""


@dataclass(frozen=True)
class TrainConfig:
    """How one arm is trained: its budget, optimiser, schedule and packing."""

    budget_flops: float | None = None
    """FLOP budget per arm, e.g. 1e13. Each arm stops when its count reaches it."""
    budget_kind: BudgetKind = "exact"
    """Which count the budget is compared with: exact (what the kernels do usefully), paper (its formula) or 6nd."""
    samples: int | None = None
    """The paper's mode instead of --budget: this many samples per arm, one epoch, FLOPs reported."""
    lr: float | None = None
    """Peak learning rate of every arm. Default: 3e-3 for a preset trained from scratch; for a checkpoint the paper's value for its size and the arm's format (see `rdistill models`)."""
    lr_ift: float | None = None
    """Peak learning rate of IFT-format training: the ift arm and the IFT phase of seqNN arms (mixNN: see the README). Default --lr."""
    lr_reasoning: float | None = None
    """Peak learning rate of reasoning-format training: the reasoning arm and the reasoning phase of seqNN arms. Default --lr."""
    warmup_frac: float = 0.05
    """Linear warmup, as a fraction of the arm's optimizer steps (counted before training, also under a budget)."""
    decay_frac: float = 0.3
    """Final linear decay to --final-lr-frac of the peak, as a fraction of the arm's optimizer steps."""
    warmup_steps: int | None = None
    """Linear warmup in optimizer steps (the paper: 150); overrides --warmup."""
    decay_steps: int | None = None
    """Final decay in optimizer steps (the paper: 300); overrides --decay."""
    final_lr_frac: float = 0.1
    """Learning rate at the end of the decay, as a fraction of the peak (the paper: 10%)."""
    weight_decay: float = 0.0
    """AdamW weight decay of matrices (vectors never decay)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0: no clipping)."""
    pack_tokens: int | None = None
    """Tokens per packed row; documents never cross rows. Default: 1024, or the next power of two holding the longest document."""
    pack_mode: PackMode = "bf"
    """bf: best fit in shuffled order, packs mix lengths (default); bfd: best fit decreasing, densest, packs sorted by length; ordered: next fit in order."""
    packs_per_step: int = 1
    """Packed rows per optimizer step (gradient accumulation), when steps are token-capacity steps (--batch-samples 0)."""
    batch_samples: int | None = None
    """Samples per optimizer step, packed into as many rows as they need (gradient accumulation over the rows). 0: token-capacity steps of --packs-per-step rows. Default: 32 with --samples (the paper's global batch; 0 if --packs-per-step is given), else 0."""
    overflow: Overflow = "error"
    """Documents longer than --pack-tokens: error, truncate or drop."""
    recompute: Recompute = "none"
    """Activation checkpointing of decoder layers: none, full (each layer's forward runs again in backward) or selective (only each layer's MLP)."""
    save_every: float = 0.1
    """Checkpoint each arm every N steps (N >= 1) or every fraction of its budget (0 < N < 1), for --resume; 0: never."""

    def __post_init__(self) -> None:
        _check_choices(self)
        if (self.budget_flops is None) == (self.samples is None):
            raise ValueError("give exactly one of a FLOP budget (--budget) or a sample count (--samples)")
        if self.budget_flops is not None and not (self.budget_flops > 0 and math.isfinite(self.budget_flops)):
            raise ValueError(f"the budget must be a positive number, got {self.budget_flops}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {self.samples}")
        if self.pack_tokens is not None and self.pack_tokens < 1 or self.packs_per_step < 1:
            raise ValueError("--pack-tokens and --packs-per-step must be positive")
        if self.batch_samples is not None and (self.batch_samples < 0 or self.batch_samples and self.packs_per_step != 1):
            raise ValueError("--batch-samples must be 0 (token-capacity steps) or a positive number of samples, and "
                             "--packs-per-step only applies with --batch-samples 0")
        for flag, n in (("--warmup-steps", self.warmup_steps), ("--decay-steps", self.decay_steps)):
            if n is not None and n < 0:
                raise ValueError(f"{flag} must be 0 or more, got {n}")
        if self.save_every < 0 or (self.save_every >= 1 and self.save_every != int(self.save_every)):
            raise ValueError(f"--save-every must be a whole number of steps, a fraction in (0, 1), or 0, got {self.save_every}")
        for flag, lr in (("--lr", self.lr), ("--lr-ift", self.lr_ift), ("--lr-reasoning", self.lr_reasoning)):
            if lr is not None and not (lr > 0 and math.isfinite(lr)):
                raise ValueError(f"{flag} must be a positive learning rate, got {lr}")
        if not 0 <= self.final_lr_frac <= 1 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("need 0 <= final_lr_frac <= 1, weight_decay >= 0 and grad_clip >= 0")
        if not (0 <= self.warmup_frac and 0 <= self.decay_frac and self.warmup_frac + self.decay_frac <= 1):
            raise ValueError("need 0 <= warmup_frac, 0 <= decay_frac and warmup_frac + decay_frac <= 1")

    @property
    def step_samples(self) -> int:
        """Samples per optimizer step; 0: token-capacity steps (see batch_samples)."""
        if self.batch_samples is not None:
            return self.batch_samples
        return PAPER_BATCH if self.samples is not None and self.packs_per_step == 1 else 0

    @property
    def ledger_kind(self) -> str:
        """The FLOP ledger's name of the count the budget is compared with."""
        return LEDGER_KINDS[self.budget_kind]

    def format_lr(self, fmt: str) -> float | None:
        """Peak learning rate of training in format ``fmt`` (ift, reasoning) as configured: --lr-ift /
        --lr-reasoning, else --lr; None when not given (the run picks the student's default, see
        rdistill.model.default_lr)."""
        specific = {"ift": self.lr_ift, "reasoning": self.lr_reasoning}[fmt]
        return self.lr if specific is None else specific


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of every trained arm on the held-out set."""

    enabled: bool = True
    """Evaluate each arm after training (--no-eval skips it)."""
    max_new_tokens: int | None = None
    """Generation cap in evaluation. Default: 1.5x the longest teacher reasoning answer."""
    batch_size: int = 64
    """Prompts generated together."""

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"the evaluation batch size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig:
    """One run: every arm trained from the same initial student to the same budget, then evaluated."""

    train: TrainConfig
    """How every arm trains; a budget (--budget) or a sample count (--samples) is required."""
    out: str | None = None
    """Run folder. Default: runs/<date>-<time>."""
    arms: tuple[str, ...] = ("ift", "reasoning")
    """Comma-separated arms: ift, reasoning, seqNN (IFT first, then NN% reasoning), mixNN (NN% reasoning shuffled in)."""
    seed: int = 0
    """Seed of the initialisation and the data order (and of the data and its split unless --data-seed); the same seed gives the same results."""
    threads: int | None = None
    """CPU threads for torch (default: torch's choice)."""
    log_every: int = 50
    """When stdout is not a terminal, print a plain progress line every N optimizer steps (0: never)."""
    parallel: Parallel = "none"
    """Under torchrun: ddp (DistributedDataParallel) or fsdp (FSDP2, sharded per decoder layer); every rank trains its share of each global step. none: one process."""
    log: LogSink = "none"
    """Also log every step's scalars to: none, or tensorboard (OUT/tensorboard; needs the tensorboard package)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def data_seed(self) -> int:
        """The seed of the data and its held-out split."""
        return self.seed if self.data.seed is None else self.data.seed

    def __post_init__(self) -> None:
        _check_choices(self)
        if self.log_every < 0:
            raise ValueError(f"--log-every must be 0 or more, got {self.log_every}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.eval.enabled and self.data.eval_path is None and self.data.eval_size < 1:
            raise ValueError("evaluation needs held-out rows: give --eval-size of 1 or more, --eval-data, or --no-eval")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def fingerprint(self) -> str:
        """A hash of every setting that can change the run's results (all but where and how it logs
        and checkpoints): two runs with the same fingerprint are the same run."""
        settings = {k: v for k, v in self.to_dict().items() if k not in PRESENTATION}
        settings["train"] = {k: v for k, v in settings["train"].items() if k not in PRESENTATION_TRAIN}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        return from_dict(cls, data)


@dataclass(frozen=True)
class SweepConfig:
    """A grid of students x arms x budgets, each point a one-arm run over the same base settings."""

    budgets: tuple[float, ...]
    """Comma-separated FLOP budgets, e.g. 3e12,1e13,3e13."""
    base: RunConfig
    """Every other setting, shared by all points (its out, arms, model and budget are the point's)."""
    models: tuple[str, ...] = ("tiny", "small")
    """Comma-separated presets or checkpoint folders."""
    arms: tuple[str, ...] = ("ift", "reasoning", "seq50")
    """Comma-separated arms (ift, reasoning, seqNN, mixNN)."""
    seeds: tuple[int, ...] = ()
    """Comma-separated replicate seeds, e.g. 0,1,2: every point once per seed (the initialisation and data order change; the data and its held-out split stay those of --data-seed, else --seed, unless --seed-data). Default: --seed alone."""
    seed_data: bool = False
    """Replicate seeds also redraw the built-in data and the held-out split."""
    model_lrs: dict[str, float] | None = None
    """Peak learning rates per student, e.g. 'tiny=3e-3,small=2e-3' (both formats) or 'small:ift=1e-3,small:reasoning=2e-3'; over --lr, --lr-ift, --lr-reasoning."""

    def __post_init__(self) -> None:
        for key in self.model_lrs or {}:
            model, _, fmt = key.partition(":")
            if model not in self.models or fmt not in ("", "ift", "reasoning"):
                raise ValueError(f"--model-lrs: {key!r} is not MODEL or MODEL:ift or MODEL:reasoning for a model of "
                                 f"the sweep ({', '.join(self.models)})")
            if not (self.model_lrs[key] > 0 and math.isfinite(self.model_lrs[key])):
                raise ValueError(f"--model-lrs: {key} must be a positive learning rate")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"a seed is listed twice in --seeds {','.join(map(str, self.seeds))}")
        if not self.models or not self.budgets:
            raise ValueError("a sweep needs at least one model and one budget")
        if not all(b > 0 and math.isfinite(b) for b in self.budgets):
            raise ValueError(f"budgets must be positive numbers, got {', '.join(map(str, self.budgets))}")


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` laid over it, nested dicts merged key by key."""
    out = dict(data)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys of a YAML (.yaml, .yml) or JSON config file, as a dict; ValueError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read config file {p}: {e.strerror or e}") from e
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e})") from e
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e}); YAML files must end in .yaml or .yml") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config file holds one object of keys (data, model, train, eval, ...), not {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig from a YAML or JSON file (config.json of a run folder works), ``overrides`` on top."""
    data = merge(read_config_file(path), overrides or {})
    try:
        return RunConfig.from_dict(data)
    except SchemaError as e:
        raise ValueError(f"{path}: {e}") from e
