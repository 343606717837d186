"""Golden values with provenance: the seed example, Keras 2 numbers, torch numbers."""

from __future__ import annotations

import numpy as np
import pytest

import maskloss

# The seed (issue 2; docs/course/00-start-here.md): Input(5, 2) -> Masking(0) -> LSTM(3), loss mae.
SEED_X = np.array(
    [[[0, 0], [0, 0], [1, 0], [0, 1], [0, 1]], [[0, 0], [0, 1], [1, 0], [0, 1], [0, 1]]], dtype=float
)


def test_seed_mask_comes_from_all_features_equal_to_the_padding_value():
    # Expected mask stated in the seed issue: [[F,F,T,T,T],[F,T,T,T,T]].
    expected = np.array([[False, False, True, True, True], [False, True, True, True, True]])
    np.testing.assert_array_equal(maskloss.mask_from_padding(SEED_X, 0.0), expected)


def test_seed_masked_mae_is_the_mean_over_the_seven_valid_steps():
    rng = np.random.default_rng(7)
    y_pred = rng.normal(size=(2, 5, 3))
    y_true = np.ones((2, 5, 3))
    mask = maskloss.mask_from_padding(SEED_X, 0.0)
    per_step = np.abs(y_true - y_pred).mean(axis=-1)
    valid_values = [per_step[b, t] for b in range(2) for t in range(5) if mask[b, t]]
    assert len(valid_values) == 7
    assert maskloss.mae(y_true, y_pred, mask) == pytest.approx(sum(valid_values) / 7, rel=1e-14)
    # Keras 2's way of getting there: score *= mask; score /= mean(mask); mean(score).
    keras2 = np.mean(per_step * mask / mask.mean())
    assert maskloss.mae(y_true, y_pred, mask) == pytest.approx(keras2, rel=1e-14)
    assert maskloss.mae(y_true, y_pred) != pytest.approx(maskloss.mae(y_true, y_pred, mask))


def test_seed_sentinel_case_is_sum_ce_mask_over_sum_mask():
    y_true = np.eye(3)[[[0, 1, 0, 2, 2]]]
    y_pred = np.array([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]]])
    mask = maskloss.mask_from_sentinel(y_true, [0, 0, 1])
    np.testing.assert_array_equal(mask, [[True, True, True, False, False]])
    # By hand: -(ln 0.7 + ln 0.6 + ln 0.5) / 3.
    expected = -(np.log(0.7) + np.log(0.6) + np.log(0.5)) / 3
    assert maskloss.categorical_crossentropy(y_true, y_pred, mask) == pytest.approx(expected, rel=1e-14)


# Golden numbers transcribed from Keras 2.2 and 2.3 runs (docs/appendix/provenance.md).
KERAS2_LOSSES = np.random.default_rng(0).random((3, 5))
KERAS2_MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=bool)


def test_keras_2_2_masked_mean_is_token_mean():
    value = maskloss.reduce(KERAS2_LOSSES, KERAS2_MASK, reduction="token_mean")
    assert value == pytest.approx(0.6101289787139047, rel=1e-15)


def test_keras_2_3_rule_is_element_mean():
    value = maskloss.reduce(KERAS2_LOSSES, KERAS2_MASK, reduction="element_mean")
    assert value == pytest.approx(0.3660773872283428, rel=1e-15)


def test_a_true_weighted_mean_with_per_sequence_weights():
    # By hand: a true weighted mean would be 0.35436471186212376 for weights [2, 0, 0.5].
    value = maskloss.reduce(KERAS2_LOSSES, KERAS2_MASK, reduction="token_mean", sample_weight=[2.0, 0.0, 0.5])
    assert value == pytest.approx(0.35436471186212376, rel=1e-15)


# Computed with torch 2.13.0+cpu, float64, on 2026-11-27:
#   F.cross_entropy(logits.permute(0, 2, 1), labels, ignore_index=-100, **options)
TORCH_LOGITS = np.array(
    [
        [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [9.0, 9.0, 9.0], [-3.0, 4.0, 1.0]],
        [[1.5, 1.5, -2.0], [0.0, 0.0, 0.0], [5.0, -5.0, 0.0], [1.0, 2.0, 3.0]],
    ]
)
TORCH_LABELS = np.array([[0, 2, -100, 1], [1, -100, 0, 2]])
TORCH_WEIGHT = np.array([1.0, 2.0, 0.5])


@pytest.mark.parametrize(
    ("options", "mean", "total"),
    [
        ({}, 0.40253486401889454, 2.415209184113367),
        ({"class_weight": TORCH_WEIGHT}, 0.35257477271600274, 2.468023409012019),
        ({"label_smoothing": 0.1}, 0.6042015306855612, 3.625209184113367),
        ({"class_weight": TORCH_WEIGHT, "label_smoothing": 0.2}, 0.7806620290718191, 5.464634203502734),
    ],
)
def test_sparse_cross_entropy_matches_torch_golden_values(options, mean, total):
    def run(reduction):
        return maskloss.sparse_categorical_crossentropy(
            TORCH_LABELS, TORCH_LOGITS, from_logits=True, ignore_index=-100, reduction=reduction, **options
        )

    assert run("token_mean") == pytest.approx(mean, rel=1e-13)
    assert run("sum") == pytest.approx(total, rel=1e-13)
