"""Mask builders: Keras semantics, round trips, padding side, repadding."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from tests.cases import masks

lengths_and_maxlen = st.integers(0, 6).flatmap(
    lambda t: st.tuples(st.lists(st.integers(0, t), min_size=0, max_size=5), st.just(t))
)


@given(lengths_and_maxlen, st.sampled_from(["right", "left"]))
def test_lengths_round_trip_through_the_mask(lm, side):
    lengths, maxlen = lm
    mask = maskloss.mask_from_lengths(np.array(lengths, dtype=int), maxlen, side=side)
    assert mask.shape == (len(lengths), maxlen)
    np.testing.assert_array_equal(maskloss.lengths_from_mask(mask), lengths)
    found = maskloss.padding_side(mask)
    assert found in (side, "none")
    if found == "none":  # every row full or empty: both sides give the same mask
        other = "left" if side == "right" else "right"
        np.testing.assert_array_equal(maskloss.mask_from_lengths(lengths, maxlen, side=other), mask)
    # Loop oracle, step by step.
    for b, n in enumerate(lengths):
        for t in range(maxlen):
            assert mask[b, t] == ((t < n) if side == "right" else (t >= maxlen - n))


def test_maxlen_defaults_to_the_longest_sequence():
    assert maskloss.mask_from_lengths([2, 4]).shape == (2, 4)
    assert maskloss.mask_from_lengths(np.zeros(0, int)).shape == (0, 0)


def test_masking_semantics_follow_keras():
    x = np.array([[[0.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    np.testing.assert_array_equal(maskloss.mask_from_padding(x, 0.0), [[False, True, True]])
    np.testing.assert_array_equal(maskloss.mask_from_padding(x, -1.0), [[True, True, False]])
    # Masking(nan) masks nothing, because nan != nan (docs/course/01-padding-and-masks.md).
    np.testing.assert_array_equal(maskloss.mask_from_padding(np.full((1, 2, 2), np.nan), np.nan), [[True, True]])


def test_ids_and_sentinels():
    np.testing.assert_array_equal(maskloss.mask_from_ids([[3, 0, 0]], 0), [[True, False, False]])
    y = np.eye(3)[[[2, 0, 2]]]
    np.testing.assert_array_equal(maskloss.mask_from_sentinel(y, [0, 0, 1]), [[False, True, False]])
    # A soft target that is not exactly the sentinel is valid.
    np.testing.assert_array_equal(maskloss.mask_from_sentinel([[[0, 0.1, 0.9]]], [0, 0, 1]), [[True]])


def test_padding_side_spots_mixed_and_holes():
    assert maskloss.padding_side([[1, 1, 0], [0, 1, 1]]) == "mixed"
    assert maskloss.padding_side([[1, 0, 1]]) == "mixed"
    assert maskloss.padding_side([[1, 1], [0, 0]]) == "none"
    assert maskloss.padding_side(np.zeros((0, 3))) == "none"


@given(st.integers(1, 4).flatmap(lambda b: st.integers(1, 5).flatmap(lambda t: masks(b, t))),
       st.sampled_from(["right", "left"]))
def test_repad_keeps_each_sequence_in_order(mask, side):
    b, t = mask.shape
    x = np.arange(b * t * 2, dtype=float).reshape(b, t, 2)
    moved, new_mask = maskloss.repad(x, mask, side=side, fill=-1.0)
    assert maskloss.padding_side(new_mask) in (side, "none")
    np.testing.assert_array_equal(new_mask.sum(axis=1), mask.sum(axis=1))
    for row in range(b):
        np.testing.assert_array_equal(moved[row][new_mask[row]], x[row][mask[row]])
        assert np.all(moved[row][~new_mask[row]] == -1.0)
