import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdistill.packing import PackingError, pack


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
