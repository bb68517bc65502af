"""Study analysis on points with known answers: Pareto extraction, the constrained fit and its
degeneracy, compute-equivalent statements. The report of a whole fake study is in test_report_study.py."""

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rdistill.analysis.fit as fit_module
from rdistill.analysis.fit import bound_notes
from rdistill.analysis import (
    DegeneracyRules,
    degenerate_reasons,
    Fit,
    Point,
    Resampler,
    compare_at_budget,
    equal_accuracy_statements,
    fit_problem,
    fit_saturating,
    fit_study,
    flop_levels,
    interpolated_flops_for,
    pareto_front,
)

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


def test_degenerate_fits_are_flagged_with_the_reason():
    x = np.geomspace(1e11, 1e15, 8)
    wobble = np.array([0.01, -0.01, 0.008, -0.012, 0.01, -0.006, 0.004, -0.01])
    healthy = fit_saturating(x, _curve(x) + wobble, 1.0)
    assert degenerate_reasons(healthy) == ()
    # the case: an almost flat IFT curve whose fit rises by a fraction of a point
    flat = fit_saturating(x, 0.30 + 0.3 * wobble, 1.0)
    assert any("flat line" in r for r in degenerate_reasons(flat)) and flat.b < 0.02
    # as many points as parameters: the curve can pass through all of them
    four = fit_saturating(x[::2], (_curve(x) + wobble)[::2], 1.0)
    assert "4 points for 4 parameters" in degenerate_reasons(four)
    # three seeds at each of those four budgets are 12 points, but still only 4 FLOP levels
    xr = np.repeat(x[::2], 3) * np.tile([1.0, 1.001, 0.999], 4)
    reps = fit_saturating(xr, np.repeat(_curve(x[::2]), 3) + np.tile([0.02, -0.02, 0.0], 4), 1.0)
    assert reps.n == 12 and reps.levels == 4
    assert "4 FLOP levels (12 points) for 4 parameters" in degenerate_reasons(reps)
    # a straight rise in log-FLOPs space that keeps going pushes k against its bound 1
    steep = fit_saturating(x, 0.05 + 0.9 * x / x[-1], 1.0)
    assert any("at its bound 1" in r for r in degenerate_reasons(steep))
    # noiseless points: MAE ~ 0 (the data do not test the shape), unless the rules allow it
    exact = fit_saturating(x, _curve(x), 1.0)
    assert any("MAE" in r for r in degenerate_reasons(exact))
    assert degenerate_reasons(exact, DegeneracyRules(min_mae=0.0)) == ()
    # a ceiling that binds: a + b sits at it; noted, degenerate only under strict bounds
    capped = fit_saturating(x, 0.5 + 0.4 * x / x[-1] + wobble, 0.6)
    assert "a + b at the ceiling 60.0%" in bound_notes(capped)
    assert not any("ceiling" in r for r in degenerate_reasons(capped))
    assert "a + b at the ceiling 60.0%" in degenerate_reasons(capped, DegeneracyRules(strict_bounds=True))


def test_a_take_off_steeper_than_the_papers_form_needs_a_larger_bound_on_k():
    """A small student's S-shaped take-off (k = 2.5: 10% -> 90% of its rise within 3.4x the FLOPs) pins
    k at the paper's bound 1; with --k-max 5 the fit finds it, and its FLOPs-for-accuracy is the truth's."""
    x = np.geomspace(1e12, 1e13, 6)
    g = math.log(2) / (4e12) ** 2.5  # half-way up at 4e12 FLOPs
    wobble = np.array([0.004, -0.006, 0.005, -0.004, 0.006, -0.005])
    y = _curve(x, a=0.1, b=0.6, g=g, k=2.5) + wobble
    paper = fit_saturating(x, y, 1.0)
    assert paper.k_max == 1.0 and "k = 1.000 at its bound 1" in degenerate_reasons(paper)
    wide = fit_saturating(x, y, 1.0, k_max=5.0)
    assert wide.k_max == 5.0 and degenerate_reasons(wide) == ()
    assert wide.k == pytest.approx(2.5, abs=0.3) and wide.mae < paper.mae / 3
    assert wide.flops_for(0.4) == pytest.approx(4e12, rel=0.05)
    # the bound holds and binds: a step between two budgets pins k at 5, said as such
    step = fit_saturating(x, np.where(x > 3e12, 0.7, 0.1) + wobble, 1.0, k_max=5.0)
    assert step.k <= 5.0 and "k = 5.000 at its bound 5" in degenerate_reasons(step)
    for bad in (0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="bound on k must be a finite number of at least 1"):
            fit_saturating(x, y, 1.0, k_max=bad)
    # the report says which fits the paper's bound pins, and how to fit them; not once the bound is raised
    from rdistill.analysis.fits import FitResult
    from rdistill.analysis.sections import section_fits

    def fits_section(fit, k_max):
        return "\n".join(section_fits([FitResult("ift-tiny", "ift", "tiny", "", "overall", 6, fit, None, x[0], x[-1],
                                                  degenerate_reasons(fit))], {"overall": 1.0}, k_max=k_max))

    pinned = fits_section(paper, 1.0)
    assert "1 have k at the paper's bound 1" in pinned and "`rdistill report --k-max 5`" in pinned
    assert "paper's bound 1:" not in fits_section(wide, 5.0) and "0 < k <= 5 (enforced" in fits_section(wide, 5.0)


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
    # noiseless points lie on the curve (MAE ~ 0): allowed here, to check the ratio read off the fits
    fits = fit_study(pts, ["overall"], ceiling=1.0, rules=DegeneracyRules(min_mae=0.0))
    assert all(f.fit is not None and not f.degenerate for f in fits)
    rs = Resampler(pts, n=200)
    st = [s for s in equal_accuracy_statements(pts, ["overall"], fits, resampler=rs) if s.ok]
    assert [s.method for s in st] == ["fit", "fit"]
    for s in st:
        ratio = float(s.text.split(" needs ")[1].split("x ")[0])
        assert ratio == pytest.approx(4.0, rel=0.02) and s.estimate == pytest.approx(4.0, rel=0.02)
        assert s.lo < 4.0 < s.hi and "95% interval" in s.text
    # with the default rules the same fits pass through every point: degenerate, never used for a ratio
    fits = fit_study(pts, ["overall"], ceiling=1.0)
    assert all(any("MAE" in r for r in f.degenerate) for f in fits)
    st = equal_accuracy_statements(pts, ["overall"], fits, resampler=rs)
    assert not any(s.method == "fit" and s.ok for s in st)
    series_st = next(s for s in st if s.ok)
    assert series_st.method == "interpolation" and "degenerate" in series_st.text
    pooled = next(s for s in st if "all sizes" in s.subject)
    assert not pooled.ok and "degenerate" in pooled.why


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
    assert st[0].clear and "a clear win" in st[0].text and "not a clear win" not in st[0].text
    assert "reasoning-tiny beats ift-tiny by 2.0 points" in st[1].text and "not a clear win" in st[1].text
    # no per-item scores: unpaired, and the p-values are Holm-adjusted over the 2 comparisons made
    assert all("unpaired" in s.text and "over 2 comparisons" in s.text for s in st)
    assert st[0].estimate == pytest.approx(0.12) and st[0].lo < 0.12 < st[0].hi
    assert st[0].p_adjusted == pytest.approx(min(1.0, 2 * min(x.p_value for x in st)))


def test_compare_at_budget_leaves_out_runs_stopped_early():
    early = Point(**{**_point(0.6e13, 0.9, arm="reasoning", budget=1e13, source="x").__dict__,
                     "budget_used": 0.6, "stopped_by": "data"})
    st = compare_at_budget([_point(1e13, 0.4, arm="ift"), early], ["overall"])
    assert len(st) == 1 and "only arm ift" in st[0].text


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
