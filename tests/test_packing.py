"""Packing: the rules (best fit, best fit decreasing, ordered next fit, overflow), the C++ packer
rdistill._C against its numpy twin and a plain reference, and `rdistill data stats`."""

import bisect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rdistill.data import packing
from rdistill.data.packing import MODES, PackingError, pack, pack_arrays

try:
    from rdistill import _C
except ImportError as e:
    _C = None
    _NO_CPP = f"rdistill._C is not built ({e}); the numpy twin is tested alone"

needs_cpp = pytest.mark.skipif(_C is None, reason=_NO_CPP if _C is None else "")
BACKENDS = ["numpy", pytest.param("cpp", marks=needs_cpp)]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=0, max_size=200),
    capacity=st.integers(1, 512),
    mode=st.sampled_from(["bfd", "ordered"]),
)
def test_every_document_once_and_no_pack_over_capacity(lengths, capacity, mode):
    plan = pack(lengths, capacity, mode=mode, overflow="truncate")
    placed = sorted(i for p in plan.packs for i in p)
    assert placed == list(range(len(lengths)))
    for p in plan.packs:
        assert p, "no empty pack"
        assert sum(min(lengths[i], capacity) for i in p) <= capacity
    assert plan.truncated == [i for i, n in enumerate(lengths) if n > capacity]


def test_bfd_is_dense_and_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=3000).tolist()
    a, b = pack(lengths, 2048), pack(lengths, 2048)
    assert a.packs == b.packs
    assert a.efficiency > 0.99
    # best fit: the lower bound is ceil(total / capacity)
    assert len(a.packs) <= int(np.ceil(sum(lengths) / 2048)) + 1


def test_ordered_mode_keeps_order():
    lengths = [5, 3, 8, 2, 7, 1]
    plan = pack(lengths, 10, mode="ordered")
    assert [i for p in plan.packs for i in p] == list(range(6))
    assert plan.packs == [[0, 1], [2, 3], [4, 5]]


def test_overflow_policies():
    lengths = [5, 50, 3, 70]
    with pytest.raises(PackingError, match=r"2 documents .* capacity of 10 tokens .*rows 1, 3"):
        pack(lengths, 10)
    dropped = pack(lengths, 10, overflow="drop")
    assert dropped.dropped == [1, 3]
    assert sorted(i for p in dropped.packs for i in p) == [0, 2]
    truncated = pack(lengths, 10, overflow="truncate")
    assert truncated.truncated == [1, 3]


def test_empty_document_is_an_error():
    with pytest.raises(ValueError, match="document 1 is empty"):
        pack([3, 0, 2], 10)



def _reference(lengths: list[int], capacity: int, mode: str) -> list[list[int]]:
    """The rules of the module docstring, written as plainly as possible (O(n^2)): the oracle."""
    order = list(range(len(lengths)))
    if mode == "bfd":
        order.sort(key=lambda i: -lengths[i])
    packs: list[list[int]] = []
    if mode == "ordered":
        used = capacity
        for i in order:
            if used + lengths[i] > capacity:
                packs.append([])
                used = 0
            packs[-1].append(i)
            used += lengths[i]
        return packs
    room: list[tuple[int, int]] = []
    for i in order:
        k = bisect.bisect_left(room, (lengths[i], -1))
        if k == len(room):
            packs.append([i])
            bisect.insort(room, (capacity - lengths[i], len(packs) - 1))
        else:
            rem, p = room.pop(k)
            packs[p].append(i)
            bisect.insort(room, (rem - lengths[i], p))
    return packs


lengths_st = st.lists(st.integers(1, 300), min_size=0, max_size=200)


@settings(max_examples=80, deadline=None)
@given(
    lengths=lengths_st,
    capacity=st.integers(1, 512),
    mode=st.sampled_from(MODES),
    overflow=st.sampled_from(["truncate", "drop"]),
    backend=st.sampled_from(["numpy", "cpp"] if _C is not None else ["numpy"]),
)
def test_every_placed_once_within_capacity_and_as_the_rules_say(lengths, capacity, mode, overflow, backend):
    plan = pack(lengths, capacity, mode=mode, overflow=overflow, backend=backend)
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    kept = [i for i in range(len(lengths)) if overflow == "truncate" or lengths[i] <= capacity]
    assert sorted(i for p in plan.packs for i in p) == kept
    assert all(p and sum(min(lengths[i], capacity) for i in p) <= capacity for p in plan.packs)
    assert (plan.truncated, plan.dropped) == ((too_long, []) if overflow == "truncate" else ([], too_long))
    eff = [min(lengths[i], capacity) for i in kept]
    expected = [[kept[j] for j in p] for p in _reference(eff, capacity, mode)]
    assert plan.packs == expected
    assert plan.backend == backend
    if mode == "ordered":
        assert [i for p in plan.packs for i in p] == kept


@needs_cpp
@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 2000), min_size=0, max_size=300),
    capacity=st.sampled_from([1, 2, 63, 64, 65, 100, 1000, 4096]),
    mode=st.sampled_from(MODES),
    overflow=st.sampled_from(["error", "truncate", "drop"]),
)
def test_cpp_equals_twin(lengths, capacity, mode, overflow):
    def run(backend):
        try:
            return pack_arrays(lengths, capacity, mode=mode, overflow=overflow, backend=backend)
        except packing.PackingError as e:
            return str(e)

    a, b = run("cpp"), run("numpy")
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for name in ("docs", "offsets", "truncated", "dropped"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert getattr(a, name).dtype == np.int64
    assert a.efficiency == b.efficiency


@needs_cpp
@pytest.mark.parametrize("mode", MODES)
def test_cpp_tree_path_equals_bucket_path(mode):
    """Capacities above the bucket limit use a balanced tree; force it on a small capacity."""
    rng = np.random.default_rng(1)
    for capacity in (64, 1000, 5000):
        lens = rng.integers(1, capacity + 1, size=3000)
        buckets = _C.pack(lens, capacity, mode)
        tree = _C.pack(lens, capacity, mode, bucket_limit=0)
        assert all(np.array_equal(x, y) for x, y in zip(buckets, tree))


def test_twin_sorted_path_equals_bucket_path(monkeypatch):
    rng = np.random.default_rng(2)
    lens = rng.integers(1, 3001, size=2000)
    expected = pack(lens, 3000, mode="bfd", backend="numpy").packs
    monkeypatch.setattr(packing, "_TWIN_BUCKET_LIMIT", 0)
    assert pack(lens, 3000, mode="bfd", backend="numpy").packs == expected
    assert pack(lens, 3000, mode="bf", backend="numpy").packs == _reference(lens.tolist(), 3000, "bf")


@pytest.mark.parametrize("backend", BACKENDS)
def test_best_fit_not_first_fit_and_ties_to_the_oldest_pack(backend):
    # rooms after two documents: pack 0 has 5, pack 1 has 3; a 3 goes to pack 1 (best fit), not pack 0
    assert pack([5, 7, 3], 10, mode="bf", backend=backend).packs == [[0], [1, 2]]
    # equal rooms (4 and 4): the oldest pack wins, and keeps winning after it shrinks and regrows a tie
    assert pack([6, 6, 3, 1, 1], 10, mode="bf", backend=backend).packs == [[0, 2, 3], [1, 4]]
    # bfd sorts longest first and keeps the given order among equal lengths
    assert pack([2, 9, 2, 9, 1], 10, mode="bfd", backend=backend).packs == [[1, 4], [3], [0, 2]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_long_tailed_lengths_deterministic_and_dense(backend, mode):
    rng = np.random.default_rng(3)
    lens = np.clip(np.round(rng.lognormal(np.log(3000), 0.8, 20_000)), 64, 32768).astype(np.int64)
    a = pack_arrays(lens, 32768, mode=mode, backend=backend)
    b = pack_arrays(lens.tolist(), 32768, mode=mode, backend=backend)
    assert np.array_equal(a.docs, b.docs) and np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(np.sort(a.docs), np.arange(lens.size))
    sums = np.add.reduceat(lens[a.docs], a.offsets[:-1])
    assert sums.max() <= 32768
    assert a.efficiency >= {"bfd": 0.99, "bf": 0.98, "ordered": 0.85}[mode]
    plan = a.to_plan()
    assert plan.efficiency == pytest.approx(a.efficiency)
    assert len(plan.packs) == a.num_packs and plan.packs[0] == a.docs[: a.offsets[1]].tolist()


@needs_cpp
def test_cpp_and_twin_agree_on_100k_documents():
    rng = np.random.default_rng(4)
    lens = np.clip(np.round(rng.lognormal(np.log(300), 0.9, 100_000)), 1, 20_000).astype(np.int64)
    for mode in MODES:
        for overflow in ("truncate", "drop"):
            a = pack_arrays(lens, 8192, mode=mode, overflow=overflow, backend="cpp")
            b = pack_arrays(lens, 8192, mode=mode, overflow=overflow, backend="numpy")
            assert np.array_equal(a.docs, b.docs) and np.array_equal(a.offsets, b.offsets), (mode, overflow)


@needs_cpp
def test_cpp_checks_its_input():
    with pytest.raises(ValueError, match="document 1 has length 11; every length must lie in 1..capacity"):
        _C.pack(np.array([3, 11]), 10, "bf")
    with pytest.raises(ValueError, match="mode must be one of"):
        _C.pack(np.array([3]), 10, "first-fit")
    with pytest.raises(ValueError, match="1-D"):
        _C.pack(np.ones((2, 2), dtype=np.int64), 10, "bf")
    docs, offsets = _C.pack(np.zeros(0, dtype=np.int64), 10, "bfd")
    assert docs.size == 0 and offsets.tolist() == [0]


def test_backend_choice_and_errors():
    assert packing.BACKEND == ("cpp" if _C is not None else "numpy")
    assert pack([3, 4], 10).backend == packing.BACKEND
    assert pack([3, 4], 10, backend="numpy").backend == "numpy"
    with pytest.raises(ValueError, match="backend must be one of"):
        pack([3], 10, backend="rust")
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        pack([3], 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        pack([3], 10, mode="ffd")
    if _C is None:
        with pytest.raises(RuntimeError, match="not built"):
            pack([3], 10, backend="cpp")


def test_import_without_the_extension_uses_the_twin_and_says_so_once():
    code = """
import importlib.abc, sys, warnings

class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rdistill._C":
            raise ImportError("blocked for this test")

sys.meta_path.insert(0, NoExtension())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import rdistill
    import rdistill.data.packing as packing
    plan = packing.pack([5, 3, 8, 2, 7, 1], 10)
    packing.pack([1, 2], 10)
print(packing.BACKEND, plan.backend, plan.packs, len([w for w in caught if "numpy twin" in str(w.message)]))
"""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split(maxsplit=2)[:2] == ["numpy", "numpy"]
    assert out.stdout.strip().endswith("[[2, 3], [4, 1], [0, 5]] 1"), out.stdout + out.stderr


def test_extension_is_built_in_ci():
    """CI installs with a C++ compiler present, so a missing extension there is a build failure, not a
    reason to fall back silently."""
    if not os.environ.get("CI"):
        pytest.skip("only checked in CI (CI is not set)")
    assert _C is not None, _NO_CPP


def test_data_stats_cli(tmp_path):
    from rdistill.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["data", "stats", "--train-size", "60", "--eval-size", "8"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for text in ("document lengths", "ift", "reasoning", "p99", "efficiency", "bfd", f"backend: {packing.BACKEND}"):
        assert text in res.output
    rows = [
        {"prompt": "add 2 and 3", "ift": "\\boxed{5}", "reasoning": "<think>2 plus 3 is 5</think> \\boxed{5}"},
        {"prompt": "add 1 and 1", "ift": "\\boxed{2}", "reasoning": "<think>1 plus 1 is 2</think> \\boxed{2}"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"q": r.pop("prompt"), **r}) + "\n" for r in rows))
    res = runner.invoke(app, ["data", "stats", "--data", str(path), "--columns", "prompt=q", "--pack-tokens", "64"])
    assert res.exit_code == 0, res.output
    assert "loaded 2 rows" in res.output and "rows of 64 tokens" in res.output
    res = runner.invoke(app, ["data", "stats", "--data", str(path), "--columns", "prompt=q", "--pack-tokens", "8"])
    assert res.exit_code == 2 and "longer than the pack capacity of 8 tokens" in res.output
