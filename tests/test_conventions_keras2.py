"""Keras 2 legacy conventions: golden numbers, hand-derived cases, loop oracle.

Keras 2 (multi-backend, TF 1.x era) cannot be installed next to TF 2.21, so the framework
side is the golden numbers of transcribed Keras 2.2 and 2.3 runs (listed in
docs/appendix/provenance.md) and the source of ``weighted_masked_objective`` (keras-team/keras
2.2.x, keras/engine/training_utils.py), transcribed step by step in tests/oracles_keras.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maskloss import pointwise
from maskloss.conventions import keras2, tf_keras
from tests import oracles_keras
from tests.cases import masks

# Golden numbers of transcribed Keras 2.2 legacy runs (docs/appendix/provenance.md).
L = np.random.default_rng(0).random((3, 5))
M = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)


def test_golden_masked_mean() -> None:
    assert keras2.masked_objective_value(L, M) == pytest.approx(0.6101289787139047, rel=1e-15, abs=0)


def test_golden_per_sample_weights_are_not_a_weighted_mean() -> None:
    value = keras2.masked_objective_value(L, M, [2.0, 0.0, 0.5])
    assert value == pytest.approx(0.38389510451730086, rel=1e-15, abs=0)
    assert value != pytest.approx(0.35436471186212376)  # the true weighted mean (by hand)


def test_golden_temporal_weights_equal_to_mask_normalise_twice() -> None:
    value = keras2.masked_objective_value(L, M, M.astype(float))
    assert value == pytest.approx(1.0168816311898412, rel=1e-15, abs=0)
    assert value == pytest.approx(0.6101289787139047 * 15 / 9, rel=1e-14)


def test_golden_keras23_rule() -> None:
    assert keras2.keras23_objective(L, M) == pytest.approx(0.3660773872283428, rel=1e-15, abs=0)


def test_hand_derived_small_case() -> None:
    # L = [[1, 2], [3, 4]], m = [[1, 0], [1, 1]]: score*m/mean(m) = [[4/3, 0], [4, 16/3]];
    # time means [2/3, 14/3]; *w=[1, 0] -> [2/3, 0]; / mean(w != 0) = 1/2 -> [4/3, 0]; mean 2/3.
    scores = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.array([[True, False], [True, True]])
    assert keras2.masked_objective_value(scores, mask) == pytest.approx(8 / 3, rel=1e-15)
    assert keras2.masked_objective_value(scores, mask, [1.0, 0.0]) == pytest.approx(2 / 3, rel=1e-15)
    assert keras2.keras23_objective(scores, mask) == pytest.approx(8 / 4, rel=1e-15)
    assert keras2.keras23_objective(scores, mask, [1.0, 0.0]) == pytest.approx(1 / 4, rel=1e-15)


def test_all_masked_is_nan_before_2_2_5_and_zero_after() -> None:
    none = np.zeros_like(M)
    assert math.isnan(keras2.masked_objective_value(L, none))
    assert keras2.masked_objective_value(L, none, epsilon=keras2.EPSILON_2_2_5) == 0.0
    assert keras2.keras23_objective(L, none) == 0.0


def test_2_2_5_epsilon_shifts_the_mean_mask() -> None:
    # score / (mean(m) + 1e-7): 9/15 + 1e-7 in the denominator.
    expected = float(np.sum(L * M)) / 15 / (9 / 15 + 1e-7)
    assert keras2.masked_objective_value(L, M, epsilon=1e-7) == pytest.approx(expected, rel=1e-15)


def test_all_zero_weights_give_nan() -> None:
    assert math.isnan(keras2.masked_objective_value(L, M, [0.0, 0.0, 0.0]))


def test_temporal_weights_at_masked_steps_still_count_as_nonzero() -> None:
    w_padding_zero = M.astype(float)
    w_padding_one = np.ones_like(L)
    a = keras2.masked_objective_value(L, M, w_padding_zero)
    b = keras2.masked_objective_value(L, M, w_padding_one)
    assert b == pytest.approx(a * 9 / 15, rel=1e-14)  # nnz(w) 9 vs 15 over the same numerator


def test_garbage_under_the_mask_never_leaks() -> None:
    dirty = np.where(M, L, np.nan)
    assert keras2.masked_objective_value(dirty, M) == keras2.masked_objective_value(L, M)
    assert keras2.keras23_objective(np.where(M, L, np.inf), M, [2.0, 0.0, 0.5]) == keras2.keras23_objective(
        L, M, [2.0, 0.0, 0.5])


def test_wrapper_applies_fn_then_the_objective() -> None:
    y_true = np.random.default_rng(1).normal(size=(3, 5, 2))
    y_pred = np.random.default_rng(2).normal(size=(3, 5, 2))
    mse = keras2.weighted_masked_objective(pointwise.squared_error)
    scores = ((y_true - y_pred) ** 2).mean(axis=-1)
    assert mse(y_true, y_pred, [2.0, 0.0, 0.5], M) == pytest.approx(
        oracles_keras.keras2_objective(scores, M, [2.0, 0.0, 0.5]), rel=1e-13)
    mse225 = keras2.weighted_masked_objective(pointwise.squared_error, epsilon=keras2.EPSILON_2_2_5)
    assert mse225(y_true, y_pred, None, np.zeros_like(M)) == 0.0


def test_keras23_rule_is_the_tf_210_rule() -> None:
    y_true = np.random.default_rng(3).normal(size=(3, 5, 1))
    y_pred = np.random.default_rng(4).normal(size=(3, 5, 1))
    scores = ((y_true - y_pred) ** 2)[..., 0]
    w = np.array([2.0, 0.0, 0.5])
    assert keras2.keras23_objective(scores, M, w) == pytest.approx(
        tf_keras.mean_squared_error(y_true, y_pred, mask=M, sample_weight=w, version="2.10"), rel=1e-14)


@pytest.mark.parametrize(
    ("weights", "match"),
    [(np.ones(4), "weights must have shape"), (np.ones((3, 4)), "weights must have shape"),
     ([2.0, -1.0, 1.0], "finite and >= 0")],
)
def test_bad_weights_are_rejected(weights: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        keras2.masked_objective_value(L, M, weights)  # type: ignore[arg-type]


def test_bad_mask_is_rejected() -> None:
    with pytest.raises(ValueError, match="mask must have shape"):
        keras2.masked_objective_value(L, M[:, :2])


@st.composite
def keras2_cases(draw):  # type: ignore[no-untyped-def]
    batch = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 5))
    mask = draw(masks(batch, steps))
    scores = np.array(draw(st.lists(st.floats(0, 10), min_size=batch * steps, max_size=batch * steps)))
    scores = scores.reshape(batch, steps)
    kind = draw(st.sampled_from(["none", "sample", "temporal"]))
    weights = None
    if kind == "sample":
        values = st.sampled_from([0.0, 0.5, 1.0, 2.0])
        weights = np.array(draw(st.lists(values, min_size=batch, max_size=batch)))
    elif kind == "temporal":
        values = st.sampled_from([0.0, 0.5, 1.0, 3.0])
        flat = draw(st.lists(values, min_size=batch * steps, max_size=batch * steps))
        weights = np.array(flat).reshape(batch, steps)
    epsilon = draw(st.sampled_from([0.0, keras2.EPSILON_2_2_5]))
    use_mask = draw(st.booleans())
    return scores, (mask if use_mask else None), weights, epsilon


@given(keras2_cases())
def test_matches_loop_oracle(case) -> None:  # type: ignore[no-untyped-def]
    scores, mask, weights, epsilon = case
    dirty = np.where(mask, scores, np.nan) if mask is not None else scores
    ours = keras2.masked_objective_value(dirty, mask, weights, epsilon=epsilon)
    expected = oracles_keras.keras2_objective(scores, mask, weights, epsilon)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(keras2.keras23_objective(dirty, mask, weights),
                               oracles_keras.keras23_objective(scores, mask, weights), rtol=1e-12, atol=1e-12)


@given(st.integers(1, 4), st.integers(1, 5), st.data())
def test_no_mask_means_no_rescaling(batch: int, steps: int, data: st.DataObject) -> None:
    scores = np.array(data.draw(st.lists(st.floats(0, 10), min_size=batch * steps, max_size=batch * steps)))
    scores = scores.reshape(batch, steps)
    assert keras2.masked_objective_value(scores) == pytest.approx(scores.mean(), rel=1e-12, abs=1e-12)
    assert keras2.masked_objective_value(scores, np.ones((batch, steps), bool)) == pytest.approx(
        scores.mean(), rel=1e-12, abs=1e-12)
