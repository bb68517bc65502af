"""The paper's protocol: steps of 32 samples in --samples mode, step-based schedules under a budget,
learning rates per format that reach curricula, replicate seeds that keep the data."""

import json

import pytest
from typer.testing import CliRunner

from rdistill.cli.main import app
from rdistill.config import DataConfig, RunConfig, SweepConfig, TrainConfig
from rdistill.data.curriculum import parse_arm
from rdistill.flops.ledger import ModelShape
from rdistill.model import PRESET_LR, student_skeleton
from rdistill.run import arm_peaks
from rdistill.sweep import grid, sweep_point_config

SMALL = ["--train-size", "300", "--eval-size", "8", "--max-new-tokens", "8", "--pack-tokens", "256", "--threads", "1",
         "--save-every", "0"]


def _train(tmp_path, *args):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", *args, *SMALL, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return {a["name"]: a for a in json.loads((out / "results.json").read_text())["arms"]}


def test_paper_mode_gives_every_arm_the_same_steps_for_the_same_samples(tmp_path):
    arms = _train(tmp_path, "--samples", "96", "--arms", "ift,reasoning,seq50,mix50", "--no-eval")
    # IFT documents are ~5x shorter than reasoning ones: token-capacity steps would give IFT fewer steps
    assert {a["steps"] for a in arms.values()} == {3} and {a["samples"] for a in arms.values()} == {96}
    assert {a["batch_samples"] for a in arms.values()} == {32}
    assert arms["ift"]["train_tokens"] < arms["reasoning"]["train_tokens"] / 2


def test_step_based_schedule_under_a_budget_and_the_lr_each_arm_used(tmp_path):
    arms = _train(tmp_path, "--budget", "3e10", "--arms", "ift,seq50", "--lr-ift", "1e-3", "--lr-reasoning", "4e-3",
                  "--warmup-steps", "4", "--decay-steps", "6", "--no-eval")
    ift, seq = arms["ift"], arms["seq50"]
    assert ift["lr"] == 1e-3 and ift["lr_phases"] == [1e-3]
    assert ift["lr_schedule"]["total"] == ift["steps"] and ift["lr_schedule"]["warmup"] == 4
    assert seq["lr_phases"] == [1e-3, 4e-3] and seq["lr_schedule"]["peaks"] == [1e-3, 4e-3]
    second = seq["lr_schedule"]["starts"][1]
    assert 1 < second <= seq["steps"]
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "seq50" / "metrics.jsonl").read_text().splitlines()]
    # the IFT phase trains at the IFT peak once warm, the reasoning phase at the reasoning peak until its decay
    warm = seq["lr_schedule"]["warmup"]
    assert warm <= (second - 1) // 2 and lrs[warm - 1] == pytest.approx(1e-3) and lrs[second - 2] == pytest.approx(1e-3)
    assert lrs[second - 1] == pytest.approx(4e-3) and lrs[-1] == pytest.approx(4e-4)


def test_arm_peaks_rule():
    cfg = RunConfig(train=TrainConfig(budget_flops=1e10, lr_ift=1e-4, lr_reasoning=4e-4))
    shape = ModelShape.from_model(student_skeleton("tiny", 300))
    assert arm_peaks(cfg, parse_arm("ift"), shape) == (1e-4,)
    assert arm_peaks(cfg, parse_arm("reasoning"), shape) == (4e-4,)
    assert arm_peaks(cfg, parse_arm("seq25"), shape) == (1e-4, 4e-4)
    assert arm_peaks(cfg, parse_arm("mix50"), shape)[0] == pytest.approx(2e-4)  # geometric interpolation
    assert arm_peaks(RunConfig(train=TrainConfig(budget_flops=1e10)), parse_arm("seq50"), shape) == (PRESET_LR,) * 2


def test_replicate_seeds_change_the_student_not_the_data(tmp_path):
    base = RunConfig(train=TrainConfig(budget_flops=1e10), data=DataConfig(train_size=100, eval_size=4), seed=7)
    cfg = SweepConfig(budgets=(1e10,), base=base, models=("tiny", "small"), arms=("ift",), seeds=(0, 1),
                      model_lrs={"tiny": 2e-3, "small:reasoning": 5e-4})
    points = grid(cfg.models, cfg.arms, cfg.budgets, cfg.seeds)
    assert [(p.model, p.seed) for p in points] == [("tiny", 0), ("tiny", 1), ("small", 0), ("small", 1)]
    runs = [sweep_point_config(cfg, p, tmp_path) for p in points]
    assert [r.seed for r in runs] == [0, 1, 0, 1] and {r.data_seed for r in runs} == {7}
    assert len({r.out for r in runs}) == 4 and "ift-s1-" in runs[1].out
    assert (runs[0].train.lr_ift, runs[0].train.lr_reasoning) == (2e-3, 2e-3)
    assert (runs[2].train.lr_ift, runs[2].train.lr_reasoning) == (None, 5e-4)
    redrawn = SweepConfig(budgets=(1e10,), base=base, models=("tiny",), arms=("ift",), seeds=(0, 1), seed_data=True)
    assert [sweep_point_config(redrawn, p, tmp_path).data_seed for p in grid(("tiny",), ("ift",), (1e10,), (0, 1))] == [0, 1]
    with pytest.raises(ValueError, match="model-lrs"):
        SweepConfig(budgets=(1e10,), base=base, models=("tiny",), model_lrs={"base": 1e-3})


def test_sweep_seeds_from_the_command_line(tmp_path):
    study = tmp_path / "study"
    res = CliRunner().invoke(app, ["sweep", "--out", str(study), "--models", "tiny", "--arms", "ift", "--budgets", "1e10",
                                   "--seeds", "0,1", "--train-size", "200", "--eval-size", "6", "--max-new-tokens", "6",
                                   "--pack-tokens", "256", "--threads", "1", "--save-every", "0"])
    assert res.exit_code == 0, res.output
    points = json.loads((study / "sweep.json").read_text())["points"]
    assert [p["seed"] for p in points] == [0, 1] and all(p["status"] == "complete" for p in points)
    held = [(study / p["dir"] / "data" / "eval.jsonl").read_text() for p in points]
    assert held[0] == held[1]  # the same held-out items: replicates differ by the student only
    losses = [json.loads((study / p["dir"] / "results.json").read_text())["arms"][0]["final_loss"] for p in points]
    assert losses[0] != losses[1]
