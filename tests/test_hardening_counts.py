"""Issue 25 hardening: impossible or wrongly typed counts and totals are refused, naming the field.

Each case was accepted before (and gave a wrong value, or a bare NumPy error later):
``GlobalCounts`` took more non-empty sequences than sequences, tokens without sequences,
strings, booleans and 1-element arrays (``float(np.array([3]))``); ``MaskedTotals`` took lists,
mismatched or 2-D shapes, fractional or negative step counts, NaN denominators, and averaged
over negative denominators.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import maskloss
from maskloss import GlobalCounts, MaskedTotals

GOOD = {"tokens": 4.0, "nonempty_sequences": 2, "sequences": 3, "steps": 9}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"nonempty_sequences": 4}, ValueError, "more non-empty sequences than sequences"),
        ({"nonempty_sequences": 0}, ValueError, "tokens without non-empty sequences"),
        ({"tokens": 0.0}, ValueError, "non-empty sequences without tokens"),
        ({"steps": 1}, ValueError, "more non-empty sequences than steps"),
        ({"sequences": 2.5}, ValueError, "sequences counts sequences or steps, a whole number; got 2.5"),
        ({"steps": 9.5}, ValueError, "steps counts .* whole number"),
        ({"tokens": -1.0}, ValueError, "tokens must be finite and >= 0, got -1.0"),
        ({"tokens": "4"}, TypeError, "tokens must be a number, got '4'"),
        ({"sequences": True}, TypeError, "sequences must be a number, got True"),
        ({"sequences": None}, TypeError, "sequences must be a number, got None"),
        ({"tokens": [4.0]}, TypeError, r"tokens must be one number, got an array of shape \(1,\)"),
        ({"tokens": np.array([4.0])}, TypeError, r"tokens must be one number, got an array of shape \(1,\)"),
        ({"steps": np.ones((1, 1)) * 9}, TypeError, r"steps must be one number, got an array of shape \(1, 1\)"),
        ({"tokens": {"a": 1}}, TypeError, "tokens must be a number"),
    ],
)
def test_impossible_or_wrongly_typed_counts_are_refused(change: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        GlobalCounts(**{**GOOD, **change})


def test_possible_counts_are_accepted_whatever_their_number_type() -> None:
    want = GlobalCounts(**GOOD)
    assert GlobalCounts(np.float32(4), np.int64(2), np.array(3), 9.0) == want
    assert GlobalCounts(0, 0, 0, 0) == GlobalCounts.total([])
    assert GlobalCounts(0, 0, 2, 0).sequences == 2.0  # two empty sequences of no steps
    torch = pytest.importorskip("torch")
    assert GlobalCounts(torch.tensor(4.0), 2, 3, 9) == want


def test_counts_from_the_all_reduce_are_checked_too() -> None:
    with pytest.raises(ValueError, match="more non-empty sequences than sequences"):
        GlobalCounts.from_array([4.0, 3.0, 2.0, 9.0])


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        (([1.0], np.ones(1), np.ones(1)), TypeError, "numerator must be a numpy array of shape .B,., got list"),
        ((np.ones(2), np.ones(3), np.ones(2)), ValueError, r"got denominator of shape \(3,\), numerator \(2,\)"),
        ((np.ones((2, 1)), np.ones(2), np.ones(2)), ValueError, r"got numerator of shape \(2, 1\)"),
        ((np.ones(2), np.ones(2), np.array([1.0, 0.5])), ValueError, r"steps\[1\] is 0.5"),
        ((np.ones(2), np.ones(2), np.array([-1.0, 1.0])), ValueError, r"steps\[0\] is -1.0"),
        ((np.ones(2), np.array([1.0, np.nan]), np.ones(2)), ValueError, r"denominator\[1\] is nan"),
        ((np.ones(2), np.ones(2, complex), np.ones(2)), TypeError, "denominator must hold real numbers"),
    ],
)
def test_impossible_totals_are_refused(fields: tuple[Any, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MaskedTotals(*fields)


def test_negative_denominators_are_refused_where_they_are_divided_by() -> None:
    totals = MaskedTotals(np.array([1.0, 2.0]), np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    assert totals.value("sum") == 3.0  # signed weights (advantages) make a sum
    for reduction in ("token_mean", "sequence_mean"):
        with pytest.raises(ValueError, match=r"denominator\[1\] is -1.0, but .* divides"):
            totals.value(reduction)
    with pytest.raises(ValueError, match=r"denominator\[1\] is -1.0"):
        GlobalCounts.from_totals(totals)


def test_integer_totals_are_read_as_float64() -> None:
    totals = MaskedTotals(np.array([3, 1]), np.array([2, 1]), np.array([4, 4]))
    assert totals.numerator.dtype == np.float64
    assert totals.value("token_mean") == 4 / 3
    assert maskloss.MaskedTotals.concat([totals, totals]).value("sum") == 8.0


def test_whole_number_global_counts_are_compared_exactly() -> None:
    # One rule with aggregate and shard_scales (maskloss.reductions.count_below): a micro-batch of
    # 10**10 + 1 tokens under a global count of 10**10 means the counts were not summed. The old
    # relative 1e-9 let it pass (it allowed up to 10 tokens too few at this size).
    big = 10.0**10 + 1
    totals = maskloss.MaskedTotals(np.array([0.0]), np.array([big]), np.array([big]))
    short = maskloss.GlobalCounts(tokens=big - 1, nonempty_sequences=1, sequences=1, steps=big)
    with pytest.raises(ValueError, match=r"counts.tokens=.* is smaller than this micro-batch's own"):
        short.loss(totals, "token_mean")
    exact = maskloss.GlobalCounts(tokens=big, nonempty_sequences=1, sequences=1, steps=big)
    assert exact.loss(totals, "token_mean") == 0.0


def test_a_weighted_global_count_one_ulp_below_is_accepted() -> None:
    # Ten weights of 0.1: summed left to right 0.9999999999999999, by numpy's pairwise sum 1.0.
    weights = [0.1] * 10
    in_order = 0.0
    for w in weights:
        in_order += w
    totals = maskloss.MaskedTotals(np.array([0.5]), np.array([float(np.sum(weights))]), np.array([10.0]))
    counts = maskloss.GlobalCounts(tokens=in_order, nonempty_sequences=1, sequences=1, steps=10)
    assert in_order < float(np.sum(weights))
    assert counts.loss(totals, "token_mean") == pytest.approx(0.5)
