"""The weight normalisation "numerator" against real Keras 3 (jax backend), through check_loss.

Keras 3's default reduction divides sum(m w l) by sum(m): with weight_normalization="numerator"
its first finding is that it multiplies junk at padded steps by 0 (NaN * 0, padding content);
with the junk selected out of its inputs first it passes every property, and with the default
("weighted") it disagrees."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # as tests/test_conventions_keras3.py
pytest.importorskip("jax")
keras = pytest.importorskip("keras")

import maskloss  # noqa: E402
from maskloss.testing import Bounds, LossCheckError, check_loss  # noqa: E402


def keras_mse(y_true, y_pred, mask, sample_weight=None):
    from keras.src.backend import set_keras_mask

    pred = keras.ops.convert_to_tensor(y_pred)
    set_keras_mask(pred, keras.ops.convert_to_tensor(mask))
    w = None if sample_weight is None else (sample_weight[:, None] if sample_weight.ndim == 1 else sample_weight)
    return np.asarray(keras.losses.MeanSquaredError()(y_true, pred, sample_weight=w))


@pytest.mark.parametrize("weights", ["sequence", "step"])
def test_real_keras3_is_the_numerator_rule(weights):
    assert keras.backend.backend() == "jax", (
        f"keras was imported with the {keras.backend.backend()} backend before this module; run with KERAS_BACKEND=jax")
    with pytest.raises(LossCheckError) as info:
        check_loss(keras_mse, maskloss.mse, bounds=Bounds(weights=weights), weight_normalization="numerator",
                   max_examples=40)
    assert info.value.property == "padding content", str(info.value)

    def keras_mse_selected(y_true, y_pred, mask, sample_weight=None):
        m = mask[..., None]
        w = sample_weight if sample_weight is None or sample_weight.ndim == 1 else np.where(mask, sample_weight, 0)
        return keras_mse(np.where(m, y_true, 0.0), np.where(m, y_pred, 0.0), mask, w)

    check_loss(keras_mse_selected, maskloss.mse, bounds=Bounds(weights=weights, all_masked=0.0),
               weight_normalization="numerator", max_examples=40)  # Keras: divide_no_nan, 0 when nothing is valid
    with pytest.raises(LossCheckError) as info:
        check_loss(keras_mse_selected, maskloss.mse, bounds=Bounds(weights=weights), max_examples=40)
    assert info.value.property == "agreement", str(info.value)
