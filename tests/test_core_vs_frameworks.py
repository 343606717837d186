"""The core losses against the real frameworks whose per-step formulas they take.

- dense cross-entropy (soft targets, class weights, smoothing): torch ``F.cross_entropy`` with
  probability targets, ``reduction="none"``, masked by selection;
- binary cross-entropy (logits and probabilities, smoothing): torch ``F.binary_cross_entropy*`` per
  element, averaged over the last axis as Keras does;
- mae / mse: Keras 3 ``keras.losses.mean_absolute_error`` / ``mean_squared_error`` per step (jax
  backend, float64), and the masked Keras 3 loss objects, whose default reduction is the token mean.

(The sparse loss is pinned to torch's ``F.cross_entropy`` mean in test_golden.py and in
test_conventions_torch.py.) Tolerance: 1e-12 relative, both sides in float64, where the only
difference is summation order (Keras: see the float32 note in the regression test).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import assume, given, settings

import maskloss
from tests.cases import assert_matches, cases

torch = pytest.importorskip("torch")
F = torch.nn.functional

os.environ.setdefault("KERAS_BACKEND", "jax")


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def _masked_token_mean(per_step, case):
    """Σ m·w·ℓ / Σ m·w by plain NumPy selection on the framework's per-step values."""
    m = case.mask
    sw = case.options.get("sample_weight")
    w = np.ones(m.shape) if sw is None else (np.asarray(sw) if np.ndim(sw) == 2 else np.asarray(sw)[:, None])
    w = np.where(m, np.broadcast_to(w, m.shape), 0.0)
    values = np.where(m, per_step, 0.0)
    return (w * values).sum() / w.sum() if w.sum() else np.nan


@settings(max_examples=40)
@given(case=cases(kinds=("categorical",)))
def test_dense_cross_entropy_matches_torch_probability_targets(case):
    opts = case.options
    y_true = np.where(case.mask[..., None], case.y_true, 0.0)
    y_pred = np.where(case.mask[..., None], case.y_pred, 0.5)
    logits = y_pred if opts["from_logits"] else np.log(y_pred)
    # torch: class axis 1, targets shaped like the input, no ignore_index for probability targets.
    weight = None if opts.get("class_weight") is None else _t(opts["class_weight"])
    per_step = F.cross_entropy(
        _t(logits).permute(0, 2, 1), _t(y_true).permute(0, 2, 1), weight=weight,
        label_smoothing=opts["label_smoothing"], reduction="none",
    ).numpy()
    if not opts["from_logits"]:
        # torch applies log_softmax; with probabilities that is log p - log Σp, so the core (which
        # uses log p as given) equals torch only for rows that sum to 1.
        assume(np.allclose(y_pred.sum(-1)[case.mask], 1.0, rtol=1e-12))
    assert_matches(case.run("token_mean"), _masked_token_mean(per_step, case), rtol=1e-12)
    sw = opts.get("sample_weight")
    w = 1.0 if sw is None else (np.asarray(sw) if np.ndim(sw) == 2 else np.asarray(sw)[:, None])
    assert_matches(case.run("none"), np.where(case.mask, per_step * w, 0.0), rtol=1e-12, atol=1e-12)


@settings(max_examples=40)
@given(case=cases(kinds=("binary",)))
def test_binary_cross_entropy_matches_torch(case):
    opts = case.options
    eps = opts["label_smoothing"]
    y_true = np.where(case.mask[..., None], case.y_true, 0.0) * (1 - eps) + eps / 2
    y_pred = np.where(case.mask[..., None], case.y_pred, 0.5)
    if opts["from_logits"]:
        elem = F.binary_cross_entropy_with_logits(_t(y_pred), _t(y_true), reduction="none").numpy()
    else:
        elem = F.binary_cross_entropy(_t(y_pred), _t(y_true), reduction="none").numpy()
    assert_matches(case.run("token_mean"), _masked_token_mean(elem.mean(-1), case), rtol=1e-12)


@settings(max_examples=15)  # each example pays Keras's eager dispatch on new shapes (~1 s)
@given(case=cases(kinds=("mae", "mse")))
def test_regression_losses_match_keras3_per_step_and_masked_mean(case):
    keras = pytest.importorskip("keras")
    fn = keras.losses.mean_absolute_error if case.kind == "mae" else keras.losses.mean_squared_error
    y_true = np.where(case.mask[..., None], case.y_true, 0.0)
    y_pred = np.where(case.mask[..., None], case.y_pred, 0.0)
    per_step = np.asarray(fn(y_true, y_pred), dtype=np.float64)
    # Found here: Keras 3.15's jax-backend ops.mean accumulates in float32 even for float64 input
    # (keras/src/backend/jax/numpy.py `mean`: compute_dtype = result_type(x.dtype, "float32")), so
    # the per-step values carry float32 rounding: rtol 1e-6 (float32 eps 1.2e-7 times a few terms).
    assert_matches(case.run("token_mean"), _masked_token_mean(per_step, case), rtol=1e-6, atol=1e-7)


def test_keras3_sample_weight_without_a_mask_is_the_element_mean():
    # Keras 3's default "sum_over_batch_size" with a (B, T) sample_weight and no mask divides
    # Σ L·w by the number of steps B·T: that is maskloss's element_mean with a weight. Passing a
    # mask *as* a sample weight therefore counts the padding (the model's own mask divides by Σ m:
    # see the Keras conventions tests).
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(11)
    y_true = rng.normal(size=(3, 6, 2))
    y_pred = rng.normal(size=(3, 6, 2))
    mask = maskloss.mask_from_lengths([6, 2, 4], 6)
    real = float(keras.losses.MeanAbsoluteError()(y_true, y_pred, sample_weight=mask.astype("float32")))
    assert maskloss.mae(y_true, y_pred, mask, reduction="element_mean") == pytest.approx(real, rel=1e-6)
    assert maskloss.mae(y_true, y_pred, mask) != pytest.approx(real, rel=1e-3)
    # Keras computes in float32 by default: 1e-6 covers float32 rounding over 36 terms.
