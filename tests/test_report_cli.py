"""`rdistill report` on small fake studies: its options (--x, per-family --ceiling, --queries,
--bootstrap), replicate runs pooled into one configuration, and generations that do not match."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_report_study import _arm_result, _run_results, _write_generations, _write_run
from typer.testing import CliRunner

from rdistill.analysis import scan, write_report
from rdistill.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny, ift and reasoning, four budgets, with per-item generations."""
    root = tmp_path_factory.mktemp("cli") / "study"
    for b in (1e12, 1e13, 1e14, 1e15):
        _write_run(root / f"tiny-{b:.0e}", [_arm_result("tiny", arm, b) for arm in ("ift", "reasoning")],
                   generations=True)
    return root


def test_report_command_options(small_study: Path):
    res = runner.invoke(app, ["report", str(small_study), "--x", "paper", "--ceiling", "general-mc=0.95,math-oe=0.9",
                              "--queries", "1e6", "--bootstrap", "50", "--seed", "3", "--k-max", "4"])
    assert res.exit_code == 0, res.output
    text = (small_study / "report" / "report.md").read_text()
    assert "0 < k <= 4 (enforced by construction; the paper bounds k by 1, this report by 4 (`--k-max`)" in text
    assert "(k >= 3.96 or <= 0.01" in text
    assert "Training FLOPs axis: the paper's formula (`--x paper`)" in text
    assert "training FLOPs (paper)" in text
    # 50 general-mc and 50 math-oe items per run: overall's ceiling is their mean
    assert "Ceiling (teacher accuracy): overall 92.5%, general-mc 95.0%, math-oe 90.0%" in text
    assert "### Frontier at Q = 1.00e06 queries" in text and "Frontier at Q = 1.00e03" not in text
    assert "50 replicates (RNG seed 3)" in text
    assert len(list((small_study / "report").glob("accuracy_vs_total_cost_*.png"))) == 3
    # the x-axis really is the paper's count: the fake runs' paper FLOPs are 0.97 x exact
    paper = scan(small_study, x="paper").points
    exact = scan(small_study).points
    assert [p.train_flops for p in paper] == pytest.approx([0.97 * p.train_flops for p in exact], rel=1e-6)
    assert all(p.flops_by_count["6nd"] == pytest.approx(0.98 * p.flops_by_count["exact"], rel=1e-6) for p in exact)


@pytest.mark.parametrize("args,message", [
    (["--ceiling", "math-oe=92.1"], "fraction in (0, 1]"),
    (["--ceiling", "math_oe=0.9,1.0"], "does not measure"),
    (["--ceiling", "math-oe=0.9"], "no ceiling"),
    (["--queries", "many"], "not a number of queries"),
    (["--bootstrap", "3"], "at least 10"),
    (["--k-max", "0.5"], "bound on k must be a finite number of at least 1 (the paper's), got 0.5"),
])
def test_report_command_refuses_bad_options_clearly(small_study: Path, args, message):
    res = runner.invoke(app, ["report", str(small_study), *args])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_replicates_are_pooled_and_paired(tmp_path: Path):
    for seed in (0, 1, 2):
        arms = [_arm_result("tiny", arm, 1e13) for arm in ("ift", "reasoning")]
        folder = tmp_path / f"tiny-1e13-seed{seed}"
        res = _run_results(folder, arms)
        replace(res, config=replace(res.config, seed=seed)).write(folder / "results.json")
        for arm in arms:
            _write_generations(folder / arm.name / "generations.jsonl", arm)
    text = write_report(tmp_path, bootstrap=50).read_text()
    assert "- Seeds: 0, 1, 2" in text and "## Replicates" in text
    assert "ift-tiny | 1.00e13 | 3 | 0, 1, 2 |" in text
    assert "(mean of 3 runs)" in text
    # three runs on the same 100 items are 100 items, not 300
    assert "paired on 100 items" in text and "paired on 300 items" not in text


def test_generations_that_disagree_with_results_are_not_used(tmp_path: Path):
    arm = _arm_result("tiny", "ift", 1e13)
    _write_run(tmp_path / "run", [arm], generations=True)
    path = tmp_path / "run" / "ift" / "generations.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["correct"] = not rows[0]["correct"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = scan(tmp_path)
    assert study.points[0].items is None
    assert len(study.notes) == 1 and str(path) in study.notes[0] and "results.json says" in study.notes[0]
    path.write_text("not json\n")
    assert f"{path}:1: not a generation record" in scan(tmp_path).notes[0]
