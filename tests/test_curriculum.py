import numpy as np
import pytest

from rdistill.data.curriculum import ArmSpec, parse_arm, parse_arms, segments


def test_parse_arms():
    assert parse_arm("ift") == ArmSpec("ift", 0.0, "mixed")
    assert parse_arm("reasoning") == ArmSpec("reasoning", 1.0, "mixed")
    assert parse_arm("seq25") == ArmSpec("seq25", 0.25, "sequential")
    assert parse_arm("mix50") == ArmSpec("mix50", 0.5, "mixed")
    with pytest.raises(ValueError, match="seqNN"):
        parse_arm("seq150")
    with pytest.raises(ValueError, match="twice"):
        parse_arms("ift,ift")


def _take(it, k):
    return [next(it) for _ in range(k)]


def test_mixed_share_per_epoch():
    rng = np.random.default_rng(0)
    (epoch,) = _take(segments(parse_arm("mix25"), 100, rng), 1)
    assert len(epoch) == 100
    assert (epoch >= 100).sum() == 25  # reasoning-format ids
    assert sorted(epoch % 100) == list(range(100))  # every example once, in one format


def test_sequential_ift_first_then_reasoning_with_samples():
    rng = np.random.default_rng(0)
    segs = list(segments(parse_arm("seq25"), 100, rng, samples=40))
    assert [len(x) for x in segs] == [30, 10]
    assert (segs[0] < 100).all() and (segs[1] >= 100).all()
    examples = np.concatenate(segs) % 100
    assert len(set(examples.tolist())) == 40  # distinct examples, no repeats


def test_sequential_budget_mode_continues_in_the_last_phase_format():
    rng = np.random.default_rng(0)
    it = segments(parse_arm("seq50"), 10, rng, planned_samples=30)
    first, second, more = _take(it, 3)
    assert len(first) == 15 and (first < 10).all()
    assert len(second) == 15 and (second >= 10).all()
    assert (more >= 10).all() and len(more) == 10
    ift_only = segments(parse_arm("seq0"), 10, np.random.default_rng(0), planned_samples=5)
    assert all((s < 10).all() for s in _take(ift_only, 3))


def test_every_arm_sees_the_same_examples_in_samples_mode():
    seen = []
    for name in ("ift", "reasoning", "mix50", "seq25"):
        segs = segments(parse_arm(name), 50, np.random.default_rng(7), samples=20)
        seen.append(sorted((np.concatenate(list(segs)) % 50).tolist()))
    assert all(s == seen[0] for s in seen)
