"""check_loss passes scale= and weight_normalization= to a maskloss loss that takes them (issue 19).

Since every pipeline loss computes ``scale=`` and ``weight_normalization=``, they are options of
``like`` like any other: no DeprecationWarning, and the check still tells a right candidate
from a wrong one. With a ``like`` that does not take them (a lambda) they stay deprecated.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import maskloss
from maskloss.testing import Bounds, LossCheckError, check_loss


def _mse_sum_over(t: float):
    def candidate(y_true, y_pred, mask):
        err = np.where(mask[..., None], y_true - y_pred, 0.0)
        return np.square(err).mean(-1).sum() / t

    return candidate


def test_scale_goes_to_like_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        check_loss(_mse_sum_over(4.0), maskloss.mse, reduction="sum", scale=0.25, max_examples=20)


def test_a_wrong_scale_still_fails():
    with pytest.raises(LossCheckError):
        check_loss(_mse_sum_over(3.0), maskloss.mse, reduction="sum", scale=0.25, max_examples=20)


def test_weight_normalization_of_a_loss_that_takes_it_is_not_deprecated():
    def keras3_mse(y_true, y_pred, mask, sample_weight=None):
        err = np.where(mask[..., None], y_true - y_pred, 0.0)
        per_step = np.square(err).mean(-1)
        sw = np.ones(mask.shape[0]) if sample_weight is None else np.asarray(sample_weight)
        w = np.broadcast_to(sw if sw.ndim == 2 else sw[:, None], mask.shape)
        return np.where(mask, w * per_step, 0.0).sum() / mask.sum() if mask.any() else np.nan

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        check_loss(keras3_mse, maskloss.mse, bounds=Bounds(weights="step", all_masked=np.nan),
                   weight_normalization="numerator", max_examples=20)


def test_scale_with_a_like_that_does_not_take_it_is_deprecated():
    def like(y_true, y_pred, mask=None, *, reduction="token_mean"):
        return maskloss.mse(y_true, y_pred, mask, reduction=reduction)

    # a lambda-like custom like: check_loss also says, on purpose, that it cannot check split and recombine
    with pytest.warns(DeprecationWarning, match="scale=0.25"), \
            pytest.warns(UserWarning, match="split and recombine not checked for like='like'"):
        check_loss(_mse_sum_over(4.0), like, reduction="sum", scale=0.25, bounds=Bounds(kind="regression"),
                   max_examples=10)
