"""`rdistill plan`: a grid's FLOPs and device-hours before it runs, checked against the runs themselves."""

import json
import math

import pytest
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.config import DataConfig, EvalConfig, RunConfig, SweepConfig, TrainConfig
from rdistill.flops.hardware import GPU_PEAKS
from rdistill.plan import Planner, make_device, make_plan, parse_budgets
from rdistill.run import run

runner = CliRunner()
BUDGETS = (1e10, 2e10)
ARMS = ("ift", "reasoning", "seq50")
TINY = ["--models", "tiny", "--train-size", "200", "--eval-size", "8", "--pack-tokens", "256", "--threads", "1"]


def _run_cfg(out, arm, *, budget=None, samples=None):
    """What `rdistill train --arms ARM --budget B (or --samples N) --train-size 200 ...` runs."""
    return RunConfig(train=TrainConfig(budget_flops=budget, samples=samples, pack_tokens=256), arms=(arm,),
                     data=DataConfig(train_size=200, eval_size=8), eval=EvalConfig(enabled=False), threads=1,
                     out=str(out))


def _plan(tmp, *args):
    res = runner.invoke(app, ["plan", *TINY, "--no-eval", "--out", str(tmp), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((tmp / "plan.json").read_text()), (tmp / "plan.md").read_text(), res.output


@pytest.fixture(scope="module")
def spent(tmp_path_factory):
    """Each (arm, budget) trained for real: its results.json's arm, its run folder and its fingerprint."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for arm in ARMS:
        for budget in BUDGETS:
            folder = root / f"{arm}-{budget:g}"
            results = run(_run_cfg(folder, arm, budget=budget))
            out[arm, budget] = results.arms[0], folder, results.fingerprint
    return out


def test_planned_flops_are_what_the_runs_spend(tmp_path, spent):
    plan, md, output = _plan(tmp_path, "--arms", ",".join(ARMS), "--budgets", "1e10,2e10")
    assert len(plan["points"]) == len(ARMS) * len(BUDGETS)
    for p in plan["points"]:
        arm, _, fingerprint = spent[p["arm"], p["budget_flops"]]
        assert p["fingerprint"] == fingerprint  # the point is the run `rdistill train` makes of the same flags
        assert p["method"] == "simulated"
        # the run stops on the first document that would cross the budget, and the plan runs the same steps
        assert p["train_flops"] == {"exact": arm.flops.exact, "paper": arm.flops.paper, "six_nd": arm.flops.six_nd}
        assert (p["steps"], p["samples"], p["tokens"]) == (arm.steps, arm.samples, arm.train_tokens)
        assert p["stopped_by"] == arm.stopped_by == "budget"
        assert p["eval_flops"] == 0  # --no-eval
        assert f"| tiny | {p['arm']} | 0 | {p['budget_flops']:.3e} | {p['train_flops']['exact']:.4e} |" in md
    total = sum(p["train_flops"]["exact"] for p in plan["points"])
    assert plan["totals"]["train_flops_exact"] == total
    assert math.isclose(plan["totals"]["device_hours"], sum(p["device_hours"] for p in plan["points"]))
    assert f"{total:.4e} training FLOPs" in md and "device-hours" in md and "assumed: 0.4" in md
    assert "simulated" in output and "total" in output


def test_bound_when_not_simulated_holds_the_run(spent):
    base = _run_cfg(None, "ift", budget=1.0)
    cfg = SweepConfig(budgets=BUDGETS, base=base, models=("tiny",), arms=ARMS)
    plan = make_plan(cfg, make_device("h100", "bf16"), max_docs=0)
    for p in plan["points"]:
        arm, _, _ = spent[p["arm"], p["budget_flops"]]
        assert p["method"] == "bound"
        assert p["train_flops_min"] < arm.flops.exact <= p["train_flops"]["exact"] == p["budget_flops"]


def test_mfu_from_a_run_and_device_hours(tmp_path, spent):
    arm, folder, _ = spent["ift", 1e10]
    plan, md, _ = _plan(tmp_path, "--arms", "ift,reasoning", "--budgets", "1e10", "--device", "h200",
                        "--mfu-from", str(folder / "results.json"))
    ift, reasoning = plan["points"]
    assert ift["mfu"] == reasoning["mfu"] == arm.mfu  # the file's only arm: its own, and the mean for others
    assert str(folder / "results.json") in plan["device"]["mfu_source"] and "measured" in md
    peak = GPU_PEAKS["H200"]["bf16"]
    assert ift["device_hours"] == pytest.approx(ift["train_flops"]["exact"] / (peak * arm.mfu) / 3600, rel=1e-12)
    guess, _, _ = _plan(tmp_path / "guess", "--arms", "ift", "--budgets", "1e10", "--mfu", "0.25", "--devices", "4")
    p = guess["points"][0]
    assert p["device_hours"] == pytest.approx(p["train_flops"]["exact"] / (GPU_PEAKS["H100"]["bf16"] * 0.25) / 3600)
    assert p["wall_hours"] == pytest.approx(p["device_hours"] / 4)


def test_samples_are_counted_exactly(tmp_path):
    result = run(_run_cfg(tmp_path / "run", "seq50", samples=40)).arms[0]
    cfg = SweepConfig(budgets=(1.0,), base=_run_cfg(None, "ift", samples=40), models=("tiny",), arms=("seq50", "mix25"))
    planner = Planner(cfg.arms)
    simulated = make_plan(cfg, make_device("h100", "bf16"), samples=40, planner=planner)["points"]
    counted = make_plan(cfg, make_device("h100", "bf16"), samples=40, planner=planner, max_docs=0)["points"]
    assert [p["method"] for p in simulated + counted] == ["simulated"] * 2 + ["counted"] * 2
    assert simulated[0]["train_flops"]["exact"] == result.flops.exact
    assert simulated[0]["steps"] == result.steps and simulated[0]["samples"] == result.samples == 40
    for s, c in zip(simulated, counted):
        assert s["train_flops"] == c["train_flops"] and s["tokens"] == c["tokens"]


def test_auto_budgets_are_log_even_between_floor_and_ceiling(tmp_path):
    budgets = parse_budgets("auto:5", 1e10, 1e14)
    assert len(budgets) == 5 and budgets[0] == 1e10 and budgets[-1] == 1e14
    steps = [math.log(b) - math.log(a) for a, b in zip(budgets, budgets[1:])]
    assert steps == pytest.approx([math.log(1e4) / 4] * 4)
    assert parse_budgets("1e12, 3e12") == (1e12, 3e12)
    for text, floor, ceiling, says in (("auto:1", 1.0, 2.0, "N of 2"), ("auto:x", 1.0, 2.0, "whole number"),
                                       ("auto:3", None, 2.0, "--budget-min"), ("auto:3", 3.0, 2.0, "below"),
                                       ("1e12,abc", None, None, "comma-separated")):
        with pytest.raises(ValueError, match=says):
            parse_budgets(text, floor, ceiling)
    plan, _, _ = _plan(tmp_path, "--arms", "ift", "--budgets", "auto:5", "--budget-min", "1e10", "--budget-max", "3e10")
    assert [p["budget_flops"] for p in plan["points"]] == list(parse_budgets("auto:5", 1e10, 3e10))
    default, _, _ = _plan(tmp_path / "default", "--arms", "ift", "--budgets", "auto:3")
    low, high = (p["budget_flops"] for p in (default["points"][0], default["points"][-1]))
    assert 0 < low < high  # a tenth of an IFT epoch, one reasoning epoch


def test_paper_shapes_on_length_distributions(tmp_path):
    plan, md, _ = _plan(tmp_path, "--models", "qwen2.5-0.5b,qwen2.5-7b", "--arms", "ift,reasoning", "--lengths",
                        "ift-like,reasoning-like", "--train-size", "2000", "--samples", "500", "--eval", "--pack-tokens", "32768")
    small, _, big, _ = plan["points"]
    assert small["parameters"] < big["parameters"] and small["train_flops"]["exact"] < big["train_flops"]["exact"]
    assert all(p["samples"] == 500 and p["eval_flops"] == 8 * p["inference_flops_per_query"] > 0 for p in plan["points"])
    assert "ift-like (IFT) and reasoning-like (reasoning)" in md


@pytest.mark.parametrize("args, says", [
    (["--arms", "ift"], "--budgets"),
    (["--arms", "ift", "--budgets", "1e10", "--samples", "5"], "one of the two"),
    (["--arms", "ift", "--budgets", "1e10", "--models", "nope"], "paper shape"),
    (["--arms", "ift", "--budgets", "1e10", "--lengths", "nope"], "--lengths"),
    (["--arms", "ift", "--budgets", "1e10", "--device", "tpu"], "unknown device"),
    (["--arms", "ift", "--budgets", "1e10", "--mfu", "0.3", "--mfu-from", "x"], "not both"),
])
def test_clear_errors(tmp_path, args, says):
    res = runner.invoke(app, ["plan", *TINY, "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and says in res.output, res.output
