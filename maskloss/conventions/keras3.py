r"""Keras 3 (jax and torch backends): the masked loss exactly as ``keras.losses`` computes it.

Each function mirrors the Keras 3 loss of the same name (same positional arguments and
defaults) and reduces like the matching ``keras.losses.*`` class: ``mask`` is what the
model's output mask carries (``y_pred._keras_mask``, e.g. from ``Masking`` or
``Embedding(mask_zero=True)``), ``sample_weight`` what ``fit``/``evaluate`` pass.

How Keras 3 combines them (``keras/src/losses/loss.py``: ``apply_mask``,
``reduce_weighted_values``), with the mask :math:`m` (1 everywhere when there is no
mask), the sample weight :math:`w` (1 when there are none) and the per-step loss
:math:`\ell`; sums run over all steps:

=============================  =====================================================  ==========
reduction                      value                                                  all masked
=============================  =====================================================  ==========
``"sum_over_batch_size"``      :math:`\sum mw\ell / \sum m` (``"mean"`` alias)        0
``"mean_with_sample_weight"``  :math:`\sum mw\ell / \sum mw` with a mask;             0
                               without one :math:`\sum w\ell / \sum w_\text{given}`
``"sum"``                      :math:`\sum mw\ell`                                    0
``"none"`` / ``None``          :math:`mw\ell` per step                                zeros
=============================  =====================================================  ==========

Quirks reproduced (each pinned by a test against the installed Keras 3.15):

* Zero denominators give 0, never NaN (``divide_no_nan``).
* ``mean_with_sample_weight`` without a mask divides by the sum of the weight array *as
  given*: a ``(B, 1)`` weight divides by :math:`\sum_b w_b`, not :math:`T\sum_b w_b`,
  and a scalar weight ``w`` gives :math:`\sum\ell` (not the mean). With a mask the weight
  is first broadcast to the steps, so the divisor is :math:`\sum_{bt} m\,w`. So
  ``mask=None`` and an all-True mask differ here.
* ``sample_weight`` is aligned to the *right* (NumPy broadcasting): a ``(B,)`` weight
  on ``(B, T)`` steps is an error (or, when ``B == T``, silently a per-time-step weight);
  pass ``(B, 1)`` for one weight per sequence.
* Probabilities are renormalised by their row sum, then clipped to
  :math:`[\epsilon, 1-\epsilon]` (:math:`\epsilon = 10^{-7}`), for categorical and sparse
  cross-entropy; binary cross-entropy clips without renormalising. An all-zero row of
  probabilities gives NaN.
* ``ignore_class`` steps join the mask (they are dropped from numerator and denominator).

Deliberate differences: garbage (NaN, inf) at masked steps never reaches the result here,
while Keras multiplies it by a zero weight (``NaN * 0 = NaN``); labels out of
``[0, C)`` at valid steps raise ``ValueError`` (the jax backend silently scores them 0).
On jax, ``keras.ops.mean`` computes in float32 even for float64 input, so Keras's MAE,
MSE and binary cross-entropy carry float32 rounding on the feature mean; everything here
is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import (
    check_flag,
    check_label_smoothing,
    check_labels,
    check_sample_weight,
)
from maskloss._rows import as_rows
from maskloss._types import BoolArray, FloatArray
from maskloss.conventions._keras_common import (
    EPSILON,
    align_weight,
    check_keras_reduction,
    chunk_losses,
    dense_pair,
    ignore_mask,
    optional_mask,
    renormalised_log,
    sparse_pair,
    valid_steps,
)
from maskloss.reductions import MaskedTotals

__all__ = [
    "EPSILON",
    "REDUCTIONS",
    "binary_crossentropy",
    "categorical_crossentropy",
    "mean_absolute_error",
    "mean_squared_error",
    "sparse_categorical_crossentropy",
]

#: Reductions Keras 3 accepts (``None`` too, meaning ``"none"``).
REDUCTIONS: tuple[str, ...] = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none")


# ------------------------------------------------------------------ Keras 3 reduction


def _reduce(
    losses: FloatArray,
    keras_mask: BoolArray | None,
    weight: np.ndarray[Any, Any] | None,
    reduction: str,
) -> Any:
    """Keras 3 ``reduce_weighted_values`` on per-step ``losses`` (0 where masked)."""
    shape = losses.shape
    valid = np.ones(shape, dtype=bool) if keras_mask is None else keras_mask
    w = check_sample_weight(weight, valid)  # m * w broadcast to the steps, float64
    with np.errstate(invalid="ignore", over="ignore"):
        numerator = np.where(valid, losses * w, 0.0)
    if reduction == "none":
        return numerator
    if reduction == "mean_with_sample_weight":
        if keras_mask is not None or weight is None:
            denominator = w
        else:  # each given weight counts once, however many steps it broadcasts to
            denominator = w * (weight.size / max(losses.size, 1))
    else:
        denominator = valid.astype(np.float64)
    totals = MaskedTotals.from_terms(numerator, denominator)
    if reduction == "sum":
        return totals.value("sum")
    if not np.any(totals.denominator):  # divide_no_nan
        return np.float64(0.0)
    return totals.value("token_mean")


def _finish(
    losses: FloatArray,
    keras_mask: BoolArray | None,
    sample_weight: npt.ArrayLike | None,
    reduction: object,
) -> Any:
    red = check_keras_reduction(reduction, REDUCTIONS)
    weight = align_weight(sample_weight, losses.shape, expand_one_less=False)
    return _reduce(losses, keras_mask, weight, "sum_over_batch_size" if red == "mean" else red)


# ---------------------------------------------------------------------- public losses


def _regression(
    step: Callable[[FloatArray, FloatArray], FloatArray],
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    sample_weight: npt.ArrayLike | None,
    reduction: object,
) -> Any:
    t, p = dense_pair(y_true, y_pred)
    keras_mask = optional_mask(mask, p.shape[:-1])
    check_keras_reduction(reduction, REDUCTIONS)
    losses = chunk_losses(step, valid_steps(keras_mask, p.shape[:-1]), as_rows(t), as_rows(p))
    return _finish(losses, keras_mask, sample_weight, reduction)


def mean_absolute_error(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
) -> Any:
    r"""``keras.losses.MeanAbsoluteError`` on a masked batch.

    .. math::
        \ell_{bt} = \frac1F\sum_f |y_{btf} - \hat y_{btf}|, \qquad
        \text{sum\_over\_batch\_size} = \frac{\sum_{bt} m\,w\,\ell}{\sum_{bt} m}

    Parameters
    ----------
    y_true, y_pred : array_like, shape (B, T, F)
    mask : array_like of bool, shape (B, T), optional
        The model output's Keras mask (True = valid); ``None`` when it carries none.
    sample_weight : array_like, optional
        Scalar, ``(B, T)``, ``(B, 1)`` or anything broadcasting to the steps from the right.
    reduction : {"sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none", None}

    Returns
    -------
    numpy.float64, or the per-step weighted losses for ``"none"``/``None``.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions import keras3
    >>> y_true = np.zeros((1, 3, 1)); y_pred = np.array([[[1.0], [3.0], [50.0]]])
    >>> float(keras3.mean_absolute_error(y_true, y_pred, mask=[[True, True, False]]))
    2.0
    >>> float(keras3.mean_absolute_error(y_true, y_pred, mask=[[False, False, False]]))  # all masked
    0.0
    """
    return _regression(pointwise.absolute_error, y_true, y_pred, mask, sample_weight, reduction)


def mean_squared_error(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
) -> Any:
    r"""``keras.losses.MeanSquaredError``: :math:`\ell_{bt} = \frac1F\sum_f (y - \hat y)^2`.

    Arguments and reductions as in :func:`mean_absolute_error`.

    Examples
    --------
    ``mean_with_sample_weight`` with a ``(B, 1)`` weight and no mask divides by
    :math:`\sum_b w_b`, not by the number of weighted steps:

    >>> import numpy as np
    >>> from maskloss.conventions import keras3
    >>> y_true = np.zeros((2, 2, 1)); y_pred = np.ones((2, 2, 1))
    >>> float(keras3.mean_squared_error(y_true, y_pred, sample_weight=[[1.0], [1.0]],
    ...                                 reduction="mean_with_sample_weight"))   # 4 / 2
    2.0
    >>> float(keras3.mean_squared_error(y_true, y_pred, sample_weight=[[1.0], [1.0]],
    ...                                 mask=np.ones((2, 2), bool), reduction="mean_with_sample_weight"))
    1.0
    """
    return _regression(pointwise.squared_error, y_true, y_pred, mask, sample_weight, reduction)


def categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
) -> Any:
    r"""``keras.losses.CategoricalCrossentropy`` (jax/torch backends) on a masked batch.

    .. math::
        y' = y(1-\varepsilon_s) + \varepsilon_s / C, \qquad
        p' = \operatorname{clip}\Big(\frac{p}{\sum_c p_c}, \epsilon, 1-\epsilon\Big), \qquad
        \ell = -\sum_c y'_c \log p'_c

    With ``from_logits=True``, :math:`\log p'` is the log-softmax of the logits (no clip).

    Examples
    --------
    The clip caps a confident mistake: logits ``[30, 0, -30]``, true class 3.

    >>> import numpy as np
    >>> from maskloss.conventions import keras3
    >>> z = np.array([[30.0, 0.0, -30.0]]); p = np.exp(z) / np.exp(z).sum()
    >>> round(float(keras3.categorical_crossentropy([[0, 0, 1]], p)), 3)          # -log(1e-7)
    16.118
    >>> round(float(keras3.categorical_crossentropy([[0, 0, 1]], z, from_logits=True)), 3)
    60.0
    """
    logits = check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    t, p = dense_pair(y_true, y_pred, axis)
    keras_mask = optional_mask(mask, p.shape[:-1])
    check_keras_reduction(reduction, REDUCTIONS)

    def step(t_rows: FloatArray, p_rows: FloatArray) -> FloatArray:
        target = pointwise.smooth_categorical_targets(t_rows, eps)
        log_p = pointwise.log_softmax(p_rows) if logits else renormalised_log(p_rows, EPSILON)
        return pointwise.cross_entropy(target, log_p)

    losses = chunk_losses(step, valid_steps(keras_mask, p.shape[:-1]), as_rows(t), as_rows(p))
    return _finish(losses, keras_mask, sample_weight, reduction)


def sparse_categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    from_logits: bool = False,
    ignore_class: int | None = None,
    axis: int = -1,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
) -> Any:
    r"""``keras.losses.SparseCategoricalCrossentropy`` (jax/torch backends).

    .. math::
        \ell = -\log \operatorname{clip}\Big(\frac{p_y}{\sum_c p_c}, \epsilon, 1-\epsilon\Big)

    (``from_logits=True``: :math:`-\log\operatorname{softmax}(z)_y`). Steps whose label
    equals ``ignore_class`` are masked: they leave both the sum and the count.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions import keras3
    >>> p = np.array([[[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]]])
    >>> round(float(keras3.sparse_categorical_crossentropy([[0, 1, -1]], p, ignore_class=-1)), 6)
    0.490415
    """
    logits = check_flag(from_logits, "from_logits")
    labels, p = sparse_pair(y_true, y_pred, axis)
    keras_mask = ignore_mask(labels, optional_mask(mask, labels.shape), ignore_class)
    check_keras_reduction(reduction, REDUCTIONS)
    valid = valid_steps(keras_mask, labels.shape)
    safe = check_labels(labels, valid, p.shape[-1])

    def step(lab: Any, p_rows: FloatArray) -> FloatArray:
        log_p = pointwise.log_softmax(p_rows) if logits else renormalised_log(p_rows, EPSILON)
        return pointwise.sparse_cross_entropy(lab, log_p, None, 0.0)

    losses = chunk_losses(step, valid, safe.reshape(-1), as_rows(p))
    return _finish(losses, keras_mask, sample_weight, reduction)


def binary_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
) -> Any:
    r"""``keras.losses.BinaryCrossentropy`` (jax/torch backends), mean over ``axis``.

    .. math::
        y' = y(1-\varepsilon_s) + \varepsilon_s/2, \qquad
        p' = \operatorname{clip}(p, \epsilon, 1-\epsilon), \qquad
        \ell = -\frac1F\sum_f y'\log p' + (1-y')\log(1-p')

    (``from_logits=True``: the stable logit form, no clip.)

    Examples
    --------
    >>> from maskloss.conventions import keras3
    >>> round(float(keras3.binary_crossentropy([[1.0]], [[0.0]])), 3)   # -log(1e-7)
    16.118
    """
    logits = check_flag(from_logits, "from_logits")
    eps = check_label_smoothing(label_smoothing)
    t, p = dense_pair(y_true, y_pred, axis)
    keras_mask = optional_mask(mask, p.shape[:-1])
    check_keras_reduction(reduction, REDUCTIONS)

    def step(t_rows: FloatArray, p_rows: FloatArray) -> FloatArray:
        target = pointwise.smooth_binary_targets(t_rows, eps)
        if logits:
            return pointwise.binary_cross_entropy_with_logits(target, p_rows)
        return pointwise.binary_cross_entropy(target, np.clip(p_rows, EPSILON, 1.0 - EPSILON))

    losses = chunk_losses(step, valid_steps(keras_mask, p.shape[:-1]), as_rows(t), as_rows(p))
    return _finish(losses, keras_mask, sample_weight, reduction)
