"""Live logs: plain progress lines off a terminal, TensorBoard scalars, and their composition in the CLI."""

import io
import json
import re
import sys
from dataclasses import dataclass

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.cli.render import FanOut, LogHooks, SweepHooks
from rdistill.results import ArmParameters, ArmResult, EvalResult, FlopTotals, InferenceFlops
from rdistill.tensorboard_log import TensorBoardHooks
from rdistill.steps import StepRecord

runner = CliRunner()


@dataclass
class MemoryStep(StepRecord):
    """A step record that carries peak memory whether or not StepRecord does yet."""

    peak_memory: int | None = None


def _step(step, *, budget=1e9, mfu=0.25, memory=None, seconds=0.5):
    return MemoryStep(
        step=step, lr=1e-3 * step, loss=3.0 / step, tokens=1000, loss_tokens=400, samples=4, seconds=seconds,
        flops={"exact": step * 1e7, "executed": step * 1.2e7, "paper": step * 1e7, "six_nd": step * 1e7},
        budget_fraction=step * 1e7 / budget, trimmed=False, mfu=mfu, hfu=None if mfu is None else 1.2 * mfu,
        peak_memory=memory,
    )


def _arm(name="ift", accuracy=0.5):
    ev = EvalResult(
        accuracy=accuracy, by_family={"arith": 0.75, "logic": None}, chance={}, n=8, n_by_family={"arith": 4},
        mean_output_tokens=10.0, mean_output_tokens_correct=None, mean_output_tokens_wrong=None,
        mean_prompt_tokens=None, inference_flops_per_query=InferenceFlops(exact=1.0, paper=1.0),
    )
    return ArmResult(
        name=name, reasoning_share=0.0, schedule="mixed", model="tiny", parameters=ArmParameters(1, 1, 1, 1),
        budget_flops=1e9, budget_kind="exact", samples_requested=None, lr=1e-3, flops=FlopTotals(exact=int(6e7)),
        status="complete", steps=6, final_loss=0.5, train_seconds=3.0, mfu=0.25, budget_used=0.06, eval=ev,
    )


def _log(every):
    buf = io.StringIO()
    return LogHooks(every, Console(file=buf, width=80)), buf


def test_a_line_every_n_steps_with_the_fields():
    hooks, buf = _log(every=2)
    hooks.arm_started("ift", 1e9, "FLOPs")
    for i in range(1, 6):
        hooks.step("ift", _step(i, mfu=0.25 if i % 2 else 0.5), None)
    lines = buf.getvalue().splitlines()
    assert "ift: training to 1.00e+09 FLOPs" in lines[0]
    steps = [l for l in lines if " step " in l]
    assert [re.search(r"step (\d+):", l).group(1) for l in steps] == ["2", "4"]
    line = steps[1]  # never wrapped, however long
    assert "4.00e+07 / 1.00e+09 FLOPs (4.0%)" in line and "loss 0.7500" in line and "lr 4.00e-03" in line
    assert "2,000 tok/s" in line  # 2 steps of 1000 tokens in 0.5 s each, since the previous line
    assert "MFU 37.5%" in line  # weighted by step time over those two steps
    assert "peak memory" not in line


def test_samples_peak_memory_and_unknown_mfu():
    hooks, buf = _log(every=1)
    hooks.arm_started("reasoning", 400, "samples")
    hooks.step("reasoning", _step(1, budget=4e8, mfu=None, memory=3 * 2**29), None)
    out = buf.getvalue()
    assert "reasoning: training on 400 samples" in out
    assert "10 / 400 samples (2.5%)" in out and "MFU unknown" in out and "peak memory 1.50 GiB" in out


def test_no_step_lines_with_every_zero_but_arm_and_eval_lines():
    hooks, buf = _log(every=0)
    hooks.arm_started("ift", 1e9, "FLOPs")
    for i in range(1, 4):
        hooks.step("ift", _step(i), None)
    hooks.eval_started("ift", 95)
    for _ in range(12):
        hooks.eval_progress("ift", 8)
    hooks.arm_finished("ift", _arm())
    lines = buf.getvalue().splitlines()
    assert not [l for l in lines if " step " in l]
    evals = [l for l in lines if "evaluated" in l]
    assert 5 <= len(evals) <= 11 and evals[-1].endswith("evaluated 95 / 95")  # never past the total
    done = lines[-1]
    assert "ift: done, 6 steps in 3.0 s" in done and "6.00e+07 FLOPs exact (6.0% of the budget)" in done
    assert "final loss 0.5000" in done and "MFU 25.0%" in done and "accuracy 50.0%" in done


def test_fan_out_forwards_to_every_hook_and_enters_those_that_are_contexts():
    entered = []

    class Context(LogHooks):
        def __enter__(self):
            entered.append("in")
            return self

        def __exit__(self, *exc):
            entered.append("out")

    (a, buf_a), buf_b = _log(every=1), io.StringIO()
    b = Context(1, Console(file=buf_b))
    with FanOut(a, b) as hooks:
        hooks.arm_started("ift", 1e9, "FLOPs")
        hooks.step("ift", _step(1), None)
    assert entered == ["in", "out"]
    assert buf_a.getvalue().splitlines()[1][8:] == buf_b.getvalue().splitlines()[1][8:]  # past the clock


def _scalars(folder):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_writes_step_and_eval_scalars_per_arm(tmp_path):
    pytest.importorskip("tensorboard")
    with TensorBoardHooks(tmp_path / "tb") as hooks:
        hooks.arm_started("ift", 1e9, "FLOPs")
        hooks.step("ift", _step(1), None)
        hooks.step("ift", _step(2, mfu=None, memory=2**30), None)
        hooks.arm_finished("ift", _arm())
        hooks.arm_started("reasoning", 1e9, "FLOPs")
        hooks.step("reasoning", _step(1), None)  # interrupted: leaving the block writes it out
    ift = _scalars(tmp_path / "tb" / "ift")
    assert ift["train/loss"] == [(1, 3.0), (2, 1.5)]
    assert ift["train/flops_exact"] == [(1, 1e7), (2, 2e7)] and ift["train/flops_executed"][1] == (2, 2.4e7)
    assert ift["train/tokens_per_second"] == [(1, 2000.0), (2, 2000.0)]
    assert ift["train/mfu"] == [(1, 0.25)]  # the second step's peak was unknown
    assert ift["train/peak_memory_gib"] == [(2, 1.0)]
    assert [s for s, _ in ift["train/lr"]] == [1, 2] and [s for s, _ in ift["train/budget_fraction"]] == [1, 2]
    assert ift["eval/accuracy"] == [(6, 0.5)] and ift["eval/accuracy/arith"] == [(6, 0.75)]
    assert "eval/accuracy/logic" not in ift
    assert _scalars(tmp_path / "tb" / "reasoning")["train/loss"] == [(1, 3.0)]


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match=re.escape("pip install rdistill[tensorboard]")):
        TensorBoardHooks(tmp_path)
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--budget", "1e10", "--log", "tensorboard", "--out", str(out)])
    assert res.exit_code == 2 and "needs the tensorboard package" in res.output
    assert not out.exists()  # before anything is written
    res = runner.invoke(app, ["sweep", "--budgets", "1e10", "--log", "tensorboard", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "needs the tensorboard package" in res.output
    assert not (tmp_path / "s").exists()


def test_cli_off_a_terminal_logs_lines_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    res = runner.invoke(app, [
        "train", "--budget", "6e10", "--train-size", "200", "--eval-size", "8", "--arms", "ift", "--pack-tokens",
        "1024", "--log-every", "2", "--log", "tensorboard", "--out", str(out),
    ], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    steps = json.loads((out / "results.json").read_text())["arms"][0]["steps"]
    lines = [l for l in res.output.splitlines() if re.search(r"ift step \d+: ", l)]
    assert len(lines) == steps // 2 and steps >= 2
    assert all(f in lines[0] for f in ("FLOPs (", "loss ", "tok/s", "lr ", "MFU "))
    assert "ift: training to 6.00e+10 FLOPs" in res.output and "ift: done, " in res.output
    assert "ift: evaluated 8 / 8" in res.output
    scalars = _scalars(out / "tensorboard" / "ift")
    assert len(scalars["train/loss"]) == steps and "eval/accuracy" in scalars


def test_each_sweep_point_logs_to_its_own_run_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from rdistill.config import RunConfig, SweepConfig, TrainConfig
    from rdistill.sweep import SweepPoint, point_config

    base = RunConfig(train=TrainConfig(budget_flops=1e10), log="tensorboard", log_every=1)
    cfg = SweepConfig(budgets=(1e10,), base=base, models=("tiny",), arms=("ift",))
    point = SweepPoint("tiny", 1e10, "ift")
    with SweepHooks(cfg, tmp_path) as hooks_for:
        hooks = hooks_for(point)
        hooks.arm_started("ift", 1e10, "FLOPs")
        hooks.step("ift", _step(1, budget=1e10), None)
    folder = point_config(cfg.base, point, tmp_path).out
    assert _scalars(f"{folder}/tensorboard/ift")["train/loss"] == [(1, 3.0)]
