"""`rdistill flops`: every FLOP count of training and inference side by side, and why they disagree."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from rdistill.cli.app import app, fail, quiet_libraries
from rdistill.cli.options import check_pack_tokens, command, opt, values
from rdistill.cli.render import sci, table_console
from rdistill.config import DataConfig, ModelConfig

FLOPS_OPTIONS = (opt("model.name", "--model"), opt("model.tokenizer"), opt("data.path", "--data"), opt("data.columns"),
                 opt("train.pack_tokens"))


def _param(name: str, tp: Any, default: Any, help_text: str, *decls: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[tp, typer.Option(*decls, help=help_text)])


FLOPS_PARAMS = [
    _param("arm", str, "reasoning", "Which answers to count: ift or reasoning."),
    _param("lengths", Optional[str], None, "Count a length distribution instead of data: ift-like or reasoning-like."),
    _param("num_docs", int, 2000, "Documents to count (from the data or the distribution)."),
    _param("measure", bool, True, "Also run FlopCounterMode on a real forward+backward of a few packs (CPU; "
           "students that can be built)."),
    _param("max_packs", int, 2, "Packs measured by FlopCounterMode."),
    _param("prompt_len", Optional[int], None, "Inference breakdown: prompt tokens (default: the data's mean)."),
    _param("gen_len", Optional[int], None, "Inference breakdown: generated tokens (default: the data's mean answer)."),
    _param("as_json", bool, False, "Print JSON for machines instead of tables.", "--json"),
]


def _flops(arm: str, lengths: str | None, num_docs: int, measure: bool, max_packs: int, prompt_len: int | None,
           gen_len: int | None, as_json: bool, **given: Any) -> None:
    """Training and inference FLOPs by every count, side by side, and why they disagree."""
    import json as json_mod

    import numpy as np

    from rdistill.data.packing import auto_pack_tokens
    from rdistill.data.sources import open_source, resolve_tokenizer
    from rdistill.data.tokenize import encode_document
    from rdistill.flops.audit import DISAGREEMENTS, count, inference_table, measure_sample
    from rdistill.flops.distributions import sample_lengths
    from rdistill.flops.ledger import ModelShape
    from rdistill.model import QWEN25_SHAPES, build_student, shape_config

    v = values(FLOPS_OPTIONS, given)
    model, data, pack_tokens = v["model"], v["data"], v["pack_tokens"]
    quiet_libraries()
    if arm not in ("ift", "reasoning"):
        fail(f"--arm must be ift or reasoning, got {arm!r}")
    for flag, n in (("--num-docs", num_docs), ("--max-packs", max_packs), ("--prompt-len", prompt_len),
                    ("--gen-len", gen_len)):
        if n is not None and n < 1:
            fail(f"{flag} must be at least 1, got {n}")
    try:
        check_pack_tokens(pack_tokens)
    except ValueError as e:
        fail(e)
    docs_tokens = None
    net = None
    try:
        if lengths is not None:
            docs = sample_lengths(lengths, num_docs)
            source = f"{num_docs} documents drawn from the {lengths} distribution"
        else:
            data_cfg = DataConfig(path=data, columns=v["columns"], train_size=num_docs, eval_size=1)
            loaded = open_source(data_cfg, seed=0, hold_out=False, limit=num_docs)
            examples = loaded.train
            source = f"{len(examples)} rows of {data}" if data is not None else f"{len(examples)} built-in synthetic examples"
            tok = resolve_tokenizer(ModelConfig(name=model, tokenizer=v["tokenizer"]), loaded)
            docs_tokens = [encode_document(tok, e.prompt, getattr(e, arm)) for e in examples]
            docs = [(len(ids), min(len(ids) - 1, sum(mask))) for ids, mask in docs_tokens]
        if model in QWEN25_SHAPES:
            shape = ModelShape.from_config(shape_config(model))
        else:
            vocab = len(tok) if docs_tokens is not None else 512
            net = build_student(model, vocab)
            shape = ModelShape.from_model(net)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    cap = pack_tokens or auto_pack_tokens(max(l for l, _ in docs))
    rep = count(shape, docs, cap)
    if measure and net is not None and docs_tokens is not None:
        rep.measured["flop_counter"], rep.measured_ledger["executed"] = measure_sample(
            net, shape, docs_tokens, cap, max_packs
        )
    p_len = prompt_len or max(1, round(float(np.mean([l - a for l, a in docs]))))
    g_len = gen_len or max(1, round(float(np.mean([a for _, a in docs]))))
    inference = inference_table(shape, p_len, g_len)
    result = {
        "model": model,
        "arm": arm,
        "source": source,
        "pack_tokens": cap,
        "parameters": {"total": shape.params_total, "non_embedding": shape.params_non_embedding},
        **rep.to_dict(),
        "inference": {"prompt_tokens": p_len, "generated_tokens": g_len, **inference},
        "disagreements": dict(DISAGREEMENTS),
    }
    if as_json:
        typer.echo(json_mod.dumps(result, indent=2))
        return
    out = table_console()
    t = Table(title=f"training FLOPs: {model}, {arm} answers, {source}, {rep.num_packs} packs of {cap} tokens")
    for col in ("component", "exact", "executed", "paper", "paper / exact"):
        t.add_column(col, justify="left" if col == "component" else "right")
    for row in result["rows"]:
        ratio = "-" if not row["exact"] else f"{row['paper'] / row['exact']:.2f}x"
        t.add_row(row["component"], sci(row["exact"]), sci(row["executed"]), sci(row["paper"]), ratio)
    total = result["rows"][-1]
    t.add_row("6ND (all parameters)", "", "", sci(total["six_nd"]), f"{total['six_nd'] / total['exact']:.2f}x")
    t.add_row("6ND (no embedding)", "", "", sci(total["six_nd_non_embedding"]),
              f"{total['six_nd_non_embedding'] / total['exact']:.2f}x")
    out.print(t)
    if rep.measured:
        m, led = rep.measured["flop_counter"], rep.measured_ledger["executed"]
        out.print(f"FlopCounterMode on {max_packs} packs (forward+backward, MATH SDPA): {m:.4e} measured, "
                  f"{led:.4e} in the ledger's executed count ({100 * (m - led) / led:+.4f}%)")
    inf = Table(title=f"inference FLOPs per query: {p_len} prompt + {g_len} generated tokens, KV cache")
    for col in ("count", "FLOPs", "paper / exact"):
        inf.add_column(col, justify="left" if col == "count" else "right")
    inf.add_row("exact", sci(inference["exact"]), "1.00x")
    inf.add_row("paper (prefill + decode)", sci(inference["paper"]), f"{inference['paper'] / inference['exact']:.2f}x")
    out.print(inf)
    out.print("[bold]Why the counts disagree[/]")
    for name, why in DISAGREEMENTS:
        out.print(f"- {name}: {why}")


command(app, "flops", _flops, FLOPS_OPTIONS, extra=FLOPS_PARAMS, help_overrides={
    "model.name": "Student: a preset, a paper shape (qwen2.5-0.5b ... qwen2.5-14b; counted, not built) or a local "
                  "checkpoint/config folder.",
    "data.path": "Paired data file; default: the built-in synthetic data.",
})
