"""Issue 25, round 2 leftovers: each test fails without its fix.

- a hand-built :class:`maskloss.MaskedTotals` of huge but finite terms overflowed in
  ``value`` (the sum of two totals of 1e308 is not a float64, their mean is);
- ``segment_ids_from_lengths([2**40])`` and ``Dense(2**40)`` died with a bare MemoryError;
- ``np.longdouble`` inputs beyond float64's range silently became inf.

Expected values are worked out by hand from the formulas (comments give the arithmetic).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import maskloss
from maskloss.layers import LSTM, Dense, Embedding
from maskloss.reductions import MaskedTotals


def _totals(n: list[float], d: list[float]) -> MaskedTotals:
    return MaskedTotals(np.array(n), np.array(d), np.ones(len(n)))


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("token_mean", 1e308),  # (1e308 + 1e308) / (1 + 1)
        ("sequence_mean", 1e308),  # (1e308/1 + 1e308/1) / 2
        ("batch_mean", 1e308),  # (1e308 + 1e308) / 2 sequences
        ("element_mean", 1e308),  # (1e308 + 1e308) / (1 + 1) steps
    ],
)
def test_masked_totals_of_huge_terms_do_not_overflow(reduction: str, expected: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = float(_totals([1e308, 1e308], [1.0, 1.0]).value(reduction))
    assert got == pytest.approx(expected, rel=1e-15)


def test_masked_totals_merge_of_huge_parts() -> None:
    part = _totals([1.5e308], [1.0])
    merged = MaskedTotals.concat([part, part, part])
    assert float(merged.value("token_mean")) == pytest.approx(1.5e308, rel=1e-15)  # 4.5e308 / 3
    assert float(merged.value("global_token_mean", count=6.0)) == pytest.approx(0.75e308, rel=1e-15)  # 4.5e308 / 6


def test_masked_totals_of_huge_denominators() -> None:
    # (1 + 1) / (1e308 + 1e308) = 1e-308, a normal float64; the plain sum of denominators is inf (0.0 before).
    assert float(_totals([1.0, 1.0], [1e308, 1e308]).value("token_mean")) == pytest.approx(1e-308, rel=1e-15)


def test_masked_totals_sum_beyond_float64_is_inf_quietly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _totals([1e308, 1e308], [1.0, 1.0]).value("sum") == np.inf  # 2e308 is not a float64


def test_masked_totals_ordinary_values_unchanged() -> None:
    t = _totals([1.0, 2.0, 6.0], [1.0, 1.0, 1.0])
    assert t.value("token_mean") == 3.0  # 9 / 3
    assert t.value("sequence_mean") == 3.0  # (1 + 2 + 6) / 3


def test_segment_ids_from_lengths_too_large_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"segment_ids_from_lengths of 1 rows of 1099511627776 steps needs"):
        maskloss.segment_ids_from_lengths([2**40])
    with pytest.raises(ValueError, match=r"more than row_length"):
        maskloss.segment_ids_from_lengths([[3]], 2)


@pytest.mark.parametrize("row_length", [-1, -5])
def test_segment_ids_from_lengths_negative_row_length(row_length: int) -> None:
    # An empty batch with a negative row_length raised numpy's "argmax of an empty sequence".
    with pytest.raises(ValueError, match=r"row_length must be >= 0"):
        maskloss.segment_ids_from_lengths(np.zeros((0, 2), dtype=np.int64), row_length)


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (Dense(2**40), np.ones((1, 1, 2))),
        (LSTM(2**36), np.ones((1, 1, 2))),
        (Embedding(2**40, 4), np.zeros((1, 1))),
    ],
    ids=["dense", "lstm", "embedding"],
)
def test_layer_weights_too_large_are_a_clear_error(layer: object, x: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"needs \d+ bytes .* more than this machine's"):
        layer(x)  # type: ignore[operator]


def test_longdouble_beyond_float64_is_refused() -> None:
    y = np.array([[np.longdouble("1e400")]])
    if not np.isfinite(y).all():  # pragma: no cover - platforms where longdouble is float64
        pytest.skip("np.longdouble is float64 here")
    with pytest.raises(ValueError, match=r"y_true holds .* beyond float64's range"):
        maskloss.mae(y, np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"y_pred holds .* beyond float64's range"):
        maskloss.mae(np.zeros((1, 1)), -y)


def test_longdouble_within_float64_is_accepted() -> None:
    y = np.array([[np.longdouble(3)]])
    assert float(maskloss.mae(y, np.zeros((1, 1)))) == 3.0  # |3 - 0|
