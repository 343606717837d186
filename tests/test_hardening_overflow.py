"""Issue 25 hardening: means of huge but representable values do not overflow.

Each test fails without the fix: the sums behind a mean overflowed to inf although the mean
itself is a float64 (``mae`` with errors of 1e308 gave inf; so did ``reduce``, ``aggregate``
and the pooling layer), and the power-of-two weight scale took the largest *signed* weight,
so a tiny positive advantage next to a huge negative one overflowed. The oracle is exact
rational arithmetic (:class:`fractions.Fraction`) over the valid steps, written from the
formulas; ordinary inputs keep their bits (tests/test_sweep_issue19.py).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import maskloss
from maskloss.layers import GlobalAveragePooling1D
from maskloss.pointwise import overflow_free_mean
from maskloss.reductions import overflow_free

HUGE = np.finfo(np.float64).max


def _float(x: Fraction) -> float:
    """``float(x)``, or a signed inf where it is beyond float64 (as IEEE rounding gives)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _exact_means(values: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """token/sequence/batch/element means of (B, T) values over the valid steps, exactly."""
    rows = [[Fraction(float(v)) for v, m in zip(r, mr, strict=True) if m] for r, mr in zip(values, mask, strict=True)]
    total = sum((sum(r, Fraction(0)) for r in rows), Fraction(0))
    tokens = sum(len(r) for r in rows)
    nonempty = [sum(r, Fraction(0)) / len(r) for r in rows if r]
    out = {"batch_mean": _float(total / len(rows)), "element_mean": _float(total / values.size)}
    out["token_mean"] = _float(total / tokens) if tokens else math.nan
    out["sequence_mean"] = _float(sum(nonempty, Fraction(0)) / len(nonempty)) if nonempty else math.nan
    return out


huge = st.floats(min_value=1e300, max_value=HUGE)
huge_values = huge | huge.map(lambda x: -x) | st.floats(min_value=-1e3, max_value=1e3)


@given(
    values=st.lists(st.lists(huge_values, min_size=3, max_size=3), min_size=1, max_size=3),
    mask_bits=st.integers(min_value=0, max_value=2**9 - 1),
)
def test_reduce_of_huge_values_is_the_exact_mean(values: list[list[float]], mask_bits: int) -> None:
    v = np.array(values)
    mask = ((mask_bits >> np.arange(v.size)) & 1).astype(bool).reshape(v.shape)
    want = _exact_means(v, mask)
    for reduction, expected in want.items():
        got = float(maskloss.reduce(np.where(mask, v, np.nan), mask, reduction=reduction))
        if math.isinf(expected) or math.isnan(expected):
            assert got == expected or (math.isnan(got) and math.isnan(expected)), reduction
        else:
            # Float sums round relative to the largest term, not to a result that cancels.
            scale = float(np.max(np.abs(np.where(mask, v, 0.0))))
            assert got == pytest.approx(expected, rel=1e-14, abs=1e-15 * scale), (reduction, got, expected)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean", "batch_mean", "element_mean"])
def test_mae_and_mse_of_huge_errors(reduction: str) -> None:
    # Errors of 1e308 on 2 x 3 steps of 1 feature, and on 2 steps of 3 features (the feature mean);
    # batch_mean divides the sum by B only, so its batch has one step per sequence.
    y = np.full((2, 1, 1) if reduction == "batch_mean" else (2, 3, 1), 1e308)
    assert float(maskloss.mae(y, np.zeros_like(y), reduction=reduction)) == pytest.approx(1e308, rel=1e-15)
    flat = np.full((2, 3), 1e308)
    if reduction != "batch_mean":
        assert float(maskloss.mae(flat, np.zeros((2, 3)), reduction=reduction)) == pytest.approx(1e308, rel=1e-15)
    # (1.2e154)^2 = 1.44e308: representable; the sum of six is not.
    y2 = np.full(y.shape[:2], 1.2e154)
    assert float(maskloss.mse(y2, np.zeros_like(y2), reduction=reduction)) == pytest.approx(1.44e308, rel=1e-15)
    value, _ = maskloss.value_and_grad(maskloss.mae)(y, np.zeros_like(y), reduction=reduction)
    assert value == maskloss.mae(y, np.zeros_like(y), reduction=reduction)


def test_a_sum_that_does_not_fit_is_still_inf() -> None:
    assert maskloss.reduce(np.full((2, 3), 1e308), reduction="sum") == np.inf
    assert maskloss.reduce(np.array([[1e308, 1e308, -1e308, -1e308]]), reduction="sum") == 0.0
    # A non-finite value at a valid step is what it is: no rescaling hides it.
    assert np.isnan(maskloss.reduce(np.array([[np.inf, -np.inf]])))


@pytest.mark.parametrize(
    ("mode", "kwargs", "divisor"),
    [("token_mean", {}, 6), ("sequence_mean", {}, 6), ("batch_mean", {}, 3), ("constant", {"constant": 8}, 8),
     ("global_token_mean", {"global_count": 12}, 12)],
)
def test_aggregate_of_huge_losses(mode: str, kwargs: dict[str, float], divisor: int) -> None:
    loss = np.full((3, 1) if mode == "batch_mean" else (2, 3), 1.5e308)
    want = float(Fraction(1.5e308) * loss.size / divisor) if mode != "sequence_mean" else 1.5e308
    assert float(maskloss.aggregate(loss, mode=mode, **kwargs)) == pytest.approx(want, rel=1e-15)


def test_pooling_of_huge_features() -> None:
    x = np.array([[[1.5e308, 1.0], [1.5e308, 3.0], [np.nan, np.nan]]])
    mask = np.array([[True, True, False]])
    got = GlobalAveragePooling1D()(x, mask=mask)
    assert got.tolist() == [[1.5e308, 2.0]]
    assert GlobalAveragePooling1D()(x[:, :2]).tolist() == [[1.5e308, 2.0]]
    # An empty sequence is still 0/0.
    assert np.isnan(GlobalAveragePooling1D()(x, mask=np.zeros((1, 3), bool))).all()


def test_helpers_keep_ordinary_bits() -> None:
    rng = np.random.default_rng(25)
    terms = rng.normal(size=(4, 7)) * 1e3
    assert overflow_free_mean(terms, -1, 7).tobytes() == (np.add.reduce(terms, axis=-1) / 7).tobytes()
    totals = maskloss.MaskedTotals.from_terms(terms, np.ones_like(terms))
    ones = np.ones_like(terms)
    value = overflow_free(lambda n: maskloss.MaskedTotals.from_terms(n, ones).value("token_mean"), terms)
    assert value == totals.value("token_mean")


def test_policy_objective_tiny_positive_and_huge_negative_advantage() -> None:
    # The weight scale took the largest signed weight (5e-324): 2^1073 times -1e300 overflowed.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1, 4))
    labels = np.array([[1], [2]])
    weight = np.array([5e-324, -1e300])
    logp = maskloss.token_logprobs(labels, logits)
    want = float(Fraction(5e-324) * Fraction(float(logp[0, 0])) + Fraction(-1e300) * Fraction(float(logp[1, 0])))
    got = maskloss.policy_gradient_objective(labels, logits, weight)
    assert float(got) == pytest.approx(want, rel=1e-15)
    value, grad = maskloss.value_and_grad(maskloss.policy_gradient_objective)(labels, logits, weight)
    assert value == got and np.isfinite(grad).all()


@given(
    weights=st.lists(
        st.floats(min_value=-1e300, max_value=1e300, allow_subnormal=True) | st.sampled_from([5e-324, -5e-324, 0.0]),
        min_size=3, max_size=3,
    ),
    seed=st.integers(0, 2**16),
)
def test_policy_objective_value_and_grad_value_is_the_function(weights: list[float], seed: int) -> None:
    # The value of value_and_grad is exactly fn(...) (it once took the log of the total, not log1p).
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 2, 5)) * 4
    labels = rng.integers(0, 5, size=(3, 2))
    mask = np.array([[True, True], [True, False], [False, False]])
    fn = maskloss.policy_gradient_objective
    value, _ = maskloss.value_and_grad(fn)(labels, logits, weights, mask)
    want = fn(labels, logits, weights, mask)
    assert value.tobytes() == want.tobytes()
