"""Issue 25, campaign 3: attacks on the surfaces of rounds 1 and 2 and on the new ones.

Each parametrised case is one attack, with a one-line comment saying what it attacks. The
findings this campaign fixed are pinned here too (each fails without its fix):

- ``maskloss.dask`` means of huge but representable values overflowed (``mae`` of errors of
  ``1e308`` was inf under every mean; weights of ``1e300`` times losses of ``1e308`` too): the
  Dask path now keeps its sums also as (mantissa, exponent) pairs, read only where a plain sum
  is not finite (``test_dask_means_of_huge_values_match_in_memory``).
- ``reduction="sum"``/``"batch_mean"`` with weights beyond float64's range warned "overflow
  encountered in ldexp" when undoing the power-of-two weight scale (the value, inf, is right).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import maskloss

SCALARS = ("sum", "token_mean", "sequence_mean", "batch_mean", "element_mean")


def _same(value: Any, expected: Any, rtol: float = 1e-12) -> bool:
    v, e = float(value), float(expected)
    if np.isnan(e) or np.isinf(e):
        return bool(np.isnan(v)) if np.isnan(e) else v == e
    return abs(v - e) <= rtol * abs(e)


# ---------------------------------------------------------------------------------------------
# 1. maskloss.dask: means of huge but representable values
# ---------------------------------------------------------------------------------------------

_HUGE_CASES = [
    # mae of errors near the float64 maximum: every per-sequence sum overflows
    ("errors_1e308", lambda rng: (rng.uniform(0.5, 1, (4, 6, 2)) * 1e308, None)),
    # weights of 1e300 times errors of 1e308: each term w * l is beyond float64, the mean is not
    ("weights_1e300", lambda rng: (rng.uniform(0.5, 1, (4, 6, 2)) * 1e308,
                                   rng.uniform(0.5, 1.5, (4, 6)) * 1e300)),
    # a per-sequence weight of 1e308 (the (B,) form): the denominators overflow as well
    ("sequence_weights_1e308", lambda rng: (rng.uniform(0, 1, (4, 6, 2)), np.full(4, 1e308))),
    # huge values in one sequence only, ordinary ones elsewhere: one block path scaled, one plain
    ("one_huge_sequence", lambda rng: (np.concatenate([np.full((1, 6, 2), 1.7e308),
                                                        rng.uniform(0, 1, (3, 6, 2))]), None)),
]


@pytest.mark.parametrize("case", [c[1] for c in _HUGE_CASES], ids=[c[0] for c in _HUGE_CASES])
@pytest.mark.parametrize("chunks", [(4, 6), (2, 3), (1, 1)], ids=["one_block", "2x2_blocks", "every_step"])
def test_dask_means_of_huge_values_match_in_memory(case: Any, chunks: tuple[int, int]) -> None:
    # Before the fix every mean of the first three cases was inf on Dask (finite in memory).
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    rng = np.random.default_rng(25)
    pred, weight = case(rng)
    target = np.zeros_like(pred)
    mask = maskloss.mask_from_lengths([6, 3, 0, 1], 6)
    options: dict[str, Any] = {}
    lazy_options: dict[str, Any] = {}
    if weight is not None:
        options["sample_weight"] = weight
        lazy_options["sample_weight"] = da.from_array(weight, chunks=chunks) if weight.ndim == 2 else weight
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on either path
        for reduction in SCALARS:
            expected = maskloss.mae(target, pred, mask, reduction=reduction, **options)
            lazy = mdask.evaluate(maskloss.mae, da.from_array(target, chunks=chunks + (2,)),
                                  da.from_array(pred, chunks=chunks + (2,)), da.from_array(mask, chunks=chunks),
                                  reduction=reduction, **lazy_options)
            value = lazy.compute(scheduler="threads")
            assert _same(value, expected), (reduction, value, expected)
            if reduction in ("token_mean", "sequence_mean"):  # weighted means of values below 2**1024
                assert np.isfinite(expected)


def test_dask_ordinary_sums_are_unchanged_and_the_pairs_agree() -> None:
    # The pairs are only read where a plain sum is not finite: for ordinary inputs the plain
    # seven sums give the value (the same bits as before), and the pairs hold the same sums.
    da = pytest.importorskip("dask.array")
    from maskloss import dask as mdask

    rng = np.random.default_rng(3)
    labels, logits = rng.integers(0, 5, (4, 6)), rng.normal(size=(4, 6, 5))
    stats = mdask.summary_stats(maskloss.sparse_categorical_crossentropy, da.from_array(labels, chunks=(2, 3)),
                                da.from_array(logits, chunks=(2, 3, 5)), from_logits=True).compute(scheduler="sync")
    assert stats.shape == (13,)
    summary = mdask.Summary.from_stats(stats)
    plain = mdask.Summary.from_stats(stats[:7])  # the seven sums alone: the old values
    assert summary.scaled is not None and plain.scaled is None
    for reduction in SCALARS:
        assert summary.value(reduction) == plain.value(reduction)
    for (m, e), total in zip(summary.scaled, (summary.numerator, summary.denominator, summary.sequence_ratios),
                             strict=True):
        assert 0.5 <= abs(m) < 1 and abs(np.ldexp(m, int(e)) - total) <= 1e-14 * abs(total)
    with pytest.raises(ValueError, match=r"stats must hold 13 sums \(or the first 7\), got shape \(8,\)"):
        mdask.Summary.from_stats(np.zeros(8))


def test_huge_weights_sum_is_inf_without_a_warning() -> None:
    # unscale's ldexp warned "overflow encountered in ldexp" for a sum beyond float64 (inf is right).
    weight = np.full((2, 3), 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("sum", "batch_mean"):
            assert maskloss.mae(np.zeros((2, 3, 1)), np.full((2, 3, 1), 10.0), reduction=reduction,
                                sample_weight=weight) == np.inf
