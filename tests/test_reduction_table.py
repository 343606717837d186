"""Issue 19: one reduction vocabulary, one reduction -> count rule (MaskedTotals.count), aggregate on it."""

from __future__ import annotations

import math
import typing
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss import accumulation, reductions
from maskloss._checks import REDUCTION_NAMES
from maskloss.posttraining import AGGREGATIONS
from maskloss.sharding import SHARD_MODES
from maskloss.testing import oracles


def test_the_names_have_one_definition():
    assert typing.get_args(maskloss.Reduction) == maskloss.REDUCTIONS == REDUCTION_NAMES
    assert maskloss.SCALAR_REDUCTIONS == tuple(r for r in maskloss.REDUCTIONS if r != "none")
    assert tuple(reductions.COUNT_OF) == maskloss.SCALAR_REDUCTIONS
    assert accumulation.COUNT_OF is reductions.COUNT_OF  # the old home still answers, with the same table
    assert set(AGGREGATIONS) <= set(reductions.SCALAR_MODES) == set(SHARD_MODES)
    assert set(AGGREGATIONS) - set(maskloss.SCALAR_REDUCTIONS) == set(reductions.GIVEN_COUNTS)


def _loop_counts(den, steps):
    """The count of every reduction, by loops over the per-sequence denominators (the table's definitions)."""
    return {
        "sum": 1.0,
        "token_mean": float(sum(den)),
        "sequence_mean": float(sum(1 for d in den if d > 0)),
        "batch_mean": float(len(den)),
        "element_mean": float(sum(steps)),
    }


weights = st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=24)


@given(weights, st.integers(1, 4))
def test_count_is_the_table(w, per_sequence):
    w = w[: len(w) - len(w) % per_sequence] or [0.0] * per_sequence
    den = np.array(w).reshape(-1, per_sequence)
    totals = maskloss.MaskedTotals.from_terms(np.zeros_like(den), den)
    want = _loop_counts(den.sum(axis=1).tolist(), [per_sequence] * den.shape[0])
    for r in maskloss.SCALAR_REDUCTIONS:
        assert totals.count(r) == want[r]
        assert oracles.denominator(totals, r) == want[r]  # the checker's micro-batch rule asks the same table
    counts = maskloss.GlobalCounts.from_totals(totals)
    for r in maskloss.SCALAR_REDUCTIONS:
        if want[r]:  # GlobalCounts refuses a zero count (nothing to average)
            assert counts.denominator(r) == want[r]


def test_value_with_a_given_count():
    totals = maskloss.MaskedTotals.from_terms(np.array([[1.0, 2.0], [4.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]]))
    assert totals.value("constant", count=8.0) == 7.0 / 8.0
    assert totals.value("global_token_mean", count=14.0) == 0.5
    assert totals.value("token_mean", count=7.0) == 1.0  # a global count replaces the batch's own
    with pytest.raises(TypeError, match="constant="):
        totals.value("constant")
    with pytest.raises(ValueError, match="reduction must be one of"):
        totals.value("mean")  # type: ignore[arg-type]


def test_reduce_weight_keyword_is_sample_weight_with_a_deprecation_warning():
    losses, mask, w = np.array([[1.0, 2.0, np.nan]]), np.array([[True, True, False]]), np.array([[3.0, 1.0, 9.0]])
    new = maskloss.reduce(losses, mask, sample_weight=w)
    with pytest.warns(DeprecationWarning, match=r"reduce\(weight=\) is deprecated; use reduce\(sample_weight=\)"):
        old = maskloss.reduce(losses, mask, weight=w)
    assert old == new == 5.0 / 4.0  # (3 * 1 + 1 * 2) / (3 + 1)
    with pytest.raises(TypeError, match=r"both weight= .* and sample_weight="):
        maskloss.reduce(losses, mask, weight=w, sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maskloss.reduce(losses, mask, sample_weight=w)  # the new keyword does not warn


def _loop_aggregate(loss, mask, w, mode, count=None):
    """aggregate by loops: weighted sums per sequence, divided by the mode's count."""
    sums, dens = [], []
    for b in range(mask.shape[0]):
        s = d = 0.0
        for t in range(mask.shape[1]):
            if mask[b, t]:
                s += w[b, t] * float(loss[b, t])
                d += w[b, t]
        sums.append(s)
        dens.append(d)
    if mode == "sum":
        return sum(sums)
    if mode == "token_mean":
        return sum(sums) / sum(dens) if sum(dens) else math.nan
    if mode == "sequence_mean":
        per = [s / d for s, d in zip(sums, dens, strict=True) if d > 0]
        return sum(per) / len(per) if per else math.nan
    if mode == "batch_mean":
        return sum(sums) / len(sums)
    return sum(sums) / count


@given(st.integers(0, 2**32 - 1), st.sampled_from(AGGREGATIONS), st.booleans())
def test_aggregate_sample_weight_matches_loop_oracle(seed, mode, per_sequence):
    rng = np.random.default_rng(seed)
    b, t = rng.integers(1, 4), rng.integers(1, 6)
    loss = rng.normal(size=(b, t))
    mask = rng.random((b, t)) < 0.7
    loss[~mask] = np.nan
    w = rng.choice([0.0, 0.5, 1.0, 2.0], size=(b,) if per_sequence else (b, t))
    full = np.broadcast_to(w.reshape(b, -1), (b, t))
    count = None
    if mode == "constant":
        count = 17.0
    elif mode == "global_token_mean":
        count = float(np.where(mask, full, 0.0).sum()) + 3.0
    kwargs = {"constant": count} if mode == "constant" else {"global_count": count} if count is not None else {}
    got = float(maskloss.aggregate(loss, mask, mode=mode, sample_weight=w, **kwargs))
    want = _loop_aggregate(loss, mask, full, mode, count)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-14, nan_ok=True)


def test_aggregate_without_weights_is_reduce():
    loss = np.array([[1.0, 2.0, np.nan], [4.0, np.nan, np.nan]])
    mask = ~np.isnan(loss)
    for mode in maskloss.SCALAR_REDUCTIONS:
        if mode in AGGREGATIONS:
            assert maskloss.aggregate(loss, mask, mode=mode) == maskloss.reduce(loss, mask, reduction=mode)
    with pytest.raises(ValueError, match="mode must be one of"):
        maskloss.aggregate(loss, mask, mode="element_mean")  # type: ignore[arg-type]
