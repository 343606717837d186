r"""Per-step losses: pure float64 math on rows of already selected valid steps.

Every function here takes 2-D arrays of shape ``(n, C)`` (one row per valid step,
features or classes on the last axis, already float64) and returns ``(n,)``. Masking
happened before these are called (the rows are a compaction of the valid steps), so
nothing here ever sees padding.

Conventions used throughout: :math:`0 \cdot \log 0 = 0` (a target with no mass on a
class ignores that class, as ``scipy.special.xlogy`` does); a class or target with
positive mass on a probability of 0 costs :math:`+\infty`, honestly.
"""

from __future__ import annotations

import numpy as np

from maskloss._types import FloatArray, IntArray

__all__ = [
    "absolute_error",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "log_softmax",
    "negative_log_weighted",
    "smooth_binary_targets",
    "smooth_categorical_targets",
    "sparse_cross_entropy",
    "squared_error",
]


def absolute_error(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\frac1F \sum_f |y_f - \hat y_f|` (Keras ``mae``, mean over the last axis)."""
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def squared_error(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`\frac1F \sum_f (y_f - \hat y_f)^2` (Keras ``mse``, mean over the last axis)."""
    return np.mean(np.square(y_true - y_pred), axis=-1)


def negative_log_weighted(coef: FloatArray, log_p: FloatArray) -> FloatArray:
    r""":math:`-c \log p` elementwise, with :math:`0 \cdot \log 0 = 0` (no NaN from ``0·inf``)."""
    with np.errstate(invalid="ignore"):
        return np.where(coef == 0, 0.0, -coef * log_p)


def _log(p: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def smooth_binary_targets(y_true: FloatArray, label_smoothing: float) -> FloatArray:
    r""":math:`y(1-\varepsilon) + \varepsilon/2` (Keras binary label smoothing)."""
    return y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y_true


def smooth_categorical_targets(y_true: FloatArray, label_smoothing: float) -> FloatArray:
    r""":math:`y(1-\varepsilon) + \varepsilon/C` (Keras and torch categorical smoothing)."""
    if not label_smoothing:
        return y_true
    return y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]


def binary_cross_entropy(y_true: FloatArray, y_pred: FloatArray) -> FloatArray:
    r""":math:`-\frac1F\sum_f \big(y_f \log p_f + (1-y_f)\log(1-p_f)\big)`, probabilities as given."""
    terms = negative_log_weighted(y_true, _log(y_pred)) + negative_log_weighted(1.0 - y_true, _log(1.0 - y_pred))
    return np.mean(terms, axis=-1)


def binary_cross_entropy_with_logits(y_true: FloatArray, logits: FloatArray) -> FloatArray:
    r"""Stable logit form :math:`\frac1F\sum_f \max(x_f,0) - x_f y_f + \log(1+e^{-|x_f|})`."""
    terms = np.maximum(logits, 0.0) - logits * y_true + np.log1p(np.exp(-np.abs(logits)))
    return np.mean(terms, axis=-1)


def log_softmax(logits: FloatArray) -> FloatArray:
    r""":math:`x_c - \max_k x_k - \log\sum_k e^{x_k - \max_k x_k}`, stable for any finite row."""
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def cross_entropy(targets: FloatArray, log_p: FloatArray, class_weight: FloatArray | None = None) -> FloatArray:
    r""":math:`-\sum_c cw_c\, q_c \log p_c` for dense (possibly soft, unnormalised) targets ``q``."""
    coef = targets if class_weight is None else targets * class_weight
    return np.sum(negative_log_weighted(coef, log_p), axis=-1)


def sparse_cross_entropy(
    labels: IntArray, log_p: FloatArray, class_weight: FloatArray | None, label_smoothing: float
) -> FloatArray:
    r"""torch's index-target cross-entropy for each row, with class weights and smoothing.

    .. math::
        \ell = (1-\varepsilon)\, cw_y\,(-\log p_y)
               + \frac{\varepsilon}{C}\sum_c cw_c\,(-\log p_c)

    (the numerator term; the denominator term of the step is :math:`cw_y`).
    """
    rows = np.arange(labels.shape[0])
    cw_y = np.ones(labels.shape[0]) if class_weight is None else class_weight[labels]
    loss = negative_log_weighted((1.0 - label_smoothing) * cw_y, log_p[rows, labels])
    if label_smoothing:
        cw = np.ones(log_p.shape[-1]) if class_weight is None else class_weight
        spread = np.broadcast_to(label_smoothing / log_p.shape[-1] * cw, log_p.shape)
        loss = loss + np.sum(negative_log_weighted(spread, log_p), axis=-1)
    return loss
