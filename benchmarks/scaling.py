"""Data-parallel scaling of ``rdistill train``: one process against N under torchrun (DDP and FSDP2).

Every configuration trains the same arm of the same student on the same data to the same FLOP budget
with the same global steps (``--packs-per-step`` packs a step: one process accumulates them, N ranks
split them), so every one must end with the same steps and exactly the same ledger totals (checked and
reported). Each runs as ``python -m rdistill train ... --no-eval --save-every 0`` in a subprocess of
its own; ``--nproc N`` makes it a torchrun job (``--parallel ddp|fsdp``).

Measured, from the run's results.json: tokens/s = the arm's real training tokens over the seconds of
its optimizer steps (the main rank's clock: forward, backward, the collectives, clipping, optimizer;
not the data preparation), the ledger's MFU (exact FLOPs / step seconds / (peak x processes)) and HFU
(executed FLOPs, which under torchrun include the zero-weight packs of ranks short of a pack in the
budget-trimmed last step), steps, the final loss and the wall time of the whole command. The ratio
column divides each configuration's tokens/s by the baseline's (the first configuration: one process)
measured in the same invocation.

On this 2-core CPU machine the fair comparison is 1 process x 2 threads against 2 processes x 1
thread (the default; ``--threads`` is the total per node, shared among the processes). On a GPU node
(one process per GPU; ``--threads`` then only sets the CPU threads of each)::

    python -m benchmarks.scaling --nproc 1,8 --parallel ddp,fsdp --model CKPT --dtype bf16 \\
        --budget 1e16 --pack-tokens 8192 --packs-per-step 8

Writes a row per configuration to ``OUT_DIR/scaling.csv`` (appended; date, versions, machine: see
``benchmarks/_common.py``) and the latest run as ``OUT_DIR/scaling.md``. ``--quick`` is a smoke test
(a small budget) that writes under a temporary folder unless ``--out-dir`` is given.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.scaling     # the measurement (quiet machine)
    .venv/bin/python -m benchmarks.scaling --quick               # smoke test, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RESULTS, CsvLog, describe, environment, markdown_table

FIELDS = ["config", "nproc", "parallel", "threads_per_process", "model", "dtype", "budget", "status", "steps",
          "train_tokens", "step_seconds", "tokens_per_s", "ratio", "mfu", "hfu", "exact_flops", "executed_flops",
          "final_loss", "wall_seconds", "same_steps_and_flops", "command", "error"]


def _configs(nprocs: list[int], parallels: list[str]) -> list[tuple[int, str]]:
    out = [(1, "none")] if 1 in nprocs else []
    return out + [(n, p) for n in nprocs if n > 1 for p in parallels]


def _run(n: int, parallel: str, args: argparse.Namespace, work: Path) -> dict:
    threads = max(1, args.threads // n)
    out = work / f"{parallel}-{n}"
    cmd = [sys.executable, "-m", "rdistill", "train", "--budget", f"{args.budget:g}", "--arms", args.arm,
           "--model", args.model, "--dtype", args.dtype, "--pack-tokens", str(args.pack_tokens),
           "--packs-per-step", str(args.packs_per_step), "--train-size", str(args.train_size), "--eval-size", "0",
           "--no-eval", "--save-every", "0", "--threads", str(threads), "--seed", str(args.seed), "--out", str(out)]
    if n > 1:
        cmd += ["--nproc", str(n), "--parallel", parallel]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("WORLD_SIZE", None)
    row = {"config": "1 process" if n == 1 else f"{parallel} x {n}", "nproc": n, "parallel": parallel,
           "threads_per_process": threads, "model": args.model, "dtype": args.dtype, "budget": args.budget,
           "command": " ".join(["rdistill", *cmd[3:]])}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()
        return {**row, "status": "failed", "error": " | ".join(tail[-3:])[:400]}
    arm = json.loads((out / "results.json").read_text())["arms"][0]
    return {**row, "status": "ok", "steps": arm["steps"], "train_tokens": arm["train_tokens"],
            "step_seconds": round(arm["step_seconds"], 3), "tokens_per_s": arm["train_tokens"] / arm["step_seconds"],
            "mfu": arm["mfu"], "hfu": arm["hfu"], "exact_flops": arm["flops"]["exact"],
            "executed_flops": arm["flops"]["executed"], "final_loss": arm["final_loss"]}


def _write_markdown(path: Path, rows: list[dict], env: dict, args: argparse.Namespace) -> None:
    def f(x, fmt):
        return "" if x is None or x == "" else format(x, fmt)

    ok = [r for r in rows if r["status"] == "ok"]
    agree = len({(r["steps"], r["exact_flops"]) for r in ok}) == 1
    lines = [
        "# Data-parallel scaling of rdistill train (benchmarks/scaling.py)",
        "",
        f"{describe(env)}" + (" **Smoke test (--quick), not a measurement.**" if args.quick else ""),
        "",
        f"Invocation: `{' '.join(['python -m benchmarks.scaling', *sys.argv[1:]])}`",
        "",
        f"Arm `{args.arm}` of `{args.model}` ({args.dtype}) to {args.budget:.3g} exact FLOPs, packs of "
        f"{args.pack_tokens:,} tokens, {args.packs_per_step} packs per global step, {args.train_size:,} training "
        f"examples, seed {args.seed}; {args.threads} threads per node in all, shared among the processes. "
        "Baseline: the first row (one process); ratio = tokens/s over the baseline's, same invocation. tokens/s: "
        "real training tokens over the seconds of the optimizer steps (main rank). MFU/HFU: exact/executed FLOPs "
        "over step seconds over (peak x processes); the peak is measured per process with its own threads.",
        "",
        *markdown_table(
            ["configuration", "status", "threads each", "tokens/s", "ratio", "MFU", "HFU", "steps",
             "exact FLOPs", "executed FLOPs", "final loss", "wall (s)"],
            [[r["config"], r["status"], r["threads_per_process"], f(r.get("tokens_per_s"), ",.0f"),
              f(r.get("ratio"), ".2f"), f(r.get("mfu"), ".1%"), f(r.get("hfu"), ".1%"), r.get("steps", ""),
              f(r.get("exact_flops"), ","), f(r.get("executed_flops"), ","), f(r.get("final_loss"), ".5f"),
              r["wall_seconds"]] for r in rows],
            align="llrrrrrrrrrr",
        ),
        "",
        "Same global steps: every configuration's steps and exact FLOPs "
        + ("agree." if agree else "**DISAGREE**."),
        "",
        *(f"- {r['config']}: `{r['command']}`" for r in rows),
        *(f"- {r['config']} failed: {r['error']}" for r in rows if r["status"] != "ok"),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", default="1,2", help="process counts, comma-separated (default: %(default)s)")
    ap.add_argument("--parallel", default="ddp,fsdp", help="for counts above 1 (default: %(default)s)")
    ap.add_argument("--model", default="small", help="preset or checkpoint folder (default: %(default)s)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--arm", default="reasoning")
    ap.add_argument("--budget", type=float, default=2e12, help="exact FLOPs (default: %(default)g)")
    ap.add_argument("--pack-tokens", type=int, default=1024)
    ap.add_argument("--packs-per-step", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per node in all (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument("--out-dir", type=Path, help="where scaling.csv/.md go (default benchmarks/results; a "
                    "temporary folder with --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke test: budget 5e10, 300 examples")
    args = ap.parse_args(argv)
    if args.quick:
        args.budget, args.train_size, args.pack_tokens = 5e10, 300, 256
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="scaling-")) if args.quick else RESULTS)
    env = environment("cpu")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-work-") as work:
        for n, parallel in _configs([int(x) for x in args.nproc.split(",")], args.parallel.split(",")):
            row = _run(n, parallel, args, Path(work))
            print(f"{row['config']}: {row['status']}, {row.get('tokens_per_s', 0):,.0f} tokens/s, "
                  f"wall {row['wall_seconds']} s", flush=True)
            rows.append(row)
    ok = [r for r in rows if r["status"] == "ok"]
    base = ok[0]["tokens_per_s"] if ok and ok[0]["nproc"] == rows[0]["nproc"] else None
    agree = len({(r["steps"], r["exact_flops"]) for r in ok}) == 1
    for r in ok:
        r["ratio"] = r["tokens_per_s"] / base if base else None
        r["same_steps_and_flops"] = "yes" if agree else "no"
    CsvLog(out_dir / "scaling.csv", [*env.keys(), *FIELDS]).append([{**env, **r} for r in rows])
    _write_markdown(out_dir / "scaling.md", rows, env, args)
    print(f"wrote {out_dir / 'scaling.md'}")
    return 0 if len(ok) == len(rows) and agree else 1


if __name__ == "__main__":
    sys.exit(main())
