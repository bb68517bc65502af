"""A full report (markdown and real PNGs) built from a small fake study written by ``RunResults`` itself,
with per-item generations for its tiny runs (so their comparisons are paired), read back through the
library and through `rdistill report`."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from rdistill.analysis import (
    StudyError,
    collect,
    fit_study,
    scan,
    write_report,
)
from rdistill.config import ModelConfig, RunConfig, TrainConfig
from rdistill.data.curriculum import parse_arm
from rdistill.results import (
    SCHEMA_VERSION,
    ArmParameters,
    ArmResult,
    DataSummary,
    EvalResult,
    FlopTotals,
    InferenceFlops,
    RunResults,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARAMS = {"tiny": 839_680, "small": 4_521_216}


FAMILIES = ("general-mc", "math-oe")
CHANCE = {"general-mc": 0.25, "math-oe": 0.0}
# accuracy curve per (model, arm): floor, gain, half-way FLOPs
CURVES = {
    ("tiny", "ift"): (0.10, 0.30, 3e12),
    ("tiny", "reasoning"): (0.05, 0.55, 3e13),
    ("tiny", "seq50"): (0.08, 0.45, 1e13),
    ("small", "ift"): (0.15, 0.45, 5e12),
    ("small", "reasoning"): (0.08, 0.80, 4e13),
    ("small", "seq50"): (0.12, 0.65, 1.5e13),
}
TOKENS = {"ift": 5.0, "reasoning": 48.0, "seq50": 30.0}


def _arm_result(model: str, arm: str, budget: float, *, status: str = "complete") -> ArmResult:
    floor, gain, half = CURVES[(model, arm)]
    exact = int(budget * (1 - 1e-5))
    spec = parse_arm(arm)
    result = ArmResult(
        name=arm, reasoning_share=spec.share, schedule=spec.schedule, model=model,
        parameters=ArmParameters(total=PARAMS[model], non_embedding=PARAMS[model] - 51_072, layers=4, hidden=128),
        budget_flops=budget, budget_kind="exact", samples_requested=None, lr=3e-3,
        flops=FlopTotals(exact=exact, executed=int(exact * 1.05), paper=int(exact * 0.97), six_nd=int(exact * 0.98),
                         by_component={}),
        status=status, steps=100, samples=1000, stopped_by="budget", budget_used=exact / budget,
    )
    if status == "complete":
        base = floor + gain * (1 - math.exp(-math.log(2) * math.sqrt(budget / half)))
        fam = {"general-mc": round(min(0.95, base + 0.1) * 50) / 50, "math-oe": round(base * 50) / 50}
        acc = sum(fam.values()) / len(fam)
        n_right = round(acc * 100)
        t = TOKENS[arm]
        result.eval = EvalResult(
            accuracy=acc, by_family=fam, chance={f: CHANCE[f] for f in FAMILIES}, n=100,
            n_by_family={f: 50 for f in FAMILIES}, mean_output_tokens=t,
            mean_output_tokens_correct=t * 0.8 if n_right else None,
            mean_output_tokens_wrong=t * 1.6 if n_right < 100 else None,
            mean_prompt_tokens=20.0,
            inference_flops_per_query=InferenceFlops(exact=2 * PARAMS[model] * (20 + t), paper=2 * PARAMS[model] * (20 + t)),
            max_new_tokens=99,
        )
    if status == "failed":
        result.error = "RuntimeError: out of memory"
    return result


def _run_results(folder: Path, arms: list[ArmResult], status: str = "complete") -> RunResults:
    config = RunConfig(train=TrainConfig(budget_flops=arms[0].budget_flops), model=ModelConfig(name=arms[0].model),
                       arms=tuple(a.name for a in arms), out=str(folder))
    return RunResults(config=config, data=DataSummary(source="synthetic", train=1000, eval=100), environment={},
                      started="2026-12-02T12:00:00", status=status, finished="2026-12-02T12:05:00", arms=arms)


def _write_run(folder: Path, arms: list[ArmResult], status: str = "complete", generations: bool = False) -> Path:
    path = folder / "results.json"
    _run_results(folder, arms, status).write(path)
    if generations:
        for arm in arms:
            if arm.eval is not None:
                _write_generations(folder / arm.name / "generations.jsonl", arm)
    return path


def _write_generations(path: Path, arm: ArmResult) -> None:
    """One line per held-out item, as rdistill.run writes them: each family's easiest items right first,
    so arms agree on the easy items (their scores are correlated, as on a real held-out set)."""
    rows = []
    for fam in FAMILIES:
        k = round(arm.eval.by_family[fam] * 50)
        rows += [{"prompt": f"{fam} question {i}", "family": fam, "gold": str(i), "text": "\\boxed{x}",
                  "correct": i < k, "prompt_tokens": 20, "output_tokens": 5, "flops_exact": 1, "flops_paper": 1}
                 for i in range(50)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "study"
    budgets = {"tiny": (1e12, 1e13, 1e14, 1e15), "small": (1e13, 1e14, 1e15)}
    for model, bs in budgets.items():
        for b in bs:
            arms = [_arm_result(model, arm, b) for arm in ("ift", "reasoning", "seq50")]
            if (model, b) == ("small", 1e15):
                arms[2] = _arm_result(model, "seq50", b, status="failed")
            _write_run(root / f"{model}-{b:.0e}", arms, status="failed" if (model, b) == ("small", 1e15) else "complete",
                       generations=model == "tiny")
    return root


def test_collect_reads_points_and_counts_skipped(study: Path):
    pts = collect(study)
    assert len(pts) == 7 * 3 - 1
    assert {p.model for p in pts} == {"tiny", "small"}
    assert {p.arm for p in pts} == {"ift", "reasoning", "seq50"}
    p = next(p for p in pts if (p.model, p.arm, p.budget) == ("tiny", "reasoning", 1e12))
    assert p.params == PARAMS["tiny"] and p.train_flops == pytest.approx(1e12, rel=1e-4)
    assert set(p.by_family) == set(FAMILIES) and p.inference_flops_per_query > 0
    s = scan(study)
    assert [(x.arm, x.status, x.reason) for x in s.skipped] == [("seq50", "failed", "RuntimeError: out of memory")]
    assert sorted(s.run_status.values()) == ["complete"] * 6 + ["failed"]
    assert s.metrics == ["overall", *FAMILIES]


def test_collect_errors_clearly(tmp_path: Path):
    with pytest.raises(StudyError, match="no results.json"):
        collect(tmp_path)
    with pytest.raises(StudyError, match="does not exist"):
        collect(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    s = scan(tmp_path)
    assert s.points == [] and s.skipped[0].status == "unreadable"


def test_unreadable_results_are_skipped_with_a_message_naming_the_file(tmp_path: Path):
    good = _write_run(tmp_path / "good", [_arm_result("tiny", "ift", 1e13)])
    newer = tmp_path / "newer" / "results.json"
    replace(_run_results(newer.parent, [_arm_result("tiny", "ift", 1e13)]), schema_version=SCHEMA_VERSION + 1).write(newer)
    malformed = _write_run(tmp_path / "malformed", [_arm_result("tiny", "reasoning", 1e13)])
    doc = json.loads(malformed.read_text())
    doc["arms"][0]["eval"]["accuracy"] = "high"
    malformed.write_text(json.dumps(doc))
    unversioned = _write_run(tmp_path / "unversioned", [_arm_result("tiny", "seq50", 1e13)])
    doc = json.loads(unversioned.read_text())
    del doc["schema_version"]
    unversioned.write_text(json.dumps(doc))

    s = scan(tmp_path)
    assert [(p.arm, p.source) for p in s.points] == [("ift", good)]
    reasons = {x.source: x.reason for x in s.skipped}
    assert {x.status for x in s.skipped} == {"unreadable"} and set(reasons) == {newer, malformed, unversioned}
    assert all(str(path) in reason for path, reason in reasons.items())
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in reasons[newer]
    assert "arms[0].eval.accuracy" in reasons[malformed]
    assert "no schema_version" in reasons[unversioned]
    assert s.run_status[good] == "complete" and s.run_status[newer] == "unreadable"
    text = write_report(tmp_path, bootstrap=100).read_text()
    assert "1 complete, 3 unreadable" in text and f"schema version {SCHEMA_VERSION + 1} is newer" in text


def test_report_from_fake_study(study: Path):
    path = write_report(study, bootstrap=200, queries=[1e6])
    assert path == study / "report" / "report.md"
    text = path.read_text()
    for heading in ("## What was run", "## Results", "## Pareto frontiers", "## Saturating fits",
                    "## Compute-equivalent statements", "## Output lengths", "## Plots"):
        assert heading in text
    assert "20 complete and evaluated, 1 failed" in text
    assert "RuntimeError: out of memory" in text
    assert "beats" in text and "training FLOPs of" in text
    # tiny has four budgets: its series are fitted; small has three: not fitted, and the report says so
    assert "| ift-tiny | overall | 4 |" in text
    assert "ift-small: 3 points, need at least 4" in text
    assert "wrong / right" in text and "| reasoning | 7 | 48.0 | 38.4 | 76.8 | 2.00 |" in text
    # intervals, pairing, degenerate fits and the count of comparisons are in the report
    assert "Per-item scores (generations.jsonl): 12 of 20 points" in text
    assert "paired on 100 items" in text and "unpaired" in text  # tiny runs have items, small ones not
    assert "| ift-tiny | overall | 4 |" in text and "4 points for 4 parameters" in text
    assert "matched-budget comparisons" in text and "compute-equivalent ratios" in text
    assert "## The cost of serving" in text and "### Frontier at Q = 1.00e06 queries" in text
    assert "| tiny | 839,680 | ift | 0 | 1.00e12 |" in text  # seed column

    import matplotlib.image as mpimg

    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 3 * 3 and sum("total_cost" in link for link in links) == 3
    for link in links:
        png = path.parent / link
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
        img = mpimg.imread(png)
        assert img.shape[0] > 100 and img.shape[1] > 100 and float(img[..., :3].std()) > 0.01
    assert not list(path.parent.glob(".*.tmp"))


def test_report_fits_respect_a_binding_ceiling(study: Path):
    s = scan(study)
    assert max(p.metric("math-oe") for p in s.points) > 0.6  # the ceiling below binds
    fits = fit_study(s.points, ["math-oe"], ceiling={"math-oe": 0.6})
    done = [f for f in fits if f.fit is not None]
    assert {f.label for f in done} == {"ift-tiny", "reasoning-tiny", "seq50-tiny", "ift (all sizes)",
                                       "reasoning (all sizes)", "seq50 (all sizes)"}
    for f in done:
        assert f.fit.a > 0 and f.fit.b > 0 and f.fit.a + f.fit.b <= 0.6 and 0 < f.fit.k <= 1
    with pytest.raises(ValueError, match="no ceiling"):
        fit_study(s.points, s.metrics, ceiling={"overall": 0.9})


def test_report_on_a_study_with_no_complete_arm(tmp_path: Path):
    _write_run(tmp_path / "tiny-1e13", [_arm_result("tiny", "ift", 1e13, status="interrupted")], status="interrupted")
    text = write_report(tmp_path, bootstrap=100).read_text()
    assert "0 complete and evaluated, 1 interrupted" in text
    assert "nothing to compare yet" in text
    assert not list((tmp_path / "report").glob("*.png"))
