"""Issue 25 hardening: strategy bounds are validated when the strategy is made, for the true reason.

Each case failed before its fix: ``lengths(max_length=2**64)`` and huge batches or shapes were
accepted and failed only at draw time (an int64 overflow, or arrays too large to build);
``max_magnitude=np.float32(2)`` was refused as "must be a number in (0, 1e4)";
``padded_batches("sparse", ignore_index=0)`` drew valid labels equal to the ignore index, so
the mask and the labels disagreed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.errors import InvalidArgument

import maskloss.strategies as ms


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (ms.lengths, {"max_length": 2**64}, r"max_length=18446744073709551616 must be <= 9223372036854775807"),
        (ms.lengths, {"max_batch": 10**9}, r"max_batch=1000000000 must be <= 1024"),
        (ms.masks, {"shape": (10**6, 10**6)}, r"shape\[0\]=1000000 must be <= 1024"),
        (ms.masks, {"max_steps": 2**40}, r"max_steps=1099511627776 must be <= 1024"),
        (ms.padded_batches, {"max_batch": 100, "max_steps": 100, "max_features": 1000},
         r"max_batch=100 x max_steps=100 x max_features=1000 allows arrays of 10000000 elements"),
        (ms.padded_batches, {"kind": "sparse", "ignore_index": 2**63}, r"ignore_index=9223372036854775808 must be <="),
    ],
)
def test_bounds_that_would_fail_at_draw_time_are_refused_eagerly(make: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        make(**kwargs)


@pytest.mark.parametrize("magnitude", [np.float32(2), np.float64(2), np.int64(3), 2, 2.5])
def test_numpy_magnitudes_are_accepted(magnitude: Any) -> None:
    @settings(max_examples=10)
    @given(ms.padded_batches(max_magnitude=magnitude))
    def draws(batch: ms.PaddedBatch) -> None:
        assert np.all(np.abs(batch.y_pred) <= float(magnitude))

    draws()


@pytest.mark.parametrize("magnitude", [np.bool_(True), True, np.float32(np.nan), 0, 1e5, "2"])
def test_bad_magnitudes_are_still_refused(magnitude: Any) -> None:
    with pytest.raises(InvalidArgument, match="max_magnitude"):
        ms.padded_batches(max_magnitude=magnitude)


def test_a_huge_length_bound_draws_int64_lengths() -> None:
    @settings(max_examples=20)
    @given(ms.lengths(min_length=2**62, max_length=2**63 - 1))
    def draws(lens: np.ndarray) -> None:
        assert lens.dtype == np.int64 and (lens >= 2**62).all()

    draws()


@pytest.mark.parametrize("ignore_index", [0, 1, 4, -100])
def test_sparse_valid_labels_are_never_the_ignore_index(ignore_index: int) -> None:
    @settings(max_examples=60)
    @given(ms.padded_batches("sparse", ignore_index=ignore_index, adversarial=True, min_features=2, max_features=5))
    def draws(batch: ms.PaddedBatch) -> None:
        assert np.array_equal(batch.y_true != ignore_index, batch.mask)

    draws()
