"""The shared top-k kernel: exact counts and the documented tie-break order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dstbench.core.selection import ranked_indices, topk_mask, topk_per_row


def test_ties_prefer_then_lower_index() -> None:
    scores = torch.tensor([1.0, 2.0, 1.0, 1.0, 0.5])
    prefer = torch.tensor([False, False, False, True, False])
    assert ranked_indices(scores).tolist() == [1, 0, 2, 3, 4]
    assert ranked_indices(scores, prefer).tolist() == [1, 3, 0, 2, 4]
    assert topk_mask(scores, 2, prefer=prefer).tolist() == [False, True, False, True, False]


def test_eligible_restricts_and_counts_are_checked() -> None:
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0])
    eligible = torch.tensor([False, True, False, True])
    assert topk_mask(scores, 1, eligible=eligible).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="only 2 are eligible"):
        topk_mask(scores, 3, eligible=eligible)
    with pytest.raises(ValueError):
        topk_mask(scores, 5)


def test_nan_scores_rank_last() -> None:
    scores = torch.tensor([float("nan"), 0.0, -1.0])
    assert topk_mask(scores, 2).tolist() == [False, True, True]


def test_eligible_entries_with_minus_inf_beat_ineligible_preferred() -> None:
    scores = torch.tensor([float("-inf"), 3.0, float("-inf")])
    eligible = torch.tensor([True, False, False])
    prefer = torch.tensor([False, False, True])
    assert topk_mask(scores, 1, eligible=eligible, prefer=prefer).tolist() == [True, False, False]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    data=st.data(),
)
def test_topk_is_exact_and_optimal(n: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))  # many ties
    k = data.draw(st.integers(0, n))
    scores = torch.tensor(values, dtype=torch.float32)
    mask = topk_mask(scores, k)
    assert int(mask.sum()) == k
    if 0 < k < n:
        assert scores[mask].min() >= scores[~mask].max()
    # Deterministic and independent of the device-side sort's whims: same call, same answer.
    assert torch.equal(mask, topk_mask(scores.clone(), k))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 12),
    data=st.data(),
)
def test_topk_per_row_equals_topk_mask_row_by_row(rows: int, cols: int, data: st.DataObject) -> None:
    values = st.sampled_from([0.0, 0.5, 1.0, -1.0, float("nan")])  # ties and NaN on purpose
    grid = st.lists(st.lists(values, min_size=cols, max_size=cols), min_size=rows, max_size=rows)
    scores = torch.tensor(data.draw(grid))
    flags = st.lists(st.lists(st.booleans(), min_size=cols, max_size=cols), min_size=rows, max_size=rows)
    eligible = torch.tensor(data.draw(flags))
    prefer = torch.tensor(data.draw(flags))
    counts = torch.tensor([data.draw(st.integers(0, int(eligible[i].sum()))) for i in range(rows)])
    got = topk_per_row(scores, counts, eligible=eligible, prefer=prefer)
    for i in range(rows):
        assert torch.equal(got[i], topk_mask(scores[i], int(counts[i]), eligible=eligible[i], prefer=prefer[i]))
    plain = topk_per_row(scores, counts.clamp(max=cols))
    for i in range(rows):
        assert torch.equal(plain[i], topk_mask(scores[i], int(counts[i].clamp(max=cols))))
    with pytest.raises(ValueError):
        topk_per_row(scores, torch.full((rows,), cols + 1))
