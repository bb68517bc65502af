"""The report's statistics with known answers: intervals against scipy and hand values, paired tests,
Holm, a simulated study with a planted effect whose interval must cover the truth, replicates that do
not add items, bootstrap intervals of a planted compute ratio, and break-even volumes computed by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from rdistill.analysis import (
    ItemScores,
    Point,
    Resampler,
    break_even,
    break_even_at_accuracy,
    break_even_at_budget,
    configurations,
    equal_accuracy_statements,
    fit_saturating,
    fit_study,
    holm,
    mcnemar_exact,
    paired_difference_interval,
    parse_ceiling,
    resolve_ceilings,
    serving_frontier,
    wilson_interval,
)
from rdistill.analysis.refit import refit_many
from rdistill.analysis.serving import frontier_statement
from rdistill.analysis.stats import percentile_interval, sign_flip_test, unpaired_difference_interval

FAMILY = "math-oe"


def _point(arm: str, flops: float, correct=None, *, acc: float | None = None, n: int = 200, model: str = "tiny",
           seed: int = 0, inference: float = 1e7, budget: float | None = None, keys=None) -> Point:
    """A point on one family; with ``correct`` (0/1 per item) it carries per-item scores."""
    items = None
    if correct is not None:
        c = np.asarray(correct, dtype=bool)
        n, acc = c.size, float(c.mean())
        items = ItemScores(tuple(keys or (f"item{i}" for i in range(n))), (FAMILY,) * n, c)
    return Point(
        model=model, params=1000, arm=arm, budget=budget if budget is not None else flops, train_flops=flops,
        inference_flops_per_query=inference, accuracy=acc, by_family={FAMILY: acc}, chance={FAMILY: 0.0}, n=n,
        n_by_family={FAMILY: n}, mean_output_tokens=None, mean_output_tokens_correct=None,
        mean_output_tokens_wrong=None, source=Path(f"{model}-{arm}-{flops:.3g}-{seed}") / "results.json",
        seed=seed, items=items,
    )


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (10, 10), (37, 120), (1, 1000)])
def test_wilson_matches_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_wilson_contains_the_estimate_exactly():
    """At 0% and 100% the bound is the estimate itself, not 1e-17 beside it (a plot's error bar would be negative)."""
    for n in range(1, 201):
        for k in range(n + 1):
            lo, hi = wilson_interval(k / n * n, n)
            assert lo <= k / n <= hi, (k, n, lo, hi)


def test_zero_against_zero_is_never_a_zero_width_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (10 + 1.96**2), rel=1e-3)  # 0.2775
    # paired, 0% vs 0% on 10 items: Newcombe's interval is -+ the Wilson upper bound of 0/10
    assert paired_difference_interval(0, 0, 0, 10) == pytest.approx((-hi, hi), rel=1e-9)
    assert paired_difference_interval(10, 0, 0, 0) == pytest.approx((-hi, hi), rel=1e-9)  # 100% vs 100%
    a = _point("ift", 1e13, [0] * 40)
    b = _point("reasoning", 1e13, [0] * 40)
    d = Resampler([a, b], n=200).difference(*configurations([a], FAMILY), *configurations([b], FAMILY), FAMILY)
    assert d.estimate == 0 and d.lo < -0.05 and d.hi > 0.05 and d.p_value == 1.0 and d.paired


def test_paired_tests_known_answers():
    assert mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)  # 0.03125
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # the sign-flip test on 0/1 differences is McNemar by Monte Carlo
    assert sign_flip_test([1.0] * 6 + [0.0] * 30, n_perm=20000) == pytest.approx(2 * 0.5**6, abs=0.01)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert percentile_interval([1.0, 2.0, math.inf, math.nan] * 10, 0.5) == (1.0, math.inf)
    assert percentile_interval([math.nan]) is None


def test_break_even_hand_computed():
    # a: 1e12 to train, 1e8 per query; b: 4e12 to train, 2e7 per query -> b cheaper from 3e12 / 8e7 queries
    q = break_even(1e12, 1e8, 4e12, 2e7)
    assert q == pytest.approx(37_500)
    assert 4e12 + q * 2e7 == pytest.approx(1e12 + q * 1e8)
    assert break_even(4e12, 1e8, 1e12, 2e7) == 0.0  # b cheaper to train and to serve
    assert break_even(1e12, 2e7, 4e12, 1e8) == math.inf  # b dearer on both
    assert math.isnan(break_even(4e12, 2e7, 1e12, 1e8))  # roles swapped


def test_planted_paired_effect_is_covered_and_pairing_narrows_the_interval():
    """200 simulated held-out sets of 200 items; arm a is right with p 0.60, arm b with 0.45, on the same items
    (their outcomes share the item's difficulty 70% of the time). The true difference is 0.15."""
    rng = np.random.default_rng(1)
    covered, paired_width, unpaired_width = 0, [], []
    for _ in range(200):
        u, v = rng.random(200), rng.random(200)
        shared = rng.random(200) < 0.7
        ca, cb = u < 0.60, np.where(shared, u, v) < 0.45
        a, b = _point("reasoning", 1e13, ca), _point("ift", 1e13, cb)
        d = Resampler([a, b], n=200).difference(*configurations([a], FAMILY), *configurations([b], FAMILY), FAMILY)
        covered += d.lo <= 0.15 <= d.hi
        paired_width.append(d.hi - d.lo)
        lo, hi = unpaired_difference_interval(ca.sum(), 200, cb.sum(), 200)
        unpaired_width.append(hi - lo)
    assert covered / 200 >= 0.93
    assert np.mean(paired_width) < 0.85 * np.mean(unpaired_width)


def test_replicates_do_not_add_items_and_carry_seed_variation():
    base = np.arange(100)
    runs = [_point("ift", 1e13, base < k, seed=s) for s, k in enumerate((30, 50, 70))]
    (config,) = configurations(runs, FAMILY)
    assert len(config.points) == 3 and config.accuracy(FAMILY) == pytest.approx(0.5)
    rs = Resampler(runs, n=500)
    lo, hi = rs.config_interval(config, FAMILY)
    wl, wh = wilson_interval(50, 100)  # 100 distinct items, not 300
    assert lo <= wl and hi >= wh
    assert hi - lo > 1.3 * (wh - wl)  # the seeds disagree by 40 points: the interval says so
    other = _point("reasoning", 1e13, base < 50, seed=0)
    d = rs.difference(config, configurations([other], FAMILY)[0], FAMILY)
    assert d.items == 100 and d.paired and d.test.startswith("sign-flip")


def _curve(x, a=0.1, b=0.6, half=3e13, k=0.5):
    return a + b * (1 - np.exp(-math.log(2) * (np.asarray(x) / half) ** k))


def test_bootstrap_interval_of_a_planted_compute_ratio_covers_it():
    """ift follows a known curve; reasoning needs 4x its FLOPs for every accuracy. Items are scored by drawing
    each point's outcomes on 400 shared items; the fitted ratio's bootstrap interval must cover 4."""
    rng = np.random.default_rng(7)
    budgets = np.geomspace(1e12, 1e15, 7)
    pts = []
    for arm, scale in (("ift", 1.0), ("reasoning", 4.0)):
        for x in budgets:
            pts.append(_point(arm, scale * x, rng.random(400) < _curve(x), inference=1e7 if arm == "ift" else 1e8))
    fits = fit_study(pts, [FAMILY], ceiling=1.0)
    assert all(f.usable for f in fits), [f.degenerate for f in fits]
    rs = Resampler(pts, n=300, seed=3)
    st = [s for s in equal_accuracy_statements(pts, [FAMILY], fits, resampler=rs) if s.ok]
    assert {s.method for s in st} == {"fit"} and len(st) == 2
    for s in st:
        assert s.lo < 4.0 < s.hi, s.text
        assert s.hi / s.lo < 6, s.text
    again = [s for s in equal_accuracy_statements(pts, [FAMILY], fits, resampler=Resampler(pts, n=300, seed=3)) if s.ok]
    assert [s.text for s in again] == [s.text for s in st]  # reproducible: fixed bootstrap seed


def test_refits_start_from_and_reproduce_the_fit():
    x = np.geomspace(1e12, 1e15, 7)
    y = _curve(x) + np.array([0.01, -0.02, 0.015, -0.01, 0.0, 0.02, -0.015])
    fit = fit_saturating(x, y, 1.0)
    r = refit_many(fit, x, np.stack([y, y + 0.01]))
    assert r.a[0] == pytest.approx(fit.a, abs=1e-4) and r.k[0] == pytest.approx(fit.k, abs=1e-3)
    assert r.mae[0] <= fit.mae + 1e-9
    assert r.a[1] == pytest.approx(fit.a + 0.01, abs=2e-3)  # a shifted curve shifts a
    level = float(fit.predict(1e14))
    assert r.flops_for(level)[0] == pytest.approx(1e14, rel=1e-2)
    assert r.flops_for(0.99)[0] == math.inf and r.flops_for(0.0)[0] == 0.0


def test_refits_keep_the_fits_bound_on_k():
    x = np.geomspace(1e12, 1e13, 6)
    y = _curve(x, half=4e12, k=2.5) + np.array([0.004, -0.006, 0.005, -0.004, 0.006, -0.005])
    fit = fit_saturating(x, y, 1.0, k_max=5.0)
    assert fit.k > 2.0
    r = refit_many(fit, x, np.stack([y, np.where(x > 3e12, 0.7, 0.1)]))
    assert r.k[0] == pytest.approx(fit.k, abs=1e-3) and r.a[0] == pytest.approx(fit.a, abs=1e-4)  # above 1, as the fit
    assert np.all(r.k <= 5.0) and r.k[1] > 4.5  # a step pushes k to the bound, never past it


def _linear_series(arm: str, xs, ys, inference: float, model: str = "tiny"):
    return [_point(arm, x, acc=y, n=400, inference=inference, model=model) for x, y in zip(xs, ys)]


def test_break_even_at_matched_accuracy_hand_computed():
    # interpolated in log10 FLOPs: reasoning reaches 20% at 10^12.5, ift at 10^13.5
    rea = _linear_series("reasoning", [1e12, 1e13], [0.1, 0.3], inference=1e8)
    ift = _linear_series("ift", [1e13, 1e14], [0.1, 0.3], inference=2e7)
    pts = rea + ift
    (be,) = break_even_at_accuracy(pts, [FAMILY], [], Resampler(pts, n=300))
    expected = (10**13.5 - 10**12.5) / (1e8 - 2e7)  # 355,756 queries
    assert be.ok and be.q == pytest.approx(expected, rel=1e-9)
    assert be.first == "reasoning-tiny" and be.second == "ift-tiny"
    assert be.lo <= be.q <= be.hi and "from Q* = 3.56e05 queries" in be.text


def test_break_even_at_matched_budget_hand_computed():
    rea = _linear_series("reasoning", [1e13], [0.3], inference=1e8)
    ift = _linear_series("ift", [1e13, 1e14], [0.2, 0.4], inference=2e7)
    pts = rea + ift
    (be,) = break_even_at_budget(pts, [FAMILY], Resampler(pts, n=300))
    # ift needs 10^13.5 FLOPs for reasoning's 30%: Q* = (10^13.5 - 1e13) / (1e8 - 2e7)
    assert be.q == pytest.approx((10**13.5 - 1e13) / 8e7, rel=1e-9) and be.lo <= be.q <= be.hi
    # ift never reaching the winner's accuracy gives a lower bound, from its best measured budget
    short = _linear_series("ift", [1e13, 1e14], [0.2, 0.25], inference=2e7)
    (be,) = break_even_at_budget(rea + short, [FAMILY], Resampler(rea + short, n=100))
    assert be.lower_bound and be.q == pytest.approx((1e14 - 1e13) / 8e7) and "Q* >" in be.text
    # the winner is also cheaper to serve: no break-even
    cheap = _linear_series("reasoning", [1e13], [0.3], inference=1e6)
    (be,) = break_even_at_budget(cheap + ift, [FAMILY], Resampler(cheap + ift, n=100))
    assert be.q == math.inf and "costs less at every volume" in be.text


def test_serving_frontier_changes_with_the_query_volume():
    rea = _point("reasoning", 1e12, acc=0.5, inference=1e8)
    ift = _point("ift", 1e13, acc=0.5, inference=1e7, model="small")
    assert serving_frontier([rea, ift], FAMILY, 1e3) == [rea]  # 1e12 + 1e11 < 1e13 + 1e10
    assert serving_frontier([rea, ift], FAMILY, 1e7) == [ift]  # 1e15 + 1e12 > 1e14 + 1e13
    assert "only reasoning is on the frontier" in frontier_statement([rea, ift], FAMILY, 1e3)
    assert "only ift is on the frontier" in frontier_statement([rea, ift], FAMILY, 1e7)


def test_ceilings_parse_and_resolve():
    assert parse_ceiling("0.9") == 0.9
    assert parse_ceiling("math-oe=0.921, general-mc=0.954") == {"math-oe": 0.921, "general-mc": 0.954}
    assert parse_ceiling("0.8,math-oe=0.921") == {"*": 0.8, "math-oe": 0.921}
    for bad, msg in (("92.1", "fraction"), ("math-oe=x", "not a number"), ("math-oe=0.9,math-oe=0.8", "twice"), ("", "empty")):
        with pytest.raises(ValueError, match=msg):
            parse_ceiling(bad)
    metrics = ["overall", "general-mc", "math-oe"]
    p = Point(model="tiny", params=1, arm="ift", budget=1e12, train_flops=1e12, inference_flops_per_query=None,
              accuracy=0.5, by_family={"general-mc": 0.5, "math-oe": 0.5}, chance={}, n=400,
              n_by_family={"general-mc": 100, "math-oe": 300}, mean_output_tokens=None, mean_output_tokens_correct=None,
              mean_output_tokens_wrong=None, source=Path("r/results.json"))
    got = resolve_ceilings({"general-mc": 0.954, "math-oe": 0.921}, metrics, [p])
    assert got["overall"] == pytest.approx((100 * 0.954 + 300 * 0.921) / 400)
    assert resolve_ceilings({"*": 0.8, "math-oe": 0.921}, metrics, [p]) == {"overall": 0.8, "general-mc": 0.8, "math-oe": 0.921}
    with pytest.raises(ValueError, match="no ceiling"):
        resolve_ceilings({"math-oe": 0.921}, metrics, [p])
    with pytest.raises(ValueError, match="does not measure"):
        resolve_ceilings({"math_oe": 0.921, "*": 1.0}, metrics, [p])


def test_replicates_on_different_items_pair_within_their_items():
    """The seed changed the held-out split: each seed has its own 50 items, both arms scored on them."""
    rng = np.random.default_rng(5)
    pts = []
    for seed in (0, 1, 2):
        keys = [f"s{seed}-item{i}" for i in range(50)]
        u = rng.random(50)
        pts.append(_point("reasoning", 1e13, u < 0.6, seed=seed, keys=keys))
        pts.append(_point("ift", 1e13, u < 0.4, seed=seed, keys=keys))
    rs = Resampler(pts, n=300)
    rea, ift = (configurations([p for p in pts if p.arm == arm], FAMILY)[0] for arm in ("reasoning", "ift"))
    d = rs.difference(rea, ift, FAMILY)
    assert d.paired and d.items == 150 and d.test == "McNemar exact"  # 3 x 50 distinct items, each once per arm
    assert d.lo > 0 and d.estimate == pytest.approx(rea.accuracy(FAMILY) - ift.accuracy(FAMILY))
    lo, hi = rs.config_interval(rea, FAMILY)
    wl, wh = wilson_interval(150 * rea.accuracy(FAMILY), 150)
    assert lo <= wl and hi >= wh


def test_items_are_identified_by_prompt_gold_and_occurrence(tmp_path):
    from rdistill.analysis import read_items

    rows = [{"prompt": "2+2?", "family": FAMILY, "gold": "4", "correct": True},
            {"prompt": "2+2?", "family": FAMILY, "gold": "4", "correct": False},
            {"prompt": "3+3?", "family": "math-mc", "gold": "6", "correct": True}]
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_items(path)
    assert len(set(items.keys)) == 3 and items.correct.tolist() == [True, False, True]
    keys, scores = items.select(FAMILY)
    assert len(keys) == 2 and scores.tolist() == [1.0, 0.0]
    assert read_items(path).keys == items.keys  # stable across reads
