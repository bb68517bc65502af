import json

import pytest

import rdistill.sweep as sweep_mod
from rdistill.analysis import write_report
from rdistill.config import DataConfig, EvalConfig, RunConfig, SweepConfig, TrainConfig
from rdistill.sweep import grid, run_sweep


def _sweep(models, arms, budgets):
    base = RunConfig(
        train=TrainConfig(budget_flops=1.0, pack_tokens=512),
        data=DataConfig(train_size=300, eval_size=8),
        eval=EvalConfig(max_new_tokens=12),
    )
    return SweepConfig(budgets=budgets, base=base, models=models, arms=arms)


def test_grid_order_and_validation():
    pts = grid(("tiny", "small"), ("ift", "seq50"), (1e12, 3e11))
    assert [(p.budget, p.model, p.arm) for p in pts[:2]] == [(3e11, "tiny", "ift"), (3e11, "tiny", "seq50")]
    assert len(pts) == 8
    with pytest.raises(ValueError, match="unknown arm"):
        grid(("tiny",), ("poetry",), (1e12,))


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    study = tmp_path / "study"
    manifest = run_sweep(_sweep(("no-such-model", "tiny"), ("ift",), (2e10,)), study)
    status = {p["model"]: p["status"] for p in manifest["points"]}
    assert status == {"no-such-model": "failed", "tiny": "complete"}
    saved = json.loads((study / "sweep.json").read_text())
    assert "neither a preset" in saved["points"][0]["error"]


def test_interrupted_sweep_resumes_and_skips_finished_points(tmp_path, monkeypatch):
    study = tmp_path / "study"
    cfg = _sweep(("tiny",), ("ift", "reasoning", "seq50"), (2e10,))
    real_run = sweep_mod.run
    calls = []

    def interrupt_second(run_cfg, hooks=None, resume=False):
        calls.append(run_cfg.arms[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(run_cfg, hooks, resume=resume)

    monkeypatch.setattr(sweep_mod, "run", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, study)
    assert json.loads((study / "sweep.json").read_text())["points"][1]["status"] == "interrupted"
    monkeypatch.setattr(sweep_mod, "run", real_run)
    seen = []
    manifest = run_sweep(cfg, study, on_point=lambda p, st, i, n: seen.append((p.arm, st)))
    assert ("ift", "skipped") in seen and ("reasoning", "started") in seen and ("seq50", "complete") in seen
    assert [p["status"] for p in manifest["points"]] == ["complete"] * 3
    # a report from this tiny real sweep
    report = write_report(study)
    text = report.read_text()
    assert "ift" in text and "reasoning" in text and "seq50" in text
    modes = text[text.index("## Output mode"):].split("\n## ")[0]
    assert "reasoning mode overall" in modes
    row = next(line for line in modes.splitlines() if line.startswith("| ift"))
    assert "| 0% |" in row  # an IFT student never opens a think block
    pngs = list(report.parent.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_an_interrupted_point_goes_on_from_its_checkpoint(tmp_path, stop_training_at):
    from dataclasses import replace

    def numbers(study):
        (path,) = study.glob("tiny/*/reasoning-*/results.json")
        arm = json.loads(path.read_text())["arms"][0]
        return {k: arm[k] for k in ("steps", "samples", "final_loss", "flops", "eval")}, arm["resumed_from_step"]

    cfg = _sweep(("tiny",), ("reasoning",), (3e10,))
    cfg = replace(cfg, base=replace(cfg.base, train=replace(cfg.base.train, save_every=4, pack_tokens=256)))
    whole = tmp_path / "whole"
    run_sweep(cfg, whole)
    cut = tmp_path / "cut"
    stop_training_at(6)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, cut)
    sweep_mod.run.__globals__  # the real run again (the fixture patched rdistill.run.train_arm)
    import rdistill.run as run_mod
    from rdistill.train import train_arm

    run_mod.train_arm = train_arm
    seen = []
    run_sweep(cfg, cut, on_point=lambda p, st, i, n: seen.append(st))
    assert seen == ["resumed", "complete"]
    (whole_numbers, never), (cut_numbers, resumed_from) = numbers(whole), numbers(cut)
    assert never is None and resumed_from == 4
    assert cut_numbers == whole_numbers
