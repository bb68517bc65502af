"""Command-line options made from the config dataclasses (rdistill.config): one definition of each.

An ``Option`` names a field of ``RunConfig`` (or ``SweepConfig``) by its dotted path and the flag that
sets it; its type, help text (the field's docstring) and shown default come from the dataclass, so
the CLI has no second list of defaults. A generated option the user did not type (click's parameter
source tells) reaches the command as None, "not given": only typed flags override the config, built
from the defaults or from ``--config FILE``.

``train`` and ``sweep`` share ``SHARED_OPTIONS``; each adds its own (``train``: --budget, --samples,
--model, --arms, --out; ``sweep``: --budgets, --models, --arms, --out).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

import typer

from rdistill.config import RunConfig, SweepConfig
from rdistill.data.loading import parse_column_map
from rdistill.typed import field_docs, field_type


@dataclass(frozen=True)
class Option:
    """A command-line flag for one config field."""

    path: str
    """Dotted path of the field from the root config, e.g. ``train.lr``."""
    flag: str
    """The flag, e.g. ``--lr``; a boolean as ``--eval/--no-eval``."""
    root: type = RunConfig

    @property
    def ident(self) -> str:
        """The Python parameter name of the option."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")

    def field(self) -> tuple[type, dataclasses.Field]:
        cls = self.root
        *parents, name = self.path.split(".")
        for part in parents:
            cls = field_type(cls, part)
        return cls, next(f for f in dataclasses.fields(cls) if f.name == name)


def _opt(path: str, flag: str | None = None, root: type = RunConfig) -> Option:
    return Option(path, flag or "--" + path.rsplit(".", 1)[-1].replace("_", "-"), root)


TRAIN_ONLY_OPTIONS: tuple[Option, ...] = (
    _opt("train.budget_flops", "--budget"),
    _opt("train.samples"),
    _opt("arms"),
    _opt("model.name", "--model"),
    _opt("out"),
)
SHARED_OPTIONS: tuple[Option, ...] = (
    _opt("train.budget_kind"),
    _opt("model.tokenizer"),
    _opt("data.path", "--data"),
    _opt("data.eval_path", "--eval-data"),
    _opt("data.columns"),
    _opt("data.skip_bad_rows", "--skip-bad-rows/--no-skip-bad-rows"),
    _opt("train.lr"),
    _opt("train.lr_ift"),
    _opt("train.lr_reasoning"),
    _opt("train.warmup_frac", "--warmup"),
    _opt("train.decay_frac", "--decay"),
    _opt("train.warmup_steps"),
    _opt("train.decay_steps"),
    _opt("train.batch_samples"),
    _opt("train.pack_tokens"),
    _opt("train.pack_mode"),
    _opt("train.packs_per_step"),
    _opt("train.overflow"),
    _opt("data.difficulty"),
    _opt("data.train_size"),
    _opt("data.eval_size"),
    _opt("data.max_unknown_share"),
    _opt("data.max_field_chars"),
    _opt("data.split"),
    _opt("data.eval_split"),
    _opt("data.system_prompt"),
    _opt("model.dtype"),
    _opt("model.pretrain"),
    _opt("train.recompute"),
    _opt("train.save_every"),
    _opt("eval.max_new_tokens"),
    _opt("eval.enabled", "--eval/--no-eval"),
    _opt("seed"),
    _opt("data.seed", "--data-seed"),
    _opt("threads"),
    _opt("parallel"),
    _opt("log_every"),
    _opt("log"),
)
SWEEP_ONLY_OPTIONS: tuple[Option, ...] = (
    _opt("budgets", root=SweepConfig),
    _opt("models", root=SweepConfig),
    _opt("arms", root=SweepConfig),
    _opt("seeds", root=SweepConfig),
    _opt("seed_data", "--seed-data/--no-seed-data", root=SweepConfig),
    _opt("model_lrs", root=SweepConfig),
)
TRAIN_OPTIONS = TRAIN_ONLY_OPTIONS + SHARED_OPTIONS
SWEEP_OPTIONS = SWEEP_ONLY_OPTIONS + SHARED_OPTIONS


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _cli_type(tp: Any) -> Any:
    """The type typer parses a field's value as: lists and mappings are typed as one string."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (tuple, dict):
        return str
    if origin is Literal or tp in (int, float, str, bool):
        return tp
    raise TypeError(f"no command-line type for {tp!r}")


def _cli_default(default: Any) -> Any:
    """A field's default as the command line spells it (a tuple as a comma list)."""
    return ",".join(map(str, default)) if isinstance(default, tuple) else default


def parameters(options: Sequence[Option], help_overrides: Mapping[str, str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per option, typed for typer, with the field's default (shown in --help)."""
    params = []
    for opt in options:
        cls, f = opt.field()
        help_text = (help_overrides or {}).get(opt.path) or field_docs(cls).get(f.name, "")
        default = None if f.default is dataclasses.MISSING else _cli_default(f.default)
        info = typer.Option(*opt.flag.split(" "), help=help_text)
        annotation = Annotated[Optional[_cli_type(field_type(cls, f.name))], info]
        params.append(inspect.Parameter(opt.ident, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def _value(opt: Option, raw: Any) -> Any:
    """A typed command-line value as the config's JSON form (comma lists -> lists, mappings -> dicts)."""
    cls, f = opt.field()
    tp = _unwrap(field_type(cls, f.name))
    origin = typing.get_origin(tp)
    if not isinstance(raw, str) or origin not in (dict, tuple):
        return raw
    if origin is dict:
        mapping = parse_column_map(raw)
        if typing.get_args(tp)[1] is not float:
            return mapping
        try:
            return {k: float(v) for k, v in mapping.items()}
        except ValueError as e:
            raise ValueError(f"{opt.flag}: expected name=number pairs, got {raw!r}") from e
    items = [x.strip() for x in raw.split(",") if x.strip()]
    kind = typing.get_args(tp)[0]
    if kind not in (float, int):
        return items
    try:
        return [kind(x) for x in items]
    except ValueError as e:
        raise ValueError(f"{opt.flag}: expected comma-separated {'whole ' if kind is int else ''}numbers, got {raw!r}") from e


def overrides(options: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The options the user gave, as a nested dict keyed like config.json."""
    out: dict[str, Any] = {}
    for opt in options:
        raw = given.get(opt.ident)
        if raw is None:
            continue
        node = out
        *parents, name = opt.path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = _value(opt, raw)
    return out


def command(
    app: typer.Typer,
    name: str,
    body: Callable[..., None],
    options: Sequence[Option],
    extra: Sequence[inspect.Parameter] = (),
    help_overrides: Mapping[str, str] | None = None,
) -> None:
    """Register ``body(**kwargs)`` as command ``name`` with ``extra`` parameters then the config options."""

    idents = {o.ident for o in options}

    def cmd(ctx: typer.Context, **kwargs: Any) -> None:
        # a config option the user did not type is None ("not given"), so that it overrides nothing
        for ident in idents:
            source = ctx.get_parameter_source(ident)  # by name: typer may vendor its own click
            if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
                kwargs[ident] = None
        body(**kwargs)

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    params = [context, *extra, *parameters(options, help_overrides)]
    cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    cmd.__doc__ = body.__doc__
    cmd.__name__ = name
    app.command(name)(cmd)


def values(options: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Each option's value by parameter name: what the user gave (converted), else the field's default."""
    out = {}
    for opt in options:
        raw = given.get(opt.ident)
        if raw is None:
            _, f = opt.field()
            out[opt.ident] = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        else:
            out[opt.ident] = _value(opt, raw)
    return out


def opt(path: str, flag: str | None = None) -> Option:
    """The option of field ``path`` of RunConfig (e.g. ``data.train_size``), with its usual flag."""
    for o in (*TRAIN_OPTIONS, *SHARED_OPTIONS):
        if o.path == path and (flag is None or o.flag == flag):
            return o
    return _opt(path, flag)


def check_pack_tokens(pack_tokens: int | None) -> None:
    """--pack-tokens is a positive capacity, or not given (automatic); never 0 taken as "auto"."""
    if pack_tokens is not None and pack_tokens < 1:
        raise ValueError(f"--pack-tokens must be at least 1 (or left out for the automatic capacity), got {pack_tokens}")
