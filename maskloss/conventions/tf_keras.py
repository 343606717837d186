r"""tf.keras / tf_keras (TensorFlow backend): the masked loss as ``tf_keras.losses`` computes it.

Same call shape as :mod:`maskloss.conventions.keras3`; ``version=`` picks the rule of a
TensorFlow release (default: the newest, tf_keras 2.21):

=====================  ====================================  ==============================
version                ``"sum_over_batch_size"`` (default)   all masked
=====================  ====================================  ==============================
TF >= 2.11, tf_keras   :math:`\sum m\,w\,\ell / \sum m`      NaN (:math:`0\cdot\infty`)
TF 2.0 - 2.10          :math:`\sum m\,w\,\ell / N`           0 (padding counted in ``N``)
=====================  ====================================  ==============================

``"sum"`` is :math:`\sum m\,w\,\ell` and ``"none"`` the per-step :math:`m\,w\,\ell` in
both. ``"auto"`` means ``"sum_over_batch_size"``. There is no ``mean_with_sample_weight``.
A ``(B,)`` sample weight is given a trailing axis (one weight per sequence), unlike Keras 3.
Since TF 2.11 (``losses_utils.apply_valid_mask``) the mask is rescaled by
:math:`N / \sum m` before the mean over all :math:`N` steps; before, the mask only
multiplied the weights.

Per-step rules that differ from Keras 3 (read in ``tf_keras/src/backend.py``, pinned by tests
against the installed tf_keras 2.21):

* Binary cross-entropy on probabilities clips to :math:`[\epsilon, 1-\epsilon]` and then
  *adds* :math:`\epsilon` inside both logs:
  :math:`-y\log(p'+\epsilon) - (1-y)\log(1-p'+\epsilon)`.
* Sparse categorical cross-entropy on probabilities clips first and renormalises after
  (``sparse_softmax_cross_entropy_with_logits`` on :math:`\log p'`):
  :math:`-\log\big(p'_y / \sum_c p'_c\big)`, :math:`p' = \operatorname{clip}(p)`. The
  categorical one renormalises first, then clips (as Keras 3).
* **Softmax/sigmoid outputs:** when ``y_pred`` was produced by a softmax (sigmoid for
  binary) activation inside a tf_keras model, tf_keras uses the activation's input, the
  logits, and never clips. To reproduce ``model.evaluate`` for such a model, call these
  functions with the logits and ``from_logits=True``; on the probabilities they reproduce a
  direct loss call on a plain tensor (clipped). Logits ``[30, 0, -30]`` with true class 3
  score 60.0 through the model, 16.118 on the clipped probabilities.

Garbage at masked steps never reaches the result here (tf_keras multiplies it by 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import check_flag, check_label_smoothing, check_labels, check_sample_weight
from maskloss._rows import as_rows
from maskloss._types import BoolArray, FloatArray
from maskloss.conventions._keras_common import (
    EPSILON,
    align_weight,
    check_keras_reduction,
    chunk_losses,
    clipped_log,
    dense_pair,
    ignore_mask,
    optional_mask,
    renormalised_log,
    sparse_pair,
    valid_steps,
)
from maskloss.reductions import MaskedTotals

__all__ = [
    "NEWEST",
    "REDUCTIONS",
    "binary_crossentropy",
    "categorical_crossentropy",
    "mean_absolute_error",
    "mean_squared_error",
    "parse_version",
    "sparse_categorical_crossentropy",
]

#: Reductions tf_keras accepts (``None`` too, meaning ``"none"``).
REDUCTIONS: tuple[str, ...] = ("auto", "sum_over_batch_size", "sum", "none")
#: The release the default ``version=None`` stands for.
NEWEST = (2, 21)
#: First release that divides by the number of valid steps.
VALID_STEP_MEAN_SINCE = (2, 11)


def parse_version(version: object) -> tuple[int, int]:
    """``None`` (newest), ``"2.10"``, ``"2.10.1"`` or ``(2, 10)`` as ``(major, minor)``.

    >>> parse_version("2.10.1"), parse_version((2, 11)), parse_version(None)
    ((2, 10), (2, 11), (2, 21))
    """
    if version is None:
        return NEWEST
    parts: list[Any]
    if isinstance(version, str):
        parts = version.strip().split(".")
    elif isinstance(version, tuple):
        parts = list(version)
    else:
        raise TypeError(f"version must be a string like '2.10' or a tuple like (2, 10), got {version!r}")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError, TypeError):
        raise ValueError(f"version must look like '2.10' or (2, 10), got {version!r}") from None
    if (major, minor) < (2, 0) or major != 2:
        raise ValueError(f"version must be a TensorFlow 2.x release (2.0 or later), got {version!r}")
    return major, minor


def _reduce(
    losses: FloatArray,
    keras_mask: BoolArray | None,
    sample_weight: npt.ArrayLike | None,
    reduction: object,
    version: object,
) -> Any:
    red = check_keras_reduction(reduction, REDUCTIONS)
    release = parse_version(version)
    weight = align_weight(sample_weight, losses.shape, expand_one_less=True)
    valid = np.ones(losses.shape, dtype=bool) if keras_mask is None else keras_mask
    w = check_sample_weight(weight, valid)
    with np.errstate(invalid="ignore", over="ignore"):
        numerator = np.where(valid, losses * w, 0.0)
    if red == "none":
        return numerator
    totals = MaskedTotals.from_terms(numerator, valid.astype(np.float64))
    if red == "sum":
        return totals.value("sum")
    if release < VALID_STEP_MEAN_SINCE:
        return totals.value("element_mean") if losses.size else np.float64(0.0)
    return totals.value("token_mean")  # NaN when every step is masked, as tf_keras


def _regression(
    step: Callable[[FloatArray, FloatArray], FloatArray],
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    mask: npt.ArrayLike | None,
    sample_weight: npt.ArrayLike | None,
    reduction: object,
    version: object,
) -> Any:
    t, p = dense_pair(y_true, y_pred)
    keras_mask = optional_mask(mask, p.shape[:-1])
    check_keras_reduction(reduction, REDUCTIONS)
    losses = chunk_losses(step, valid_steps(keras_mask, p.shape[:-1]), as_rows(t), as_rows(p))
    return _reduce(losses, keras_mask, sample_weight, reduction, version)


def mean_absolute_error(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
    version: str | tuple[int, ...] | None = None,
) -> Any:
    r"""``tf_keras.losses.MeanAbsoluteError`` on a masked batch.

    .. math::
        \ell_{bt} = \frac1F\sum_f |y_{btf} - \hat y_{btf}|, \qquad
        \text{TF}\ge 2.11: \frac{\sum m\,w\,\ell}{\sum m}, \qquad
        \text{TF 2.0-2.10}: \frac{\sum m\,w\,\ell}{B\,T}

    Parameters
    ----------
    y_true, y_pred : array_like, shape (B, T, F)
    mask : array_like of bool, shape (B, T), optional
        The model output's Keras mask (True = valid).
    sample_weight : array_like, optional
        Scalar, ``(B,)``, ``(B, 1)`` or ``(B, T)``.
    reduction : {"sum_over_batch_size", "auto", "sum", "none", None}
    version : str or tuple, optional
        TensorFlow release whose rule to use (default: the newest).

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions import tf_keras
    >>> y_true = np.zeros((1, 4, 1)); y_pred = np.array([[[1.0], [3.0], [9.0], [9.0]]])
    >>> mask = [[True, True, False, False]]
    >>> float(tf_keras.mean_absolute_error(y_true, y_pred, mask=mask))                 # 4 / 2
    2.0
    >>> float(tf_keras.mean_absolute_error(y_true, y_pred, mask=mask, version="2.10"))  # 4 / 4
    1.0
    >>> float(tf_keras.mean_absolute_error(y_true, y_pred, mask=[[False] * 4]))       # 0 * inf
    nan
    """
    return _regression(pointwise.absolute_error, y_true, y_pred, mask, sample_weight, reduction, version)


def mean_squared_error(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
    version: str | tuple[int, ...] | None = None,
) -> Any:
    r"""``tf_keras.losses.MeanSquaredError``: :math:`\ell_{bt} = \frac1F\sum_f (y - \hat y)^2`.

    Arguments and reductions as in :func:`mean_absolute_error`.

    Examples
    --------
    >>> from maskloss.conventions import tf_keras
    >>> float(tf_keras.mean_squared_error([[[0.0], [0.0]]], [[[2.0], [5.0]]], mask=[[True, False]],
    ...                                   sample_weight=[3.0]))   # (B,) weight: 3 * 4 / 1
    12.0
    """
    return _regression(pointwise.squared_error, y_true, y_pred, mask, sample_weight, reduction, version)


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
    version: str | tuple[int, ...] | None = None,
) -> Any:
    r"""``tf_keras.losses.CategoricalCrossentropy`` on a masked batch.

    .. math::
        y' = y(1-\varepsilon_s) + \varepsilon_s / C, \qquad
        \ell = -\sum_c y'_c \log\operatorname{clip}\Big(\frac{p_c}{\sum_k p_k}, \epsilon, 1-\epsilon\Big)

    With ``from_logits=True`` (or, inside a model, a softmax output: pass its logits) the
    log-softmax of the logits, unclipped.

    Examples
    --------
    >>> import numpy as np
    >>> from maskloss.conventions import tf_keras
    >>> z = np.array([[30.0, 0.0, -30.0]])
    >>> round(float(tf_keras.categorical_crossentropy([[0, 0, 1]], z, from_logits=True)), 3)
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
    return _reduce(losses, keras_mask, sample_weight, reduction, version)


def sparse_categorical_crossentropy(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    from_logits: bool = False,
    axis: int = -1,
    ignore_class: int | None = None,
    *,
    mask: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
    reduction: str | None = "sum_over_batch_size",
    version: str | tuple[int, ...] | None = None,
) -> Any:
    r"""``tf_keras.losses.SparseCategoricalCrossentropy``: clip first, then renormalise.

    .. math::
        p' = \operatorname{clip}(p, \epsilon, 1-\epsilon), \qquad
        \ell = -\log\frac{p'_y}{\sum_c p'_c}

    (``from_logits=True``: :math:`-\log\operatorname{softmax}(z)_y`). Steps whose label is
    ``ignore_class`` join the mask. Note tf_keras's argument order: ``axis`` before
    ``ignore_class``.

    Examples
    --------
    An unnormalised row with a zero: clipping first keeps the zero at :math:`10^{-7}`
    before the row is renormalised.

    >>> from maskloss.conventions import tf_keras, keras3
    >>> p = [[0.0, 0.5, 0.25]]
    >>> round(float(tf_keras.sparse_categorical_crossentropy([0], p)), 4)   # -log(1e-7 / 0.7500001)
    15.8304
    >>> round(float(keras3.sparse_categorical_crossentropy([0], p)), 4)     # -log(1e-7)
    16.1181
    """
    logits = check_flag(from_logits, "from_logits")
    labels, p = sparse_pair(y_true, y_pred, axis)
    keras_mask = ignore_mask(labels, optional_mask(mask, labels.shape), ignore_class)
    check_keras_reduction(reduction, REDUCTIONS)
    valid = valid_steps(keras_mask, labels.shape)
    safe = check_labels(labels, valid, p.shape[-1])

    def step(lab: Any, p_rows: FloatArray) -> FloatArray:
        log_p = pointwise.log_softmax(p_rows if logits else clipped_log(p_rows, EPSILON))
        return pointwise.sparse_cross_entropy(lab, log_p, None, 0.0)

    losses = chunk_losses(step, valid, safe.reshape(-1), as_rows(p))
    return _reduce(losses, keras_mask, sample_weight, reduction, version)


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
    version: str | tuple[int, ...] | None = None,
) -> Any:
    r"""``tf_keras.losses.BinaryCrossentropy``: clip, then :math:`\epsilon` inside the logs.

    .. math::
        y' = y(1-\varepsilon_s) + \varepsilon_s/2, \quad
        p' = \operatorname{clip}(p, \epsilon, 1-\epsilon), \quad
        \ell = -\frac1F\sum_f y'\log(p'+\epsilon) + (1-y')\log(1-p'+\epsilon)

    (``from_logits=True``, or a sigmoid output inside a model: the stable logit form.)

    Examples
    --------
    >>> from maskloss.conventions import tf_keras
    >>> round(float(tf_keras.binary_crossentropy([[1.0]], [[0.0]])), 4)   # -log(2e-7)
    15.4249
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
        clipped = np.clip(p_rows, EPSILON, 1.0 - EPSILON)
        terms = pointwise.negative_log_weighted(target, np.log(clipped + EPSILON))
        terms = terms + pointwise.negative_log_weighted(1.0 - target, np.log(1.0 - clipped + EPSILON))
        per_step: FloatArray = np.mean(terms, axis=-1)
        return per_step

    losses = chunk_losses(step, valid_steps(keras_mask, p.shape[:-1]), as_rows(t), as_rows(p))
    return _reduce(losses, keras_mask, sample_weight, reduction, version)
