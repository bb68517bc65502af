"""Training throughput of rdistill against TRL's SFTTrainer, end to end, on the same documents.

Three systems train the same student from the same weights on the same documents for one epoch, with
the same completion-only loss, the same optimizer and a constant learning rate, each in a subprocess of
its own (so that each one's peak RSS is its own, and nothing one loads or registers changes the next):

- ``trl padded``: ``trl.SFTTrainer`` (trl 1.16), dataset in prompt/completion format,
  ``completion_only_loss=True``, ``packing=False``, batches of ``--batch-size`` documents padded to the
  longest (default: as many documents as fill a pack on average), ``attn_implementation="sdpa"``;
- ``trl packing``: the same with ``packing=True`` (``packing_strategy="bfd"``, ``max_length`` = the pack
  size, one pack per step), which TRL runs padding-free: one flat row with per-document
  ``position_ids``, from which transformers builds a per-document causal mask (``use_cache=False``);
- ``rdistill``: ``rdistill train --data PAIRS --eval-size 0 --no-eval --samples N --arms reasoning
  --pack-tokens P --dtype D --recompute none --lr LR --warmup 0 --decay 0 --save-every 0`` (its packer,
  packed varlen attention, fused LM head + loss over the labelled rows only), one pack per step.

The documents: the built-in synthetic teacher's first N distinct training pairs (all four families,
difficulty 2, ``--seed``), written once to a JSON-lines file that every system reads, in the reasoning
format. rdistill renders each as ``encode_document`` does (the student tokenizer's chat template with
the generation prompt, then the answer and EOS; loss on the answer and EOS only); TRL gets the same
split as text, ``prompt`` = ``rdistill.data.tokenize.prompt_text(tok, prompt)`` and ``completion`` = the
reasoning answer (TRL appends the EOS), and tokenizes prompt+completion itself (``--trl-input tokens``
hands it rdistill's token ids and masks instead). The worker checks TRL's tokenized documents against
``encode_document`` one by one, and the summary checks every system's total training tokens and loss
tokens against the others: same documents, same loss mask.

Same settings everywhere: AdamW (torch.optim.AdamW, not fused), betas (0.9, 0.95), eps 1e-8, weight
decay 0, gradient clipping at 1.0, constant learning rate (no warmup, no decay), no evaluation, no
checkpoints, ``--threads`` torch threads (and OMP_NUM_THREADS), seed ``--seed``. TRL's own defaults that
differ are overridden: ``gradient_checkpointing=False`` (rdistill: ``--recompute none``) and ``bf16``
as the setting says (TRL: autocast with fp32 master weights; rdistill ``--dtype bf16``: fp32 master
weights and optimizer state).

Measured: tokens/s = real (non-pad) training tokens / seconds in optimizer steps. A step's time is
forward, backward, clipping and the optimizer step; making the batch is not in it (TRL: from
``on_step_begin``, after its dataloader has collated the batch, to ``on_step_end``; rdistill: its
metrics.jsonl ``seconds``, measured after the pack is built). Also recorded: the same without the first
step (warm-up), steps, real and padded tokens, loss tokens (total and per step), final loss, each
subprocess's peak RSS and wall time. The ratio column divides each system's tokens/s by the baseline's
from the same invocation: the baseline is ``trl packing``, TRL at its best (``trl padded`` also has its
own ratio column).

Settings (``--settings``):

- ``tiny``: rdistill's ``tiny`` preset (Qwen2, 0.83M parameters; ``rdistill.model.build_student``, seed
  ``--seed``, the built-in tokenizer), fp32, lr 3e-3, 2,000 documents, packs of 1,024 tokens;
- ``smollm2``: SmolLM2-135M-Instruct (the folder ``python -m benchmarks.smollm2 convert`` writes; its
  own tokenizer and chat template), bf16, lr 2e-5, 128 documents, packs of 2,048 tokens.

Writes a row per system and setting to ``OUT_DIR/end_to_end.csv`` (appended; date, versions, machine:
see ``benchmarks/_common.py``) and the latest run as ``OUT_DIR/end_to_end.md``. ``--quick`` is a smoke
test (tiny: 48 documents; smollm2, when asked for: 4 documents, one step each) that writes under a
temporary folder unless ``--out-dir`` is given.

    .venv/bin/python -m benchmarks.smollm2 convert            # once, for the smollm2 setting
    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.end_to_end  # the measurement (quiet machine)
    .venv/bin/python -m benchmarks.end_to_end --quick         # smoke test, tiny only, ~1-2 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import RESULTS, CsvLog, describe, environment, markdown_table
from benchmarks._students import (
    SMOLLM2_DIR,
    MissingBench,
    cpu_flags,
    gib,
    require_bench,
    run_measured,
    run_rdistill_train,
    write_synthetic_pairs,
)

SYSTEMS = ("trl-padded", "trl-packing", "rdistill")
BASELINE = "trl-packing"
LABELS = {"trl-padded": "trl padded", "trl-packing": "trl packing", "rdistill": "rdistill"}
VERSION_PACKAGES = ("trl", "accelerate", "datasets")
BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = (0.9, 0.95), 1e-8, 0.0, 1.0
FIELDS = [
    "setting", "system", "model", "params", "dtype", "docs", "pack_tokens", "batch_size", "lr", "status", "error",
    "tokens_per_s", "tokens_per_s_after_first", "ratio_to_baseline", "ratio_to_baseline_after_first",
    "ratio_to_trl_padded", "steps", "train_tokens",
    "padded_tokens", "loss_tokens", "loss_tokens_per_step", "tokens_agree", "precision", "step_seconds", "final_loss",
    "peak_rss", "wall_seconds", "trl_input", "docs_checked", "command",
]
"""This benchmark's columns, after the environment's (``benchmarks._common.environment``)."""


@dataclass(frozen=True)
class Setting:
    name: str
    model: str
    """A preset name, or "smollm2" for the converted folder."""
    dtype: str
    lr: float
    docs: int
    pack_tokens: int
    quick_docs: int
    quick_pack_tokens: int


SETTINGS = {
    "tiny": Setting("tiny", "tiny", "fp32", 3e-3, 2000, 1024, 48, 1024),
    "smollm2": Setting("smollm2", "smollm2", "bf16", 2e-5, 128, 2048, 4, 1024),
}


# ----------------------------------------------------------------------------------------------------------------
# The TRL worker: runs in its own subprocess (python -m benchmarks.end_to_end --worker SPEC.json)


def _student_tokenizer(model: str):
    from rdistill.data.sources import builtin_tokenizer
    from rdistill.data.tokenize import load_tokenizer
    from rdistill.model import PRESETS

    return builtin_tokenizer() if model in PRESETS else load_tokenizer(model)


def _trl_model(model: str, tok, seed: int):
    """The student with rdistill's initial weights (a preset: ``build_student`` with the run's seed and
    token ids, as ``rdistill train`` builds it) on transformers' sdpa attention."""
    import torch
    from transformers import AutoModelForCausalLM

    from rdistill.model import PRESETS, build_student

    if model in PRESETS:
        tokens = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": None}
        net = build_student(model, len(tok), tokens=tokens, seed=seed)
        net.set_attn_implementation("sdpa")
        return net
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="sdpa")


def trl_worker(spec: dict) -> dict:
    """Train with TRL's SFTTrainer as ``spec`` says; per-step tokens, loss tokens and seconds."""
    import torch

    torch.set_num_threads(spec["threads"])
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from rdistill.data.loading import load_pairs
    from rdistill.data.tokenize import encode_document, prompt_text

    datasets.disable_progress_bars()
    tok = _student_tokenizer(spec["model"])
    pairs = load_pairs(spec["pairs"]).examples
    encoded = [encode_document(tok, ex.prompt, ex.reasoning) for ex in pairs]
    if spec["trl_input"] == "tokens":
        ds = datasets.Dataset.from_dict({"input_ids": [ids for ids, _ in encoded],
                                         "completion_mask": [[int(m) for m in mask] for _, mask in encoded]})
    else:
        ds = datasets.Dataset.from_dict({"prompt": [prompt_text(tok, ex.prompt) for ex in pairs],
                                         "completion": [ex.reasoning for ex in pairs]})
    packing = spec["system"] == "trl-packing"
    net = _trl_model(spec["model"], tok, spec["seed"])
    cfg = SFTConfig(
        output_dir=spec["out"], report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available(), seed=spec["seed"],
        data_seed=spec["seed"], num_train_epochs=1, gradient_accumulation_steps=1,
        per_device_train_batch_size=1 if packing else spec["batch_size"], dataloader_num_workers=0,
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, weight_decay=WEIGHT_DECAY,
        max_grad_norm=GRAD_CLIP, bf16=spec["dtype"] == "bf16", fp16=False, **_no_recompute(SFTConfig),
        completion_only_loss=True, packing=packing, packing_strategy="bfd",
        max_length=spec["pack_tokens"], pad_to_multiple_of=None, dataset_num_proc=None, torch_compile=False,
    )
    steps: list[dict] = []

    class Timed(SFTTrainer):
        pending = {"tokens": 0, "padded_tokens": 0, "loss_tokens": 0, "docs": 0, "loss": 0.0}

        def training_step(self, model, inputs, num_items_in_batch=None):
            p = self.pending
            ids, labels = inputs["input_ids"], inputs["labels"]
            p["padded_tokens"] += ids.numel()
            if "attention_mask" in inputs:
                p["tokens"] += int(inputs["attention_mask"].sum())
                p["docs"] += ids.shape[0]
            else:  # padding-free: one flat row, no padding (pad_to_multiple_of=None)
                p["tokens"] += ids.numel()
                p["docs"] += int((inputs["position_ids"] == 0).sum())
            p["loss_tokens"] += int((labels[:, 1:] != -100).sum())
            loss = super().training_step(model, inputs, num_items_in_batch)
            p["loss"] += float(loss.detach())
            return loss

    class Clock(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self.t0
            steps.append({**Timed.pending, "seconds": seconds})
            Timed.pending = {k: type(v)() for k, v in Timed.pending.items()}

    trainer = Timed(model=net, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    checked = _check_documents(trainer.train_dataset, encoded, packing)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    recompute = bool(getattr(trainer.model, "is_gradient_checkpointing", False))
    if recompute:
        raise RuntimeError("TRL trained with gradient checkpointing although it was switched off")
    return {"steps": steps, "train_seconds": seconds, "docs_checked": checked,
            "params": sum(p.numel() for p in dict.fromkeys(net.parameters())), "threads": torch.get_num_threads(),
            "mixed_precision": str(trainer.accelerator.mixed_precision), "recompute": recompute,
            "param_dtype": str(next(net.parameters()).dtype)}


def _no_recompute(config_cls) -> dict:
    """Activation checkpointing off (TRL's default is on), under the name this transformers knows."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: False}


def _check_documents(dataset, encoded: list, packing: bool) -> str:
    """TRL's prepared training rows against rdistill's ``encode_document``: document by document (no
    packing: token ids, and labels kept exactly on the loss mask), or in total (packing: tokens and
    labelled tokens). Raises when they differ; returns what was checked."""
    want_tokens = sum(len(ids) for ids, _ in encoded)
    want_loss = sum(sum(mask) for _, mask in encoded)
    rows = dataset.select_columns(["input_ids", "labels"]).to_dict()
    got_tokens = sum(len(r) for r in rows["input_ids"])
    got_loss = sum(sum(1 for x in r if x != -100) for r in rows["labels"])
    if (got_tokens, got_loss) != (want_tokens, want_loss):
        raise RuntimeError(f"TRL prepared {got_tokens} tokens ({got_loss} labelled) where rdistill encodes "
                           f"{want_tokens} ({want_loss} in the loss): not the same documents; try --trl-input tokens")
    if packing:
        return f"totals: {want_tokens} tokens, {want_loss} in the loss"
    if len(rows["input_ids"]) != len(encoded):
        raise RuntimeError(f"TRL kept {len(rows['input_ids'])} of {len(encoded)} documents")
    for i, ((ids, mask), got_ids, got_labels) in enumerate(zip(encoded, rows["input_ids"], rows["labels"])):
        if list(got_ids) != list(ids) or [x != -100 for x in got_labels] != list(mask):
            raise RuntimeError(f"document {i}: TRL's tokens or loss mask differ from rdistill's encode_document")
    return f"all {len(encoded)} documents identical"


# ----------------------------------------------------------------------------------------------------------------
# The driver


def _summary(steps: list[dict]) -> dict:
    tokens = sum(s["tokens"] for s in steps)
    seconds = sum(s["seconds"] for s in steps)
    rest = steps[1:]
    rest_s = sum(s["seconds"] for s in rest)
    return {
        "steps": len(steps), "train_tokens": tokens,
        "padded_tokens": sum(s.get("padded_tokens", s["tokens"]) for s in steps),
        "loss_tokens": sum(s["loss_tokens"] for s in steps),
        "loss_tokens_per_step": statistics.fmean(s["loss_tokens"] for s in steps) if steps else None,
        "step_seconds": seconds, "tokens_per_s": tokens / seconds if seconds else None,
        "tokens_per_s_after_first": sum(s["tokens"] for s in rest) / rest_s if rest_s else None,
        "final_loss": steps[-1].get("loss") if steps else None,
    }


def _error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "No such option" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _run_setting(setting: Setting, args: argparse.Namespace, work: Path) -> list[dict]:
    from rdistill.data.tokenize import encode_document

    quick = args.quick
    model = str(args.smollm2_folder) if setting.model == "smollm2" else setting.model
    if setting.model == "smollm2" and not (Path(model) / "config.json").is_file():
        raise SystemExit(f"{model} does not exist: run `python -m benchmarks.smollm2 convert` first")
    docs = args.docs or (setting.quick_docs if quick else setting.docs)
    pack = args.pack_tokens or (setting.quick_pack_tokens if quick else setting.pack_tokens)
    lr = args.lr or setting.lr
    folder = work / setting.name
    pairs = folder / "pairs.jsonl"
    write_synthetic_pairs(pairs, docs, seed=args.seed)
    from rdistill.data.loading import load_pairs

    tok = _student_tokenizer(model)
    lengths = [len(encode_document(tok, ex.prompt, ex.reasoning)[0]) for ex in load_pairs(pairs).examples]
    if max(lengths) > pack:
        raise SystemExit(f"{setting.name}: the longest document has {max(lengths)} tokens, more than the pack "
                         f"({pack}); raise --pack-tokens")
    batch = args.batch_size or max(1, round(pack / statistics.fmean(lengths)))
    print(f"[{setting.name}] {model}, {setting.dtype}, {docs} documents ({sum(lengths):,} tokens, mean "
          f"{statistics.fmean(lengths):.0f}, longest {max(lengths)}), pack {pack}, padded batches of {batch}, "
          f"lr {lr:g}", flush=True)
    child_env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                 "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for system in args.systems:
        base = {"setting": setting.name, "system": system, "model": model, "dtype": setting.dtype, "docs": docs,
                "pack_tokens": pack, "batch_size": batch if system == "trl-padded" else "", "lr": lr,
                "trl_input": args.trl_input if system != "rdistill" else ""}
        if system == "rdistill":
            flags = [
                "--model", model, "--data", str(pairs), "--eval-size", "0", "--no-eval", "--samples", str(docs),
                "--arms", "reasoning", "--pack-tokens", str(pack), "--dtype", setting.dtype, "--recompute", "none",
                "--lr", str(lr), "--warmup", "0", "--decay", "0", "--threads", str(args.threads),
                "--seed", str(args.seed), "--save-every", "0",
            ]
            run = run_rdistill_train(flags, folder / "rdistill", env=child_env, timeout=args.timeout,
                                     keep_models=args.keep_models)
            metrics = run.metrics.get("reasoning", [])
            steps = [{"tokens": m["tokens"], "loss_tokens": m["loss_tokens"], "seconds": m["seconds"],
                      "loss": m.get("loss")} for m in metrics]
            arm = run.arm(0)
            row = {**base, **_summary(steps), "params": (arm.get("parameters") or {}).get("total", ""),
                   "precision": f"{arm.get('dtype', '?')}, recompute {arm.get('recompute', '?')}",
                   "docs_checked": "", "command": " ".join(run.argv)}
            status, log, rss, wall = run.returncode, run.log, run.peak_rss_bytes, run.wall_seconds
        else:
            spec = {"system": system, "model": model, "pairs": str(pairs), "dtype": setting.dtype, "lr": lr,
                    "pack_tokens": pack, "batch_size": batch, "threads": args.threads, "seed": args.seed,
                    "trl_input": args.trl_input, "out": str(folder / f"{system}-trainer"),
                    "result": str(folder / f"{system}.json")}
            spec_path = folder / f"{system}.spec.json"
            spec_path.write_text(json.dumps(spec, indent=1))
            argv = [sys.executable, "-m", "benchmarks.end_to_end", "--worker", str(spec_path)]
            m = run_measured(argv, folder / f"{system}.log", env=child_env, timeout=args.timeout)
            result = json.loads(Path(spec["result"]).read_text()) if m.returncode == 0 else {}
            row = {**base, **_summary(result.get("steps", [])), "params": result.get("params", ""),
                   "precision": (f"{result.get('param_dtype', '?')} weights, autocast "
                                 f"{result.get('mixed_precision', '?')}, recompute "
                                 f"{'full' if result.get('recompute') else 'none'}") if result else "",
                   "docs_checked": result.get("docs_checked", ""), "command": " ".join(argv)}
            status, log, rss, wall = m.returncode, m.log, m.peak_rss_bytes, m.wall_seconds
        row.update(status="ok" if status == 0 else f"exit {status}", error="" if status == 0 else _error_line(log),
                   peak_rss=rss, wall_seconds=round(wall, 2))
        rows.append(row)
        print(f"  {LABELS[system]:12s} {row['status']}: {row['steps']} steps, {row['train_tokens']:,} tokens "
              f"({row['loss_tokens']:,} in the loss), {row['tokens_per_s'] or 0:,.1f} tokens/s "
              f"({row['tokens_per_s_after_first'] or 0:,.1f} after the first step), peak RSS {gib(rss)} GiB, "
              f"wall {wall:.1f} s" + (f"\n    {row['error']}" if row["error"] else ""), flush=True)
        if status != 0:
            print("    last lines:\n      " + "\n      ".join(log.rstrip().splitlines()[-12:]), file=sys.stderr)
    ok = [r for r in rows if r["status"] == "ok"]
    want = {(r["train_tokens"], r["loss_tokens"]) for r in ok}
    by = {r["system"]: r for r in ok}
    for r in rows:
        r["tokens_agree"] = ("yes" if len(want) == 1 else "NO") if r["status"] == "ok" and len(ok) > 1 else ""
        for key, ref, col in (("ratio_to_baseline", BASELINE, "tokens_per_s"),
                              ("ratio_to_baseline_after_first", BASELINE, "tokens_per_s_after_first"),
                              ("ratio_to_trl_padded", "trl-padded", "tokens_per_s")):
            b = by.get(ref)
            r[key] = r[col] / b[col] if b and r["status"] == "ok" and r[col] and b[col] else None
    return rows


def _write_markdown(path: Path, rows: list[dict], env: dict, args: argparse.Namespace) -> None:
    def f(x, fmt):
        return "" if x is None or x == "" else format(x, fmt)

    lines = [
        "# End to end: rdistill against TRL's SFTTrainer (benchmarks/end_to_end.py)",
        "",
        f"{describe(env)} CPU bf16 ISA: {cpu_flags()}. Each system in its own subprocess with {args.threads} "
        f"threads, seed {args.seed}." + (" **Smoke test (--quick), not a measurement.**" if args.quick else ""),
        "",
        f"Invocation: `{' '.join(['python -m benchmarks.end_to_end', *sys.argv[1:]])}`",
        "",
        f"Baseline: **{LABELS[BASELINE]}** (`trl.SFTTrainer`, `packing=True`, BFD, padding-free); every ratio is "
        "tokens/s over the baseline's tokens/s measured in this same invocation. tokens/s: real (non-pad) training "
        "tokens over the seconds of the optimizer steps (forward, backward, clipping, optimizer; not the batch "
        "collation). The first step carries one-time costs (first touch of the gradient and optimizer memory, "
        "kernel set-up: on a 135M student on 2 cores it took 3-7x a later step in the smoke tests), so the columns "
        "'after step 1' leave it out; read those when a setting has more than a handful of steps.",
        "",
    ]
    for name in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == name]
        r0 = rs[0]
        params = next((r["params"] for r in rs if r["params"]), "")
        lines += [
            f"## {name}: `{r0['model']}`" + (f" ({int(params):,} parameters)" if params else "")
            + f", {r0['dtype']}",
            "",
            f"{r0['docs']:,} documents (built-in synthetic pairs, reasoning format, one epoch), packs of "
            f"{r0['pack_tokens']:,} tokens, padded batches of "
            f"{next((r['batch_size'] for r in rs if r['batch_size']), '')} "
            f"documents, AdamW lr {r0['lr']:g} constant, betas {BETAS}, weight decay {WEIGHT_DECAY}, clip {GRAD_CLIP}.",
            "",
            *markdown_table(
                ["system", "status", "tokens/s", f"vs {LABELS[BASELINE]}", "vs trl padded", "tokens/s after step 1",
                 f"after step 1 vs {LABELS[BASELINE]}",
                 "steps", "real tokens", "padded tokens", "loss tokens", "loss tokens / step", "final loss",
                 "peak RSS (GiB)", "wall (s)", "precision"],
                [[LABELS[r["system"]], r["status"], f(r["tokens_per_s"], ",.1f"), f(r["ratio_to_baseline"], ".2f"),
                  f(r["ratio_to_trl_padded"], ".2f"), f(r["tokens_per_s_after_first"], ",.1f"),
                  f(r["ratio_to_baseline_after_first"], ".2f"), r.get("steps", ""),
                  f(r.get("train_tokens"), ","), f(r.get("padded_tokens"), ","), f(r.get("loss_tokens"), ","),
                  f(r.get("loss_tokens_per_step"), ",.1f"), f(r.get("final_loss"), ".4f"), gib(r["peak_rss"]),
                  r["wall_seconds"], r.get("precision", "")] for r in rs],
                align="llrrrrrrrrrrrrrl",
            ),
            "",
            "Same documents and loss mask: the systems' total real tokens and loss tokens "
            + ("agree." if all(r["tokens_agree"] == "yes" for r in rs if r["status"] == "ok") else "**DISAGREE**.")
            + "".join(f" {LABELS[r['system']]}: {r['docs_checked']} (TRL's rows against encode_document)."
                      for r in rs if r.get("docs_checked")),
            "",
            *(f"- {LABELS[r['system']]}: `{r['command']}`" for r in rs),
            *(f"- {LABELS[r['system']]} failed: {r['error']}" for r in rs if r["status"] != "ok"),
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Full measurement (quiet machine): python -m benchmarks.smollm2 convert && "
                                        "OMP_NUM_THREADS=2 python -m benchmarks.end_to_end")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="default: tiny smollm2 (--quick: tiny)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="default: all three")
    ap.add_argument("--docs", type=int, help="documents (= samples, one epoch); default per setting "
                    "(tiny 2000, smollm2 128; --quick: 48, 4)")
    ap.add_argument("--pack-tokens", type=int, help="pack size (and TRL's max_length); default per setting "
                    "(tiny 1024, smollm2 2048; --quick: 1024)")
    ap.add_argument("--batch-size", type=int, help="documents per padded TRL batch (default: pack / mean length)")
    ap.add_argument("--lr", type=float, help="learning rate (default per setting: tiny 3e-3, smollm2 2e-5)")
    ap.add_argument("--trl-input", choices=("text", "tokens"), default="text",
                    help="TRL's dataset: text prompt/completion (default) or rdistill's token ids + completion_mask")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per system (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smollm2-folder", type=Path, default=SMOLLM2_DIR, help="default: %(default)s")
    ap.add_argument("--timeout", type=float, help="seconds per system before it is killed")
    ap.add_argument("--out-dir", type=Path, help="where end_to_end.csv/.md go (default benchmarks/results; a "
                    "temporary folder with --quick)")
    ap.add_argument("--work-dir", type=Path, help="where data and runs go (default: a new temporary folder)")
    ap.add_argument("--keep-models", action="store_true", help="keep rdistill's trained student (deleted by default)")
    ap.add_argument("--quick", action="store_true", help="smoke test: few documents, tiny setting unless --settings")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        require_bench("trl", "accelerate", script="benchmarks.end_to_end")
        if args.worker is not None:
            spec = json.loads(args.worker.read_text())
            Path(spec["result"]).write_text(json.dumps(trl_worker(spec)))
            return 0
        settings = args.settings or (["tiny"] if args.quick else list(SETTINGS))
        work = Path(tempfile.mkdtemp(prefix="end-to-end-", dir=args.work_dir))
        out_dir = args.out_dir or (work if args.quick else RESULTS)
        print(f"work folder {work}; results to {out_dir}")
        env = environment("cpu", VERSION_PACKAGES)
        env["threads"] = args.threads
        rows = []
        for name in settings:
            rows += _run_setting(SETTINGS[name], args, work)
        log = CsvLog(out_dir / "end_to_end.csv", [*env, *FIELDS])
        log.append({**env, **{k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS}} for r in rows)
        _write_markdown(out_dir / "end_to_end.md", rows, env, args)
        print(f"wrote {log.path} (appended) and {out_dir / 'end_to_end.md'}")
        return 0 if all(r["status"] == "ok" for r in rows) and all(r["tokens_agree"] != "NO" for r in rows) else 1
    except MissingBench as e:
        return int(e.code)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
