"""masked_totals: micro-batches and shards recombine into the exact full-batch loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from tests.cases import Case, assert_matches, cases


def _split(case: Case, lo: int, hi: int) -> Case:
    options = dict(case.options)
    if "sample_weight" in options:
        options["sample_weight"] = np.asarray(options["sample_weight"])[lo:hi]
    return Case(case.kind, case.y_true[lo:hi], case.y_pred[lo:hi], case.mask[lo:hi], options)


@given(case=cases(), data=st.data())
def test_totals_of_any_split_merge_into_the_full_batch_value(case, data):
    batch = case.mask.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(0, batch), max_size=3)))
    bounds = [0, *cuts, batch]
    totals = maskloss.masked_totals(case.function)
    parts = [
        totals(p.y_true, p.y_pred, p.mask, **p.options)
        for p in (_split(case, lo, hi) for lo, hi in itertools.pairwise(bounds))
    ]
    merged = maskloss.MaskedTotals.concat(parts)
    for reduction in maskloss.SCALAR_REDUCTIONS:
        assert_matches(merged.value(reduction), case.run(reduction), rtol=1e-12)


def test_mean_of_micro_batch_means_is_not_the_full_batch_mean():
    # docs/course/07-frameworks.md: micro-batches with 5 and 1 targets; the mean of means weighs the single
    # token like the five. Here with MAE: losses 1 (x5) and 4 (x1).
    y_true = np.zeros((2, 5, 1))
    y_pred = np.array([[[1.0]] * 5, [[4.0]] + [[np.nan]] * 4])
    mask = maskloss.mask_from_lengths([5, 1], 5)
    totals = maskloss.masked_totals(maskloss.mae)
    parts = [totals(y_true[i : i + 1], y_pred[i : i + 1], mask[i : i + 1]) for i in (0, 1)]
    assert np.mean([p.value("token_mean") for p in parts]) == pytest.approx(2.5)  # (1 + 4) / 2: wrong
    assert maskloss.MaskedTotals.concat(parts).value("token_mean") == pytest.approx(9 / 6)  # (5 + 4) / 6


def test_masked_totals_rejects_a_non_loss():
    with pytest.raises(TypeError, match="masked_totals"):
        maskloss.masked_totals(np.mean)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
@pytest.mark.parametrize("reduction", maskloss.SCALAR_REDUCTIONS)
def test_gradient_of_an_empty_batch_is_an_empty_array(shape, reduction):
    value, grad = maskloss.value_and_grad(maskloss.mae)(np.zeros((*shape, 1)), np.zeros((*shape, 1)),
                                                        reduction=reduction)
    assert grad.shape == (*shape, 1)
    assert_matches(value, maskloss.mae(np.zeros((*shape, 1)), np.zeros((*shape, 1)), reduction=reduction))
