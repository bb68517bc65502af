"""Study analysis: Pareto extraction and the constrained fit on points with known answers, and a full
report (markdown and real PNGs) built from a small fake study written by ``RunResults`` itself."""

import json
import math
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import rdistill.analysis.fit as fit_module
from rdistill.analysis import (
    Fit,
    Point,
    StudyError,
    collect,
    compare_at_budget,
    equal_accuracy_statements,
    fit_problem,
    fit_saturating,
    fit_study,
    flop_levels,
    interpolated_flops_for,
    pareto_front,
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


def _point(x: float, y: float, *, model: str = "tiny", arm: str = "ift", budget: float | None = None,
           source: str = "run", by_family: dict | None = None, n: int = 200) -> Point:
    fams = by_family if by_family is not None else {"math-oe": y}
    return Point(
        model=model, params=PARAMS.get(model), arm=arm, budget=budget if budget is not None else x, train_flops=x,
        inference_flops_per_query=1e7 * (10 if arm == "reasoning" else 1), accuracy=y, by_family=fams,
        chance={f: 0.0 for f in fams}, n=n, n_by_family={f: n // len(fams) for f in fams},
        mean_output_tokens=10.0, mean_output_tokens_correct=8.0, mean_output_tokens_wrong=12.0,
        source=Path(source) / "results.json",
    )


def _check_constraints(fit: Fit, ceiling: float) -> None:
    for v in (fit.a, fit.b, fit.g, fit.k, fit.mae):
        assert math.isfinite(v)
    assert fit.a > 0 and fit.b > 0 and fit.g > 0
    assert fit.a + fit.b <= ceiling
    assert 0 < fit.k <= 1
    assert fit.mae >= 0


def test_pareto_front_known_answer_and_ties():
    f = _point(0.5, 0.05, source="f")
    a = _point(1, 0.1, source="a")
    b = _point(2, 0.3, source="b")
    c = _point(2, 0.2, source="c")  # same x as b, lower y
    d = _point(3, 0.3, source="d")  # same y as b, more x
    e = _point(4, 0.5, source="e")
    e_twin = _point(4, 0.5, source="e2")  # identical (x, y): only the first by sort key stays
    g = _point(5, 0.45, source="g")  # more x, less y than e
    pts = [f, a, b, c, d, e, e_twin, g]
    front = pareto_front(pts, "train_flops", "accuracy")
    assert front == [f, a, b, e]
    for seed in range(5):
        shuffled = pts[:]
        random.Random(seed).shuffle(shuffled)
        assert pareto_front(shuffled, "train_flops", "accuracy") == [f, a, b, e]


def test_pareto_front_families_callables_missing_values_and_tolerance():
    p1 = _point(1.0, 0.2, by_family={"math-oe": 0.2})
    p2 = _point(1.004, 0.6, source="p2", by_family={"math-oe": 0.6})
    p3 = _point(0.5, 0.9, source="p3", by_family={"general-mc": 0.9})  # no math-oe: ignored for it
    assert pareto_front([p1, p2, p3], "train_flops", "math-oe") == [p1, p2]
    # within 1% the FLOPs count as equal: the better point dominates the marginally cheaper one
    assert pareto_front([p1, p2, p3], "train_flops", "math-oe", rtol=0.01) == [p2]
    assert pareto_front([p1, p2], lambda p: p.train_flops, lambda p: p.metric("overall")) == [p1, p2]
    assert pareto_front([], "train_flops", "accuracy") == []


def test_flop_levels_group_runs_stopping_near_one_budget():
    lv = flop_levels([9.99997e12, 1e13, 9.99990e12, 2e13, 1e12])
    assert lv[1e13] == lv[9.99997e12] == 9.99990e12
    assert len(set(lv.values())) == 3


A_TRUE, B_TRUE, K_TRUE = 0.12, 0.6, 0.5
G_TRUE = math.log(2) / (10**13.5) ** K_TRUE  # half-way up at 3.2e13 FLOPs


def _curve(x, a=A_TRUE, b=B_TRUE, g=G_TRUE, k=K_TRUE):
    return a + b * (1 - np.exp(-g * np.asarray(x) ** k))


def test_fit_recovers_known_parameters_on_noiseless_points():
    x = np.geomspace(1e11, 1e16, 12)
    fit = fit_saturating(x, _curve(x), ceiling=1.0)
    assert fit is not None
    assert fit.a == pytest.approx(A_TRUE, abs=1e-3)
    assert fit.b == pytest.approx(B_TRUE, abs=1e-3)
    assert fit.k == pytest.approx(K_TRUE, abs=1e-3)
    assert fit.g == pytest.approx(G_TRUE, rel=1e-2)
    assert fit.mae < 1e-5
    assert fit.g == pytest.approx(fit.g_scaled * fit.x_ref ** (-fit.k))
    np.testing.assert_allclose(fit.predict(x), _curve(x), atol=1e-5)
    level = float(_curve(3e13))
    assert fit.flops_for(level) == pytest.approx(3e13, rel=1e-3)
    assert fit.flops_for(0.05) is None and fit.flops_for(0.99) is None
    _check_constraints(fit, 1.0)


def test_fit_is_deterministic():
    x = np.geomspace(1e12, 1e15, 6)
    y = _curve(x) + np.array([0.02, -0.01, 0.03, -0.02, 0.0, 0.01])
    assert fit_saturating(x, y, 0.95) == fit_saturating(x, y, 0.95)


@pytest.mark.parametrize("case", ["noisy", "decreasing", "flat", "above_ceiling", "zeros", "two_extremes", "ones"])
@pytest.mark.parametrize("ceiling", [1.0, 0.6])
def test_fit_constraints_hold_on_adversarial_points(case, ceiling):
    x = np.geomspace(1e11, 1e16, 8)
    rng = np.random.default_rng(0)
    y = {
        "noisy": _curve(x) + rng.normal(0, 0.05, len(x)),
        "decreasing": np.linspace(0.8, 0.1, len(x)),
        "flat": np.full(len(x), 0.4),
        "above_ceiling": np.full(len(x), 1.3),
        "zeros": np.zeros(len(x)),
        "two_extremes": np.array([0.0, 1.0] * 4),
        "ones": np.ones(len(x)),
    }[case]
    fit = fit_saturating(x, y, ceiling)
    assert fit is not None
    _check_constraints(fit, ceiling)
    assert np.all(fit.predict(x) <= ceiling)


def test_fit_refuses_too_few_points_and_says_why():
    assert fit_saturating([1e12, 1e13, 1e14], [0.1, 0.2, 0.3]) is None
    assert "3 points, need at least 4" in fit_problem([1e12, 1e13, 1e14], [0.1, 0.2, 0.3])
    same_level = [1e13, 1.001e13, 1e14, 1.002e14]
    assert fit_saturating(same_level, [0.1, 0.2, 0.3, 0.4]) is None
    assert "2 distinct FLOP levels" in fit_problem(same_level, [0.1, 0.2, 0.3, 0.4])
    assert fit_problem([1e12, 1e13, 1e14, 1e15], [0.1] * 4) is None
    with pytest.raises(ValueError, match="positive"):
        fit_saturating([0, 1e12, 1e13, 1e14], [0.1] * 4)
    with pytest.raises(ValueError, match="ceiling"):
        fit_saturating([1e11, 1e12, 1e13, 1e14], [0.1] * 4, ceiling=0)


def test_interpolated_flops_ratio_known_answer():
    ift = [_point(1e12, 0.1, arm="ift"), _point(1e13, 0.3, arm="ift")]
    rea = [_point(1e13, 0.1, arm="reasoning", source="r1"), _point(1e14, 0.3, arm="reasoning", source="r2")]
    assert interpolated_flops_for(ift, "overall", 0.2) == pytest.approx(10**12.5)
    assert interpolated_flops_for(ift, "overall", 0.1) is None  # at the first point: would extrapolate
    assert interpolated_flops_for(ift, "overall", 0.31) is None
    st = equal_accuracy_statements(ift + rea, ["overall"], fits=[])
    assert len(st) == 1 and st[0].ok and st[0].method == "interpolation"
    assert st[0].text.startswith(
        "reasoning-tiny needs 10x the training FLOPs of ift-tiny for the same overall accuracy (20.0%"
    )
    assert "interpolated" in st[0].text


def test_fitted_flops_ratio_known_answer():
    budgets = np.geomspace(1e11, 1e15, 6)
    ift = [_point(x, float(_curve(x)), arm="ift", source=f"i{i}") for i, x in enumerate(budgets)]
    # reasoning needs 4x the FLOPs for every accuracy: f_r(x) = f_i(x / 4)
    rea = [_point(4 * x, float(_curve(x)), arm="reasoning", source=f"r{i}") for i, x in enumerate(budgets)]
    pts = ift + rea
    fits = fit_study(pts, ["overall"], ceiling=1.0)
    assert all(f.fit is not None for f in fits)
    st = [s for s in equal_accuracy_statements(pts, ["overall"], fits) if s.ok]
    assert [s.method for s in st] == ["fit", "fit"]
    for s in st:
        ratio = float(s.text.split(" needs ")[1].split("x ")[0])
        assert ratio == pytest.approx(4.0, rel=0.02)


def test_equal_accuracy_says_not_enough_points():
    pts = [_point(1e13, 0.3, arm="ift"), _point(1e13, 0.5, arm="reasoning", source="r")]
    st = equal_accuracy_statements(pts, ["overall"], fit_study(pts, ["overall"]))
    assert st and not any(s.ok for s in st)
    assert any("not enough points" in s.why for s in st)


def test_compare_at_budget_winner_gap_and_noise_flag():
    pts = [
        _point(1e13, 0.40, model="small", arm="ift", source="a"),
        _point(1e13, 0.28, model="tiny", arm="reasoning", source="b"),
        _point(1e13, 0.25, model="small", arm="reasoning", source="c"),
        _point(1e14, 0.50, model="tiny", arm="ift", source="d"),
        _point(1e14, 0.52, model="tiny", arm="reasoning", source="e"),
    ]
    st = compare_at_budget(pts, ["overall"])
    assert st[0].text.startswith("at 1.00e13 training FLOPs, ift-small beats reasoning-tiny by 12.0 points on overall")
    assert "not a clear win" not in st[0].text
    assert "reasoning-tiny beats ift-tiny by 2.0 points" in st[1].text and "not a clear win" in st[1].text


def test_compare_at_budget_leaves_out_runs_stopped_early():
    early = Point(**{**_point(0.6e13, 0.9, arm="reasoning", budget=1e13, source="x").__dict__,
                     "budget_used": 0.6, "stopped_by": "data"})
    st = compare_at_budget([_point(1e13, 0.4, arm="ift"), early], ["overall"])
    assert len(st) == 1 and "only arm ift" in st[0].text


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


def _write_run(folder: Path, arms: list[ArmResult], status: str = "complete") -> Path:
    path = folder / "results.json"
    _run_results(folder, arms, status).write(path)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fake") / "study"
    budgets = {"tiny": (1e12, 1e13, 1e14, 1e15), "small": (1e13, 1e14, 1e15)}
    for model, bs in budgets.items():
        for b in bs:
            arms = [_arm_result(model, arm, b) for arm in ("ift", "reasoning", "seq50")]
            if (model, b) == ("small", 1e15):
                arms[2] = _arm_result(model, "seq50", b, status="failed")
            _write_run(root / f"{model}-{b:.0e}", arms, status="failed" if (model, b) == ("small", 1e15) else "complete")
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
    text = write_report(tmp_path).read_text()
    assert "1 complete, 3 unreadable" in text and f"schema version {SCHEMA_VERSION + 1} is newer" in text


def test_arms_ordered_by_the_curriculum_grammar():
    arms = ["zeta", "reasoning", "mix10", "seq75", "ift", "seq5"]
    pts = [_point(1e13, 0.5, arm=a, source=a) for a in arms]
    assert [p.arm for p in sorted(pts, key=Point.sort_key)] == ["ift", "seq5", "seq75", "mix10", "reasoning", "zeta"]


def test_fits_are_found_by_scipy_nelder_mead(monkeypatch: pytest.MonkeyPatch):
    methods = []
    real = fit_module.minimize

    def spy(*args, **kwargs):
        methods.append(kwargs["method"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "minimize", spy)
    x = np.geomspace(1e11, 1e16, 12)
    fit = fit_saturating(x, _curve(x), ceiling=1.0)
    assert fit.a == pytest.approx(A_TRUE, abs=1e-3) and fit.k == pytest.approx(K_TRUE, abs=1e-3)
    assert len(methods) >= 8 and set(methods) == {"Nelder-Mead"}


def test_analysis_imports_neither_torch_nor_the_cli():
    code = ("import sys, rdistill.analysis; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cli') "
            "or m.startswith(('rdistill.cli', 'rdistill.synthetic'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_from_fake_study(study: Path):
    path = write_report(study)
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

    import matplotlib.image as mpimg

    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 2 * 3
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
        _check_constraints(f.fit, 0.6)
    with pytest.raises(ValueError, match="no ceiling"):
        fit_study(s.points, s.metrics, ceiling={"overall": 0.9})


def test_report_on_a_study_with_no_complete_arm(tmp_path: Path):
    _write_run(tmp_path / "tiny-1e13", [_arm_result("tiny", "ift", 1e13, status="interrupted")], status="interrupted")
    text = write_report(tmp_path).read_text()
    assert "0 complete and evaluated, 1 interrupted" in text
    assert "nothing to compare yet" in text
    assert not list((tmp_path / "report").glob("*.png"))
