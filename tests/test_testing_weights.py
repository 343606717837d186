"""Weight normalisations (maskloss.reductions.renormalized_value; check_loss's weight_normalization=
and weights="sequence"/"step") and allow_empty_rows=: loop oracles, the Keras mirrors, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import maskloss
import maskloss.conventions as cv
from maskloss.reductions import WEIGHT_NORMALIZATIONS
from maskloss.testing import Bounds, LossCheckError, check_loss
from maskloss.testing.oracles import weight_normalized


def loop_oracle(y_true, y_pred, mask, w, normalization):
    """Python loops: sum m w l over sum m w, over sum m, or (Keras 2) times K / nnz(w)."""
    b_, t_, f_ = y_pred.shape
    num = den_w = den = 0.0
    for b in range(b_):
        for t in range(t_):
            if not mask[b, t]:
                continue
            wt = w[b] if w.ndim == 1 else w[b, t]
            step = sum((y_pred[b, t, f] - y_true[b, t, f]) ** 2 for f in range(f_)) / f_
            num += wt * step
            den_w += wt
            den += 1.0
    if normalization == "weighted":
        return num / den_w if den_w else math.nan
    value = num / den if den else math.nan
    if normalization == "nonzero_fraction":
        nonzero = sum(1 for v in w.ravel() if v != 0)
        value = value * w.size / nonzero if nonzero else math.nan
    return value


@pytest.mark.parametrize("normalization", WEIGHT_NORMALIZATIONS)
@pytest.mark.parametrize("per", ["sequence", "step"])
@pytest.mark.parametrize("seed", range(4))
def test_each_normalization_matches_the_loop_oracle(normalization, per, seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    mask = rng.random((3, 4)) < 0.7
    w = rng.choice([0.0, 0.5, 2.0], size=(3,) if per == "sequence" else (3, 4))
    got = weight_normalized(maskloss.mse, normalization)(y_true, y_pred, mask, sample_weight=w)
    want = loop_oracle(y_true, y_pred, mask, w, normalization)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-12)


def test_the_keras_mirrors_are_the_normalizations():
    """Keras 3's and tf.keras's default reduction is numerator-only; Keras 2.0-2.2 is the nnz rule."""
    rng = np.random.default_rng(5)
    y_true, y_pred = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    mask = rng.random((3, 4)) < 0.7
    mask[0, 0] = True
    for w in (np.array([2.0, 0.0, 0.5]), rng.choice([0.0, 1.0, 3.0], size=(3, 4))):
        numerator = weight_normalized(maskloss.mse, "numerator")(y_true, y_pred, mask, sample_weight=w)
        keras_w = w[:, None] if w.ndim == 1 else w
        assert numerator == pytest.approx(float(cv.keras3.mean_squared_error(y_true, y_pred, mask=mask,
                                                                            sample_weight=keras_w)), rel=1e-12)
        assert numerator == pytest.approx(float(cv.tf_keras.mean_squared_error(y_true, y_pred, mask=mask,
                                                                              sample_weight=keras_w)), rel=1e-12)
        keras2 = cv.keras2.masked_objective_value(np.mean(np.square(y_pred - y_true), -1), mask, w)
        nnz = weight_normalized(maskloss.mse, "nonzero_fraction")(y_true, y_pred, mask, sample_weight=w)
        assert nnz == pytest.approx(float(keras2), rel=1e-12)


def keras3_style(y_true, y_pred, mask, sample_weight=None):
    """sum m w l / sum m, selected: Keras 3's sum_over_batch_size, written in NumPy."""
    per_step = np.where(mask, np.mean(np.square(np.where(mask[..., None], y_pred - y_true, 0.0)), -1), 0.0)
    w = 1.0 if sample_weight is None else (sample_weight if sample_weight.ndim == 2 else sample_weight[:, None])
    return np.where(mask, per_step * np.where(mask, w, 0.0), 0.0).sum() / mask.sum()


def keras2_style(y_true, y_pred, mask, sample_weight=None):
    scores = np.where(mask, np.mean(np.square(np.where(mask[..., None], y_pred - y_true, 0.0)), -1), 0.0)
    return cv.keras2.masked_objective_value(scores, mask, sample_weight)


@pytest.mark.parametrize("weights", [True, "sequence", "step"])
def test_check_loss_takes_each_normalization(weights):
    check_loss(keras3_style, maskloss.mse, bounds=Bounds(weights=weights), weight_normalization="numerator")
    check_loss(keras2_style, maskloss.mse, bounds=Bounds(weights=weights), weight_normalization="nonzero_fraction")
    with pytest.raises(LossCheckError) as info:
        check_loss(keras3_style, maskloss.mse, bounds=Bounds(weights=weights), weight_normalization="weighted")
    assert info.value.property == "agreement"
    if weights == "step":  # padded weights count in nnz(w): K / nnz(w) != 1 on most batches
        with pytest.raises(LossCheckError):
            check_loss(keras2_style, maskloss.mse, bounds=Bounds(weights=weights), weight_normalization="numerator")


def test_weights_sequence_and_step_draw_those_shapes():
    shapes = set()

    def spy(y_true, y_pred, mask, sample_weight=None):
        shapes.add(None if sample_weight is None else sample_weight.ndim)
        return maskloss.mse(y_true, y_pred, mask, sample_weight=sample_weight)

    check_loss(spy, maskloss.mse, bounds=Bounds(weights="sequence"), max_examples=30)
    assert shapes <= {None, 1} and 1 in shapes
    shapes.clear()
    check_loss(spy, maskloss.mse, bounds=Bounds(weights="step"), max_examples=30)
    assert shapes <= {None, 2} and 2 in shapes


def test_weight_bad_input():
    with pytest.raises(ValueError, match=r"weight_normalization='numerator' says how.*weights=False"):
        check_loss(keras3_style, maskloss.mse, weight_normalization="numerator")
    with pytest.raises(ValueError, match=r"weight_normalization must be one of .*'keras'"):
        check_loss(keras3_style, maskloss.mse, bounds=Bounds(weights=True), weight_normalization="keras")
    with pytest.raises(ValueError, match=r"needs a scalar reduction, not reduction='none'"):
        check_loss(keras3_style, maskloss.mse, bounds=Bounds(weights=True), weight_normalization="numerator",
                   reduction="none")
    with pytest.raises(ValueError, match=r"weights must be one of .*'tokens'"):
        check_loss(keras3_style, maskloss.mse, bounds=Bounds(weights="tokens"))


def per_sequence_means(y_true, y_pred, mask):
    """Mean over sequences of per-sequence means: 0/0 for a sequence with no valid step."""
    per_step = np.where(mask, np.mean(np.square(np.where(mask[..., None], y_pred - y_true, 0.0)), -1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.mean(per_step.sum(1) / mask.sum(1))


def test_allow_empty_rows_false_generates_none():
    with pytest.raises(LossCheckError):
        check_loss(per_sequence_means, maskloss.mse, reduction="sequence_mean")
    with pytest.warns(UserWarning, match=r"all-masked batch not checked: allow_empty_rows=False"):
        check_loss(per_sequence_means, maskloss.mse, reduction="sequence_mean", bounds=Bounds(allow_empty_rows=False))
    with pytest.raises(TypeError, match=r"allow_empty_rows must be True or False, got 'no'"):
        check_loss(per_sequence_means, maskloss.mse, bounds=Bounds(allow_empty_rows="no"))


def test_no_warning_by_default():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_loss(keras3_style, maskloss.mse, max_examples=10)
